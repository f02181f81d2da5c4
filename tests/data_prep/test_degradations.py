"""Every distortion family's ladder is ordered on real music, and what is measured matches what
was asked; invariances are exactly (or very nearly) what they claim."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from data_prep.degradations import (
    available,
    cutoff_hz,
    delay_samples,
    get_degradation,
    power,
    register_degradation,
)
from data_prep.separation import MASK_TYPES, bss_eval_gain

SR = 48000


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def apply(name: str, x: np.ndarray, level: float, **kwargs):
    return get_degradation(name).apply(x, SR, level, rng(), **kwargs)


def test_registry_kinds():
    assert {"resample_bandlimit", "lowpass", "noise_white"} <= set(available("family"))
    assert set(available("invariance")) == {"gain", "polarity", "resample_roundtrip", "delay"}
    assert set(available("separation")) == {"interference", "artefacts",
                                            "interference+artefacts"}
    for name in available("invariance"):
        assert get_degradation(name).higher_is_better is None
    for name in available("family") + available("separation"):
        assert isinstance(get_degradation(name).higher_is_better, bool)
    with pytest.raises(ValueError, match="invariances"):
        register_degradation("bad", unit="dB", higher_is_better=True, jnd=0.0,
                             kind="invariance")
    with pytest.raises(ValueError, match="kind"):
        register_degradation("bad", unit="dB", higher_is_better=True, jnd=0.0, kind="codec")


def test_noise_snr_is_measured_as_asked(music_clip):
    x = music_clip()
    for name in ("noise_white", "noise_pink"):
        got = [apply(name, x, lv).measures["snr_db"] for lv in (0, 10, 20, 30)]
        # exact by construction (the noise gain is set from the same powers), up to rounding
        np.testing.assert_allclose(got, [0, 10, 20, 30], atol=2e-3)


def test_band_limits_are_measured_where_asked(music_clip):
    x = music_clip()
    lows = [apply("lowpass", x, f).measures["cutoff_hz"] for f in (2000, 4000, 8000, 12000)]
    # zero-phase Butterworth: the power ratio is exactly -6 dB at the design frequency; the
    # spectrum estimate (Welch, 5.9 Hz bins) puts the crossing within 0.2 %
    np.testing.assert_allclose(lows, [2000, 4000, 8000, 12000], rtol=2e-3)
    rates = [8000, 16000, 22050, 32000]
    cut = [apply("resample_bandlimit", x, r).measures["cutoff_hz"] for r in rates]
    assert cut == sorted(cut)
    # soxr's high-quality filter passes 95 % of the intermediate Nyquist frequency
    ratio = np.array(cut) / (np.array(rates) / 2)
    assert np.all((ratio > 0.90) & (ratio < 1.0)), ratio
    # and nothing above the new Nyquist frequency survives
    y = apply("resample_bandlimit", x, 16000).audio
    w = np.hanning(x.shape[1])
    spec_x = np.abs(np.fft.rfft(w * x.sum(0))) ** 2
    spec_y = np.abs(np.fft.rfft(w * y.sum(0))) ** 2
    f = np.fft.rfftfreq(x.shape[1], 1 / SR)
    assert spec_y[f > 8500].sum() < 1e-5 * spec_x[f > 8500].sum()


def test_cutoff_of_untouched_audio_is_nyquist(music_clip):
    x = music_clip()
    assert cutoff_hz(x, x, SR) == SR / 2


def test_interference_sir_is_what_was_asked(music_clip):
    target, other = music_clip("guitar"), music_clip("sopr")
    for sir in (-5, 0, 10, 20, 30):
        m = apply("interference", target, sir, others=other).measures
        # BSS-Eval projects the estimate on the target; the two recordings are nearly
        # uncorrelated, so the projection moves the SIR by much less than 0.1 dB
        assert m["sir_db"] == pytest.approx(sir, abs=0.1)
        assert m["sar_db"] > 100.0            # purely additive: no artefacts
    with pytest.raises(ValueError, match="others"):
        apply("interference", target, 10)


@pytest.mark.parametrize("mask", MASK_TYPES)
def test_artefacts_ladder_is_ordered(music_clip, mask):
    target, other = music_clip("guitar"), music_clip("sopr")
    levels = [0.0, 1 / 3, 2 / 3, 1.0]
    ms = [apply("artefacts", target, lv, others=other, mask=mask).measures for lv in levels]
    sdr = [m["sdr_db"] for m in ms]
    assert all(a > b for a, b in pairwise(sdr)), sdr
    assert sdr[0] - sdr[-1] > 3.0, sdr
    assert {m["mask_type"] for m in ms} == {mask}
    if mask != "smoothed":          # a blurred mask leaks the others in: interference, not SAR
        sar = [m["sar_db"] for m in ms]
        assert sar[0] - sar[-1] > 3.0, sar


def test_interference_plus_artefacts_ladder_is_ordered(music_clip):
    target, other = music_clip("guitar"), music_clip("sopr")
    ms = [apply("interference+artefacts", target, lv, others=other, mask="noisy").measures
          for lv in (0.0, 1 / 3, 2 / 3, 1.0)]
    for k in ("sdr_db", "sir_db"):
        v = [m[k] for m in ms]
        assert all(a > b for a, b in pairwise(v)), (k, v)


def test_bss_eval_splits_known_parts(music_clip):
    target, other = music_clip("guitar"), music_clip("sopr")
    noise = rng(1).standard_normal(target.shape).astype(np.float32) * 0.01
    m = bss_eval_gain(target + 0.1 * other + noise, target, [other])
    assert m["sir_db"] == pytest.approx(10 * np.log10(power(target) / power(0.1 * other)), abs=0.2)
    assert m["sar_db"] == pytest.approx(
        10 * np.log10(power(target + 0.1 * other) / power(noise)), abs=0.2)


# -- invariances --------------------------------------------------------------------------------

def test_gain_and_polarity_are_exact(music_clip):
    x = music_clip()
    for db in (-10, -3, 6):
        np.testing.assert_array_equal(apply("gain", x, db).audio,
                                      x * np.float32(10 ** (db / 20)))
    np.testing.assert_array_equal(apply("polarity", x, -1).audio, -x)
    with pytest.raises(ValueError, match="polarity"):
        apply("polarity", x, 0.5)


def test_delay_is_exact_in_samples(music_clip):
    x = music_clip()
    for ms in (0.5, 2.0, 5.0, -1.0):
        d = delay_samples(ms, SR)
        y = apply("delay", x, ms).audio
        assert y.shape == x.shape
        if d > 0:
            np.testing.assert_array_equal(y[:, d:], x[:, :-d])
            assert not y[:, :d].any()
        else:
            np.testing.assert_array_equal(y[:, :d], x[:, -d:])
    assert delay_samples(2.0, SR) == 96


def test_resample_round_trip_is_close(music_clip):
    x = music_clip()
    d = apply("resample_roundtrip", x, 44100)
    assert d.measures["cutoff_hz"] > 20000      # the band limit sits above hearing
    # below 20 kHz the round trip is the original to within -60 dB
    from scipy.signal import butter, sosfiltfilt

    sos = butter(8, 19000, fs=SR, output="sos")
    a, b = sosfiltfilt(sos, x, axis=-1), sosfiltfilt(sos, d.audio, axis=-1)
    err = 10 * np.log10(np.mean((a - b) ** 2) / np.mean(a ** 2))
    assert err < -60, err
