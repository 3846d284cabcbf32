"""Record files: each record named by its place, counted from 1 as lines are."""

import json

import pytest

from east_agent.common.records import RecordError, placed_records, require_fields


def test_records_are_placed_by_line_or_by_number_from_one(tmp_path):
    listed = tmp_path / "pairs.json"
    listed.write_text(json.dumps([{"source": "a"}, {"source": "b", "reference": "B"}]))
    lines = tmp_path / "pairs.jsonl"
    lines.write_text('{"source": "a"}\n\n{"source": "b"}\n')
    assert [place for place, _ in placed_records(listed)] == ["record 1", "record 2"]
    assert [place for place, _ in placed_records(lines)] == ["line 1", "line 3"]
    place, record = placed_records(listed)[0]
    with pytest.raises(RecordError, match=r"pairs.json: record 1: missing field 'reference'"):
        require_fields(record, ("source", "reference"), listed, place)


def test_invalid_json_is_named_with_its_column(tmp_path):
    """Before: "invalid JSON: Unterminated string starting at", json's message cut short."""
    from east_agent.common.records import read_json_object

    (tmp_path / "cut.jsonl").write_text('{"a": 1}\n{"text": "Kat\n')
    with pytest.raises(RecordError) as raised:
        placed_records(tmp_path / "cut.jsonl")
    said = "line 2: invalid JSON: Unterminated string starting at column 10"
    assert str(raised.value) == f"{tmp_path / 'cut.jsonl'}: {said}"
    (tmp_path / "run.json").write_text('{"testset": "multi30k')
    with pytest.raises(
        RecordError, match="line 1: invalid JSON: Unterminated string starting at column 13; "
    ):
        read_json_object(tmp_path / "run.json")


def test_one_object_over_many_lines_is_named_as_such(tmp_path):
    """Before: "line 1: invalid JSON at column 2" of a valid JSON file (east-prepare's
    testset.json given to `training.build_data --pairs`)."""
    path = tmp_path / "testset.json"
    path.write_text('{\n  "name": "multi30k.de-en",\n  "sentences": 3\n}\n')
    with pytest.raises(RecordError) as raised:
        placed_records(path)
    assert str(raised.value) == (
        f"{path}: one JSON object over many lines, not records a line each (JSON Lines) or a list"
    )
