"""The shipped model against the hand-made baselines on held-out real recordings (issue 7 targets).

Held-out set: the 10 real references in ../shared/data/visqol_conformance/audio (never used for
training or model selection), one excerpt each (<= 10 s), coded over the default grid by
``deepaq-prep build`` and labelled with ViSQOL v3 -> 210 coded pairs. Out of distribution: the
official low-pass pairs (strauss lp35, steely lp7, with their official ViSQOL values) and additive
white noise at several SNRs on two references (ViSQOL computed here).

Prints one Markdown table, metrics side by side on the same pairs, in one run:
pooled Spearman vs ViSQOL, mean within-reference Spearman, per-codec Kendall tau vs bitrate
(mean over references), OOD rank agreement with ViSQOL, with ViSQOL's own labels as the first
row; then the label ceiling (the best within-reference Spearman vs ViSQOL that any metric ordering
one codec's bitrates perfectly can reach: ``deepaq.evaluation.monotone_ceiling``); then speed
(pairs/s vs ViSQOL, load + one pair end to end).

    .venv/bin/python benchmarks/bench_default_model.py [--checkpoint checkpoints/deepaq-small]
        [--train-manifest CORPUS/manifest.jsonl]   # for the condition-mean lookup baseline
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from shared_data import CONFORMANCE

REPO = Path(__file__).resolve().parents[1]
SHARED = CONFORMANCE
REFERENCES = ["castanets", "contrabassoon", "glock", "guitar", "harpsichord", "moonlight", "ravel",
              "sopr", "steely", "strauss"]
NOISE_REFS = ["guitar", "moonlight"]
SNRS_DB = [40, 30, 20, 10]


def build_heldout(work: Path) -> Path:
    """Code + label the held-out references once; later runs resume (instant)."""
    from data_prep.pipeline import CorpusConfig, build_corpus

    inputs = work / "heldout_in"
    inputs.mkdir(parents=True, exist_ok=True)
    for name in REFERENCES:
        link = inputs / f"{name}.wav"
        if not link.exists():
            link.symlink_to(SHARED / "audio" / f"{name}48_stereo.wav")
    cfg = CorpusConfig(excerpt_seconds=10.0, max_excerpts_per_track=1,
                       splits={"test": 1.0})
    return build_corpus([inputs], work / "heldout", cfg, jobs=2, resume=True).manifest


def ood_pairs(work: Path) -> list[dict]:
    """Low-pass pairs with official ViSQOL values + white noise at several SNRs (ViSQOL here)."""
    import soundfile as sf

    from deepaq.records import read_jsonl, write_jsonl
    from deepaq.visqol import VisqolLabeller

    cache = work / "ood.jsonl"
    if cache.exists():
        return read_jsonl(cache)
    cases = json.loads((SHARED / "cases.json").read_text())["cases"]
    rows = [{"key": c["name"], "reference": str(SHARED / c["reference"]),
             "degraded": str(SHARED / c["degraded"]), "visqol": c["moslqo"]}
            for c in cases if c["name"] in ("strauss_lp35", "steely_lp7")]
    labeller = VisqolLabeller(mode="audio")
    rng = np.random.default_rng(0)
    for name in NOISE_REFS:
        ref_path = SHARED / "audio" / f"{name}48_stereo.wav"
        ref, sr = sf.read(ref_path, dtype="float32", always_2d=True)
        ref = ref[: 10 * sr]
        power = np.mean(ref ** 2)
        clean_path = work / "ood" / f"{name}_clean.wav"
        clean_path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(clean_path, ref, sr, subtype="FLOAT")
        for snr in SNRS_DB:
            noise = rng.standard_normal(ref.shape).astype(np.float32)
            deg = ref + noise * np.sqrt(power / 10 ** (snr / 10))
            path = work / "ood" / f"{name}_snr{snr}.wav"
            sf.write(path, deg, sr, subtype="FLOAT")
            rows.append({"key": f"{name}_noise_snr{snr}", "reference": str(clean_path),
                         "degraded": str(path),
                         "visqol": labeller.score(ref.T, deg.T, sample_rate=sr)})
    write_jsonl(cache, rows)
    return rows


def condition_means(train_manifest: Path | None) -> dict[str, float]:
    if train_manifest is None or not train_manifest.exists():
        return {}
    from deepaq.manifest import read_manifest

    acc: dict[str, list] = defaultdict(list)
    for r in read_manifest(train_manifest):
        if r["codec"] and r.get("visqol") is not None:
            acc[r["condition"]].append(r["visqol"])
    return {k: float(np.mean(v)) for k, v in acc.items()}


def model_distances(scorer, pairs: list[tuple[str, str]]) -> np.ndarray:
    return np.array([r.distance for r in scorer.score_many(pairs)])


def stats(quality: np.ndarray, rows: list[dict]) -> dict[str, float]:
    """quality: higher = better. Pooled / within-reference Spearman, per-codec Kendall vs kbps."""
    from deepaq.evaluation import bitrate_kendall

    y = np.array([r["visqol"] for r in rows])
    out = {"spearman": float(spearmanr(quality, y)[0])}
    within = []
    excerpts = sorted({r["excerpt_id"] for r in rows})
    for e in excerpts:
        sel = np.array([r["excerpt_id"] == e for r in rows])
        within.append(spearmanr(quality[sel], y[sel])[0])
    out["within"] = float(np.nanmean(within))
    taus = bitrate_kendall(quality, [r["bitrate_requested_kbps"] for r in rows],
                           [r["codec"] for r in rows], [r["excerpt_id"] for r in rows])
    out.update({f"tau_{codec}": tau for codec, tau in taus.items()})
    return out


def label_ceiling(rows: list[dict]) -> dict[str, float]:
    """Per codec, mean over excerpts: the best within-reference Spearman vs ViSQOL that a metric
    ordering that codec's bitrates perfectly (Kendall tau 1) can reach on these labels."""
    from deepaq.evaluation import monotone_ceiling

    y = np.array([r["visqol"] for r in rows])
    kbps = np.array([float(r["bitrate_requested_kbps"]) for r in rows])
    out = {}
    for codec in ("opus", "mp3", "aac"):
        best = []
        for e in sorted({r["excerpt_id"] for r in rows}):
            sel = np.array([r["excerpt_id"] == e for r in rows])
            chain = np.array([r["codec"] == codec for r in rows])[sel]
            best.append(monotone_ceiling(y[sel], kbps[sel], chain))
        out[codec] = float(np.mean(best))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "deepaq-small-4"))
    p.add_argument("--extra-checkpoint", action="append", default=[],
                   help="NAME=PATH: more checkpoints in the table (ablations)")
    p.add_argument("--train-manifest", type=Path, default=None,
                   help="training corpus manifest, for the condition-mean lookup baseline")
    p.add_argument("--work", type=Path, default=Path("/tmp/deepaq-bench-default"))
    p.add_argument("--speed-pairs", type=int, default=10)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    import torch

    from deepaq.manifest import read_manifest
    from deepaq.metrics import get_metric
    from deepaq.model import QualityModel
    from deepaq.scoring import Scorer

    torch.manual_seed(0)
    manifest = build_heldout(args.work)
    folder = manifest.parent
    rows = [r for r in read_manifest(manifest) if r["codec"]]
    pairs = [(str(folder / r["reference"]), str(folder / r["path"])) for r in rows]
    assert len(rows) == 210, f"expected 210 held-out pairs, got {len(rows)}"
    ood = ood_pairs(args.work)
    ood_pairs_ = [(r["reference"], r["degraded"]) for r in ood]
    ood_y = np.array([r["visqol"] for r in ood])

    quality: dict[str, np.ndarray] = {}
    ood_quality: dict[str, np.ndarray] = {}
    # ViSQOL's own labels as a metric: 1.0 against themselves, but their Kendall tau vs bitrate
    # is the order the bitrate targets ask a ViSQOL-trained model to depart from
    quality["ViSQOL labels themselves"] = np.array([r["visqol"] for r in rows])
    ood_quality["ViSQOL labels themselves"] = ood_y
    quality["bitrate only"] = np.array([r["bitrate_measured_kbps"] for r in rows])
    means = condition_means(args.train_manifest)
    if means:
        quality["condition-mean lookup"] = np.array([means.get(r["condition"], np.nan)
                                                     for r in rows])
    import soundfile as sf

    logmel = get_metric("logmel_l1")

    def logmel_q(pair_list):
        out = []
        for ref, deg in pair_list:
            a, sr = sf.read(ref, dtype="float32", always_2d=True)
            b, _ = sf.read(deg, dtype="float32", always_2d=True)
            n = min(len(a), len(b))
            out.append(-float(logmel.score(a[:n].T, b[:n].T, sr)))
        return np.array(out)

    quality["log-mel L1"] = logmel_q(pairs)
    ood_quality["log-mel L1"] = logmel_q(ood_pairs_)

    checkpoints = {"DeePAQ-small (shipped)": args.checkpoint}
    checkpoints.update(dict(e.split("=", 1) for e in args.extra_checkpoint))
    speed_scorer = None
    for name, path in checkpoints.items():
        if not Path(path, "config.yaml").exists():
            print(f"(no checkpoint at {path}: {name} skipped)", file=sys.stderr)
            continue
        scorer = Scorer.from_pretrained(path, device="cpu")
        model = scorer.model
        quality[name] = -model_distances(scorer, pairs)
        ood_quality[name] = -model_distances(scorer, ood_pairs_)
        speed_scorer = speed_scorer or (scorer, path)
        if name == "DeePAQ-small (shipped)":
            torch.manual_seed(0)
            untrained = QualityModel(**model.config()).eval()
            label = ("same architecture, untrained (equal band weights)"
                     if model.config().get("distance") == "nsim" else "same architecture, random init")
            rs = Scorer(untrained, None, device="cpu", metadata=scorer.metadata)
            quality[label] = -model_distances(rs, pairs)
            ood_quality[label] = -model_distances(rs, ood_pairs_)

    header = ("| metric | Spearman vs ViSQOL (210 pairs) | within-reference Spearman | "
              "Kendall tau vs kbps: opus / mp3 / aac | OOD Spearman vs ViSQOL "
              f"({len(ood)} pairs) |")
    lines = [header, "|---|---:|---:|---:|---:|"]
    results = {}
    for name, q in quality.items():
        s = stats(q, rows)
        o = (float(spearmanr(ood_quality[name], ood_y)[0]) if name in ood_quality else math.nan)
        results[name] = {**s, "ood_spearman": o}
        lines.append(f"| {name} | {s['spearman']:.3f} | {s['within']:.3f} | "
                     f"{s['tau_opus']:.3f} / {s['tau_mp3']:.3f} / {s['tau_aac']:.3f} | "
                     + ("-" if math.isnan(o) else f"{o:.3f}") + " |")
    print("\n".join(lines))
    ceiling = label_ceiling(rows)
    results["label ceiling"] = {f"within_if_{c}_monotone": v for c, v in ceiling.items()}
    print("\nLabel ceiling: the best mean within-reference Spearman vs ViSQOL that *any* metric "
          "can reach while ordering one codec's bitrates perfectly (tau 1), found by exact "
          "enumeration: " + ", ".join(f"{c} {v:.4f}" for c, v in ceiling.items()) + ".")

    # OOD detail
    print("\nOut-of-distribution pairs (higher = better for every column):\n")
    names = [n for n in ood_quality if n != "ViSQOL labels themselves"]
    print("| pair | ViSQOL | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for i, r in enumerate(ood):
        print(f"| {r['key']} | {r['visqol']:.3f} | "
              + " | ".join(f"{ood_quality[n][i]:.4f}" for n in names) + " |")

    # speed
    from deepaq.visqol import VisqolLabeller

    sub = pairs[: args.speed_pairs]
    # Both sides start with nothing cached and may reuse their analysis of a reference across
    # these pairs (the first held-out pairs share one): ViSQOL its spectrogram cache, DeePAQ its
    # reference embeddings. The warm-up (numba kernels) is on noise, so it caches nothing used.
    labeller = VisqolLabeller(mode="audio")
    labeller.warmup()
    t0 = time.perf_counter()
    for ref, deg in sub:
        labeller.score_files(ref, deg)
    visqol_pps = len(sub) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for ref, deg in sub:
        logmel_q([(ref, deg)])
    logmel_pps = len(sub) / (time.perf_counter() - t0)
    print(f"\nSpeed on this machine ({len(sub)} held-out pairs of <= 10 s, 48 kHz stereo):\n")
    print("| metric | pairs/s | x ViSQOL |\n|---|---:|---:|")
    print(f"| ViSQOL v3 (visqol-python, spectrogram cache) | {visqol_pps:.2f} | 1.0 |")
    print(f"| log-mel L1 | {logmel_pps:.2f} | {logmel_pps / visqol_pps:.1f} |")
    results["speed"] = {"visqol_pairs_per_s": visqol_pps, "logmel_pairs_per_s": logmel_pps}
    if speed_scorer is not None:
        scorer, path = speed_scorer
        fresh = Scorer.from_pretrained(path, device="cpu")  # no cached references
        t0 = time.perf_counter()
        fresh.score_many(sub)
        pps = len(sub) / (time.perf_counter() - t0)
        print(f"| DeePAQ-small | {pps:.2f} | {pps / visqol_pps:.1f} |")
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "deepaq.cli", "score", *sub[0], "--checkpoint",
                        str(path)], check=True, capture_output=True)
        e2e = time.perf_counter() - t0
        print(f"\n`deepaq score REF DEG` end to end (process start, model load, one pair): "
              f"{e2e:.2f} s")
        results["speed"].update({"deepaq_pairs_per_s": pps, "end_to_end_s": e2e})
    if args.json:
        from deepaq.records import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
