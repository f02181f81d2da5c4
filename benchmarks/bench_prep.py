"""Corpus-building throughput, where the time goes, and its cost over ViSQOL alone.

Issue 2's benchmark: build a corpus from the shared references with the full codec grid
(``configs/data_prep/default_grid.yaml``, 21 conditions) and print a Markdown table of
excerpts/s and pairs/s, the share of time spent in ViSQOL, encode, decode and alignment, peak
memory, and the ratio of pipeline wall time to ViSQOL-only wall time on the same pairs (target:
pipeline <= 1.15x ViSQOL-only, i.e. the codec and I/O work is nearly free), for each ``--jobs``.

Usage::

    .venv/bin/python benchmarks/bench_prep.py                 # 10 refs, 10 s excerpts, jobs 1 2
    .venv/bin/python benchmarks/bench_prep.py --quick         # 2 refs, 3 s excerpts
    .venv/bin/python benchmarks/bench_prep.py --refs 4 --jobs 2 --work /tmp/bp

How it measures (why it is done this way):

* Every timed run (pipeline or ViSQOL-only, per ``--jobs``) is a fresh Python process, so no run
  inherits another's warm labeller or caches and each reports its own peak memory
  (``resource.getrusage`` of itself and of its reaped pool workers, max RSS). A throwaway process
  first loads ViSQOL once so numba's on-disk kernel cache exists; after that every run pays the
  same per-process start-up (labeller construction), as a real ``deepaq-prep build`` does.
* ViSQOL-only = the corpus's own reference/item FLAC pairs (every manifest row, clean included,
  since the pipeline labels clean vs itself too) scored with ``VisqolLabeller`` alone, one task
  per excerpt, with the same number of processes as the pipeline run it is compared with. The
  target ratio compares with the pipeline's own labeller (spectrogram cache on); a second
  ViSQOL-only run with ``cache_mib=0`` (visqol-python as shipped, what scoring the pairs by hand
  costs) is printed beside it, unless ``--no-uncached``.
* The pipeline itself measures its stages (``.progress`` timing, summed into
  ``BuildResult.timing``): read, write, visqol, codec, and within codec the measured resample,
  encode (also per codec), decode and align seconds of every ``code_excerpt`` call. The tables
  report those numbers directly, per run; nothing is re-timed or apportioned here.
* Shares are of the run's process-seconds (wall x jobs); "other" is what no stage recorded:
  pool start-up, scheduling and idle workers, manifest writing.
* The machine may be shared, so the load average is printed at the start of every run; the
  "in-run" ratio (pipeline process-seconds / its own ViSQOL seconds) does not depend on load
  drift between the two runs being compared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from shared_data import RECORDINGS

REPO = Path(__file__).resolve().parents[1]
SHARED = RECORDINGS
DEFAULT_GRID = REPO / "configs" / "data_prep" / "default_grid.yaml"
TARGET_RATIO = 1.15
#: Plain references only: "guitar48_stereo.wav", not "guitar48_stereo_5_sec.wav" or "_64kbps_aac".
REFERENCE_NAME = re.compile(r"[A-Za-z]+48_stereo\.wav")


# -- inputs ---------------------------------------------------------------------------------------

def shared_references(count: int) -> list[Path]:
    """The first ``count`` plain shared references (sorted by name), so runs are comparable."""
    if not SHARED.is_dir():
        raise SystemExit(f"shared references not found: {SHARED}")
    refs = sorted(p for p in SHARED.iterdir() if REFERENCE_NAME.fullmatch(p.name))
    if count < 1 or count > len(refs):
        raise SystemExit(f"--refs must be 1..{len(refs)}, got {count}")
    return refs[:count]


def corpus_config(spec: dict):
    """The CorpusConfig of the pipeline runs, from the run spec."""
    from data_prep.pipeline import CorpusConfig

    return CorpusConfig(excerpt_seconds=spec["excerpt_seconds"], grid=spec["grid"],
                        max_excerpts_per_track=spec["excerpts_per_track"] or None)


def _rusage_mib() -> dict[str, float]:
    """Peak RSS of this process and of its largest reaped child (Linux reports KiB)."""
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"rss_self_mib": self_kib / 1024, "rss_child_mib": child_kib / 1024}


# -- timed runs (each in its own process) ---------------------------------------------------------

def run_warmup(spec: dict) -> dict:
    """Build a labeller once so numba's kernel cache exists; report the fresh-process start-up."""
    from deepaq.visqol import VisqolLabeller

    t0 = time.perf_counter()
    labeller = VisqolLabeller(mode="audio")
    init = time.perf_counter() - t0
    t0 = time.perf_counter()
    labeller.warmup()
    return {"init_s": init, "first_score_s": time.perf_counter() - t0}


