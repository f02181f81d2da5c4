"""Train/val/test assignment by source track, never by excerpt, so no music leaks across splits."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def assign_splits(track_ids: list[str], fractions: dict[str, float] | None = None,
                  seed: int = 0) -> dict[str, str]:
    """Seeded permutation of the sorted track ids, cut by the fractions (largest remainder).

    Sorting first makes the result independent of discovery order, and every shard of a sharded
    run computes the same assignment from the same track list.
    """
    fractions = dict(fractions or {"train": 0.8, "val": 0.1, "test": 0.1})
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split names {sorted(unknown)} (use {SPLITS})")
    total = sum(fractions.values())
    if total <= 0 or any(v < 0 for v in fractions.values()):
        raise ValueError(f"split fractions must be >= 0 and not all 0, got {fractions}")
    ids = sorted(set(track_ids))
    n = len(ids)
    order = np.random.default_rng(seed).permutation(n)
    names = [s for s in SPLITS if fractions.get(s, 0) > 0]
    exact = np.array([fractions[s] / total * n for s in names])
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    out: dict[str, str] = {}
    pos = 0
    for name, count in zip(names, counts):
        for idx in order[pos:pos + count]:
            out[ids[idx]] = name
        pos += count
    return out
