"""Alignment by cross-correlation recovers known shifts of real music."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from data_prep.alignment import align_to_reference, estimate_lag, fit_length, shift


def _delayed(x: np.ndarray, lag: int) -> np.ndarray:
    """``x`` delayed by ``lag`` samples (early by -lag), same length, zero filled."""
    out = np.zeros_like(x)
    if lag >= 0:
        out[:, lag:] = x[:, : x.shape[1] - lag]
    else:
        out[:, :lag] = x[:, -lag:]
    return out


@pytest.mark.parametrize("lag", [-731, -3, 0, 1, 17, 2400])
def test_recovers_planted_shift_on_music(music_clip, lag):
    ref = music_clip("castanets", seconds=2.0)
    # A coloured, noisy copy (lowpass + noise at ~20 dB SNR), like a low-bitrate codec's output.
    rng = np.random.default_rng(0)
    sos = signal.butter(6, 6000, fs=48000, output="sos")
    deg = signal.sosfiltfilt(sos, ref).astype(np.float32)  # zero phase: adds no delay of its own
    deg += rng.normal(0, 0.1 * deg.std(), deg.shape).astype(np.float32)
    deg = _delayed(deg, lag)
    assert estimate_lag(ref, deg, 4800) == lag


def test_align_to_reference_undoes_the_shift_exactly(music_clip):
    ref = music_clip("guitar", seconds=1.5)
    for lag in (250, -250):
        aligned, found = align_to_reference(ref, _delayed(ref, lag), max_lag=1000)
        assert found == lag
        assert aligned.shape == ref.shape
        inner = slice(300, ref.shape[1] - 300)
        np.testing.assert_array_equal(aligned[:, inner], ref[:, inner])


def test_search_window_limits_the_lag(music_clip):
    ref = music_clip("guitar", seconds=1.5)
    deg = _delayed(ref, 900)
    assert estimate_lag(ref, deg, 2000) == 900
    assert abs(estimate_lag(ref, deg, 500)) <= 500


def test_mono_and_1d_inputs(music_clip):
    ref = music_clip("sopr", seconds=1.0)
    deg = _delayed(ref, 40)
    assert estimate_lag(ref.mean(0), deg.mean(0), 100) == 40
    assert estimate_lag(ref[:1], deg, 100) == 40


def test_silence_has_no_lag(music_clip):
    ref = music_clip("guitar", seconds=0.5)
    with pytest.raises(ValueError, match="silent"):
        estimate_lag(ref, np.zeros_like(ref), 100)


def test_shift_and_fit_length_pad_and_trim():
    x = np.arange(1, 11, dtype=np.float32)[None]
    np.testing.assert_array_equal(fit_length(x, 4), x[:, :4])
    assert fit_length(x, 12)[0, 10:].tolist() == [0, 0]
    np.testing.assert_array_equal(shift(x, 2, 10)[0], [3, 4, 5, 6, 7, 8, 9, 10, 0, 0])
    np.testing.assert_array_equal(shift(x, -2, 10)[0], [0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
