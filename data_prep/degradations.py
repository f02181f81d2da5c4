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

and it is at once usable by ``deepaq-prep jnd --degradation mu_law --levels 4,6,8`` and in the
``degradations:`` section of a ``deepaq-prep build`` grid. A user's noise recordings become a
degradation with :func:`register_noise_folder`.

Three kinds share the registry (``Degradation.kind``):

- ``family``: a distortion whose knob orders quality (noise by SNR, low-pass and band-limited
  resampling by frequency, clipping, packet loss, reverberation);
- ``invariance``: a change listeners do not hear (gain, polarity, a resampling round trip, a small
  delay): ``level`` is its parameter, no order is expected and ``higher_is_better`` is None, a
  metric should score them as (near) clean;
- ``separation``: source-separation output made from a target and its interferers
  (``data_prep.separation``: ``interference``, ``artefacts``, ``interference+artefacts``); they take
  ``others=`` (the other stems, or any other recording) and measure SDR/SIR/SAR themselves.

:meth:`Degradation.apply` returns the degraded audio with what was measured on it (``snr_db``,
``cutoff_hz``, ``sir_db``, ...: the names of :data:`deepaq.manifest.MEASURE_FIELDS`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DegradeFn = Callable[..., np.ndarray]
MeasureFn = Callable[[np.ndarray, np.ndarray, int, float], dict]
KINDS = ("family", "invariance", "separation")


@dataclass(frozen=True)
class Degraded:
    """A degraded clip and what was measured on it (keys: ``deepaq.manifest.MEASURE_FIELDS``)."""

    audio: np.ndarray
    measures: dict = field(default_factory=dict)
    clipped: int = 0  # samples that ``limit`` clipped (the measures describe the clipped audio)


@dataclass(frozen=True)
class Degradation:
    name: str
    fn: DegradeFn
    unit: str
    higher_is_better: bool | None
    jnd: float
    description: str = ""
    kind: str = "family"
    measure: MeasureFn | None = None

    @property
    def is_invariance(self) -> bool:
        return self.kind == "invariance"

    @property
    def needs_others(self) -> bool:
        return self.kind == "separation"

    def __call__(self, audio: np.ndarray, sr: int, level: float,
                 rng: np.random.Generator, **kwargs) -> np.ndarray:
        return self._run(audio, sr, level, rng, **kwargs)[1]

    def apply(self, audio: np.ndarray, sr: int, level: float, rng: np.random.Generator,
              others: np.ndarray | list[np.ndarray] | None = None, limit: float | None = None,
              **options) -> Degraded:
        """Degrade ``audio`` (C, N); separation kinds also need ``others`` (one (C, N) array or a
        list of them: the interferers) and take their ``options`` (e.g. ``mask=``). ``limit``
        clips the output to +-limit before measuring (as a fixed-point file will store it)."""
        x, out, measures, clipped = self._run(audio, sr, level, rng, others, limit, **options)
        if measures is None:
            measures = self.measure(x, out, int(sr), float(level)) if self.measure else {}
        return Degraded(out, dict(measures), clipped)

    def _run(self, audio: np.ndarray, sr: int, level: float, rng: np.random.Generator,
             others: np.ndarray | list[np.ndarray] | None = None, limit: float | None = None,
             **options) -> tuple[np.ndarray, np.ndarray, dict | None, int]:
        """(input clip, degraded clip, the separation kinds' own measures or None, clipped
        samples): :meth:`apply` without the measuring, which only it does."""
        x = _as_clip(self.name, audio)
        if self.needs_others:
            if others is None:
                raise ValueError(f"{self.name}: needs others= (the interfering stems or another "
                                 "recording)")
            others = [_as_clip(self.name, o, x.shape) for o in
                      (others if isinstance(others, (list, tuple)) else [others])]
            out, measures = self.fn(x, others, int(sr), float(level), rng, limit=limit,
                                    **options)
        else:
            if others is not None or options:
                raise ValueError(f"{self.name}: takes no others= or options "
                                 f"{sorted(options)}")
            out, measures = self.fn(x, int(sr), float(level), rng), None
        out = np.asarray(out, dtype=np.float32)
        if out.shape != x.shape:
            raise ValueError(f"{self.name}: changed the shape {x.shape} -> {out.shape}")
        clipped = 0 if limit is None else int(np.count_nonzero(np.abs(out) > limit))
        if clipped:
            out = np.clip(out, -limit, limit)
        return x, out, measures, clipped


def level_tag(level: float) -> str:
    """A level as a file-name fragment: ``-6`` -> ``m6``, ``0.25`` -> ``0p25``."""
    return f"{level:g}".replace("-", "m").replace(".", "p")


def _as_clip(name: str, audio: np.ndarray, shape: tuple | None = None) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"{name}: audio must be (channels, samples), got {x.shape}")
    if shape is not None and x.shape != shape:
        raise ValueError(f"{name}: others must have the target's shape {shape}, got {x.shape}")
    return x


