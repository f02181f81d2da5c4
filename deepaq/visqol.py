"""ViSQOL v3 MOS-LQO of a degraded signal against its reference: the reference implementation.

The corpus is labelled with ViSQOL v3 in *audio mode* (48 kHz, 32 gammatone bands, SVR mapping).
:class:`VisqolLabeller` wraps ``visqol-python`` (a pure-Python port of google/visqol v3.3.3 that
reproduces the upstream conformance values; see tests/deepaq/test_visqol.py), pair by pair; it
is the reference implementation and ``deepaq-prep build --labeller visqol-python``. The default
corpus labeller is :class:`deepaq.visqol_batched.BatchedVisqolLabeller`, the same algorithm
batched over one reference's conditions (same scores; :func:`make_labeller` builds either). The expensive objects
(filterbank, SVR model, numba kernels) are built once per :class:`VisqolLabeller` and reused, so a
corpus worker keeps one labeller for its whole life.

Input handling, chosen to match the C++ ``visqol`` tool and to be safe in a batch job:

* Channels are averaged to mono (in float64), exactly as upstream ``MiscAudio::ToMono`` and
  visqol-python's own file loader do, so array and file scoring give identical numbers.
* Audio mode is defined at 48 kHz and speech mode at 16 kHz. Other rates are *resampled* (soxr HQ,
  :func:`deepaq.audio.resample`) by default, because the SVR/filterbank are only meaningful at the
  mode's rate and the upstream tool merely warns; pass ``resample=False`` to get an
  :class:`~deepaq.audio.AudioError` instead (useful when a pipeline must already be at 48 kHz).
* Empty, non-finite (NaN/inf) and silent signals raise :class:`~deepaq.audio.AudioError`: ViSQOL
  scales the degraded signal to the reference's level, so silence yields inf/NaN, not a score.
* Reference and degraded may differ in length (upstream aligns them globally and drops patches the
  degraded signal does not cover), so no length check is made here.

Timing (measured on the shared 2-core dev box, numba on, one thread): 1.2-2.6 s per 10-16 s stereo
pair when the machine was quiet (the conformance pairs), about 5 s per 10 s pair under heavy
contention (load 8-10); numba's default of all threads was no faster there (5.1 vs 5.05 s median).
Scoring many conditions against one reference (a corpus excerpt has 22) takes about 30 % less time
with the spectrogram cache (:class:`SpectrogramCache`, on by default), which returns exactly what
visqol-python would have recomputed (the batched labeller goes further; see docs/labeller.md).
The first call in a process costs more: in a fresh environment numba compiles the kernels (12 s
quiet, 45 s under load) and caches them beside the package; later processes load that cache and
their first pair is no slower than the rest. Call :meth:`VisqolLabeller.warmup` before timing.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from importlib import metadata
from typing import TYPE_CHECKING, Literal

import numpy as np

from deepaq.audio import AudioError, check_audio, read_audio, resample, rms_dbfs

if TYPE_CHECKING:
    from visqol.analysis_window import AnalysisWindow
    from visqol.audio_utils import AudioSignal
    from visqol.gammatone import GammatoneSpectrogramBuilder, Spectrogram

Mode = Literal["audio", "speech"]


def _visqol_version() -> str:
    try:
        return metadata.version("visqol-python")
    except metadata.PackageNotFoundError:  # pragma: no cover - it is a hard dependency
        return "not installed"


#: Version of the ViSQOL implementation, recorded in corpus manifests next to the labels.
VISQOL_VERSION: str = _visqol_version()
#: Which implementation produced the labels (for provenance in manifests).
VISQOL_IMPLEMENTATION: str = f"visqol-python=={VISQOL_VERSION} (ViSQOL v3.3.3 port)"

#: Default memory for a labeller's spectrogram cache: ample for one excerpt's reference and
#: patches (about 0.3 MiB per 10 s), so the many conditions of an excerpt all hit.
DEFAULT_CACHE_MIB: float = 64.0

#: The sample rate each mode is defined at.
MODE_SAMPLE_RATE: dict[str, int] = {"audio": 48000, "speech": 16000}


class VisqolLabeller:
    """ViSQOL v3 MOS-LQO scorer that builds its models once and scores many pairs.

    Args:
        mode: ``"audio"`` (48 kHz, music; the corpus labels) or ``"speech"`` (16 kHz).
        resample: resample inputs at another rate to the mode's rate (default) instead of raising.
        silence_dbfs: signals whose RMS level is below this (dBFS) are rejected as silent.
        num_threads: numba threads used by the ``parallel=True`` patch-matching kernels while
            scoring. Default 1: with more threads visqol-python's parallel reductions make the
            score vary run to run in the last digits (about 1e-14, measured), which would break
            byte-identical manifests; one thread per process is also what a ``--jobs`` pool
            wants. ``None`` uses numba's default (all cores) for a single interactive process.
        speech_lattice: speech mode only: use the deep-lattice mapper (upstream default, needs
            ``ai-edge-litert``); ``False`` uses the polynomial mapping; ``None`` picks what exists.
        cache_mib: memory for the gammatone spectrogram cache (:class:`SpectrogramCache`),
            which saves rebuilding the reference's spectrograms when one reference is scored
            against many degraded signals; 0 turns it off (visqol-python exactly as shipped).
    """

    def __init__(self, mode: Mode = "audio", resample: bool = True,
                 silence_dbfs: float = -90.0, num_threads: int | None = 1,
                 speech_lattice: bool | None = None,
                 cache_mib: float = DEFAULT_CACHE_MIB):
        if mode not in MODE_SAMPLE_RATE:
            raise ValueError(f"mode must be 'audio' or 'speech', got {mode!r}")
        from visqol.visqol_manager import VisqolManager

        self.mode: str = mode
        self.sample_rate: int = MODE_SAMPLE_RATE[mode]
        self.resample: bool = bool(resample)
        self.silence_dbfs: float = float(silence_dbfs)
        self.num_threads: int | None = None if num_threads is None else int(num_threads)
        self._manager = VisqolManager()
        self._manager.init(use_speech_mode=(mode == "speech"),
                           use_lattice_model=speech_lattice if mode == "speech" else None,
                           model_path=_default_svr_model() if mode == "audio" else "")
        self.cache: SpectrogramCache | None = None
        if cache_mib > 0:
            self.cache = SpectrogramCache(self._manager.spect_builder, int(cache_mib * 2**20))
            self._manager.spect_builder = self.cache

    def info(self) -> dict:
        """Provenance of the labels, for the corpus manifest / metadata."""
        return {"implementation": "visqol-python", "version": VISQOL_VERSION, "mode": self.mode,
                "sample_rate": self.sample_rate, "num_threads": self.num_threads,
                "mapper": type(self._manager.quality_mapper).__name__}

    def score(self, reference: np.ndarray, degraded: np.ndarray,
              sample_rate: int = 48000) -> float:
        """MOS-LQO (1..5) of ``degraded`` against ``reference``, both ``(C, N)`` at ``sample_rate``."""
        ref = self._prepare(reference, sample_rate, "reference")
        deg = self._prepare(degraded, sample_rate, "degraded")
        return self._run(ref, deg, None)

    def score_files(self, ref_path: str | os.PathLike, deg_path: str | os.PathLike) -> float:
        """Score two audio files (any format :func:`deepaq.audio.read_audio` decodes)."""
        ref, sr_ref = read_audio(ref_path)
        deg, sr_deg = read_audio(deg_path)
        ref = self._prepare(ref, sr_ref, "reference", ref_path)
        deg = self._prepare(deg, sr_deg, "degraded", deg_path)
        return self._run(ref, deg, deg_path)

    def warmup(self) -> None:
        """Trigger numba compilation / cache loading so that later calls run at full speed."""
        rng = np.random.default_rng(0)
        x = (0.1 * rng.standard_normal((1, self.sample_rate))).astype(np.float32)
        self.score(x, 0.9 * x, self.sample_rate)

    def _run(self, ref: np.ndarray, deg: np.ndarray, where: str | os.PathLike | None) -> float:
        from visqol.audio_utils import AudioSignal

        if self.num_threads is not None:
            import numba

            previous = numba.get_num_threads()
            numba.set_num_threads(min(self.num_threads, numba.config.NUMBA_NUM_THREADS))
        try:
            result = self._manager.run_from_signals(AudioSignal(ref, self.sample_rate),
                                                    AudioSignal(deg, self.sample_rate))
        finally:
            if self.num_threads is not None:
                numba.set_num_threads(previous)
        value = float(result.moslqo)
        if not math.isfinite(value):
            raise AudioError(where, f"ViSQOL returned a non-finite score ({value})")
        return value

    def score_many(self, reference: np.ndarray, degraded: list[np.ndarray],
                   sample_rate: int = 48000) -> list[float]:
        """``score`` of each degraded signal against one reference (the batched labeller's API)."""
        ref = self._prepare(reference, sample_rate, "reference")
        return [self._run(ref, self._prepare(d, sample_rate, f"degraded[{i}]"), None)
                for i, d in enumerate(degraded)]

    def _prepare(self, x: np.ndarray, sample_rate: int, role: str,
                 path: str | os.PathLike | None = None) -> np.ndarray:
        return prepare_mono(x, sample_rate, self.sample_rate, self.mode, self.resample,
                            self.silence_dbfs, role, path)


def prepare_mono(x: np.ndarray, sample_rate: int, target_rate: int, mode: str, resample_: bool,
                 silence_dbfs: float, role: str,
                 path: str | os.PathLike | None = None) -> np.ndarray:
    """Check one input and return it as mono float64 at ``target_rate`` (the mode's rate)."""
    where = path if path is not None else role
    x = check_audio(x, sample_rate, where)
    if int(sample_rate) != target_rate:
        if not resample_:
            raise AudioError(where, f"sample rate {sample_rate} Hz, but ViSQOL {mode} "
                                    f"mode needs {target_rate} Hz (resampling disabled)")
        x = resample(x, int(sample_rate), target_rate)
    mono = x.astype(np.float64).mean(axis=0)
    level = rms_dbfs(mono)
    if level < silence_dbfs:
        shown = "-inf" if level == -math.inf else f"{level:.1f}"
        raise AudioError(where, f"{role} is silent ({shown} dBFS < {silence_dbfs} dBFS "
                                f"after mono downmix); ViSQOL cannot score it")
    return mono


class SpectrogramCache:
    """Memoises visqol-python's gammatone spectrogram builder by the exact input samples.

    Why: for every pair, visqol-python builds the reference's full spectrogram and, in the fine
    realignment, one spectrogram per reference patch; with 22 conditions per excerpt that is 22
    rebuilds of the same arrays, two thirds of ViSQOL's time being gammatone filtering. The key
    is a hash of the samples' bytes (plus rate, window size and overlap), so a hit returns a copy
    of what the builder computed for bit-identical input: labels are unchanged (the conformance
    tests run with the cache on). Least recently used entries go once ``max_bytes`` is
    exceeded; the degraded signals' entries, never reused, age out first.
    """

    def __init__(self, builder: GammatoneSpectrogramBuilder, max_bytes: int):
        self.builder = builder
        self.max_bytes = int(max_bytes)
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple, Spectrogram] = OrderedDict()
        self._bytes = 0

    def __getattr__(self, name: str):
        if name == "builder":  # not yet set (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.builder, name)  # filter_bank, speech_mode, ...: the builder's own

    def build(self, signal: AudioSignal, window: AnalysisWindow) -> Spectrogram:
        """``GammatoneSpectrogramBuilder.build``, served from the cache when the input repeats."""
        from visqol.gammatone import Spectrogram

        data = np.ascontiguousarray(signal.data)
        digest = hashlib.blake2b(data.view(np.uint8), digest_size=16).digest()
        key = (digest, data.dtype.str, data.shape, signal.sample_rate, window.size,
               window.overlap)
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            found = self.builder.build(signal, window)
            self._entries[key] = found
            self._bytes += found.data.nbytes
            while self._bytes > self.max_bytes:  # an entry larger than the cache goes too
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.data.nbytes
        else:
            self.hits += 1
            self._entries.move_to_end(key)
        # copies: the caller owns what it gets, as with a fresh build
        return Spectrogram(found.data.copy(), center_freq_bands=found.center_freq_bands.copy())


