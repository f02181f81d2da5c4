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
bitrate_label            the bitrate weak label = measured kbps per channel (a stereo item at
                         64 kbps ranks with a mono one at 32); ``"inf"`` for clean
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

Beside each manifest ``manifest[.shard-K-of-N].jsonl`` a sidecar ``...config.json`` holds the
resolved configuration it was built with (``config_hash``, ``config``, ``shard``), so that merging
shards built with different settings is refused (:func:`merge_manifests`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from deepaq.records import atomic_write_text, parse_float, read_jsonl, write_jsonl

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
    """Canonical order: by excerpt, clean first, then by codec name (family rows have none, so
    they come first) and family name, then bitrate or level (the key breaks any tie)."""
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


def config_hash(config: dict) -> str:
    """Short digest of a resolved corpus configuration (its ``config_hash`` key excluded)."""
    body = {k: v for k, v in config.items() if k != "config_hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return {**{f"{prefix}[{i}]": None for i in range(len(value))},
                **{k: v for i, v in enumerate(value) for k, v in _flatten(v, f"{prefix}[{i}]").items()}}
    return {prefix: value}


def config_difference(mine: dict, theirs: dict, here: str = "here",
                      there: str = "there") -> str | None:
    """The settings that differ between two resolved configurations, as one phrase, or None."""
    a = _flatten({k: v for k, v in mine.items() if k != "config_hash"})
    b = _flatten({k: v for k, v in theirs.items() if k != "config_hash"})
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    if not keys:
        return None
    first = keys[0]
    more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
    return (f"{first} is {a.get(first, '<absent>')!r} in {here}, "
            f"{b.get(first, '<absent>')!r} in {there}{more}")


def config_sidecar(manifest: str | os.PathLike) -> Path:
    """``corpus/manifest.shard-1-of-4.jsonl`` -> ``corpus/manifest.shard-1-of-4.config.json``."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.name.removesuffix(".jsonl") + ".config.json")


def read_manifest_config(manifest: str | os.PathLike) -> dict | None:
    """The sidecar written with a manifest (``config_hash``, ``config``, ``shard``), or None."""
    side = config_sidecar(manifest)
    if not side.is_file():
        return None
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{side}: invalid JSON ({exc})") from None


def write_manifest(path: str | os.PathLike, rows: list[dict], config: dict | None = None,
                   shard: tuple[int, int] | None = None) -> Path:
    """Canonical order, unique keys, atomic; with ``config`` also its sidecar (written first, so
    a manifest never sits beside a stale sidecar)."""
    rows = sort_rows(rows)
    keys = [r["key"] for r in rows]
    if len(keys) != len(set(keys)):
        dupes = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise ValueError(f"{path}: duplicate keys {dupes}")
    if config is not None:
        side = {"config_hash": config.get("config_hash") or config_hash(config),
                "shard": None if shard is None else list(shard), "config": config}
        atomic_write_text(config_sidecar(path), json.dumps(side, indent=1) + "\n")
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


def _shard_configs(paths: list[Path]) -> dict:
    """The one configuration all shards were built with; refuses a mismatch or a missing shard."""
    sides = []
    for p in paths:
        side = read_manifest_config(p)
        if side is None:
            raise ValueError(f"{p}: no {config_sidecar(p).name} beside it, so its configuration "
                             "cannot be checked (rebuild the shard with this deepaq-prep)")
        sides.append(side)
    first = sides[0]
    for p, side in zip(paths[1:], sides[1:]):
        diff = config_difference(side["config"], first["config"], p.name, paths[0].name)
        if diff:
            raise ValueError(f"{p}: built with another configuration than {paths[0].name} "
                             f"({diff})")
    shards = [tuple(s["shard"]) if s.get("shard") else None for s in sides]
    if any(s is not None for s in shards):
        counts = {s[1] for s in shards if s is not None}
        got = sorted(s[0] for s in shards if s is not None)
        n = max(counts)
        if None in shards or len(counts) > 1 or got != list(range(1, n + 1)):
            raise ValueError(f"{paths[0].parent}: shards given {_shard_names(shards)} are not "
                             f"exactly 1..{n} of {n} once each")
    return first["config"]


def _shard_names(shards: list) -> str:
    return ", ".join("unsharded" if s is None else f"{s[0]}/{s[1]}" for s in shards)


def merge_manifests(paths: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Join shard manifests written into the same corpus folder into one canonical manifest,
    after checking that they were built with one configuration and are all there."""
    out = Path(out)
    paths = [Path(p) for p in paths]
    for p in paths:
        if p.resolve().parent != out.resolve().parent:
            raise ValueError(f"{p}: shard manifests must sit in the output's folder "
                             f"({out.parent}) because item paths are relative to it")
        if not p.is_file():
            raise FileNotFoundError(f"{p}: shard manifest not found")
    if out.is_dir():
        raise ValueError(f"{out}: is a directory (give the merged manifest's file name)")
    config = _shard_configs(paths)
    rows: list[dict] = []
    for p in paths:
        rows += read_jsonl(p)
    return write_manifest(out, rows, config=config)


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
