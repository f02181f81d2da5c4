"""Input discovery: a folder of audio files (recursive) or a JSONL list of tracks.

Each source track gets a stable, filesystem-safe ``track_id``; splits and excerpt keys hang off it,
so the same inputs always give the same keys.
"""

from __future__ import annotations

import os
import re
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


def _dedupe(tracks: list[Track]) -> list[Track]:
    seen: dict[str, int] = {}
    out = []
    for t in tracks:
        n = seen.get(t.track_id, 0)
        seen[t.track_id] = n + 1
        out.append(t if n == 0 else Track(f"{t.track_id}-{n}", t.path, t.start_time, t.end_time,
                                          t.stems))
    return out


def discover_folder(folder: str | os.PathLike) -> list[Track]:
    """All audio files under ``folder`` (recursive), sorted by relative path for determinism."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                   and not p.name.startswith("."))
    return _dedupe([Track(safe_id(str(p.relative_to(folder).with_suffix(""))), str(p))
                    for p in files])


def discover_list(path: str | os.PathLike) -> list[Track]:
    """Rows ``{"key", "path", "start_time"?, "end_time"?, "stems"?}``; relative paths (also
    those of ``stems``, a list of the parts that sum to ``path``) are resolved against the list
    file's folder."""
    path = Path(path)
    tracks = []
    for i, row in enumerate(read_table(path)):
        if "path" not in row:
            raise ValueError(f"{path}: row {i + 1} has no 'path'")
        audio = Path(row["path"])
        if not audio.is_absolute():
            audio = path.parent / audio
        key = row.get("key") or audio.stem
        start = row.get("start_time")
        end = row.get("end_time")
        stems = row.get("stems") or ()
        if isinstance(stems, str):  # a CSV cell: paths separated by ';'
            stems = [p for p in stems.split(";") if p.strip()]
        stems = tuple(str(s if Path(s).is_absolute() else path.parent / s) for s in stems)
        tracks.append(Track(safe_id(str(key)), str(audio),
                            None if start in (None, "") else float(start),
                            None if end in (None, "") else float(end), stems))
    return _dedupe(tracks)


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
    return _dedupe(tracks)
