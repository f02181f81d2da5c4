"""``deepaq-prep build`` loses nothing and surprises no one: every failure recorded and retried,
resume/shards/merge tied to one configuration, injective track ids, refused bad list rows, DC
treated as silence, per-channel bitrate labels, workers that die with their parent, one-line
errors for bad grids and outputs. Real music (``music_clip``), real codecs, ``--labels none``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.cli import main
from data_prep.pipeline import CorpusConfig, build_corpus
from data_prep.sources import discover_folder
from deepaq.manifest import read_manifest
from deepaq.records import read_jsonl

REPO = Path(__file__).resolve().parents[2]
TINY_GRID = REPO / "configs" / "data_prep" / "tiny_grid.yaml"


def _cfg(**kw) -> CorpusConfig:
    base = {"excerpt_seconds": 1.0, "grid": str(TINY_GRID), "labels": "none",
            "splits": {"train": 1.0}}
    base.update(kw)
    return CorpusConfig(**base)


def _write(path: Path, x: np.ndarray, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.T, 48000, subtype=subtype)
    return path


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepaq-prep: error: ") and "\n" not in err, err
    return err


# -- 16.3: every failed condition reaches rejects.jsonl; such an excerpt is retried ----------------

def test_every_failed_condition_is_rejected_and_its_excerpt_retried(tmp_path, music_clip):
    # libopus cannot run at 44.1 kHz: both Opus conditions of every coded excerpt fail for real
    grid = tmp_path / "grid.yaml"
    grid.write_text(TINY_GRID.read_text().replace("sample_rate: 48000\n    bitrates_kbps: [32, 96]",
                                                  "sample_rate: 44100\n    bitrates_kbps: [32, 96]"))
    # excerpt 1: music (Opus fails); excerpt 2: silence (skipped, so done)
    x = np.concatenate([music_clip("guitar", 1.0, 1.0), np.zeros((2, 48000), np.float32)], axis=1)
    src = _write(tmp_path / "in" / "guitar.wav", x)
    res = build_corpus([src], tmp_path / "c", _cfg(grid=str(grid)), progress=False)
    rejects = read_jsonl(res.rejects)
    assert sorted(r["key"] for r in rejects) == ["guitar__00000000__opus_032",
                                                 "guitar__00000000__opus_096"]
    assert all("opus" in r["reason"] and r["stage"] == "codec" for r in rejects)
    assert res.num_rejects == 2
    assert [r["condition"] for r in read_manifest(res.manifest)] == ["clean", "mp3_032", "mp3_128"]

    def runs() -> dict[str, int]:
        counts: dict[str, int] = {}
        for rec in read_jsonl(tmp_path / "c" / ".progress" / "excerpts.jsonl"):
            counts[rec["key"]] = counts.get(rec["key"], 0) + 1
        return counts

    assert runs() == {"#config": 1, "guitar__00000000": 1, "guitar__00001000": 1}
    again = build_corpus([src], tmp_path / "c", _cfg(grid=str(grid)), resume=True, progress=False)
    # the excerpt with failures ran again, the finished (skipped) one did not
    assert runs() == {"#config": 1, "guitar__00000000": 2, "guitar__00001000": 1}
    assert again.num_rejects == 2 and again.manifest.read_bytes() == res.manifest.read_bytes()


# -- 16.4: resume, shards and merge check the configuration ---------------------------------------

def test_resume_refuses_another_configuration_naming_the_setting(tmp_path, music_clip, capsys):
    src = _write(tmp_path / "in" / "glock.wav", music_clip("glock", 1.0, 1.0))
    out = tmp_path / "c"
    argv = ["build", str(src), "-o", str(out), "--grid", str(TINY_GRID), "--labels", "none",
            "--excerpt-seconds", "1.0", "-q"]
    assert main(argv) == 0
    first = (out / "manifest.jsonl").read_bytes()
    for extra, setting in [(["--seed", "1"], "seed"), (["--excerpt-seconds", "0.5"], "excerpt_seconds"),
                           (["--channels", "mono"], "channels"),
                           (["--grid", str(REPO / "configs" / "data_prep" / "fast_grid.yaml")],
                            "grid")]:
        err = _one_line_error(capsys, [*argv, *extra, "--resume"])
        assert "another configuration" in err and f"{setting}" in err, err
        assert (out / "manifest.jsonl").read_bytes() == first
    assert main([*argv, "--resume"]) == 0  # the same settings resume
    more = _write(tmp_path / "in" / "sopr.wav", music_clip("sopr", 1.0, 1.0))
    err = _one_line_error(capsys, [*argv[:2], str(more), *argv[2:], "--resume"])
    assert "tracks.count is 2 in this run, 1 in the progress log" in err, err
    sidecar = json.loads((out / "manifest.config.json").read_text())
    assert sidecar["config"]["seed"] == 0 and len(sidecar["config_hash"]) == 16


def test_merge_refuses_shards_of_another_configuration_or_a_missing_shard(tmp_path, music_clip,
                                                                        capsys):
    src = _write(tmp_path / "in" / "sopr.wav", music_clip("sopr", 2.0, 1.0))
    out = tmp_path / "c"
    base = ["build", str(src), "-o", str(out), "--grid", str(TINY_GRID), "--labels", "none",
            "--excerpt-seconds", "1.0", "-q"]
    assert main([*base, "--shard", "1/2"]) == 0
    assert main([*base, "--shard", "2/2", "--seed", "7"]) == 0
    shards = [str(out / f"manifest.shard-{k}-of-2.jsonl") for k in (1, 2)]
    err = _one_line_error(capsys, ["merge", *shards, "-o", str(out / "manifest.jsonl")])
    assert "seed" in err and "shard-2-of-2" in err
    assert not (out / "manifest.jsonl").exists()
    err = _one_line_error(capsys, ["merge", shards[0], "-o", str(out / "manifest.jsonl")])
    assert "1..2" in err
    assert main([*base, "--shard", "2/2", "--overwrite"]) == 0  # the seed-7 shard, redone
    assert main(["merge", *shards, "-o", str(out / "manifest.jsonl")]) == 0
    assert len(read_manifest(out / "manifest.jsonl")) == 2 * 5


# -- 16.5: injective track ids ------------------------------------------------------------------

def test_track_ids_are_injective_and_each_keeps_its_own_audio(tmp_path, music_clip):
    names = {"x .wav": "guitar", "x-1.wav": "glock", "x-1-1.wav": "sopr", "x.wav": "castanets"}
    for file, clip in names.items():
        _write(tmp_path / "in" / file, music_clip(clip, 1.0, 1.0))
    ids = [t.track_id for t in discover_folder(tmp_path / "in")]
    assert len(set(ids)) == 4, ids
    res = build_corpus([tmp_path / "in"], tmp_path / "c", _cfg(), progress=False)
    clean = [r for r in read_manifest(res.manifest) if r["condition"] == "clean"]
    assert len(clean) == 4 and len({r["track_id"] for r in clean}) == 4
    for r in clean:
        stored, _ = sf.read(tmp_path / "c" / r["reference"], dtype="float32", always_2d=True)
        source = music_clip(names[Path(r["source_path"]).name], 1.0, 1.0)
        np.testing.assert_allclose(stored.T, source, atol=2 ** -22)


def test_the_same_source_twice_is_refused_before_coding(tmp_path, music_clip, capsys):
    src = _write(tmp_path / "in" / "a.wav", music_clip("guitar", 1.0, 1.0))
    err = _one_line_error(capsys, ["build", str(src), str(src), "-o", str(tmp_path / "c"),
                                   "--grid", str(TINY_GRID), "--labels", "none", "-q"])
    assert "a.wav" in err and "twice" in err
    assert not (tmp_path / "c").exists()


# -- 16.6 and 16.11: list rows with bad times; header-only lists -------------------------------

@pytest.mark.parametrize(("start", "end", "problem"), [("-1.0", "", "start_time '-1.0'"),
                                                       ("2.0", "1.0", "end_time 1.0 is not after"),
                                                       ("abc", "", "not a number")])
def test_list_rows_with_bad_times_are_refused(tmp_path, music_clip, capsys, start, end, problem):
    _write(tmp_path / "in" / "guitar.wav", music_clip("guitar", 3.0, 1.0))
    lst = tmp_path / "in" / "list.csv"
    lst.write_text(f"key,path,start_time,end_time\nok,guitar.wav,0,1\nbad,guitar.wav,{start},{end}\n")
    err = _one_line_error(capsys, ["build", str(lst), "-o", str(tmp_path / "c"),
                                   "--grid", str(TINY_GRID), "--labels", "none", "-q"])
    assert f"{lst}: row 2" in err and problem in err, err
    assert not (tmp_path / "c").exists()


def test_header_only_list_warns_zero_rows(tmp_path, capsys):
    lst = tmp_path / "list.csv"
    lst.write_text("key,path,start_time,end_time\n")
    assert main(["build", str(lst), "-o", str(tmp_path / "c"), "--grid", str(TINY_GRID),
                 "--labels", "none", "-q"]) == 0
    assert f"warning: {lst}: 0 rows" in capsys.readouterr().err
    assert read_manifest(tmp_path / "c" / "manifest.jsonl") == []


# -- 16.7: DC is silence ---------------------------------------------------------------------------

def test_dc_and_near_dc_inputs_are_skipped_as_silent(tmp_path, music_clip):
    dc = np.full((2, 48000), 0.25, np.float32)
    near = 0.3 + 1e-4 * music_clip("moonlight", 1.0, 1.0)  # music 80 dB down on a DC offset
    _write(tmp_path / "in" / "dc.wav", dc, "FLOAT")
    _write(tmp_path / "in" / "near_dc.wav", near.astype(np.float32), "FLOAT")
    _write(tmp_path / "in" / "music.wav", music_clip("moonlight", 1.0, 1.0))
    res = build_corpus([tmp_path / "in"], tmp_path / "c", _cfg(), progress=False)
    assert res.num_rejects == 0, read_jsonl(res.rejects)
    assert dict(res.skipped) == {"silent (AC energy below threshold)": 2}
    assert {r["track_id"] for r in read_manifest(res.manifest)} == {"music"}


# -- 16.9: bitrate label per channel ------------------------------------------------------------

def test_bitrate_label_is_per_channel_so_mono_and_stereo_rank_together(tmp_path, music_clip):
    x = music_clip("harpsichord", 1.0, 1.0)
    _write(tmp_path / "in" / "stereo.wav", x)
    _write(tmp_path / "in" / "mono.wav", x[:1])
    rows = read_manifest(build_corpus([tmp_path / "in"], tmp_path / "c", _cfg(channels="keep"),
                                      progress=False).manifest)
    label = {(r["channels"], r["condition"]): r["bitrate_label"] for r in rows if r["codec"]}
    for cond in ("opus_032", "opus_096", "mp3_032", "mp3_128"):
        # the same total bitrate is half as much per channel in stereo
        assert 1.6 < label[(1, cond)] / label[(2, cond)] < 2.4, (cond, label)
    # stereo at 64 kbps total ranks with mono at 32 kbps: the same bits per channel
    assert label[(2, "opus_096")] > label[(1, "opus_032")] > label[(2, "opus_032")]


# -- 16.10: workers exit with their parent ----------------------------------------------------------

def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                kids.append(int(d))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (nobody reaped it yet)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_build_parent_takes_the_workers_with_it(tmp_path, music_clip):
    for name in ("guitar", "glock", "sopr", "castanets"):
        _write(tmp_path / "in" / f"{name}.wav", music_clip(name, 3.0, 1.0))
    cmd = [sys.executable, "-m", "data_prep.cli", "build", str(tmp_path / "in"), "-o",
           str(tmp_path / "c"), "--grid", str(TINY_GRID), "--labels", "none",
           "--excerpt-seconds", "0.5", "-j", "2", "-q"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = tmp_path / "c" / ".progress" / "excerpts.jsonl"
    kids: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and (
                not progress.exists() or progress.read_text().count("\n") < 2):
            time.sleep(0.1)
        kids = _children(proc.pid)
        assert proc.poll() is None and len(kids) >= 2, "build ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(map(_alive, kids)):
            time.sleep(0.1)
        assert not [k for k in kids if _alive(k)], "workers outlived their killed parent"
    finally:
        for k in kids:  # what this test started, if the assertion above failed
            if _alive(k):
                os.kill(k, signal.SIGKILL)


# -- 16.11: grid and output errors are one line ---------------------------------------------------

@pytest.mark.parametrize(("text", "problem"), [
    ("codecs:\n  opus: [unclosed\n", "malformed YAML at line"),
    ("codec:\n  opus: {encoder: libopus, container: ogg, bitrates_kbps: [32]}\n", "unknown keys"),
    ("codecs:\n  opus: {encoder: libopuss, container: ogg, bitrates_kbps: [32]}\n",
     "unknown FFmpeg encoder 'libopuss'"),
    ("codecs:\n  opus: {encoder: libopus, container: ogg, bitrates_kbps: [32], bitrate: 3}\n",
     "unknown keys ['bitrate']"),
    (("codecs:\n  mp3: {encoder: libmp3lame, container: mp3, bitrates_kbps: [32],\n"
      "        rules: [{sample_rate: 24000}]}\n"), "needs 'below_kbps'"),
    ("- just a list\n", "must be a YAML mapping"),
])
def test_bad_grid_is_a_one_line_error_naming_the_file(tmp_path, music_clip, capsys, text, problem):
    src = _write(tmp_path / "a.wav", music_clip("guitar", 1.0, 1.0))
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    err = _one_line_error(capsys, ["build", str(src), "-o", str(tmp_path / "c"), "--grid",
                                   str(grid), "--labels", "none", "-q"])
    assert str(grid) in err and problem in err, err
    assert not (tmp_path / "c").exists(), "a refused build must leave nothing behind"


def test_pairs_refuses_to_overwrite_an_existing_output(tmp_path, music_clip, capsys):
    src = _write(tmp_path / "a.wav", music_clip("guitar", 1.0, 1.0))
    manifest = build_corpus([src], tmp_path / "c", _cfg(), progress=False).manifest
    out = tmp_path / "pairs.csv"
    out.write_text("precious\n")
    err = _one_line_error(capsys, ["pairs", str(manifest), "-o", str(out)])
    assert str(out) in err and "exists" in err and out.read_text() == "precious\n"
    _one_line_error(capsys, ["pairs", str(manifest), "-o", str(tmp_path)])
    assert main(["pairs", str(manifest), "-o", str(out), "--force"]) == 0
    assert out.read_text().count("\n") == 1 + 4


# -- nothing finished is thrown away: a repeated build into the same folder is refused -------------

def test_rebuild_into_a_finished_folder_is_refused_unless_resume_or_overwrite(tmp_path, music_clip,
                                                                              capsys):
    src = _write(tmp_path / "in" / "guitar.wav", music_clip("guitar", 1.0, 1.0))
    out = tmp_path / "c"
    argv = ["build", str(src), "-o", str(out), "--grid", str(TINY_GRID), "--labels", "none",
            "--excerpt-seconds", "1", "--splits", "train=1", "-q"]
    assert main(argv) == 0
    before = (out / "manifest.jsonl").read_bytes()
    capsys.readouterr()
    err = _one_line_error(capsys, argv)
    assert str(out) in err and "--resume" in err and "--overwrite" in err
    assert (out / "manifest.jsonl").read_bytes() == before        # untouched
    assert main(argv + ["--overwrite"]) == 0
    assert (out / "manifest.jsonl").read_bytes() == before        # same inputs, same corpus


def _prep_parsers():
    """Every deepaq-prep verb's parser (build, summary, merge, pairs, jnd, render)."""
    import argparse

    from data_prep import jnd, render
    from data_prep.cli import build_parser

    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    verbs = {name: p for name, p in sub.choices.items() if name not in ("jnd", "render")}
    return {**verbs, "jnd": jnd.build_parser(), "render": render.build_parser()}


@pytest.mark.parametrize("verb", ["build", "summary", "merge", "pairs", "jnd", "render"])
def test_every_prep_verb_shows_its_defaults_in_help(verb):
    import argparse

    parser = _prep_parsers()[verb]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        if action.option_strings and action.default not in (None, argparse.SUPPRESS) and \
                not isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction,
                                        argparse._StoreFalseAction)):
            helptext = " ".join((action.help or "").split())
            assert "default" in helptext or f"(default: {action.default})" in text, \
                f"deepaq-prep {verb} {action.option_strings[0]}: no default shown"
