"""The registry's baselines (lsd, snr, si_sdr, zimtohrli, cdpam) on real music and real MP3."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from deepaq.metrics import available_metrics, get_metric, main_value

HINT = "pip install 'deepaq[baselines]'"


def quality(metric, ref, deg, sr=48000) -> float:
    v = main_value(metric.score(ref, deg, sr))
    return v if metric.info.higher_is_better else -v


def noisy(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(x.shape)
    noise *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def optional(name: str):
    try:
        return get_metric(name)
    except ImportError as exc:
        assert HINT in str(exc)
        pytest.skip(str(exc))


def test_registered():
    assert {"zimtohrli", "cdpam", "lsd", "snr", "si_sdr"} <= set(available_metrics())


@pytest.mark.parametrize("name", ["lsd", "zimtohrli", pytest.param("cdpam", marks=pytest.mark.slow)])
def test_spectral_metrics_order_mp3_bitrates(name, music_clip, mp3_code):
    metric = get_metric(name) if name == "lsd" else optional(name)
    seconds = 1.0 if name == "cdpam" else 2.0  # cdpam's waveform encoder is the slow one
    x = music_clip(seconds=seconds)
    same = quality(metric, x, x.copy())
    q128 = quality(metric, x, mp3_code(x, 128))
    q32 = quality(metric, x, mp3_code(x, 32))
    assert same == pytest.approx(0.0, abs=1e-6)  # identical input: distance 0, the best value
    assert same > q128 > q32


@pytest.mark.parametrize("name", ["snr", "si_sdr"])
def test_waveform_metrics_track_the_added_noise(name, music_clip):
    metric = get_metric(name)
    x = music_clip()
    assert quality(metric, x, x.copy()) == 100.0  # capped, finite
    measured = [quality(metric, x, noisy(x, snr)) for snr in (30.0, 20.0, 10.0)]
    assert measured[0] > measured[1] > measured[2]
    # uncorrelated noise at a known SNR: both read that SNR back
    assert measured == pytest.approx([30.0, 20.0, 10.0], abs=0.05)


def test_snr_and_si_sdr_match_a_direct_computation(music_clip, mp3_code):
    x = music_clip()
    y = 0.7 * mp3_code(x, 64)
    s, d = x.astype(np.float64), y.astype(np.float64)
    snr = 10 * np.log10(np.sum(s ** 2) / np.sum((s - d) ** 2))
    s0 = (s - s.mean(axis=1, keepdims=True)).ravel()
    d0 = (d - d.mean(axis=1, keepdims=True)).ravel()
    alpha = np.linalg.lstsq(s0[:, None], d0, rcond=None)[0][0]  # least-squares projection
    si_sdr = 10 * np.log10(np.sum((alpha * s0) ** 2) / np.sum((alpha * s0 - d0) ** 2))
    assert get_metric("snr").score(x, y, 48000) == pytest.approx(snr, abs=1e-6)
    assert get_metric("si_sdr").score(x, y, 48000) == pytest.approx(si_sdr, abs=1e-6)


def test_si_sdr_is_gain_invariant_and_snr_is_not(music_clip, mp3_code):
    x = music_clip()
    y = mp3_code(x, 64)
    si, snr = get_metric("si_sdr"), get_metric("snr")
    for gain in (0.3, 3.0):
        assert si.score(x, gain * y, 48000) == pytest.approx(si.score(x, y, 48000), abs=1e-4)
    assert snr.score(x, 0.3 * y, 48000) < snr.score(x, y, 48000) - 1.0


def test_lsd_is_rms_db_difference_per_frame(music_clip):
    # a gain of g dB moves every bin by g dB: with the floor out of the way the distance is g;
    # with the default floor (100 dB below the reference's peak) bins under it count less
    x, quieter = music_clip(), music_clip() * 10 ** (-6 / 20)
    assert get_metric("lsd", floor_db=300.0).score(x, quieter, 48000) == pytest.approx(6.0, abs=1e-3)
    assert 0.0 < get_metric("lsd").score(x, quieter, 48000) < 6.0


def test_zimtohrli_mos_falls_with_damage(music_clip, mp3_code):
    metric = optional("zimtohrli")
    x = music_clip()
    same, coded = metric.score(x, x.copy(), 48000), metric.score(x, mp3_code(x, 32), 48000)
    assert same["mos"] > coded["mos"]


def test_missing_packages_give_the_install_hint(monkeypatch):
    import importlib.util
    import sys

    from deepaq.metrics import cdpam

    monkeypatch.setitem(sys.modules, "zimtohrli", None)  # makes "import zimtohrli" fail
    with pytest.raises(ImportError, match=r"pip install 'deepaq\[baselines\]'"):
        get_metric("zimtohrli")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    cdpam.load_model.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install 'deepaq\[baselines\]'"):
            get_metric("cdpam")
    finally:
        monkeypatch.undo()
        cdpam.load_model.cache_clear()


def test_cdpam_weights_loader_refuses_foreign_globals():
    from deepaq.metrics.cdpam import _RestrictedUnpickler

    payload = pickle.dumps(print)  # any global outside the checkpoint's four
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        _RestrictedUnpickler(io.BytesIO(payload)).load()
    from collections import OrderedDict

    assert _RestrictedUnpickler(io.BytesIO(pickle.dumps(OrderedDict(a=1)))).load() == {"a": 1}