_REGISTRY: dict[str, Degradation] = {}


def register_degradation(name: str, unit: str, higher_is_better: bool | None, jnd: float,
                         description: str = "", kind: str = "family",
                         measure: MeasureFn | None = None) -> Callable[[DegradeFn], DegradeFn]:
    """Decorator adding ``fn(audio, sr, level, rng) -> audio`` to the registry under ``name``.

    ``kind="invariance"`` marks a transparent change (``higher_is_better`` must be None);
    ``kind="separation"`` takes ``fn(target, others, sr, level, rng, **options) -> (audio,
    measures)``. ``measure(clean, degraded, sr, level) -> dict`` adds measured quantities.
    """
    if kind not in KINDS:
        raise ValueError(f"degradation {name!r}: kind must be one of {KINDS}, got {kind!r}")
    if (kind == "invariance") != (higher_is_better is None):
        raise ValueError(f"degradation {name!r}: invariances (and only they) have "
                         "higher_is_better=None")

    def deco(fn: DegradeFn) -> DegradeFn:
        _REGISTRY[name] = Degradation(name, fn, unit, higher_is_better, float(jnd),
                                      description or (fn.__doc__ or "").strip().split("\n")[0],
                                      kind, measure)
        return fn

    return deco


def get_degradation(name: str) -> Degradation:
    if name not in _REGISTRY:
        raise ValueError(f"unknown degradation {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def available(kind: str | None = None) -> list[str]:
    """Registered names, optionally only one kind (``family``, ``invariance``, ``separation``)."""
    return sorted(n for n, d in _REGISTRY.items() if kind is None or d.kind == kind)


def ladder(name: str, audio: np.ndarray, sr: int, levels: list[float], seed: int = 0,
           others: np.ndarray | list[np.ndarray] | None = None, limit: float | None = None,
           **options) -> list[Degraded]:
    """``audio`` degraded by ``name`` at each of ``levels`` (seeded per level), e.g. for a sanity
    check of a metric: ``ladder("interference", song, 48000, [0, 6, 12], others=other_song)``."""
    deg = get_degradation(name)
    return [deg.apply(audio, sr, lv, np.random.default_rng([seed, k]), others=others,
                      limit=limit, **options) for k, lv in enumerate(levels)]


# -- measurements ---------------------------------------------------------------------------------

def power(x: np.ndarray) -> float:
    """Mean square over all channels and samples."""
    return float(np.mean(np.square(x, dtype=np.float64)))


def ratio_db(signal_power: float, other_power: float) -> float:
    """10 log10 of a power ratio; +inf when the other part is exactly zero."""
    if other_power <= 0.0:
        return math.inf
    if signal_power <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_power / other_power)


def measure_snr(clean: np.ndarray, degraded: np.ndarray, sr: int, level: float) -> dict:
    """SNR of the added part: the degraded clip minus the clean one counts as noise."""
    d = degraded.astype(np.float64) - clean
    return {"snr_db": round(ratio_db(power(clean), power(d)), 3)}


def cutoff_hz(clean: np.ndarray, degraded: np.ndarray, sr: int, drop_db: float = 6.0,
              floor_db: float = 80.0, nperseg: int = 8192) -> float | None:
    """The lowest frequency (above 100 Hz) where the degraded clip's power spectrum falls
    ``drop_db`` below the clean one's: the band limit a listener gets, measured from the audio
    rather than taken from the filter design. Bins where the clean clip has next to no energy
    (more than ``floor_db`` below its spectral peak, where a resampler's own noise floor would
    decide) are ignored. Returns sr / 2 when nothing is cut, None when nothing is cut but the
    clip has no content near Nyquist (a cut above its content cannot be measured)."""
    from scipy.signal import welch

    _, p_clean = welch(clean.astype(np.float64), fs=sr, nperseg=nperseg, axis=-1)
    freqs, p_deg = welch(degraded.astype(np.float64), fs=sr, nperseg=nperseg, axis=-1)
    p_clean, p_deg = p_clean.sum(axis=0), p_deg.sum(axis=0)
    usable = (p_clean > p_clean.max() * 10 ** (-floor_db / 10)) & (freqs >= 100.0)
    f = freqs[usable]
    drop = 10 * np.log10(np.maximum(p_deg[usable], 1e-300) / p_clean[usable])
    below = np.flatnonzero(drop < -drop_db)
    if below.size == 0:
        # nothing cut where the clip has content; if that content ends well below Nyquist, a
        # cut above it could not be seen: unknown
        return float(sr / 2) if f.size and f[-1] >= 0.9 * sr / 2 else None
    k = int(below[0])
    if k == 0:
        return float(f[0])
    # linear interpolation of the crossing between the last bin above and the first below
    a, b = drop[k - 1], drop[k]
    return float(f[k - 1] + (f[k] - f[k - 1]) * (a + drop_db) / (a - b))


