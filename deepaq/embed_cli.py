"""``deepaq embed``: time-pooled DeePAQ embeddings for a folder or manifest, for set comparisons.

Why: FAD-style comparisons, NMR centroids (``deepaq score --mode nmr --nmr-references OUT.npy``) and
domain clustering all need one vector per file. Output: ``OUT.npy`` (rows ``[N, D]``) or
``OUT.safetensors`` (tensor ``embeddings`` plus ``centroid``; metadata holds the checkpoint id), and
``OUT.index.jsonl`` with ``key, path, row`` (row = index into the matrix) or ``error`` for a file
that could not be embedded (the others go on; exit status 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from deepaq.cli import HelpFormatter
    from deepaq.score_cli import add_model_options

    p = argparse.ArgumentParser(prog="deepaq embed", formatter_class=HelpFormatter,
                                description="Write DeePAQ embeddings for a folder or manifest.")
    p.add_argument("input", help="folder of audio files (recursive), or a manifest "
                                 "(.jsonl/.csv with a 'path' or 'degraded' column, optional 'key')")
    p.add_argument("--output", "-o", required=True, help="OUT.npy or OUT.safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--column", default=None, help="manifest column holding the audio path "
                                                  "(default: path, else degraded)")
    p.add_argument("--checkpoint", "-c", help="checkpoint folder (default: the shipped one)")
    add_model_options(p)
    p.add_argument("--cache-dir", default=None,
                   help="store embeddings here (default: memory only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def list_inputs(path: Path, column: str | None = None) -> list[tuple[str, Path]]:
    """``(key, file)`` pairs: a folder's audio files (key = relative path) or a manifest's rows."""
    from deepaq.audio import AUDIO_EXTENSIONS

    if path.is_dir():
        files = sorted(q for q in path.rglob("*") if q.suffix.lower() in AUDIO_EXTENSIONS)
        return [(str(q.relative_to(path)), q) for q in files]
    from deepaq.records import read_table

    rows = read_table(path)
    out = []
    for n, row in enumerate(rows):
        col = column or ("path" if "path" in row else "degraded")
        if not row.get(col):
            raise ValueError(f"{path}: row {n + 1} has no {col!r} value")
        p = Path(str(row[col]))
        out.append((str(row.get("key") or n), p if p.is_absolute() else path.parent / p))
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np

    from deepaq.records import write_jsonl
    from deepaq.score_cli import UsageError, check_device, refuse_existing, start_up_error
    from deepaq.scoring import Scorer

    out = Path(args.output)
    if out.suffix not in (".npy", ".safetensors"):
        print("deepaq embed: --output must end in .npy or .safetensors", file=sys.stderr)
        return 2
    try:
        if not args.overwrite:
            refuse_existing(out)
        try:
            items = list_inputs(Path(args.input), args.column)
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        if not items:
            print(f"deepaq embed: warning: {args.input} has 0 rows or audio files: nothing to "
                  f"embed", file=sys.stderr)
        check_device(args.device)
        try:
            scorer = Scorer.from_pretrained(args.checkpoint, device=args.device,
                                            window_s=args.window, hop_s=args.hop,
                                            batch_size=args.batch_size, cache_dir=args.cache_dir)
        except Exception as exc:  # noqa: BLE001 - a checkpoint that does not load: one line
            raise start_up_error(exc, args.checkpoint) from None
    except UsageError as exc:
        print(f"deepaq embed: {exc}", file=sys.stderr)
        return 2
    it = items
    if not args.no_progress:
        from tqdm import tqdm

        it = tqdm(items, desc="deepaq embed", unit="file", file=sys.stderr)
    vectors, index = [], []
    for key, path in it:
        try:
            vectors.append(scorer.embed(path))
            index.append({"key": key, "path": str(path), "row": len(vectors) - 1, "error": None})
        except Exception as exc:  # noqa: BLE001 - recorded per file, the others go on
            index.append({"key": key, "path": str(path), "row": None, "error": str(exc)})
    dim = vectors[0].shape[0] if vectors else 0
    matrix = np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
    from deepaq.records import atomic_path

    with atomic_path(out) as tmp:
        if out.suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, matrix, allow_pickle=False)
        else:
            from safetensors.numpy import save_file

            tensors = {"embeddings": matrix}
            if len(matrix):
                tensors["centroid"] = matrix.mean(axis=0)
            save_file(tensors, str(tmp), metadata={"checkpoint_id": scorer.checkpoint_id,
                                                   "window_s": str(scorer.window_s),
                                                   "hop_s": str(scorer.hop_s)})
    index_path = out.with_name(out.name.rsplit(".", 1)[0] + ".index.jsonl")
    write_jsonl(index_path, index)
    failed = sum(1 for r in index if r["error"])
    print(f"deepaq embed: {len(vectors)} embeddings ({dim}-d) -> {out}, index {index_path}"
          + (f"; {failed} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
