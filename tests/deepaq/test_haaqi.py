"""HAAQI via pyclarity (optional extra): identical ~1, falls with noise; clear error when missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from deepaq.metrics.haaqi import HAAQIMetric


def test_missing_pyclarity_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "clarity" or m.startswith("clarity.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "clarity", None)   # makes "import clarity..." fail
    with pytest.raises(ImportError, match=r"pip install --no-deps pyclarity==0\.9\.0"):
        HAAQIMetric()


def test_haaqi_on_music(music_clip):
    pytest.importorskip("clarity.evaluator.haaqi",
                        reason="pyclarity missing: pip install --no-deps pyclarity==0.9.0")
    x = music_clip("guitar", seconds=1.5, offset=1.0)[:1]          # mono keeps it fast
    metric = HAAQIMetric()
    assert metric.info.extra == "haaqi" and metric.info.higher_is_better
    same = metric.score(x, x.copy(), 48000)
    assert same["score"] > 0.95
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(x.shape).astype(np.float32) * np.sqrt(np.mean(x ** 2))
    scores = [metric.score(x, x + noise * 10 ** (-snr / 20), 48000)["score"] for snr in (30, 5)]
    assert same["score"] > scores[0] > scores[1], scores
    assert 0.0 <= scores[1] < 0.6


def test_channels_are_averaged(music_clip):
    pytest.importorskip("clarity.evaluator.haaqi",
                        reason="pyclarity missing: pip install --no-deps pyclarity==0.9.0")
    x = music_clip("castanets", seconds=1.0, offset=1.0)
    deg = x.copy()
    deg[1] += 0.05 * np.random.default_rng(0).standard_normal(deg.shape[1]).astype(np.float32)
    out = HAAQIMetric().score(x, deg, 48000)
    assert out["channels"][0] > out["channels"][1]
    assert out["score"] == pytest.approx(np.mean(out["channels"]))
