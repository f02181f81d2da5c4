"""Make rendered music sound recorded: a room and a noise floor.

Why: fluidsynth's renders are dry and noiseless, and ViSQOL judges such music unlike real
recordings. On dry renders it mostly orders Opus by bitrate; on the 10 real recordings in
``../shared`` it rates Opus at 16 kbps above 32 kbps for 9 of them, and a room or a noise floor
alone makes it do the same on renders (``benchmarks/bench_render_realism.py``). A corpus meant
to show a metric how ViSQOL judges real recordings needs them (whether a model then learns it
is another matter: the default model's card has what the shipped recipe made of it).

Both are seeded (same seed, same samples) and keep the signal's length and RMS level.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 48000


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def add_room(x: np.ndarray, rt60_s: float, wet: float = 0.3, seed: int = 0,
             sample_rate: int = SAMPLE_RATE, predelay_s: float = 0.01) -> np.ndarray:
    """Mix ``x`` (C, N) with its reverberation in a diffuse room of reverberation time ``rt60_s``.

    The impulse response of each channel is independent Gaussian noise under an exponential decay
    of 60 dB per ``rt60_s`` (a diffuse late field; independent channels also widen the image).
    ``wet`` is the reverberant share of the output's power (0.5: direct and reverberant sound
    equally loud); the output has ``x``'s RMS level.
    """
    from scipy.signal import fftconvolve

    if rt60_s <= 0 or wet <= 0:
        return x
    if not 0 < wet <= 1:
        raise ValueError(f"room wet share must be in (0, 1], got {wet}")
    rng = np.random.default_rng(seed)
    t = np.arange(round(rt60_s * sample_rate)) / sample_rate
    decay = np.exp(-np.log(1000.0) * t / rt60_s)                 # -60 dB at rt60_s
    lead = round(predelay_s * sample_rate)
    wet_part = np.empty(x.shape, dtype=np.float64)
    for c in range(x.shape[0]):
        ir = np.concatenate([np.zeros(lead), rng.standard_normal(t.size) * decay])
        wet_part[c] = fftconvolve(x[c].astype(np.float64), ir)[:x.shape[1]]
    level, wet_level = _rms(x), _rms(wet_part)
    if level == 0.0 or wet_level == 0.0:
        return x
    dry_part = x.astype(np.float64) / level
    mixed = np.sqrt(1.0 - wet) * dry_part + np.sqrt(wet) * wet_part / wet_level
    return (mixed * (level / _rms(mixed))).astype(x.dtype)


def add_noise_floor(x: np.ndarray, snr_db: float, seed: int = 0,
                    sample_rate: int = SAMPLE_RATE, corner_hz: float = 1000.0) -> np.ndarray:
    """Add a noise floor ``snr_db`` below ``x``'s RMS level: independent per channel, its
    spectrum falling 6 dB per octave above ``corner_hz`` to a flat floor 20 dB down (room,
    microphone and preamp noise rather than white hiss)."""
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(seed)
    white = rng.standard_normal(x.shape)
    sos = butter(1, corner_hz, "low", fs=sample_rate, output="sos")
    noise = sosfilt(sos, white, axis=-1) + 0.1 * white
    level = _rms(x)
    if level == 0.0:
        return x
    noise *= level / _rms(noise) * 10 ** (-snr_db / 20)
    return (x + noise).astype(x.dtype)


__all__ = ["add_noise_floor", "add_room"]
