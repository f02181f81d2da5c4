"""The demo music source must give real, distinct, reproducible 48 kHz stereo music."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest

from deepaq.audio import read_audio, rms_dbfs
from deepaq.records import read_jsonl

pytest.importorskip("music21", reason="music21 not installed (pip install 'deepaq[demo]')")

render = pytest.importorskip("data_prep.render")
HAVE_SYNTH = shutil.which("fluidsynth") is not None and render.SOUNDFONT.is_file()
needs_synth = pytest.mark.skipif(
    not HAVE_SYNTH, reason="fluidsynth or the FluidR3 GM soundfont is missing "
                           "(apt-get install fluidsynth fluid-soundfont-gm)")

WORKS = ["bach/bwv66.6", "mozart/k545/movement1_exposition"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Two short pieces rendered through the command-line entry point."""
    if not HAVE_SYNTH:
        pytest.skip("fluidsynth or the FluidR3 GM soundfont is missing "
                    "(apt-get install fluidsynth fluid-soundfont-gm)")
    out = tmp_path_factory.mktemp("render")
    code = render.main([str(out), "--works", *WORKS, "--max-seconds", "4", "--seed", "3", "-q"])
    assert code == 0
    return out, read_jsonl(out / "index.jsonl")


@needs_synth
def test_renders_are_real_stereo_music(rendered):
    out, rows = rendered
    assert [r["source"].split(":", 1)[1].rsplit(".", 1)[0] for r in rows] == WORKS
    audio = []
    for row in rows:
        x, sr = read_audio(out / row["path"])
        assert sr == 48000 and x.shape[0] == 2 and row["channels"] == 2
        assert x.shape[1] == pytest.approx(4.0 * 48000, abs=1)  # both pieces are longer: capped
        assert row["duration"] == pytest.approx(x.shape[1] / sr, abs=1e-4)
        assert np.abs(x).max() <= 10 ** (-1 / 20) + 1e-4        # peak ceiling -1 dBFS
        assert rms_dbfs(x) > -35.0                               # music, not near-silence
        assert not np.allclose(x[0], x[1], atol=1e-3)            # real stereo (panned parts)
        # tonal content: most of the energy sits in the musical range, not in noise
        spec = np.abs(np.fft.rfft(x.mean(axis=0))) ** 2
        freqs = np.fft.rfftfreq(x.shape[1], 1 / sr)
        assert spec[(freqs > 60) & (freqs < 5000)].sum() > 0.9 * spec.sum()
        assert row["programs"] and len(row["programs"]) == len(row["instruments"])
        assert row["title"] and row["composer"]
        audio.append(x)
    n = min(a.shape[1] for a in audio)
    a, b = (y.mean(axis=0)[:n] for y in audio)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.5                   # different pieces differ


@needs_synth
def test_same_seed_same_audio_other_seed_other_instruments(rendered, tmp_path):
    out, rows = rendered
    again = render.render_corpus(tmp_path / "again", n_pieces=2, max_seconds=4, seed=3,
                                 works=WORKS, progress=False)
    rows2 = read_jsonl(again)
    assert rows2 == rows
    for r in rows:
        x1, _ = read_audio(out / r["path"])
        x2, _ = read_audio(tmp_path / "again" / r["path"])
        np.testing.assert_array_equal(x1, x2)
    # a different seed changes the instrumentation of at least one piece
    changed = [render.choose_instrumentation(4, random.Random(s),
                                             tuple(render.ENSEMBLES))[1] for s in range(6)]
    assert len({tuple(p) for p in changed}) > 1


def test_seeded_order_interleaves_composers():
    cands = render.list_candidates()
    order = render.plan_order(cands, seed=0)
    assert sorted(c.key for c in order) == sorted(c.key for c in cands)
    assert len({c.key for c in cands}) == len(cands)
    first = [c.composer_id for c in order[:20]]
    assert len(set(first)) == 20              # 20 different composers/collections first
    assert [c.key for c in render.plan_order(cands, seed=0)] == [c.key for c in order]
    assert [c.key for c in render.plan_order(cands, seed=1)] != [c.key for c in order]
    assert "schoenberg" not in {c.composer_id for c in cands}  # not public domain


