"""2f-model (Kastner & Herre): a two-feature re-mapping of PEAQ for audio-codec quality (MUSHRA).

Why: the 2f-model predicts MUSHRA scores of modern codecs better than PEAQ's ODG, yet needs only
two of PEAQ's MOVs, so it comes almost free with ``deepaq.metrics.peaq``:
``MMS = 56.1345 / (1 + (-0.0282 * AvgModDiff1 - 0.8628)^2) - 27.1451 * ADB + 86.3515``,
clipped to 0..100 (higher is better).
"""

from __future__ import annotations

import numpy as np

from deepaq.metrics import Metric, MetricInfo
from deepaq.metrics.peaq import FS, peaq_movs


def twof_mms(avg_mod_diff1: float, adb: float) -> float:
    """MUSHRA-scale score (0..100) from PEAQ's AvgModDiff1B and ADBB."""
    mms = 56.1345 / (1.0 + (-0.0282 * avg_mod_diff1 - 0.8628) ** 2) - 27.1451 * adb + 86.3515
    return float(np.clip(mms, 0.0, 100.0))


class TwoFMetric(Metric):
    """Registry wrapper: ``score`` returns {"score": MMS, "AvgModDiff1B", "ADBB"}."""

    info = MetricInfo(
        name="2f", needs_reference=True, higher_is_better=True, sample_rate=FS, extra=None,
        description="2f-model (Kastner & Herre): MUSHRA-scale 0..100 from PEAQ's AvgModDiff1 "
                    "and ADB",
    )

    def score(self, ref: np.ndarray | None, deg: np.ndarray, sr: int) -> dict[str, float]:
        if ref is None:
            raise ValueError("the 2f-model needs a reference signal")
        movs = peaq_movs(ref, deg, sr)
        amd1, adb = movs["AvgModDiff1B"], movs["ADBB"]
        return {"score": twof_mms(amd1, adb), "AvgModDiff1B": amd1, "ADBB": adb}
