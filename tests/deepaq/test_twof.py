"""2f-model: the published mapping, its clipping, and its behaviour on real music."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deepaq.metrics.peaq import peaq_movs
from deepaq.metrics.twof import TwoFMetric, twof_mms


def _noisy(x: np.ndarray, snr_db: float) -> np.ndarray:
    noise = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    return x + noise * np.sqrt(np.mean(x ** 2)) * 10 ** (-snr_db / 20)


def test_mapping_is_the_published_formula_and_clips():
    amd1, adb = 30.0, 1.5
    expected = 56.1345 / (1 + (-0.0282 * amd1 - 0.8628) ** 2) - 27.1451 * adb + 86.3515
    assert twof_mms(amd1, adb) == pytest.approx(expected)
    assert twof_mms(0.0, 0.0) == 100.0          # unclipped 118.5
    assert twof_mms(200.0, 5.0) == 0.0          # unclipped < 0


def test_mapping_falls_with_both_features():
    grid = np.linspace(0.0, 120.0, 25)
    by_amd = [twof_mms(a, 1.0) for a in grid]
    assert all(a > b for a, b in itertools.pairwise(by_amd))
    by_adb = [twof_mms(20.0, d) for d in np.linspace(0.5, 3.0, 11)]  # unclipped
    assert all(a > b for a, b in itertools.pairwise(by_adb))


def test_metric_on_music_uses_peaqs_movs_and_falls_with_noise(music_clip):
    x = music_clip("glock", seconds=3.0, offset=1.0)
    metric = TwoFMetric()
    assert metric.info.name == "2f" and metric.info.higher_is_better
    assert metric.score(x, x.copy(), 48000)["score"] == 100.0
    scores = []
    for snr in (50, 35, 20, 5):
        deg = _noisy(x, snr)
        out = metric.score(x, deg, 48000)
        movs = peaq_movs(x, deg, 48000)
        assert out["AvgModDiff1B"] == pytest.approx(movs["AvgModDiff1B"])
        assert out["score"] == pytest.approx(twof_mms(movs["AvgModDiff1B"], movs["ADBB"]))
        scores.append(out["score"])
    assert all(a > b for a, b in itertools.pairwise(scores)), scores
    assert 0.0 <= scores[-1] < 50.0 < scores[0] <= 100.0, scores
