"""``deepaq score``: score one pair, or a batch file of pairs, with DeePAQ or any registry metric.

One pair prints the distance and MOS; a checkpoint with a MultiGauss MOS head also prints each
aspect's predicted MOS and standard deviation (``mos_PQ: 3.21 ± 0.40``); ``-o FILE`` also writes
that pair's row. A batch (``--input pairs.csv|.jsonl``) writes one row per input row, in input
order, echoing key/reference/degraded plus ``distance``, ``mos`` (with a MOS head: ``mos_<aspect>``
and ``std_<aspect>``) and ``error`` (null when fine); a failing row is recorded and the batch goes
on; the exit status is 1 when any row failed. Relative paths in the input are resolved against the
input file's folder.

Nothing finished is lost: rows go to ``OUTPUT.partial.jsonl`` as they are scored (one fsync'd line
each), and ``OUTPUT`` is replaced in one rename once every row is there, so a run that fails or is
killed leaves the previous ``OUTPUT`` as it was. An existing output is refused unless ``--resume``
(keep its rows, retry its failed ones, fill in the rest) or ``--overwrite``.

Scale: ``--jobs N`` scores in N CPU worker processes (each loads the model once; rows come back in
input order); ``--shard K/N`` scores every N-th group of rows (a reference's rows stay together)
into ``OUTPUT.shard-K-of-N.SUFFIX``, and ``--merge`` joins the shards into ``OUTPUT`` in input order.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

from deepaq.cli import HelpFormatter
from deepaq.sharding import parse_shard

PROG = "deepaq score"


class UsageError(Exception):
    """A bad flag, file or checkpoint found before any row is scored: one line, exit status 2."""


def positive_float(text: str) -> float:
    """argparse ``type=``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse ``type=``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The DeePAQ model's run options, shared by ``deepaq score`` and ``deepaq embed``."""
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per forward pass")
    p.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--window", type=positive_float, default=None,
                   help="window length in seconds (default: checkpoint's, else 4)")
    p.add_argument("--hop", type=positive_float, default=None,
                   help="window hop in seconds, >= window/100 (default: the window)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=HelpFormatter,
        description="Score reference/degraded pairs with a DeePAQ checkpoint (or --metric NAME).",
        epilog="Channels are downmixed to mono and resampled to the model rate; reference and "
               "degraded are trimmed to the shorter when they differ by <= --length-tolerance "
               "seconds, rejected otherwise.")
    p.add_argument("reference", nargs="?", help="reference audio (one-pair mode)")
    p.add_argument("degraded", nargs="?", help="degraded audio (one-pair mode)")
    p.add_argument("--input", "-i", help="batch file: CSV with reference,degraded[,key] columns, "
                                         "or JSONL with key/reference/degraded")
    p.add_argument("--output", "-o", help=".jsonl or .csv results (default: stdout JSONL in a "
                                          "batch; one pair: printed only)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --output (it stays intact until the new one is "
                        "complete)")
    p.add_argument("--resume", action="store_true",
                   help="batch: keep the rows already in --output (and in an interrupted run's "
                        "OUTPUT.partial.jsonl), retry failed ones, score the rest")
    p.add_argument("--no-retry-failed", dest="retry_failed", action="store_false",
                   help="with --resume: keep failed rows as they are instead of retrying them")
    p.add_argument("--shard", type=parse_shard, default=None, metavar="K/N",
                   help="score only shard K of N (default: all rows) into "
                        "OUTPUT.shard-K-of-N.SUFFIX; join the shards with --merge")
    p.add_argument("--merge", action="store_true",
                   help="join OUTPUT.shard-*-of-N.SUFFIX into --output in --input's order")
    p.add_argument("--jobs", "-j", type=positive_int, default=1,
                   help="CPU worker processes (each loads the model once)")
    p.add_argument("--checkpoint", "-c", help="checkpoint folder (default: checkpoints/deepaq-small-4 "
                                              "or $DEEPAQ_CHECKPOINT)")
    p.add_argument("--metric", default=None,
                   help="score with one registry metric instead of the DeePAQ model, e.g. visqol, "
                        "logmel_l1, peaq_odg, 'deepaq:PATH' (default: the DeePAQ model)")
    p.add_argument("--mode", choices=("fr", "nmr"), default="fr",
                   help="fr: full reference; nmr: degraded vs a clean reference set")
    p.add_argument("--nmr-references", help="nmr: folder of clean references, or a stored "
                                            "centroid/embeddings .npy/.safetensors (no default)")
    add_model_options(p)
    p.add_argument("--length-tolerance", type=float, default=0.5,
                   help="max reference/degraded duration difference in seconds that is trimmed")
    p.add_argument("--align-max", type=float, default=0.5,
                   help="largest delay of the degraded file (seconds) found by cross-correlation "
                        "and undone, like ViSQOL's alignment (0: the files are already aligned)")
    p.add_argument("--cache-dir", help="store embeddings here, keyed by file hash + checkpoint id "
                                       "(default: memory only)")
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

    def __init__(self, args: argparse.Namespace, checkpoint: str | None, centroid: Any = None):
        from deepaq.scoring import Scorer

        self.scorer = Scorer.from_pretrained(
            checkpoint or args.checkpoint, device=args.device, window_s=args.window, hop_s=args.hop,
            batch_size=args.batch_size, length_tolerance_s=args.length_tolerance,
            cache_dir=args.cache_dir, align_max_s=args.align_max)
        self.mode = args.mode
        self.centroid = centroid
        if self.mode == "nmr" and self.centroid is None:
            refs = args.nmr_references
            try:
                self.centroid = self.scorer.centroid(refs, progress=not args.no_progress)
            except (OSError, ValueError) as exc:
                raise UsageError(f"--nmr-references {refs}: {exc}") from exc

    def value_columns(self) -> list[str]:
        """Result columns every row gets (null on a failed row), in a fixed order."""
        cols = ["distance", "mos", "lag_samples", "windows", "duration_s", "mode"]
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


