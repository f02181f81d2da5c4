"""ViSQOL v3 as a registry metric: the same labellers that label the corpus.

Audio mode (default) works at 48 kHz on the mono mix, with the batched labeller
(:mod:`deepaq.visqol_batched`, visqol-python's scores; ``labeller="visqol-python"`` for the
reference implementation); speech mode (``visqol:speech``) at 16 kHz with visqol-python. Inputs at
other rates are resampled by the labeller. Higher is better (MOS-LQO, 1..5).
"""

from __future__ import annotations

import numpy as np

from deepaq.metrics import Metric, MetricInfo


class VisqolMetric(Metric):
    """Registry entry ``visqol``; one labeller (SVR model, filter banks) reused for every pair."""

    def __init__(self, mode: str = "audio", labeller: str = "batched", device: str = "cpu"):
        if mode == "audio":
            from deepaq.visqol import make_labeller

            self.labeller = make_labeller(labeller, device)
        else:
            from deepaq.visqol import VisqolLabeller

            self.labeller = VisqolLabeller(mode=mode)
        impl = self.labeller.info()["implementation"]
        self.info = MetricInfo(
            name="visqol" if mode == "audio" else f"visqol:{mode}", needs_reference=True,
            higher_is_better=True, sample_rate=self.labeller.sample_rate, extra=None,
            description=f"ViSQOL v3 MOS-LQO, {mode} mode ({impl})")

    def score(self, ref: np.ndarray | None, deg: np.ndarray, sr: int) -> float:
        if ref is None:
            raise ValueError("visqol needs a reference")
        return self.labeller.score(ref, deg, sample_rate=sr)
