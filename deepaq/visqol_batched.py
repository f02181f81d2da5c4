"""ViSQOL v3 audio mode, batched: many degraded signals scored against one reference at once.

A corpus excerpt is one reference and 22 degraded items (clean + 21 codec conditions), and
visqol-python recomputes everything per pair: the reference's gammatone spectrogram and Hilbert
envelope, the degraded patches' local statistics once per reference patch, and, in the fine
realignment, spectrograms of patches whose frames it has already computed. This module
re-expresses the same algorithm (visqol-python 3.8.0, itself a port of google/visqol v3.3.3) for a
batch:

* the reference is analysed once per batch (envelope, its FFT, spectrogram, patch envelopes);
* the gammatone filterbank runs as one kernel over all bands (SIMD lanes) and any set of frames;
  every frame starts from a zero filter state, so a frame's energies depend on its samples only,
  and the fine realignment's patch spectrograms reuse the full spectrograms' frames whenever they
  start on the same sample (they usually do) instead of refiltering them;
* the DP patch search computes the degraded signal's local statistics once per signal, not once
  per (reference patch, offset), and only the cross term per (patch, offset);
* the SVR is evaluated from visqol-python's own model file, vectorised over the batch.

Every decision visqol-python takes (alignment lags, the DP path, the realignment's keep-or-replace)
is taken here by the same rule on values that agree to rounding, so scores match visqol-python to
far below ViSQOL's 1e-4 conformance tolerance (tests/deepaq/test_visqol_batched.py checks the
upstream conformance cases and corpus pairs against visqol-python itself).

The heavy parts run in numpy + numba on the CPU (``backend="numpy"``) or in torch
(``backend="torch"``, ``device="cuda"`` when present); the bookkeeping is shared.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.fft

from deepaq.audio import AudioError, read_audio
from deepaq.visqol import VISQOL_VERSION, prepare_mono

SAMPLE_RATE = 48000
NUM_BANDS = 32
MIN_FREQ = 50.0
PATCH_SIZE = 30
SEARCH_WINDOW = 60  # patches
OVERLAP = 0.25
WINDOW_SECONDS = 0.08
NOISE_FLOOR_ABSOLUTE_DB = -45.0
NOISE_FLOOR_RELATIVE_DB = 45.0
SPL_REFERENCE = 2e-5

#: Version of this implementation; bumped whenever a score changes on purpose.
BATCHED_VERSION = "1"
#: Provenance string for manifests, alongside :data:`deepaq.visqol.VISQOL_IMPLEMENTATION`.
BATCHED_IMPLEMENTATION = (f"deepaq-batched-visqol=={BATCHED_VERSION} "
                          f"(visqol-python=={VISQOL_VERSION} algorithm, batched)")


# -- reference pieces of visqol-python, imported so constants and coefficients are its own ----

def _filter_coefficients() -> np.ndarray:
    """The 4-stage gammatone coefficients visqol-python's builder packs, as kernel rows."""
    from visqol.gammatone import make_erb_filters

    fc = make_erb_filters(SAMPLE_RATE, NUM_BANDS, MIN_FREQ, SAMPLE_RATE / 2.0).filter_coeffs
    fc = fc[:, ::-1]
    a0, a11, a12, a13, a14, a2, _b0, b1, b2, gain = fc
    rows = [a0 / gain, a11 / gain, a2 / gain, a0, a12, a2, a0, a13, a2, a0, a14, a2, b1, b2]
    return np.ascontiguousarray(np.stack(rows), dtype=np.float64)


def _hann(size: int) -> np.ndarray:
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(size) / (size - 1))