def measure_cutoff(clean: np.ndarray, degraded: np.ndarray, sr: int, level: float) -> dict:
    f = cutoff_hz(clean, degraded, sr)
    return {"cutoff_hz": None if f is None else round(f, 1)}


# -- noise ---------------------------------------------------------------------------------------


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


@register_degradation("noise_white", unit="dB SNR", higher_is_better=True, jnd=2.0,
                       measure=measure_snr)
def noise_white(audio: np.ndarray, sr: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise at ``level`` dB SNR."""
    return mix_at_snr(audio, rng.standard_normal(audio.shape).astype(np.float32), level)


@register_degradation("noise_pink", unit="dB SNR", higher_is_better=True, jnd=2.0,
                       measure=measure_snr)
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
                         description=f"noise from {folder}", measure=measure_snr)(noise_from_folder)
    return name


# -- other degradations: each is one small function ----------------------------------------------

@register_degradation("lowpass", unit="Hz", higher_is_better=True, jnd=500.0,
                       measure=measure_cutoff)
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


@register_degradation("resample_bandlimit", unit="Hz sample rate", higher_is_better=True,
                      jnd=2000.0, measure=measure_cutoff)
def resample_bandlimit(audio: np.ndarray, sr: int, level: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Down to ``level`` Hz and back up (soxr, high quality): everything above about ``level`` / 2
    is gone, as in a narrow-band path (telephone 8 kHz, wide-band 16 kHz, 22.05 kHz ...)."""
    if level >= sr:
        return audio.copy()
    return round_trip(audio, sr, round(level))


def round_trip(audio: np.ndarray, sr: int, via: int) -> np.ndarray:
    """``audio`` resampled to ``via`` Hz and back to ``sr``, cut or padded to its length."""
    from deepaq.alignment import fit_length
    from deepaq.audio import resample

    return fit_length(resample(resample(audio, sr, via), via, sr), audio.shape[1])


# -- invariances: changes listeners do not hear (level = the parameter, no order) -----------------

@register_degradation("gain", unit="dB", higher_is_better=None, jnd=0.0, kind="invariance")
def gain(audio: np.ndarray, sr: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """The whole clip ``level`` dB louder (negative: quieter); playback level is the listener's."""
    return (audio * np.float32(10.0 ** (level / 20.0))).astype(np.float32)


@register_degradation("polarity", unit="sign", higher_is_better=None, jnd=0.0, kind="invariance")
def polarity(audio: np.ndarray, sr: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """Multiply by ``level`` = -1 (inverted polarity) or +1 (unchanged): inaudible on music."""
    if abs(level) != 1.0:
        raise ValueError(f"polarity: level must be -1 or 1, got {level:g}")
    return audio * np.float32(level)


@register_degradation("resample_roundtrip", unit="Hz sample rate", higher_is_better=None,
                      jnd=0.0, kind="invariance", measure=measure_cutoff)
def resample_roundtrip(audio: np.ndarray, sr: int, level: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Through ``level`` Hz and back (e.g. 48 kHz -> 44.1 kHz -> 48 kHz): a band limit above
    20 kHz, which nobody hears."""
    return round_trip(audio, sr, round(level))


def delay_samples(level_ms: float, sr: int) -> int:
    """A delay in milliseconds as a whole number of samples at ``sr``."""
    return round(level_ms * sr / 1000.0)


@register_degradation("delay", unit="ms", higher_is_better=None, jnd=0.0, kind="invariance")
def delay(audio: np.ndarray, sr: int, level: float, rng: np.random.Generator) -> np.ndarray:
    """Later by ``level`` ms (a whole number of samples; zeros in front, same length; negative:
    earlier). A scorer that aligns reference and degraded must not see it."""
    d = delay_samples(level, sr)
    if abs(d) >= audio.shape[1]:
        raise ValueError(f"delay: {level:g} ms is longer than the clip")
    out = np.zeros_like(audio)
    if d >= 0:
        out[:, d:] = audio[:, :audio.shape[1] - d] if d else audio
    else:
        out[:, :d] = audio[:, -d:]
    return out


# the separation families register themselves in this registry
from data_prep import separation as _separation  # noqa: F401
