"""Time alignment of a degraded signal to its reference by cross-correlation.

A coded item must line up with its reference sample for sample, or every full-reference label
(ViSQOL) and every reference-vs-degraded embedding distance would also measure the shift. The codec
stage removes each codec's declared delay and then uses these functions to check (and correct)
what is left.
"""

from __future__ import annotations

import numpy as np


def _mono(x: np.ndarray) -> np.ndarray:
    """Mono float64 downmix of ``(C, N)`` or ``(N,)`` audio, mean removed (DC would bias the peak)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"expected (channels, samples) or (samples,) audio, got shape {x.shape}")
    return x - x.mean()


def estimate_lag(reference: np.ndarray, degraded: np.ndarray, max_lag: int) -> int:
    """Integer lag of ``degraded`` behind ``reference``: ``degraded[n + lag] ~ reference[n]``.

    The peak of the FFT cross-correlation of the mono downmixes within ``|lag| <= max_lag``;
    positive means the degraded signal starts late. Energy-weighted (plain, not PHAT) correlation
    is used because codecs remove or fill high bands: weighting every band equally would let
    bands the codec discarded vote. Raises ``ValueError`` for silent input, where no lag exists.
    """
    from scipy import signal

    ref, deg = _mono(reference), _mono(degraded)
    if not ref.any() or not deg.any():
        raise ValueError("cannot estimate the lag of a silent signal")
    corr = signal.correlate(deg, ref, mode="full", method="fft")
    lags = signal.correlation_lags(deg.size, ref.size, mode="full")
    window = np.abs(lags) <= int(max_lag)
    return int(lags[window][np.argmax(corr[window])])


def shift(x: np.ndarray, lag: int, length: int) -> np.ndarray:
    """Undo a lag of ``lag`` samples and trim or zero-pad ``(C, N)`` audio to ``length`` samples."""
    x = np.asarray(x)
    if lag > 0:
        x = x[:, lag:]
    elif lag < 0:
        x = np.pad(x, ((0, 0), (-lag, 0)))
    return fit_length(x, length)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad ``(C, N)`` audio at the end to exactly ``length`` samples."""
    if x.shape[1] >= length:
        return x[:, :length]
    return np.pad(x, ((0, 0), (0, length - x.shape[1])))


def align_to_reference(reference: np.ndarray, degraded: np.ndarray,
                       max_lag: int) -> tuple[np.ndarray, int]:
    """Shift ``degraded`` (C, M) onto ``reference`` (C', N): returns ``(aligned (C, N), lag)``.

    ``lag`` is what :func:`estimate_lag` found (and what was undone); the result always has the
    reference's length, so reference and degraded can be compared sample for sample.
    """
    degraded = np.asarray(degraded)
    if degraded.ndim == 1:
        degraded = degraded[None]
    length = np.asarray(reference).shape[-1]
    lag = estimate_lag(reference, degraded, max_lag)
    return shift(degraded, lag, length), lag
