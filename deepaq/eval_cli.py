"""``deepaq eval``: correlate metrics with a listening test's MOS (per test and pooled).

Input manifest (.jsonl/.csv): ``key, reference, degraded, mos`` with optional ``test`` and
``condition``; relative paths resolve against the manifest's folder. Metrics (``--metrics``, comma
separated): ``deepaq`` (shipped checkpoint), ``deepaq:PATH`` (a checkpoint folder), any registry
metric (``visqol``, ``logmel_l1``, ``peaq_odg``, ...), or ``column:NAME`` / ``column:NAME:lower`` for
a precomputed score column of the manifest (higher is better unless ``:lower``). Writes to
``--out-dir``: ``results.csv``, ``results.json``, ``scores.csv`` (every item's metric values) and
``scatter_<metric>_<test>.png``; prints the Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    from deepaq.cli import HelpFormatter
    from deepaq.score_cli import positive_int

    p = argparse.ArgumentParser(prog="deepaq eval", formatter_class=HelpFormatter,
                                description="Correlate metrics with listening-test MOS.")
    p.add_argument("manifest", help="listening test: key, reference, degraded, mos[, test, condition]")
    p.add_argument("--metrics", "-m", default="deepaq",
                   help="comma-separated: deepaq, deepaq:PATH, registry names, column:NAME[:lower]")
    p.add_argument("--out-dir", "-o", default="eval_out", help="where tables and plots go")
    p.add_argument("--folds", type=positive_int, default=5, help="k of the k-fold mapping fits")
    p.add_argument("--bootstrap", type=positive_int, default=1000,
                   help="bootstrap resamples for the CIs")
    p.add_argument("--seed", type=int, default=0, help="seed of the folds and the bootstrap")
    p.add_argument("--device", default="auto", help="for DeePAQ checkpoints: cpu | cuda | auto")
    p.add_argument("--batch-size", type=positive_int, default=8, help="for DeePAQ checkpoints")
    p.add_argument("--no-plots", action="store_true", help="no scatter plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _resolve(base: Path, value: Any) -> str:
    p = Path(str(value))
    return str(p if p.is_absolute() else base / p)


def metric_scores(spec: str, rows: list[dict], base: Path, device: str = "auto",
                  batch_size: int = 8, progress: bool = True) -> tuple[str, np.ndarray, bool, int]:
    """``(name, values, higher_is_better, failures)`` for one metric spec over the manifest rows."""
    from deepaq.records import parse_float

    if spec.startswith("column:"):
        parts = spec.split(":")
        col, lower = parts[1], len(parts) > 2 and parts[2] == "lower"
        values = np.array([parse_float(r.get(col)) for r in rows], dtype=np.float64)
        return col, values, not lower, int(np.sum(~np.isfinite(values)))
    from deepaq.metrics import get_metric, main_value, parse_metric_spec
    from deepaq.score_cli import load_pair

    name, kwargs = parse_metric_spec(spec)
    if name == "deepaq":
        kwargs.update(device=device, batch_size=batch_size)
    metric = get_metric(spec, **{k: v for k, v in kwargs.items() if k in ("device", "batch_size")})
    needs_ref = metric.info.needs_reference
    pairs = [(_resolve(base, r["reference"]) if needs_ref else None, _resolve(base, r["degraded"]))
             for r in rows]
    values = np.full(len(rows), np.nan)
    failures = 0
    if hasattr(metric, "score_many"):
        results = metric.score_many(pairs)
    else:
        it = pairs
        if progress:
            from tqdm import tqdm

            it = tqdm(pairs, desc=spec, unit="pair", file=sys.stderr)
        results = []
        for ref, deg in it:
            try:
                a, b, sr = load_pair(ref, deg, metric.info.sample_rate)
                results.append(metric.score(a, b, sr))
            except Exception as exc:  # noqa: BLE001 - one failing item is a NaN, reported below
                results.append(exc)
    for i, r in enumerate(results):
        if isinstance(r, Exception):
            failures += 1
            print(f"deepaq eval: {spec}: {rows[i].get('key', i)}: {r}", file=sys.stderr)
        else:
            values[i] = main_value(r)
    label = spec if name != "deepaq" else metric.info.name
    return label, values, metric.info.higher_is_better, failures


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from deepaq.evaluation import evaluate, flat_rows, markdown_table, scatter_plots
    from deepaq.records import atomic_write_text, read_table, write_table

    manifest = Path(args.manifest)
    try:
        rows = read_table(manifest)
    except (OSError, ValueError) as exc:
        print(f"deepaq eval: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"deepaq eval: {manifest} has 0 rows (only a header?): nothing to evaluate",
              file=sys.stderr)
        return 2
    missing = [c for c in ("degraded", "mos") if c not in rows[0]]
    if missing:
        print(f"deepaq eval: {manifest}: missing columns {missing}", file=sys.stderr)
        return 2
    from deepaq.score_cli import UsageError, check_device

    try:
        check_device(args.device)
    except UsageError as exc:
        print(f"deepaq eval: {exc}", file=sys.stderr)
        return 2
    scores: dict[str, np.ndarray] = {}
    higher: dict[str, bool] = {}
    failed = 0
    for spec in [s.strip() for s in args.metrics.split(",") if s.strip()]:
        try:
            name, values, hib, fails = metric_scores(spec, rows, manifest.parent, args.device,
                                                     args.batch_size, not args.no_progress)
        except Exception as exc:  # noqa: BLE001 - a metric that cannot start: one line, exit 2
            from deepaq.score_cli import _error_text

            text = exc.args[0] if isinstance(exc, KeyError) and exc.args else _error_text(exc)
            print(f"deepaq eval: --metrics {spec}: unavailable ({text})", file=sys.stderr)
            return 2
        scores[name], higher[name] = values, hib
        failed += fails
    results = evaluate(rows, scores, higher, k=args.folds, n_boot=args.bootstrap, seed=args.seed)
    table = markdown_table(results)
    print(table)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_table(out / "results.csv", flat_rows(results))
    atomic_write_text(out / "results.json", json.dumps(
        [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
         for r in flat_rows(results)], indent=1))
    atomic_write_text(out / "results.md", table + "\n")
    score_rows = [{"key": r.get("key", i), "test": r.get("test"), "condition": r.get("condition"),
                   "mos": r.get("mos"), **{m: float(v[i]) for m, v in scores.items()}}
                  for i, r in enumerate(rows)]
    write_table(out / "scores.csv", score_rows)
    if not args.no_plots:
        scatter_plots(rows, scores, higher, out)
    print(f"deepaq eval: results in {out}" + (f"; {failed} item scores failed (NaN, excluded)"
                                              if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
