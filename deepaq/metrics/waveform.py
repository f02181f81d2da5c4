"""Waveform baselines: SNR and scale-invariant SDR, the trivial metrics every comparison includes.

Why both: SNR punishes any gain or polarity change, SI-SDR (Le Roux et al. 2019) projects the degraded
signal onto the reference first, so a gain change costs nothing. Both compare samples, so they only mean
something when the degraded signal is time-aligned with the reference (waveform-matching codecs,
additive noise, separation); on resynthesising codecs they are kept as trivial rows. Reference and
degraded are trimmed to the shorter length and compared over all channels at once (one energy ratio;
SI-SDR: each channel made zero-mean, one projection gain for all). Higher is better, in dB; an exact
copy scores ``+inf`` unless capped (``cap_db``, 100 dB by default, so tables and correlations stay finite).
"""

from __future__ import annotations

import numpy as np

from deepaq.metrics import Metric, MetricInfo

CAP_DB = 100.0
_TINY = 1e-20


def _pair(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.atleast_2d(np.asarray(ref, dtype=np.float64))
    deg = np.atleast_2d(np.asarray(deg, dtype=np.float64))
    if ref.shape[0] != deg.shape[0]:
        raise ValueError(f"channel count differs: reference {ref.shape[0]}, degraded {deg.shape[0]}")
    n = min(ref.shape[1], deg.shape[1])
    return ref[:, :n], deg[:, :n]


def _ratio_db(signal_energy: float, error_energy: float, cap_db: float) -> float:
    if signal_energy <= _TINY:
        raise ValueError("the reference is silent: the ratio is undefined")
    if error_energy <= signal_energy * 10.0 ** (-cap_db / 10.0):
        return cap_db
    return float(10.0 * np.log10(signal_energy / error_energy))


def snr_db(ref: np.ndarray, deg: np.ndarray, cap_db: float = CAP_DB) -> float:
    """``10 log10(sum ref^2 / sum (ref - deg)^2)`` over all channels."""
    ref, deg = _pair(ref, deg)
    return _ratio_db(float(np.sum(ref ** 2)), float(np.sum((ref - deg) ** 2)), cap_db)


def si_sdr_db(ref: np.ndarray, deg: np.ndarray, cap_db: float = CAP_DB) -> float:
    """``10 log10(|a s|^2 / |a s - d|^2)`` with zero-mean channels and ``a = <d, s> / <s, s>``."""
    ref, deg = _pair(ref, deg)
    ref = ref - ref.mean(axis=1, keepdims=True)
    deg = deg - deg.mean(axis=1, keepdims=True)
    energy = float(np.sum(ref ** 2))
    if energy <= _TINY:
        raise ValueError("the reference is silent: the ratio is undefined")
    target = (float(np.sum(deg * ref)) / energy) * ref
    return _ratio_db(float(np.sum(target ** 2)), float(np.sum((target - deg) ** 2)), cap_db)


class _RatioMetric(Metric):
    """Shared body of ``snr`` and ``si_sdr``: a capped ratio of the pair, in dB."""

    def __init__(self, cap_db: float = CAP_DB):
        self.cap_db = float(cap_db)

    def _ratio(self, ref: np.ndarray, deg: np.ndarray, cap_db: float) -> float:
        raise NotImplementedError

    def score(self, ref: np.ndarray | None, deg: np.ndarray, sr: int) -> float:
        if ref is None:
            raise ValueError(f"{self.info.name} needs a reference")
        return self._ratio(ref, deg, self.cap_db)


class SnrMetric(_RatioMetric):
    """Registry entry ``snr``."""

    info = MetricInfo(name="snr", needs_reference=True, higher_is_better=True, sample_rate=None,
                      extra=None, description="signal-to-noise ratio in dB (no alignment, capped)")
    _ratio = staticmethod(snr_db)


class SiSdrMetric(_RatioMetric):
    """Registry entry ``si_sdr``."""

    info = MetricInfo(name="si_sdr", needs_reference=True, higher_is_better=True, sample_rate=None,
                      extra=None, description="scale-invariant SDR in dB (no alignment, capped)")
    _ratio = staticmethod(si_sdr_db)
