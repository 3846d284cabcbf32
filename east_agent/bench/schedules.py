"""Schedules that impose READ/WRITE outcomes on every method of `east-bench`: wait-k, or
the decisions a real model made, recorded by `--save-schedule` and checked against the
test set, latency level and sentences they are followed on."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from east_agent.common.records import invalid_json
from east_agent.common.text_lines import (
    check_input_file,
)
from east_agent.decoding.prompt import (
    LATENCY_LEVELS,
)

Schedule = list[list[tuple[int, int]]]  # per sentence: (units read, chunk tokens) per write


def waitk_schedule(sentences: Sequence[Sequence[str]], k: int, tokens: int = 2) -> Schedule:
    """Read k units, then a `tokens`-token chunk per unit; at the end, the rest of a target
    as long (in tokens) as `tokens` per source unit."""
    schedule = []
    for units in sentences:
        writes = [(read, tokens) for read in range(k, len(units))]
        remaining = max(1, tokens * len(units) - tokens * len(writes))
        schedule.append(writes + [(len(units), remaining)])
    return schedule


def script_of(schedule: Schedule | None, index: int) -> dict[int, int] | None:
    """The decoder's script for one sentence: {units read: chunk tokens}."""
    return None if schedule is None else dict(schedule[index])


def schedule_text(text: str) -> str:
    """--schedule's value (argparse `type`): blank names no schedule (before: taken as none,
    the model's own decisions run, exit 0)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: give waitk:K or a --save-schedule file")
    return text


def read_schedule(
    setting: str | None, testset: str | None = None, latency: str | None = None
) -> int | Schedule | None:
    """`--schedule` checked before any model loads: None (the model decides), K of
    `waitk:K`, or the schedule recorded in a `--save-schedule` file (on `testset` at
    `latency`, where the file names them)."""
    if not setting:
        return None
    if setting.startswith("waitk:"):
        k = setting.removeprefix("waitk:")
        if not k.strip().isdigit() or int(k) < 1:
            raise ValueError(f"--schedule {setting}: waitk:K takes a whole number K of at least 1")
        return int(k)
    path = Path(setting)
    try:  # before: a folder was "no such file"
        check_input_file(path, "--schedule")
    except ValueError as error:
        raise ValueError(f"{error} (waitk:K, or a JSON file from --save-schedule)") from None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--schedule {setting}: cannot read: {error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"--schedule {setting}: line {error.lineno}: {invalid_json(error)}"
        ) from None
    return checked_schedule(setting, recorded, testset, latency)


def schedule_file(testset: str, latency: str, schedule: Schedule) -> str:
    """What `--save-schedule` writes: the schedule, and the test set and latency level it
    was recorded on."""
    return json.dumps({"testset": testset, "latency": latency, "schedule": schedule})


def checked_schedule(
    setting: str, recorded: object, testset: str | None, latency: str | None = None
) -> Schedule:
    """The schedule of a `--save-schedule` file's JSON (or of the older forms: without the
    latency level, or the bare list), refused if recorded on another test set than
    `testset` or at another latency level than `latency` (a run that follows it at another
    level makes that level's decisions: its header would name the wrong one)."""
    if isinstance(recorded, dict):
        if set(recorded) - {"latency"} != {"testset", "schedule"}:
            raise ValueError(
                f"--schedule {setting}: expected the keys testset and schedule (and latency, "
                "as --save-schedule writes it)"
            )
        if "latency" in recorded and recorded["latency"] not in LATENCY_LEVELS:
            raise ValueError(
                f"--schedule {setting}: latency {recorded['latency']!r} is no level "
                f"({', '.join(LATENCY_LEVELS)})"
            )
        if testset is not None and recorded["testset"] != testset:
            raise ValueError(
                f"--schedule {setting}: recorded on {recorded['testset']}, "
                f"not on --testset {testset}"
            )
        level = recorded.get("latency")
        if None not in (latency, level) and level != latency:
            raise ValueError(
                f"--schedule {setting}: recorded at --latency {level}, not at --latency {latency}"
            )
        recorded = recorded["schedule"]
    if not isinstance(recorded, list) or not recorded:
        raise ValueError(f"--schedule {setting}: expected a non-empty JSON list of sentences")
    for index, writes in enumerate(recorded):
        if not isinstance(writes, list) or not all(
            isinstance(write, list)
            and len(write) == 2
            and all(type(number) is int and number >= 0 for number in write)
            for write in writes
        ):
            raise ValueError(
                f"--schedule {setting}: sentence {index}: expected a list of "
                "[units read, chunk tokens] pairs of whole numbers"
            )
    return [[tuple(write) for write in writes] for writes in recorded]


def check_schedule_fits(
    setting: str | None, schedule: int | Schedule | None, sentences: list[list[str]]
) -> None:
    """A recorded schedule's writes fall within their sentences, in order: a write after
    more units than a sentence has is never reached (and its tokens counted by (c) all the
    same); a write out of order or twice is followed by no method; a sentence without one
    measures nothing (before: "9.00x" of nothing, exit 0)."""
    if not isinstance(schedule, list):
        return
    for index, (writes, units) in enumerate(zip(schedule, sentences)):
        read = [position for position, _ in writes]
        problem = None
        if not writes:  # every method would write nothing, and be compared on it
            problem = "no write (a sentence writes at least once)"
        elif any(later <= earlier for earlier, later in zip(read, read[1:])):
            problem = f"units read {read}: not increasing"
        elif read and read[0] < 1:
            problem = "a write after 0 units (a unit is read first)"
        elif read and read[-1] > len(units):
            problem = f"a write after {read[-1]} units, and it has {len(units)}"
        if problem:
            raise ValueError(f"--schedule {setting}: sentence {index}: {problem}")


def load_schedule(
    args: argparse.Namespace, sentences: list, schedule: int | Schedule | None = None
) -> tuple[list, list | None]:
    """(sentences, schedule) of `--schedule` (read by `read_schedule`; read here if not
    given): none (the model decides), wait-k, or a recorded file, whose sentences are
    taken again in turn when more are asked for."""
    if schedule is None:
        schedule = read_schedule(args.schedule, args.testset, args.latency)
    if schedule is None:
        return sentences, None
    if isinstance(schedule, int):
        return sentences, waitk_schedule(sentences, schedule)
    schedule = schedule[: len(sentences)]
    sentences = [sentences[i % len(schedule)] for i in range(args.limit)]
    return sentences, [schedule[i % len(schedule)] for i in range(args.limit)]


def distinct_sentences(loaded: int, schedule: int | Schedule | None) -> int:
    """How many of `load_schedule`'s sentences differ, of `loaded` read from the test set:
    a recorded schedule shorter than that takes its first sentences again in turn."""
    return min(loaded, len(schedule)) if isinstance(schedule, list) else loaded