def check_device(device: str) -> str:
    """Refuse a device this machine lacks before anything is loaded (``--device``); the device
    the scorer will use (:func:`deepaq.scoring.resolve_device`: ``auto`` resolved)."""
    import torch

    from deepaq.scoring import resolve_device

    try:
        if device != "auto":
            torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device}: not a device (use cpu, cuda, cuda:N or auto)") from None
    try:
        return resolve_device(device)
    except RuntimeError:
        raise UsageError(f"--device {device}: CUDA is not available on this machine "
                         f"(use --device cpu)") from None


def _metric_spec(args: argparse.Namespace) -> tuple[str, dict]:
    """``--metric`` parsed and checked against the registry (one metric per run)."""
    from deepaq.metrics import available_metrics, parse_metric_spec

    spec = args.metric
    if "," in spec and not spec.startswith("deepaq:"):
        raise UsageError(f"--metric {spec}: one metric per run (one score column); run deepaq "
                         f"score once per metric, or compare several with "
                         f"'deepaq eval --metrics {spec}'")
    try:
        name, kwargs = parse_metric_spec(spec)
    except ValueError as exc:
        raise UsageError(f"--metric {spec}: {exc}") from None
    if name not in available_metrics():
        raise UsageError(f"--metric {spec}: unknown metric (available: "
                         f"{', '.join(available_metrics())})")
    return name, kwargs


def _load_backend(args: argparse.Namespace, centroid: Any = None):
    """The scoring backend the flags ask for; every start-up failure becomes a :class:`UsageError`
    naming the flag or file (a traceback here would only say which line of ours noticed)."""
    checkpoint = args.checkpoint
    try:
        if args.metric:
            name, kwargs = _metric_spec(args)
            if name != "deepaq":
                if args.mode == "nmr":
                    raise UsageError("--mode nmr works with the DeePAQ model only")
                return _MetricBackend(args.metric, args)
            checkpoint = kwargs.get("checkpoint") or checkpoint
        if args.mode == "nmr" and not args.nmr_references:
            raise UsageError("--mode nmr needs --nmr-references")
        check_device(args.device)
        return _ModelBackend(args, checkpoint, centroid)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - every start-up failure is one line
        raise start_up_error(exc, checkpoint) from None


def start_up_error(exc: BaseException, checkpoint: str | os.PathLike | None) -> UsageError:
    """The one-line error for a scorer that failed to load: a missing extra, a window/hop limit,
    a missing or malformed checkpoint folder (named)."""
    if isinstance(exc, (ImportError, ValueError, FileNotFoundError)):
        return UsageError(str(exc))
    where = checkpoint or "the default checkpoint"
    return UsageError(f"--checkpoint {where}: not a loadable DeePAQ checkpoint "
                      f"({_error_text(exc)})")


