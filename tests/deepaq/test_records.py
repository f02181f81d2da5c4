"""JSONL/CSV records: infinities, atomic writes and crash-safe appends."""

from __future__ import annotations

import math

from deepaq.records import JsonlAppender, parse_float, read_jsonl, read_table, write_table


def test_inf_and_nan_round_trip(tmp_path):
    write_table(tmp_path / "a.jsonl", [{"key": "a", "x": math.inf, "y": math.nan, "z": 1.5}])
    row = read_jsonl(tmp_path / "a.jsonl")[0]
    assert row == {"key": "a", "x": "inf", "y": None, "z": 1.5}
    assert math.isinf(parse_float(row["x"])) and math.isnan(parse_float(row["y"]))


def test_csv_and_jsonl_tables(tmp_path):
    rows = [{"key": "k1", "reference": "r.wav", "degraded": "d.wav"}, {"key": "k2", "extra": 3}]
    write_table(tmp_path / "t.csv", rows)
    back = read_table(tmp_path / "t.csv")
    assert [r["key"] for r in back] == ["k1", "k2"] and back[1]["extra"] == "3"


def test_appender_repairs_torn_tail_and_resumes(tmp_path):
    p = tmp_path / "out.jsonl"
    with JsonlAppender(p) as w:
        w.write({"key": "a", "v": 1})
        w.write({"key": "b", "v": 2})
    with open(p, "a") as f:
        f.write('{"key": "c", "v"')  # a writer killed mid-line
    with JsonlAppender(p, resume=True) as w:
        assert set(w.done) == {"a", "b"}
        w.write({"key": "c", "v": 3})
    assert [r["key"] for r in read_jsonl(p)] == ["a", "b", "c"]
    with JsonlAppender(p, resume=False) as w:  # a fresh run starts over
        assert w.done == {}
    assert not p.read_text()