#: Labeller names for ``deepaq-prep build --labeller`` and :func:`make_labeller`.
LABELLERS = ("batched", "visqol-python")


def make_labeller(name: str = "batched", device: str | None = "cpu"):
    """The audio-mode corpus labeller by name: ``batched`` (:class:`~deepaq.visqol_batched.
    BatchedVisqolLabeller`, numpy on ``cpu``, torch on any other device) or ``visqol-python``
    (:class:`VisqolLabeller`, the reference implementation; CPU only). Both have ``score``,
    ``score_many``, ``score_files``, ``info`` and ``warmup``."""
    if name == "batched":
        from deepaq.visqol_batched import BatchedVisqolLabeller

        return BatchedVisqolLabeller(device=None if device in (None, "cpu") else device)
    if name == "visqol-python":
        if device not in (None, "cpu"):
            raise ValueError(f"labeller visqol-python runs on the CPU only, not {device!r}")
        return VisqolLabeller(mode="audio")
    raise ValueError(f"labeller must be one of {', '.join(LABELLERS)}, got {name!r}")


def labeller_implementation(name: str) -> str:
    """Provenance string of a labeller (recorded in ``corpus.yaml``)."""
    if name == "batched":
        from deepaq.visqol_batched import BATCHED_IMPLEMENTATION

        return BATCHED_IMPLEMENTATION
    if name == "visqol-python":
        return VISQOL_IMPLEMENTATION
    raise ValueError(f"labeller must be one of {', '.join(LABELLERS)}, got {name!r}")


def _default_svr_model() -> str:
    from visqol.api import _DEFAULT_SVR_MODEL

    return _DEFAULT_SVR_MODEL
