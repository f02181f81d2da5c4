"""``deepaq score``: score one pair, or a batch file of pairs, with DeePAQ or any registry metric.

One pair prints the distance and MOS; a checkpoint with a MultiGauss MOS head also prints each
aspect's predicted MOS and standard deviation (``mos_PQ: 3.21 ± 0.40``). A batch
(``--input pairs.csv|.jsonl``) writes one row per input row, in input order, echoing
key/reference/degraded plus ``distance``, ``mos`` (with a MOS head: ``mos_<aspect>`` and
``std_<aspect>``) and ``error`` (null when fine); a failing row is recorded and the batch goes on;
the exit status is 1 when any row failed. Relative paths in the input are resolved against the input file's folder. Rows are written
to JSONL as they are scored (``--resume`` skips keys already there); a CSV output is written
atomically at the end from that JSONL progress file (``OUTPUT.partial.jsonl``).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepaq score",
        description="Score reference/degraded pairs with a DeePAQ checkpoint (or --metric NAME).",
        epilog="Channels are downmixed to mono and resampled to the model rate; reference and "
               "degraded are trimmed to the shorter when they differ by <= --length-tolerance "
               "seconds, rejected otherwise.")
    p.add_argument("reference", nargs="?", help="reference audio (one-pair mode)")
    p.add_argument("degraded", nargs="?", help="degraded audio (one-pair mode)")
    p.add_argument("--input", "-i", help="batch file: CSV with reference,degraded[,key] columns, "
                                         "or JSONL with key/reference/degraded")
    p.add_argument("--output", "-o", help="batch results: .jsonl or .csv (default: stdout JSONL)")
    p.add_argument("--resume", action="store_true", help="skip keys already in --output")
    p.add_argument("--checkpoint", "-c", help="checkpoint folder (default: checkpoints/deepaq-small "
                                              "or $DEEPAQ_CHECKPOINT)")
    p.add_argument("--metric", default=None,
                   help="score with a registry metric instead of the DeePAQ model "
                        "(e.g. visqol, logmel_l1, peaq_odg; 'deepaq:PATH' = a checkpoint)")
    p.add_argument("--mode", choices=("fr", "nmr"), default="fr",
                   help="fr: full reference (default); nmr: degraded vs a clean reference set")
    p.add_argument("--nmr-references", help="nmr: folder of clean references, or a stored "
                                            "centroid/embeddings .npy/.safetensors")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default)")
    p.add_argument("--window", type=float, default=None,
                   help="window length in seconds (default: checkpoint's, else 4)")
    p.add_argument("--hop", type=float, default=None, help="window hop in seconds (default: window)")
    p.add_argument("--length-tolerance", type=float, default=0.5,
                   help="max reference/degraded duration difference in seconds that is trimmed")
    p.add_argument("--align-max", type=float, default=0.5,
                   help="largest delay of the degraded file (seconds) found by cross-correlation "
                        "and undone, like ViSQOL's alignment (0: the files are already aligned)")
    p.add_argument("--cache-dir", help="store embeddings here, keyed by file hash + checkpoint id")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _resolve(base: Path, value: Any) -> str:
    p = Path(str(value))
    return str(p if p.is_absolute() else base / p)


def read_pairs(path: Path, need_reference: bool = True) -> list[dict]:
    """Input rows with resolved paths and a key (row number when absent)."""
    from deepaq.records import read_table

    rows = read_table(path)
    out = []
    for n, row in enumerate(rows):
        row = {k.strip() if isinstance(k, str) else k: v for k, v in row.items()}
        key = row.get("key")
        key = str(n) if key in (None, "") else str(key)
        item = {"key": key}
        for col in ("reference", "degraded"):
            value = row.get(col)
            if value in (None, ""):
                if col == "degraded" or need_reference:
                    raise ValueError(f"{path}: row {n + 1} (key {key}) has no {col!r} column value")
                item[col] = None
                continue
            item[col] = _resolve(path.parent, value)
        out.append(item)
    keys = [r["key"] for r in out]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: duplicate keys in the input (keys must be unique for --resume)")
    return out


class _ModelBackend:
    """DeePAQ model: batched, reference-cached scoring via :class:`deepaq.scoring.Scorer`."""

    def __init__(self, args: argparse.Namespace, checkpoint: str | None):
        from deepaq.scoring import Scorer

        self.scorer = Scorer.from_pretrained(
            checkpoint or args.checkpoint, device=args.device, window_s=args.window, hop_s=args.hop,
            batch_size=args.batch_size, length_tolerance_s=args.length_tolerance,
            cache_dir=args.cache_dir, align_max_s=args.align_max)
        self.mode = args.mode
        self.centroid = None
        if self.mode == "nmr":
            if not args.nmr_references:
                raise SystemExit("deepaq score: --mode nmr needs --nmr-references")
            self.centroid = self.scorer.centroid(args.nmr_references, progress=not args.no_progress)

    def value_columns(self) -> list[str]:
        """Result columns every row gets (null on a failed row)."""
        cols = ["distance", "mos", "lag_samples"]
        head = self.scorer.mos_head
        if head is not None:
            if head.aspects == ["mos"]:
                cols += ["mos_mean", "mos_std"]
            else:
                for a in head.aspects:
                    cols += [f"mos_{a}", f"std_{a}"]
        return cols

    def iter_rows(self, items: list[dict]):
        if self.mode == "nmr":
            for i, item in enumerate(items):
                try:
                    yield i, self.scorer.score_nmr(item["degraded"], self.centroid).to_dict()
                except Exception as exc:  # noqa: BLE001 - recorded per row
                    yield i, exc
            return
        pairs = [(it["reference"], it["degraded"]) for it in items]
        for i, r in self.scorer.iter_score(pairs):
            yield i, r if isinstance(r, Exception) else r.to_dict()


class _MetricBackend:
    """Any registry metric, one pair at a time, audio loaded at the metric's native rate."""

    def __init__(self, spec: str, args: argparse.Namespace):
        from deepaq.metrics import get_metric

        self.metric = get_metric(spec)
        self.tolerance = args.length_tolerance

    def value_columns(self) -> list[str]:
        return ["score"]

    def iter_rows(self, items: list[dict]):
        from deepaq.metrics import main_value

        for i, item in enumerate(items):
            try:
                ref, deg, sr = load_pair(item.get("reference"), item["degraded"],
                                         self.metric.info.sample_rate, self.tolerance)
                result = self.metric.score(ref, deg, sr)
                value = main_value(result)
                if math.isnan(value):
                    raise ValueError(f"{self.metric.info.name} returned NaN")
                row = {"score": value}
                if isinstance(result, dict):
                    row.update({k: v for k, v in result.items() if k != "score"})
                yield i, row
            except Exception as exc:  # noqa: BLE001 - recorded per row
                yield i, exc