def refuse_existing(path: Path, hint: str = "--overwrite") -> None:
    """Refuse an ``--output`` that exists already (the caller knows it was not asked to replace)."""
    if path.exists():
        raise UsageError(f"--output {path} already exists (use {hint} to replace it)")


def _check_output(path: Path | None, args: argparse.Namespace, resumable: bool) -> None:
    """Refuse to replace a finished output (or an interrupted run's progress) unasked."""
    if path is None or args.overwrite or (resumable and args.resume):
        return
    hint = "--resume to continue it, or --overwrite" if resumable else "--overwrite"
    for p in (path, _partial_path(path)):
        refuse_existing(p, hint)


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def _row(item: dict, value_cols: list[str], result: Any) -> dict:
    """One output row: the input's columns, the value columns (null on failure), then ``error``."""
    row = {**item, **dict.fromkeys(value_cols)}
    if isinstance(result, BaseException):
        row["error"] = _error_text(result)
    elif isinstance(result, str):  # an error text from a worker process
        row["error"] = result
    else:
        row.update(result)
        row.pop("error", None)
        row["error"] = None
    return row


def _one_pair(args: argparse.Namespace) -> int:
    from deepaq.records import write_table

    if args.mode == "nmr":
        items = [{"key": "0", "reference": None, "degraded": args.degraded or args.reference}]
        if items[0]["degraded"] is None:
            raise UsageError("give DEGRADED (nmr mode), or --input FILE")
    else:
        if not (args.reference and args.degraded):
            raise UsageError("give REFERENCE DEGRADED, or --input FILE")
        items = [{"key": "0", "reference": args.reference, "degraded": args.degraded}]
    for flag in ("resume", "shard", "merge"):
        if getattr(args, flag):
            raise UsageError(f"--{flag} needs a batch (--input FILE)")
    out = Path(args.output) if args.output else None
    _check_output(out, args, resumable=False)
    backend = _load_backend(args)
    _, result = next(backend.iter_rows(items))
    if out is not None:
        write_table(out, [_row(items[0], backend.value_columns(), result)])
    if isinstance(result, Exception):
        print(f"{PROG}: {_error_text(result)}", file=sys.stderr)
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


def _read_done(out: Path) -> dict[str, dict]:
    """Rows of a finished output and of an interrupted run's progress file (later rows win)."""
    from deepaq.records import JsonlAppender, iter_jsonl, read_table

    done: dict[str, dict] = {}
    if out.exists():
        try:  # a .jsonl written row by row by an older release may end in a torn line
            rows = (read_table(out) if out.suffix.lower() in (".csv", ".tsv")
                    else iter_jsonl(out, tolerate_torn_tail=True))
            done.update((str(r.get("key")), r) for r in rows)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--resume: cannot read {out} ({exc})") from None
    partial = _partial_path(out)
    if partial.exists():
        with JsonlAppender(partial, resume=True) as progress:  # repairs a torn last line
            done.update(progress.done)
    return done


