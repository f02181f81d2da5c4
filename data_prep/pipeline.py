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
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.families import load_families
from data_prep.sources import Track, discover
from data_prep.splits import assign_splits
from deepaq.audio import (
    AudioError,
    ac_rms_dbfs,
    apply_channel_policy,
    audio_duration,
    check_audio,
    load_audio,
    write_audio,
)
from deepaq.manifest import (
    condition_name,
    config_difference,
    config_hash,
    excerpt_id,
    make_row,
    write_manifest,
)
from deepaq.records import JsonlAppender, atomic_write_text, write_jsonl
from deepaq.resources import codec_grid
from deepaq.sharding import select_shard, shard_tag

SAMPLE_RATE = 48000
LABEL_DECIMALS = 6
SILENT = "silent (AC energy below threshold)"
DEFAULT_GRID = codec_grid("default_grid.yaml")  # package data (deepaq.resources)


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
    labeller: str = "batched"  # batched | visqol-python: same labels (<= 1e-4), batched is faster
    labeller_device: str = "cpu"  # cpu | cuda (batched labeller only)


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


# -- worker -------------------------------------------------------------------------------------

_WORKER: dict = {}


def _labeller(cfg: CorpusConfig):
    if cfg.labels == "none":
        return None
    key = (cfg.labeller, cfg.labeller_device)
    if _WORKER.get("labeller_key") != key:
        from deepaq.visqol import make_labeller

        _WORKER["labeller"] = make_labeller(cfg.labeller, cfg.labeller_device)
        _WORKER["labeller_key"] = key
    return _WORKER["labeller"]


def _keep_channels(x: np.ndarray, policy: str) -> np.ndarray:
    if policy == "keep":
        return x if x.shape[0] <= 2 else apply_channel_policy(x, "stereo")
    return apply_channel_policy(x, policy)  # type: ignore[arg-type]


def process_excerpt(plan: ExcerptPlan, cfg: CorpusConfig, grid: list, out_dir: str,
                    families: list | None = None) -> dict:
    """Clean excerpt + every coded condition + labels for one excerpt: a progress record.

    ``timing`` holds seconds per stage: read, write, visqol, codec (whole ``code_excerpt`` calls)
    and, within codec, its measured steps resample, encode (also as ``encode <codec>``), decode
    and align. ``families`` is the grid's ``degradations:`` section (``load_families``; None:
    read from ``cfg.grid``).
    """
    from data_prep.codecs import code_excerpt
    from deepaq.alignment import ReferenceSignal

    out = Path(out_dir)
    t = plan.track
    # rejects: every failure of this excerpt (one per failed condition); a record with any is
    # not done, so --resume retries it
    record = {"key": plan.excerpt_id, "rows": [], "rejects": [], "skip": None, "timing": {}}
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
        record["rejects"].append({"key": plan.excerpt_id, "path": t.path, "stage": "excerpt",
                                  "reason": exc.problem})
        return record
    if x.shape[1] < int(cfg.min_excerpt_seconds * SAMPLE_RATE) and x.shape[1] < want:
        record["skip"] = {"key": plan.excerpt_id, "reason": "too short"}
        return record
    # AC level: a DC offset is no signal (DC-only input passed a plain RMS test, then failed
    # every codec condition's alignment)
    level = ac_rms_dbfs(x)
    if level < cfg.silence_threshold_dbfs:
        record["skip"] = {"key": plan.excerpt_id, "reason": SILENT,
                          "rms_dbfs": None if level == -math.inf else round(level, 2)}
        return record
    folder = Path("audio") / t.track_id / plan.excerpt_id.rsplit("__", 1)[1]
    ref_rel = str(folder / "clean.flac")
    t0 = time.perf_counter()
    write_audio(out / ref_rel, x, SAMPLE_RATE)
    timing["write"] += time.perf_counter() - t0
    labeller = _labeller(cfg)
    common = {"excerpt_id": plan.excerpt_id, "track_id": t.track_id, "source_path": t.path,
                  "start_time": round(plan.start, 6), "end_time": round(plan.start + plan.seconds, 6),
                  "split": plan.split, "sample_rate": SAMPLE_RATE, "channels": int(x.shape[0]),
                  "num_samples": int(x.shape[1]), "reference": ref_rel}

    # labelled together at the end, one call per reference (the batched labeller analyses a
    # reference once for all its items); label() returns the item's place in that batch
    pending: list[tuple[np.ndarray, np.ndarray]] = []

    def label(deg: np.ndarray, ref: np.ndarray | None = None) -> int | None:
        if labeller is None:
            return None
        pending.append((x if ref is None else ref, deg))
        return len(pending) - 1

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
            record["rejects"].append({"key": f"{plan.excerpt_id}__{cond}", "path": t.path,
                                      "stage": "codec", "reason": str(exc)})
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
            bitrate_label=round(float(coded.bitrate_measured_kbps) / x.shape[0], 3),
            coded_sample_rate=int(coded.coded_sample_rate),
            delay_removed_samples=int(coded.delay_removed_samples),
            alignment_lag=int(coded.alignment_lag), path=rel, visqol=label(stored),
            **common))
    if families is None:
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
            items = []
            record["rejects"].append({"key": plan.excerpt_id, "path": exc.path or t.path,
                                      "stage": "stems", "reason": exc.problem})
        new, errors = family_rows(items, out, folder, common, lambda r, d: label(d, ref=r), x,
                                  SAMPLE_RATE)
        rows += new
        for e in errors:
            entry = {"key": f"{plan.excerpt_id}__{e['condition']}", "path": t.path,
                     "stage": "family", "reason": e["reason"]}
            if e["omitted"]:
                record.setdefault("omitted", []).append(entry)
            else:
                record["rejects"].append(entry)
        timing["families"] += time.perf_counter() - t1
    if labeller is not None and pending:
        t1 = time.perf_counter()
        values: list[float] = [math.nan] * len(pending)
        groups: dict[int, list[int]] = {}
        for i, (ref, _) in enumerate(pending):
            groups.setdefault(id(ref), []).append(i)
        for members in groups.values():
            ref = pending[members[0]][0]
            got = labeller.score_many(ref, [pending[i][1] for i in members],
                                      sample_rate=SAMPLE_RATE)
            for i, value in zip(members, got):
                values[i] = float(value)
        timing["visqol"] += time.perf_counter() - t1
        for row in rows:
            if row["visqol"] is not None:
                # ViSQOL differs run to run in the 14th digit (FFT/threading order); 6 decimals
                # keeps manifests byte-identical, far below its 1e-4 conformance tolerance.
                row["visqol"] = round(values[row["visqol"]], LABEL_DECIMALS)
    record["rows"] = rows
    record["timing"] = {k: round(v, 4) for k, v in timing.items()}
    return record