def run_pipeline(spec: dict) -> dict:
    """One ``build_corpus`` call, timed end to end, with the pipeline's own stage timing."""
    from data_prep.pipeline import build_corpus

    out = Path(spec["out"])
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = build_corpus(spec["inputs"], out, corpus_config(spec), jobs=spec["jobs"],
                          progress=True)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "load": load, "excerpts": result.num_excerpts,
            "items": result.num_items, "rejects": result.num_rejects,
            "skipped": dict(result.skipped), "timing": dict(result.timing),
            "manifest": str(result.manifest), **_rusage_mib()}


_LABELLER: dict = {}


def score_excerpt(task: tuple[str, str, list[str], float]) -> list[tuple[float | None, float]]:
    """Score one excerpt's items against its reference from FLAC: [(score or None, seconds)]."""
    from deepaq.audio import AudioError, read_audio
    from deepaq.visqol import VisqolLabeller

    root, ref_rel, item_rels, cache_mib = task
    if "labeller" not in _LABELLER:
        _LABELLER["labeller"] = VisqolLabeller(mode="audio", cache_mib=cache_mib)
    labeller = _LABELLER["labeller"]
    ref, sr = read_audio(Path(root) / ref_rel)
    scores = []
    for rel in item_rels:
        t0 = time.perf_counter()  # reset after the read: only ViSQOL itself is timed
        try:
            deg, _ = read_audio(Path(root) / rel)  # the corpus is all 48 kHz, as ref
            t0 = time.perf_counter()
            value: float | None = labeller.score(ref, deg, sample_rate=sr)
        except AudioError:
            value = None
        scores.append((value, time.perf_counter() - t0))
    return scores


def run_visqol_only(spec: dict) -> dict:
    """ViSQOL alone on a built corpus's pairs, one task per excerpt, ``jobs`` processes."""
    from tqdm import tqdm

    from deepaq.records import read_jsonl

    manifest = Path(spec["manifest"])
    rows = read_jsonl(manifest)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["excerpt_id"], row["reference"])].append(row)
    tasks = [(str(manifest.parent), ref, [r["path"] for r in items], spec["cache_mib"])
             for (_, ref), items in groups.items()]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    if spec["jobs"] <= 1:
        pool = None
        results = map(score_excerpt, tasks)
    else:
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context

        pool = ProcessPoolExecutor(max_workers=spec["jobs"], mp_context=get_context("spawn"))
        results = pool.map(score_excerpt, tasks, chunksize=1)
    scored: list[tuple[float | None, float]] = []
    try:
        desc = "ViSQOL only" + ("" if spec["cache_mib"] else " (no cache)")
        for chunk in tqdm(results, total=len(tasks), unit="excerpt", desc=desc,
                          file=sys.stderr):
            scored += chunk
    finally:
        if pool is not None:
            pool.shutdown()
    wall = time.perf_counter() - t0
    items = [r for group in groups.values() for r in group]
    deltas = [abs(s - r["visqol"]) for (s, _), r in zip(scored, items)
              if s is not None and r.get("visqol") is not None]
    return {"wall_s": wall, "load": load, "pairs": len(scored),
            "failed": sum(s is None for s, _ in scored),
            "score_s": sum(t for _, t in scored),
            "max_label_delta": max(deltas) if deltas else None, **_rusage_mib()}


RUNS = {"warmup": run_warmup, "pipeline": run_pipeline, "visqol": run_visqol_only}


def in_fresh_process(kind: str, spec: dict) -> dict:
    """Run ``RUNS[kind](spec)`` in a new interpreter (stderr passes through for progress bars)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "_run", kind, json.dumps(spec)]
    done = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{kind} run failed (exit {done.returncode}): {shlex.join(cmd)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- report ---------------------------------------------------------------------------------------

def machine_facts() -> str:
    """Cores, CPU model and load: the context any timing on a shared machine needs."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{os.cpu_count()} cores ({usable} usable), {model}; load average at start {load} "
            f"(1/5/15 min); Python {platform.python_version()}, {platform.system()} "
            f"{platform.release()}")


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole > 0 else "n/a"


def _verdict(ratio: float, adjusted: float) -> str:
    """Met only if both ratios agree: on a shared machine the raw one alone can flip either way."""
    met = [r <= TARGET_RATIO for r in (ratio, adjusted)]
    return "yes" if all(met) else "NO" if not any(met) else "unclear (load)"


def _mib(value: float) -> str:
    return f"{value:.0f}" if value > 0 else "-"


