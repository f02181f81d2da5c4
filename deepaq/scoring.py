"""Score reference/degraded pairs with a trained DeePAQ checkpoint: the everyday Python API.

    from deepaq import Scorer
    s = Scorer.from_pretrained()                 # checkpoints/deepaq-small-4 or $DEEPAQ_CHECKPOINT
    r = s.score("ref.wav", "deg.wav")            # ScoreResult(distance=..., mos=...)
    r = s.score(ref_array, deg_array, sample_rate=44100)
    r.extra                                      # {"mos_PQ": .., "std_PQ": ..} with a MOS head
    e = s.embed("x.flac")                        # time-pooled embedding, shape (D,)

Policies (also in the README):

- **Channels**: every input is downmixed to mono (mean of channels) and resampled (soxr HQ) to the
  model's rate, because the model was trained on mono waveforms; any format, rate and channel
  count that :func:`deepaq.audio.read_audio` decodes is accepted.
- **Length mismatch**: reference and degraded are trimmed to the shorter one when their durations
  differ by at most ``length_tolerance_s`` (default 0.5 s, enough for codec padding); a larger
  difference is rejected with an :class:`~deepaq.audio.AudioError` naming both files.
- **Time alignment**: the model compares the two files frame by frame, so a codec's delay (an MP3
  or AAC file decoded by another tool starts 1,000-5,000 samples late) would count as damage.
  Like ViSQOL's global alignment, the degraded file's lag is found by cross-correlating the first
  ``align_probe_s`` (10 s) of both, within +-``align_max_s`` (default 0.5 s; 0 turns it off), and
  undone (``ScoreResult.lag_samples``, at the model rate); files already aligned get lag 0.
- **Windowing**: audio is cut into windows of ``window_s`` (default: the checkpoint's
  ``metadata.window_seconds``, else 4 s) every ``hop_s`` (default: the window), the last window
  aligned to the end so every sample is seen; the same windows are taken from reference and
  degraded, and the distance is the mean of the per-window distances. Files shorter than a
  window are one window of their own length.
- **Long files**: files longer than ``stream_threshold_s`` (default 600 s) that soundfile can seek
  (WAV/FLAC/OGG/AIFF) are never decoded whole: windows are read, resampled and embedded block by
  block, so a one-hour file costs a few windows of memory. Compressed formats decoded by FFmpeg are
  decoded whole (mono float32 at the model rate).
- **Silence**: a file whose AC level (DC offset removed) is below -70 dBFS is rejected (no quality
  judgement is possible; two DC-only files would otherwise score as a perfect match).
- **NMR mode** (non-matching reference): the degraded file is compared with the centroid (mean) of
  the time-pooled embeddings of a set of clean references; the distance is the mean over the
  degraded file's windows of the Euclidean distance of each window's pooled embedding to that
  centroid. No calibrated MOS is given in this mode (the calibration was fitted on full-reference
  distances); a MOS head's prediction (below) is, since it reads the degraded file alone.
- **MOS head**: a checkpoint trained with the MultiGauss head (``mos_head.yaml`` +
  ``mos_head.safetensors`` beside the model, :mod:`deepaq.heads`) also predicts, from the degraded
  file's window embeddings (averaged), a MOS and its standard deviation per aspect:
  ``ScoreResult.extra`` = ``{"mos_<aspect>": mean, "std_<aspect>": std}`` (one aspect named
  ``mos``: ``mos_mean``/``mos_std``), merged into ``to_dict()``.
- **Identical inputs** give distance 0 exactly (same windows, same embeddings); the calibrated MOS of
  distance 0 is the calibration's value at its lowest fitted distance.

Threads: on a CPU, a small model (< 5 M parameters, like the shipped one) runs with one torch
thread (``num_threads``, set around each forward pass and restored): its many small tensor ops
gain nothing from intra-op threads, and on a busy 2-core machine two threads made scoring 3x
slower (4.3 vs 13.8 pairs/s, measured). Large models (MERT) keep torch's default.

Caching: reference embeddings are kept in memory (keyed by file identity, length and windowing), so
21 conditions of one reference embed it once; ``cache_dir`` also stores embeddings on disk keyed by
the file's content hash and the checkpoint id. This module never imports Lightning or training code.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deepaq.alignment import fit_length
from deepaq.audio import AudioError, apply_channel_policy, check_audio, resample, silence_reason
from deepaq.backbones import file_sha256
from deepaq.resources import default_checkpoint_dir

DEFAULT_CHECKPOINT = default_checkpoint_dir()  # package data (deepaq.resources)
DEFAULT_WINDOW_S = 4.0
SILENCE_DBFS = -70.0
MIN_WINDOW_S = 0.1
MAX_OVERLAP = 100  # hop >= window / MAX_OVERLAP: each sample is in at most 100 windows
_STREAM_MARGIN_S = 0.01  # extra native audio around a streamed window so resampling edges are clean
_HEAD_CONFIG = "mos_head.yaml"  # = deepaq.heads.HEAD_CONFIG, checked before importing the module

AudioInput = Any  # str | os.PathLike | np.ndarray | torch.Tensor


@dataclass
class ScoreResult:
    """One pair's score: ``distance`` (lower is better) and ``mos`` (calibrated, or None);
    ``extra`` holds a MOS head's per-aspect ``mos_<aspect>``/``std_<aspect>`` (None without one)."""

    distance: float
    mos: float | None
    windows: int
    duration_s: float
    mode: str = "fr"
    lag_samples: int = 0
    extra: dict | None = None

    def to_dict(self) -> dict:
        """Flat row: the fields, then the ``extra`` entries (the batch output's columns)."""
        d = asdict(self)
        d.update(d.pop("extra") or {})
        return d