def load_pair(reference: str | None, degraded: str, sample_rate: int | None,
              tolerance_s: float = 0.5):
    """Both files at one rate (the metric's, else the reference's), checked and length-matched."""
    from deepaq.audio import AudioError, check_not_silent, read_audio, resample

    deg, dsr = read_audio(degraded)
    check_not_silent(deg, degraded)
    ref = None
    rate = sample_rate or dsr
    if reference is not None:
        ref, rsr = read_audio(reference)
        check_not_silent(ref, reference)
        rate = sample_rate or rsr
        ref = resample(ref, rsr, rate)
    deg = resample(deg, dsr, rate)
    if ref is not None:
        if ref.shape[0] != deg.shape[0]:  # channel counts differ: compare mono mixes
            ref, deg = ref.mean(0, keepdims=True), deg.mean(0, keepdims=True)
        diff = abs(ref.shape[1] - deg.shape[1]) / rate
        if diff > tolerance_s:
            raise AudioError(degraded, f"length mismatch with reference {reference}: "
                                       f"{diff:.2f} s > tolerance {tolerance_s:g} s")
        n = min(ref.shape[1], deg.shape[1])
        ref, deg = ref[:, :n], deg[:, :n]
    return ref, deg, rate


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {text}"


def _backend(args: argparse.Namespace):
    if args.metric:
        from deepaq.metrics import parse_metric_spec

        name, kwargs = parse_metric_spec(args.metric)
        if name == "deepaq":
            return _ModelBackend(args, kwargs.get("checkpoint"))
        if args.mode == "nmr":
            raise SystemExit("deepaq score: --mode nmr works with the DeePAQ model only")
        return _MetricBackend(args.metric, args)
    return _ModelBackend(args, None)


