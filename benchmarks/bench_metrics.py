"""Seconds per 10 s stereo pair for every registered metric, side by side on the same pairs.

Why: users pick a baseline partly by cost; timing all metrics in one run on shared pairs makes the
numbers comparable. Pairs: the shared references (>= --seconds long) against an MP3 (libmp3lame,
64 kbps) round trip of themselves. A metric whose optional extra is missing is skipped with the
reason. Usage:

    .venv/bin/python benchmarks/bench_metrics.py [--pairs 3] [--seconds 10] [--metrics a,b,...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from shared_data import RECORDINGS

REPO = Path(__file__).resolve().parents[1]
SHARED_AUDIO = RECORDINGS
FALLBACK = {  # used only until the registry core (deepaq/metrics/__init__.py) exists
    "peaq_odg": "deepaq.metrics.peaq:PEAQMetric",
    "2f": "deepaq.metrics.twof:TwoFMetric",
    "haaqi": "deepaq.metrics.haaqi:HAAQIMetric",
}


def _registry() -> tuple[list[str], object]:
    try:
        from deepaq.metrics import available_metrics, get_metric
        return list(available_metrics()), get_metric
    except ImportError:
        import importlib

        def get(name: str):
            module, cls = FALLBACK[name].split(":")
            return getattr(importlib.import_module(module), cls)()
        return list(FALLBACK), get


def mp3_roundtrip(x: np.ndarray, sr: int, kbps: int = 64) -> np.ndarray:
    """MP3 through the corpus pipeline's codec stage: delay-compensated, aligned, same length."""
    from data_prep.codecs import CodecSpec, code_excerpt

    if sr != 48000:
        raise ValueError("the codec stage takes 48 kHz audio")
    return code_excerpt(x, CodecSpec("mp3", kbps, "libmp3lame", "mp3")).audio


def load_pairs(n_pairs: int, seconds: float) -> list[tuple[str, np.ndarray, np.ndarray]]:
    import soundfile as sf

    pairs = []
    for path in sorted(SHARED_AUDIO.glob("*48_stereo.wav")):
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
        n = int(seconds * 48000)
        if sr != 48000 or x.shape[0] < n:
            continue
        ref = x[:n].T.copy()
        pairs.append((path.stem, ref, mp3_roundtrip(ref, 48000)))
        if len(pairs) == n_pairs:
            break
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--metrics", default=None, help="comma-separated names (default: all)")
    args = parser.parse_args(argv)

    names, get_metric = _registry()
    if args.metrics:
        names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if not SHARED_AUDIO.is_dir():
        print(f"shared music not found at {SHARED_AUDIO}", file=sys.stderr)
        return 1
    pairs = load_pairs(args.pairs, args.seconds)
    print(f"{len(pairs)} pairs of {args.seconds:g} s stereo 48 kHz (reference vs MP3 64 kbps): "
          f"{', '.join(p[0] for p in pairs)}")

    rows = []
    for name in names:
        try:
            metric = get_metric(name)
            metric.score(pairs[0][1][:, :48000], pairs[0][2][:, :48000], 48000)  # warm-up / JIT
        except ImportError as err:
            print(f"skip {name}: {err}")
            continue
        except Exception as err:  # noqa: BLE001 - a benchmark reports and goes on
            print(f"skip {name}: {type(err).__name__}: {err}")
            continue
        times, scores = [], []
        for _, ref, deg in pairs:
            needs_ref = getattr(getattr(metric, "info", None), "needs_reference", True)
            t0 = time.perf_counter()
            out = metric.score(ref if needs_ref else None, deg, 48000)
            times.append(time.perf_counter() - t0)
            scores.append(out["score"] if isinstance(out, dict) else float(out))
        rows.append((name, float(np.mean(times)), float(np.min(times)), scores))
        print(f"  {name}: {np.mean(times):.2f} s/pair", file=sys.stderr)

    if not rows:
        print("no metric could run")
        return 1
    fastest = min(r[1] for r in rows)
    print(f"\n{'metric':<12}{'s/pair (mean)':>15}{'s/pair (min)':>14}{'x fastest':>11}  scores")
    for name, mean_t, min_t, scores in rows:
        print(f"{name:<12}{mean_t:>15.3f}{min_t:>14.3f}{mean_t / fastest:>11.1f}  "
              + " ".join(f"{s:.3f}" for s in scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
