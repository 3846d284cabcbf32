"""`instances.log`, SimulEval's record of a run: one JSON line per finished sentence.

Every finished sentence is appended and flushed at once, so a run killed at any moment
(SIGKILL included) keeps every sentence it finished; a line cut off by the kill is dropped
when the log is opened again, never scored. Batched runs finish sentences out of order:
the log knows which indices it holds, and `sort` puts the lines in index order at the end.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from east_agent.common.atomic import named_as, write_atomically
from east_agent.common.records import invalid_json
from east_agent.common.text_lines import iter_lines, read_text


def finished_records(path: Path, trim: bool = False) -> list[dict]:
    """The complete records of a log, leaving out a torn or unreadable last line (a run
    killed while writing it); with `trim` (the folder's writer, holding its lock, before
    it appends) that line is cut off the file. An unreadable line before the last is not
    a torn write: an error names it."""
    if not path.exists():
        return []
    text = read_text(path)
    lines = text.split("\n")
    last = len(lines) - 1 if lines[-1] else len(lines) - 2  # the part after the last
    records, kept = [], 0  # newline is never complete
    for number, line in enumerate(lines[:-1]):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or "index" not in record:
            if number == last:
                break
            raise ValueError(
                f"{path}: line {number + 1}: not an instance record, and lines follow it (a "
                "log written by hand or by another program?); remove or mend that line"
            )
        records.append(record)
        kept += len(line) + 1
    if trim and kept != len(text):
        write_atomically(path, text[:kept])
    return records


def torn_line_advice(path: Path, number: int) -> str:
    """What to do with a line that is no JSON record: the last one may be a write a kill
    cut off, which a resume drops; one before others was not (before: the resume was
    advised for any line, and then refused one that lines follow)."""
    if number == sum(1 for _ in iter_lines(path)):
        return "a run cut off while writing? --continue-unfinished drops such a line"
    return "lines follow it (a log written by hand or by another program?): remove or mend it"


def log_record(path: Path, number: int, line: str) -> Any:
    """Line `number` of the log at `path` read as JSON; one that is not is named with what
    to do with it (`torn_line_advice`)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: line {number}: {invalid_json(error)}; " + torn_line_advice(path, number)
        ) from None


# a log field of one value per output unit: what its values are, their types, whether they rise
LOG_SERIES = {
    "delays": ("whole numbers of source units read, >= 0", (int,), True),
    # read from a wall clock (`time.time()` in SimulEval's loop), which may be set back
    "elapsed": ("numbers of seconds, >= 0", (int, float), False),
}
LARGEST = sys.float_info.max  # past it no float (NaN and infinity fail `0 <= x <= LARGEST`)
# what SimulEval's scorers read
SCORED_FIELDS: dict[str, type] = {"prediction": str, "delays": list}


def check_record_fields(where: str, record: dict, fields: dict[str, type]) -> None:
    """Refuse (`where`: the log and line) a record whose `fields` are missing or of another
    type, and a series among them (`LOG_SERIES`) holding another kind of value."""
    for name, kind in fields.items():
        if not isinstance(record.get(name), kind):
            raise ValueError(f"{where}: field {name!r} missing or not a {kind.__name__}")
    for name in LOG_SERIES.keys() & fields.keys():
        check_series(f"{where}: field {name!r}", name, record[name])


def check_series(where: str, name: str, values: list) -> None:
    """Refuse (`where`: the log, line and field) a value of `LOG_SERIES[name]`'s kind that
    is not one, or, for delays, below the value before it."""
    what, kinds, rising = LOG_SERIES[name]
    for number, value in enumerate(values, 1):
        if type(value) not in kinds or not 0 <= value <= LARGEST:  # bool is no int here
            raise ValueError(f"{where}: value {number} is {value!r}; they must be {what}")
        if rising and number > 1 and value < values[number - 2]:
            raise ValueError(
                f"{where}: value {number} ({value!r}) is below value {number - 1} "
                f"({values[number - 2]!r}): it never goes backwards"
            )