class SvrModel:
    """visqol-python's nu-SVR (RBF) read from its libsvm model file, evaluated for a batch."""

    def __init__(self, path: str | os.PathLike):
        header: dict[str, str] = {}
        coefs: list[float] = []
        vectors: list[dict[int, float]] = []
        with open(path) as fh:
            for line in fh:
                if line.strip() == "SV":
                    break
                key, _, value = line.strip().partition(" ")
                header[key] = value
            for line in fh:
                parts = line.split()
                if not parts:
                    continue
                coefs.append(float(parts[0]))
                vectors.append({int(k): float(v) for k, v in (p.split(":") for p in parts[1:])})
        if header.get("svm_type") != "nu_svr" or header.get("kernel_type") != "rbf":
            raise ValueError(f"{path}: expected a nu_svr model with an rbf kernel")
        dim = max(max(v) for v in vectors)
        self.support = np.zeros((len(vectors), dim))
        for i, v in enumerate(vectors):
            for k, x in v.items():
                self.support[i, k - 1] = x
        self.coef = np.asarray(coefs)
        self.gamma = float(header["gamma"])
        self.rho = float(header["rho"])

    def predict(self, features: np.ndarray) -> np.ndarray:
        """MOS for each row of ``features`` (``(K, bands)`` fvnsim), clipped to 1..5 as visqol."""
        d2 = ((features[:, None, :] - self.support[None]) ** 2).sum(axis=-1)
        return np.clip(np.exp(-self.gamma * d2) @ self.coef - self.rho, 1.0, 5.0)


# -- signals as views: lets patch spectrograms reuse the full spectrograms' frames ------------

@dataclass(frozen=True)
class _Piece:
    """``lead`` zeros then ``src[start:start + n - lead]``: what visqol's slicing builds."""

    src: int  # index of the source signal in the batch (its full spectrogram is known)
    lead: int
    start: int
    n: int

    def slice(self, a: int, b: int) -> _Piece:
        b = max(a, min(b, self.n))
        n = b - a
        return _Piece(self.src, min(max(self.lead - a, 0), n), self.start + max(0, a - self.lead),
                      n)

    def prepend(self, zeros: int) -> _Piece:
        return _Piece(self.src, self.lead + zeros, self.start, self.n + zeros)

    def data(self, sources: Sequence[np.ndarray]) -> np.ndarray:
        body = sources[self.src][self.start:self.start + self.n - self.lead]
        return np.concatenate([np.zeros(self.lead), body]) if self.lead else body


def _slice_signal(sig: _Piece, start_time: float, end_time: float) -> _Piece:
    """visqol's ``slice_signal`` (including its zeros prepended for an end past the signal)."""
    start = max(0, int(start_time * SAMPLE_RATE))
    end = min(sig.n - 1, int(end_time * SAMPLE_RATE))
    out = sig.slice(start, end)
    end_diff = end_time * SAMPLE_RATE - sig.n
    if end_diff > 0:
        out = out.prepend(int(end_diff))
    if start_time < 0:
        out = out.prepend(int(-start_time * SAMPLE_RATE))
    return out


def _kept_lag(lag: int, ref_length: int) -> int:
    """visqol's ``globally_align`` undoes a lag only within half the reference's length, else 0."""
    return 0 if abs(lag) > ref_length / 2.0 else int(lag)


def _align_and_truncate(ref: _Piece, deg: _Piece, best_lag: int) -> tuple[_Piece, _Piece]:
    """visqol's ``align_and_truncate`` given the lag its ``globally_align`` finds."""
    best_lag = _kept_lag(best_lag, ref.n)
    if best_lag < 0:
        deg = deg.slice(-best_lag, deg.n)
    elif best_lag > 0:
        deg = deg.prepend(best_lag)
    lag_seconds = best_lag / float(SAMPLE_RATE)
    if ref.n > deg.n:
        ref = ref.slice(0, deg.n)
    elif ref.n < deg.n:
        lag_samples = int(lag_seconds * SAMPLE_RATE)
        if lag_samples > 0:
            ref = ref.slice(lag_samples, ref.n)
            deg = deg.slice(lag_samples, lag_samples + ref.n)
        else:
            deg = deg.slice(0, ref.n)
    n = min(ref.n, deg.n)
    return ref.slice(0, n), deg.slice(0, n)


# -- the numpy (+ numba) heavy parts ----------------------------------------------------------

