"""Audio loading: formats, rates, channel policies and clear errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from deepaq.audio import (
    AudioError,
    apply_channel_policy,
    check_not_silent,
    load_audio,
    read_audio,
    resample,
    rms_dbfs,
    write_audio,
)


def test_reads_wav_flac_and_mp3_alike(tmp_path, music_clip):
    import av

    x = music_clip("guitar", 1.0)
    sf.write(tmp_path / "a.wav", x.T, 48000, subtype="FLOAT")
    write_audio(tmp_path / "a.flac", x, 48000)
    with av.open(str(tmp_path / "a.mp3"), "w") as out:
        st = out.add_stream("libmp3lame", rate=48000, layout="stereo")
        st.bit_rate = 192000
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp", layout="stereo")
        frame.sample_rate = 48000
        for p in st.encode(frame):
            out.mux(p)
        for p in st.encode(None):
            out.mux(p)
    wav, sr = read_audio(tmp_path / "a.wav")
    flac, _ = read_audio(tmp_path / "a.flac")
    mp3, sr3 = read_audio(tmp_path / "a.mp3")
    assert sr == sr3 == 48000 and wav.shape == flac.shape == x.shape
    assert np.max(np.abs(flac - x)) < 1e-6  # 24-bit FLAC
    assert mp3.shape[0] == 2 and abs(mp3.shape[1] - x.shape[1]) < 3000
    part = load_audio(tmp_path / "a.flac", start=0.25, end=0.5)
    np.testing.assert_allclose(part, x[:, 12000:24000], atol=1e-6)


def test_resample_and_channel_policies(music_clip):
    x = music_clip("sopr", 1.0)
    y = resample(x, 48000, 24000)
    assert y.shape == (2, 24000) and y.dtype == np.float32
    assert abs(rms_dbfs(y) - rms_dbfs(x)) < 0.5  # band-limited music keeps its level
    assert apply_channel_policy(x, "mono").shape == (1, 48000)
    assert apply_channel_policy(x[:1], "stereo").shape == (2, 48000)
    six = np.repeat(x[:1], 6, axis=0)
    np.testing.assert_allclose(apply_channel_policy(six, "stereo")[0], x[0], atol=1e-6)


@pytest.mark.parametrize("content,problem", [
    (b"", "empty file"),
    (b"RIFF\x00\x00\x00\x00WAVEjunkjunk", "unreadable or corrupt"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, content, problem):
    p = tmp_path / "bad.wav"
    p.write_bytes(content)
    with pytest.raises(AudioError) as err:
        read_audio(p)
    assert str(p) in str(err.value) and problem in str(err.value)


def test_nan_missing_silent_and_rate_errors(tmp_path, music_clip):
    with pytest.raises(AudioError, match="file not found"):
        read_audio(tmp_path / "nope.wav")
    x = music_clip("guitar", 0.5).T.copy()
    x[10, 0] = np.nan
    sf.write(tmp_path / "nan.wav", x, 48000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        read_audio(tmp_path / "nan.wav")
    sf.write(tmp_path / "low.wav", np.zeros(400, np.float32) + 0.1, 4000)
    with pytest.raises(AudioError, match="unsupported sample rate 4000"):
        read_audio(tmp_path / "low.wav")
    with pytest.raises(AudioError, match="silent"):
        check_not_silent(np.zeros((1, 1000), np.float32), "x.wav")


def test_write_audio_is_atomic(tmp_path, music_clip, monkeypatch):
    target = tmp_path / "out.flac"
    write_audio(target, music_clip("guitar", 0.5), 48000)
    before = target.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sf, "write", boom)
    with pytest.raises(RuntimeError):
        write_audio(target, music_clip("sopr", 0.5), 48000)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.flac"]


def test_dc_only_and_near_dc_count_as_silent(music_clip):
    rng = np.random.default_rng(0)
    for offset in (0.5, -0.02):
        near_dc = offset + 1e-5 * rng.standard_normal((2, 48000))  # AC at about -100 dBFS
        with pytest.raises(AudioError, match="DC offset only") as err:
            check_not_silent(near_dc, "dc.wav")
        assert "dc.wav" in str(err.value)
    x = music_clip("guitar", 1.0)
    assert check_not_silent(x + 0.3, "offset.wav") is not None  # music on an offset is sound
    with pytest.raises(AudioError, match="silent or too quiet"):
        check_not_silent(1e-5 * x, "quiet.wav")  # quiet without an offset: the old reason


def test_garbage_bytes_cannot_be_decoded(tmp_path):
    p = tmp_path / "noise.flac"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="cannot be decoded") as err:
        read_audio(p)
    assert "sample rate 0" not in str(err.value)
