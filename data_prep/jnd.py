"""JND-pair weak labels: clean excerpts degraded on a grid of levels, and the pairs between them.

Why (JSQA-style pretraining): listeners cannot tell apart two versions of a clip whose degradation
levels differ by less than a just-noticeable difference (JND). Pairs of versions of the same
excerpt whose level gap is within the JND are "same"; the others "different". A contrastive loss
(``deepaq.losses.JNDContrastiveLoss``) then pulls "same" pairs together and pushes the others
apart - a weak label that needs no listening test and no reference metric.

``deepaq-prep jnd INPUTS -o OUT --degradation noise_white --levels 0:40:2 --jnd 2`` writes

- ``OUT/audio/<excerpt>/clean.flac`` and ``<degradation>_<level>.flac`` (FLAC, 48 kHz);
- ``OUT/manifest.jsonl``: one row per item in the corpus manifest schema (so ``deepaq fit`` reads
  it), with ``visqol`` and ``bitrate_label`` null (clean: "inf"), plus ``degradation``, ``level``,
  ``level_unit``, ``quality`` (the level oriented so that higher is better: ``level`` or
  ``-level``; clean and invariances = "inf"), for noise ``snr_measured_db``, and the corpus
  schema's family fields (``family``, ``level_higher_is_better``, ``invariance``, measured
  ``snr_db``/``cutoff_hz``, ...: ``deepaq.manifest.FAMILY_FIELDS``/``MEASURE_FIELDS``);
- ``OUT/pairs.jsonl``: every pair of degraded versions of one excerpt with ``gap`` = |level a -
  level b| and ``label`` "within_jnd" (gap <= jnd) or "beyond_jnd".

Both files are written atomically, a ``key`` on every row. Splits are assigned per track.
Any registered degradation works (``data_prep.degradations``: noise_white, noise_pink,
lowpass, clipping, packet_loss, reverb, or ``--noise-folder DIR`` for a user's noise).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.degradations import get_degradation, measure_snr, register_noise_folder
from data_prep.families import condition_for
from deepaq.manifest import MEASURE_FIELDS
from deepaq.records import write_jsonl

SAMPLE_RATE = 48000
HEADROOM = 0.99  # peak after scaling, so that noise never clips in the 24-bit FLAC


@dataclass
class JNDConfig:
    degradation: str = "noise_white"
    levels: list[float] = field(default_factory=lambda: [float(v) for v in range(0, 42, 3)])
    jnd: float | None = None  # None: the degradation's default
    excerpt_seconds: float = 4.0
    max_excerpts_per_track: int | None = None
    channels: str = "mono"
    splits: dict = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    seed: int = 0


def parse_levels(text: str) -> list[float]:
    """``"0,3,6"`` or ``START:STOP:STEP`` (STOP included when on the grid) -> levels."""
    if ":" in text:
        start, stop, step = (float(v) for v in text.split(":"))
        if step <= 0:
            raise ValueError("level step must be > 0")
        n = math.floor((stop - start) / step + 1e-9) + 1
        return [round(start + i * step, 6) for i in range(n)]
    return [float(v) for v in text.split(",") if v.strip()]


def pair_label(level_a: float, level_b: float, jnd: float) -> str:
    return "within_jnd" if abs(level_a - level_b) <= jnd + 1e-9 else "beyond_jnd"


def _rng(seed: int, excerpt_index: int, level_index: int) -> np.random.Generator:
    return np.random.default_rng([seed, excerpt_index, level_index])


def degrade_excerpt(clean: np.ndarray, sr: int, cfg: JNDConfig, excerpt_index: int
                    ) -> tuple[np.ndarray, list[np.ndarray]]:
    """(clean, degraded versions) scaled by one common gain so that none exceeds HEADROOM."""
    deg = get_degradation(cfg.degradation)
    versions = [deg(clean, sr, lv, _rng(cfg.seed, excerpt_index, i))
                for i, lv in enumerate(cfg.levels)]
    peak = max(float(np.max(np.abs(v))) for v in [clean, *versions])
    gain = min(1.0, HEADROOM / peak) if peak > 0 else 1.0
    return clean * gain, [v * gain for v in versions]


def build_jnd_corpus(inputs: list[str | os.PathLike], out_dir: str | os.PathLike,
                     cfg: JNDConfig, progress: bool = True) -> dict:
    """Write the items, manifest and pairs (see the module docstring); returns a summary."""
    from data_prep.pipeline import CorpusConfig, plan_excerpts
    from data_prep.sources import discover
    from deepaq.audio import (
        AudioError,
        apply_channel_policy,
        check_not_silent,
        load_audio,
        write_audio,
    )

    deg = get_degradation(cfg.degradation)
    if deg.needs_others:
        raise ValueError(f"{cfg.degradation}: separation families need stems; build them with "
                         "'deepaq-prep build' and a degradations: grid section")
    jnd = float(cfg.jnd if cfg.jnd is not None else deg.jnd)
    if not cfg.levels:
        raise ValueError("need at least one level")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plans, rejects = plan_excerpts(discover(inputs), CorpusConfig(
        excerpt_seconds=cfg.excerpt_seconds, max_excerpts_per_track=cfg.max_excerpts_per_track,
        channels=cfg.channels, splits=cfg.splits, seed=cfg.seed, labels="none"))
    items: list[dict] = []
    pairs: list[dict] = []
    it = enumerate(plans)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(plans), desc="jnd excerpts", unit="excerpt", file=sys.stderr)
    noise = cfg.degradation.startswith("noise")
    for e, plan in it:
        t = plan.track
        try:
            x = load_audio(t.path, sample_rate=SAMPLE_RATE, start=plan.start,
                           end=plan.start + plan.seconds)
            x = apply_channel_policy(x, cfg.channels) if cfg.channels != "keep" else x
            check_not_silent(x, t.path)
            clean, versions = degrade_excerpt(x, SAMPLE_RATE, cfg, e)
        except (AudioError, ValueError) as exc:
            rejects.append({"key": plan.excerpt_id, "path": t.path, "stage": "jnd",
                            "reason": str(getattr(exc, "problem", exc))})
            continue
        folder = Path("audio") / plan.excerpt_id
        ref = folder / "clean.flac"
        write_audio(out / ref, clean, SAMPLE_RATE)
        base = {"excerpt_id": plan.excerpt_id, "track_id": t.track_id, "source_path": t.path,
                "start_time": plan.start, "end_time": plan.start + plan.seconds,
                "split": plan.split, "codec": None, "encoder": None,
                "bitrate_requested_kbps": None, "bitrate_measured_kbps": None,
                "bitrate_label": None, "coded_sample_rate": SAMPLE_RATE,
                "delay_removed_samples": 0, "alignment_lag": 0, "sample_rate": SAMPLE_RATE,
                "channels": int(clean.shape[0]), "num_samples": int(clean.shape[1]),
                "reference": str(ref), "visqol": None, "degradation": cfg.degradation,
                "family": cfg.degradation, "level_unit": deg.unit,
                "level_higher_is_better": deg.higher_is_better,
                "invariance": deg.is_invariance, "mask_type": None, "target_stem": None,
                **dict.fromkeys(MEASURE_FIELDS)}
        items.append({"key": f"{plan.excerpt_id}__clean", **base, "condition": "clean",
                      "bitrate_requested_kbps": math.inf, "bitrate_measured_kbps": math.inf,
                      "bitrate_label": math.inf, "path": str(ref), "level": None,
                      "quality": math.inf, "family": None, "level_unit": None,
                      "level_higher_is_better": None, "invariance": False})
        mine = []
        for level, v in zip(cfg.levels, versions):
            cond = condition_for(cfg.degradation, level)
            rel = folder / f"{cond}.flac"
            write_audio(out / rel, v, SAMPLE_RATE)
            row = {"key": f"{plan.excerpt_id}__{cond}", **base, "condition": cond,
                   "path": str(rel), "level": level,
                   "quality": (math.inf if deg.is_invariance
                               else level if deg.higher_is_better else -level)}
            if deg.measure is not None:  # measured after the common gain, as stored
                row.update(deg.measure(clean, v, SAMPLE_RATE, level))
            if noise:  # measure_snr's snr_db (the noise degradations' measure, just above)
                row["snr_measured_db"] = (row["snr_db"] if deg.measure is measure_snr else
                                          measure_snr(clean, v, SAMPLE_RATE, level)["snr_db"])
            mine.append(row)
        items += mine
        for a, b in itertools.combinations(mine, 2):
            gap = abs(a["level"] - b["level"])
            pairs.append({"key": f"{a['key']}__{b['condition']}", "excerpt_id": plan.excerpt_id,
                          "split": plan.split, "a": a["key"], "b": b["key"],
                          "level_a": a["level"], "level_b": b["level"], "gap": round(gap, 6),
                          "jnd": jnd, "label": pair_label(a["level"], b["level"], jnd)})
    manifest = write_jsonl(out / "manifest.jsonl", items)
    write_jsonl(out / "pairs.jsonl", pairs)
    if rejects:
        write_jsonl(out / "rejects.jsonl", rejects)
    within = sum(p["label"] == "within_jnd" for p in pairs)
    return {"manifest": str(manifest), "pairs": str(out / "pairs.jsonl"), "items": len(items),
            "num_pairs": len(pairs), "within_jnd": within, "rejects": len(rejects), "jnd": jnd}


def build_parser() -> argparse.ArgumentParser:
    from data_prep.degradations import available
    from deepaq.cli import HelpFormatter

    p = argparse.ArgumentParser(prog="deepaq-prep jnd", description=__doc__.split("\n\n")[0],
                                epilog=f"degradations: {', '.join(available())}",
                                formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", help="folders, audio files, or JSONL/CSV lists")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--degradation", default="noise_white", help="the degradation (epilog)")
    p.add_argument("--noise-folder", help="register noise_<folder> from a folder of noise files "
                                          "and use it (overrides --degradation)")
    p.add_argument("--levels", default="0:39:3", help="'0,3,6' or START:STOP:STEP (default "
                                                      "0:39:3 = SNR 0..39 dB every 3 dB)")
    p.add_argument("--jnd", type=float, default=None, help="JND of the level (default: the "
                                                           "degradation's, 2 dB for noise)")
    p.add_argument("--excerpt-seconds", type=float, default=4.0, help="excerpt length")
    p.add_argument("--max-excerpts-per-track", type=int, default=None,
                   help="at most this many excerpts of each track (default: all)")
    p.add_argument("--channels", choices=["keep", "mono", "stereo"], default="mono",
                   help="channel policy of the excerpts")
    p.add_argument("--splits", default="train=0.8,val=0.1,test=0.1",
                   help="split fractions by source track")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and the degradations")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """``deepaq-prep jnd`` entry point; returns the exit code (1 when inputs were rejected)."""
    args = build_parser().parse_args(argv)
    degradation = args.degradation
    if args.noise_folder:
        degradation = register_noise_folder(args.noise_folder)
    try:
        splits = {k.strip(): float(v) for k, v in
                  (part.split("=") for part in args.splits.split(","))}
        cfg = JNDConfig(degradation=degradation, levels=parse_levels(args.levels), jnd=args.jnd,
                        excerpt_seconds=args.excerpt_seconds,
                        max_excerpts_per_track=args.max_excerpts_per_track,
                        channels=args.channels, splits=splits, seed=args.seed)
        get_degradation(degradation)
    except ValueError as exc:
        print(f"deepaq-prep jnd: {exc}", file=sys.stderr)
        return 2
    res = build_jnd_corpus(args.inputs, args.out, cfg, progress=not args.quiet)
    print(f"wrote {res['manifest']}: {res['items']} items; {res['pairs']}: {res['num_pairs']} "
          f"pairs ({res['within_jnd']} within JND {res['jnd']:g})")
    if res["rejects"]:
        print(f"rejected {res['rejects']} excerpts (see rejects.jsonl)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