class NumpyOps:
    """Envelopes, cross-correlation lags, gammatone frames and the patch-search table, on CPU."""

    name = "numpy"

    def __init__(self, num_threads: int | None = 1):
        from deepaq import visqol_kernels

        self.k = visqol_kernels
        self.num_threads = num_threads

    def upper_envelopes(self, x: np.ndarray) -> np.ndarray:
        """visqol's ``upper_envelope`` of each row: the analytic signal's magnitude around the
        mean, with the Hilbert transform as one real inverse FFT (visqol: a complex one)."""
        n = x.shape[-1]
        mean = x.mean(axis=-1, keepdims=True)
        centered = x - mean
        half = self._fft(centered, n, inverse=False)
        half *= _hilbert_multiplier(n)
        quadrature = self._fft(half, n, inverse=True)
        return np.sqrt(centered * centered + quadrature * quadrature) + mean

    def spectrum(self, env: np.ndarray, n: int, points: int) -> np.ndarray:
        padded = np.zeros(env.shape[:-1] + (n,))
        padded[..., :env.shape[-1]] = env
        return self._fft(padded, points, inverse=False)

    def stack(self, spectra: list[np.ndarray]) -> np.ndarray:
        return np.stack(spectra)

    def best_lags(self, ref_spec: np.ndarray, deg_spec: np.ndarray, n: int,
                  points: int) -> np.ndarray:
        """visqol's ``find_best_lag`` from the two envelopes' spectra (rows of ``deg_spec``)."""
        return _first_argmax_lag(self._fft(ref_spec * np.conj(deg_spec), points, inverse=True),
                                 n)

    def _fft(self, x: np.ndarray, n: int, inverse: bool) -> np.ndarray:
        """Real FFT (or its inverse) along the last axis, in float64. torch's CPU FFT (MKL in
        the usual wheels) for lengths with small prime factors only (the power-of-two
        correlation lengths, 10 s excerpts): there it was about 1.5-2x faster than scipy's;
        scipy's pocketfft for other lengths (the Hilbert transform must use the signal's own
        length), where it was 2-3x faster than torch. Same values to rounding either way."""
        if scipy.fft.next_fast_len(n, real=True) != n:
            return scipy.fft.irfft(x, n=n, axis=-1) if inverse else scipy.fft.rfft(x, n=n, axis=-1)
        import torch

        previous = torch.get_num_threads()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        try:
            t = torch.from_numpy(np.ascontiguousarray(x))
            out = torch.fft.irfft(t, n=n, dim=-1) if inverse else torch.fft.rfft(t, n=n, dim=-1)
            return out.numpy()
        finally:
            torch.set_num_threads(previous)

    def frame_energies(self, buf: np.ndarray, starts: np.ndarray, hann: np.ndarray,
                       coef: np.ndarray) -> np.ndarray:
        return self._threads(self.k.frame_energies, np.ascontiguousarray(buf, dtype=np.float64),
                             np.ascontiguousarray(starts, dtype=np.int64), hann, coef)

    def search_table(self, ref_patches: np.ndarray, deg_padded: np.ndarray, lows: np.ndarray,
                     highs: np.ndarray, num_offsets: int) -> np.ndarray:
        from visqol.numba_accel import _C1, _C3, _GW

        ref_mean, ref_square = self.k.local_stats(ref_patches, _GW)
        deg_mean, deg_square = self.k.deg_local_stats(deg_padded, PATCH_SIZE, num_offsets, _GW)
        return self.k.patch_search_similarity(ref_patches, ref_mean, ref_square, deg_padded,
                                              deg_mean, deg_square, lows, highs, _GW, _C1, _C3)

    def _threads(self, fn, *args):
        if self.num_threads is None:
            return fn(*args)
        import numba

        previous = numba.get_num_threads()
        numba.set_num_threads(min(self.num_threads, numba.config.NUMBA_NUM_THREADS))
        try:
            return fn(*args)
        finally:
            numba.set_num_threads(previous)


# -- the labeller ------------------------------------------------------------------------------