def _run_one(args) -> dict:
    return process_excerpt(*args)


def _worker_init(parent: int) -> None:
    """Make a pool worker exit when its parent dies (``kill -9`` of ``build -j N`` left the
    workers, and through them the resource tracker, waiting forever).

    Linux delivers SIGKILL on the parent's death (``PR_SET_PDEATHSIG``); a watchdog thread polling
    the parent id covers other systems and a parent that died before this ran.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watchdog",
                     daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


# -- driver -------------------------------------------------------------------------------------

CONFIG_KEY = "#config"  # the progress log's first record: the configuration it was built with


def _labeller_implementation(cfg: CorpusConfig) -> str | None:
    if cfg.labels == "none":
        return None
    from deepaq.visqol import labeller_implementation

    return labeller_implementation(cfg.labeller)


def resolved_config(cfg: CorpusConfig, grid: list, tracks: list[Track] | None = None,
                    families: list | None = None) -> dict:
    """Everything that decides a corpus's rows: the config with its grid read, the labeller's and
    the codec library's versions, and the track ids (splits and shards are cut from the whole
    list, so a resumed run with other tracks would split one track's excerpts). Resume, shards and
    merge refuse to mix two of these. ``families``: ``load_families(cfg.grid)`` if already read
    (None: read here)."""
    import hashlib
    from importlib.metadata import version

    saved = dataclasses.asdict(cfg)
    # where the labeller runs does not decide the rows (its backends agree; tested on CPU): a build
    # started on a CPU may resume on a GPU
    saved.pop("labeller_device", None)
    saved["grid"] = [dataclasses.asdict(s) for s in grid]
    if families is None:
        families = load_families(cfg.grid)
    saved["degradations"] = [f.as_dict() for f in families]
    saved.update(sample_rate=SAMPLE_RATE, label_decimals=LABEL_DECIMALS,
                 bitrate_label="measured kbps per channel",
                 labeller_implementation=_labeller_implementation(cfg),
                 codec_library=f"av {version('av')}")
    if tracks is not None:
        ids = "\n".join(f"{t.track_id}|{t.start_time}|{t.end_time}" for t in tracks)
        saved["tracks"] = {"count": len(tracks),
                           "ids_sha256": hashlib.sha256(ids.encode("utf-8")).hexdigest()[:16]}
    saved["config_hash"] = config_hash(saved)
    return saved


def _check_progress_config(log: JsonlAppender, config: dict) -> None:
    """Refuse to resume progress made with another configuration; record it in a new log."""
    header = log.done.get(CONFIG_KEY)
    if header is None and log.done:
        raise ValueError(f"{log.path}: progress log has no configuration record (an older "
                         "deepaq-prep wrote it), so it cannot be resumed safely: rerun with "
                         "--overwrite")
    if header is not None:
        diff = config_difference(config, header["config"], "this run", "the progress log")
        if diff:
            raise ValueError(f"{log.path}: --resume with another configuration ({diff}): rerun "
                             "with the same settings, or with --overwrite")
        return
    log.write({"key": CONFIG_KEY, "config_hash": config["config_hash"], "config": config})

@dataclass
class BuildResult:
    manifest: Path
    rejects: Path
    num_items: int
    num_excerpts: int
    skipped: Counter
    num_rejects: int
    timing: Counter


def build_corpus(inputs: list[str | os.PathLike], out_dir: str | os.PathLike,
                 config: CorpusConfig | None = None, jobs: int = 1,
                 shard: tuple[int, int] | None = None, resume: bool = False,
                 progress: bool = True, overwrite: bool = False) -> BuildResult:
    """Build (or resume) a labelled coded corpus in ``out_dir``; returns where things went.

    A folder that already holds this build (its manifest or progress log) is refused unless
    ``resume`` continues it or ``overwrite`` starts it over: a repeated command must not throw
    away finished work."""
    import yaml
    from tqdm import tqdm

    from data_prep.codecs import load_grid

    cfg = config or CorpusConfig()
    out = Path(out_dir)
    grid = load_grid(cfg.grid)
    families = load_families(cfg.grid)
    tracks = discover(inputs)
    plans, rejects = plan_excerpts(tracks, cfg)
    if shard is not None and shard[0] != 1:
        rejects = []  # input-level rejects are reported once, by shard 1
    mine = select_shard(plans, shard)  # the split deepaq score --shard uses too
    tag = shard_tag(shard)
    saved = resolved_config(cfg, grid, tracks, families)
    out.mkdir(parents=True, exist_ok=True)  # only once the settings and inputs are known good

    progress_path = out / ".progress" / f"excerpts{tag}.jsonl"
    earlier = [p for p in (out / f"manifest{tag}.jsonl", progress_path) if p.exists()]
    if earlier and not (resume or overwrite):
        raise ValueError(f"{out}: already holds a build ({earlier[0].relative_to(out)}): "
                         "--resume continues it, --overwrite starts it over")
    skipped: Counter = Counter()
    timing: Counter = Counter()
    with JsonlAppender(progress_path, resume=resume) as log:
        _check_progress_config(log, saved)
        atomic_write_text(out / "corpus.yaml", yaml.safe_dump(saved, sort_keys=False))
        # an excerpt with a failed condition (or unreadable audio) is not done: resume retries it
        todo = [p for p in mine if p.excerpt_id not in log.done
                or log.done[p.excerpt_id].get("rejects")]
        bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit="excerpt",
                   desc="deepaq-prep build", disable=not progress, file=sys.stderr)
        if jobs > 1:
            # longest first: short excerpts fill the workers' ends instead of one long excerpt
            # running alone at the end (the manifest is written in canonical order regardless)
            todo = sorted(todo, key=lambda p: -p.seconds)
        work = [(p, cfg, grid, str(out), families) for p in todo]
        if jobs <= 1:
            results = map(_run_one, work)
            pool = None
        else:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context

            # spawn, not fork: a fork of a process holding torch/numba thread pools can deadlock
            pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"),
                                       initializer=_worker_init, initargs=(os.getpid(),))
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
        rejects += rec.get("rejects") or []
        for _ in rec.get("omitted") or []:
            skipped["invariance left out (it would clip)"] += 1
        if rec.get("skip"):
            skipped[rec["skip"]["reason"]] += 1
        timing.update(rec.get("timing") or {})
    manifest = write_manifest(out / f"manifest{tag}.jsonl", rows, config=saved, shard=shard)
    rejects_path = write_jsonl(out / f"rejects{tag}.jsonl", rejects)
    return BuildResult(manifest, rejects_path, len(rows), sum(1 for r in records if r["rows"]),
                       skipped, len(rejects), timing)
