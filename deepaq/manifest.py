"""The corpus manifest: one JSONL row per corpus item (a clean excerpt or one coded version of it).

Schema (every row has every field; paths are relative to the manifest's folder):

=======================  ====================================================================
key                      ``<excerpt_id>__<condition>``, unique
excerpt_id               ``<track_id>__<start_ms:08d>``
track_id                 source track key (splits are assigned per track)
source_path              the source file as given
start_time, end_time     excerpt position in the source, seconds
split                    ``train`` | ``val`` | ``test``
condition                ``clean`` or ``<codec>_<kbps:03d>``, e.g. ``opus_064``
codec                    null | ``opus`` | ``mp3`` | ``aac``
encoder                  null | FFmpeg encoder name (``libopus``, ``libmp3lame``, ``aac``)
bitrate_requested_kbps   requested bitrate; ``"inf"`` for clean
bitrate_measured_kbps    bitrate measured from the encoded stream's size; ``"inf"`` for clean
bitrate_label            the bitrate weak label = measured kbps; ``"inf"`` for clean
coded_sample_rate        rate the codec ran at (MP3 at low bitrates runs at 24 kHz); 48000 clean
delay_removed_samples    codec delay removed before alignment, at 48 kHz (0 for clean)
alignment_lag            residual lag found by cross-correlation and corrected (0 for clean)
sample_rate              48000
channels                 1 or 2
num_samples              length of the item, equal to its reference's
path                     this item's audio (FLAC)
reference                the clean excerpt's audio (FLAC)
visqol                   ViSQOL v3 audio-mode MOS-LQO vs the reference (clean: vs itself);
                         null when the corpus was built with ``--labels none``
=======================  ====================================================================

Infinite values are stored as the JSON string ``"inf"``; read them with
:func:`deepaq.records.parse_float`. Row order is canonical (see :func:`sort_rows`), so the same
inputs and seed give a byte-identical file, whether built in one run or merged from shards.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from deepaq.records import parse_float, read_jsonl, write_jsonl

FIELDS = (
    "key", "excerpt_id", "track_id", "source_path", "start_time", "end_time", "split",
    "condition", "codec", "encoder", "bitrate_requested_kbps", "bitrate_measured_kbps",
    "bitrate_label", "coded_sample_rate", "delay_removed_samples", "alignment_lag",
    "sample_rate", "channels", "num_samples", "path", "reference", "visqol",
)
FLOAT_FIELDS = ("bitrate_requested_kbps", "bitrate_measured_kbps", "bitrate_label", "visqol")
#: Columns training needs on every row (other corpora, e.g. JND ones, may lack the rest).
TRAINING_COLUMNS = ("key", "excerpt_id", "split", "condition", "path", "reference", "visqol",
                    "bitrate_label")


def condition_name(codec: str | None, kbps: float | None) -> str:
    return "clean" if codec is None else f"{codec}_{round(kbps):03d}"


def excerpt_id(track_id: str, start_time: float) -> str:
    return f"{track_id}__{round(start_time * 1000):08d}"


def _order(row: dict) -> tuple:
    requested = parse_float(row.get("bitrate_requested_kbps"))
    return (row["excerpt_id"], row["codec"] is not None, row["codec"] or "",
            -1.0 if math.isinf(requested) else requested)


def sort_rows(rows: list[dict]) -> list[dict]:
    """Canonical order: by excerpt, then clean first, then codec name, then bitrate."""
    return sorted(rows, key=_order)


def make_row(**fields) -> dict:
    """A manifest row with the fields in schema order; refuses unknown or missing fields."""
    missing = [f for f in FIELDS if f not in fields]
    extra = [f for f in fields if f not in FIELDS]
    if missing or extra:
        raise ValueError(f"manifest row: missing {missing}, unknown {extra}")
    return {f: fields[f] for f in FIELDS}


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> Path:
    rows = sort_rows(rows)
    keys = [r["key"] for r in rows]
    if len(keys) != len(set(keys)):
        dupes = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise ValueError(f"{path}: duplicate keys {dupes}")
    return write_jsonl(path, rows)


def read_manifest(path: str | os.PathLike, split: str | Sequence[str] | None = None,
                  required: Sequence[str] = ()) -> list[dict]:
    """Rows with float fields parsed (``"inf"`` -> ``math.inf``), optionally only some splits,
    each checked for the ``required`` columns (training passes :data:`TRAINING_COLUMNS`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: corpus manifest not found")
    rows = read_jsonl(path)
    if split is not None:
        wanted = {split} if isinstance(split, str) else set(split)
        rows = [r for r in rows if r.get("split") in wanted]
    for i, r in enumerate(rows):
        missing = [c for c in required if c not in r]
        if missing:
            raise ValueError(f"{path}: row {i} ({r.get('key')!r}) lacks columns {missing}")
        for f in FLOAT_FIELDS:
            if f in r:
                r[f] = parse_float(r[f])
    return rows


def is_clean(row: dict) -> bool:
    """Clean items are the references themselves (infinite bitrate, no codec)."""
    return row.get("condition") == "clean" or math.isinf(parse_float(row.get("bitrate_label")))


def merge_manifests(paths: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Join shard manifests written into the same corpus folder into one canonical manifest."""
    out = Path(out)
    rows: list[dict] = []
    for p in paths:
        p = Path(p)
        if p.resolve().parent != out.resolve().parent:
            raise ValueError(f"{p}: shard manifests must sit in the output's folder "
                             f"({out.parent}) because item paths are relative to it")
        rows += read_jsonl(p)
    return write_manifest(out, rows)


def to_pairs(rows: list[dict], manifest_dir: str | os.PathLike, absolute: bool = True,
             include_clean: bool = False) -> list[dict]:
    """Corpus rows -> reference/degraded pair rows (the shape ``deepaq score`` and ``deepaq eval``
    read), with ViSQOL as ``mos`` and the excerpt as ``test`` so eval can report per excerpt."""
    base = Path(manifest_dir)
    out = []
    for r in rows:
        if r["codec"] is None and not include_clean:
            continue
        ref, deg = base / r["reference"], base / r["path"]
        out.append({"key": r["key"],
                    "reference": str(ref.resolve() if absolute else ref),
                    "degraded": str(deg.resolve() if absolute else deg),
                    "mos": r.get("visqol"), "condition": r["condition"], "test": r["excerpt_id"],
                    "split": r["split"]})
    return out
