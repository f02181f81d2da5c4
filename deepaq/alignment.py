"""Time alignment of a degraded signal to its reference by cross-correlation.

A coded item must line up with its reference sample for sample, or every full-reference label
(ViSQOL) and every reference-vs-degraded embedding distance would also measure the shift. The codec
stage removes each codec's declared delay and then uses these functions to check (and correct)
what is left.

The codec grid aligns about 21 items to one reference, so the reference's share of the work (mono
downmix and FFT) is done once, in a :class:`ReferenceSignal`, and only lags inside the search window
are computed: an FFT of the reference's length plus twice the window instead of twice the length,
in float32 (about 2x faster), with the few lags near the peak then settled exactly in float64.
"""

from __future__ import annotations

import sys

import numpy as np

#: float32 FFT correlations are off by ~1e-6 of |ref| |deg|; lags within this fraction of that of
#: the maximum are recomputed exactly, so the result is the float64 argmax
SETTLE_MARGIN = 1e-4
#: more lags than this that close (a near-flat correlation: sub-audio content) -> all in float64
SETTLE_MAX_LAGS = 64


def _mono(x: np.ndarray) -> np.ndarray:
    """Mono float64 downmix of ``(C, N)`` or ``(N,)`` audio, mean removed (DC would bias the peak)."""
    x = np.asarray(x)
    if x.ndim == 2:
        # the same numbers as x.astype(float64).mean(0), without the float64 copy of every channel
        x = x.sum(axis=0, dtype=np.float64) / x.shape[0]
    elif x.ndim == 1:
        x = x.astype(np.float64)
    else:
        raise ValueError(f"expected (channels, samples) or (samples,) audio, got shape {x.shape}")
    return x - x.mean()


class ReferenceSignal:
    """A reference prepared once for many lag searches: its mono downmix and cached spectra.

    ``audio`` is the reference as given (``(C, N)``, or ``(N,)``); pass the object wherever a
    reference array is accepted to reuse its analysis across conditions.
    """

    def __init__(self, audio: np.ndarray):
        self.audio = np.asarray(audio)
        self.mono = _mono(self.audio)
        self._spectra: dict[tuple[int, str], np.ndarray] = {}

    @property
    def length(self) -> int:
        return int(self.mono.size)

    def spectrum(self, size: int, dtype: type = np.float32) -> np.ndarray:
        """Conjugate real FFT of the mono downmix at ``size`` points (computed once per size)."""
        key = (size, np.dtype(dtype).name)
        if key not in self._spectra:
            self._spectra[key] = np.conj(_fft().rfft(self.mono.astype(dtype), size))
        return self._spectra[key]


def estimate_lag(reference: np.ndarray | ReferenceSignal, degraded: np.ndarray,
                 max_lag: int, either_polarity: bool = False) -> int:
    """Integer lag of ``degraded`` behind ``reference``: ``degraded[n + lag] ~ reference[n]``.

    The peak of the FFT cross-correlation of the mono downmixes within ``|lag| <= max_lag``;
    positive means the degraded signal starts late. ``either_polarity``: the peak of its
    magnitude, so a polarity-inverted file (its correlation peak is negative) is found at its true
    lag; the scorer, which meets such files, uses it, the codec stage (whose coders keep polarity)
    does not. Energy-weighted (plain, not PHAT) correlation
    is used because codecs remove or fill high bands: weighting every band equally would let
    bands the codec discarded vote. Raises ``ValueError`` for silent input, where no lag exists.

    Only the window is computed: degraded samples past ``N + max_lag`` cannot reach it, and a
    circular correlation of ``N + 2 * max_lag`` points holds those lags free of wrap-around.
    """
    ref = reference if isinstance(reference, ReferenceSignal) else ReferenceSignal(reference)
    deg = _mono(degraded)
    if not ref.mono.any() or not deg.any():
        raise ValueError("cannot estimate the lag of a silent signal")
    k = int(max_lag)
    head = deg[: ref.length + k]
    lo, hi = max(-k, -(ref.length - 1)), min(k, deg.size - 1)  # lags where the signals overlap
    # not visqol_batched._first_argmax_lag, which copies ViSQOL's label rule (first signed peak)
    peak = np.abs if either_polarity else (lambda c: c)
    approx = peak(_window(ref, head, k, lo, hi, np.float32))
    margin = SETTLE_MARGIN * np.linalg.norm(ref.mono) * np.linalg.norm(head)
    close = np.flatnonzero(approx >= approx.max() - margin) + lo
    if close.size > SETTLE_MAX_LAGS:
        return int(np.argmax(peak(_window(ref, head, k, lo, hi, np.float64)))) + lo
    exact = [_correlation_at(ref.mono, head, lag) for lag in close]
    return int(close[np.argmax(peak(np.asarray(exact)))])


