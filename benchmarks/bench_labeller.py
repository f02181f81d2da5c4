"""The batched ViSQOL labeller against visqol-python as shipped: speed, agreement, memory, corpus.

Usage::

    .venv/bin/python benchmarks/bench_labeller.py                    # 3 refs, 10 s, all parts
    .venv/bin/python benchmarks/bench_labeller.py --refs 2 --build-refs 3
    .venv/bin/python benchmarks/bench_labeller.py --parts label,memory

Parts (``--parts``, comma-separated):

* ``label``: each of the first ``--refs`` shared references gives one excerpt (``--seconds``
  from 1 s in), coded over the grid as ``deepaq-prep build`` codes it; its pairs (clean + every
  condition, all against the clean reference) are scored by ``VisqolLabeller(cache_mib=0)``
  (visqol-python as shipped, pair by pair) and by ``BatchedVisqolLabeller.score_many`` (one call
  per excerpt). The two take turns excerpt by excerpt, so load drift hits both alike. Prints
  pairs/s, the speed-up and the largest label difference.
* ``label2``: the same pairs split over two worker processes running at once, first with
  visqol-python, then with the batched labeller: pairs/s of two processes.
* ``memory``: a fresh process scores one excerpt's items (clean + grid) with the batched
  labeller; prints its peak RSS during the call (Linux ``VmHWM``, reset just before it), its
  RSS before the call, and the peak of tracemalloc-tracked (numpy) allocations during the call.
* ``profile``: cProfile of one batched ``score_many`` call on the second reference's excerpt
  (a whole 10 s excerpt): where the batched labeller's time goes, by function.
* ``conformance``: each upstream conformance case (``shared/.../cases.json``) scored by the
  batched labeller from the files: its difference from the official value.
* ``kernel``: the gammatone filterbank alone on the same 400 frames of a reference: visqol-python's
  numba kernel (one band at a time) against ``visqol_kernels.frame_energies`` (bands
  interleaved), both on one thread, best of three; and the largest difference of their values.
* ``build``: ``build_corpus`` (code + decode + align + label + FLAC, jobs 1) of ``--build-refs``
  shared references, one ``--seconds`` excerpt each, with each labeller; prints whole-pipeline
  pairs/s per core beside labelling alone with visqol-python (pairs/s per core, from ``label``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf
from bench_prep import shared_references  # the same references, in the same order
from shared_data import CONFORMANCE

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GRID = REPO / "configs" / "data_prep" / "default_grid.yaml"


def excerpt_items(path: Path, seconds: float, grid_path: str) -> tuple[np.ndarray, list]:
    """One excerpt of a reference and its items (clean + each grid condition, as stored)."""
    from data_prep.codecs import code_excerpt, load_grid

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    ref = data.T[:, sr: sr + int(seconds * sr)].copy()
    return ref, [ref] + [np.clip(code_excerpt(ref, s).audio, -1, 1) for s in load_grid(grid_path)]


def _labellers():
    from deepaq.visqol import VisqolLabeller
    from deepaq.visqol_batched import BatchedVisqolLabeller

    plain, batched = VisqolLabeller(mode="audio", cache_mib=0), BatchedVisqolLabeller()
    plain.warmup()
    batched.warmup()
    return {"visqol-python": plain, "batched": batched}


def label_one_process(excerpts: list) -> dict:
    labs = _labellers()
    seconds = {k: 0.0 for k in labs}
    worst, pairs = 0.0, 0
    for i, (ref, items) in enumerate(excerpts):
        order = list(labs) if i % 2 == 0 else list(labs)[::-1]
        got = {}
        for key in order:
            t0 = time.perf_counter()
            if key == "batched":
                got[key] = labs[key].score_many(ref, items)
            else:
                got[key] = [labs[key].score(ref, d) for d in items]
            seconds[key] += time.perf_counter() - t0
        worst = max(worst, max(abs(a - b) for a, b in zip(got["visqol-python"], got["batched"])))
        pairs += len(items)
    return {"seconds": seconds, "pairs": pairs, "worst": worst}


def _worker(task: tuple[str, list[str], float, str]) -> tuple[int, float]:
    """Label some excerpts with one labeller in this process: (pairs, seconds)."""
    from deepaq.visqol import make_labeller

    name, paths, seconds, grid = task
    excerpts = [excerpt_items(Path(p), seconds, grid) for p in paths]
    lab = make_labeller(name)
    if name == "visqol-python":
        from deepaq.visqol import VisqolLabeller

        lab = VisqolLabeller(mode="audio", cache_mib=0)
    lab.warmup()
    t0 = time.perf_counter()
    pairs = sum(len(lab.score_many(ref, items)) for ref, items in excerpts)
    return pairs, time.perf_counter() - t0


def label_two_processes(refs: list[Path], seconds: float, grid: str) -> dict:
    halves = [[str(p) for p in refs[0::2]], [str(p) for p in refs[1::2]]]
    out = {}
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        for name in ("visqol-python", "batched"):
            results = list(pool.map(_worker, [(name, h, seconds, grid) for h in halves]))
            out[name] = {"pairs": sum(r[0] for r in results),
                         "seconds": max(r[1] for r in results)}
    return out


def memory_child(path: str, seconds: float, grid: str) -> None:
    """Run in a fresh process: peak memory of one batched ``score_many`` call."""
    import tracemalloc

    from deepaq.visqol_batched import BatchedVisqolLabeller

    ref, items = excerpt_items(Path(path), seconds, grid)
    lab = BatchedVisqolLabeller()
    lab.warmup()
    before = _status_mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:  # Linux: resets VmHWM (peak RSS) to now
        fh.write("5")
    tracemalloc.start()
    lab.score_many(ref, items)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_rss = _status_mib("VmHWM")  # peak RSS since the reset: during the call
    print(f"MEMORY items={len(items)} rss_before={before:.1f} rss_peak={peak_rss:.1f} "
          f"traced_peak={peak / 2**20:.1f}")


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build_with(labeller: str, refs: list[Path], seconds: float, grid: str, work: Path) -> dict:
    from data_prep.pipeline import CorpusConfig, build_corpus

    inputs = work / "inputs"
    if not inputs.exists():
        inputs.mkdir(parents=True)
        for p in refs:
            os.symlink(p, inputs / p.name)
    out = work / f"corpus-{labeller}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = CorpusConfig(excerpt_seconds=seconds, max_excerpts_per_track=1, grid=grid,
                       labeller=labeller)
    from deepaq.visqol import make_labeller

    make_labeller(labeller).warmup()  # kernels compiled/cached before timing, as in a warm run
    t0 = time.perf_counter()
    result = build_corpus([str(inputs)], out, cfg, jobs=1, progress=False)
    wall = time.perf_counter() - t0
    return {"pairs": result.num_items, "wall": wall, "timing": dict(result.timing)}


def conformance() -> None:
    import json

    from deepaq.visqol_batched import BatchedVisqolLabeller

    root = CONFORMANCE
    lab = BatchedVisqolLabeller()
    print("### Upstream conformance, batched labeller\n")
    print("| case | official | batched | difference |\n|---|---:|---:|---:|")
    for case in json.loads((root / "cases.json").read_text())["cases"]:
        got = lab.score_files(root / case["reference"], root / case["degraded"])
        print(f"| {case['name']} | {case['moslqo']:.6f} | {got:.6f} | "
              f"{got - case['moslqo']:+.2g} |")
    print()


def kernel_ratio(path: Path) -> None:
    import numba
    from visqol.numba_accel import _gammatone_spectrogram_numba

    from deepaq.visqol_batched import BatchedVisqolLabeller
    from deepaq.visqol_kernels import frame_energies

    data, _ = sf.read(str(path), dtype="float64", always_2d=True)
    x = np.ascontiguousarray(data.mean(axis=1))
    lab = BatchedVisqolLabeller()
    c, hann, frames = lab.coef, lab.hann, 400
    b_stages = np.ascontiguousarray(np.stack([c[3 * s:3 * s + 3].T for s in range(4)]))
    a_denom = np.ascontiguousarray(np.stack([np.ones(c.shape[1]), c[12], c[13]], axis=1))
    starts = np.arange(frames, dtype=np.int64) * lab.hop
    numba.set_num_threads(1)
    runs = {"visqol-python kernel": lambda: _gammatone_spectrogram_numba(
                x, hann, b_stages, a_denom, lab.window, lab.hop, c.shape[1], frames).T,
            "frame_energies": lambda: frame_energies(x, starts, hann, c)}
    best, values = {}, {}
    for name, run in runs.items():
        values[name] = run()  # compiled / loaded from cache
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
    diff = np.abs(values["frame_energies"] - values["visqol-python kernel"]).max()
    print(f"### Gammatone filterbank kernel, {frames} frames of {path.name}, one thread\n")
    for name, t in best.items():
        print(f"- {name}: {1e3 * t / frames:.3f} ms per frame")
    print(f"- ratio {best['visqol-python kernel'] / best['frame_energies']:.2f}x; largest "
          f"difference of the energies {diff:.2g}\n")


def profile_batched(path: Path, seconds: float, grid: str) -> None:
    import cProfile
    import pstats

    from deepaq.visqol_batched import BatchedVisqolLabeller

    ref, items = excerpt_items(path, seconds, grid)
    lab = BatchedVisqolLabeller()
    lab.warmup()
    prof = cProfile.Profile()
    prof.enable()
    lab.score_many(ref, items)
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt
    print(f"### Where the batched labeller's time goes: {path.name}, {len(items)} items, "
          f"{total:.1f} s under cProfile\n")
    print("| function | own seconds | share |\n|---|---:|---:|")
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:8]
    for (file, line, name), (_, _, own, _, _) in rows:
        print(f"| {Path(file).name}:{name} | {own:.2f} | {own / total:.0%} |")
    print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refs", type=int, default=3, help="references for the label parts")
    ap.add_argument("--build-refs", type=int, default=10, help="references for the build part")
    ap.add_argument("--seconds", type=float, default=10.0, help="excerpt length")
    ap.add_argument("--grid", default=str(DEFAULT_GRID))
    ap.add_argument("--parts", default="label,label2,memory,kernel,profile,build")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child, args.seconds, args.grid)
        return 0
    parts = set(args.parts.split(","))
    refs = shared_references(args.refs)
    print(f"## Batched ViSQOL labeller vs visqol-python as shipped ({args.seconds:g} s excerpts, "
          f"{os.cpu_count()} CPUs, load at start {os.getloadavg()[0]:.2f})\n")
    one = None
    if parts & {"label", "build"}:
        excerpts = [excerpt_items(p, args.seconds, args.grid) for p in refs]
        one = label_one_process(excerpts)
        s = one["seconds"]
        print(f"### Labelling, one process: {len(refs)} excerpts, {one['pairs']} pairs\n")
        print("| labeller | seconds | pairs/s |\n|---|---:|---:|")
        for key in s:
            print(f"| {key} | {s[key]:.1f} | {one['pairs'] / s[key]:.3f} |")
        print(f"\n- speed-up {s['visqol-python'] / s['batched']:.2f}x; largest label difference "
              f"{one['worst']:.2g}\n")
    if "label2" in parts:
        two = label_two_processes(refs, args.seconds, args.grid)
        print(f"### Labelling, two processes at once: {len(refs)} excerpts\n")
        print("| labeller | pairs | wall seconds | pairs/s |\n|---|---:|---:|---:|")
        for key, r in two.items():
            print(f"| {key} | {r['pairs']} | {r['seconds']:.1f} | "
                  f"{r['pairs'] / r['seconds']:.3f} |")
        ratio = two["visqol-python"]["seconds"] / two["batched"]["seconds"]
        print(f"\n- speed-up {ratio:.2f}x\n")
    if "memory" in parts:
        proc = subprocess.run([sys.executable, __file__, "--memory-child", str(refs[0]),
                               "--seconds", str(args.seconds), "--grid", args.grid],
                              capture_output=True, text=True, check=True)
        line = next(x for x in proc.stdout.splitlines() if x.startswith("MEMORY"))
        vals = dict(kv.split("=") for kv in line.split()[1:])
        print(f"### Memory, one {args.seconds:g} s excerpt's {vals['items']} items in one call\n")
        print(f"- peak RSS during the call {vals['rss_peak']} MiB, of which {vals['rss_before']} "
              f"MiB before it (Python, numpy, numba, torch, scipy, the audio); numpy "
              f"allocations during the call peaked at {vals['traced_peak']} MiB\n")
    if "conformance" in parts:
        conformance()
    if "kernel" in parts:
        kernel_ratio(refs[min(1, len(refs) - 1)])
    if "profile" in parts:
        profile_batched(shared_references(max(2, args.refs))[1], args.seconds, args.grid)
    if "build" in parts:
        build_refs = shared_references(args.build_refs)
        with tempfile.TemporaryDirectory() as tmp:
            builds = {name: build_with(name, build_refs, args.seconds, args.grid, Path(tmp))
                      for name in ("batched", "visqol-python")}
        alone = one["pairs"] / one["seconds"]["visqol-python"]
        print(f"### Corpus build, jobs 1: {len(build_refs)} references x 1 excerpt\n")
        print("| labeller | pairs | wall seconds | pipeline pairs/s per core | "
              "of which labelling s |\n|---|---:|---:|---:|---:|")
        for key, b in builds.items():
            print(f"| {key} | {b['pairs']} | {b['wall']:.1f} | {b['pairs'] / b['wall']:.3f} | "
                  f"{b['timing'].get('visqol', 0.0):.1f} |")
        best = builds["batched"]["pairs"] / builds["batched"]["wall"]
        print(f"\n- labelling alone with visqol-python: {alone:.3f} pairs/s per core; the whole "
              f"pipeline with the batched labeller is {best / alone:.2f}x that (target >= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
