"""K-of-N splits of an ordered work list, one function for ``deepaq-prep build`` and ``deepaq score``.

Why one function: a SLURM job array runs the same command with ``--shard $K/$N``; every task must
compute the same split from the same input, whichever tool it runs, and the merge step must know
which rows belong to which shard to check that none is missing.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def parse_shard(text: str) -> tuple[int, int]:
    """``"3/16"`` -> ``(3, 16)``; an argparse ``type=`` (bad text is a one-line usage error)."""
    try:
        k, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N (e.g. 3/16), got {text!r}") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"shard {text}: need 1 <= K <= N")
    return k, n


def split_shards(items: Sequence[T], n: int,
                 group: Callable[[T], Hashable] | None = None) -> list[list[T]]:
    """All ``n`` shards of ``items`` in one pass: groups dealt round-robin, order kept.

    A group is a run of consecutive items with the same ``group(item)`` value (default: every item
    its own group), so e.g. all the coded conditions of one reference land in one shard and its
    embedding is computed once. Depends only on the item order, so every task agrees.
    """
    shards: list[list[T]] = [[] for _ in range(n)]
    index, previous = -1, object()
    for i, item in enumerate(items):
        value = i if group is None else group(item)
        if value != previous:
            index, previous = index + 1, value
        shards[index % n].append(item)
    return shards


def select_shard(items: Sequence[T], shard: tuple[int, int] | None,
                 group: Callable[[T], Hashable] | None = None) -> list[T]:
    """Items of shard ``K`` of ``N`` (1-based) of :func:`split_shards`; all items without one."""
    if shard is None:
        return list(items)
    k, n = shard
    if not 1 <= k <= n:
        raise ValueError(f"shard must be K/N with 1 <= K <= N, got {k}/{n}")
    return split_shards(items, n, group)[k - 1]


def shard_tag(shard: tuple[int, int] | None) -> str:
    """``.shard-K-of-N`` (empty without a shard): the infix of every shard's output file."""
    return "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"


def shard_path(path: str | os.PathLike, shard: tuple[int, int] | None) -> Path:
    """``scores.jsonl`` -> ``scores.shard-3-of-16.jsonl`` (the suffix stays last)."""
    path = Path(path)
    return path.with_name(path.stem + shard_tag(shard) + path.suffix)


def find_shards(path: str | os.PathLike) -> dict[int, tuple[int, Path]]:
    """The shard files beside ``path``: ``{K: (N, file)}``; several N raise ``ValueError``."""
    import re

    path = Path(path)
    pattern = re.compile(re.escape(path.stem) + r"\.shard-(\d+)-of-(\d+)" + re.escape(path.suffix)
                         + "$")
    found: dict[int, tuple[int, Path]] = {}
    totals = set()
    for p in sorted(path.parent.glob(f"{path.stem}.shard-*-of-*{path.suffix}")):
        m = pattern.match(p.name)
        if m:
            k, n = int(m.group(1)), int(m.group(2))
            found[k] = (n, p)
            totals.add(n)
    if len(totals) > 1:
        raise ValueError(f"{path.parent}: shard files of different splits "
                         f"({', '.join(f'N={n}' for n in sorted(totals))}) for {path.name}")
    return found
