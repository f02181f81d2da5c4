"""``deepaq-prep``: build labelled coded corpora from a folder of music.

Verbs: ``build`` (inputs -> excerpts -> codecs -> ViSQOL labels -> manifest), ``summary``,
``merge`` (shard manifests -> one), ``render`` (public-domain scores -> lossless music).
Heavy modules are imported inside each verb so that ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deepaq.sharding import parse_shard


def _splits(text: str) -> dict[str, float]:
    try:
        parts = dict(p.split("=") for p in text.split(","))
        return {k.strip(): float(v) for k, v in parts.items()}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected e.g. train=0.8,val=0.1,test=0.1, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from deepaq.cli import HelpFormatter

    p = argparse.ArgumentParser(prog="deepaq-prep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", metavar="VERB", required=True)

    b = sub.add_parser("build", formatter_class=HelpFormatter,
                       help="build a labelled coded corpus from audio files",
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
    b.add_argument("--excerpt-seconds", type=float, default=10.0, help="excerpt length")
    b.add_argument("--hop-seconds", type=float, default=None,
                   help="hop between excerpts (default: excerpt length, no overlap)")
    b.add_argument("--max-excerpts-per-track", type=int, default=None,
                   help="at most this many excerpts of each track (default: all)")
    b.add_argument("--channels", choices=["keep", "mono", "stereo"], default="keep",
                   help="keep: mono/stereo as is, >2 channels downmixed to stereo")
    b.add_argument("--silence-threshold-dbfs", type=float, default=-50.0,
                   help="skip excerpts whose AC level (RMS with the DC offset removed) is "
                        "below this, as silent")
    b.add_argument("--splits", type=_splits, default="train=0.8,val=0.1,test=0.1",
                   help="split fractions by source track")
    b.add_argument("--seed", type=int, default=0, help="seed of the splits and the degradations")
    b.add_argument("--labels", choices=["visqol", "none"], default="visqol",
                   help="visqol: ViSQOL v3 MOS-LQO of every item; none: no ViSQOL labels")
    b.add_argument("--labeller", choices=["batched", "visqol-python"], default="batched",
                   help="ViSQOL implementation: batched (default; one reference against all its "
                        "conditions at once, labels within 1e-4 of visqol-python) or "
                        "visqol-python (the reference implementation, pair by pair)")
    b.add_argument("--labeller-device", choices=["cpu", "cuda"], default="cpu",
                   help="where the batched labeller's heavy parts run (cuda: torch on the GPU)")
    b.add_argument("-j", "--jobs", type=int, default=1, help="worker processes")
    b.add_argument("--shard", type=parse_shard, default=None,
                   help="K/N: process every N-th excerpt starting at K (for job arrays); "
                        "writes manifest.shard-K-of-N.jsonl, join with 'merge'")
    b.add_argument("--resume", action="store_true",
                   help="continue an earlier (interrupted) run into the same folder with the same "
                        "settings (refused otherwise): skip finished excerpts, retry failed ones")
    b.add_argument("--overwrite", action="store_true",
                   help="start over in a folder that already holds a build (refused otherwise)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    s = sub.add_parser("summary", formatter_class=HelpFormatter,
                       help="counts, label statistics and a label-vs-bitrate table")
    s.add_argument("manifest")

    m = sub.add_parser("merge", formatter_class=HelpFormatter,
                       help="join shard manifests into one canonical manifest")
    m.add_argument("shards", nargs="+", help="manifest.shard-K-of-N.jsonl files")
    m.add_argument("-o", "--out", required=True, help="merged manifest path (same folder)")

    pr = sub.add_parser("pairs", formatter_class=HelpFormatter,
                        help="corpus manifest -> reference,degraded pairs (CSV/JSONL) for "
                             "'deepaq score' and 'deepaq eval' (ViSQOL as mos)")
    pr.add_argument("manifest")
    pr.add_argument("-o", "--out", required=True, help="pairs.csv or pairs.jsonl")
    pr.add_argument("--split", default=None, help="only this split (train, val, test)")
    pr.add_argument("--include-clean", action="store_true",
                    help="also the clean item against itself")
    pr.add_argument("--force", action="store_true", help="replace OUT if it exists")

    sub.add_parser("jnd", add_help=False,
                   help="JND-pair weak labels: degrade clean excerpts on a level grid")
    sub.add_parser("render", add_help=False,
                   help="render public-domain scores (music21 + fluidsynth) to 48 kHz FLAC")
    return p


def _build(args) -> int:
    from data_prep.pipeline import CorpusConfig, build_corpus
    from deepaq.extras import require

    require("av", *(("numba", "visqol") if args.labels == "visqol" else ()))  # deepaq[prep]

    if args.labeller_device == "cuda" and args.labels != "none":
        if args.labeller != "batched":
            raise ValueError("--labeller-device cuda needs --labeller batched")
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--labeller-device cuda: CUDA is not available on this machine")

    cfg = CorpusConfig(excerpt_seconds=args.excerpt_seconds, hop_seconds=args.hop_seconds,
                       max_excerpts_per_track=args.max_excerpts_per_track, channels=args.channels,
                       silence_threshold_dbfs=args.silence_threshold_dbfs,
                       splits=args.splits, seed=args.seed, labels=args.labels,
                       labeller=args.labeller, labeller_device=args.labeller_device)
    if args.grid:
        cfg.grid = str(Path(args.grid).resolve())
    res = build_corpus(args.inputs, args.out, cfg, jobs=args.jobs, shard=args.shard,
                       resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote {res.manifest}: {res.num_items} items from {res.num_excerpts} excerpts")
    if res.skipped:
        print("skipped excerpts: " + ", ".join(f"{n} {why}" for why, n in res.skipped.items()))
    if res.num_rejects:
        print(f"{res.num_rejects} rejects: inputs, excerpts or codec conditions (reasons in "
              f"{res.rejects}; --resume retries them)", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except (FileNotFoundError, ValueError) as exc:  # bad paths/config: one clear line, no trace
        print(f"deepaq-prep: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:  # an optional dependency is missing: say which extra installs it
        from deepaq.extras import install_hint

        hint = install_hint(exc, "prep")
        if hint is None:
            raise
        print(f"deepaq-prep: {hint}", file=sys.stderr)
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
        from data_prep.summary import summarize
        from deepaq.manifest import read_manifest

        print(summarize(read_manifest(args.manifest)))
        return 0
    if args.verb == "pairs":
        from deepaq.manifest import read_manifest, to_pairs
        from deepaq.records import write_table

        out = Path(args.out)
        if out.is_dir() or (out.exists() and not args.force):
            what = "is a directory" if out.is_dir() else "exists (--force replaces it)"
            raise ValueError(f"-o {out}: {what}")
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
