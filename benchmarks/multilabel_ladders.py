"""Ladders of distortion families for multi-label training and the sanity suite, built in memory.

Why here and not in a corpus on disk: the ``compare`` model's backbone has no parameters, so a
ladder item is needed only once, to compute its comparison features against its reference; the
audio never has to be written. Families come from ``data_prep.degradations`` (noise, low-pass,
clipping, packet loss, reverberation, band-limited resampling, the resampling round trip) and
``data_prep.codecs`` (Opus, MP3, AAC by bitrate), plus the families of issue 15 that need no stems:
interference from another piece at a given SIR, time-frequency mask artefacts, and the other
invariances (gain, polarity, delay). ``higher_is_better`` gives each family's direction for the loss.
"""

from __future__ import annotations

import zlib

import numpy as np

SR = 48000
#: family -> (levels, higher_is_better); codecs are added by ``codec_specs``
LADDERS = {
    "noise_white": ([40.0, 30.0, 20.0, 10.0], True),
    "noise_pink": ([40.0, 30.0, 20.0, 10.0], True),
    "lowpass": ([14000.0, 8000.0, 4000.0, 2000.0], True),
    "clipping": ([3.0, 8.0, 15.0, 25.0], False),
    "packet_loss": ([2.0, 5.0, 10.0, 20.0], False),
    "reverb": ([0.3, 0.6, 1.2, 2.4], False),
    "resample_bandlimit": ([32000.0, 16000.0, 8000.0, 4000.0], True),
    "interference": ([30.0, 20.0, 10.0, 5.0], True),
    "mask_artefacts": ([0.05, 0.15, 0.3, 0.5], False),
}
CODEC_BITRATES = (16, 32, 48, 64, 96, 128)
INVARIANCES = {"gain": [-10.0, -6.0, 6.0], "polarity": [1.0], "resample_roundtrip": [44100.0],
               "delay": [10.0]}


def higher_is_better() -> dict[str, bool]:
    """The loss's ``higher_is_better`` mapping for every ladder family and codec."""
    out = {name: up for name, (_, up) in LADDERS.items()}
    out.update({codec: True for codec in ("opus", "mp3", "aac")})
    return out


def codec_specs(bitrates: tuple[int, ...] = CODEC_BITRATES) -> list:
    from data_prep.codecs import load_grid
    from data_prep.pipeline import DEFAULT_GRID

    return [s for s in load_grid(str(DEFAULT_GRID)) if s.bitrate_kbps in bitrates]


def mix_at_ratio(target: np.ndarray, other: np.ndarray, ratio_db: float) -> np.ndarray:
    """target + other scaled so that power(target) / power(other) is ``ratio_db``."""
    pt, po = float(np.mean(target ** 2)), float(np.mean(other ** 2))
    return (target + other * np.sqrt(pt / max(po, 1e-20) * 10.0 ** (-ratio_db / 10.0))).astype(
        np.float32)


def mask_artefacts(audio: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A corrupted time-frequency mask: ``fraction`` of the STFT bins (in small clusters) are
    suppressed by 30 dB, the rest kept: spectral holes and musical noise."""
    from scipy.signal import istft, stft

    _, _, spec = stft(audio, fs=SR, nperseg=1024, noverlap=768)
    shape = spec.shape[1:]
    coarse = rng.random((-(-shape[0] // 4), -(-shape[1] // 2))) < fraction
    holes = np.kron(coarse, np.ones((4, 2), dtype=bool))[:shape[0], :shape[1]]
    mask = np.where(holes, 10.0 ** (-30.0 / 20.0), 1.0)
    _, out = istft(spec * mask[None], fs=SR, nperseg=1024, noverlap=768)
    return out[:, :audio.shape[1]].astype(np.float32)


def degrade(family: str, level: float, audio: np.ndarray, other: np.ndarray | None,
            rng: np.random.Generator) -> np.ndarray:
    """One (family, level) version of ``audio`` (C, N) at 48 kHz, same shape."""
    from data_prep.degradations import get_degradation

    if family in ("noise_white", "noise_pink", "lowpass", "clipping", "packet_loss", "reverb",
                  "resample_bandlimit", "resample_roundtrip"):
        return get_degradation(family)(audio, SR, level, rng)
    if family == "interference":
        return mix_at_ratio(audio, other[:, :audio.shape[1]], level)
    if family == "mask_artefacts":
        return mask_artefacts(audio, level, rng)
    if family == "gain":
        return (audio * 10.0 ** (level / 20.0)).astype(np.float32)
    if family == "polarity":
        return -audio
    if family == "delay":
        lag = int(level * SR / 1000)
        return np.concatenate([np.zeros((audio.shape[0], lag), np.float32), audio[:, :-lag]], 1)
    raise ValueError(f"unknown family {family!r}")


def ladder(audio: np.ndarray, other: np.ndarray | None, seed: int, codecs: list | None = None,
           families: dict | None = None) -> list[tuple[str, float, np.ndarray]]:
    """Every (family, level, degraded audio) of one excerpt; deterministic for a ``seed``."""
    from data_prep.codecs import code_excerpt

    out = []
    for family, (levels, _) in (LADDERS if families is None else families).items():
        for level in levels:
            rng = np.random.default_rng([seed, zlib.crc32(family.encode()), int(level * 1000)])
            out.append((family, float(level), degrade(family, level, audio, other, rng)))
    for family, levels in INVARIANCES.items():
        for level in levels:
            out.append((family, float(level), degrade(family, level, audio, other, None)))
    for spec in codec_specs() if codecs is None else codecs:
        out.append((spec.codec, float(spec.bitrate_kbps), code_excerpt(audio, spec).audio))
    return out
