"""A corpus at a glance: counts per condition, label statistics and mean label per codec x bitrate."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np


def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def summarize(rows: list[dict]) -> str:
    """Markdown text: sizes, splits, skipped items, ViSQOL stats and the label-vs-bitrate table."""
    lines = []
    excerpts = {r["excerpt_id"] for r in rows}
    tracks = {r["track_id"] for r in rows}
    seconds = sum(r["num_samples"] / r["sample_rate"] for r in rows if r["condition"] == "clean")
    lines.append(f"items: {len(rows)}  excerpts: {len(excerpts)}  tracks: {len(tracks)}  "
                 f"clean audio: {seconds / 60:.1f} min")
    split_tracks: dict[str, set] = defaultdict(set)
    split_items = Counter()
    for r in rows:
        split_tracks[r["split"]].add(r["track_id"])
        split_items[r["split"]] += 1
    lines.append("splits: " + ", ".join(f"{s} {split_items[s]} items / {len(split_tracks[s])} "
                                        f"tracks" for s in ("train", "val", "test")
                                        if s in split_items))
    labels = np.array([r["visqol"] for r in rows if r.get("visqol") is not None], float)
    if labels.size:
        lines.append(f"ViSQOL MOS-LQO: n={labels.size} mean={labels.mean():.3f} "
                     f"std={labels.std():.3f} min={labels.min():.3f} "
                     f"median={np.median(labels):.3f} max={labels.max():.3f}")
    else:
        lines.append("ViSQOL MOS-LQO: no labels (built with --labels none)")
    measured = defaultdict(list)
    table: dict[tuple, list] = defaultdict(list)
    for r in rows:
        codec = r["codec"] or "clean"
        kbps = r["bitrate_requested_kbps"]
        table[(codec, kbps)].append(r.get("visqol"))
        if r["codec"]:
            measured[(codec, kbps)].append(float(r["bitrate_measured_kbps"]))
    codecs = sorted({c for c, _ in table if c != "clean"})
    rates = sorted({k for c, k in table if c != "clean"})
    lines += ["", "mean ViSQOL per codec x requested bitrate (n items; measured kbps):", "",
              "| kbps | " + " | ".join(codecs) + " |",
              "|---:|" + "---:|" * len(codecs)]
    for kbps in rates:
        cells = []
        for c in codecs:
            vals = [v for v in table.get((c, kbps), []) if v is not None]
            n = len(table.get((c, kbps), []))
            if n == 0:
                cells.append("")
                continue
            meas = np.mean(measured[(c, kbps)]) if measured[(c, kbps)] else math.nan
            cells.append(f"{_fmt(float(np.mean(vals)) if vals else math.nan)} "
                         f"(n={n}; {meas:.1f})")
        lines.append(f"| {kbps:g} | " + " | ".join(cells) + " |")
    clean = [v for v in table.get(("clean", math.inf), []) if v is not None]
    if table.get(("clean", math.inf)):
        lines.append(f"| clean | {_fmt(float(np.mean(clean)) if clean else math.nan)} "
                     f"(n={len(table[('clean', math.inf)])}) |" + " |" * (len(codecs) - 1))
    return "\n".join(lines)
