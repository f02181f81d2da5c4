"""Metric registry: lazy entries, errors for unknown/missing metrics, log-mel L1 on real music."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deepaq.metrics import (
    Metric,
    MetricInfo,
    available_metrics,
    get_metric,
    main_value,
    parse_metric_spec,
    register,
)


def lowpass(x, cutoff, sr=48000):
    from scipy.signal import butter, sosfiltfilt

    return sosfiltfilt(butter(8, cutoff, fs=sr, output="sos"), x, axis=-1).astype(np.float32)


def test_builtins_listed_and_specs_parsed():
    names = available_metrics()
    for n in ("deepaq", "visqol", "logmel_l1", "peaq_odg", "2f", "haaqi"):
        assert n in names
    assert parse_metric_spec("deepaq:ck/pt") == ("deepaq", {"checkpoint": "ck/pt"})
    assert parse_metric_spec("visqol:speech") == ("visqol", {"mode": "speech"})
    with pytest.raises(ValueError):
        parse_metric_spec("logmel_l1:x")
    with pytest.raises(KeyError, match="unknown metric"):
        get_metric("no_such_metric")


def test_register_custom_and_missing_module(monkeypatch):
    @register("test_const")
    class Const(Metric):
        info = MetricInfo(name="test_const", higher_is_better=True)

        def score(self, ref, deg, sr):
            return {"score": 3.0, "other": 1}

    m = get_metric("test_const")
    assert main_value(m.score(None, np.zeros((1, 10)), 48000)) == 3.0
    import deepaq.metrics as reg

    monkeypatch.setitem(reg._BUILTINS, "ghost", ("deepaq.metrics.ghost_module:Ghost", None))
    with pytest.raises(ImportError, match="ghost"):
        get_metric("ghost")


def test_logmel_l1_orders_lowpass_cutoffs_and_noise(music_clip):
    m = get_metric("logmel_l1")
    assert m.info.higher_is_better is False and m.info.sample_rate == 48000
    for name in ("guitar", "castanets"):
        x = music_clip(name, 2.0, 1.0)
        assert m.score(x, x, 48000) == 0.0
        cut = [m.score(x, lowpass(x, c), 48000) for c in (16000, 11000, 7000, 3500)]
        assert all(a < b for a, b in itertools.pairwise(cut)), cut
        rng = np.random.default_rng(0)
        p = np.mean(x**2)
        noise = [m.score(x, x + rng.standard_normal(x.shape).astype(np.float32)
                         * np.sqrt(p / 10 ** (snr / 10)), 48000) for snr in (40, 25, 10)]
        assert noise[0] < noise[1] < noise[2], noise
    # other rates are resampled to 48 kHz: the same music at 44.1 kHz is (nearly) identical
    from deepaq.audio import resample

    x = music_clip("guitar", 2.0, 1.0)
    d44 = m.score(resample(x, 48000, 44100), resample(x, 48000, 44100), 44100)
    assert d44 == 0.0


def test_logmel_l1_orders_codec_bitrates(music_clip, tmp_path):
    """MP3 at 32/64/128 kbps of real music (PyAV's libmp3lame): lower bitrate, larger distance."""
    av = pytest.importorskip("av")
    from deepaq.audio import read_audio, write_audio

    x = music_clip("harpsichord", 2.0, 1.0)
    write_audio(tmp_path / "ref.wav", x, 48000)
    m = get_metric("logmel_l1")
    dists = []
    for kbps in (128, 64, 32):
        path = tmp_path / f"c{kbps}.mp3"
        try:
            with av.open(str(path), "w") as out:
                st = out.add_stream("libmp3lame", rate=48000)
                st.bit_rate = kbps * 1000
                st.layout = "stereo"
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x), format="fltp",
                                                   layout="stereo")
                frame.sample_rate = 48000
                for pkt in st.encode(frame):
                    out.mux(pkt)
                for pkt in st.encode(None):
                    out.mux(pkt)
        except Exception as exc:  # noqa: BLE001
            pytest.skip(f"no MP3 encoder in this PyAV build: {exc}")
        y, sr = read_audio(path)
        # compensate the encoder delay by cross-correlation before comparing
        lag = int(np.argmax(np.correlate(y[0, :12000], x[0, :6000], "valid")))
        y = y[:, lag:lag + x.shape[1]]
        dists.append(m.score(x[:, :y.shape[1]], y, sr))
    assert dists[0] < dists[1] < dists[2], dists


def test_visqol_metric_wraps_labeller(music_clip):
    m = get_metric("visqol")
    assert m.info.higher_is_better and m.info.sample_rate == 48000
    x = music_clip("guitar", 1.0, 1.0)
    from deepaq.audio import resample

    clean = m.score(x, x, 48000)
    bad = m.score(resample(x, 48000, 44100), resample(lowpass(x, 3000), 48000, 44100), 44100)
    assert 1.0 <= bad < clean <= 5.0


def test_deepaq_metric(tmp_path, music_clip):
    import torch

    from deepaq.checkpoint import save_checkpoint
    from deepaq.model import QualityModel

    torch.manual_seed(0)
    model = QualityModel(backbone="logmel_cnn", backbone_args={"channels": [4], "n_mels": 16},
                         embed_dim=8)
    ck = save_checkpoint(model, tmp_path / "ck")
    m = get_metric(f"deepaq:{ck}", device="cpu", window_s=1.0)
    assert m.info.higher_is_better is False
    x = music_clip("glock", 1.0, 1.0)
    assert m.score(x, x, 48000)["score"] == 0.0
    r = m.score(x, lowpass(x, 2000), 48000)
    assert r["score"] > 0 and r["mos"] is None
