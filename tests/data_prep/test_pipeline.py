"""The corpus pipeline end to end on real music: manifest, splits, rejects, resume, shards."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.stats import spearmanr

from data_prep.pipeline import CorpusConfig, build_corpus
from data_prep.splits import assign_splits
from data_prep.summary import summarize
from deepaq.manifest import FIELDS, read_manifest

REPO = Path(__file__).resolve().parents[2]
TINY_GRID = REPO / "configs" / "data_prep" / "tiny_grid.yaml"


@pytest.fixture(scope="module")
def music_dir(tmp_path_factory, music_clip) -> Path:
    """Four short real-music tracks (mono and stereo, two sample rates) in nested folders."""
    d = tmp_path_factory.mktemp("music")
    (d / "album").mkdir()
    for name, sub in [("guitar", "album"), ("glock", "album"), ("harpsichord", ""),
                      ("moonlight", "")]:
        x = music_clip(name, seconds=3.0, offset=2.0)
        if name == "glock":
            x = x[:1]  # a mono track
        sf.write(d / sub / f"{name}.flac", x.T, 48000)
    return d


def _cfg(**kw) -> CorpusConfig:
    base = {"excerpt_seconds": 1.5, "grid": str(TINY_GRID), "labels": "none",
                "splits": {"train": 0.5, "val": 0.25, "test": 0.25}}
    base.update(kw)
    return CorpusConfig(**base)


def test_build_writes_complete_manifest(music_dir, tmp_path):
    res = build_corpus([music_dir], tmp_path, _cfg(), progress=False)
    rows = read_manifest(res.manifest)
    n_conditions = 1 + 4  # clean + tiny grid (2 codecs x 2 bitrates)
    assert res.num_excerpts == 4 * 2
    assert len(rows) == 4 * 2 * n_conditions
    assert all(list(r) == list(FIELDS) for r in rows)
    assert len({r["key"] for r in rows}) == len(rows)
    for r in rows:
        audio, sr = sf.read(tmp_path / r["path"], always_2d=True)
        ref, _ = sf.read(tmp_path / r["reference"], always_2d=True)
        assert sr == 48000 and audio.shape == ref.shape == (r["num_samples"], r["channels"])
        if r["condition"] == "clean":
            assert math.isinf(r["bitrate_label"]) and r["path"] == r["reference"]
        else:
            # per channel, rounded from the unrounded total
            assert r["bitrate_label"] == pytest.approx(
                r["bitrate_measured_kbps"] / r["channels"], abs=1e-3)
            assert r["bitrate_label"] > 0
    assert {r["channels"] for r in rows} == {1, 2}
    assert res.num_rejects == 0


def test_codec_steps_are_timed(music_dir, tmp_path):
    """Build timing holds measured encode/decode/align seconds, also per codec, inside codec."""
    res = build_corpus([music_dir / "harpsichord.flac"], tmp_path, _cfg(), progress=False)
    t = res.timing
    rounding = 1e-3  # progress records keep each stage to 0.1 ms per excerpt
    steps = [t[k] for k in ("encode", "decode", "align")]  # (resample: 0, all at 48 kHz)
    assert all(v > 0 for v in steps) and sum(steps) + t["resample"] <= t["codec"] + rounding
    assert t["encode opus"] > 0 and t["encode mp3"] > 0
    assert t["encode opus"] + t["encode mp3"] == pytest.approx(t["encode"], abs=rounding)


def test_split_is_by_track(music_dir, tmp_path):
    rows = read_manifest(build_corpus([music_dir], tmp_path, _cfg(), progress=False).manifest)
    per_track: dict[str, set] = {}
    for r in rows:
        per_track.setdefault(r["track_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in per_track.values())
    assert {next(iter(s)) for s in per_track.values()} == {"train", "val", "test"}


def test_assign_splits_is_seeded_and_order_free():
    ids = [f"t{i}" for i in range(50)]
    a = assign_splits(ids, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=3)
    b = assign_splits(list(reversed(ids)), {"train": 0.8, "val": 0.1, "test": 0.1}, seed=3)
    c = assign_splits(ids, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=4)
    assert a == b and a != c
    assert sorted(list(a.values()).count(s) for s in ("train", "val", "test")) == [5, 5, 40]


def test_same_input_same_bytes_and_shards_merge_to_it(music_dir, tmp_path):
    one = build_corpus([music_dir], tmp_path / "a", _cfg(), progress=False).manifest.read_bytes()
    two = build_corpus([music_dir], tmp_path / "b", _cfg(), jobs=2,
                       progress=False).manifest.read_bytes()
    assert one == two
    out = tmp_path / "c"
    shards = [build_corpus([music_dir], out, _cfg(), shard=(k, 3), progress=False).manifest
              for k in (1, 2, 3)]
    from data_prep.cli import main

    assert main(["merge", *map(str, shards), "-o", str(out / "manifest.jsonl")]) == 0
    assert (out / "manifest.jsonl").read_bytes() == one


def test_bad_inputs_are_rejected_and_run_goes_on(music_dir, tmp_path, music_clip):
    bad = tmp_path / "in"
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "corrupt.flac").write_bytes(b"fLaC" + os.urandom(2000))
    sf.write(bad / "zero.wav", np.zeros((0, 2), np.float32), 48000)
    nan = music_clip("guitar", 2.0, 1.0).T.copy()
    nan[1000] = np.nan
    sf.write(bad / "nan.wav", nan, 48000, subtype="FLOAT")
    sf.write(bad / "lowrate.wav", music_clip("guitar", 2.0, 1.0)[0, ::12], 4000)
    sf.write(bad / "silence.wav", np.zeros((96000, 2), np.float32), 48000)
    six = np.repeat(music_clip("sopr", 2.0, 1.0)[:1], 6, axis=0)
    sf.write(bad / "surround.wav", six.T, 48000)
    code = subprocess.run([sys.executable, "-m", "data_prep.cli", "build", str(bad), "-o",
                           str(tmp_path / "out"), "--grid", str(TINY_GRID), "--labels", "none",
                           "--excerpt-seconds", "1.5", "-q"],
                          capture_output=True, text=True, cwd=REPO, check=False)
    assert code.returncode == 1, code.stderr
    rejects = {Path(r["path"]).name: r["reason"] for r in
               map(__import__("json").loads, (tmp_path / "out" / "rejects.jsonl").open())}
    assert set(rejects) == {"empty.wav", "corrupt.flac", "zero.wav", "nan.wav", "lowrate.wav"}
    assert "empty" in rejects["empty.wav"] and "NaN" in rejects["nan.wav"]
    assert "sample rate" in rejects["lowrate.wav"] and "corrupt" in rejects["corrupt.flac"]
    assert "skipped excerpts: 1 silent" in code.stdout
    rows = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert {r["track_id"] for r in rows} == {"surround"} and rows[0]["channels"] == 2


def test_resume_after_kill_gives_identical_manifest(music_dir, tmp_path):
    cmd = [sys.executable, "-m", "data_prep.cli", "build", str(music_dir), "-o",
           str(tmp_path / "k"), "--grid", str(TINY_GRID), "--labels", "visqol",
           "--excerpt-seconds", "1.5", "--splits", "train=0.5,val=0.25,test=0.25", "-q"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = tmp_path / "k" / ".progress" / "excerpts.jsonl"
    deadline = time.time() + 120
    # the progress log: a configuration record, then one record per finished excerpt
    while time.time() < deadline and (not progress.exists() or progress.read_text().count("\n") < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "k" / "manifest.jsonl").exists()
    done_before = progress.read_text().count("\n") - 1
    assert 2 <= done_before < 8
    assert subprocess.run(cmd + ["--resume"], cwd=REPO, check=False).returncode == 0
    assert subprocess.run([c if c != str(tmp_path / "k") else str(tmp_path / "fresh")
                           for c in cmd], cwd=REPO, check=False).returncode == 0
    resumed = (tmp_path / "k" / "manifest.jsonl").read_bytes()
    assert resumed == (tmp_path / "fresh" / "manifest.jsonl").read_bytes()
    rows = read_manifest(tmp_path / "k" / "manifest.jsonl")
    assert len(rows) == 40 and all(r["visqol"] is not None for r in rows)
    text = summarize(rows)
    assert "| 32 |" in text and "items: 40" in text


def test_labels_fall_with_bitrate(tmp_path, music_file):
    """Real music, full default grid: mean ViSQOL per codec falls from 128 to 16 kbps."""
    res = build_corpus([music_file("moonlight"), music_file("glock")], tmp_path,
                       CorpusConfig(excerpt_seconds=3.0, max_excerpts_per_track=1),
                       jobs=2, progress=False)
    rows = read_manifest(res.manifest)
    assert len(rows) == 2 * 22
    for codec in ("opus", "mp3", "aac"):
        by_rate = {}
        for r in rows:
            if r["codec"] == codec:
                by_rate.setdefault(r["bitrate_requested_kbps"], []).append(r["visqol"])
        means = [np.mean(by_rate[k]) for k in sorted(by_rate)]
        # Opus degrades gracefully (band-limited at 16 kbps), so the margin is modest
        assert means[0] < means[-1] - 0.2, (codec, means)
        assert spearmanr(sorted(by_rate), means)[0] >= 0.85, (codec, means)
    clean = [r["visqol"] for r in rows if r["codec"] is None]
    assert min(clean) > max(r["visqol"] for r in rows if r["bitrate_requested_kbps"] <= 32)


def test_labels_describe_the_stored_files_when_codecs_overshoot(tmp_path, music_clip):
    """Loud music makes the codecs overshoot full scale; the 24-bit FLAC keeps [-1, 1], so the
    label must be computed on the clipped audio: rescoring the files gives the manifest's labels."""
    from deepaq.visqol import VisqolLabeller

    loud = music_clip("castanets", seconds=2.0, offset=0.5)
    loud = np.clip(4.0 * loud, -0.999, 0.999)          # mastered hot: codecs overshoot a lot
    src = tmp_path / "in" / "loud.wav"
    src.parent.mkdir()
    sf.write(src, loud.T, 48000, subtype="FLOAT")
    result = build_corpus([str(src.parent)], tmp_path / "c",
                          _cfg(excerpt_seconds=2.0, labels="visqol"), jobs=1, progress=False)
    rows = read_manifest(result.manifest)
    clipped = 0
    labeller = VisqolLabeller()
    for row in rows:
        stored, _ = sf.read(tmp_path / "c" / row["path"], dtype="float32")
        clipped += int(np.abs(stored).max() >= 1.0 - 2 ** -22)
        again = labeller.score_files(tmp_path / "c" / row["reference"], tmp_path / "c" / row["path"])
        assert abs(again - float(row["visqol"])) < 1e-4, (row["key"], again, row["visqol"])
    assert clipped >= 1, "no condition overshot: the test would not see the problem"
