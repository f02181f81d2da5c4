"""Parametric degradations for weak labels: a small registry of ``f(audio, sr, level, rng)``.

Why: a weak label only needs a knob whose setting orders quality. Each degradation here takes a
(C, N) float32 clip at ``sr`` Hz, a ``level`` (its knob, in the unit of :class:`Degradation`)
and a numpy ``Generator`` (all randomness comes from it, so a seed reproduces the output), and
returns the degraded clip with the same shape. ``higher_is_better`` says which way the knob
points (a higher SNR is better, a higher clipping level is better, a higher loss rate is worse),
and ``jnd`` is a default just-noticeable difference of the knob, used to label pairs.

Adding a degradation is one decorated function::

    from data_prep.degradations import register_degradation

    @register_degradation("mu_law", unit="bits", higher_is_better=True, jnd=1.0)
    def mu_law(audio, sr, level, rng):
        ...return degraded audio, same shape...

and it is at once usable by ``deepaq-prep jnd --degradation mu_law --levels 4,6,8``. A user's
noise recordings become a degradation with :func:`register_noise_folder`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DegradeFn = Callable[[np.ndarray, int, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Degradation:
    name: str
    fn: DegradeFn
    unit: str
    higher_is_better: bool
    jnd: float
    description: str = ""

    def __call__(self, audio: np.ndarray, sr: int, level: float,
                 rng: np.random.Generator) -> np.ndarray:
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"{self.name}: audio must be (channels, samples), got {x.shape}")
        out = np.asarray(self.fn(x, int(sr), float(level), rng), dtype=np.float32)
        if out.shape != x.shape:
            raise ValueError(f"{self.name}: changed the shape {x.shape} -> {out.shape}")
        return out


_REGISTRY: dict[str, Degradation] = {}


def register_degradation(name: str, unit: str, higher_is_better: bool, jnd: float,
                         description: str = "") -> Callable[[DegradeFn], DegradeFn]:
    """Decorator adding ``fn(audio, sr, level, rng) -> audio`` to the registry under ``name``."""

    def deco(fn: DegradeFn) -> DegradeFn:
        _REGISTRY[name] = Degradation(name, fn, unit, higher_is_better, float(jnd),
                                      description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


def get_degradation(name: str) -> Degradation:
    if name not in _REGISTRY:
        raise ValueError(f"unknown degradation {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def available() -> list[str]:
    return sorted(_REGISTRY)


# -- noise ---------------------------------------------------------------------------------------

def power(x: np.ndarray) -> float:
    """Mean square over all channels and samples."""
    return float(np.mean(np.square(x, dtype=np.float64)))


def mix_at_snr(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``audio + g * noise`` with g chosen so that 10 log10(P_audio / P_{g noise}) = snr_db
    (powers over all channels)."""
    p_sig, p_noise = power(audio), power(noise)
    if p_sig <= 0 or p_noise <= 0:
        raise ValueError("cannot set an SNR for silent audio or silent noise")
    gain = np.sqrt(p_sig / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (audio + gain * noise).astype(np.float32)


def pink_noise(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """1/f-power noise by spectral shaping of white noise (flat below 20 Hz-equivalent bin 1)."""
    c, n = shape
    spec = np.fft.rfft(rng.standard_normal((c, n)), axis=-1)
    f = np.arange(spec.shape[-1], dtype=np.float64)
    f[0] = 1.0
    spec = spec / np.sqrt(f)
    return np.fft.irfft(spec, n=n, axis=-1).astype(np.float32)


@register_degradation("noise_white", unit="dB SNR", higher_is_better=True, jnd=2.0)
def noise_white(audio: np.ndarray, sr: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise at ``level`` dB SNR."""
    return mix_at_snr(audio, rng.standard_normal(audio.shape).astype(np.float32), level)


@register_degradation("noise_pink", unit="dB SNR", higher_is_better=True, jnd=2.0)
def noise_pink(audio: np.ndarray, sr: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """Additive pink (1/f) noise at ``level`` dB SNR."""
    return mix_at_snr(audio, pink_noise(audio.shape, rng), level)


def register_noise_folder(folder: str | os.PathLike, name: str | None = None,
                          jnd: float = 2.0) -> str:
    """Register ``noise_<folder name>``: a random excerpt of a random file of ``folder`` (looped
    when shorter, resampled, channel-matched) added at ``level`` dB SNR. Returns the name."""
    from deepaq.audio import AUDIO_EXTENSIONS, AudioError, load_audio

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise AudioError(folder, "no audio files in the noise folder")
    name = name or f"noise_{folder.name}"

    def noise_from_folder(audio: np.ndarray, sr: int, level: float,
                          rng: np.random.Generator) -> np.ndarray:
        path = files[int(rng.integers(len(files)))]
        noise = load_audio(path, sample_rate=sr, channels="mono")[0]
        if noise.size == 0:
            raise AudioError(path, "empty noise file")
        n = audio.shape[1]
        reps = -(-n // noise.size) + 1
        start = int(rng.integers(noise.size))
        noise = np.tile(noise, reps)[start:start + n]
        return mix_at_snr(audio, np.broadcast_to(noise, audio.shape).copy(), level)

    register_degradation(name, unit="dB SNR", higher_is_better=True, jnd=jnd,
                         description=f"noise from {folder}")(noise_from_folder)
    return name


# -- other degradations: each is one small function ----------------------------------------------

@register_degradation("lowpass", unit="Hz", higher_is_better=True, jnd=500.0)
def lowpass(audio: np.ndarray, sr: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """8th-order Butterworth low-pass at ``level`` Hz (zero-phase)."""
    from scipy.signal import butter, sosfiltfilt

    if level >= sr / 2:
        return audio.copy()
    sos = butter(8, level, btype="low", fs=sr, output="sos")
    return sosfiltfilt(sos, audio, axis=-1).astype(np.float32)


@register_degradation("clipping", unit="dBFS below peak", higher_is_better=False, jnd=1.0)
def clipping(audio: np.ndarray, sr: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """Hard clipping at ``level`` dB below the clip's peak (0 = untouched; more = worse)."""
    peak = float(np.max(np.abs(audio)))
    threshold = peak * 10.0 ** (-abs(level) / 20.0)
    return np.clip(audio, -threshold, threshold).astype(np.float32)


@register_degradation("packet_loss", unit="% packets", higher_is_better=False, jnd=2.0)
def packet_loss(audio: np.ndarray, sr: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """Zero out 20 ms packets at random with probability ``level`` % (with 2.5 ms fades)."""
    out = audio.copy()
    packet = max(1, int(0.02 * sr))
    fade = max(1, int(0.0025 * sr))
    ramp = np.linspace(1.0, 0.0, fade, dtype=np.float32)
    n_packets = -(-audio.shape[1] // packet)
    lost = rng.random(n_packets) < level / 100.0
    for k in np.flatnonzero(lost):
        a, b = k * packet, min((k + 1) * packet, audio.shape[1])
        out[:, a:b] = 0.0
        if a >= fade:
            out[:, a - fade:a] *= ramp
        if b + fade <= audio.shape[1] and not (k + 1 < n_packets and lost[k + 1]):
            out[:, b:b + fade] *= ramp[::-1]
    return out


@register_degradation("reverb", unit="s RT60", higher_is_better=False, jnd=0.2)
def reverb(audio: np.ndarray, sr: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """Convolution with exponentially decaying noise (RT60 = ``level`` s), 50 % wet, level kept."""
    from scipy.signal import fftconvolve

    if level <= 0:
        return audio.copy()
    n = int(level * sr)
    t = np.arange(n) / sr
    ir = rng.standard_normal(n) * 10.0 ** (-3.0 * t / level)      # -60 dB at t = RT60
    ir /= np.sqrt(np.sum(ir ** 2))
    wet = fftconvolve(audio, ir[None, :].astype(np.float32), axes=-1)[:, :audio.shape[1]]
    out = 0.5 * audio + 0.5 * wet
    return (out * np.sqrt(power(audio) / max(power(out), 1e-20))).astype(np.float32)
