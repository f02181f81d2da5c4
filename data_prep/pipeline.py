"""Corpus building: tracks -> excerpts -> coded conditions -> ViSQOL labels -> manifest.

The unit of work is one excerpt (its clean audio plus every codec condition and their labels), so
``--jobs`` parallelises over excerpts, ``--shard K/N`` splits them between machines, and
``--resume`` skips excerpts already finished (their rows are appended, fsync'd, to a progress file
as each completes). The manifest is written once, atomically, in canonical order.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepaq.manifest import condition_name, excerpt_id, make_row, write_manifest
from data_prep.families import load_families
from data_prep.sources import Track, discover
from data_prep.splits import assign_splits
from deepaq.audio import (
    AudioError,
    apply_channel_policy,
    audio_duration,
    check_audio,
    load_audio,
    rms_dbfs,
    write_audio,
)
from deepaq.records import JsonlAppender, atomic_write_text, write_jsonl

SAMPLE_RATE = 48000
LABEL_DECIMALS = 6
DEFAULT_GRID = Path(__file__).resolve().parents[1] / "configs" / "data_prep" / "default_grid.yaml"


@dataclass
class CorpusConfig:
    """Everything that determines a corpus; saved as ``corpus.yaml`` beside the manifest."""

    excerpt_seconds: float = 10.0
    hop_seconds: float | None = None  # None: back-to-back excerpts
    min_excerpt_seconds: float = 2.0  # a track shorter than one excerpt still gives one if this long
    max_excerpts_per_track: int | None = None
    channels: str = "keep"  # keep (mono/stereo as is; >2 channels -> stereo), mono, stereo
    silence_threshold_dbfs: float = -50.0
    grid: str | dict = str(DEFAULT_GRID)
    splits: dict = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    seed: int = 0
    labels: str = "visqol"  # visqol | none


@dataclass(frozen=True)
class ExcerptPlan:
    track: Track
    excerpt_id: str
    start: float  # seconds within the track's range
    seconds: float
    split: str


def plan_excerpts(tracks: list[Track], cfg: CorpusConfig) -> tuple[list[ExcerptPlan], list[dict]]:
    """Excerpt positions from file headers (no decoding of WAV/FLAC); unusable files -> rejects."""
    hop = cfg.hop_seconds or cfg.excerpt_seconds
    if cfg.excerpt_seconds <= 0 or hop <= 0:
        raise ValueError("excerpt_seconds and hop_seconds must be > 0")
    splits = assign_splits([t.track_id for t in tracks], cfg.splits, cfg.seed)
    plans: list[ExcerptPlan] = []
    rejects: list[dict] = []
    for t in tracks:
        try:
            if not Path(t.path).exists():
                raise AudioError(t.path, "file not found")
            if Path(t.path).stat().st_size == 0:
                raise AudioError(t.path, "empty file (0 bytes)")
            duration = audio_duration(t.path)
        except AudioError as exc:
            rejects.append({"key": t.track_id, "path": t.path, "stage": "input",
                            "reason": exc.problem})
            continue
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file reject
            rejects.append({"key": t.track_id, "path": t.path, "stage": "input",
                            "reason": f"unreadable or corrupt audio ({exc})"})
            continue
        begin = t.start_time or 0.0
        end = min(duration, t.end_time) if t.end_time is not None else duration
        length = end - begin
        if length <= 0:
            rejects.append({"key": t.track_id, "path": t.path, "stage": "input",
                            "reason": f"zero-length audio ({duration:.3f} s, range {begin}-{end})"})
            continue
        if length < cfg.excerpt_seconds:
            starts = [0.0] if length >= cfg.min_excerpt_seconds else []
            seconds = length
            if not starts:
                rejects.append({"key": t.track_id, "path": t.path, "stage": "input",
                                "reason": f"too short ({length:.2f} s < "
                                          f"{cfg.min_excerpt_seconds} s)"})
        else:
            n = math.floor((length - cfg.excerpt_seconds) / hop + 1e-9) + 1
            starts = [i * hop for i in range(n)]
            seconds = cfg.excerpt_seconds
        if cfg.max_excerpts_per_track:
            starts = starts[: cfg.max_excerpts_per_track]
        for s in starts:
            plans.append(ExcerptPlan(t, excerpt_id(t.track_id, begin + s), begin + s, seconds,
                                     splits[t.track_id]))
    return plans, rejects


def _shard(plans: list[ExcerptPlan], shard: tuple[int, int] | None) -> list[ExcerptPlan]:
    if shard is None:
        return plans
    k, n = shard
    if not (1 <= k <= n):
        raise ValueError(f"shard must be K/N with 1 <= K <= N, got {k}/{n}")
    return [p for i, p in enumerate(plans) if i % n == k - 1]


# -- worker -------------------------------------------------------------------------------------

_WORKER: dict = {}


def _labeller(kind: str):
    if kind == "none":
        return None
    if "labeller" not in _WORKER:
        from deepaq.visqol import VisqolLabeller

        _WORKER["labeller"] = VisqolLabeller(mode="audio")
    return _WORKER["labeller"]


def _keep_channels(x: np.ndarray, policy: str) -> np.ndarray:
    if policy == "keep":
        return x if x.shape[0] <= 2 else apply_channel_policy(x, "stereo")
    return apply_channel_policy(x, policy)  # type: ignore[arg-type]


def process_excerpt(plan: ExcerptPlan, cfg: CorpusConfig, grid: list, out_dir: str) -> dict:
    """Clean excerpt + every coded condition + labels for one excerpt: a progress record.

    ``timing`` holds seconds per stage: read, write, visqol, codec (whole ``code_excerpt`` calls)
    and, within codec, its measured steps resample, encode (also as ``encode <codec>``), decode
    and align.
    """
    from deepaq.alignment import ReferenceSignal
    from data_prep.codecs import code_excerpt

    out = Path(out_dir)
    t = plan.track
    record = {"key": plan.excerpt_id, "rows": [], "reject": None, "skip": None, "timing": {}}
    timing = Counter()
    try:
        t0 = time.perf_counter()
        x = load_audio(t.path, sample_rate=SAMPLE_RATE, start=plan.start,
                       end=plan.start + plan.seconds)
        x = _keep_channels(check_audio(x, SAMPLE_RATE, t.path), cfg.channels)
        want = round(plan.seconds * SAMPLE_RATE)
        x = np.ascontiguousarray(np.clip(x[:, :want], -1.0, 1.0))  # as its FLAC will hold it
        timing["read"] += time.perf_counter() - t0
    except AudioError as exc:
        record["reject"] = {"key": plan.excerpt_id, "path": t.path, "stage": "excerpt",
                            "reason": exc.problem}
        return record
    if x.shape[1] < int(cfg.min_excerpt_seconds * SAMPLE_RATE) and x.shape[1] < want:
        record["skip"] = {"key": plan.excerpt_id, "reason": "too short"}
        return record
    level = rms_dbfs(x)
    if level < cfg.silence_threshold_dbfs:
        record["skip"] = {"key": plan.excerpt_id,
                          "reason": "silent" if level == -math.inf else "too quiet",
                          "rms_dbfs": None if level == -math.inf else round(level, 2)}
        return record
    folder = Path("audio") / t.track_id / plan.excerpt_id.rsplit("__", 1)[1]
    ref_rel = str(folder / "clean.flac")
    t0 = time.perf_counter()
    write_audio(out / ref_rel, x, SAMPLE_RATE)
    timing["write"] += time.perf_counter() - t0
    labeller = _labeller(cfg.labels)
    common = {"excerpt_id": plan.excerpt_id, "track_id": t.track_id, "source_path": t.path,
                  "start_time": round(plan.start, 6), "end_time": round(plan.start + plan.seconds, 6),
                  "split": plan.split, "sample_rate": SAMPLE_RATE, "channels": int(x.shape[0]),
                  "num_samples": int(x.shape[1]), "reference": ref_rel}

    def label(deg: np.ndarray, ref: np.ndarray | None = None) -> float | None:
        if labeller is None:
            return None
        t1 = time.perf_counter()
        value = float(labeller.score(x if ref is None else ref, deg, sample_rate=SAMPLE_RATE))
        timing["visqol"] += time.perf_counter() - t1
        # ViSQOL differs run to run in the 14th digit (FFT/threading order); 6 decimals keeps
        # manifests byte-identical and is far below its 1e-4 conformance tolerance.
        return round(value, LABEL_DECIMALS)

    rows = [make_row(key=f"{plan.excerpt_id}__clean", condition="clean", codec=None, encoder=None,
                     bitrate_requested_kbps=math.inf, bitrate_measured_kbps=math.inf,
                     bitrate_label=math.inf, coded_sample_rate=SAMPLE_RATE,
                     delay_removed_samples=0, alignment_lag=0, path=ref_rel, visqol=label(x),
                     **common)]
    t0 = time.perf_counter()
    reference = ReferenceSignal(x)  # analysed once for the alignment of every condition
    elapsed = time.perf_counter() - t0
    timing.update(align=elapsed, codec=elapsed)  # alignment work, inside the codec stage
    for spec in grid:
        cond = condition_name(spec.codec, spec.bitrate_kbps)
        try:
            t1 = time.perf_counter()
            coded = code_excerpt(reference, spec)
            timing["codec"] += time.perf_counter() - t1
            timing.update(coded.seconds)
            timing[f"encode {spec.codec}"] += coded.seconds.get("encode", 0.0)
        except Exception as exc:  # noqa: BLE001 - one failing condition must not stop the corpus
            record["reject"] = {"key": f"{plan.excerpt_id}__{cond}", "path": t.path,
                                "stage": "codec", "reason": str(exc)}
            continue
        rel = str(folder / f"{cond}.flac")
        # codecs overshoot full scale on loud music; the FLAC keeps [-1, 1], and the label must
        # describe the stored file (unclipped labels differed from the files' by up to 0.005)
        stored = np.clip(coded.audio, -1.0, 1.0)
        t1 = time.perf_counter()
        write_audio(out / rel, stored, SAMPLE_RATE)
        timing["write"] += time.perf_counter() - t1
        rows.append(make_row(
            key=f"{plan.excerpt_id}__{cond}", condition=cond, codec=spec.codec,
            encoder=coded.encoder, bitrate_requested_kbps=float(coded.bitrate_requested_kbps),
            bitrate_measured_kbps=round(float(coded.bitrate_measured_kbps), 3),
            bitrate_label=round(float(coded.bitrate_measured_kbps), 3),
            coded_sample_rate=int(coded.coded_sample_rate),
            delay_removed_samples=int(coded.delay_removed_samples),
            alignment_lag=int(coded.alignment_lag), path=rel, visqol=label(stored),
            **common))
    families = load_families(cfg.grid)
    if families:  # the grid's degradations: section (data_prep.families)
        from data_prep.families import family_items, family_rows, load_stems

        t1 = time.perf_counter()
        try:
            stems = load_stems(t.stems, plan.start, plan.seconds, x.shape[1], SAMPLE_RATE,
                               lambda y: _keep_channels(y, cfg.channels)) if t.stems else None
            items = family_items(x, SAMPLE_RATE, families, plan.excerpt_id, cfg.seed, stems,
                                 list(t.stems))
        except AudioError as exc:
            stems, items = None, []
            record["reject"] = {"key": plan.excerpt_id, "path": exc.path or t.path,
                                "stage": "stems", "reason": exc.problem}
        new, errors = family_rows(items, out, folder, common, lambda r, d: label(d, ref=r), x,
                                  SAMPLE_RATE)
        rows += new
        for e in errors:
            record["reject"] = {"key": f"{plan.excerpt_id}__{e['condition']}", "path": t.path,
                                "stage": "family", "reason": e["reason"]}
        timing["families"] += time.perf_counter() - t1
    record["rows"] = rows
    record["timing"] = {k: round(v, 4) for k, v in timing.items()}
    return record


def _run_one(args) -> dict:
    return process_excerpt(*args)


# -- driver -------------------------------------------------------------------------------------

@dataclass
class BuildResult:
    manifest: Path
    rejects: Path
    num_items: int
    num_excerpts: int
    skipped: Counter
    num_rejects: int
    timing: Counter


def _tag(shard: tuple[int, int] | None) -> str:
    return "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"


def build_corpus(inputs: list[str | os.PathLike], out_dir: str | os.PathLike,
                 config: CorpusConfig | None = None, jobs: int = 1,
                 shard: tuple[int, int] | None = None, resume: bool = False,
                 progress: bool = True) -> BuildResult:
    """Build (or resume) a labelled coded corpus in ``out_dir``; returns where things went."""
    import yaml
    from tqdm import tqdm

    from data_prep.codecs import load_grid

    cfg = config or CorpusConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = load_grid(cfg.grid)
    tracks = discover(inputs)
    plans, rejects = plan_excerpts(tracks, cfg)
    if shard is not None and shard[0] != 1:
        rejects = []  # input-level rejects are reported once, by shard 1
    mine = _shard(plans, shard)
    tag = _tag(shard)
    saved = dataclasses.asdict(cfg)
    saved["grid"] = [dataclasses.asdict(s) for s in grid]
    saved["degradations"] = [f.as_dict() for f in load_families(cfg.grid)]
    atomic_write_text(out / "corpus.yaml", yaml.safe_dump(saved, sort_keys=False))

    progress_path = out / ".progress" / f"excerpts{tag}.jsonl"
    skipped: Counter = Counter()
    timing: Counter = Counter()
    with JsonlAppender(progress_path, resume=resume) as log:
        todo = [p for p in mine if p.excerpt_id not in log.done]
        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit="excerpt",
                   desc="deepaq-prep build", disable=not progress, file=sys.stderr)
        if jobs > 1:
            # longest first: short excerpts fill the workers' ends instead of one long excerpt
            # running alone at the end (the manifest is written in canonical order regardless)
            todo = sorted(todo, key=lambda p: -p.seconds)
        work = [(p, cfg, grid, str(out)) for p in todo]
        if jobs <= 1:
            results = map(_run_one, work)
            pool = None
        else:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context

            # spawn, not fork: a fork of a process holding torch/numba thread pools can deadlock
            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"))
            results = pool.map(_run_one, work, chunksize=1)
        try:
            for record in results:
                log.write(record)
                bar.update(1)
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        records = [log.done[p.excerpt_id] for p in mine]
    rows: list[dict] = []
    for rec in records:
        rows += rec["rows"]
        if rec.get("reject"):
            rejects.append(rec["reject"])
        if rec.get("skip"):
            skipped[rec["skip"]["reason"]] += 1
        timing.update(rec.get("timing") or {})
    manifest = write_manifest(out / f"manifest{tag}.jsonl", rows)
    rejects_path = write_jsonl(out / f"rejects{tag}.jsonl", rejects)
    return BuildResult(manifest, rejects_path, len(rows), sum(1 for r in records if r["rows"]),
                       skipped, len(rejects), timing)
