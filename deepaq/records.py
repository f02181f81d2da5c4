"""JSONL/CSV records: reading tables, atomic whole-file writes and crash-safe appends.

Manifests, score outputs and reject lists are all "one object per row, a ``key`` on every row".
Whole files are written to a temp file and renamed; append-mode outputs (``--resume``) flush and
fsync each row and tolerate a torn last line left by a killed process.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any


def _json_default(obj: Any):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(row: dict) -> str:
    """One JSONL line; infinities are written as the strings "inf"/"-inf" (valid JSON), NaN as null."""
    return json.dumps(_finite(row), default=_json_default, ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def parse_float(value: Any) -> float:
    """Inverse of the writer's convention: "inf" strings and null back to floats."""
    if value is None or value == "":
        return math.nan
    return float(value)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return list(iter_jsonl(path))


def iter_jsonl(path: str | os.PathLike, tolerate_torn_tail: bool = False) -> Iterator[dict]:
    """Rows of a JSONL file; ``tolerate_torn_tail`` skips an unterminated last line (killed writer)."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        if tolerate_torn_tail and i == len(lines) - 1 and not line.endswith("\n"):
            return
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{i + 1}: invalid JSON ({exc})") from None


def read_table(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``.jsonl``/``.json`` (list) or ``.csv``/``.tsv`` file as dicts."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(path)
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of objects")
        return data
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    raise ValueError(f"{path}: unknown table format {suffix!r} (use .jsonl, .json, .csv or .tsv)")


def default_file_mode() -> int:
    """rw for everyone the umask allows (mkstemp's 0600 would hide corpora from other users)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temp file path beside ``path``; on success it replaces ``path``, on error it goes.

    Readers never see a half-written file, and an interrupted run leaves the old one intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, default_file_mode())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text to ``path`` via a temp file in the same folder and ``os.replace``."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(dumps(r) + "\n" for r in rows))


def write_csv(path: str | os.PathLike, rows: list[dict], fields: list[str] | None = None) -> Path:
    fields = fields or _fields(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_cell(r.get(k)) for k in fields})
    return atomic_write_text(path, buf.getvalue())


def write_table(path: str | os.PathLike, rows: list[dict], fields: list[str] | None = None) -> Path:
    """Write rows as JSONL or CSV chosen by the file's suffix, atomically."""
    if Path(path).suffix.lower() in (".csv", ".tsv"):
        return write_csv(path, rows, fields)
    return write_jsonl(path, rows)


def _fields(rows: list[dict]) -> list[str]:
    fields: dict[str, None] = {}
    for r in rows:
        fields.update(dict.fromkeys(r))
    return list(fields)


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return v


class JsonlAppender:
    """Append rows to a JSONL file one fsync'd line at a time, for resumable batch jobs.

    Opening repairs a torn last line (from a killed process) by truncating it, so a rerun with
    ``--resume`` continues from the last complete row. ``start_with`` replaces the file by those
    rows first (atomically, so a kill keeps the old file) and appends after them; being known,
    they are not read back.
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False,
                 start_with: Sequence[dict] | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: dict[str, dict] = {}
        if start_with is not None:
            write_jsonl(self.path, start_with)
            self.done = {str(row.get("key")): row for row in start_with}
        elif resume and self.path.exists():
            self._repair()
            for row in iter_jsonl(self.path):
                self.done[str(row.get("key"))] = row
        elif self.path.exists():
            self.path.unlink()
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open across writes

    def _repair(self) -> None:
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            cut = raw.rfind(b"\n") + 1
            with open(self.path, "r+b") as f:
                f.truncate(cut)

    def write(self, row: dict) -> None:
        self._f.write(dumps(row) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done[str(row.get("key"))] = row

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()
