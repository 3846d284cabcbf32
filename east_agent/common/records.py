"""JSON records (test sets, SiMT chunk data): read with errors that name file and record,
written atomically (gzipped when the name ends in `.gz`)."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from east_agent.common.atomic import atomic_path
from east_agent.common.text_lines import read_text


class RecordError(ValueError):
    """A record file or one of its records is malformed."""


def load_records(path: str | Path) -> list[dict]:
    """A JSON list of objects, or JSON Lines (one object per line); `.gz` is read through."""
    return [record for _, record in placed_records(path)]


def invalid_json(error: json.JSONDecodeError) -> str:
    """json's complaint whole: its message stops where it names a place ("Unterminated
    string starting at"), the column given apart (the line is the caller's to name)."""
    if error.msg.endswith(" at"):  # "Unterminated string starting at": the column ends it
        return f"invalid JSON: {error.msg} column {error.colno}"
    return f"invalid JSON at column {error.colno}: {error.msg}"


def one_object(text: str) -> str | None:
    """What a file of one JSON object written over many lines is, where records are read
    a line each (before: "invalid JSON at column 2" of a file that is valid JSON)."""
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(whole, dict):
        return None
    return "one JSON object over many lines, not records a line each (JSON Lines) or a list"


def placed_records(path: str | Path) -> list[tuple[str, dict]]:
    """`load_records` with each record's place in the file (`line 3`, `record 1`: the first)."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: no such file")
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise RecordError(f"{path}: line {error.lineno}: {invalid_json(error)}") from None
        where = [f"record {index}" for index in range(1, len(records) + 1)]  # as lines
    else:
        records, where = [], []
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                if (whole := one_object(text)) is not None:
                    raise RecordError(f"{path}: {whole}") from None
                raise RecordError(f"{path}: line {number}: {invalid_json(error)}") from None
            where.append(f"line {number}")
    for record, place in zip(records, where):
        if not isinstance(record, dict):
            kind = type(record).__name__
            raise RecordError(f"{path}: {place}: expected a JSON object, got {kind}")
    return list(zip(where, records))


def read_json_object(path: str | Path) -> dict:
    """A record file holding one JSON object (a run's settings, timing, batching): an error
    naming the file and line if it is not one (a file cut off, or edited by hand)."""
    path = Path(path)
    try:
        record = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise RecordError(
            f"{path}: line {error.lineno}: {invalid_json(error)}; delete the file to "
            "start the run afresh, or mend it"
        ) from None
    if not isinstance(record, dict):
        raise RecordError(f"{path}: expected a JSON object, got {type(record).__name__}")
    return record


def require_fields(record: dict, fields: Iterable[str], path: str | Path, place: str) -> None:
    """Raise naming file, the record's place (`placed_records`) and field when a field is
    missing or not a string."""
    for name in fields:
        if name not in record:
            raise RecordError(f"{path}: {place}: missing field {name!r}")
        if not isinstance(record[name], str) or not record[name].strip():
            raise RecordError(f"{path}: {place}: field {name!r} must be a non-empty string")


@contextmanager
def text_output(path: Path) -> Iterator[TextIO]:
    """`path` written atomically as UTF-8 text, gzipped when it ends in `.gz`; the gzip
    header holds neither a time nor a file name, so the same text gives the same bytes."""
    with atomic_path(path) as temporary, open(temporary, "wb") as raw:
        if path.suffix != ".gz":
            with io.TextIOWrapper(raw, encoding="utf-8") as handle:
                yield handle
            return
        with (
            gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as packed,
            io.TextIOWrapper(packed, encoding="utf-8") as handle,
        ):
            yield handle


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    with text_output(path) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
