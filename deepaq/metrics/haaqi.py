"""HAAQI (Kates & Arehart) for normal hearing, through pyclarity's implementation.

Why pyclarity: it is the maintained Python port used by the Clarity/Cadenza challenges. It is an
optional dependency because its declared dependencies are heavy; HAAQI itself only needs numpy, scipy,
numba and pyyaml, which deepaq already depends on, so install it with
``pip install --no-deps pyclarity==0.9.0`` (a plain install would pull torchaudio, which
breaks the CPU torch here).

Conventions: flat 0 dB HL audiogram, no NAL-R equalisation (``equalisation=2``: nothing to
compensate), each channel's reference presented at 65 dB SPL (``level1 = 65 - 20 log10 rms(ref)``,
as the Cadenza baselines do; the degraded channel gets the same gain), score averaged over channels.
HAAQI resamples to 24 kHz internally.
"""

from __future__ import annotations

import numpy as np

from deepaq.metrics import Metric, MetricInfo

INSTALL_HINT = "pip install --no-deps pyclarity==0.9.0"
AUDIOGRAM_FREQUENCIES = (250, 500, 1000, 2000, 4000, 6000)


def _haaqi_v1():
    """Import pyclarity lazily; a missing extra says how to install it."""
    try:
        from clarity.evaluator.haaqi import haaqi_v1
        from clarity.utils.audiogram import Audiogram
    except ImportError as err:
        raise ImportError(f"HAAQI needs pyclarity: {INSTALL_HINT}") from err
    return haaqi_v1, Audiogram


def haaqi_normal_hearing(ref: np.ndarray, deg: np.ndarray, sr: int,
                         level_db_spl: float = 65.0) -> list[float]:
    """HAAQI (0..1, higher is better) per channel for (C, N) signals at ``sr``."""
    haaqi_v1, Audiogram = _haaqi_v1()
    ref = np.atleast_2d(np.asarray(ref, dtype=np.float64))
    deg = np.atleast_2d(np.asarray(deg, dtype=np.float64))
    if ref.shape[0] != deg.shape[0]:
        from deepaq.audio import AudioError
        raise AudioError(None, f"HAAQI needs the same channel count, got {ref.shape[0]} "
                         f"(reference) and {deg.shape[0]} (degraded)")
    n = min(ref.shape[-1], deg.shape[-1])
    audiogram = Audiogram(levels=np.zeros(len(AUDIOGRAM_FREQUENCIES)),
                          frequencies=np.array(AUDIOGRAM_FREQUENCIES))
    scores = []
    for r, d in zip(ref[:, :n], deg[:, :n]):
        rms = float(np.sqrt(np.mean(r ** 2)))
        if rms <= 0:
            from deepaq.audio import AudioError
            raise AudioError(None, "HAAQI reference channel is digital silence")
        score, _, _, _ = haaqi_v1(reference=r, reference_freq=sr, processed=d, processed_freq=sr,
                                  audiogram=audiogram, equalisation=2,
                                  level1=level_db_spl - 20 * np.log10(rms))
        scores.append(float(score))
    return scores


class HAAQIMetric(Metric):
    """Registry wrapper: ``score`` returns {"score": mean HAAQI, "channels": [...]}."""

    info = MetricInfo(
        name="haaqi", needs_reference=True, higher_is_better=True, sample_rate=None,
        extra="haaqi",
        description="HAAQI v1 (Kates & Arehart) for normal hearing via pyclarity, 0..1, "
                    "averaged over channels",
    )

    def __init__(self, level_db_spl: float = 65.0) -> None:
        _haaqi_v1()  # fail early, with the install hint, when the extra is missing
        self.level_db_spl = level_db_spl

    def score(self, ref: np.ndarray | None, deg: np.ndarray, sr: int) -> dict:
        if ref is None:
            raise ValueError("HAAQI needs a reference signal")
        per_channel = haaqi_normal_hearing(ref, deg, sr, self.level_db_spl)
        return {"score": float(np.mean(per_channel)), "channels": per_channel}
