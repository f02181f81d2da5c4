"""K-of-N splits shared by deepaq-prep build --shard and deepaq score --shard."""

from __future__ import annotations

import argparse

import pytest

from deepaq.sharding import parse_shard, select_shard, shard_path


def test_shards_partition_the_items_in_order():
    items = list(range(10))
    parts = [select_shard(items, (k, 3)) for k in (1, 2, 3)]
    assert parts[0] == [0, 3, 6, 9]  # round-robin, as deepaq-prep has always split excerpts
    assert sorted(x for p in parts for x in p) == items and all(p == sorted(p) for p in parts)
    assert select_shard(items, None) == items


def test_groups_stay_together():
    refs = ["a", "a", "a", "b", "b", "c", "d", "d"]
    rows = list(enumerate(refs))
    parts = [select_shard(rows, (k, 2), group=lambda r: r[1]) for k in (1, 2)]
    assert [r for _, r in parts[0]] == ["a", "a", "a", "c"]
    assert [r for _, r in parts[1]] == ["b", "b", "d", "d"]


def test_parse_shard_and_paths(tmp_path):
    assert parse_shard("3/16") == (3, 16)
    for bad in ("0/4", "5/4", "x", "1-4"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_shard(bad)
    assert shard_path(tmp_path / "s.jsonl", (2, 8)).name == "s.shard-2-of-8.jsonl"
    assert shard_path(tmp_path / "s.csv", None).name == "s.csv"
