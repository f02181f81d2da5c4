"""``deepaq score`` and ``deepaq embed`` end to end on a tiny checkpoint and real music cuts."""

from __future__ import annotations

import json
from pathlib import Path

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


# -- nothing finished is lost (#16.1, #16.2) --------------------------------------------------------
def _finished_output(checkpoint, audio, tmp_path):
    pairs = _pairs_csv(audio, audio / "pairs.csv")
    out = tmp_path / "out.jsonl"
    assert run(["score", "--input", str(pairs), "--output", str(out), "--checkpoint",
                str(checkpoint), "--no-progress"]) == 1
    return pairs, out


@pytest.mark.parametrize("bad", [["--checkpoint", "no/such/ckpt"], ["--metric", "nosuch"],
                                 ["--device", "cuda:7"], ["--window", "-1"]])
def test_failed_start_leaves_finished_output_intact(checkpoint, audio, tmp_path, bad, capsys):
    pairs, out = _finished_output(checkpoint, audio, tmp_path)
    before = out.read_bytes()
    capsys.readouterr()
    for extra in (["--resume"], ["--overwrite"]):
        args = ["score", "--input", str(pairs), "--output", str(out), "--checkpoint",
                str(checkpoint), "--no-progress", *extra, *bad]
        with pytest.raises(SystemExit) if bad[0] == "--window" else _no_raise():
            assert run(args) == 2
        assert out.read_bytes() == before
        assert not (tmp_path / "out.jsonl.partial.jsonl").exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err and bad[0] in err


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_existing_output_refused_without_resume_or_overwrite(checkpoint, audio, tmp_path, capsys):
    pairs, out = _finished_output(checkpoint, audio, tmp_path)
    before = out.read_bytes()
    capsys.readouterr()
    assert run(["score", "--input", str(pairs), "--output", str(out), "--checkpoint",
                str(checkpoint), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert run(["score", "--input", str(pairs), "--output", str(out), "--checkpoint",
                str(checkpoint), "--no-progress", "--overwrite"]) == 1
    assert out.read_bytes() == before  # same rows again, rewritten in one rename


def test_resume_retries_failed_rows_in_place(checkpoint, audio, tmp_path):
    import shutil

    d = tmp_path / "set"
    shutil.copytree(audio, d)
    (d / "deg" / "guitar_lp3000.flac").rename(d / "deg" / "held_back.flac")
    pairs = _pairs_csv(d, d / "pairs.csv")
    out = tmp_path / "out.jsonl"
    common = ["score", "--input", str(pairs), "--output", str(out), "--checkpoint",
              str(checkpoint), "--no-progress"]
    assert run(common) == 1
    first = {r["key"]: r for r in read_jsonl(out)}
    assert "not found" in first["g3"]["error"]
    (d / "deg" / "held_back.flac").rename(d / "deg" / "guitar_lp3000.flac")
    (d / "deg" / "does_not_exist.wav").write_bytes((d / "refs" / "guitar.wav").read_bytes())
    (d / "deg" / "corrupt.wav").write_bytes((d / "refs" / "glock.wav").read_bytes())

    assert run([*common, "--resume", "--no-retry-failed"]) == 1  # the old behaviour, kept
    assert read_jsonl(out) == list(first.values())

    assert run([*common, "--resume"]) == 0  # every row fine now: exit status says so
    rows = read_jsonl(out)
    assert [r["key"] for r in rows] == list(first)  # replaced in place, input order kept
    by = {r["key"]: r for r in rows}
    assert all(r["error"] is None for r in rows)
    assert by["g3"]["distance"] > 0 and by["missing"]["distance"] == 0.0  # a copy of its ref
    for k in ("g8", "k3", "same"):
        assert by[k] == first[k]  # done rows are not recomputed
    assert not (tmp_path / "out.jsonl.partial.jsonl").exists()


def test_resume_continues_an_interrupted_progress_file(checkpoint, audio, tmp_path, monkeypatch):
    import deepaq.records

    pairs = _pairs_csv(audio, audio / "pairs.csv")
    out = tmp_path / "out.jsonl"
    ref = tmp_path / "ref.jsonl"
    # batch size 1: the resumed run scores fewer rows, and another batching may move the last
    # float digits (torch CPU kernels), which would make the byte comparison test that instead
    common = ["--input", str(pairs), "--checkpoint", str(checkpoint), "--no-progress",
              "--batch-size", "1"]
    run(["score", *common, "--output", str(ref)])
    full = ref.read_text().splitlines(keepends=True)
    partial = tmp_path / "out.jsonl.partial.jsonl"
    partial.write_text("".join(full[:2]) + full[2][:20])  # killed while writing row 3
    assert run(["score", *common, "--output", str(out)]) == 2  # progress is not thrown away
    reads = []
    real_iter_jsonl = deepaq.records.iter_jsonl

    def counting_iter_jsonl(path, *a, **kw):
        reads.append(Path(path))
        return real_iter_jsonl(path, *a, **kw)

    monkeypatch.setattr(deepaq.records, "iter_jsonl", counting_iter_jsonl)
    assert run(["score", *common, "--output", str(out), "--resume"]) == 1
    assert out.read_text() == ref.read_text() and not partial.exists()
    assert reads.count(partial) == 1  # rewritten from the rows kept, not read back


# -- errors: one line, exit 2, naming the flag or file (#16.11) --------------------------------------
def _bad_checkpoint(checkpoint, tmp_path):
    import shutil

    bad = tmp_path / "broken_ckpt"
    shutil.copytree(checkpoint, bad)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    return bad


@pytest.mark.parametrize("case", ["unknown_metric", "metric_list", "bad_checkpoint", "cuda",
                                  "tiny_hop", "bad_npy", "existing_output"])
@pytest.mark.parametrize("form", ["pair", "batch"])
def test_start_up_errors_are_one_line(checkpoint, audio, tmp_path, capsys, case, form):
    pairs = _pairs_csv(audio, audio / "pairs.csv")
    target = tmp_path / "taken.jsonl"
    target.write_text('{"key": "x"}\n')
    npy = tmp_path / "bad.npy"
    npy.write_bytes(b"\x93NUMPY garbage")
    flags = {"unknown_metric": (["--metric", "nosuch"], "--metric nosuch"),
             "metric_list": (["--metric", "logmel_l1,visqol"], "one metric per run"),
             "bad_checkpoint": (["--checkpoint", str(_bad_checkpoint(checkpoint, tmp_path))],
                                "--checkpoint"),
             "cuda": (["--device", "cuda"], "--device cuda"),
             "tiny_hop": (["--hop", "0.0001"], "--hop"),
             "bad_npy": (["--mode", "nmr", "--nmr-references", str(npy)], str(npy)),
             "existing_output": (["-o", str(target)], str(target))}
    extra, named = flags[case]
    if case == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    where = ([str(audio / "refs/guitar.wav"), str(audio / "deg/guitar_lp3000.flac")]
             if form == "pair" else ["--input", str(pairs)])
    before = target.read_bytes()
    args = ["score", *where, "--no-progress", *extra]
    if "--checkpoint" not in extra:
        args += ["--checkpoint", str(checkpoint)]
    assert run(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and named in err, err
    assert target.read_bytes() == before


def test_garbage_flac_says_it_cannot_be_decoded(checkpoint, audio, tmp_path, capsys):
    bad = tmp_path / "garbage.flac"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert run(["score", str(audio / "refs/guitar.wav"), str(bad), "--checkpoint",
                str(checkpoint)]) == 1
    err = capsys.readouterr().err
    assert "cannot be decoded" in err and "sample rate 0" not in err and str(bad) in err


def test_header_only_csv_warns_zero_rows(checkpoint, tmp_path, capsys):
    pairs = tmp_path / "empty.csv"
    pairs.write_text("key,reference,degraded\n")
    out = tmp_path / "o.jsonl"
    assert run(["score", "--input", str(pairs), "-o", str(out), "--checkpoint", str(checkpoint),
                "--no-progress"]) == 0
    assert "0 rows" in capsys.readouterr().err and out.read_text() == ""


def test_dc_only_pair_is_rejected_not_scored(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    dc = (0.25 + 1e-5 * rng.standard_normal((48000, 2))).astype(np.float32)  # near-DC
    sf.write(tmp_path / "dc.wav", dc, 48000, subtype="FLOAT")
    assert run(["score", str(tmp_path / "dc.wav"), str(tmp_path / "dc.wav"), "--checkpoint",
                str(checkpoint)]) == 1
    captured = capsys.readouterr()
    assert "mos" not in captured.out and "DC" in captured.err and "dc.wav" in captured.err


# -- -o for one pair, defaults in --help (#16.12) -----------------------------------------------------
def test_one_pair_honours_output(checkpoint, audio, tmp_path, capsys):
    out = tmp_path / "one.jsonl"
    ref, deg = str(audio / "refs/guitar.wav"), str(audio / "deg/guitar_lp3000.flac")
    assert run(["score", ref, deg, "-o", str(out), "--checkpoint", str(checkpoint)]) == 0
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    (row,) = read_jsonl(out)
    assert row["reference"] == ref and row["degraded"] == deg and row["error"] is None
    assert f"{row['distance']:.6g}" == printed["distance"]
    assert run(["score", ref, deg, "-o", str(out), "--checkpoint", str(checkpoint)]) == 2
    assert run(["score", ref, deg, "-o", str(out), "--checkpoint", str(checkpoint),
                "--overwrite"]) == 0


@pytest.mark.parametrize("module", ["deepaq.score_cli", "deepaq.eval_cli", "deepaq.embed_cli"])
def test_help_shows_every_default(module):
    import argparse
    import importlib

    parser = importlib.import_module(module).build_parser()
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if action.option_strings and action.default is not None and not isinstance(
                action, (argparse._HelpAction, argparse._StoreTrueAction,
                         argparse._StoreFalseAction)):
            helptext = " ".join((action.help or "").split())
            assert "default" in helptext or f"(default: {action.default})" in text, \
                f"{module} {action.option_strings[0]}: no default shown"


# -- scale: --jobs, --shard, --merge (#17.3) -----------------------------------------------------------
@pytest.fixture(scope="module")
def coded_set(music_clip, mp3_code, tmp_path_factory):
    """3 references x 3 MP3 bitrates + one missing file: pairs.jsonl with relative paths."""
    d = tmp_path_factory.mktemp("coded")
    rows = []
    for name in ("guitar", "glock", "sopr"):
        x = music_clip(name, 1.5, 1.0)
        sf.write(d / f"{name}.wav", x.T, 48000, subtype="FLOAT")
        for kbps in (32, 64, 128):
            sf.write(d / f"{name}_{kbps}.flac", mp3_code(x, kbps).T, 48000)
            rows.append({"key": f"{name}_{kbps}", "reference": f"{name}.wav",
                         "degraded": f"{name}_{kbps}.flac"})
    rows.insert(4, {"key": "gone", "reference": "glock.wav", "degraded": "gone.flac"})
    (d / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "pairs.jsonl"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_shards_merge_byte_identical_to_one_run(checkpoint, coded_set, tmp_path, suffix):
    common = ["score", "--input", str(coded_set), "--checkpoint", str(checkpoint),
              "--no-progress", "--batch-size", "2"]
    whole = tmp_path / f"whole{suffix}"
    assert run([*common, "-o", str(whole)]) == 1  # the missing file
    out = tmp_path / f"scores{suffix}"
    for k in (1, 2, 3):
        run([*common, "-o", str(out), "--shard", f"{k}/3"])
    assert run([*common, "-o", str(out), "--merge"]) == 1
    assert out.read_bytes() == whole.read_bytes()
    shard1 = read_table(tmp_path / f"scores.shard-1-of-3{suffix}")
    assert {r["reference"].rsplit("/", 1)[-1] for r in shard1} == {"guitar.wav"}  # ref together


def test_merge_refuses_a_missing_shard(checkpoint, coded_set, tmp_path, capsys):
    common = ["score", "--input", str(coded_set), "--checkpoint", str(checkpoint),
              "--no-progress"]
    out = tmp_path / "s.jsonl"
    run([*common, "-o", str(out), "--shard", "1/2"])
    capsys.readouterr()
    assert run([*common, "-o", str(out), "--merge"]) == 2
    assert "2/2" in capsys.readouterr().err and not out.exists()


def test_jobs_two_matches_jobs_one(checkpoint, coded_set, tmp_path):
    common = ["score", "--input", str(coded_set), "--checkpoint", str(checkpoint),
              "--no-progress", "--batch-size", "2"]
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert run([*common, "-o", str(one)]) == 1
    assert run([*common, "-o", str(two), "--jobs", "2"]) == 1
    assert two.read_bytes() == one.read_bytes()
    rows = read_jsonl(two)
    assert [r["key"] for r in rows][4] == "gone" and "not found" in rows[4]["error"]
    by = {r["key"]: r["distance"] for r in rows}
    assert by["guitar_32"] > by["guitar_128"] > 0  # real codec: fewer bits, larger distance


# -- the same flags in deepaq eval and deepaq embed ---------------------------------------------------
@pytest.mark.parametrize("case", ["cuda", "bad_checkpoint", "header_only", "unknown_metric"])
def test_eval_start_up_errors_are_one_line(checkpoint, audio, tmp_path, capsys, case):
    manifest = tmp_path / "lt.csv"
    if case == "header_only":
        manifest.write_text("key,reference,degraded,mos\n")
    else:
        manifest.write_text("key,reference,degraded,mos\n"
                            f"a,{audio / 'refs/guitar.wav'},{audio / 'deg/guitar_lp3000.flac'},3\n"
                            f"b,{audio / 'refs/glock.wav'},{audio / 'deg/glock_lp8000.flac'},4\n")
    if case == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    extra, named = {"cuda": (["--device", "cuda"], "--device cuda"),
                    "bad_checkpoint": (["--metrics",
                                        f"deepaq:{_bad_checkpoint(checkpoint, tmp_path)}"],
                                       "broken_ckpt"),
                    "header_only": ([], "0 rows"),
                    "unknown_metric": (["--metrics", "nosuch"], "nosuch")}[case]
    args = ["eval", str(manifest), "-o", str(tmp_path / "ev"), "--no-plots", "--no-progress",
            "--metrics", f"deepaq:{checkpoint}", *extra]
    assert run(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and named in err, err


@pytest.mark.parametrize("case", ["cuda", "bad_checkpoint", "tiny_hop", "existing_output"])
def test_embed_start_up_errors_are_one_line(checkpoint, audio, tmp_path, capsys, case):
    out = tmp_path / "e.npy"
    if case == "existing_output":
        np.save(out, np.zeros(3))
    if case == "cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    extra, named = {"cuda": (["--device", "cuda"], "--device cuda"),
                    "bad_checkpoint": (["--checkpoint", str(_bad_checkpoint(checkpoint, tmp_path))],
                                       "--checkpoint"),
                    "tiny_hop": (["--hop", "0.0001"], "--hop"),
                    "existing_output": ([], str(out))}[case]
    before = out.read_bytes() if out.exists() else None
    args = ["embed", str(audio / "refs"), "-o", str(out), "--no-progress", *extra]
    if "--checkpoint" not in extra:
        args += ["--checkpoint", str(checkpoint)]
    assert run(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and named in err, err
    assert (out.read_bytes() if out.exists() else None) == before