def codec_line(jobs: int, pipe: dict, grid: list) -> str:
    """Mean measured milliseconds per coded condition in one pipeline run, by step and codec."""
    t = pipe["timing"]
    n = max(1, pipe["excerpts"] * len(grid))
    ms = {k: 1000 * t.get(k, 0.0) / n for k in ("codec", "encode", "decode", "align", "resample")}
    per_codec = Counter(cs.codec for cs in grid)
    by_codec = ", ".join(f"{c} {1000 * t.get(f'encode {c}', 0.0) / pipe['excerpts'] / k:.1f}"
                         for c, k in per_codec.items()) if pipe["excerpts"] else "n/a"
    return (f"- jobs {jobs}, codec stage per condition (mean ms over {pipe['excerpts']} excerpts "
            f"x {len(grid)} conditions): {ms['codec']:.1f} = encode {ms['encode']:.1f} + decode "
            f"{ms['decode']:.1f} + alignment {ms['align']:.1f} + resample {ms['resample']:.1f} + "
            f"rest {ms['codec'] - ms['encode'] - ms['decode'] - ms['align'] - ms['resample']:.1f}; "
            f"encode by codec: {by_codec}.")


def report(args: argparse.Namespace, refs: list[Path], warm: dict, grid: list,
           runs: list[tuple[int, dict, dict]], facts: str) -> str:
    """The Markdown the benchmark prints: command, machine, throughput/ratio and time shares."""
    lines = [
        (f"## bench_prep: references {len(refs)}, excerpts {args.excerpt_seconds:g} s, "
         f"{len(grid)} coded conditions + clean per excerpt"),
        "",
        f"- command: `{shlex.join([sys.executable, *sys.argv])}` (cwd `{os.getcwd()}`)",
        f"- machine: {facts}",
        f"- references: {', '.join(p.stem for p in refs)}",
        (f"- ViSQOL labeller start-up in a fresh process: {warm['init_s']:.2f} s to build, "
         f"{warm['first_score_s']:.2f} s for a first 1 s pair (every run below pays it once "
         f"per process)"),
        "",
        ("| jobs | excerpts | pairs | pipeline s | excerpts/s | pairs/s | ViSQOL-only s "
         "| pipeline / ViSQOL-only | load-adjusted ratio | target <= 1.15 "
         "| ViSQOL-only s, no cache | pipeline / ViSQOL-only no cache "
         "| peak RSS MiB self / worker (pipeline) | peak RSS MiB self / worker (ViSQOL-only) "
         "| load at start (pipeline, ViSQOL-only) |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|",
    ]
    for jobs, pipe, vq, plain in runs:
        wall = pipe["wall_s"]
        ratio = wall / vq["wall_s"] if vq["wall_s"] > 0 else float("nan")
        pipe_visqol = pipe["timing"].get("visqol", 0.0)
        adjusted = ratio * vq["score_s"] / pipe_visqol if pipe_visqol > 0 else float("nan")
        uncached = (f"{plain['wall_s']:.1f} | {wall / plain['wall_s']:.3f}" if plain
                    else "- | -")
        lines.append(
            f"| {jobs} | {pipe['excerpts']} | {pipe['items']} | {wall:.1f} | "
            f"{pipe['excerpts'] / wall:.3f} | {pipe['items'] / wall:.3f} | {vq['wall_s']:.1f} | "
            f"{ratio:.3f} | {adjusted:.3f} | {_verdict(ratio, adjusted)} | {uncached} | "
            f"{_mib(pipe['rss_self_mib'])} / {_mib(pipe['rss_child_mib'])} | "
            f"{_mib(vq['rss_self_mib'])} / {_mib(vq['rss_child_mib'])} | "
            f"{pipe['load']:.1f}, {vq['load']:.1f} |")
    lines += [
        "",
        ("Share of the pipeline run's process-seconds (wall x jobs), from the pipeline's own "
         "stage timing; encode, decode, alignment and resample are measured inside each "
         "``code_excerpt`` call, rest of codec = the rest of those calls (checks, copies); other "
         "= what no stage records: labeller start-up, pool start-up, idle workers, manifest."),
        "",
        ("| jobs | ViSQOL | codec (all) | encode | decode | alignment | resample + rest of codec "
         "| write FLAC | read source | other |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for jobs, pipe, *_ in runs:
        cap = pipe["wall_s"] * jobs
        t = pipe["timing"]
        codec = t.get("codec", 0.0)
        rest = codec - sum(t.get(k, 0.0) for k in ("encode", "decode", "align"))
        recorded = sum(t.get(k, 0.0) for k in ("visqol", "codec", "write", "read"))
        lines.append(
            f"| {jobs} | {_pct(t.get('visqol', 0.0), cap)} | {_pct(codec, cap)} | "
            f"{_pct(t.get('encode', 0.0), cap)} | {_pct(t.get('decode', 0.0), cap)} | "
            f"{_pct(t.get('align', 0.0), cap)} | {_pct(rest, cap)} | "
            f"{_pct(t.get('write', 0.0), cap)} | {_pct(t.get('read', 0.0), cap)} | "
            f"{_pct(cap - recorded, cap)} |")
    lines += ["", *[codec_line(jobs, pipe, grid) for jobs, pipe, *_ in runs], "",
        ("Load-adjusted ratio = pipeline / ViSQOL-only x (ViSQOL seconds in the ViSQOL-only run "
         "/ ViSQOL seconds in the pipeline run): it cancels a change of machine load between "
         "the two runs. Target met = both ratios <= 1.15. \"No cache\" = ViSQOL-only with "
         "visqol-python as shipped (VisqolLabeller(cache_mib=0)): what labelling the same pairs "
         "costs without this toolkit's spectrogram cache."),
    ]
    for jobs, pipe, vq, _ in runs:
        notes = []
        if pipe["rejects"] or pipe["skipped"]:
            notes.append(f"{pipe['rejects']} rejects, skipped {pipe['skipped']}")
        if vq["failed"]:
            notes.append(f"{vq['failed']} ViSQOL-only pairs failed")
        if vq["max_label_delta"] is not None:
            notes.append(f"ViSQOL-only scores (from 24-bit FLAC) differ from the manifest labels "
                         f"(from memory) by at most {vq['max_label_delta']:.2g}")
        lines.append(f"- jobs {jobs}: " + "; ".join(notes))
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Options from issue 2, plus the grid and excerpts per track (for shorter trial runs)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refs", type=int, default=10, help="how many shared references (first N)")
    ap.add_argument("--excerpt-seconds", type=float, default=10.0)
    ap.add_argument("--excerpts-per-track", type=int, default=1,
                    help="cap per reference (0 = every back-to-back excerpt); with 10 s excerpts "
                         "each 7-16 s reference gives one anyway")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--grid", default=str(DEFAULT_GRID), help="codec grid YAML")
    ap.add_argument("--work", default=None, help="folder for the corpora (kept); default: a "
                                                 "temporary folder, removed afterwards")
    ap.add_argument("--quick", action="store_true", help="2 references, 3 s excerpts")
    ap.add_argument("--no-uncached", dest="uncached", action="store_false",
                    help="skip the ViSQOL-only run without the spectrogram cache")
    args = ap.parse_args(argv)
    if args.quick:
        args.refs, args.excerpt_seconds = 2, 3.0
    if any(j < 1 for j in args.jobs):
        ap.error("--jobs values must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with the hidden ``_run KIND SPEC`` form, one timed run)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_run"]:
        print(json.dumps(RUNS[argv[1]](json.loads(argv[2]))))
        return 0
    from data_prep.codecs import load_grid
    from deepaq.visqol import DEFAULT_CACHE_MIB

    args = parse_args(argv)
    facts = machine_facts()
    refs = shared_references(args.refs)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_prep_"))
    base = {"inputs": [str(p) for p in refs], "excerpt_seconds": args.excerpt_seconds,
            "excerpts_per_track": args.excerpts_per_track, "grid": str(Path(args.grid).resolve())}
    try:
        print("warming up ViSQOL (numba cache) ...", file=sys.stderr)
        warm = in_fresh_process("warmup", {})
        grid = load_grid(base["grid"])
        runs = []
        for jobs in args.jobs:
            out = work / f"bench_prep_jobs{jobs}"
            if out.exists():
                shutil.rmtree(out)  # our own corpus from an earlier run: start clean
            print(f"jobs {jobs}: pipeline ...", file=sys.stderr)
            pipe = in_fresh_process("pipeline", {**base, "out": str(out), "jobs": jobs})
            print(f"jobs {jobs}: ViSQOL only ...", file=sys.stderr)
            vq = in_fresh_process("visqol", {"manifest": pipe["manifest"], "jobs": jobs,
                                             "cache_mib": DEFAULT_CACHE_MIB})
            plain = None
            if args.uncached:
                print(f"jobs {jobs}: ViSQOL only, no cache ...", file=sys.stderr)
                plain = in_fresh_process("visqol", {"manifest": pipe["manifest"], "jobs": jobs,
                                                    "cache_mib": 0})
            runs.append((jobs, pipe, vq, plain))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(report(args, refs, warm, grid, runs, facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