def _one_pair(args: argparse.Namespace) -> int:
    from deepaq.audio import AudioError

    if args.mode == "nmr":
        items = [{"key": "0", "reference": None, "degraded": args.degraded or args.reference}]
    else:
        if not (args.reference and args.degraded):
            print("deepaq score: give REFERENCE DEGRADED, or --input FILE", file=sys.stderr)
            return 2
        items = [{"key": "0", "reference": args.reference, "degraded": args.degraded}]
    try:
        backend = _backend(args)
        _, result = next(backend.iter_rows(items))
    except (FileNotFoundError, AudioError, ImportError) as exc:
        print(f"deepaq score: {exc}", file=sys.stderr)
        return 1
    if isinstance(result, Exception):
        print(f"deepaq score: {_error_text(result)}", file=sys.stderr)
        return 1
    for line in format_result(result):
        print(line)
    return 0


def _std_key(key: str, result: dict) -> str | None:
    """The std entry paired with a MOS head's mean entry ``key`` (``mos_<aspect>``), if any."""
    if not key.startswith("mos_") or key == "mos_std":
        return None
    aspect = key[4:]
    for cand in (f"std_{aspect}", "mos_std" if aspect == "mean" else None):
        if cand and cand in result:
            return cand
    return None


def format_result(result: dict) -> list[str]:
    """``key: value`` lines; a MOS head's mean and std share one line, ``mos_PQ: 3.21 ± 0.40``."""
    pm = "±"
    try:
        pm.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        pm = "+/-"
    paired = {s for k in result if (s := _std_key(k, result))}
    lines = []
    for k, v in result.items():
        if k in paired:
            continue
        std = _std_key(k, result)
        if std is not None and isinstance(v, float) and isinstance(result[std], float):
            lines.append(f"{k}: {v:.2f} {pm} {result[std]:.2f}")
            continue
        if isinstance(v, float):
            v = f"{v:.6g}"
        lines.append(f"{k}: {v}")
    return lines


def _batch(args: argparse.Namespace) -> int:
    from deepaq.records import JsonlAppender, dumps, iter_jsonl, write_table

    in_path = Path(args.input)
    try:
        items = read_pairs(in_path, need_reference=args.mode == "fr")
    except (OSError, ValueError) as exc:
        print(f"deepaq score: {exc}", file=sys.stderr)
        return 2
    out_path = Path(args.output) if args.output else None
    to_csv = out_path is not None and out_path.suffix.lower() in (".csv", ".tsv")
    progress_path = out_path.with_name(out_path.name + ".partial.jsonl") if to_csv else out_path
    if to_csv and args.resume and not progress_path.exists() and out_path.exists():
        from deepaq.records import read_table, write_jsonl

        write_jsonl(progress_path, read_table(out_path))  # resume from a finished CSV
    appender = JsonlAppender(progress_path, resume=args.resume) if progress_path else None
    done = appender.done if appender else {}
    todo = [it for it in items if it["key"] not in done]
    try:
        backend = _backend(args) if todo else None
    except (FileNotFoundError, ImportError) as exc:
        print(f"deepaq score: {exc}", file=sys.stderr)
        if appender:
            appender.close()
        return 2

    it = backend.iter_rows(todo) if todo else iter(())
    if not args.no_progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(todo), desc="deepaq score", unit="pair", file=sys.stderr)
    value_cols = backend.value_columns() if backend is not None else []
    try:
        for i, result in it:
            item = todo[i]
            row = {**item, **dict.fromkeys(value_cols)}
            if isinstance(result, Exception):
                row["error"] = _error_text(result)
            else:
                row.update(result)
                row["error"] = None
            if appender:
                appender.write(row)
            else:
                print(dumps(row), flush=True)
            done[item["key"]] = row
    finally:
        if appender:
            appender.close()

    rows = [done[it["key"]] for it in items if it["key"] in done]
    if out_path is not None:
        if to_csv:
            write_table(out_path, rows)
            progress_path.unlink(missing_ok=True)
        else:  # rewrite in input order (a resumed file may hold rows out of order)
            ordered = [dict(r) for r in iter_jsonl(out_path)]
            by_key = {str(r.get("key")): r for r in ordered}
            write_table(out_path, [by_key[it["key"]] for it in items if it["key"] in by_key])
    failed = [r for r in rows if r.get("error")]
    print(f"deepaq score: {len(rows) - len(failed)} scored, {len(failed)} failed"
          + (f" -> {out_path}" if out_path else ""), file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.input:
        return _batch(args)
    return _one_pair(args)


if __name__ == "__main__":
    sys.exit(main())
