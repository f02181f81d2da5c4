"""The codec stage: code a 48 kHz excerpt with one (codec, bitrate) and return it time-aligned.

Each condition is encoded and decoded in memory with PyAV (FFmpeg's libopus, libmp3lame and native
aac). The decoder is told not to drop the priming itself (``flags2=+skip_manual``) so the same code
removes every codec's delay, whatever the container records; the delay is the encoder's own
declaration (the negative timestamp of its first packet). What remains is measured by
cross-correlation, corrected, and refused above a tolerance, so a broken delay rule fails loudly
instead of silently shifting every label.

The grid comes from YAML (``configs/data_prep/*.yaml``), see :func:`load_grid`.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deepaq.alignment import ReferenceSignal, align_to_reference
from deepaq.audio import AudioError, resample
from deepaq.manifest import condition_name

SAMPLE_RATE = 48000


class CodecError(AudioError):
    """A condition that could not be coded or aligned; the message names codec, bitrate and cause."""

    def __init__(self, spec: CodecSpec, problem: str, lag: int | None = None):
        self.spec = spec
        self.lag = lag
        super().__init__(None, f"{spec.condition} ({spec.encoder} {spec.bitrate_kbps} kbps): "
                               f"{problem}")


@dataclass(frozen=True)
class CodecSpec:
    """One coded condition of the grid; fields map one-to-one onto the YAML grid entries."""

    codec: str                       # short name used in condition names: opus, mp3, aac
    bitrate_kbps: int
    encoder: str                     # FFmpeg encoder: libopus, libmp3lame, aac
    container: str                   # FFmpeg muxer the stream is written to in memory
    sample_rate: int = SAMPLE_RATE   # rate the codec runs at (input is resampled to it and back)
    options: dict[str, str] = field(default_factory=dict)  # encoder private options
    max_lag_samples: int = 4800      # cross-correlation search window at 48 kHz
    tolerance_samples: int = 16      # largest residual lag accepted (and corrected)

    @property
    def condition(self) -> str:
        return condition_name(self.codec, self.bitrate_kbps)


@dataclass
class CodedAudio:
    """A coded excerpt aligned to its reference, with what the manifest records about it."""

    audio: np.ndarray                 # (C, N) float32 at 48 kHz, N = the reference's length
    encoder: str
    bitrate_requested_kbps: float
    bitrate_measured_kbps: float      # encoded packet bytes * 8 / reference duration
    delay_removed_samples: int        # codec priming removed, in 48 kHz samples
    alignment_lag: int                # residual lag found after that, and corrected
    coded_sample_rate: int
    encoded_bytes: int                # sum of the packet sizes (container overhead excluded)
    #: seconds spent in each step (resample, encode, decode, align), for the pipeline's timing
    seconds: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Grid


def _specs_for(codec: str, entry: dict, default_rates: list, alignment: dict) -> list[CodecSpec]:
    entry = dict(entry)
    rules = entry.pop("rules", None) or []
    rates = entry.pop("bitrates_kbps", None) or default_rates
    if not rates:
        raise ValueError(f"grid codec {codec!r}: no bitrates_kbps (per codec or at the top)")
    unknown = set(entry) - {"encoder", "container", "sample_rate", "options"}
    if unknown:
        raise ValueError(f"grid codec {codec!r}: unknown keys {sorted(unknown)}")
    for key in ("encoder", "container"):
        if not entry.get(key):
            raise ValueError(f"grid codec {codec!r}: missing {key!r}")
    _check_ffmpeg_names(codec, str(entry["encoder"]), str(entry["container"]))
    for rule in rules:
        if not isinstance(rule, dict) or "below_kbps" not in rule:
            raise ValueError(f"grid codec {codec!r}: each rule needs 'below_kbps', got {rule!r}")
        odd = set(rule) - {"below_kbps", "sample_rate", "options"}
        if odd:
            raise ValueError(f"grid codec {codec!r}: rule with unknown keys {sorted(odd)}")
    specs = []
    for kbps in sorted(int(k) for k in rates):
        if kbps <= 0:
            raise ValueError(f"grid codec {codec!r}: bitrate {kbps} kbps must be positive")
        rate = int(entry.get("sample_rate", SAMPLE_RATE))
        options = {str(k): str(v) for k, v in (entry.get("options") or {}).items()}
        for rule in rules:
            if kbps < float(rule["below_kbps"]):
                rate = int(rule.get("sample_rate", rate))
                options.update({str(k): str(v) for k, v in (rule.get("options") or {}).items()})
        specs.append(CodecSpec(codec=codec, bitrate_kbps=kbps, encoder=str(entry["encoder"]),
                               container=str(entry["container"]), sample_rate=rate,
                               options=options, **alignment))
    return specs


def _check_ffmpeg_names(codec: str, encoder: str, container: str) -> None:
    """Refuse an encoder or muxer this FFmpeg lacks now, not once per excerpt mid-build."""
    import av

    try:
        av.codec.Codec(encoder, "w")
    except Exception:  # noqa: BLE001 - PyAV raises UnknownCodecError or ValueError by version
        raise ValueError(f"grid codec {codec!r}: unknown FFmpeg encoder {encoder!r}") from None
    if container not in av.formats_available:
        raise ValueError(f"grid codec {codec!r}: unknown FFmpeg container {container!r}")


#: top-level keys of a grid file; `degradations` is read by data_prep.families (the other families)
GRID_KEYS = {"codecs", "bitrates_kbps", "alignment", "degradations"}


def read_grid_file(path: str | os.PathLike) -> dict:
    """The mapping of a grid YAML file (codecs and ``degradations:``, read by :func:`load_grid`
    and ``data_prep.families.load_families``); every problem is a ValueError of one line that
    names the file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read codec grid ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ValueError(f"{path}: malformed YAML{where} ({problem})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a codec grid must be a YAML mapping with 'codecs'")  # noqa: TRY004
    return data


