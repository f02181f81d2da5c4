"""Codec-stage cost per 10 s stereo excerpt: encode, decode, and the whole code_excerpt call.

Usage: ``.venv/bin/python benchmarks/bench_codecs.py [--grid configs/data_prep/default_grid.yaml]
[--reference guitar] [--repeats 3]``. Prints one row per condition (median of the repeats) and the
ratio of each time to the excerpt's duration (real-time factor), so runs on different machines
compare.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from pathlib import Path

import soundfile as sf
from shared_data import RECORDINGS
from tqdm import tqdm

from data_prep import codecs
from deepaq.audio import resample

REPO = Path(__file__).resolve().parents[1]
SHARED = RECORDINGS


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(REPO / "configs" / "data_prep" / "default_grid.yaml"))
    ap.add_argument("--reference", default="guitar", help="shared reference name (10 s from 1 s)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    data, sr = sf.read(str(SHARED / f"{args.reference}48_stereo.wav"), dtype="float32",
                       always_2d=True)
    x = data.T[:, sr:sr * 11].copy()
    seconds = x.shape[1] / sr
    print(f"{args.reference}: {x.shape[0]} ch, {seconds:.1f} s, median of {args.repeats}")
    print(f"{'condition':10s} {'encode s':>9s} {'decode s':>9s} {'total s':>8s} {'x realtime':>10s} "
          f"{'kbps':>7s}")
    for spec in tqdm(codecs.load_grid(args.grid), desc="conditions", leave=False):
        coded_in = resample(x, sr, spec.sample_rate)
        data_bytes = codecs._encode(coded_in, spec)[0]
        enc = _median_seconds(partial(codecs._encode, coded_in, spec), args.repeats)
        dec = _median_seconds(partial(codecs._decode, data_bytes, spec, x.shape[0]), args.repeats)
        total = _median_seconds(partial(codecs.code_excerpt, x, spec), args.repeats)
        kbps = codecs.code_excerpt(x, spec).bitrate_measured_kbps
        tqdm.write(f"{spec.condition:10s} {enc:9.3f} {dec:9.3f} {total:8.3f} "
                   f"{seconds / total:10.1f} {kbps:7.2f}")


if __name__ == "__main__":
    main()
