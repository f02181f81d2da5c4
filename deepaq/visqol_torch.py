"""The heavy parts of the batched ViSQOL labeller in torch, for a GPU (``device="cuda"``).

Same interface as :class:`deepaq.visqol_batched.NumpyOps`, same values to rounding (float64
throughout). The gammatone filterbank is where the two differ in method: a recursive filter is a
loop over 3840 samples per frame, serial work that a GPU does badly, so here each band's 4-stage
IIR filter is replaced by its impulse response over one frame (exact: a frame starts from a zero
state and only its first 3840 output samples are used) and applied to all frames and bands at
once by FFT convolution. The patch search is the same cell-wise NSIM as the numba kernel, as
tensor operations over (patch, offset, band, frame).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from deepaq.visqol_batched import _hilbert_multiplier

#: Frames per FFT-convolution chunk (memory: chunk x bands x FFT length x 16 bytes).
FRAME_CHUNK = 64


def impulse_responses(coef: np.ndarray, length: int) -> np.ndarray:
    """Each band's 4-stage gammatone impulse response over ``length`` samples, ``(bands, n)``."""
    from scipy.signal import sosfilt

    delta = np.zeros(length)
    delta[0] = 1.0
    out = np.empty((coef.shape[1], length))
    for b in range(coef.shape[1]):
        sos = [[*coef[3 * s:3 * s + 3, b], 1.0, coef[12, b], coef[13, b]] for s in range(4)]
        out[b] = sosfilt(np.asarray(sos), delta)
    return out


class TorchOps:
    """Envelopes, cross-correlation lags, gammatone frames and the patch-search table in torch."""

    name = "torch"

    def __init__(self, device: str | None = None):
        if device in (None, "auto"):
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"labeller device {device!r}: CUDA is not available here")
        self.device = str(device)
        self._filters: dict[tuple, torch.Tensor] = {}

    def _t(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64, device=self.device)

    def upper_envelopes(self, x: np.ndarray) -> np.ndarray:
        t = self._t(x)
        n = t.shape[-1]
        mean = t.mean(dim=-1, keepdim=True)
        centered = t - mean
        half = torch.fft.rfft(centered, dim=-1)
        mult = torch.as_tensor(_hilbert_multiplier(n), dtype=half.dtype, device=half.device)
        quadrature = torch.fft.irfft(half * mult, n=n, dim=-1)
        env = torch.sqrt(centered * centered + quadrature * quadrature) + mean
        return env.cpu().numpy()

    def spectrum(self, env: np.ndarray, n: int, points: int) -> torch.Tensor:
        t = self._t(env)
        return torch.fft.rfft(F.pad(t, (0, n - t.shape[-1])), n=points, dim=-1)

    def stack(self, spectra: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(spectra)

    def best_lags(self, ref_spec: torch.Tensor, deg_spec: torch.Tensor, n: int,
                  points: int) -> np.ndarray:
        xcorr = torch.fft.irfft(ref_spec * torch.conj(deg_spec), n=points, dim=-1)
        max_lag = n - 1
        corrs = torch.cat((xcorr[..., points - max_lag:], xcorr[..., :max_lag + 1]), dim=-1)
        return (torch.argmax(corrs, dim=-1) - max_lag).cpu().numpy()

    def frame_energies(self, buf: np.ndarray, starts: np.ndarray, hann: np.ndarray,
                       coef: np.ndarray) -> np.ndarray:
        win = hann.shape[0]
        points = 2 * win
        key = (win, coef.tobytes())
        if key not in self._filters:
            h = self._t(impulse_responses(coef, win))
            self._filters[key] = torch.fft.rfft(h, n=points, dim=-1)
        filt = self._filters[key]
        signal = self._t(buf)
        window = self._t(hann)
        index = torch.as_tensor(starts, device=self.device)[:, None] + torch.arange(
            win, device=self.device)
        out = []
        for i in range(0, index.shape[0], FRAME_CHUNK):
            frames = signal[index[i:i + FRAME_CHUNK]] * window
            spec = torch.fft.rfft(frames, n=points, dim=-1)[:, None, :] * filt[None]
            y = torch.fft.irfft(spec, n=points, dim=-1)[..., :win]
            out.append(torch.sqrt((y * y).mean(dim=-1)))
        if not out:
            return np.empty((0, coef.shape[1]))
        return torch.cat(out).cpu().numpy()

    def search_table(self, ref_patches: np.ndarray, deg_padded: np.ndarray, lows: np.ndarray,
                     highs: np.ndarray, num_offsets: int) -> np.ndarray:
        from visqol.numba_accel import _C1, _C3, _GW

        width = ref_patches.shape[2]
        kernel = self._t(_GW)[None, None]

        def local(x: torch.Tensor) -> torch.Tensor:  # (N, bands, width), edges replicated
            padded = F.pad(x[:, None], (1, 1, 1, 1), mode="replicate")
            return F.conv2d(padded, kernel)[:, 0]

        ref = self._t(ref_patches)
        deg = self._t(deg_padded).unfold(1, width, 1)[:, :num_offsets].transpose(0, 1)
        mr, vr = local(ref), local(ref * ref)
        vr = vr - mr * mr
        md, vd = local(deg), local(deg * deg)
        vd = vd - md * md
        table = torch.full((ref.shape[0], num_offsets), -torch.inf, dtype=torch.float64,
                           device=self.device)
        for p in range(ref.shape[0]):
            cross = local(ref[p][None] * deg)
            mrd = mr[p] * md
            vp = vr[p] * vd
            denom = torch.where(vp < 0, torch.full_like(vp, _C3), torch.sqrt(vp.clamp_min(0)) + _C3)
            sim = ((2.0 * mrd + _C1) * (cross - mrd + _C3)
                   / ((mr[p] * mr[p] + md * md + _C1) * denom))
            table[p] = sim.mean(dim=-1).mean(dim=-1)
        offsets = torch.arange(num_offsets, device=self.device)
        lo = torch.as_tensor(lows, device=self.device)[:, None]
        hi = torch.as_tensor(highs, device=self.device)[:, None]
        table = torch.where((offsets >= lo) & (offsets <= hi), table,
                            torch.full_like(table, -torch.inf))
        return table.cpu().numpy()
