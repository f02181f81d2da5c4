"""The codec stage on real music: delay compensation, exact length, bitrates, the known traps."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from data_prep import codecs
from data_prep.codecs import CodecError, CodecSpec, code_excerpt, load_grid
from deepaq.alignment import ReferenceSignal

GRIDS = Path(__file__).resolve().parents[2] / "configs" / "data_prep"
LOW_HIGH = [("opus", 16), ("opus", 128), ("mp3", 16), ("mp3", 128), ("aac", 16), ("aac", 128)]


@pytest.fixture(scope="module")
def grid() -> dict[str, CodecSpec]:
    return {s.condition: s for s in load_grid(GRIDS / "default_grid.yaml")}


@pytest.fixture(scope="module")
def coded(grid, music_clip) -> dict:
    """Low and high bitrate of each codec on a 2 s stereo guitar excerpt, coded once per module."""
    x = music_clip("guitar", seconds=2.0)
    return x, {f"{c}_{k:03d}": code_excerpt(x, grid[f"{c}_{k:03d}"]) for c, k in LOW_HIGH}


def xcorr_lag(ref: np.ndarray, deg: np.ndarray, max_lag: int = 2400) -> int:
    """Independent check: the lag at the peak of the plain numpy cross-correlation."""
    a, b = ref.mean(0), deg.mean(0)
    n = 1 << int(np.ceil(np.log2(a.size + b.size)))
    c = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)
    lags = np.r_[0:max_lag + 1, -max_lag:0]
    return int(lags[np.argmax(c[lags])])


def log_spectral_distance(ref: np.ndarray, deg: np.ndarray) -> float:
    """Mean over frames of the RMS difference of log power spectra (dB)."""
    _, _, r = signal.stft(ref.mean(0), fs=48000, nperseg=1024)
    _, _, d = signal.stft(deg.mean(0), fs=48000, nperseg=1024)
    diff = 10 * np.log10(np.abs(r) ** 2 + 1e-10) - 10 * np.log10(np.abs(d) ** 2 + 1e-10)
    return float(np.mean(np.sqrt(np.mean(diff ** 2, axis=0))))


def test_default_grid_has_21_conditions(grid):
    assert len(grid) == 21
    assert {s.codec for s in grid.values()} == {"opus", "mp3", "aac"}
    assert sorted({s.bitrate_kbps for s in grid.values()}) == [16, 32, 48, 64, 80, 96, 128]
    assert grid["opus_064"].encoder == "libopus" and grid["opus_064"].options["vbr"] == "constrained"
    # the traps are configured: Opus at 48 kHz, MP3 below 32 kbps at 24 kHz, AAC fast coder at 16
    assert all(s.sample_rate == 48000 for s in grid.values() if s.codec == "opus")
    assert grid["mp3_016"].sample_rate == 24000 and grid["mp3_032"].sample_rate == 48000
    assert grid["aac_016"].options["aac_coder"] == "fast"
    assert grid["aac_128"].options["aac_coder"] == "twoloop"
    assert all("compression_level" not in s.options for s in grid.values())   # LAME's default


def test_fast_grid_lowers_encoder_effort_only():
    """fast_grid.yaml: the same conditions and bitrates, lower effort (LAME -q 7 below 80 kbps,
    -q 5 above; AAC without TNS, fast coder at 32 kbps too)."""
    default = {s.condition: s for s in load_grid(GRIDS / "default_grid.yaml")}
    fast = {s.condition: s for s in load_grid(GRIDS / "fast_grid.yaml")}
    assert fast.keys() == default.keys()
    assert all(fast[k].bitrate_kbps == default[k].bitrate_kbps
               and fast[k].sample_rate == default[k].sample_rate for k in fast)
    assert [fast[f"mp3_{k:03d}"].options["compression_level"] for k in (16, 64, 80, 128)] == \
        ["7", "7", "5", "5"]
    assert {s.options["aac_tns"] for s in fast.values() if s.codec == "aac"} == {"0"}
    assert [fast[f"aac_{k:03d}"].options["aac_coder"] for k in (32, 48)] == ["fast", "twoloop"]


@pytest.mark.parametrize("name,option,values", [("mp3_064", "compression_level", ("3", "7")),
                                                ("aac_096", "aac_tns", ("1", "0"))])
def test_effort_options_reach_the_encoder(grid, music_clip, name, option, values):
    """The grid's effort options change the bitstream (not silently dropped), same bitrate."""
    x = music_clip("castanets", seconds=1.0)
    out = [codecs._encode(x, dataclasses.replace(grid[name], options={
        **grid[name].options, option: v})) for v in values]
    assert out[0][0] != out[1][0]
    assert abs(out[0][2] - out[1][2]) <= 0.02 * out[0][2]


