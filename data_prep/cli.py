"""``deepaq-prep``: build labelled coded corpora from a folder of music.

Verbs: ``build`` (inputs -> excerpts -> codecs -> ViSQOL labels -> manifest), ``summary``,
``merge`` (shard manifests -> one), ``render`` (public-domain scores -> lossless music).
Heavy modules are imported inside each verb so that ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (e.g. 3/16), got {text!r}") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"shard {text}: need 1 <= K <= N")
    return k, n


def _splits(text: str) -> dict[str, float]:
    try:
        parts = dict(p.split("=") for p in text.split(","))
        return {k.strip(): float(v) for k, v in parts.items()}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected e.g. train=0.8,val=0.1,test=0.1, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deepaq-prep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    b = sub.add_parser("build", help="build a labelled coded corpus from audio files",
                       description="Cut inputs into excerpts at 48 kHz, code each with the codec "
                                   "grid, align, label with ViSQOL v3 (audio mode), split by "
                                   "track and write OUT/manifest.jsonl (+ rejects.jsonl).")
    b.add_argument("inputs", nargs="+", help="folders (recursive), audio files, or JSONL/CSV lists "
                                             "of {key, path, start_time?, end_time?}")
    b.add_argument("-o", "--out", required=True, help="corpus folder")
    b.add_argument("--grid", default=None, help="codec grid YAML (default: configs/data_prep/"
                                                "default_grid.yaml, 3 codecs x 7 bitrates); a "
                                                "degradations: section adds distortion families "
                                                "(configs/data_prep/families_grid.yaml)")
    b.add_argument("--excerpt-seconds", type=float, default=10.0)
    b.add_argument("--hop-seconds", type=float, default=None,
                   help="hop between excerpts (default: excerpt length, no overlap)")
    b.add_argument("--max-excerpts-per-track", type=int, default=None)
    b.add_argument("--channels", choices=["keep", "mono", "stereo"], default="keep",
                   help="keep: mono/stereo as is, >2 channels downmixed to stereo")
    b.add_argument("--silence-threshold-dbfs", type=float, default=-50.0,
                   help="skip excerpts whose RMS level is below this")
    b.add_argument("--splits", type=_splits, default="train=0.8,val=0.1,test=0.1",
                   help="split fractions by source track")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--labels", choices=["visqol", "none"], default="visqol")
    b.add_argument("-j", "--jobs", type=int, default=1, help="worker processes")
    b.add_argument("--shard", type=_shard, default=None,
                   help="K/N: process every N-th excerpt starting at K (for job arrays); "
                        "writes manifest.shard-K-of-N.jsonl, join with 'merge'")
    b.add_argument("--resume", action="store_true", help="skip excerpts finished by an earlier "
                                                         "(interrupted) run into the same folder")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("summary", help="counts, label statistics and a label-vs-bitrate table")
    s.add_argument("manifest")

    m = sub.add_parser("merge", help="join shard manifests into one canonical manifest")
    m.add_argument("shards", nargs="+", help="manifest.shard-K-of-N.jsonl files")
    m.add_argument("-o", "--out", required=True, help="merged manifest path (same folder)")

    pr = sub.add_parser("pairs", help="corpus manifest -> reference,degraded pairs (CSV/JSONL) for "
                                      "'deepaq score' and 'deepaq eval' (ViSQOL as mos)")
    pr.add_argument("manifest")
    pr.add_argument("-o", "--out", required=True, help="pairs.csv or pairs.jsonl")
    pr.add_argument("--split", default=None, help="only this split (train, val, test)")
    pr.add_argument("--include-clean", action="store_true",
                    help="also the clean item against itself")

    sub.add_parser("jnd", add_help=False,
                   help="JND-pair weak labels: degrade clean excerpts on a level grid")
    sub.add_parser("render", add_help=False,
                   help="render public-domain scores (music21 + fluidsynth) to 48 kHz FLAC")
    return p


def _build(args) -> int:
    from data_prep.pipeline import CorpusConfig, build_corpus

    cfg = CorpusConfig(excerpt_seconds=args.excerpt_seconds, hop_seconds=args.hop_seconds,
                       max_excerpts_per_track=args.max_excerpts_per_track, channels=args.channels,
                       silence_threshold_dbfs=args.silence_threshold_dbfs,
                       splits=args.splits, seed=args.seed, labels=args.labels)
    if args.grid:
        cfg.grid = str(Path(args.grid).resolve())
    res = build_corpus(args.inputs, args.out, cfg, jobs=args.jobs, shard=args.shard,
                       resume=args.resume, progress=not args.quiet)
    print(f"wrote {res.manifest}: {res.num_items} items from {res.num_excerpts} excerpts")
    if res.skipped:
        print("skipped excerpts: " + ", ".join(f"{n} {why}" for why, n in res.skipped.items()))
    if res.num_rejects:
        print(f"rejected {res.num_rejects} inputs (reasons in {res.rejects})", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except (FileNotFoundError, ValueError) as exc:  # bad paths/config: one clear line, no trace
        print(f"deepaq-prep: error: {exc}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "render":
        from data_prep.render import main as render_main

        return int(render_main(argv[1:]) or 0)
    if argv and argv[0] == "jnd":
        from data_prep.jnd import main as jnd_main

        return int(jnd_main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    if args.verb == "build":
        return _build(args)
    if args.verb == "summary":
        from deepaq.manifest import read_manifest
        from data_prep.summary import summarize

        print(summarize(read_manifest(args.manifest)))
        return 0
    if args.verb == "pairs":
        from deepaq.manifest import read_manifest, to_pairs
        from deepaq.records import write_table

        rows = [r for r in read_manifest(args.manifest)
                if args.split is None or r["split"] == args.split]
        pairs = to_pairs(rows, Path(args.manifest).parent, include_clean=args.include_clean)
        print(f"wrote {write_table(args.out, pairs)}: {len(pairs)} pairs")
        return 0
    if args.verb == "merge":
        from deepaq.manifest import merge_manifests

        out = merge_manifests(args.shards, args.out)
        print(f"wrote {out}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
