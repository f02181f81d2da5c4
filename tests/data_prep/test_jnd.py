"""JND weak labels: degradations hit their levels (measured), pairs are labelled by the JND."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data_prep.degradations import available, get_degradation, register_degradation
from deepaq.audio import read_audio
from deepaq.records import read_jsonl


def _snr(clean: np.ndarray, degraded: np.ndarray) -> float:
    return 10 * math.log10(np.mean(clean.astype(np.float64) ** 2)
                           / np.mean((degraded.astype(np.float64) - clean) ** 2))


def test_degradations_hit_their_level(music_clip):
    x = music_clip("guitar", seconds=1.0)
    rng = np.random.default_rng(0)
    for name in ("noise_white", "noise_pink"):
        for snr in (0.0, 12.0, 30.0):
            y = get_degradation(name)(x, 48000, snr, rng)
            assert _snr(x, y) == pytest.approx(snr, abs=0.01)
    from scipy.signal import welch

    y = get_degradation("lowpass")(x, 48000, 4000.0, rng)
    f, p_in = welch(x[0], 48000, nperseg=4096)
    _, p_out = welch(y[0], 48000, nperseg=4096)
    band = f > 6000
    assert 10 * np.log10(p_out[band].sum() / p_in[band].sum()) < -30
    y = get_degradation("clipping")(x, 48000, 6.0, rng)
    assert np.max(np.abs(y)) == pytest.approx(np.max(np.abs(x)) * 10 ** (-6 / 20), rel=1e-5)
    y = get_degradation("packet_loss")(x, 48000, 30.0, rng)
    zero_packets = np.mean([np.all(y[:, k:k + 960] == 0) for k in range(0, y.shape[1] - 960, 960)])
    assert 0.15 < zero_packets < 0.45
    assert get_degradation("reverb")(x, 48000, 0.5, rng).shape == x.shape
    assert {"noise_white", "noise_pink", "lowpass", "clipping", "packet_loss", "reverb"} <= set(
        available())


def test_registering_a_new_degradation():
    @register_degradation("gain_drop_test", unit="dB", higher_is_better=False, jnd=1.0)
    def gain_drop(audio, sr, level, rng):
        return audio * 10 ** (-level / 20)

    d = get_degradation("gain_drop_test")
    assert d.jnd == 1.0 and not d.higher_is_better
    with pytest.raises(ValueError, match="unknown degradation"):
        get_degradation("nope")


def test_jnd_corpus_measured_snrs_pairs_and_cli(tmp_path, music_file):
    from data_prep.jnd import main

    out = tmp_path / "jnd"
    inputs = [str(music_file(t)) for t in ("guitar", "castanets")]
    code = main([*inputs, "-o", str(out), "--levels", "0:12:3", "--jnd", "3",
                 "--excerpt-seconds", "1", "--max-excerpts-per-track", "1",
                 "--splits", "train=0.5,val=0.5", "-q"])
    assert code == 0
    items = read_jsonl(out / "manifest.jsonl")
    pairs = read_jsonl(out / "pairs.jsonl")
    assert len(items) == 2 * 6 and len({r["key"] for r in items}) == len(items)
    by_key = {r["key"]: r for r in items}
    for row in items:
        if row["condition"] == "clean":
            assert row["level"] is None and row["bitrate_label"] == "inf"
            continue
        clean, sr = read_audio(out / row["reference"])
        deg, _ = read_audio(out / row["path"])
        assert sr == 48000 and deg.shape == clean.shape
        assert _snr(clean, deg) == pytest.approx(row["level"], abs=0.05), row["key"]
        assert row["snr_measured_db"] == pytest.approx(row["level"], abs=0.05)
    assert len(pairs) == 2 * math.comb(5, 2)
    for p in pairs:
        gap = abs(by_key[p["a"]]["level"] - by_key[p["b"]]["level"])
        assert p["gap"] == pytest.approx(gap)
        assert p["label"] == ("within_jnd" if gap <= 3 else "beyond_jnd")
    assert {p["label"] for p in pairs} == {"within_jnd", "beyond_jnd"}
    assert main([*inputs, "-o", str(tmp_path / "x"), "--degradation", "nope", "-q"]) == 2


def test_jnd_loss_pulls_within_and_pushes_beyond():
    import torch

    from deepaq.losses import JNDContrastiveLoss

    loss = JNDContrastiveLoss(jnd=3.0, margin=1.0, scale_margin=False)
    batch = {"level": torch.tensor([0.0, 3.0, 12.0, float("nan"), 0.0]),
             "degradation": ["n", "n", "n", None, "n"]}
    groups = torch.tensor([0, 0, 0, 0, 1])
    feats = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.2, 0.0], [9.0, 9.0], [0.0, 0.0]],
                         requires_grad=True)
    terms = loss.terms(batch, groups, features=feats)
    # within: (0, 1) at d=0.5; beyond: (0, 2) d=0.2 and (1, 2) d=0.3, margin 1
    assert terms["pull"].item() == pytest.approx(0.25)
    assert terms["push"].item() == pytest.approx((0.8 ** 2 + 0.7 ** 2) / 2)
    terms["loss"].backward()
    assert feats.grad[3].abs().sum() == 0 and feats.grad[4].abs().sum() == 0
