"""Scorer: pairs, arrays, channel/rate policy, length policy, windowing/streaming, caching, NMR."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from deepaq.audio import AudioError, resample


def tiny_model():
    import torch

    from deepaq.model import QualityModel

    torch.manual_seed(0)
    return QualityModel(backbone="logmel_cnn", backbone_args={"channels": [4, 8], "n_mels": 32},
                        embed_dim=16)


def lowpass(x: np.ndarray, cutoff: float, sr: int = 48000) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    return sosfiltfilt(butter(8, cutoff, fs=sr, output="sos"), x, axis=-1).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def clips(music_clip, tmp_path_factory):
    d = tmp_path_factory.mktemp("scoring")
    ref = music_clip("guitar", seconds=2.0, offset=1.0)
    rng = np.random.default_rng(0)
    files = {"ref": ref, "lp": lowpass(ref, 3000.0),
             "noisy": (ref + 0.05 * rng.standard_normal(ref.shape)).astype(np.float32)}
    paths = {}
    for name, x in files.items():
        paths[name] = d / f"{name}.wav"
        sf.write(paths[name], x.T, 48000, subtype="FLOAT")
    return d, files, paths


def make_scorer(model, **kw):
    from deepaq.scoring import Scorer

    kw.setdefault("window_s", 1.0)
    kw.setdefault("device", "cpu")
    return Scorer(model, **kw)


def test_identical_is_zero_and_degraded_more(model, clips):
    from deepaq.calibration import MonotonicCubic

    _, _, p = clips
    cal = MonotonicCubic().fit(np.linspace(0, 1, 20), np.linspace(4.8, 1.2, 20)).to_dict()
    s = make_scorer(model, calibration=cal)
    same = s.score(p["ref"], p["ref"])
    assert same.distance == 0.0
    assert same.windows == 2 and same.duration_s == pytest.approx(2.0, abs=1e-3)
    for name in ("lp", "noisy"):
        r = s.score(p["ref"], p[name])
        assert r.distance > 1e-4
        assert r.mos < same.mos  # calibration is decreasing in distance
    assert same.mos == pytest.approx(4.8, abs=0.05)


def test_arrays_tensors_and_files_agree(model, clips):
    import torch

    _, x, p = clips
    s = make_scorer(model)
    from_files = s.score(p["ref"], p["noisy"]).distance
    from_arrays = s.score(x["ref"], x["noisy"], sample_rate=48000).distance
    from_tensors = s.score(torch.from_numpy(x["ref"]), torch.from_numpy(x["noisy"]),
                           sample_rate=48000).distance
    assert from_arrays == pytest.approx(from_files, rel=1e-5)
    assert from_tensors == pytest.approx(from_files, rel=1e-5)
    with pytest.raises(ValueError, match="sample_rate"):
        s.score(x["ref"], x["noisy"])
    assert s.embed(p["ref"]).shape == (16,)


def test_stereo_44k_vs_mono_24k(model, clips, tmp_path):
    _, x, p = clips
    stereo44 = resample(x["ref"], 48000, 44100)
    mono24 = resample(x["ref"].mean(0, keepdims=True), 48000, 24000)
    sf.write(tmp_path / "ref44.wav", stereo44.T, 44100)
    sf.write(tmp_path / "deg24.flac", mono24.T, 24000)
    s = make_scorer(model)
    r = s.score(tmp_path / "ref44.wav", tmp_path / "deg24.flac")
    assert r.duration_s == pytest.approx(2.0, abs=1e-3)
    # same music at other rates/channels is closer than a 3 kHz low-pass of it
    assert 0 < r.distance < s.score(p["ref"], p["lp"]).distance
    # mono 48 kHz vs the stereo original: downmix policy makes it (nearly) identical
    sf.write(tmp_path / "mono48.wav", x["ref"].mean(0, keepdims=True).T, 48000, subtype="FLOAT")
    assert s.score(p["ref"], tmp_path / "mono48.wav").distance < 1e-4


def test_length_policy(model, clips, tmp_path):
    _, x, p = clips
    s = make_scorer(model, length_tolerance_s=0.5)
    longer = np.concatenate([x["noisy"], x["noisy"][:, :4800]], axis=1)  # +0.1 s
    sf.write(tmp_path / "longer.wav", longer.T, 48000, subtype="FLOAT")
    trimmed = s.score(p["ref"], tmp_path / "longer.wav")
    assert trimmed.distance == pytest.approx(s.score(p["ref"], p["noisy"]).distance, rel=1e-5)
    much = np.concatenate([x["noisy"]] * 2, axis=1)  # 4 s vs 2 s
    sf.write(tmp_path / "much.wav", much.T, 48000, subtype="FLOAT")
    with pytest.raises(AudioError, match="length mismatch") as err:
        s.score(p["ref"], tmp_path / "much.wav")
    assert "ref.wav" in str(err.value) and "much.wav" in str(err.value)


def test_window_starts_cover_everything():
    from deepaq.scoring import window_starts

    assert window_starts(100, 200, 50) == [0]
    starts = window_starts(1000, 300, 250)
    assert starts == [0, 250, 500, 700]
    covered = np.zeros(1000, bool)
    for a in starts:
        covered[a:a + 300] = True
    assert covered.all()


def test_long_file_windows_and_streaming_agree(model, music_clip, tmp_path):
    ref = music_clip("strauss", seconds=9.0, offset=0.5)
    deg = lowpass(ref, 5000.0)
    sf.write(tmp_path / "r.wav", ref.T, 48000, subtype="FLOAT")
    sf.write(tmp_path / "d.flac", deg.T, 48000)
    mem = make_scorer(model, window_s=2.0, hop_s=1.5)
    stream = make_scorer(model, window_s=2.0, hop_s=1.5, stream_threshold_s=1.0, batch_size=3)
    a = mem.score(tmp_path / "r.wav", tmp_path / "d.flac")
    b = stream.score(tmp_path / "r.wav", tmp_path / "d.flac")
    assert a.windows == b.windows == 6  # starts 0, 1.5, .., 6 s and one aligned to the end (7 s)
    assert b.distance == pytest.approx(a.distance, rel=1e-3)
    # the average over windows equals the mean of the per-window distances
    ew = mem.embed_windows(tmp_path / "r.wav")
    dw = mem.embed_windows(tmp_path / "d.flac")
    assert ew.shape[0] == 6
    assert a.distance == pytest.approx(float(np.linalg.norm(ew - dw, axis=1).mean()), rel=1e-4)


def test_streamed_silent_file_is_rejected(model, tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros((48000 * 3, 1), np.float32), 48000)
    s = make_scorer(model, stream_threshold_s=1.0)
    with pytest.raises(AudioError, match="silent"):
        s.score(tmp_path / "silent.wav", tmp_path / "silent.wav")


def test_errors_per_pair_and_batching(model, clips, tmp_path):
    _, x, p = clips
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF not really a wav file")
    sf.write(tmp_path / "silent.wav", np.zeros((48000, 2), np.float32), 48000)
    pairs = [(p["ref"], p["noisy"]), (p["ref"], tmp_path / "missing.wav"),
             (p["ref"], tmp_path / "corrupt.wav"), (p["ref"], tmp_path / "silent.wav"),
             (p["ref"], p["lp"])]
    s1 = make_scorer(model, batch_size=1)
    s8 = make_scorer(model, batch_size=8)
    r1, r8 = s1.score_many(pairs), s8.score_many(pairs)
    for i in (1, 2, 3):
        assert isinstance(r8[i], AudioError)
    assert "not found" in str(r8[1]) and "corrupt" in str(r8[2]) and "silent" in str(r8[3])
    for i in (0, 4):
        assert r8[i].distance == pytest.approx(r1[i].distance, rel=1e-4)
    nan = x["ref"].copy()
    nan[0, 10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        s8.score(x["ref"], nan, sample_rate=48000)


def test_reference_embeddings_cached(model, clips, tmp_path):
    _, _, p = clips
    s = make_scorer(model, cache_dir=tmp_path / "cache")
    pairs = [(p["ref"], p[n]) for n in ("noisy", "lp", "ref")]
    first = s.score_many(pairs)
    # 2 windows per file: the shared reference is embedded once (the identical degraded reuses it)
    assert s.stats["embedded_windows"] == 2 * 3
    again = make_scorer(model, cache_dir=tmp_path / "cache")
    second = again.score_many(pairs)
    assert again.stats["embedded_windows"] == 0 and again.stats["disk_hits"] >= 3
    assert [r.distance for r in first] == [r.distance for r in second]
    assert len(list((tmp_path / "cache").glob("*/*.npy"))) == 3


def test_nmr_mode(model, music_clip, tmp_path):
    from deepaq.scoring import load_centroid

    refs = tmp_path / "clean"
    refs.mkdir()
    for name in ("guitar", "glock", "sopr"):
        sf.write(refs / f"{name}.wav", music_clip(name, 1.0, 1.0).T, 48000, subtype="FLOAT")
    s = make_scorer(model, window_s=1.0)
    c = s.centroid(refs)
    manual = np.mean([s.embed(refs / f"{n}.wav") for n in ("guitar", "glock", "sopr")], axis=0)
    np.testing.assert_allclose(c, manual, rtol=1e-5)
    np.save(tmp_path / "c.npy", c)
    np.testing.assert_allclose(load_centroid(tmp_path / "c.npy"), c)
    r = s.score_nmr(refs / "guitar.wav", c)
    assert r.mode == "nmr" and r.mos is None
    assert r.distance == pytest.approx(float(np.linalg.norm(manual - s.embed(refs / "guitar.wav"))),
                                       rel=1e-5)
    # a one-file reference set: that file's own (one-window) distance is 0, a degraded one's is not
    one = s.centroid([refs / "glock.wav"])
    assert s.score_nmr(refs / "glock.wav", one).distance == pytest.approx(0.0, abs=1e-6)
    noisy = music_clip("glock", 1.0, 1.0) + 0.1 * np.random.default_rng(1).standard_normal((2, 48000))
    assert s.score_nmr(noisy.astype(np.float32), one, sample_rate=48000).distance > 1e-3


def test_scoring_does_not_import_lightning(clips):
    _, _, p = clips
    code = f"""
