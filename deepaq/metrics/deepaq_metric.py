"""The DeePAQ model as a registry metric (``deepaq`` or ``deepaq:CHECKPOINT``).

Why a separate entry: ``deepaq eval`` compares the learned metric with the classical ones through one
interface. ``score`` returns the distance (lower is better) under ``"score"`` plus the calibrated
``mos``; ``score_many`` hands whole lists to :class:`deepaq.scoring.Scorer` so evaluation keeps
batching and reference caching.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepaq.metrics import Metric, MetricInfo


class DeepaqMetric(Metric):
    def __init__(self, checkpoint: str | None = None, device: str = "auto", scorer: Any = None,
                 **scorer_kwargs: Any):
        if scorer is None:
            from deepaq.scoring import Scorer

            scorer = Scorer.from_pretrained(checkpoint, device=device, **scorer_kwargs)
        self.scorer = scorer
        name = "deepaq" if checkpoint is None else f"deepaq:{checkpoint}"
        self.info = MetricInfo(name=name, needs_reference=True, higher_is_better=False,
                               sample_rate=None, extra=None,
                               description="DeePAQ embedding distance (lower is better)")

    def score(self, ref: np.ndarray | None, deg: np.ndarray, sr: int) -> dict:
        if ref is None:
            raise ValueError("deepaq (full reference) needs a reference")
        r = self.scorer.score(ref, deg, sample_rate=sr)
        return {"score": r.distance, "mos": r.mos}

    def score_many(self, pairs: list[tuple[Any, Any]]) -> list[dict | Exception]:
        """Paths (or arrays of one rate) in bulk: batched, with reference embeddings cached."""
        out: list[dict | Exception] = []
        for r in self.scorer.score_many(pairs):
            out.append(r if isinstance(r, Exception) else {"score": r.distance, "mos": r.mos})
        return out
