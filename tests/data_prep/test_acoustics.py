"""A room and a noise floor make rendered music sound recorded: they must do what they say."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from data_prep.acoustics import add_noise_floor, add_room
from deepaq.audio import read_audio, rms_dbfs

SR = 48000


@pytest.fixture(scope="module")
def guitar(music_file):
    """1 s of real stereo music followed by 1 s of digital silence."""
    x, sr = read_audio(music_file("guitar"))
    assert sr == SR
    x = x[:, SR:2 * SR]
    return np.concatenate([x, np.zeros_like(x)], axis=1)


def _level_db(x: np.ndarray, start_s: float, seconds: float = 0.05) -> float:
    a = int(start_s * SR)
    return rms_dbfs(x[:, a:a + int(seconds * SR)])


def test_room_tail_decays_at_its_rt60(guitar):
    rt60 = 0.8
    y = add_room(guitar, rt60, wet=0.5, seed=1)
    assert y.shape == guitar.shape and y.dtype == guitar.dtype and np.isfinite(y).all()
    assert rms_dbfs(y) == pytest.approx(rms_dbfs(guitar), abs=1e-3)      # level kept
    # after the music stops the room rings on, 60 dB per rt60 (here 30 dB in 0.4 s)
    drop = _level_db(y, 1.1) - _level_db(y, 1.5)
    assert drop == pytest.approx(60 * 0.4 / rt60, abs=4.0)
    assert _level_db(guitar, 1.1) == -np.inf and _level_db(y, 1.1) > -60


def test_room_widens_a_centred_source_and_dry_is_identity(guitar):
    mono = np.repeat(guitar[:1], 2, axis=0)
    assert np.corrcoef(mono)[0, 1] == pytest.approx(1.0)
    wide = add_room(mono, 1.2, wet=0.5, seed=2)
    assert np.corrcoef(wide)[0, 1] < 0.8               # independent channel responses
    assert add_room(mono, 0.0) is mono                  # rt60 0: untouched
    with pytest.raises(ValueError, match="wet"):
        add_room(mono, 1.0, wet=1.5)


def test_noise_floor_level_spectrum_and_independence(guitar):
    music = guitar[:, :SR]
    y = add_noise_floor(music, 45.0, seed=3)
    noise = (y - music).astype(np.float64)
    assert rms_dbfs(noise) == pytest.approx(rms_dbfs(music) - 45.0, abs=0.01)
    assert abs(np.corrcoef(noise)[0, 1]) < 0.05          # a different noise in each channel
    spec = np.abs(np.fft.rfft(noise[0])) ** 2
    f = np.fft.rfftfreq(noise.shape[1], 1 / SR)
    low, high = spec[(f > 100) & (f < 500)].mean(), spec[(f > 8000) & (f < 16000)].mean()
    assert 10 * np.log10(low / high) > 15                  # room/preamp noise, not white hiss


def test_same_seed_same_samples(guitar):
    a, b = add_room(guitar, 1.0, seed=5), add_room(guitar, 1.0, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, add_room(guitar, 1.0, seed=6))
    np.testing.assert_array_equal(add_noise_floor(guitar, 40, seed=5),
                                  add_noise_floor(guitar, 40, seed=5))


def test_render_records_and_applies_the_acoustics(tmp_path):
    render = pytest.importorskip("data_prep.render")
    pytest.importorskip("music21")
    if shutil.which("fluidsynth") is None or not render.SOUNDFONT.is_file():
        pytest.skip("fluidsynth or the FluidR3 GM soundfont is missing")
    from deepaq.records import read_jsonl

    out = {}
    for name, flags in {"dry": [], "recorded": ["--room-rt60", "1.2", "--noise-floor-db", "45"]}.items():
        assert render.main([str(tmp_path / name), "--works", "bach/bwv66.6", "--max-seconds", "3",
                            "--seed", "3", "--ensembles", "organ", "-q", *flags]) == 0
        row = read_jsonl(tmp_path / name / "index.jsonl")[0]
        audio, _ = read_audio(tmp_path / name / row["path"])
        out[name] = (row, audio)
    assert out["dry"][0]["room_rt60_s"] == 0.0 and out["dry"][0]["noise_floor_db"] is None
    assert out["recorded"][0]["room_rt60_s"] == 1.2 and out["recorded"][0]["noise_floor_db"] == 45.0
    # an organ chorale rendered dry is nearly centred; the room decorrelates the channels
    dry_corr = np.corrcoef(out["dry"][1])[0, 1]
    assert np.corrcoef(out["recorded"][1])[0, 1] < dry_corr - 0.2