def _window(ref: ReferenceSignal, head: np.ndarray, max_lag: int, lo: int, hi: int,
            dtype: type) -> np.ndarray:
    """Correlation at lags ``lo..hi`` (ascending) by one circular FFT correlation in ``dtype``."""
    fft = _fft()
    size = fast_fft_size(ref.length + 2 * max_lag)
    spectrum = fft.rfft(head.astype(dtype), size) * ref.spectrum(size, dtype)
    corr = fft.irfft(spectrum, size)
    return np.concatenate([corr[size + lo:], corr[: hi + 1]])  # lags lo..-1 wrapped, 0..hi


def _fft():
    """scipy.fft once something has imported it (a corpus build: ViSQOL does), else numpy.fft.

    scipy's float32 real FFT of ~490k points measured 3-4x faster than numpy's here (3.3 vs 12-15
    ms); importing scipy only for it would cost ``deepaq score`` ~0.4 s. Either gives the same
    lag: the lags near the peak are settled in float64 whichever FFT found them.
    """
    return sys.modules.get("scipy.fft") or np.fft


def fast_fft_size(n: int) -> int:
    """The smallest even 2^a 3^b 5^c >= n: a size both FFTs of ``_fft`` (pocketfft) do fast.

    Written here rather than calling ``scipy.fft.next_fast_len`` so that ``deepaq score``, which
    aligns every pair, need not import scipy (see ``_fft``).
    """
    best = 1 << max(1, (int(n) - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35 * (1 << max(1, (int(n) - 1) // p35).bit_length())  # 2^a p35 >= n
            while size // 2 >= n and size % 4 == 0:
                size //= 2
            if size >= n and size % 2 == 0:
                best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


def _correlation_at(ref: np.ndarray, deg: np.ndarray, lag: int) -> float:
    """``sum_n ref[n] * deg[n + lag]`` over the samples both have, in float64."""
    if lag >= 0:
        count = min(ref.size, deg.size - lag)
        return float(np.dot(ref[:count], deg[lag:lag + count]))
    count = min(ref.size + lag, deg.size)
    return float(np.dot(ref[-lag:-lag + count], deg[:count]))


def shift(x: np.ndarray, lag: int, length: int) -> np.ndarray:
    """Undo a lag of ``lag`` samples and trim or zero-pad ``(C, N)`` audio to ``length`` samples."""
    x = np.asarray(x)
    if lag > 0:
        x = x[:, lag:]
    elif lag < 0:
        x = np.pad(x, ((0, 0), (-lag, 0)))
    return fit_length(x, length)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad ``(N,)`` or ``(C, N)`` audio at the end of its last axis to exactly
    ``length`` samples (one rule for every copy that cuts a signal to its reference's length)."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, length - x.shape[-1])])


def align_to_reference(reference: np.ndarray | ReferenceSignal, degraded: np.ndarray,
                       max_lag: int, either_polarity: bool = False) -> tuple[np.ndarray, int]:
    """Shift ``degraded`` (C, M) onto ``reference`` (C', N): returns ``(aligned (C, N), lag)``.

    ``lag`` is what :func:`estimate_lag` found (and what was undone); the result always has the
    reference's length, so reference and degraded can be compared sample for sample.
    """
    degraded = np.asarray(degraded)
    if degraded.ndim == 1:
        degraded = degraded[None]
    ref = reference if isinstance(reference, ReferenceSignal) else ReferenceSignal(reference)
    lag = estimate_lag(ref, degraded, max_lag, either_polarity=either_polarity)
    return shift(degraded, lag, ref.length), lag
