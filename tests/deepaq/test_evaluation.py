"""Evaluation: correlations, cross-validated mappings (out-of-fold only), CIs, and the eval CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from deepaq.calibration import MonotonicCubic
from deepaq.evaluation import cv_predict, evaluate, evaluate_metric, fit_cubic, kfold_indices


def synthetic(n=120, seed=0):
    """MOS a known monotone (logistic) function of a distance, plus noise."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0, 3, n)
    mos = 1 + 4 / (1 + np.exp(4 * (d - 1.5))) + 0.1 * rng.standard_normal(n)
    return d, mos


def test_monotonic_cubic_is_monotone_and_roundtrips():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 200)
    y = np.where(x < 0.5, 4.5, 1.5) + 0.3 * rng.standard_normal(200)  # a step: free cubic wiggles
    m = MonotonicCubic().fit(x, y)
    grid = np.linspace(-0.5, 1.5, 400)
    assert np.all(np.diff(m(grid)) <= 1e-9) and not m.increasing
    free = np.polyval(np.polyfit(x, y, 3), np.linspace(0, 1, 400))
    assert np.any(np.diff(free) > 0)  # the unconstrained fit is not monotone here
    again = MonotonicCubic.from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_allclose(again(grid), m(grid))


def test_raw_srcc_equals_scipy_and_mapping_helps():
    d, mos = synthetic()
    res = evaluate_metric(d, mos, higher_is_better=False, k=5, n_boot=200)
    assert res["sign"] == "-"
    assert res["srcc_raw"] == pytest.approx(-spearmanr(d, mos)[0], abs=1e-12)
    assert res["pcc_raw"] == pytest.approx(-pearsonr(d, mos)[0], abs=1e-12)
    assert res["pcc_cubic"] > res["pcc_raw"]
    assert res["pcc_mlp"] > res["pcc_raw"]
    assert res["rmse_cubic"] < np.std(mos)
    lo, hi = res["srcc_raw_ci"]
    assert lo < res["srcc_raw"] < hi


def test_cv_never_fits_on_the_fold_it_reports():
    d, mos = synthetic(n=53)
    seen: list[set] = []

    def recording_fitter(x, y):
        seen.append(set(np.round(x, 12)))
        return fit_cubic(x, y)

    pred, folds = cv_predict(d, mos, recording_fitter, k=5, seed=3)
    assert len(folds) == 5 and len(seen) == 5
    tested = np.concatenate([t for _, t in folds])
    assert sorted(tested) == list(range(53))  # every item predicted exactly once
    for (train, test), xs in zip(folds, seen):
        assert not set(train) & set(test)
        assert not xs & set(np.round(d[test], 12))  # the map never saw a point it predicts
    # an out-of-fold prediction differs from an in-sample one
    in_sample = fit_cubic(d, mos)(d)
    assert not np.allclose(pred, in_sample)
    assert kfold_indices(10, 20)[0][1].size == 1  # k capped at n


def test_per_test_and_pooled():
    d1, m1 = synthetic(60, 1)
    d2, m2 = synthetic(60, 2)
    rows = [{"mos": m, "test": "A"} for m in m1] + [{"mos": m, "test": "B"} for m in m2]
    scores = {"dist": np.concatenate([d1, d2]), "noise": np.random.default_rng(0).normal(size=120)}
    res = evaluate(rows, scores, {"dist": False, "noise": True}, k=4, n_boot=100)
    assert [(r["metric"], r["test"]) for r in res] == [
        ("dist", "A"), ("dist", "B"), ("dist", "pooled"),
        ("noise", "A"), ("noise", "B"), ("noise", "pooled")]
    assert res[0]["srcc_raw"] == pytest.approx(-spearmanr(d1, m1)[0])
    assert res[2]["n"] == 120 and abs(res[5]["srcc_raw"]) < 0.3


def test_eval_cli_on_real_music(music_clip, tmp_path, capsys):
    """logmel_l1 and a precomputed column against a MOS that is a known function of noise level."""
    import soundfile as sf

    rows = []
    rng = np.random.default_rng(0)
    for name in ("guitar", "glock"):
        x = music_clip(name, 1.0, 1.0)
        sf.write(tmp_path / f"{name}.wav", x.T, 48000, subtype="FLOAT")
        for i, snr in enumerate((5, 10, 15, 20, 25, 30, 35, 40)):
            noise = rng.standard_normal(x.shape) * np.sqrt(np.mean(x**2) / 10 ** (snr / 10))
            sf.write(tmp_path / f"{name}_{snr}.wav", (x + noise).T, 48000, subtype="FLOAT")
            rows.append({"key": f"{name}_{snr}", "reference": f"{name}.wav",
                         "degraded": f"{name}_{snr}.wav", "mos": 1 + 4 * (1 - np.exp(-snr / 15)),
                         "test": "t1" if i % 2 else "t2", "condition": f"snr{snr}",
                         "given": snr + rng.normal()})
    manifest = tmp_path / "lt.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from deepaq.cli import main

    out = tmp_path / "out"
    code = main(["eval", str(manifest), "--metrics", "logmel_l1,column:given", "--out-dir",
                 str(out), "--folds", "4", "--bootstrap", "100", "--no-progress"])
    assert code == 0
    table = capsys.readouterr().out
    assert "| logmel_l1 | pooled |" in table and "−x (distance)" in table
    res = json.loads((out / "results.json").read_text())
    pooled = {r["metric"]: r for r in res if r["test"] == "pooled"}
    assert pooled["logmel_l1"]["srcc_raw"] > 0.8  # quality-oriented: positive
    assert pooled["given"]["sign"] == "+"
    assert len(list(out.glob("scatter_*.png"))) == 6  # 2 metrics x (t1, t2, pooled)
    assert (out / "results.csv").is_file() and (out / "scores.csv").is_file()


