"""Zimtohrli (Google's psychoacoustic distance, PyPI ``zimtohrli``) as a registry metric.

Why: a recent hand-built auditory model (gammatone-like filterbank, loudness, NSIM-style comparison) that
users benchmark learned metrics against. It takes 48 kHz mono in [-1, 1] (a full-scale sine is 80 dB
SPL), so inputs are downmixed and resampled to 48 kHz here. ``score`` is the Zimtohrli distance (lower is
better, 0 for identical input) with the package's own MOS mapping under ``"mos"``.
Install: ``pip install 'deepaq[baselines]'``.
"""

from __future__ import annotations

import numpy as np

from deepaq.metrics import Metric, MetricInfo

SAMPLE_RATE = 48000
INSTALL_HINT = "pip install 'deepaq[baselines]'"


def _mono48(x: np.ndarray, sr: int) -> np.ndarray:
    from deepaq.audio import apply_channel_policy, resample

    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    return resample(apply_channel_policy(x, "mono"), sr, SAMPLE_RATE)[0]


class ZimtohrliMetric(Metric):
    """Registry entry ``zimtohrli``; one analyser reused for every pair."""

    info = MetricInfo(name="zimtohrli", needs_reference=True, higher_is_better=False,
                      sample_rate=SAMPLE_RATE, extra="baselines",
                      description="Zimtohrli psychoacoustic distance (48 kHz mono; lower is better)")

    def __init__(self):
        try:
            import zimtohrli
        except ImportError as err:
            raise ImportError(f"metric 'zimtohrli' needs the zimtohrli package: {INSTALL_HINT}") from err
        self._zimtohrli = zimtohrli
        self._analyser = zimtohrli.Pyohrli()

    def score(self, ref: np.ndarray | None, deg: np.ndarray, sr: int) -> dict:
        if ref is None:
            raise ValueError("zimtohrli needs a reference")
        a, b = _mono48(ref, sr), _mono48(deg, sr)
        n = min(a.size, b.size)
        distance = float(self._analyser.distance(a[:n], b[:n]))
        return {"score": distance, "mos": float(self._zimtohrli.mos_from_zimtohrli(distance))}