class BatchedVisqolLabeller:
    """ViSQOL v3 audio-mode MOS-LQO, visqol-python's scores, for many pairs sharing a reference.

    Args:
        backend: ``"numpy"`` (numpy + numba, CPU) or ``"torch"`` (the heavy parts in torch).
        device: torch device for ``backend="torch"`` (``"cpu"``, ``"cuda"``, ...); ``None``
            picks CUDA when available. Giving a device implies the torch backend.
        resample: resample inputs at another rate to 48 kHz (default) instead of raising.
        silence_dbfs: signals below this RMS level (dBFS) are rejected as silent.
        num_threads: numba threads for the CPU kernels (default 1: one per process, as a
            ``--jobs`` pool wants; the kernels have no reductions across threads, so more
            threads change speed, not scores). ``None`` uses numba's default.
        model_path: libsvm SVR model; default visqol-python's bundled audio-mode model.
    """

    mode = "audio"
    sample_rate = SAMPLE_RATE

    def __init__(self, backend: str | None = None, device: str | None = None,
                 resample: bool = True, silence_dbfs: float = -90.0,
                 num_threads: int | None = 1, model_path: str | os.PathLike | None = None):
        if backend is None:
            backend = "numpy" if device in (None, "numpy") else "torch"
        if backend == "numpy":
            self.ops = NumpyOps(num_threads)
        elif backend == "torch":
            from deepaq.visqol_torch import TorchOps

            self.ops = TorchOps(device)
        else:
            raise ValueError(f"backend must be 'numpy' or 'torch', got {backend!r}")
        if model_path is None:
            from visqol.api import _DEFAULT_SVR_MODEL

            model_path = _DEFAULT_SVR_MODEL
        self.model_path = str(model_path)
        self.svr = SvrModel(self.model_path)
        self.resample = bool(resample)
        self.silence_dbfs = float(silence_dbfs)
        self.num_threads = num_threads
        self.window = round(SAMPLE_RATE * WINDOW_SECONDS)
        self.hop = int(self.window * OVERLAP)
        self.frame_duration = self.hop / float(SAMPLE_RATE)
        self.hann = _hann(self.window)
        self.coef = _filter_coefficients()

    def info(self) -> dict:
        """Provenance of the labels, for the corpus manifest / metadata."""
        return {"implementation": "deepaq-batched", "version": BATCHED_VERSION,
                "algorithm": f"visqol-python=={VISQOL_VERSION}", "mode": self.mode,
                "sample_rate": self.sample_rate, "backend": self.ops.name,
                "device": getattr(self.ops, "device", "cpu"), "num_threads": self.num_threads,
                "mapper": "SvrModel"}

    # -- public scoring -------------------------------------------------------------------

    def score(self, reference: np.ndarray, degraded: np.ndarray,
              sample_rate: int = 48000) -> float:
        """MOS-LQO of one pair, both ``(C, N)`` at ``sample_rate``."""
        return self.score_many(reference, [degraded], sample_rate)[0]

    def score_many(self, reference: np.ndarray, degraded: Sequence[np.ndarray],
                   sample_rate: int = 48000) -> list[float]:
        """MOS-LQO of each of ``degraded`` against ``reference`` (all ``(C, N)``)."""
        ref = self._prepare(reference, sample_rate, "reference")
        degs = [self._prepare(d, sample_rate, f"degraded[{i}]") for i, d in enumerate(degraded)]
        return self._score_mono(ref, degs)

    def score_files(self, ref_path: str | os.PathLike, deg_path: str | os.PathLike) -> float:
        ref, sr_ref = read_audio(ref_path)
        deg, sr_deg = read_audio(deg_path)
        r = self._prepare(ref, sr_ref, "reference", ref_path)
        d = self._prepare(deg, sr_deg, "degraded", deg_path)
        return self._score_mono(r, [d])[0]

    def warmup(self) -> None:
        """Compile / load the kernels so that later calls run at full speed."""
        rng = np.random.default_rng(0)
        x = 0.1 * rng.standard_normal((1, self.sample_rate))
        self.score_many(x, [0.9 * x, x])

    def _prepare(self, x, sample_rate, role, path=None) -> np.ndarray:
        return prepare_mono(x, sample_rate, self.sample_rate, self.mode, self.resample,
                            self.silence_dbfs, role, path)

    # -- the algorithm --------------------------------------------------------------------

    def _score_mono(self, ref: np.ndarray, degs: list[np.ndarray]) -> list[float]:
        if not degs:
            return []
        if len(ref) <= self.window:
            raise AudioError("reference", f"too short for ViSQOL ({len(ref)} samples)")
        aligned = self._globally_align(ref, degs)
        ref_spl = _spl(ref)
        sources = [ref] + [d * 10.0 ** ((ref_spl - _spl(d)) / 20.0) for d in aligned]
        for i, s in enumerate(sources[1:]):
            if len(s) <= self.window:
                raise AudioError(f"degraded[{i}]", f"too short for ViSQOL ({len(s)} samples)")
        specs = self._spectrograms(sources)
        ref_cache: dict = {}  # reference patch slices' spectra, shared by the batch
        features = np.stack([self._pair_features(sources, specs, k + 1, ref_cache)
                             for k in range(len(degs))])
        mos = self.svr.predict(features)
        vnsim = features.mean(axis=1)
        return [1.0 if v < 0.15 else float(m) for v, m in zip(vnsim, mos)]

    def _globally_align(self, ref: np.ndarray, degs: list[np.ndarray]) -> list[np.ndarray]:
        """visqol's ``globally_align`` for every degraded signal; the reference's envelope and
        spectrum once per length."""
        ops = self.ops
        ref_env = ops.upper_envelopes(ref[None])[0]
        lags = np.zeros(len(degs), dtype=np.int64)
        groups: dict[int, list[int]] = {}
        for i, d in enumerate(degs):
            groups.setdefault(len(d), []).append(i)
        for length, members in groups.items():
            n = max(len(ref), length)
            points = fft_points(n)
            ref_spec = ops.spectrum(ref_env[None], n, points)
            for chunk in _chunks(members, max(1, int(2**25 // (points * 16)))):
                envs = ops.upper_envelopes(np.stack([degs[i] for i in chunk]))
                lags[chunk] = ops.best_lags(ref_spec, ops.spectrum(envs, n, points), n, points)
        out = []
        for d, lag in zip(degs, lags):
            lag = _kept_lag(int(lag), len(ref))
            if lag < 0:
                out.append(d[-lag:])
            elif lag > 0:
                out.append(np.concatenate([np.zeros(lag), d]))
            else:
                out.append(d)
        return out

    def _spectrograms(self, sources: list[np.ndarray]) -> list[np.ndarray]:
        """Spectrogram of each source; an item equal to the reference (the clean item: no lag,
        an SPL gain of exactly 1) shares the reference's."""
        ref_spec = self._spectrogram(sources[0])
        return [ref_spec] + [ref_spec if np.array_equal(x, sources[0]) else self._spectrogram(x)
                             for x in sources[1:]]

    def _spectrogram(self, x: np.ndarray) -> np.ndarray:
        cols = 1 + (len(x) - self.window) // self.hop
        starts = np.arange(cols, dtype=np.int64) * self.hop
        return self.ops.frame_energies(x, starts, self.hann, self.coef).T  # (bands, frames)

    def _pair_features(self, sources, specs, k: int, ref_cache: dict) -> np.ndarray:
        """fvnsim of degraded source ``k`` against source 0 (the reference)."""
        from visqol.gammatone import Spectrogram, prepare_spectrograms_for_comparison
        from visqol.numba_accel import _C1, _C3, _GW, _dp_backtrace
        from visqol.numba_accel import _measure_patch_similarity_numba as nsim
        from visqol.patch_selector import _calc_max_num_patches

        ref_db, deg_db = prepare_spectrograms_for_comparison(Spectrogram(specs[0]),
                                                             Spectrogram(specs[k]))
        try:
            indices = _ref_patch_indices(ref_db.shape[1])
        except ValueError as exc:
            raise AudioError("reference", str(exc)) from None
        num_frames = deg_db.shape[1]
        num_patches = _calc_max_num_patches(indices, num_frames, PATCH_SIZE)
        if num_patches == 0:
            raise AudioError(f"degraded[{k - 1}]", "too short, different or misaligned for "
                                                   "ViSQOL to score any reference patch")
        idx = np.asarray(indices, dtype=np.int64)
        ref_patches = np.ascontiguousarray(
            np.stack([ref_db[:, i:i + PATCH_SIZE] for i in indices[:num_patches]]))
        deg_padded = np.zeros((deg_db.shape[0], num_frames + PATCH_SIZE))
        deg_padded[:, :num_frames] = deg_db
        window = SEARCH_WINDOW * PATCH_SIZE
        lows = np.maximum(0, idx[:num_patches] - window)
        highs = np.minimum(num_frames - 1, idx[:num_patches] + window)
        table = self.ops.search_table(ref_patches, deg_padded, lows, highs, num_frames)
        cumulative, backtrace = _dp(table, idx, num_patches, num_frames, window)
        offsets = _dp_backtrace(cumulative, backtrace, idx, num_patches, num_frames, window)

        patch_seconds = self.frame_duration * PATCH_SIZE
        means = np.zeros((num_patches, NUM_BANDS))
        matches: list[tuple[int, float, float] | None] = []
        for p in range(num_patches):
            off = int(offsets[p])
            if off == backtrace[p, off]:  # packet loss: no match, no realignment
                matches.append(None)
                continue
            deg_patch = np.ascontiguousarray(deg_padded[:, off:off + PATCH_SIZE])
            sim, fb_means, _, _ = nsim(ref_patches[p], deg_patch, _GW, _C1, _C3)
            means[p] = fb_means
            ref_start = indices[p] * self.frame_duration
            matches.append((p, sim, ref_start, off * self.frame_duration))
        self._realign(sources, specs, k, matches, patch_seconds, means, ref_cache)
        return means.mean(axis=0)

    def _realign(self, sources, specs, k, matches, patch_seconds, means, ref_cache) -> None:
        """visqol's ``finely_align_and_recreate_patches``: realign each matched patch pair in
        time, rebuild its spectrograms, keep the better NSIM (updates ``means`` in place)."""
        from visqol.gammatone import Spectrogram, prepare_spectrograms_for_comparison
        from visqol.numba_accel import _C1, _C3, _GW
        from visqol.numba_accel import _measure_patch_similarity_numba as nsim

        ref_full = _Piece(0, 0, 0, len(sources[0]))
        deg_full = _Piece(k, 0, 0, len(sources[k]))
        todo = []
        for m in matches:
            if m is None:
                continue
            p, sim, ref_start, deg_start = m
            ref_s = _slice_signal(ref_full, ref_start, ref_start + patch_seconds)
            deg_s = _slice_signal(deg_full, deg_start, deg_start + patch_seconds)
            if ref_s.n == 0 or deg_s.n == 0:
                continue
            todo.append((p, sim, ref_s, deg_s))
        lags = self._patch_lags(sources, todo, ref_cache)
        pieces = []
        for (p, sim, ref_s, deg_s), lag in zip(todo, lags):
            ref_a, deg_a = _align_and_truncate(ref_s, deg_s, int(lag))
            if ref_a.n <= self.window or deg_a.n <= self.window:
                continue
            pieces.append((p, sim, ref_a, deg_a))
        spectra = self._piece_spectrograms(sources, specs, [x for _, _, r, d in pieces
                                                            for x in (r, d)])
        for j, (p, sim, _, _) in enumerate(pieces):
            ref_db, deg_db = prepare_spectrograms_for_comparison(
                Spectrogram(spectra[2 * j]), Spectrogram(spectra[2 * j + 1]))
            new_sim, fb_means, _, _ = nsim(np.ascontiguousarray(ref_db),
                                           np.ascontiguousarray(deg_db), _GW, _C1, _C3)
            if not new_sim < sim:
                means[p] = fb_means

    def _patch_lags(self, sources, todo, cache: dict) -> list[int]:
        """``find_best_lag`` between the envelopes of each (reference, degraded) patch slice;
        the reference slices' spectra are kept in ``cache``, shared by the whole batch."""
        ops = self.ops
        lags = [0] * len(todo)
        groups: dict[tuple[int, int], list[int]] = {}
        for j, (_, _, ref_s, deg_s) in enumerate(todo):
            groups.setdefault((ref_s.n, deg_s.n), []).append(j)
        for (nr, nd), members in groups.items():
            n = max(nr, nd)
            points = fft_points(n)
            ref_specs = []
            for j in members:
                key = (todo[j][2], n, points)
                if key not in cache:
                    env = ops.upper_envelopes(todo[j][2].data(sources)[None])
                    cache[key] = ops.spectrum(env, n, points)[0]
                ref_specs.append(cache[key])
            envs = ops.upper_envelopes(np.stack([todo[j][3].data(sources) for j in members]))
            found = ops.best_lags(ops.stack(ref_specs), ops.spectrum(envs, n, points), n, points)
            for j, lag in zip(members, found):
                lags[j] = int(lag)
        return lags

    def _piece_spectrograms(self, sources, specs, pieces: list[_Piece]) -> list[np.ndarray]:
        """Spectrograms of signal pieces, from the full spectrograms' frames where a frame
        starts on the same source sample, the rest computed in one kernel call."""
        out, missing, frames = [], [], []
        for piece in pieces:
            cols = 1 + (piece.n - self.window) // self.hop
            spec = np.empty((NUM_BANDS, cols))
            for j in range(cols):
                v = j * self.hop
                if v >= piece.lead:
                    at = piece.start + v - piece.lead
                    col, rem = divmod(at, self.hop)
                    if rem == 0 and col < specs[piece.src].shape[1]:
                        spec[:, j] = specs[piece.src][:, col]
                        continue
                    frames.append(sources[piece.src][at:at + self.window])
                else:
                    frames.append(piece.data(sources)[v:v + self.window])
                missing.append((len(out), j))
            out.append(spec)
        if frames:
            buf = np.concatenate(frames)
            starts = np.arange(len(frames), dtype=np.int64) * self.window
            energies = self.ops.frame_energies(buf, starts, self.hann, self.coef)
            for (i, j), e in zip(missing, energies):
                out[i][:, j] = e
        return out


def _dp(table, idx, num_patches, num_frames, window):
    from deepaq.visqol_kernels import dp_forward

    return dp_forward(table, idx, num_patches, num_frames, window)


def _first_argmax_lag(xcorr: np.ndarray, n: int) -> np.ndarray:
    """visqol's lag pick: the first maximum of [negative lags, then lags 0..n-1] of each row of a
    circular cross-correlation (without building that concatenation)."""
    # not alignment.estimate_lag (|peak|, a window): visqol-python's first signed peak, every lag
    max_lag = n - 1
    negative = xcorr[..., xcorr.shape[-1] - max_lag:] if max_lag else xcorr[..., :0]
    positive = xcorr[..., :max_lag + 1]
    lags = np.argmax(positive, axis=-1)
    if max_lag:
        neg_at = np.argmax(negative, axis=-1)
        rows = np.arange(xcorr.shape[0])
        use_negative = negative[rows, neg_at] >= positive[rows, lags]
        lags = np.where(use_negative, neg_at - max_lag, lags)
    return lags


def _hilbert_multiplier(n: int) -> np.ndarray:
    """-i sign(f) on rfft bins: the spectrum of the Hilbert transform (0 at DC and Nyquist)."""
    m = np.full(n // 2 + 1, -1j)
    m[0] = 0
    if n % 2 == 0:
        m[-1] = 0
    return m


def fft_points(n: int) -> int:
    """FFT length for the full linear cross-correlation of two length-``n`` signals: the next
    power of two, as visqol (any length >= 2n - 1 gives the same correlation; powers of two
    were the fastest in torch's FFT)."""
    return 1 << max(0, (2 * n - 2).bit_length())


def _ref_patch_indices(spectrum_length: int) -> list[int]:
    from visqol.patch_creator import ImagePatchCreator

    return ImagePatchCreator(PATCH_SIZE).create_ref_patch_indices(
        np.empty((0, spectrum_length)))


def _spl(x: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(x ** 2)))
    return -math.inf if rms == 0 else float(20.0 * np.log10(rms / SPL_REFERENCE))


def _chunks(items: list[int], size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]