def check_lengths(where: str, record: dict) -> None:
    """A delay for each output unit (`prediction_length`, as SimulEval logged it) and a
    time for each delay (before: a log mended by hand with a delay gone was scored, its
    latency off, exit 0)."""
    delays, length = len(record["delays"]), record.get("prediction_length")
    if isinstance(length, int) and not isinstance(length, bool) and length != delays:
        raise ValueError(
            f"{where}: {delays} delays for prediction_length {length}: one delay an output "
            "unit; remove or mend the line (a rerun with --continue-unfinished translates it)"
        )
    source_length = record.get("source_length")
    read = max(record["delays"], default=0)
    if (
        isinstance(source_length, int)
        and not isinstance(source_length, bool)
        and read > source_length
    ):
        raise ValueError(  # a delay counts the source units read when its unit was written
            f"{where}: a delay of {read} units, past its source_length {source_length}; "
            "remove or mend the line"
        )
    elapsed = record.get("elapsed")
    if isinstance(elapsed, list) and len(elapsed) != delays:
        raise ValueError(f"{where}: {len(elapsed)} elapsed times for {delays} delays: one each")


def check_log(path: Path) -> None:
    """Raise naming file and line where a log is not one JSON record per line, where a
    record lacks a field SimulEval's scorers read (`SCORED_FIELDS`) or holds another kind
    of value there, or where it holds a sentence twice; raise naming the sentences missing
    between its first and last (a batched run's failed sentence, or one cut off before an
    index after it): scores of such a log would be of other sentences than the run's."""
    lines_of: dict[int, int] = {}
    for number, line in enumerate(iter_lines(path), 1):
        record = log_record(path, number, line)
        if not isinstance(record, dict) or not isinstance(record.get("index"), int):
            raise ValueError(
                f"{path}: line {number}: not an instance record (no whole-number 'index')"
            )
        # before: a traceback of SimulEval's scorers, or (delays gone) the sentence skipped
        check_record_fields(f"{path}: line {number}", record, SCORED_FIELDS)
        check_lengths(f"{path}: line {number}", record)
        index = record["index"]
        if index in lines_of:
            raise ValueError(
                f"{path}: line {number}: sentence {index} again (line {lines_of[index]})"
            )
        lines_of[index] = number
    missing = _missing_between(sorted(lines_of))
    if missing:
        raise ValueError(
            f"{path}: sentences {missing} missing between {min(lines_of)} and {max(lines_of)} "
            "(failed, or not finished when the run stopped): not scored; "
            "a rerun with --continue-unfinished translates them"
        )


def check_references(path: Path) -> None:
    """Refuse a log whose sentences hold no reference (a run without --target): SimulEval
    scores a log against the references in it, and would score these against nothing
    (BLEU 0, latency against the translation's own length)."""
    for number, line in enumerate(iter_lines(path), 1):
        record = json.loads(line)
        if record.get("reference") is None:
            raise ValueError(
                f"{path}: line {number}: sentence {record['index']} holds no reference (the "
                "run had no --target); a log is scored against the references it holds: "
                "translate with --target to score"
            )


def _missing_between(indices: list[int]) -> str:
    """The indices missing between the first and the last of sorted `indices` ("" if
    none), the first ten named."""
    held = set(indices)
    missing = [i for i in range(indices[0], indices[-1]) if i not in held] if indices else []
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    return ", ".join(map(str, missing[:10])) + more


class InstanceLog:
    """Appends finished records to `path`, each flushed as it comes. `before_first`, when
    set, runs once, before this run's first record is written (for a record about the
    log's records, written only once the log holds something it describes)."""

    def __init__(self, path: Path, resume: bool) -> None:
        self.path = path
        self.before_first: Callable[[], None] | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume:
            self.done = {record["index"] for record in finished_records(path, trim=True)}
        else:
            write_atomically(path, "")
            self.done = set()
        self.handle = open(path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        if self.before_first is not None:
            self.before_first()
            self.before_first = None
        with named_as(self.path):
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()
        self.done.add(record["index"])

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> InstanceLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_lines(records: list[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def sort_log(path: Path) -> None:
    """Rewrite the log in index order (atomically), unless it is so already: its time is
    when its last sentence finished (`runs.last_written`, a killed try's end)."""
    records = sorted(finished_records(path), key=lambda record: record["index"])
    text = record_lines(records)
    if not (path.exists() and path.read_text(encoding="utf-8") == text):
        write_atomically(path, text)