def load_grid(grid: str | os.PathLike | dict) -> list[CodecSpec]:
    """Read a codec grid (YAML path or the same structure as a dict) into one spec per condition.

    Order is the YAML's codec order, bitrates ascending, so condition order is stable. Every
    problem is a ValueError of one line that names the file.
    """
    if isinstance(grid, dict):
        return _grid_specs(grid)
    path = Path(grid)
    data = read_grid_file(path)
    try:
        return _grid_specs(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def _grid_specs(grid: dict) -> list[CodecSpec]:
    unknown = set(grid) - GRID_KEYS
    if unknown:
        raise ValueError(f"codec grid: unknown keys {sorted(unknown)} (known: {sorted(GRID_KEYS)})")
    align = dict(grid.get("alignment") or {})
    unknown = set(align) - {"max_lag_samples", "tolerance_samples"}
    if unknown:
        raise ValueError(f"grid alignment: unknown keys {sorted(unknown)}")
    align = {k: int(v) for k, v in align.items()}
    codecs = grid.get("codecs") or {}
    if not codecs or not isinstance(codecs, dict):
        raise ValueError("codec grid has no codecs")
    specs = []
    for codec, entry in codecs.items():
        if not isinstance(entry or {}, dict):
            raise ValueError(f"grid codec {codec!r}: expected a mapping, got {entry!r}")  # noqa: TRY004
        specs += _specs_for(str(codec), entry or {}, list(grid.get("bitrates_kbps") or []), align)
    names = [s.condition for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"codec grid has duplicate conditions: {names}")
    return specs


# --------------------------------------------------------------------------------------------
# Coding


def _encode(x: np.ndarray, spec: CodecSpec) -> tuple[bytes, int, int]:
    """Encode (C, N) float32 at ``spec.sample_rate`` -> (container bytes, priming, packet bytes)."""
    import av

    layout = "mono" if x.shape[0] == 1 else "stereo"
    buf = io.BytesIO()
    priming = None
    payload = 0
    # bitexact: no random Ogg serial numbers or version strings, so the bytes are reproducible.
    with av.open(buf, "w", format=spec.container, options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream(spec.encoder, rate=spec.sample_rate, layout=layout)
        stream.bit_rate = int(spec.bitrate_kbps * 1000)
        stream.codec_context.options = dict(spec.options)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x.T.reshape(1, -1)),
                                           format="flt", layout=layout)
        frame.sample_rate = spec.sample_rate
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            if priming is None:
                # Encoders stamp their first packet at -priming (libopus 312, LAME 1105, aac 1024).
                priming = max(0, -int(packet.pts * packet.time_base * spec.sample_rate))
            payload += packet.size
            out.mux(packet)
    return buf.getvalue(), int(priming or 0), payload