import sys, torch
from deepaq.model import QualityModel
from deepaq.scoring import Scorer
m = QualityModel(backbone="logmel_cnn", backbone_args={{"channels": [4], "n_mels": 16}}, embed_dim=8)
r = Scorer(m, device="cpu", window_s=1.0).score({str(p["ref"])!r}, {str(p["lp"])!r})
assert r.distance > 0
bad = [k for k in sys.modules if k.split(".")[0] in ("lightning", "pytorch_lightning")
       or k.startswith("deepaq.training")]
print("BAD", bad)
sys.exit(1 if bad else 0)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_from_pretrained_missing_is_clear(tmp_path, monkeypatch):
    from deepaq.scoring import Scorer

    monkeypatch.setenv("DEEPAQ_CHECKPOINT", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no DeePAQ checkpoint.*nope"):
        Scorer.from_pretrained()


def test_multigauss_head_checkpoint_scores_mos_and_std(model, clips, tmp_path, capsys):
    """A checkpoint with a MultiGauss head: Scorer, streamed path, NMR and ``deepaq score`` all
    report the head's per-aspect MOS and std of the degraded file; without a head, none."""
    import math
    import re

    import torch

    from deepaq.checkpoint import save_checkpoint
    from deepaq.cli import main as cli
    from deepaq.heads import MultiGaussHead, predict_mos, save_head
    from deepaq.records import read_table
    from deepaq.score_cli import format_result
    from deepaq.scoring import Scorer

    _, _, p = clips
    torch.manual_seed(3)
    head = MultiGaussHead(in_dim=16, aspects=["PQ", "CE"], hidden=[8], mean_init=3.0)
    plain = save_checkpoint(model, tmp_path / "plain", metadata={"window_seconds": 1.0})
    with_head = save_head(head, save_checkpoint(model, tmp_path / "mg",
                                                metadata={"window_seconds": 1.0}))
    keys = {"mos_PQ", "std_PQ", "mos_CE", "std_CE"}

    s = Scorer.from_pretrained(with_head, device="cpu")
    assert s.mos_head is not None and s.mos_head.aspects == ["PQ", "CE"]
    r = s.score(p["ref"], p["lp"])
    row = r.to_dict()
    assert keys <= set(row) and "extra" not in row
    assert all(math.isfinite(row[k]) for k in keys) and row["std_PQ"] > 0 and row["std_CE"] > 0
    # the head reads the degraded file's windows, not the reference's
    expect = predict_mos(head.eval(), s.embed_windows(p["lp"]))
    assert r.extra == pytest.approx(expect, rel=1e-5)
    assert r.extra != pytest.approx(predict_mos(head, s.embed_windows(p["ref"])), rel=1e-5)
    # streamed (long-file) path and NMR mode give the same prediction
    streamed = Scorer.from_pretrained(with_head, device="cpu", stream_threshold_s=1.0,
                                      batch_size=1).score(p["ref"], p["lp"])
    assert streamed.extra == pytest.approx(r.extra, rel=1e-3, abs=1e-4)
    nmr = s.score_nmr(p["lp"], s.centroid([p["ref"]]))
    assert nmr.mos is None and nmr.extra == pytest.approx(r.extra, rel=1e-5)

    # one pair on the command line: "mos_PQ: 3.21 ± 0.40", values as the Scorer's
    assert cli(["score", str(p["ref"]), str(p["lp"]), "--checkpoint", str(with_head),
                "--device", "cpu"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert float(lines["distance"]) == pytest.approx(r.distance, rel=1e-4)
    for aspect in ("PQ", "CE"):
        m = re.fullmatch(r"(-?\d+\.\d\d) ± (\d+\.\d\d)", lines[f"mos_{aspect}"])
        assert m, lines
        assert float(m[1]) == pytest.approx(r.extra[f"mos_{aspect}"], abs=0.006)
        assert float(m[2]) == pytest.approx(r.extra[f"std_{aspect}"], abs=0.006)
    assert not any(k.startswith("std_") for k in lines)
    assert format_result({"mos_mean": 3.214, "mos_std": 0.4}) == ["mos_mean: 3.21 ± 0.40"]

    # a batch: every row has the aspect columns (null on a failed row)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"key,reference,degraded\na,{p['ref']},{p['lp']}\n"
                     f"b,{p['ref']},{tmp_path / 'missing.wav'}\n")
    assert cli(["score", "--input", str(pairs), "--output", str(tmp_path / "out.csv"),
                "--checkpoint", str(with_head), "--device", "cpu", "--no-progress"]) == 1
    table = read_table(tmp_path / "out.csv")
    assert keys <= set(table[0]) and float(table[0]["mos_CE"]) == pytest.approx(
        r.extra["mos_CE"], rel=1e-4)
    assert table[1]["error"] and table[1]["mos_PQ"] in (None, "")

    # no head in the checkpoint: no head fields anywhere
    bare = Scorer.from_pretrained(plain, device="cpu")
    r0 = bare.score(p["ref"], p["lp"])
    assert bare.mos_head is None and r0.extra is None
    assert not keys & set(r0.to_dict()) and r0.distance == pytest.approx(r.distance, rel=1e-6)
    capsys.readouterr()
    assert cli(["score", str(p["ref"]), str(p["lp"]), "--checkpoint", str(plain),
                "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "±" not in out and "mos_PQ" not in out and "std_" not in out

    # scoring with a head stays free of Lightning/training imports
    code = f"""
import sys
from deepaq.scoring import Scorer
r = Scorer.from_pretrained({str(with_head)!r}, device="cpu").score({str(p["ref"])!r}, {str(p["lp"])!r})
assert r.extra and r.extra["std_PQ"] > 0, r
bad = [k for k in sys.modules if k.split(".")[0] in ("lightning", "pytorch_lightning")
       or k.startswith("deepaq.training")]
print("BAD", bad[:5])
sys.exit(1 if bad else 0)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_delayed_degraded_file_is_aligned_before_comparison(music_clip, mp3_code, tmp_path):
    """A codec delay left in the file (as MP3/AAC decoded by other tools have) is found and undone:
    the score equals that of the aligned file; with alignment off the delay counts as damage."""
    from deepaq.model import QualityModel

    model = QualityModel(backbone="gammatone", embed_dim=None, head="none", pooling="frame",
                         distance="nsim")                 # frame by frame, like the default model
    ref = music_clip("harpsichord", seconds=3.0, offset=1.0)
    coded = mp3_code(ref, 64)
    delay = 1105
    late = np.concatenate([np.zeros((2, delay), np.float32), coded], axis=1)
    paths = {}
    for name, x in {"ref": ref, "aligned": coded, "late": late}.items():
        paths[name] = tmp_path / f"{name}.wav"
        sf.write(paths[name], x.T, 48000, subtype="FLOAT")
    s = make_scorer(model)
    aligned = s.score(paths["ref"], paths["aligned"])
    shifted = s.score(paths["ref"], paths["late"])
    assert aligned.lag_samples == 0 and shifted.lag_samples == delay
    assert shifted.distance == pytest.approx(aligned.distance, rel=1e-6)
    unaligned = make_scorer(model, align_max_s=0).score(paths["ref"], paths["late"])
    assert unaligned.lag_samples == 0 and unaligned.distance > 1.2 * aligned.distance
    # arrays too, and a delay beyond the search range is left alone
    arr = s.score(ref, late, sample_rate=48000)
    assert arr.lag_samples == delay and arr.distance == pytest.approx(aligned.distance, rel=1e-6)
    assert make_scorer(model, align_max_s=0.01).score(ref, late, sample_rate=48000).lag_samples != delay


def test_dc_inputs_are_rejected_in_memory_and_streamed(model, tmp_path):
    rng = np.random.default_rng(1)
    dc = (0.3 + 1e-5 * rng.standard_normal((2, 96000))).astype(np.float32)
    s = make_scorer(model)
    with pytest.raises(AudioError, match="DC offset only"):
        s.score(dc, dc, sample_rate=48000)
    sf.write(tmp_path / "dc.wav", dc.T, 48000, subtype="FLOAT")
    for scorer in (s, make_scorer(model, stream_threshold_s=1.0)):  # whole file, then streamed
        with pytest.raises(AudioError, match="DC offset only"):
            scorer.score(tmp_path / "dc.wav", tmp_path / "dc.wav")


def test_windowing_limits(model):
    for kw, flag in [({"hop_s": 0.0001}, "--hop"), ({"window_s": 0.01}, "--window"),
                     ({"hop_s": -1.0}, "--hop")]:
        with pytest.raises(ValueError, match=flag):
            make_scorer(model, **kw)
    assert make_scorer(model, hop_s=0.01).hop_s == 0.01  # window/100 is still allowed


def test_bad_stored_centroid_names_the_file(tmp_path):
    from deepaq.scoring import load_centroid

    for name in ("c.npy", "c.safetensors"):
        (tmp_path / name).write_bytes(b"\x93NUMPY not really")
        with pytest.raises(ValueError, match="not a readable") as err:
            load_centroid(tmp_path / name)
        assert name in str(err.value)


def test_a_polarity_inverted_file_scores_as_the_identical_one(music_clip):
    """Polarity inversion is inaudible: with the default model the inverted copy's MOS equals the
    identical pair's (the alignment must not shift it to the negative correlation peak)."""
    from deepaq import Scorer

    scorer = Scorer.from_pretrained()
    ref = music_clip("guitar", seconds=3.0)
    same = scorer.score(ref, ref, sample_rate=48000)
    flipped = scorer.score(ref, -ref, sample_rate=48000)
    assert flipped.lag_samples == 0
    assert abs(flipped.mos - same.mos) <= 0.1, (flipped.mos, same.mos)
