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