def _batch(args: argparse.Namespace) -> int:
    from deepaq.records import JsonlAppender, dumps, write_table
    from deepaq.sharding import select_shard, shard_path

    in_path = Path(args.input)
    try:
        items = read_pairs(in_path, need_reference=args.mode == "fr")
    except (OSError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if not items:
        print(f"{PROG}: warning: {in_path} has 0 rows (only a header?): nothing to score",
              file=sys.stderr)
    if args.merge:
        return _merge(args, items)
    if args.resume and not args.output:
        raise UsageError("--resume needs --output")
    mine = select_shard(items, args.shard, group=_shard_group)
    out = Path(args.output) if args.output else None
    if out is not None and args.shard:
        out = shard_path(out, args.shard)
    _check_output(out, args, resumable=True)
    done = _read_done(out) if out is not None and args.resume else {}
    todo = [it for it in mine if it["key"] not in done
            or (args.retry_failed and done[it["key"]].get("error"))]
    if todo:
        _check_jobs(args)  # before the model loads (and embeds any NMR references)
    backend = _load_backend(args) if todo else None  # before anything is written

    progress = None
    if out is not None:
        # start the progress file from the rows kept, so a kill now loses nothing of them
        progress = JsonlAppender(_partial_path(out),
                                 start_with=[done[it["key"]] for it in mine if it["key"] in done])
    rows_in = _score_rows(backend, todo, args) if todo else iter(())
    backend = None  # only the generator holds it now (with --jobs it lets go before the workers)
    if not args.no_progress and todo:
        from tqdm import tqdm

        rows_in = tqdm(rows_in, total=len(todo), desc=PROG, unit="pair", file=sys.stderr)
    try:
        for row in rows_in:
            if progress is not None:
                progress.write(row)
            else:
                print(dumps(row), flush=True)
            done[row["key"]] = row
    finally:
        if progress is not None:
            progress.close()

    rows = [done[it["key"]] for it in mine if it["key"] in done]
    if out is not None:
        write_table(out, rows)  # the one moment the output changes: a rename
        _partial_path(out).unlink(missing_ok=True)
    failed = sum(1 for r in rows if r.get("error"))
    print(f"{PROG}: {len(rows) - failed} scored, {failed} failed"
          + (f" -> {out}" if out else ""), file=sys.stderr)
    return 1 if failed else 0


def _shard_group(item: dict) -> Any:
    """Rows that share a reference stay in one shard (its embedding is computed once)."""
    return item["reference"] if item["reference"] is not None else ("key", item["key"])


def _check_jobs(args: argparse.Namespace) -> None:
    """``--jobs > 1`` runs CPU workers: refuse it for the DeePAQ model on another device (the
    metrics run on the CPU). A bad ``--device`` is left to :func:`_load_backend` to name."""
    if args.jobs <= 1 or (args.metric and _metric_spec(args)[0] != "deepaq"):
        return
    try:
        device = check_device(args.device)
    except UsageError:
        return
    if device != "cpu":
        raise UsageError(f"--jobs {args.jobs} runs CPU worker processes; on "
                         f"{device} use --jobs 1 (the GPU batches windows)")


def _score_rows(backend: Any, todo: list[dict], args: argparse.Namespace):
    """Output rows of ``todo`` in input order, in this process or in ``--jobs`` workers."""
    value_cols = backend.value_columns()
    if args.jobs <= 1 or len(todo) <= 1:
        for i, result in backend.iter_rows(todo):
            yield _row(todo[i], value_cols, result)
        return
    from deepaq.score_workers import score_in_workers

    centroid = getattr(backend, "centroid", None)
    del backend  # the workers hold their own copies
    for i, result in score_in_workers(args, todo, centroid):
        yield _row(todo[i], value_cols, result)


def _merge(args: argparse.Namespace, items: list[dict]) -> int:
    """Join ``OUTPUT.shard-K-of-N.SUFFIX`` into ``OUTPUT``, checked against the input's split."""
    from deepaq.records import read_table, write_table
    from deepaq.sharding import find_shards, split_shards

    if not args.output:
        raise UsageError("--merge needs --output (the merged file; shards sit beside it)")
    if args.shard:
        raise UsageError("--merge joins every shard: drop --shard")
    out = Path(args.output)
    _check_output(out, args, resumable=False)
    try:
        shards = find_shards(out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not shards:
        raise UsageError(f"--merge: no {out.stem}.shard-K-of-N{out.suffix} files beside {out}")
    n = next(iter(shards.values()))[0]
    missing = [k for k in range(1, n + 1) if k not in shards]
    if missing:
        raise UsageError(f"--merge: shard(s) {', '.join(f'{k}/{n}' for k in missing)} of {out} "
                         f"not finished (no {out.stem}.shard-K-of-{n}{out.suffix})")
    by_key: dict[str, dict] = {}
    expected = split_shards(items, n, group=_shard_group)
    for k in range(1, n + 1):
        path = shards[k][1]
        rows = read_table(path)
        want = [it["key"] for it in expected[k - 1]]
        got = [str(r.get("key")) for r in rows]
        if got != want:
            lost = sorted(set(want) - set(got))
            raise UsageError(f"--merge: {path} does not hold shard {k}/{n} of {args.input} "
                             + (f"(missing keys {', '.join(lost[:5])}"
                                f"{' ...' if len(lost) > 5 else ''})" if lost else
                                "(other keys or order: made from another input?)"))
        by_key.update(zip(got, rows))
    rows = [by_key[it["key"]] for it in items]
    write_table(out, rows)
    failed = sum(1 for r in rows if r.get("error"))
    print(f"{PROG}: merged {n} shards: {len(rows) - failed} scored, {failed} failed -> {out}",
          file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _batch(args) if args.input else _one_pair(args)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
