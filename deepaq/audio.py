"""Audio loading, checking, resampling and writing shared by corpus generation and scoring.

Every failure raises :class:`AudioError` naming the file and the problem, so batch jobs can record
it per item and go on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from deepaq.records import atomic_path

ChannelPolicy = Literal["keep", "mono", "stereo"]

#: Extensions the loader accepts when scanning folders (anything soundfile or FFmpeg decodes).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".opus", ".aif", ".aiff",
                    ".wv", ".mp4", ".webm")


class AudioError(ValueError):
    """An audio input that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def _read_soundfile(path: Path, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        sr = f.samplerate
        first = round((start or 0.0) * sr)
        last = f.frames if end is None else min(f.frames, round(end * sr))
        f.seek(min(first, f.frames))
        data = f.read(max(0, last - first), dtype="float32", always_2d=True)
    return data.T, sr


def _read_pyav(path: Path, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
    import av

    chunks = []
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise AudioError(path, "no audio stream")
        stream = container.streams.audio[0]
        sr = stream.codec_context.sample_rate or stream.rate
        if not sr:  # FFmpeg probed something, but no decodable audio stream (garbage bytes)
            raise ValueError("no decodable audio stream (sample rate unknown)")
        layout = stream.codec_context.layout
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sr)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        raise ValueError("no audio frames could be decoded")
    data = np.concatenate(chunks, axis=1).astype(np.float32)
    first = round((start or 0.0) * sr)
    last = data.shape[1] if end is None else round(end * sr)
    return data[:, first:last], sr


def read_audio(path: str | os.PathLike, start: float | None = None,
               end: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a file to float32 ``(channels, samples)`` at its own rate, checked for use.

    soundfile handles WAV/FLAC/OGG/AIFF exactly; anything else (MP3, M4A, Opus) goes through PyAV.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    errors = []
    data = sr = None
    for reader in (_read_soundfile, _read_pyav):
        try:
            data, sr = reader(path, start, end)
            break
        except AudioError:
            raise
        except Exception as exc:  # noqa: BLE001 - both decoders failing is the error we report
            errors.append(f"{reader.__name__[6:]}: {exc}")
    if data is None:
        raise AudioError(path, "cannot be decoded: unreadable or corrupt audio ("
                               + "; ".join(errors) + ")")
    return check_audio(data, sr, path), sr


def check_audio(data: np.ndarray, sample_rate: int, path: str | os.PathLike | None = None,
                min_rate: int = 8000, max_rate: int = 384000) -> np.ndarray:
    """Reject what no metric can use: empty, non-finite, or an implausible sample rate."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2:
        raise AudioError(path, f"expected (channels, samples) audio, got shape {data.shape}")
    if not (min_rate <= int(sample_rate) <= max_rate):
        raise AudioError(path, f"unsupported sample rate {sample_rate} Hz "
                               f"(supported: {min_rate}-{max_rate} Hz)")
    if data.shape[1] == 0:
        raise AudioError(path, "zero-length audio (no samples)")
    if data.shape[0] == 0:
        raise AudioError(path, "audio has no channels")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(path, f"contains {bad} NaN/inf samples")
    return data


def rms_dbfs(data: np.ndarray) -> float:
    """RMS level in dB relative to full scale (a full-scale sine is -3 dBFS); -inf for silence."""
    rms = float(np.sqrt(np.mean(np.square(data, dtype=np.float64))))
    return -np.inf if rms == 0.0 else 20.0 * np.log10(rms)


def ac_rms_dbfs(data: np.ndarray) -> float:
    """RMS level of the signal minus each channel's mean (its DC offset), in dBFS.

    A constant offset carries no sound: DC-only or near-DC input must count as silent, or two
    DC files score as a perfect match.
    """
    x = np.asarray(data, dtype=np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    return rms_dbfs(x)


def silence_reason(ac_dbfs: float, total_dbfs: float, dc: float,
                   threshold_dbfs: float = -70.0) -> str | None:
    """Why a signal counts as silent, or None when its AC level reaches ``threshold_dbfs``.

    ``ac_dbfs``: the level with the DC offset removed; ``total_dbfs``: the level with it;
    ``dc``: the offset's magnitude (shown only). One rule for whole files and streamed ones.
    """
    if not ac_dbfs < threshold_dbfs:
        return None
    shown = "-inf" if ac_dbfs == -np.inf else f"{ac_dbfs:.1f}"
    if total_dbfs >= threshold_dbfs:  # loud only because of the offset
        return (f"DC offset only, no sound (DC {dc:.3g}, AC level {shown} dBFS "
                f"< {threshold_dbfs:g} dBFS): treated as silent")
    return f"silent or too quiet ({shown} dBFS < {threshold_dbfs:g} dBFS)"


def check_not_silent(data: np.ndarray, path: str | os.PathLike | None = None,
                     threshold_dbfs: float = -70.0) -> np.ndarray:
    """Reject audio whose AC level (DC offset removed) is below ``threshold_dbfs``."""
    level = ac_rms_dbfs(data)
    if level < threshold_dbfs:
        dc = float(np.max(np.abs(np.asarray(data, dtype=np.float64).mean(axis=-1))))
        raise AudioError(path, silence_reason(level, rms_dbfs(data), dc, threshold_dbfs))
    return data


def apply_channel_policy(data: np.ndarray, policy: ChannelPolicy,
                         path: str | os.PathLike | None = None) -> np.ndarray:
    """``keep``: as is; ``mono``: mean of channels; ``stereo``: mono duplicated, >2 downmixed.

    Multichannel (>2) is downmixed by averaging, which keeps a fold-down's level comparable.
    """
    if policy == "keep":
        return data
    if policy == "mono":
        return data.mean(axis=0, keepdims=True)
    if policy == "stereo":
        if data.shape[0] == 1:
            return np.repeat(data, 2, axis=0)
        if data.shape[0] == 2:
            return data
        return np.repeat(data.mean(axis=0, keepdims=True), 2, axis=0)
    raise AudioError(path, f"unknown channel policy {policy!r} (keep, mono, stereo)")


def resample(data: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """High-quality resampling with soxr; returns ``(channels, samples)`` float32."""
    if int(rate_in) == int(rate_out):
        return data.astype(np.float32, copy=False)
    import soxr

    out = soxr.resample(np.ascontiguousarray(data.T), rate_in, rate_out, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def load_audio(path: str | os.PathLike, sample_rate: int | None = None,
               channels: ChannelPolicy = "keep", start: float | None = None,
               end: float | None = None) -> np.ndarray:
    """Read, check, apply the channel policy and resample to ``sample_rate`` (if given)."""
    data, sr = read_audio(path, start, end)
    data = apply_channel_policy(data, channels, path)
    if sample_rate is not None:
        data = resample(data, sr, sample_rate)
    return data


def audio_duration(path: str | os.PathLike) -> float:
    """Duration in seconds, read from headers when possible (no full decode for WAV/FLAC)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate
    except Exception:  # noqa: BLE001, S110 - compressed formats: ask the container, then decode
        pass
    try:
        import av

        with av.open(str(path)) as container:
            if container.duration:
                return container.duration / 1_000_000
    except Exception:  # noqa: BLE001, S110 - the full decode below reports the real problem
        pass
    data, sr = read_audio(path)
    return data.shape[1] / sr


def write_audio(path: str | os.PathLike, data: np.ndarray, sample_rate: int,
                subtype: str | None = None) -> Path:
    """Write ``(channels, samples)`` audio atomically (temp file in the same folder, then rename)."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        data = data[None]
    fmt = {".flac": "FLAC", ".wav": "WAV", ".ogg": "OGG"}.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(path, "can only write .flac, .wav or .ogg")
    if subtype is None:
        subtype = {"FLAC": "PCM_24", "WAV": "FLOAT", "OGG": "VORBIS"}[fmt]
    with atomic_path(path) as tmp:
        sf.write(tmp, np.clip(data.T, -1.0, 1.0) if fmt == "FLAC" else data.T, sample_rate,
                 format=fmt, subtype=subtype)
    return path