def test_monotone_ceiling_equals_brute_force_over_all_rankings():
    """The enumeration must find the best ranking that keeps the chain in bitrate order."""
    from itertools import permutations

    from deepaq.evaluation import monotone_ceiling

    rng = np.random.default_rng(3)
    quality = rng.normal(size=7)
    kbps = np.array([16.0, 32.0, 64.0, 0.0, 0.0, 0.0, 0.0])
    chain = kbps > 0
    quality[:3] = [2.0, 1.0, 0.5]          # the labels order the chain backwards
    best = -1.0
    for ranks in permutations(range(7)):
        r = np.array(ranks)
        if r[0] < r[1] < r[2]:             # higher bitrate -> higher rank
            best = max(best, spearmanr(r, quality)[0])
    assert monotone_ceiling(quality, kbps, chain) == pytest.approx(best, abs=1e-12)
    assert best < 1.0                       # the constraint costs agreement here
    # a chain the labels already order costs nothing
    assert monotone_ceiling(quality, quality, chain) == pytest.approx(1.0)


def test_bitrate_kendall_on_the_shipped_corpus_labels_matches_a_direct_loop():
    """Per codec, mean over excerpts of Kendall's tau vs bitrate, clean items left out; on the
    shipped model's ViSQOL labels (rendered music) it shows ViSQOL's known Opus disorder."""
    import gzip
    from collections import defaultdict
    from pathlib import Path

    from scipy.stats import kendalltau

    from deepaq.evaluation import bitrate_kendall

    path = Path(__file__).parents[2] / "checkpoints" / "deepaq-small" / "train_manifest.jsonl.gz"
    with gzip.open(path, "rt") as f:
        rows = [json.loads(line) for line in f]
    got = bitrate_kendall([r["visqol"] for r in rows],
                          [r.get("bitrate_requested_kbps") or np.inf for r in rows],
                          [r["codec"] for r in rows], [r["excerpt_id"] for r in rows])
    groups = defaultdict(list)
    for r in rows:
        if r["codec"]:
            groups[r["codec"], r["excerpt_id"]].append(r)
    assert sorted(got) == ["aac", "mp3", "opus"]
    for codec, tau in got.items():
        direct = [kendalltau([r["visqol"] for r in g], [r["bitrate_requested_kbps"] for r in g])[0]
                  for (c, _), g in groups.items() if c == codec]
        assert tau == pytest.approx(np.nanmean(direct), abs=1e-12)
    assert got["mp3"] > 0.95 and got["opus"] < got["mp3"]
    # quality that follows the bitrate exactly orders every codec perfectly
    kbps = [r.get("bitrate_requested_kbps") or np.inf for r in rows]
    perfect = bitrate_kendall(np.nan_to_num(kbps, posinf=1e3), kbps, [r["codec"] for r in rows],
                              [r["excerpt_id"] for r in rows])
    assert perfect == {"aac": 1.0, "mp3": 1.0, "opus": 1.0}


def test_bitrate_kendall_is_scipys_tau_b_with_ties():
    """Tied qualities (a metric that saturates) and tied bitrates must count as scipy counts them."""
    from scipy.stats import kendalltau

    from deepaq.evaluation import bitrate_kendall

    rng = np.random.default_rng(5)
    quality = rng.integers(0, 3, 70).astype(float)          # many ties
    kbps = np.tile([16.0, 32, 32, 64, 96, 128, 128], 10)      # and tied bitrates
    group = np.repeat(np.arange(10), 7)
    expected = [kendalltau(quality[group == g], kbps[group == g])[0] for g in range(10)]
    got = bitrate_kendall(quality, kbps, ["mp3"] * 70, group)
    assert got["mp3"] == pytest.approx(np.nanmean(expected), abs=1e-12)
    # a constant quality has no order at all: NaN, not a perfect or zero score
    assert np.isnan(bitrate_kendall(np.ones(7), kbps[:7], ["aac"] * 7, [0] * 7)["aac"])