def test_tiny_grid_and_dict_grid():
    tiny = load_grid(GRIDS / "tiny_grid.yaml")
    assert [s.condition for s in tiny] == ["opus_032", "opus_096", "mp3_032", "mp3_128"]
    specs = load_grid({"bitrates_kbps": [64], "codecs": {"aac": {"encoder": "aac",
                                                                  "container": "mp4"}}})
    assert [s.condition for s in specs] == ["aac_064"]
    with pytest.raises(ValueError, match="unknown keys"):
        load_grid({"bitrates_kbps": [64], "codecs": {"aac": {"encoder": "aac", "container": "mp4",
                                                              "bitrate": 3}}})


@pytest.mark.parametrize("codec,kbps", LOW_HIGH)
def test_round_trip_is_aligned_and_exact_length(coded, codec, kbps):
    x, out = coded
    c = out[f"{codec}_{kbps:03d}"]
    assert c.audio.shape == x.shape and c.audio.dtype == np.float32
    assert np.isfinite(c.audio).all()
    # the codec's declared delay was removed and little or nothing was left to correct
    assert c.delay_removed_samples > 0
    assert abs(c.alignment_lag) <= 1
    assert abs(xcorr_lag(x, c.audio)) <= 1
    assert c.encoder == {"opus": "libopus", "mp3": "libmp3lame", "aac": "aac"}[codec]


@pytest.mark.parametrize("codec,kbps", LOW_HIGH)
def test_measured_bitrate_is_near_the_requested_one(coded, codec, kbps):
    c = coded[1][f"{codec}_{kbps:03d}"]
    assert c.bitrate_requested_kbps == kbps
    # 2 s excerpts: frame granularity and priming frames cost a few percent
    assert abs(c.bitrate_measured_kbps / kbps - 1) < 0.12, c.bitrate_measured_kbps


def test_mp3_16_kbps_is_really_16(coded):
    c = coded[1]["mp3_016"]
    assert c.coded_sample_rate == 24000
    assert c.bitrate_measured_kbps < 20  # MPEG-1 at 48 kHz would give 32 kbps here


@pytest.mark.parametrize("codec", ["opus", "mp3", "aac"])
def test_lower_bitrate_is_further_from_the_reference(coded, codec):
    x, out = coded
    low, high = out[f"{codec}_016"].audio, out[f"{codec}_128"].audio
    assert log_spectral_distance(x, low) > log_spectral_distance(x, high) + 1.0
    snr = [10 * np.log10(np.sum(x ** 2) / np.sum((x - y) ** 2)) for y in (low, high)]
    assert snr[0] < snr[1] - 3.0, snr


def test_mono_input_and_determinism(grid, music_clip):
    x = music_clip("sopr", seconds=1.5).mean(0, keepdims=True)
    for name in ("opus_032", "aac_064"):
        a = code_excerpt(x, grid[name])
        b = code_excerpt(x.copy(), grid[name])
        assert a.audio.shape == x.shape
        assert abs(xcorr_lag(x, a.audio)) <= 1
        assert a.audio.tobytes() == b.audio.tobytes()
        assert a.encoded_bytes == b.encoded_bytes


def test_prepared_reference_gives_identical_items(grid, music_clip):
    """The pipeline passes a ReferenceSignal (one FFT of the reference for the whole grid)."""
    x = music_clip("castanets", seconds=1.5)
    prepared = ReferenceSignal(x)
    for name in ("opus_016", "mp3_016", "aac_096"):
        a, b = code_excerpt(x, grid[name]), code_excerpt(prepared, grid[name])
        assert a.audio.tobytes() == b.audio.tobytes()
        assert (a.alignment_lag, a.encoded_bytes) == (b.alignment_lag, b.encoded_bytes)


def test_step_seconds_are_measured(grid, music_clip):
    """Each call reports its own resample / encode / decode / align seconds, within its wall time."""
    x = music_clip("guitar", seconds=2.0)
    for name in ("mp3_016", "aac_128"):
        t0 = time.perf_counter()
        coded = code_excerpt(x, grid[name])
        wall = time.perf_counter() - t0
        assert set(coded.seconds) == {"resample", "encode", "decode", "align"}
        assert all(v > 0 for v in coded.seconds.values())
        assert sum(coded.seconds.values()) <= wall
    # the 24 kHz MP3 condition resamples twice, real work; the 48 kHz AAC one only casts
    slow = code_excerpt(x, grid["mp3_016"]).seconds
    fast = code_excerpt(x, grid["aac_128"]).seconds
    assert slow["resample"] > fast["resample"]


def test_residual_lag_above_tolerance_fails_loudly(grid, music_clip, monkeypatch):
    """A wrong delay rule (here 300 extra samples from the decoder) must raise, naming the cause."""
    x = music_clip("guitar", seconds=1.0)
    decode = codecs._decode
    monkeypatch.setattr(codecs, "_decode",
                        lambda *a: np.pad(decode(*a), ((0, 0), (300, 0))))
    with pytest.raises(CodecError, match=r"aac_128 \(aac 128 kbps\).*lag 300") as err:
        code_excerpt(x, grid["aac_128"])
    assert err.value.lag == 300


def test_bad_input_is_a_codec_error(grid):
    with pytest.raises(CodecError, match="opus_016"):
        code_excerpt(np.zeros((3, 4800), np.float32), grid["opus_016"])