def test_missing_system_packages_say_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(render.shutil, "which", lambda name: None)
    with pytest.raises(render.RenderSetupError, match="apt-get install fluidsynth"):
        render.check_setup()
    monkeypatch.undo()
    if shutil.which("fluidsynth"):
        with pytest.raises(render.RenderSetupError, match="fluid-soundfont-gm"):
            render.check_setup(tmp_path / "missing.sf2")
    assert render.main([str(tmp_path / "x"), "--composers", "schoenberg", "-q"]) == 2


def test_finish_audio_caps_and_normalises():
    rng = np.random.default_rng(0)
    t = np.arange(6 * 48000) / 48000
    tone = 0.01 * np.sin(2 * np.pi * 440 * t) * (1 + 0.1 * rng.standard_normal(t.size))
    x = np.stack([np.concatenate([np.zeros(48000), tone])] * 2).astype(np.float32)
    y = render.finish_audio(x, render.RenderSettings(max_seconds=3.0))
    assert y.shape[1] == 3 * 48000
    assert abs(y[:, :960]).max() > 1e-3              # leading silence trimmed (10 ms kept)
    assert abs(y[:, -10:]).max() < 1e-3              # faded out at the cut
    assert rms_dbfs(y) == pytest.approx(-20.0, abs=0.5)  # quiet tone: RMS target sets gain
    loud = render.finish_audio(x * 60, render.RenderSettings(max_seconds=3.0, target_rms_dbfs=0))
    assert np.abs(loud).max() == pytest.approx(10 ** (-1 / 20), rel=1e-4)  # peak ceiling wins


def test_silent_render_is_rejected_and_recorded(monkeypatch, tmp_path):
    """A render that comes out silent must be listed as a reject, not normalised up to -20 dBFS."""
    monkeypatch.setattr(render, "check_setup", lambda *a, **k: ("fluidsynth", render.SOUNDFONT))
    monkeypatch.setattr(render, "_synthesise",
                        lambda midi, settings: np.full((2, 5 * 48000), 1e-6, np.float32))
    index = render.render_corpus(tmp_path, n_pieces=1, max_seconds=4, works=["bach/bwv66.6"],
                                 progress=False)
    assert read_jsonl(index) == []
    rejects = read_jsonl(tmp_path / "render_rejects.jsonl")
    assert [r["key"] for r in rejects] == ["bach__bwv66.6"]
    assert "silent render" in rejects[0]["reason"]
    assert not list((tmp_path / "audio").glob("*.flac"))


@needs_synth
def test_stems_sum_to_the_mix(tmp_path):
    """--stems renders each part alone; the mix written beside them is their sum."""
    code = render.main([str(tmp_path), "--works", "bach/bwv66.6", "--max-seconds", "3",
                        "--seed", "3", "--stems", "-q"])
    assert code == 0
    (row,) = read_jsonl(tmp_path / "index.jsonl")
    assert row["stems"] == [f"stems/bach__bwv66.6/{k:02d}.flac" for k in range(4)]  # SATB
    mix, _ = read_audio(tmp_path / row["path"])
    stems = [read_audio(tmp_path / p)[0] for p in row["stems"]]
    assert all(s.shape == mix.shape for s in stems)
    # each of the n + 1 files is rounded to 24 bits (half an LSB, 2**-24, each): the sum of the
    # read stems can differ from the read mix by at most (n + 1) / 2 LSB
    bound = (len(stems) + 1) * 2.0 ** -24
    assert np.abs(np.sum(stems, axis=0) - mix).max() <= bound
    for s in stems:
        assert rms_dbfs(s) > -45.0                    # every voice sounds in the excerpt
    corr = np.corrcoef([s.mean(axis=0) for s in stems])
    assert np.abs(corr[np.triu_indices(4, 1)]).max() < 0.9   # four different parts
    assert render.main([str(tmp_path / "x"), "--works", "bach/bwv66.6", "--stems",
                        "--room-rt60", "0.5", "-q"]) == 2
