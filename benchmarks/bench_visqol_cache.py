"""ViSQOL labelling with and without the spectrogram cache, on the pairs of real corpus excerpts.

Usage: ``.venv/bin/python benchmarks/bench_visqol_cache.py [--refs 3] [--seconds 10]
[--grid configs/data_prep/default_grid.yaml]``.

Each shared reference gives one excerpt (10 s from 1 s in), coded over the grid as
``deepaq-prep build`` codes it; then the excerpt's pairs (clean + every condition, all against the
clean reference, as a corpus labels them) are scored by ``VisqolLabeller(cache_mib=0)``
(visqol-python as shipped) and by the default cached labeller. The two labellers take turns pair
by pair, so a change of machine load hits both alike. Prints seconds, pairs/s, the speed-up, the
largest label difference and the cache's hit rate.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import soundfile as sf
from bench_prep import shared_references  # the same references, in the same order
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from data_prep.codecs import code_excerpt, load_grid
    from deepaq.visqol import VisqolLabeller

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refs", type=int, default=3, help="first N shared references (by name)")
    ap.add_argument("--seconds", type=float, default=10.0, help="excerpt length")
    ap.add_argument("--grid", default=str(REPO / "configs" / "data_prep" / "default_grid.yaml"))
    args = ap.parse_args()

    grid = load_grid(args.grid)
    plain = VisqolLabeller(mode="audio", cache_mib=0)
    cached = VisqolLabeller(mode="audio")
    plain.warmup()
    cached.warmup()
    cached.cache.hits = cached.cache.misses = 0
    seconds = {"plain": 0.0, "cached": 0.0}
    pairs, worst = 0, 0.0
    load = os.getloadavg()[0]
    for path in tqdm(shared_references(args.refs), desc="references"):
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        ref = data.T[:, sr: sr + int(args.seconds * sr)].copy()
        degraded = [ref] + [code_excerpt(ref, spec).audio.clip(-1, 1) for spec in grid]
        for i, deg in enumerate(degraded):
            order = [("plain", plain), ("cached", cached)]
            scores = {}
            for key, lab in order if i % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                scores[key] = lab.score(ref, deg, sample_rate=sr)
                seconds[key] += time.perf_counter() - t0
            worst = max(worst, abs(scores["plain"] - scores["cached"]))
            pairs += 1
    hits, misses = cached.cache.hits, cached.cache.misses
    print(f"## ViSQOL spectrogram cache: {args.refs} references x {args.seconds:g} s, "
          f"{len(grid)} conditions + clean, load at start {load:.2f}")
    print()
    print("| labeller | pairs | seconds | pairs/s |")
    print("|---|---:|---:|---:|")
    for key, label in (("plain", "visqol-python as shipped (cache_mib=0)"),
                       ("cached", "VisqolLabeller default (spectrogram cache)")):
        print(f"| {label} | {pairs} | {seconds[key]:.1f} | {pairs / seconds[key]:.3f} |")
    print()
    print(f"- speed-up: {seconds['plain'] / seconds['cached']:.2f}x; largest label difference "
          f"{worst:.2g}; cache hits {hits} of {hits + misses} spectrogram builds")


if __name__ == "__main__":
    main()
