"""Alignment by cross-correlation recovers known shifts of real music."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from deepaq.alignment import (
    ReferenceSignal,
    align_to_reference,
    estimate_lag,
    fit_length,
    shift,
)


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


@pytest.mark.parametrize("lag", [0, 143, -60])
def test_a_polarity_inverted_copy_is_found_at_its_true_lag(music_clip, lag):
    """Inverting a file flips the sign of its correlation peak: the signed peak then lands on some
    other lag, which a scorer would count as damage; ``either_polarity`` finds the true one."""
    ref = music_clip("guitar", seconds=2.0)
    inverted = -_delayed(ref, lag)
    assert estimate_lag(ref, inverted, 4800, either_polarity=True) == lag
    assert estimate_lag(ref, -inverted, 4800, either_polarity=True) == lag


def test_align_to_reference_undoes_the_shift_exactly(music_clip):
    ref = music_clip("guitar", seconds=1.5)
    for lag in (250, -250):
        aligned, found = align_to_reference(ref, _delayed(ref, lag), max_lag=1000)
        assert found == lag
        assert aligned.shape == ref.shape
        inner = slice(300, ref.shape[1] - 300)
        np.testing.assert_array_equal(aligned[:, inner], ref[:, inner])


def test_align_to_reference_of_an_inverted_copy_with_either_polarity(music_clip):
    ref = music_clip("guitar", seconds=1.5)
    aligned, found = align_to_reference(ref, -_delayed(ref, 250), max_lag=1000,
                                        either_polarity=True)
    assert found == 250
    inner = slice(300, ref.shape[1] - 300)
    np.testing.assert_array_equal(aligned[:, inner], -ref[:, inner])


def test_search_window_limits_the_lag(music_clip):
    ref = music_clip("guitar", seconds=1.5)
    deg = _delayed(ref, 900)
    assert estimate_lag(ref, deg, 2000) == 900
    assert abs(estimate_lag(ref, deg, 500)) <= 500


def test_mono_and_1d_inputs(music_clip):
    ref = music_clip("sopr", seconds=1.0)
    deg = _delayed(ref, 40)
    assert estimate_lag(ref.mean(0), deg.mean(0), 100) == 40
    assert estimate_lag(ref.mean(0, keepdims=True), deg, 100) == 40  # one channel vs two


def test_silence_has_no_lag(music_clip):
    ref = music_clip("guitar", seconds=0.5)
    with pytest.raises(ValueError, match="silent"):
        estimate_lag(ref, np.zeros_like(ref), 100)


def _direct_lag(ref: np.ndarray, deg: np.ndarray, max_lag: int) -> int:
    """Oracle: argmax of the full direct (not FFT) correlation of the mono mean-removed signals."""
    a = ref.astype(np.float64).mean(0)
    b = deg.astype(np.float64).mean(0)
    corr = np.correlate(b - b.mean(), a - a.mean(), mode="full")  # lags -(N-1) .. M-1
    lags = np.arange(-(a.size - 1), b.size)
    window = np.abs(lags) <= max_lag
    return int(lags[window][np.argmax(corr[window])])


@pytest.mark.parametrize("ref_s,deg_s,lag,max_lag", [
    (0.25, 0.25, 37, 600),     # same length
    (0.25, 0.40, -120, 600),   # degraded far longer than reference + window: its tail is cut
    (0.25, 0.10, 15, 600),     # degraded shorter than the reference
    (0.02, 0.03, 5, 4800),     # window wider than both signals
])
def test_window_only_correlation_matches_direct_correlation(music_clip, ref_s, deg_s, lag,
                                                            max_lag):
    """Only the window is computed (short FFT, degraded tail dropped): same lag as the oracle."""
    x = music_clip("harpsichord", seconds=1.0)
    rng = np.random.default_rng(1)
    ref = x[:, 4800:4800 + int(ref_s * 48000)]
    deg = _delayed(x, lag)[:, 4800:4800 + int(deg_s * 48000)]
    deg = deg + rng.normal(0, 0.3 * deg.std(), deg.shape).astype(np.float32)
    assert estimate_lag(ref, deg, max_lag) == _direct_lag(ref, deg, max_lag)


def test_degraded_tail_out_of_reach_of_the_window_is_ignored(music_clip):
    """A loud copy of the reference's head placed after N + max_lag cannot pull the peak (no lag
    can reach it), though it would if the short FFT let it wrap around to negative lags."""
    ref = music_clip("strauss", seconds=0.25)
    n, k = ref.shape[1], 400  # N + 2k = 12800 is already a fast FFT size: the tail would wrap
    deg = np.zeros((2, n + 3 * k), np.float32)
    deg[:, :n] = _delayed(ref, -100)
    deg[:, n + k:] = 100 * ref[:, : 2 * k]
    assert estimate_lag(ref, deg, k) == _direct_lag(ref, deg, k) == -100


@pytest.mark.parametrize("weaker", [-290, 10])
def test_near_tie_is_settled_in_float64(music_clip, weaker):
    """Two echoes whose correlations differ by 1e-9 (float32 cannot tell): the stronger wins."""
    clip = music_clip("harpsichord", seconds=0.25).astype(np.float64)
    clip -= clip.mean(axis=1, keepdims=True)  # zero mean, so the padding stays zero after removal
    ref = np.pad(clip, ((0, 0), (400, 400)))  # and the shifts below lose no samples
    a, b = 1.0, 1.0 - 1e-9
    if weaker == 10:
        a, b = b, a
    deg = a * np.roll(ref, 10, axis=1) + b * np.roll(ref, -290, axis=1)
    expected = -290 if weaker == 10 else 10
    assert _direct_lag(ref, deg, 600) == expected
    assert estimate_lag(ref, deg, 600) == expected


def test_float64_fallback_gives_the_same_lags(music_clip, monkeypatch):
    """With every lag sent to the float64 path (as for a near-flat correlation), same answers."""
    from deepaq import alignment

    ref = music_clip("contrabassoon", seconds=0.5)
    degs = [_delayed(ref, lag) for lag in (-250, 0, 7)]
    fast = [estimate_lag(ref, d, 600) for d in degs]
    monkeypatch.setattr(alignment, "SETTLE_MAX_LAGS", 0)
    assert [estimate_lag(ref, d, 600) for d in degs] == fast == [-250, 0, 7]


@pytest.mark.parametrize("lag", [-731, 0, 17])
def test_numpy_and_scipy_fft_give_the_same_lag(music_clip, monkeypatch, lag):
    """The FFT backend depends on what is imported; the settled lag must not."""
    from scipy import fft as scipy_fft

    from deepaq import alignment

    ref = music_clip("contrabassoon", seconds=1.0)
    deg = signal.sosfiltfilt(signal.butter(4, 3000, fs=48000, output="sos"), _delayed(ref, lag))
    found = []
    for backend in (np.fft, scipy_fft):
        monkeypatch.setattr(alignment, "_fft", lambda b=backend: b)
        found.append(estimate_lag(ReferenceSignal(ref), deg, 4800))
    assert found == [lag, lag]


def test_reference_signal_is_reused_and_gives_the_same_lags(music_clip):
    ref = music_clip("moonlight", seconds=1.0)
    prepared = ReferenceSignal(ref)
    for lag in (0, 9, -300):
        deg = _delayed(ref, lag)
        assert estimate_lag(prepared, deg, 4800) == estimate_lag(ref, deg, 4800) == lag
        aligned, found = align_to_reference(prepared, deg, 4800)
        assert found == lag and aligned.shape == ref.shape
    assert len(prepared._spectra) == 1  # one FFT of the reference served every search
    estimate_lag(prepared, ref, 100)
    assert len(prepared._spectra) == 2  # another window needs another FFT size


def test_shift_and_fit_length_pad_and_trim():
    x = np.arange(1, 11, dtype=np.float32)[None]
    np.testing.assert_array_equal(fit_length(x, 4), x[:, :4])
    assert fit_length(x, 12)[0, 10:].tolist() == [0, 0]
    np.testing.assert_array_equal(shift(x, 2, 10)[0], [3, 4, 5, 6, 7, 8, 9, 10, 0, 0])
    np.testing.assert_array_equal(shift(x, -2, 10)[0], [0, 0, 1, 2, 3, 4, 5, 6, 7, 8])


def test_fit_length_cuts_or_pads_one_channel_like_many():
    """One rule for mono (N,) and (C, N) audio: the scorer's windows are 1-D, the corpus's 2-D."""
    x = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(x, 4), x[:4])
    assert fit_length(x, 12).tolist() == [*x.tolist(), 0, 0]
    assert fit_length(x, 12).dtype == x.dtype
    stereo = np.stack([x, -x])
    for n in (4, 10, 12):
        np.testing.assert_array_equal(fit_length(stereo, n)[1], -fit_length(x, n))
