"""Input discovery: a folder of audio files (recursive) or a JSONL list of tracks.

Each source track gets a stable, filesystem-safe ``track_id``; splits and excerpt keys hang off it,
so the same inputs always give the same keys.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from deepaq.audio import AUDIO_EXTENSIONS
from deepaq.records import read_table


@dataclass(frozen=True)
class Track:
    """One source recording (or a time range of one) to cut into excerpts."""

    track_id: str
    path: str
    start_time: float | None = None
    end_time: float | None = None
    stems: tuple[str, ...] = ()  # the parts that sum to it (separation families need them)


def safe_id(text: str) -> str:
    """A key fragment usable as a folder name: letters, digits, ``.``, ``-`` and ``_`` only.

    ``__`` is reserved as the key separator, so runs of underscores are collapsed.
    """
    text = text.replace(os.sep, "-").replace("/", "-")
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    text = re.sub(r"_{2,}", "_", text).strip("._-")
    return text or "track"


def _source(t: Track) -> str:
    """What makes a track distinct: its file and time range."""
    return f"{t.path}|{t.start_time}|{t.end_time}"


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def unique_ids(tracks: list[Track]) -> list[Track]:
    """Make ``track_id`` injective: every track whose id is shared gets ``<id>-<hash8>``.

    The hash is of the track's source (path as given and time range), so ids depend only on the
    inputs, never on discovery order or on which other names happen to exist (a ``-1`` counter
    turned ``x .wav``, ``x-1.wav``, ``x-1-1.wav`` and ``x.wav`` into two ``x-1-1``). The same source
    given twice, or a hashed id that still collides, is refused before any audio is coded.
    """
    by_id: dict[str, list[Track]] = {}
    for t in tracks:
        by_id.setdefault(t.track_id, []).append(t)
    out = [t if len(by_id[t.track_id]) == 1 else
           Track(f"{t.track_id}-{_short_hash(_source(t))}", t.path, t.start_time, t.end_time,
                 t.stems)
           for t in tracks]
    owner: dict[str, Track] = {}
    for t in out:
        other = owner.setdefault(t.track_id, t)
        if other is not t:
            what = ("is given twice" if _source(other) == _source(t)
                    else f"and {other.path} both map to track id {t.track_id!r}")
            raise ValueError(f"{t.path}: {what} (each input track needs its own id)")
    return out


def discover_folder(folder: str | os.PathLike) -> list[Track]:
    """All audio files under ``folder`` (recursive), sorted by relative path for determinism."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                   and not p.name.startswith("."))
    return unique_ids([Track(safe_id(str(p.relative_to(folder).with_suffix(""))), str(p))
                       for p in files])


def _seconds(row: dict, name: str, where: str) -> float | None:
    value = row.get(name)
    if value in (None, ""):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{where}: {name} {value!r} must be a finite time >= 0 s")
    return seconds


def discover_list(path: str | os.PathLike) -> list[Track]:
    """Rows ``{"key", "path", "start_time"?, "end_time"?, "stems"?}``; relative paths (also
    those of ``stems``, a list of the parts that sum to ``path``) are resolved against the list
    file's folder. Negative times or an end not after the start are refused (a negative start
    would silently read from the end of the file)."""
    path = Path(path)
    tracks = []
    rows = read_table(path)
    if not rows:
        print(f"deepaq-prep: warning: {path}: 0 rows", file=sys.stderr)
    for i, row in enumerate(rows):
        where = f"{path}: row {i + 1}"
        if "path" not in row:
            raise ValueError(f"{where} has no 'path'")
        audio = Path(row["path"])
        if not audio.is_absolute():
            audio = path.parent / audio
        key = row.get("key") or audio.stem
        start = _seconds(row, "start_time", where)
        end = _seconds(row, "end_time", where)
        if end is not None and end <= (start or 0.0):
            raise ValueError(f"{where}: end_time {end} is not after start_time {start or 0.0}")
        stems = row.get("stems") or ()
        if isinstance(stems, str):  # a CSV cell: paths separated by ';'
            stems = [p for p in stems.split(";") if p.strip()]
        stems = tuple(str(s if Path(s).is_absolute() else path.parent / s) for s in stems)
        tracks.append(Track(safe_id(str(key)), str(audio), start, end, stems))
    return unique_ids(tracks)


def discover(inputs: list[str | os.PathLike]) -> list[Track]:
    """Tracks from any mix of folders, list files (.jsonl/.csv) and single audio files."""
    tracks: list[Track] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            tracks += discover_folder(p)
        elif p.suffix.lower() in (".jsonl", ".json", ".csv", ".tsv"):
            tracks += discover_list(p)
        else:
            tracks.append(Track(safe_id(p.stem), str(p)))
    return unique_ids(tracks)
