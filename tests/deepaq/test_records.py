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


def test_appender_started_with_rows_replaces_the_file_and_appends(tmp_path, monkeypatch):
    import deepaq.records

    p = tmp_path / "out.jsonl"
    p.write_text('{"key": "old", "v": 0}\n{"key": "torn", "v"')
    kept = [{"key": "a", "v": 1}, {"key": "b", "v": None}]
    monkeypatch.setattr(deepaq.records, "iter_jsonl", None)  # the rows are known: no read back
    with JsonlAppender(p, resume=True, start_with=kept) as w:
        assert w.done == {"a": kept[0], "b": kept[1]}
        w.write({"key": "c", "v": 3})
    monkeypatch.undo()
    assert read_jsonl(p) == [*kept, {"key": "c", "v": 3}]
