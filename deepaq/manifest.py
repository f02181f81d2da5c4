"""The corpus manifest: one JSONL row per corpus item (a clean excerpt or one coded version of it).

Schema (every row has every field; paths are relative to the manifest's folder):

=======================  ====================================================================
key                      ``<excerpt_id>__<condition>``, unique
excerpt_id               ``<track_id>__<start_ms:08d>``
track_id                 source track key (splits are assigned per track)
source_path              the source file as given
start_time, end_time     excerpt position in the source, seconds
split                    ``train`` | ``val`` | ``test``
condition                ``clean``, ``<codec>_<kbps:03d>`` (e.g. ``opus_064``) or
                         ``<family>_<level>`` (e.g. ``noise_pink_20``, ``gain_m6``)
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
family                   the weak label's family: the codec name for codec rows, a registered
                         degradation (``data_prep.degradations``) for the others; null: clean
level                    the family's control parameter (codecs: measured kbps); null: clean
level_unit               its unit (``kbps``, ``dB SNR``, ``Hz``, ``mask corruption``, ...)
level_higher_is_better   which way the level orders quality; null for invariances and clean
invariance               true for a perceptually transparent change (gain, polarity, resampling
                         round trip, small delay): it should score as clean; no level order
mask_type                separation artefacts: the corrupted mask (``noisy``, ``smoothed``, ...)
target_stem              separation rows: the target stem's source file (their ``reference`` is
                         that stem's excerpt, not the mix)
snr_db                   measured SNR of an additive noise family
sdr_db, sir_db, sar_db   measured BSS-Eval-style ratios of the separation families
cutoff_hz                measured band limit (-6 dB) of low-pass and resampling families
=======================  ====================================================================

Within one excerpt, the rows of one ``family`` (and one ``mask_type``) form a ladder ordered by
``level`` in the direction of ``level_higher_is_better``; rows of different families are not
ordered against each other. The family fields are null where they do not apply and may be absent
from manifests written before they existed (:func:`read_manifest` fills them with null).

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

CORE_FIELDS = (
    "key", "excerpt_id", "track_id", "source_path", "start_time", "end_time", "split",
    "condition", "codec", "encoder", "bitrate_requested_kbps", "bitrate_measured_kbps",
    "bitrate_label", "coded_sample_rate", "delay_removed_samples", "alignment_lag",
    "sample_rate", "channels", "num_samples", "path", "reference", "visqol",
)
#: The weak label of a row: its family and control level (null for clean rows).
FAMILY_FIELDS = ("family", "level", "level_unit", "level_higher_is_better", "invariance",
                 "mask_type", "target_stem")
#: Quantities measured on an item (null where they do not apply).
MEASURE_FIELDS = ("snr_db", "sdr_db", "sir_db", "sar_db", "cutoff_hz")
FIELDS = CORE_FIELDS + FAMILY_FIELDS + MEASURE_FIELDS
FLOAT_FIELDS = ("bitrate_requested_kbps", "bitrate_measured_kbps", "bitrate_label", "visqol",
                "snr_db", "sdr_db", "sir_db", "sar_db")
#: Columns training needs on every row (other corpora, e.g. JND ones, may lack the rest).
TRAINING_COLUMNS = ("key", "excerpt_id", "split", "condition", "path", "reference", "visqol",
                    "bitrate_label")


def condition_name(codec: str | None, kbps: float | None) -> str:
    return "clean" if codec is None else f"{codec}_{round(kbps):03d}"


def excerpt_id(track_id: str, start_time: float) -> str:
    return f"{track_id}__{round(start_time * 1000):08d}"


def _order(row: dict) -> tuple:
    if row["codec"] is not None:
        rank = parse_float(row.get("bitrate_requested_kbps"))
    elif row.get("family") is not None:
        rank = parse_float(row.get("level"))
    else:
        rank = -1.0
    return (row["excerpt_id"], row["condition"] != "clean", row["codec"] or "",
            row.get("family") or "", row.get("mask_type") or "",
            -1.0 if math.isinf(rank) or math.isnan(rank) else rank, row["key"])


def sort_rows(rows: list[dict]) -> list[dict]:
    """Canonical order: by excerpt, then clean first, then codec name and bitrate, then family
    and level (the key breaks any tie)."""
    return sorted(rows, key=_order)


def make_row(**fields) -> dict:
    """A manifest row with the fields in schema order; refuses unknown or missing core fields.

    Family and measured fields default to null; a codec row's family is its codec, its level
    the measured bitrate (kbps, higher is better)."""
    missing = [f for f in CORE_FIELDS if f not in fields]
    extra = [f for f in fields if f not in FIELDS]
    if missing or extra:
        raise ValueError(f"manifest row: missing {missing}, unknown {extra}")
    _codec_family(fields)
    fields.setdefault("invariance", False)
    return {f: fields.get(f) for f in FIELDS}


def _codec_family(row: dict) -> None:
    """A codec row is a ladder of its codec by measured bitrate."""
    if row.get("codec") is not None and row.get("family") is None:
        row.update(family=row["codec"], level=row["bitrate_label"], level_unit="kbps",
                   level_higher_is_better=True)


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> Path:
    rows = sort_rows(rows)
    keys = [r["key"] for r in rows]
    if len(keys) != len(set(keys)):
        dupes = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise ValueError(f"{path}: duplicate keys {dupes}")
    return write_jsonl(path, rows)


def read_manifest(path: str | os.PathLike, split: str | Sequence[str] | None = None,
                  required: Sequence[str] = ()) -> list[dict]:
    """Rows with float fields parsed (``"inf"`` -> ``math.inf``; a null measure stays None),
    optionally only some splits,
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
        for f in FAMILY_FIELDS + MEASURE_FIELDS:
            r.setdefault(f, None)
        _codec_family(r)  # manifests written before the family fields existed
        for f in FLOAT_FIELDS:
            if f in r and (r[f] is not None or f not in MEASURE_FIELDS):
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
        if r["condition"] == "clean" and not include_clean:
            continue
        ref, deg = base / r["reference"], base / r["path"]
        out.append({"key": r["key"],
                    "reference": str(ref.resolve() if absolute else ref),
                    "degraded": str(deg.resolve() if absolute else deg),
                    "mos": r.get("visqol"), "condition": r["condition"], "test": r["excerpt_id"],
                    "split": r["split"]})
    return out
