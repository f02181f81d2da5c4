"""numba kernels of the batched ViSQOL labeller (:mod:`deepaq.visqol_batched`), CPU side.

Why numba: the gammatone filterbank is a recursive (IIR) filter, a loop over samples that numpy
cannot express without a Python-level loop, and the patch search is a nonlinear map over
(patch, offset, band, frame) that numpy would materialise in memory. numba is a deepaq
dependency already (visqol-python's fast path); these kernels keep its operation order per band and per cell, so their values
match visqol-python's to the last bits (the filterbank) or to rounding (the patch search).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def frame_energies(buf: np.ndarray, starts: np.ndarray, hann: np.ndarray,
                   coef: np.ndarray) -> np.ndarray:
    """RMS of each gammatone band over each Hann-windowed frame ``buf[s:s + len(hann)]``.

    Every frame starts from a zero filter state (as visqol-python's builder does), so a frame's
    energies depend on its samples only and frames from any signals can share one call.
    ``coef`` rows: b00 b01 b02 b10 b11 b12 b20 b21 b22 b30 b31 b32 a1 a2 (columns: bands). The
    band loop is innermost so that it runs in SIMD lanes; per band the arithmetic is visqol's.
    """
    win = hann.shape[0]
    nb = coef.shape[1]
    num = starts.shape[0]
    out = np.empty((num, nb), dtype=np.float64)
    for m in prange(num):
        s = starts[m]
        z = np.zeros((8, nb), dtype=np.float64)
        energy = np.zeros(nb, dtype=np.float64)
        for k in range(win):
            x = buf[s + k] * hann[k]
            for b in range(nb):
                y0 = coef[0, b] * x + z[0, b]
                z[0, b] = coef[1, b] * x - coef[12, b] * y0 + z[1, b]
                z[1, b] = coef[2, b] * x - coef[13, b] * y0
                y1 = coef[3, b] * y0 + z[2, b]
                z[2, b] = coef[4, b] * y0 - coef[12, b] * y1 + z[3, b]
                z[3, b] = coef[5, b] * y0 - coef[13, b] * y1
                y2 = coef[6, b] * y1 + z[4, b]
                z[4, b] = coef[7, b] * y1 - coef[12, b] * y2 + z[5, b]
                z[5, b] = coef[8, b] * y1 - coef[13, b] * y2
                y3 = coef[9, b] * y2 + z[6, b]
                z[6, b] = coef[10, b] * y2 - coef[12, b] * y3 + z[7, b]
                z[7, b] = coef[11, b] * y2 - coef[13, b] * y3
                energy[b] += y3 * y3
        for b in range(nb):
            out[m, b] = np.sqrt(energy[b] / win)
    return out


@njit(cache=True)
def local_stats(patches: np.ndarray, gw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 Gaussian local mean and second moment of each ``(bands, frames)`` patch, edges
    replicated within the patch (NSIM's boundary rule)."""
    num, rows, cols = patches.shape
    mean = np.empty((num, rows, cols), dtype=np.float64)
    square = np.empty((num, rows, cols), dtype=np.float64)
    for p in range(num):
        for r in range(rows):
            for c in range(cols):
                ms = 0.0
                ss = 0.0
                for kr in range(3):
                    rr = min(max(r + kr - 1, 0), rows - 1)
                    for kc in range(3):
                        cc = min(max(c + kc - 1, 0), cols - 1)
                        v = patches[p, rr, cc]
                        ms += gw[kr, kc] * v
                        ss += gw[kr, kc] * (v * v)
                mean[p, r, c] = ms
                square[p, r, c] = ss
    return mean, square


@njit(cache=True)
def deg_local_stats(deg: np.ndarray, width: int, num_offsets: int,
                    gw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local mean / second moment of the degraded patch at every offset, ``[col, band, offset]``.

    ``deg`` is the degraded spectrogram zero-padded by ``width`` frames (visqol's patches past
    the end are zero-padded). Computed once per degraded signal and shared by every reference
    patch, where visqol-python recomputes them per (patch, offset).
    """
    rows = deg.shape[0]
    mean = np.zeros((width, rows, num_offsets), dtype=np.float64)
    square = np.zeros((width, rows, num_offsets), dtype=np.float64)
    for c in range(width):
        for r in range(rows):
            for kr in range(3):
                rr = min(max(r + kr - 1, 0), rows - 1)
                for kc in range(3):
                    cc = min(max(c + kc - 1, 0), width - 1)
                    w = gw[kr, kc]
                    for o in range(num_offsets):
                        v = deg[rr, o + cc]
                        mean[c, r, o] += w * v
                        square[c, r, o] += w * (v * v)
    return mean, square


@njit(cache=True)
def patch_search_similarity(ref_patches: np.ndarray, ref_mean: np.ndarray,
                            ref_square: np.ndarray, deg: np.ndarray, deg_mean: np.ndarray,
                            deg_square: np.ndarray, lows: np.ndarray, highs: np.ndarray,
                            gw: np.ndarray, c1: float, c3: float) -> np.ndarray:
    """Mean NSIM of reference patch ``p`` against the degraded patch at every offset in
    ``[lows[p], highs[p]]`` (``-inf`` elsewhere): the similarity table of the DP patch search.

    Offsets are the innermost (SIMD) loop; only the cross term depends on both signals.
    """
    num, rows, width = ref_patches.shape
    out = np.full((num, deg_mean.shape[2]), -np.inf)
    for p in range(num):
        lo = lows[p]
        n = highs[p] - lo + 1
        if n <= 0:
            continue
        total = np.zeros(n, dtype=np.float64)
        row_sum = np.empty(n, dtype=np.float64)
        cross = np.empty(n, dtype=np.float64)
        for r in range(rows):
            row_sum[:] = 0.0
            for c in range(width):
                cross[:] = 0.0
                for kr in range(3):
                    rr = min(max(r + kr - 1, 0), rows - 1)
                    for kc in range(3):
                        cc = min(max(c + kc - 1, 0), width - 1)
                        a = gw[kr, kc] * ref_patches[p, rr, cc]
                        drow = deg[rr, lo + cc:lo + cc + n]
                        for i in range(n):
                            cross[i] += a * drow[i]
                mr = ref_mean[p, r, c]
                mr2 = mr * mr
                vr = ref_square[p, r, c] - mr2
                mean_row = deg_mean[c, r, lo:lo + n]
                square_row = deg_square[c, r, lo:lo + n]
                for i in range(n):
                    md = mean_row[i]
                    md2 = md * md
                    vd = square_row[i] - md2
                    mrd = mr * md
                    vp = vr * vd
                    denom = c3 if vp < 0.0 else np.sqrt(vp) + c3
                    row_sum[i] += ((2.0 * mrd + c1) * (cross[i] - mrd + c3)
                                   / ((mr2 + md2 + c1) * denom))
            for i in range(n):
                total[i] += row_sum[i] / width
        for i in range(n):
            out[p, lo + i] = total[i] / rows
    return out


@njit(cache=True)
def dp_forward(sims: np.ndarray, ref_indices: np.ndarray, num_patches: int,
               num_frames: int, search_window: int) -> tuple[np.ndarray, np.ndarray]:
    """visqol-python's DP forward pass (``_dp_forward_pass``) on a precomputed similarity table:
    cumulative scores and backtrace, with its rightmost-tie rule."""
    num_ref = ref_indices.shape[0]
    cumulative = np.zeros((num_ref, num_frames), dtype=np.float64)
    backtrace = np.full((num_ref, num_frames), -1, dtype=np.int64)
    prefix_value = np.empty(num_frames, dtype=np.float64)
    prefix_index = np.empty(num_frames, dtype=np.int64)
    for p in range(num_patches):
        idx = ref_indices[p]
        low = max(0, idx - search_window)
        high = min(num_frames - 1, idx + search_window)
        if p > 0:
            lower = max(0, ref_indices[p - 1] - search_window)
            best = -1e308
            best_at = -1
            for off in range(lower, high + 1):
                prefix_value[off] = best
                prefix_index[off] = best_at
                prev = cumulative[p - 1, off]
                if prev >= best:
                    best = prev
                    best_at = off
        for off in range(low, high + 1):
            value = sims[p, off]
            past = -1
            if p > 0:
                value += prefix_value[off]
                past = prefix_index[off]
                same = cumulative[p - 1, off]
                if same > value:
                    value = same
                    past = off
            cumulative[p, off] = value
            backtrace[p, off] = past
    return cumulative, backtrace