def _decode(data: bytes, spec: CodecSpec, channels: int) -> np.ndarray:
    """Decode every sample, priming included (``skip_manual``), to (C, M) float32."""
    import av

    chunks = []
    with av.open(io.BytesIO(data), format=spec.container) as container:
        stream = container.streams.audio[0]
        stream.codec_context.options = {"flags2": "+skip_manual"}
        layout = "mono" if channels == 1 else "stereo"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=spec.sample_rate)
        for frame in container.decode(stream):
            chunks += [f.to_ndarray() for f in resampler.resample(frame)]
        chunks += [f.to_ndarray() for f in resampler.resample(None)]
    if not chunks:
        raise CodecError(spec, "decoder returned no audio")
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False)


def code_excerpt(audio: np.ndarray | ReferenceSignal, spec: CodecSpec) -> CodedAudio:
    """Encode and decode ``audio`` (C, N) float32 at 48 kHz, mono or stereo, and align it back.

    ``audio`` may be a :class:`~deepaq.alignment.ReferenceSignal` of the excerpt, so a grid of
    conditions reuses one analysis of the reference for alignment. The result has exactly N
    samples and the input's channels. Deterministic: the same input and spec give the same samples.
    """
    reference = audio if isinstance(audio, ReferenceSignal) else None
    x = np.asarray(audio if reference is None else reference.audio, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] not in (1, 2) or x.shape[1] == 0:
        raise CodecError(spec, f"expected (1 or 2, N>0) audio, got shape {x.shape}")
    n = x.shape[1]
    clock = _Clock()
    coded_in = clock("resample", resample, x, SAMPLE_RATE, spec.sample_rate)
    try:
        data, priming, payload = clock("encode", _encode, coded_in, spec)
        decoded = clock("decode", _decode, data, spec, x.shape[0])
    except CodecError:
        raise
    except Exception as exc:  # FFmpeg errors come in many types; say which condition failed
        raise CodecError(spec, f"encode/decode failed: {exc}") from exc
    decoded = clock("resample", resample, decoded[:, priming:], spec.sample_rate, SAMPLE_RATE)
    try:
        aligned, lag = clock("align", align_to_reference, x if reference is None else reference,
                             decoded, spec.max_lag_samples)
    except ValueError as exc:
        raise CodecError(spec, str(exc)) from exc
    if abs(lag) > spec.tolerance_samples:
        raise CodecError(spec, f"residual lag {lag} samples after removing the codec delay "
                               f"exceeds the tolerance of {spec.tolerance_samples}", lag=lag)
    return CodedAudio(
        audio=np.ascontiguousarray(aligned, dtype=np.float32),
        encoder=spec.encoder,
        bitrate_requested_kbps=float(spec.bitrate_kbps),
        bitrate_measured_kbps=payload * 8 / (n / SAMPLE_RATE) / 1000.0,
        delay_removed_samples=round(priming * SAMPLE_RATE / spec.sample_rate),
        alignment_lag=int(lag),
        coded_sample_rate=int(spec.sample_rate),
        encoded_bytes=int(payload),
        seconds=clock.seconds,
    )


class _Clock:
    """Calls a function and adds its wall time to ``seconds[step]``: measured per-step costs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, step: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - t0
