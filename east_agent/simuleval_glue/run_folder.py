"""A run's output folder (`--output`): who writes it, and what a new writer starts from.

Every way of writing a folder (SimulEval's loop, a batched run, `--score-only`) holds the
folder's lock from before its first write until its last (`INSTANCES_LOCK`): a second
process aimed at the same folder is refused before it touches anything. A run that will
write `instances.log` first removes the scores of an earlier log (`scores.tsv`,
`metrics.tsv`) and the record of how it was batched (`batch.json`): a folder has scores
only when they were made from the log beside them, and a grid counts a folder with
scores as finished.

SimulEval's own loop resumes after the last line of the log, so before it resumes, the
log is made what it expects (`resume_in_index_order`).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from east_agent.common.atomic import remove, write_atomically
from east_agent.common.run_lock import hold_run_lock
from east_agent.simuleval_glue.instance_log import finished_records, record_lines

INSTANCES_LOCK = "instances.lock"  # held while a process writes the folder
BATCH_RECORD = "batch.json"
SCORES = ("scores.tsv", "metrics.tsv")


def output_of(argv: list[str]) -> Path | None:
    """The `--output` folder of a command line, read as SimulEval's parser reads it (either
    spelling, the last one given); a flag without its value exits like argparse."""
    parser = argparse.ArgumentParser(prog="east-simuleval", add_help=False, allow_abbrev=False)
    parser.add_argument("--output", type=Path)
    known, _ = parser.parse_known_args(argv)
    return known.output


@contextmanager
def writing(output: Path, new_log: bool = True) -> Iterator[None]:
    """Hold `output` for this process; with `new_log`, clear what an earlier log left."""
    with hold_run_lock(output, INSTANCES_LOCK):
        if new_log:
            for name in (*SCORES, BATCH_RECORD):
                remove(output / name)
        yield


def resume_in_index_order(log: Path, start: int, end: int) -> bool:
    """Make `log` the records of sentences `start`, `start + 1`, ... in index order, for
    SimulEval's loop to resume after the last one; return whether every sentence before
    `end` is there. A batched run finishes sentences out of order: the records after the
    first missing sentence are dropped (printed), to be translated again."""
    by_index = {record["index"]: record for record in finished_records(log)}
    kept, index = [], start
    while index < end and index in by_index:
        kept.append(by_index[index])
        index += 1
    dropped = len(by_index) - len(kept)
    if dropped:
        print(
            f"{log}: sentences {start}..{index - 1} are kept; {dropped} finished later "
            f"than sentence {index} (a batched run's order) are translated again",
            flush=True,
        )
    write_atomically(log, record_lines(kept))
    return index >= end