def default_checkpoint_path() -> Path:
    """``$DEEPAQ_CHECKPOINT`` if set, else the shipped default (``checkpoints/deepaq-small-4``)."""
    env = os.environ.get("DEEPAQ_CHECKPOINT")
    return Path(env) if env else DEFAULT_CHECKPOINT


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return device


def check_windowing(window_s: float, hop_s: float) -> None:
    """Refuse windowing that cannot work or only multiplies the work: a window under
    ``MIN_WINDOW_S`` or a hop under ``window / MAX_OVERLAP`` (a 0.1 ms hop embedded every window
    tens of thousands of times and ran out of memory)."""
    if not (math.isfinite(window_s) and window_s >= MIN_WINDOW_S):
        raise ValueError(f"--window/window_s {window_s:g} s: must be >= {MIN_WINDOW_S:g} s")
    if not (math.isfinite(hop_s) and hop_s > 0):
        raise ValueError(f"--hop/hop_s {hop_s:g} s: must be > 0")
    if hop_s < window_s / MAX_OVERLAP:
        raise ValueError(f"--hop/hop_s {hop_s:g} s: must be >= window/{MAX_OVERLAP} = "
                         f"{window_s / MAX_OVERLAP:g} s (more overlap only repeats the work)")


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Window starts covering ``[0, num_samples)``; the last window is aligned to the end."""
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


# --------------------------------------------------------------------------------------------------
# Audio sources: mono audio at the model rate, in memory or streamed from a file.
# --------------------------------------------------------------------------------------------------
class _Source:
    label: str
    path: Path | None = None
    streamed: bool = False
    num_samples: int
    identity: str

    def read(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def ensure_loaded(self) -> None:
        """Decode and check now (so errors are attributed to the right row)."""

    def check_level(self) -> None:
        """Silence check for sources only read window by window (streamed); others check on load."""


class _ArraySource(_Source):
    def __init__(self, data: np.ndarray, label: str):
        self.data = data
        self.label = label
        self.num_samples = data.shape[-1]
        self.identity = "array:" + hashlib.sha1(np.ascontiguousarray(data).tobytes()).hexdigest()

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.data[start:stop]


class _FileSource(_Source):
    """A file decoded lazily: whole (short files) or window by window (long, seekable files)."""

    def __init__(self, path: Path, rate: int, stream_threshold_s: float):
        import soundfile as sf

        self.path = path
        self.label = str(path)
        self.rate = rate
        if not path.exists():
            raise AudioError(path, "file not found")
        if path.is_dir():
            raise AudioError(path, "is a directory, not an audio file")
        st = path.stat()
        if st.st_size == 0:
            raise AudioError(path, "empty file (0 bytes)")
        self.identity = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        self.data: np.ndarray | None = None
        self.info = None
        try:
            self.info = sf.info(str(path))
        except Exception:  # noqa: BLE001 - not seekable by soundfile: decode whole with FFmpeg
            self.info = None
        if self.info is not None and self.info.frames > 0:
            self.num_samples = round(self.info.frames * rate / self.info.samplerate)
            self.streamed = self.info.duration > stream_threshold_s
        else:
            self.ensure_loaded()
        self._sum = self._sumsq = 0.0
        self._count = 0

    def ensure_loaded(self) -> None:
        if self.data is not None or self.streamed:
            return
        from deepaq.audio import check_not_silent, load_audio

        mono = load_audio(self.path, sample_rate=self.rate, channels="mono")[0]
        check_not_silent(mono, self.path, SILENCE_DBFS)
        if hasattr(self, "num_samples"):  # match the header's length exactly (soxr rounding)
            mono = fit_length(mono, self.num_samples)
        self.num_samples = mono.shape[0]
        self.data = mono

    def read(self, start: int, stop: int) -> np.ndarray:
        if not self.streamed:
            self.ensure_loaded()
            return self.data[start:stop]
        return self._read_streamed(start, stop)

    def _read_streamed(self, start: int, stop: int) -> np.ndarray:
        import soundfile as sf

        sr = self.info.samplerate
        margin = int(_STREAM_MARGIN_S * sr)
        a = max(0, math.floor(start * sr / self.rate) - margin)
        b = min(self.info.frames, math.ceil(stop * sr / self.rate) + margin)
        try:
            with sf.SoundFile(str(self.path)) as f:
                f.seek(a)
                block = f.read(b - a, dtype="float32", always_2d=True).T
        except Exception as exc:
            raise AudioError(self.path, f"unreadable audio block at {a / sr:.1f} s ({exc})") from exc
        block = check_audio(block, sr, self.path)
        mono = resample(apply_channel_policy(block, "mono", self.path), sr, self.rate)[0]
        offset = round(start - a * self.rate / sr)
        out = fit_length(mono[max(offset, 0):], stop - start)
        self._sum += float(np.sum(out, dtype=np.float64))
        self._sumsq += float(np.sum(np.square(out, dtype=np.float64)))
        self._count += out.shape[0]
        return out

    def check_level(self) -> None:
        """For streamed files: silence is only known after the windows were read (the AC level:
        the mean removed, as :func:`deepaq.audio.check_not_silent` does)."""
        if self.streamed and self._count:
            mean, mean_sq = self._sum / self._count, self._sumsq / self._count
            rms = math.sqrt(max(mean_sq - mean * mean, 0.0))
            level = -math.inf if rms == 0 else 20 * math.log10(rms)
            total = -math.inf if mean_sq <= 0 else 10 * math.log10(mean_sq)
            reason = silence_reason(level, total, abs(mean), SILENCE_DBFS)
            if reason is not None:
                raise AudioError(self.path, reason)


class _ShiftedSource(_Source):
    """A source read ``lag`` samples later (lag > 0: the degraded file started late)."""

    def __init__(self, src: _Source, lag: int):
        self.src, self.lag = src, int(lag)
        self.label, self.path, self.streamed = src.label, src.path, src.streamed
        self.num_samples = max(0, src.num_samples - self.lag)
        self.identity = f"{src.identity}|lag{self.lag}"

    def ensure_loaded(self) -> None:
        self.src.ensure_loaded()

    def read(self, start: int, stop: int) -> np.ndarray:
        a, b = start + self.lag, stop + self.lag
        block = self.src.read(max(a, 0), max(b, 0))
        if a < 0:
            block = np.concatenate([np.zeros(min(-a, stop - start), np.float32), block])
        return fit_length(block, stop - start)

    def check_level(self) -> None:
        self.src.check_level()


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


# --------------------------------------------------------------------------------------------------
@dataclass
class _Job:
    """Window embeddings wanted for one source over ``num_samples`` samples."""

    source: _Source
    num_samples: int
    starts: list[int]
    length: int
    key: tuple | None = None  # memory cache key
    emb: np.ndarray | None = None


class Scorer:
    """A loaded model plus the scoring policies; see the module docstring for the policies."""

    def __init__(self, model: Any, calibration: dict | None = None, device: str = "auto",
                 window_s: float | None = None, hop_s: float | None = None, batch_size: int = 8,
                 length_tolerance_s: float = 0.5, stream_threshold_s: float = 600.0,
                 cache_dir: str | os.PathLike | None = None, checkpoint_dir: str | None = None,
                 metadata: dict | None = None, memory_cache_items: int = 512,
                 mos_head: Any = None, align_max_s: float = 0.5, align_probe_s: float = 10.0,
                 num_threads: int | None = None):
        from deepaq.calibration import MonotonicCubic

        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        # optional deepaq.heads.MultiGaussHead: per-aspect MOS + std from the degraded embedding
        self.mos_head = mos_head.to(self.device).eval() if mos_head is not None else None
        self.sample_rate = int(model.sample_rate)
        self.metadata = metadata or {}
        self.calibration = MonotonicCubic.from_dict(calibration) if calibration else None
        window_s = window_s or self.metadata.get("window_seconds") or DEFAULT_WINDOW_S
        self.window_s = float(window_s)
        self.hop_s = float(hop_s or window_s)
        check_windowing(self.window_s, self.hop_s)
        self.batch_size = max(1, int(batch_size))
        self.length_tolerance_s = float(length_tolerance_s)
        self.align_max_s, self.align_probe_s = float(align_max_s), float(align_probe_s)
        self._ref_signals: OrderedDict[tuple, Any] = OrderedDict()
        if num_threads is None and self.device == "cpu":
            params = sum(p.numel() for p in self.model.parameters())
            num_threads = 1 if params < 5_000_000 else None
        self.num_threads = num_threads
        self.stream_threshold_s = float(stream_threshold_s)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.checkpoint_dir = checkpoint_dir
        self._checkpoint_id: str | None = None
        self._memory: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._memory_items = memory_cache_items
        self._hashes: dict[str, str] = {}
        self.stats = {"embedded_windows": 0, "memory_hits": 0, "disk_hits": 0}

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, device: str = "auto",
                        **kwargs: Any) -> Scorer:
        """Load a checkpoint folder (default: :func:`default_checkpoint_path`)."""
        path = Path(path) if path is not None else default_checkpoint_path()
        if not (path / "config.yaml").is_file():
            raise FileNotFoundError(
                f"no DeePAQ checkpoint at {path} (config.yaml missing). Pass --checkpoint PATH "
                f"(Scorer.from_pretrained(PATH)) or set DEEPAQ_CHECKPOINT; the default "
                f"checkpoint ships inside the package (scripts/make_default_checkpoint.sh "
                f"rebuilds it).")
        import yaml

        from deepaq.checkpoint import load_checkpoint

        device = resolve_device(device)
        model, calibration = load_checkpoint(path, device=device)
        cfg = yaml.safe_load((path / "config.yaml").read_text()) or {}
        if "mos_head" not in kwargs and (path / _HEAD_CONFIG).is_file():
            from deepaq.heads import load_head

            kwargs["mos_head"] = load_head(path, device)
        return cls(model, calibration, device=device, checkpoint_dir=str(path),
                   metadata=cfg.get("metadata") or {}, **kwargs)

    @property
    def window(self) -> int:
        return max(1, round(self.window_s * self.sample_rate))

    @property
    def hop(self) -> int:
        return max(1, round(self.hop_s * self.sample_rate))

    @property
    def checkpoint_id(self) -> str:
        """Content hash of the checkpoint (config + weights): the disk cache's namespace."""
        if self._checkpoint_id is None:
            h = hashlib.sha256()
            if self.checkpoint_dir:
                for name in ("config.yaml", "model.safetensors", "backbone.json"):
                    p = Path(self.checkpoint_dir) / name
                    if p.is_file():
                        h.update(name.encode())
                        h.update(p.read_bytes())
            else:
                for k, v in sorted(self.model.state_dict().items()):
                    h.update(k.encode())
                    h.update(v.detach().cpu().contiguous().numpy().tobytes())
            self._checkpoint_id = h.hexdigest()[:16]
        return self._checkpoint_id

    # -- inputs ----------------------------------------------------------------------------------
    def _source(self, x: AudioInput, sample_rate: int | None, label: str) -> _Source:
        if isinstance(x, (str, os.PathLike)):
            return _FileSource(Path(x), self.sample_rate, self.stream_threshold_s)
        if sample_rate is None:
            raise ValueError(f"{label}: sample_rate is required for array/tensor input")
        from deepaq.audio import check_not_silent

        data = check_audio(_as_numpy(x), int(sample_rate), label)
        if data.shape[0] > data.shape[1]:  # (samples, channels) given: be forgiving
            data = data.T
        mono = resample(apply_channel_policy(data, "mono", label), int(sample_rate),
                        self.sample_rate)
        check_not_silent(mono, label, SILENCE_DBFS)
        return _ArraySource(mono[0], label)

    def _align(self, ref: _Source, deg: _Source) -> tuple[_Source, int]:
        """The degraded source shifted onto the reference (see the module docstring), and the lag."""
        max_lag = round(self.align_max_s * self.sample_rate)
        if max_lag <= 0:
            return deg, 0
        from deepaq.alignment import ReferenceSignal, estimate_lag

        probe = min(ref.num_samples, deg.num_samples, round(self.align_probe_s * self.sample_rate))
        key = (ref.identity, probe)
        signal = self._ref_signals.pop(key, None)      # 21 conditions of a reference: prepared once
        if signal is None:
            signal = ReferenceSignal(ref.read(0, probe))
        self._ref_signals[key] = signal
        while len(self._ref_signals) > 4:
            self._ref_signals.popitem(last=False)
        try:
            lag = estimate_lag(signal, deg.read(0, probe), max_lag, either_polarity=True)
        except ValueError:  # a silent probe: nothing to align on
            return deg, 0
        return (deg, 0) if lag == 0 else (_ShiftedSource(deg, lag), lag)

    def _aligned_length(self, ref: _Source, deg: _Source) -> int:
        a, b = ref.num_samples, deg.num_samples
        diff = abs(a - b) / self.sample_rate
        if diff > self.length_tolerance_s:
            raise AudioError(deg.label, (
                f"length mismatch: reference {ref.label} is {a / self.sample_rate:.2f} s, degraded "
                f"{deg.label} is {b / self.sample_rate:.2f} s (difference {diff:.2f} s > tolerance "
                f"{self.length_tolerance_s:g} s); trim/align them or raise --length-tolerance"))
        return min(a, b)

    def _job(self, src: _Source, n: int) -> _Job:
        win = min(self.window, n)
        return _Job(src, n, window_starts(n, win, self.hop), win,
                    key=(src.identity, n, win, self.hop))

    # -- embedding engine ------------------------------------------------------------------------
    def _embed_windows(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Equal-length mono windows -> embeddings ``[B, ...]`` (one forward pass)."""
        import torch

        batch = torch.from_numpy(np.stack(windows).astype(np.float32, copy=False)).to(self.device)
        with torch.inference_mode(), self._threads():
            out = self.model(batch)
        self.stats["embedded_windows"] += len(windows)
        return out.float().cpu().numpy()

    @contextmanager
    def _threads(self) -> Iterator[None]:
        """torch's intra-op threads set to ``num_threads`` for one call (None: unchanged)."""
        if self.num_threads is None:
            yield
            return
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def _disk_path(self, job: _Job) -> Path | None:
        if self.cache_dir is None or job.source.path is None:
            return None
        ident = job.source.identity
        if ident not in self._hashes:
            self._hashes[ident] = file_sha256(job.source.path)
        name = f"{self._hashes[ident][:32]}_{job.num_samples}_{job.length}_{self.hop}.npy"
        return self.cache_dir / self.checkpoint_id / name

    def _cache_get(self, job: _Job) -> np.ndarray | None:
        if job.key in self._memory:
            self._memory.move_to_end(job.key)
            self.stats["memory_hits"] += 1
            return self._memory[job.key]
        p = self._disk_path(job)
        if p is not None and p.is_file():
            emb = np.load(p, allow_pickle=False)
            self.stats["disk_hits"] += 1
            self._memory_put(job.key, emb)
            return emb
        return None

    def _memory_put(self, key: tuple, emb: np.ndarray) -> None:
        if emb.nbytes > 64 << 20:
            return
        self._memory[key] = emb
        while len(self._memory) > self._memory_items:
            self._memory.popitem(last=False)

    def _cache_put(self, job: _Job) -> None:
        self._memory_put(job.key, job.emb)
        p = self._disk_path(job)
        if p is not None:
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, job.emb, allow_pickle=False)
            os.replace(tmp, p)

    def _run_jobs(self, jobs: list[_Job]) -> None:
        """Fill ``job.emb`` for in-memory jobs, batching windows of equal length across jobs."""
        todo: list[_Job] = []
        twins: list[tuple[_Job, _Job]] = []  # same input twice in a chunk: embed once
        first: dict[tuple, _Job] = {}
        for job in jobs:
            if job.emb is None:
                job.emb = self._cache_get(job)
            if job.emb is None:
                if job.key in first and self._memory_items > 0:  # 0 items: caching off
                    twins.append((job, first[job.key]))
                    continue
                first[job.key] = job
                todo.append(job)
        parts: dict[int, list] = {id(j): [None] * len(j.starts) for j in todo}
        by_len: dict[int, list[tuple[_Job, int]]] = {}
        for job in todo:
            for i in range(len(job.starts)):
                by_len.setdefault(job.length, []).append((job, i))
        for length, items in by_len.items():
            for k in range(0, len(items), self.batch_size):
                chunk = items[k:k + self.batch_size]
                emb = self._embed_windows([j.source.read(j.starts[i], j.starts[i] + length)
                                           for j, i in chunk])
                for (j, i), e in zip(chunk, emb):
                    parts[id(j)][i] = e
        for job in todo:
            job.emb = np.stack(parts[id(job)])
            self._cache_put(job)
        for job, twin in twins:
            job.emb = twin.emb

    def _iter_streamed(self, job: _Job) -> Iterator[tuple[int, np.ndarray]]:
        """Embeddings of a streamed job, ``batch_size`` windows at a time: (first index, [b, ...])."""
        for k in range(0, len(job.starts), self.batch_size):
            starts = job.starts[k:k + self.batch_size]
            yield k, self._embed_windows([job.source.read(s, s + job.length) for s in starts])

    # -- distances -------------------------------------------------------------------------------
    def _distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode(), self._threads():
            d = self.model.distance(torch.from_numpy(np.ascontiguousarray(a)),
                                    torch.from_numpy(np.ascontiguousarray(b)))
        return d.float().cpu().numpy().reshape(-1)

    def _result(self, dists: np.ndarray, n: int, mode: str = "fr",
                deg_windows: np.ndarray | None = None) -> ScoreResult:
        """``deg_windows``: the degraded input's window embeddings ``[W, ...]`` for the MOS head."""
        d = float(np.mean(dists))
        if not math.isfinite(d):
            raise ValueError("model produced a non-finite distance")
        mos = None
        if self.calibration is not None and mode == "fr":
            mos = float(self.calibration(d))
        extra = None
        if self.mos_head is not None and deg_windows is not None:
            extra = predict_head_mos(self.mos_head, deg_windows)
            if not all(math.isfinite(v) for v in extra.values()):
                raise ValueError("MOS head produced a non-finite prediction")
        return ScoreResult(distance=d, mos=mos, windows=len(dists),
                           duration_s=n / self.sample_rate, mode=mode, extra=extra)

    def _score_streamed(self, rjob: _Job, djob: _Job) -> ScoreResult:
        cached = self._cache_get(rjob)
        dists, rembs = [], []
        dpooled: list[np.ndarray] | None = [] if self.mos_head is not None else None
        for k, demb in self._iter_streamed(djob):
            if dpooled is not None:  # [b, D] per batch: the head needs no audio or frames kept
                dpooled.append(_head_pooled(demb))
            if cached is not None:
                remb = cached[k:k + len(demb)]
            else:
                starts = rjob.starts[k:k + len(demb)]
                remb = self._embed_windows([rjob.source.read(s, s + rjob.length) for s in starts])
                if rembs is not None and remb.nbytes * len(rjob.starts) / len(starts) < 64 << 20:
                    rembs.append(remb)
                else:
                    rembs = None  # too large to keep: frame-level embeddings of a long file
            dists.append(self._distance(remb, demb))
        for src in (rjob.source, djob.source):
            src.check_level()
        if cached is None and rembs:
            rjob.emb = np.concatenate(rembs)
            self._cache_put(rjob)
        return self._result(np.concatenate(dists), rjob.num_samples,
                            deg_windows=np.concatenate(dpooled) if dpooled else None)

    # -- public API ------------------------------------------------------------------------------
    def score(self, ref: AudioInput, deg: AudioInput, sample_rate: int | None = None) -> ScoreResult:
        """Full-reference score of one pair (paths, or arrays/tensors with ``sample_rate``)."""
        result = next(self.iter_score([(ref, deg)], sample_rate=sample_rate))[1]
        if isinstance(result, Exception):
            raise result
        return result

    def score_many(self, pairs: Iterable[tuple[AudioInput, AudioInput]],
                   sample_rate: int | None = None, batch_size: int | None = None,
                   progress: bool = False) -> list[ScoreResult | Exception]:
        """Score many pairs; a failing pair's entry is its exception (the others go on)."""
        pairs = list(pairs)
        out: list[ScoreResult | Exception] = [None] * len(pairs)  # type: ignore[list-item]
        it = self.iter_score(pairs, sample_rate=sample_rate, batch_size=batch_size)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(pairs), desc="scoring", unit="pair")
        for i, r in it:
            out[i] = r
        return out

    def iter_score(self, pairs: Iterable[tuple[AudioInput, AudioInput]],
                   sample_rate: int | None = None, batch_size: int | None = None,
                   ) -> Iterator[tuple[int, ScoreResult | Exception]]:
        """Yield ``(index, result or exception)`` in input order, batching windows across pairs.

        ``batch_size`` (windows per forward pass, also pairs per chunk) sets ``self.batch_size``.
        """
        if batch_size is not None:
            self.batch_size = max(1, int(batch_size))
        chunk: list[tuple[int, Any, Any]] = []
        for i, (ref, deg) in enumerate(pairs):
            chunk.append((i, ref, deg))
            if len(chunk) >= self.batch_size:
                yield from self._score_chunk(chunk, sample_rate)
                chunk = []
        if chunk:
            yield from self._score_chunk(chunk, sample_rate)

    def _score_chunk(self, chunk: list[tuple[int, Any, Any]], sample_rate: int | None
                     ) -> Iterator[tuple[int, ScoreResult | Exception]]:
        prepared: dict[int, Any] = {}
        in_memory: list[_Job] = []
        for i, ref, deg in chunk:
            try:
                rsrc = self._source(ref, sample_rate, "reference")
                dsrc = self._source(deg, sample_rate, "degraded")
                dsrc, lag = self._align(rsrc, dsrc)
                n = self._aligned_length(rsrc, dsrc)
                rjob, djob = self._job(rsrc, n), self._job(dsrc, n)
                if rsrc.streamed or dsrc.streamed:
                    prepared[i] = ("stream", rjob, djob, lag)
                    continue
                for job in (rjob, djob):
                    job.emb = self._cache_get(job)
                    if job.emb is None:
                        job.source.ensure_loaded()
                in_memory += [rjob, djob]
                prepared[i] = ("memory", rjob, djob, lag)
            except (AudioError, ValueError, OSError) as exc:
                prepared[i] = exc
        try:
            self._run_jobs(in_memory)
        except Exception as exc:  # noqa: BLE001 - a batch failure: retry pair by pair below
            if len(chunk) == 1:
                prepared[chunk[0][0]] = exc
            else:
                for i, ref, deg in chunk:
                    yield from self._score_chunk([(i, ref, deg)], sample_rate)
                return
        for i, _, _ in chunk:
            p = prepared[i]
            if isinstance(p, Exception):
                yield i, p
                continue
            kind, rjob, djob, lag = p
            try:
                if kind == "stream":
                    result = self._score_streamed(rjob, djob)
                else:
                    result = self._result(self._distance(rjob.emb, djob.emb), rjob.num_samples,
                                          deg_windows=djob.emb)
                result.lag_samples = int(lag)
                yield i, result
            except (AudioError, ValueError, OSError, RuntimeError) as exc:
                yield i, exc

    def embed_windows(self, x: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """Per-window embeddings ``[W, ...]`` of one input (file or array)."""
        return self._embed_source(self._source(x, sample_rate, "input"))

    def _embed_source(self, src: _Source) -> np.ndarray:
        job = self._job(src, src.num_samples)
        if src.streamed:
            return np.concatenate([e for _, e in self._iter_streamed(job)])
        job.emb = self._cache_get(job)
        if job.emb is None:
            src.ensure_loaded()
            self._run_jobs([job])
        return job.emb

    def embed(self, x: AudioInput, sample_rate: int | None = None) -> np.ndarray:
        """Time-pooled embedding ``(D,)``: mean over windows (and over frames for frame models)."""
        return pooled(self.embed_windows(x, sample_rate)).mean(axis=0)

    # -- non-matching reference ------------------------------------------------------------------
    def centroid(self, references: str | os.PathLike | Sequence[AudioInput],
                 sample_rate: int | None = None, progress: bool = False) -> np.ndarray:
        """Centroid of clean embeddings from a folder, a list of files/arrays, or a stored file.

        A stored ``.npy`` holds a centroid ``(D,)`` or a set of embeddings ``(N, D)`` (averaged);
        a ``.safetensors`` holds tensor ``centroid`` or ``embeddings`` (as written by
        ``deepaq embed``).
        """
        if isinstance(references, (str, os.PathLike)):
            p = Path(references)
            if p.is_file() and p.suffix in (".npy", ".safetensors"):
                return load_centroid(p)
            if p.is_dir():
                from deepaq.audio import AUDIO_EXTENSIONS

                references = sorted(q for q in p.rglob("*") if q.suffix.lower() in AUDIO_EXTENSIONS)
                if not references:
                    raise FileNotFoundError(f"{p}: no audio files for the NMR reference set")
            else:
                raise FileNotFoundError(f"{p}: not a folder of references, .npy or .safetensors")
        items = list(references)
        if progress:
            from tqdm import tqdm

            items = tqdm(items, desc="nmr references", unit="file")
        embs = [self.embed(r, sample_rate) for r in items]
        return np.mean(np.stack(embs), axis=0).astype(np.float32)

    def score_nmr(self, deg: AudioInput, centroid: np.ndarray,
                  sample_rate: int | None = None) -> ScoreResult:
        """Distance of the degraded input to a clean-set centroid (see module docstring)."""
        src = self._source(deg, sample_rate, "degraded")
        emb = self._embed_source(src)
        win = pooled(emb)
        centroid = np.asarray(centroid, dtype=np.float32).reshape(-1)
        if win.shape[-1] != centroid.shape[0]:
            raise ValueError(f"centroid has dimension {centroid.shape[0]}, model embeds "
                             f"{win.shape[-1]}: was it made with another checkpoint?")
        dists = np.linalg.norm(win - centroid[None], axis=-1)
        return self._result(dists, src.num_samples, mode="nmr", deg_windows=emb)


def pooled(emb: np.ndarray) -> np.ndarray:
    """``[W, D]`` stays; frame-level ``[W, F, D]`` is averaged over frames."""
    return emb.mean(axis=1) if emb.ndim == 3 else emb


def predict_head_mos(head: Any, window_embeddings: np.ndarray) -> dict[str, float]:
    """Same as :func:`deepaq.heads.predict_mos` (windows pooled as the head pools them, averaged,
    then the head): ``{"mos_<aspect>": mean, "std_<aspect>": std}``, ``mos_mean``/``mos_std`` for
    one aspect named "mos". Kept here because ``predict_mos`` imports :mod:`deepaq.adversarial`,
    which imports Lightning (scoring must not)."""
    import torch

    param = next(head.parameters())
    emb = _head_pooled(np.asarray(window_embeddings, dtype=np.float32)).mean(0, keepdims=True)
    with torch.inference_mode():
        out = head.predict(torch.as_tensor(emb, dtype=param.dtype, device=param.device))
    mean, std = out["mean"][0].tolist(), out["std"][0].tolist()
    if list(head.aspects) == ["mos"]:
        return {"mos_mean": mean[0], "mos_std": std[0]}
    res: dict[str, float] = {}
    for a, m, sd in zip(head.aspects, mean, std):
        res[f"mos_{a}"], res[f"std_{a}"] = m, sd
    return res


def _head_pooled(emb: np.ndarray) -> np.ndarray:
    """Windows ``[W, D]`` as the MOS head pools them (:func:`deepaq.adversarial.pool_embeddings`:
    frame embeddings ``[W, F, D]`` -> mean of the frames that are not all-zero padding)."""
    if emb.ndim == 2:
        return emb
    valid = (np.abs(emb).max(-1) > 0).astype(emb.dtype)                     # [W, F]
    return (emb * valid[..., None]).sum(1) / np.maximum(valid.sum(1), 1)[:, None]


def load_centroid(path: str | os.PathLike) -> np.ndarray:
    """Read a stored centroid or embedding set (``.npy`` or ``.safetensors``) as ``(D,)``."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
    except FileNotFoundError:
        raise
    except Exception as exc:  # numpy/safetensors say what went wrong, not in which file
        raise ValueError(f"{path}: not a readable {path.suffix} file ({exc})") from exc
    if path.suffix != ".npy":
        key = "centroid" if "centroid" in tensors else "embeddings" if "embeddings" in tensors else None
        if key is None:
            raise ValueError(f"{path}: expected a 'centroid' or 'embeddings' tensor, "
                             f"found {sorted(tensors)}")
        arr = tensors[key]
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr.mean(axis=0)
    if arr.ndim != 1:
        raise ValueError(f"{path}: expected shape (D,) or (N, D), got {arr.shape}")
    return arr
