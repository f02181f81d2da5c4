"""Log-spectral distance: the plain spectral baseline that a learned metric must beat.

Definition (the usual one in speech enhancement and bandwidth extension): power spectra of the mono
mix, Hann STFT 2048 points / hop 512 (centred frames) at the input's own rate, in dB; each spectrum
floored at ``floor_db`` below the reference spectrogram's peak (so silence and empty bands do not
decide the number, and the floor moves with the reference's level); per frame the root mean square
dB difference over frequency bins, then the mean over frames. Reference and degraded are trimmed to the
shorter length (no alignment; a spectrum tolerates small lags). Lower is better; identical input
gives 0. ``lsd`` does not resample: compare signals at the rate of the test.
"""

from __future__ import annotations

import numpy as np

from deepaq.metrics import Metric, MetricInfo

N_FFT = 2048
HOP = 512
FLOOR_DB = 100.0


def power_spectrogram_db(x: np.ndarray) -> np.ndarray:
    """``(channels, samples)`` or ``(samples,)`` -> ``(bins, frames)`` power in dB (unfloored)."""
    import torch

    x = np.asarray(x, dtype=np.float64)
    mono = x.mean(axis=0) if x.ndim == 2 else x
    if mono.size < N_FFT:
        mono = np.pad(mono, (0, N_FFT - mono.size))
    spec = torch.stft(torch.from_numpy(np.ascontiguousarray(mono)), N_FFT, HOP,
                      window=torch.hann_window(N_FFT, dtype=torch.float64), center=True,
                      return_complex=True)
    return 10.0 * np.log10(np.maximum(spec.abs().numpy() ** 2, 1e-300))


def log_spectral_distance(ref: np.ndarray, deg: np.ndarray, floor_db: float = FLOOR_DB) -> float:
    """Mean over frames of the RMS (over bins) dB difference; see the module docstring."""
    ref = np.atleast_2d(np.asarray(ref))
    deg = np.atleast_2d(np.asarray(deg))
    n = min(ref.shape[1], deg.shape[1])
    a = power_spectrogram_db(ref[:, :n])
    b = power_spectrogram_db(deg[:, :n])
    floor = a.max() - floor_db
    d = np.maximum(a, floor) - np.maximum(b, floor)
    return float(np.mean(np.sqrt(np.mean(d ** 2, axis=0))))


class LsdMetric(Metric):
    """Registry entry ``lsd``."""

    info = MetricInfo(name="lsd", needs_reference=True, higher_is_better=False, sample_rate=None,
                      extra=None,
                      description="log-spectral distance in dB (STFT 2048/512, mono, RMS over bins)")

    def __init__(self, floor_db: float = FLOOR_DB):
        self.floor_db = float(floor_db)

    def score(self, ref: np.ndarray | None, deg: np.ndarray, sr: int) -> float:
        if ref is None:
            raise ValueError("lsd needs a reference")
        return log_spectral_distance(ref, deg, self.floor_db)
