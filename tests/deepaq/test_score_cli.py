"""``deepaq score`` and ``deepaq embed`` end to end on a tiny checkpoint and real music cuts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from deepaq.records import read_jsonl, read_table


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch

    from deepaq.calibration import MonotonicCubic
    from deepaq.checkpoint import save_checkpoint
    from deepaq.model import QualityModel

    torch.manual_seed(0)
    model = QualityModel(backbone="logmel_cnn", backbone_args={"channels": [4, 8], "n_mels": 32},
                         embed_dim=16)
    cal = MonotonicCubic().fit(np.linspace(0, 0.5, 20), np.linspace(4.8, 1.2, 20))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny",
                           calibration=cal.to_dict(), metadata={"window_seconds": 1.0})


@pytest.fixture(scope="module")
def audio(music_clip, tmp_path_factory):
    """refs/{guitar,glock}.wav and degraded versions, 1.5 s each."""
    from scipy.signal import butter, sosfiltfilt

    d = tmp_path_factory.mktemp("pairs")
    (d / "refs").mkdir()
    (d / "deg").mkdir()
    for name in ("guitar", "glock"):
        x = music_clip(name, 1.5, 1.0)
        sf.write(d / "refs" / f"{name}.wav", x.T, 48000, subtype="FLOAT")
        for cut in (3000, 8000):
            y = sosfiltfilt(butter(8, cut, fs=48000, output="sos"), x, axis=-1)
            sf.write(d / "deg" / f"{name}_lp{cut}.flac", y.T, 48000)
    (d / "deg" / "corrupt.wav").write_bytes(b"RIFF....garbage")
    return d


def run(argv):
    from deepaq.cli import main

    return main(argv)


def test_one_pair_prints_distance_and_mos(checkpoint, audio, capsys):
    code = run(["score", str(audio / "refs/guitar.wav"), str(audio / "deg/guitar_lp3000.flac"),
                "--checkpoint", str(checkpoint), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    values = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert float(values["distance"]) > 0
    assert 1.0 < float(values["mos"]) < 5.0


def test_one_pair_missing_file_fails(checkpoint, audio, capsys):
    code = run(["score", str(audio / "refs/guitar.wav"), str(audio / "deg/nope.wav"),
                "--checkpoint", str(checkpoint)])
    assert code == 1
    assert "nope.wav" in capsys.readouterr().err


def _pairs_csv(audio, path):
    rows = ["key,reference,degraded",
            "g3,refs/guitar.wav,deg/guitar_lp3000.flac",
            "missing,refs/guitar.wav,deg/does_not_exist.wav",
            "g8,refs/guitar.wav,deg/guitar_lp8000.flac",
            "corrupt,refs/glock.wav,deg/corrupt.wav",
            "k3,refs/glock.wav,deg/glock_lp3000.flac",
            "same,refs/glock.wav,refs/glock.wav"]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_batch_with_failures_completes_in_order(checkpoint, audio, tmp_path):
    pairs = _pairs_csv(audio, audio / "pairs.csv")
    out = tmp_path / "out.jsonl"
    code = run(["score", "--input", str(pairs), "--output", str(out), "--checkpoint",
                str(checkpoint), "--batch-size", "4", "--no-progress"])
    assert code == 1  # some rows failed
    rows = read_jsonl(out)
    assert [r["key"] for r in rows] == ["g3", "missing", "g8", "corrupt", "k3", "same"]
    by = {r["key"]: r for r in rows}
    assert "not found" in by["missing"]["error"] and by["missing"]["distance"] is None
    assert "corrupt" in by["corrupt"]["error"]
    for k in ("g3", "g8", "k3"):
        assert by[k]["error"] is None and by[k]["distance"] > 0 and by[k]["mos"] is not None
    assert by["same"]["distance"] == 0.0
    assert by["g3"]["reference"].endswith("refs/guitar.wav")  # resolved against the csv folder

    # CSV output gives the same values
    out_csv = tmp_path / "out.csv"
    assert run(["score", "--input", str(pairs), "--output", str(out_csv), "--checkpoint",
                str(checkpoint), "--no-progress"]) == 1
    table = read_table(out_csv)
    assert [r["key"] for r in table] == [r["key"] for r in rows]
    assert float(table[0]["distance"]) == pytest.approx(rows[0]["distance"], rel=1e-5)
    assert not (tmp_path / "out.csv.partial.jsonl").exists()


def test_resume_skips_done_keys(checkpoint, audio, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    base = audio
    items = [{"key": "a", "reference": str(base / "refs/guitar.wav"),
              "degraded": str(base / "deg/guitar_lp3000.flac")},
             {"key": "b", "reference": str(base / "refs/glock.wav"),
              "degraded": str(base / "deg/glock_lp8000.flac")}]
    pairs.write_text("".join(json.dumps(i) + "\n" for i in items))
    out = tmp_path / "out.jsonl"
    sentinel = {"key": "a", "reference": "x", "degraded": "y", "distance": 123.0, "mos": 1.0,
                "error": None}
    out.write_text(json.dumps(sentinel) + "\n" + '{"key": "b", "dist')  # torn last line
    code = run(["score", "--input", str(pairs), "--output", str(out), "--checkpoint",
                str(checkpoint), "--resume", "--no-progress"])
    assert code == 0
    rows = read_jsonl(out)
    assert [r["key"] for r in rows] == ["a", "b"]
    assert rows[0]["distance"] == 123.0  # kept, not recomputed
    assert rows[1]["distance"] > 0 and rows[1]["error"] is None


def test_nmr_mode_cli(checkpoint, audio, tmp_path):
    pairs = tmp_path / "nmr.csv"
    pairs.write_text("key,degraded\n"
                     f"a,{audio / 'deg/guitar_lp3000.flac'}\nb,{audio / 'refs/glock.wav'}\n")
    out = tmp_path / "nmr.jsonl"
    code = run(["score", "--mode", "nmr", "--nmr-references", str(audio / "refs"), "--input",
                str(pairs), "--output", str(out), "--checkpoint", str(checkpoint), "--no-progress"])
    assert code == 0
    rows = read_jsonl(out)
    assert all(r["distance"] > 0 and r["mos"] is None and r["mode"] == "nmr" for r in rows)


def test_metric_option_uses_registry(audio, tmp_path):
    pairs = _pairs_csv(audio, tmp_path / "p.csv")
    pairs.write_text(pairs.read_text().replace("refs/", f"{audio}/refs/").replace(
        "deg/", f"{audio}/deg/"))
    out = tmp_path / "m.jsonl"
    assert run(["score", "--input", str(pairs), "--output", str(out), "--metric", "logmel_l1",
                "--no-progress"]) == 1
    by = {r["key"]: r for r in read_jsonl(out)}
    assert by["g3"]["score"] > by["g8"]["score"] > 0 == by["same"]["score"]
    assert by["corrupt"]["error"]


def test_embed_cli(checkpoint, audio, tmp_path):
    from deepaq.scoring import load_centroid

    out = tmp_path / "emb.safetensors"
    code = run(["embed", str(audio / "refs"), "-o", str(out), "--checkpoint", str(checkpoint),
                "--no-progress"])
    assert code == 0
    index = read_jsonl(tmp_path / "emb.index.jsonl")
    assert [r["key"] for r in index] == ["glock.wav", "guitar.wav"] and index[1]["row"] == 1
    from safetensors.numpy import load_file

    t = load_file(str(out))
    assert t["embeddings"].shape == (2, 16)
    np.testing.assert_allclose(load_centroid(out), t["embeddings"].mean(0), rtol=1e-6)
    code = run(["embed", str(audio / "deg"), "-o", str(tmp_path / "d.npy"), "--checkpoint",
                str(checkpoint), "--no-progress"])
    assert code == 1  # corrupt.wav failed, the rest written
    idx = read_jsonl(tmp_path / "d.index.jsonl")
    assert sum(r["error"] is not None for r in idx) == 1
    assert np.load(tmp_path / "d.npy").shape == (4, 16)
