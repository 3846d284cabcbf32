"""Large runs split into shards: `--shard 2/4` runs the second quarter of the sentences of
every run into `runs/<run>/shards/2-of-4/`; once all shards are done, `--merge-shards 4`
joins their `instances.log` files and scores them as `east-simuleval --score-only` would
(in this process, the command printed).
"""

from __future__ import annotations

import argparse
import json
import math
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

from east_agent.common.atomic import remove, write_atomically
from east_agent.common.entry import CommandError
from east_agent.common.fingerprint import is_content_setting, shown_setting
from east_agent.common.records import read_json_object
from east_agent.common.run_lock import hold_run_lock
from east_agent.common.text_lines import read_lines
from east_agent.common.yaml_files import close_hint
from east_agent.evaluation.config import EvalConfig, EvalConfigError, Run
from east_agent.evaluation.run_scores import lacking_since_scored, score_again
from east_agent.evaluation.runs import (
    RUN_RECORD,
    check_run_folder,
    claim_run_folder,
    record_differences,
    settled_tries,
    write_tries,
)
from east_agent.evaluation.testsets import prepared_named
from east_agent.simuleval_glue.run_folder import (
    BATCH_RECORD,
    INSTANCES_LOCK,
    PATHS,
    SETTINGS_RECORD,
    SPAN,
    clear_scores,
    combined_batch_record,
    record_types,
    settings_differ,
)


def shard_range(shard: tuple[int, int], sentences: int) -> tuple[int, int]:
    index, count = shard
    if not 1 <= index <= count:
        raise ValueError(f"--shard {index}/{count}: the shard number must be 1..{count}")
    size = math.ceil(sentences / count)
    return min((index - 1) * size, sentences), min(index * size, sentences)


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"--shard {text}: N must be at least 1")
    if not 1 <= index <= count:
        raise argparse.ArgumentTypeError(f"--shard {text}: the shard number must be 1..{count}")
    return index, count


def merged_run_record(shard_dirs: list[Path]) -> dict[str, Any] | None:
    """The record of the whole run, from its shards' records (which must agree)."""
    paths = [folder / RUN_RECORD for folder in shard_dirs]
    if not all(path.exists() for path in paths):
        return None
    records = [read_json_object(path) for path in paths]
    first = {**records[0], "sentences": None}
    for folder, record in zip(shard_dirs[1:], records[1:]):
        differences = record_differences(first, {**record, "sentences": None})
        if differences:
            raise CommandError(
                f"{folder} was run with other settings than {shard_dirs[0]}: "
                + "; ".join(differences)
            )
    spans = [record["sentences"] for record in records]
    for (folder, span), (next_folder, next_span) in pairwise(zip(shard_dirs, spans)):
        if span[1] != next_span[0]:  # shards cut for another --limit, say
            raise CommandError(
                f"{folder} holds sentences {span[0]}..{span[1] - 1} but {next_folder} starts at "
                f"{next_span[0]}: the shards were cut from different spans (another --limit?); "
                "run them again with the same flags"
            )
    return {**records[0], "sentences": [spans[0][0], spans[-1][1]]}


def merge_batch_records(shard_dirs: list[Path], run_dir: Path) -> None:
    """How the shards were batched, for the merged run's computation-aware latency: the
    most streams of any shard, and all the shards shared (none if every shard ran
    SimulEval's loop)."""
    records = [read_json_object(path) for folder in shard_dirs
               if (path := folder / BATCH_RECORD).exists()]  # fmt: skip
    if records:
        record = combined_batch_record(records)
        write_atomically(run_dir / BATCH_RECORD, json.dumps(record, indent=2) + "\n")
    else:
        remove(run_dir / BATCH_RECORD)


def merge_settings_records(shard_dirs: list[Path], run_dir: Path) -> None:
    """The shards' translation settings, when they agree (they differ only in their span;
    data files compare by content, so shards run from other folders agree too)."""
    paths = [folder / SETTINGS_RECORD for folder in shard_dirs]
    if not all(path.exists() for path in paths):
        remove(run_dir / SETTINGS_RECORD)
        return
    records = [read_json_object(path) for path in paths]
    if any(settings_differ(one, other) for one, other in combinations(records, 2)):
        remove(run_dir / SETTINGS_RECORD)
        return
    # the record knowing most files by content (a shard resumed since they are), covering
    # every shard's sentences
    record = max(records, key=lambda record: sum(map(is_content_setting, record.values())))
    record = {name: value for name, value in record.items() if name != SPAN}
    spans = [span for shard in records if isinstance(span := shard.get(SPAN), list)]
    if len(spans) == len(records):  # every shard's
        record[SPAN] = [min(span[0] for span in spans), max(span[1] for span in spans)]
    write_atomically(run_dir / SETTINGS_RECORD, json.dumps(record, indent=2) + "\n")


def picked_runs(every_run: list[Run], only: list[str] | None) -> list[Run]:
    """The runs `--only` names (all without it); a name the config lacks is refused."""
    runs = [run for run in every_run if not only or run.name in only]
    unknown = sorted(set(only or ()) - {run.name for run in every_run})
    if unknown:
        names = [run.name for run in every_run]
        named = ", ".join(map(repr, unknown))
        hint = close_hint(unknown[0], names)  # ` (did you mean 'east-low'?)`
        raise EvalConfigError(
            f"--only {named}: no such run in the config{hint} (runs: {', '.join(names)})"
        )
    return runs


def check_shards_finished(config: EvalConfig, runs: list[Run], count: int) -> None:
    """Every shard of every run to merge has its scores, its shards agree, and the run's
    folder takes what they make, before any merge starts (a merge is all or nothing;
    before, the runs before a refused one were merged, the tables not)."""
    folders = [folder for run in runs for folder in shard_folders(config, run, count)]
    missing = [str(folder) for folder in folders if not (folder / "scores.tsv").exists()]
    if missing and not any(folder.exists() for folder in folders):  # before: all listed
        raise CommandError(f"no shard of {count} here (nothing merged): {other_cuts(config, runs)}")
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CommandError(
            f"{len(missing)} shards not finished (nothing merged): {', '.join(missing[:3])}{more}"
        )
    check_shard_logs_whole(config, runs, count)
    for run in runs:
        check_shards_agree(shard_folders(config, run, count))
        record = merged_run_record(shard_folders(config, run, count))
        if record is not None:
            check_run_folder(config.run_dir(run), record)


def check_shards_agree(shard_dirs: list[Path]) -> None:
    """The shards of a run were translated with the same settings (a shard run again by
    hand, with another latency, into its folder: before, merged into the grid's run, the
    merged record dropped for their disagreement, exit 0)."""
    records = [
        (folder, read_json_object(folder / SETTINGS_RECORD))
        for folder in shard_dirs
        if (folder / SETTINGS_RECORD).exists()
    ]
    for (first, one), (folder, other) in combinations(records, 2):
        # a data file an older shard recorded by path cannot be compared by content: merged
        # as before (its run record dropped, `merge_settings_records`)
        differ = [
            name
            for name in settings_differ(one, other)
            if not (name in PATHS and str in {type(one.get(name)), type(other.get(name))})
        ]
        if differ:
            shown = "; ".join(
                f"{name}: {shown_setting(other.get(name))} against {shown_setting(one.get(name))}"
                for name in differ
            )
            raise CommandError(
                f"{folder / 'instances.log'} was written with other settings than "
                f"{first / 'instances.log'} ({shown}; nothing merged): delete the shard made "
                "otherwise, and `east-eval CONFIG --shard I/N --only RUN` makes it again"
            )


def check_shard_logs_whole(config: EvalConfig, runs: list[Run], count: int) -> None:
    """A scored shard whose log lacks sentences of its span since (cut short by a copy) is
    refused before any merge (before: the runs before it merged, then its merged log
    refused, naming an east-simuleval flag)."""
    for run in runs:
        for index, folder in enumerate(shard_folders(config, run, count), 1):
            if lacking := lacking_since_scored(folder):
                raise CommandError(
                    f"{lacking} (nothing merged): east-eval CONFIG --shard {index}/{count} "
                    f"--only {run.name} translates them"
                )


def other_cuts(config: EvalConfig, runs: list[Run]) -> str:
    """What shards the runs' folders hold instead: their counts, naming the runs that hold
    them, or none at all (the runs named: with --only, the others may have shards; before:
    "the runs in ... have no shards")."""
    counts: dict[int, list[str]] = {}
    for run in runs:
        for folder in (config.run_dir(run) / "shards").glob("*-of-*"):
            count = folder.name.rpartition("-of-")[2]
            if count.isdigit() and run.name not in counts.setdefault(int(count), []):
                counts[int(count)].append(run.name)
    if counts:
        cuts = "; ".join(
            f"{_named(names)}: --merge-shards {count}" for count, names in sorted(counts.items())
        )
        return f"the shards here were cut otherwise ({cuts})"
    return f"{_named([run.name for run in runs])} in {config.output / 'runs'}: no shards " + (
        "(`east-eval CONFIG --shard I/N` makes them)"
    )


def _named(names: list[str]) -> str:
    """Run names for a message: the first three, and how many more."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def shard_folders(config: EvalConfig, run: Run, count: int) -> list[Path]:
    return [config.run_dir(run, (index, count)) for index in range(1, count + 1)]


def merge_shards(config: EvalConfig, run: Run, count: int) -> None:
    """Join the shards' logs into the run's folder and score them as the grid scores."""
    run_dir = config.run_dir(run)
    shard_dirs = shard_folders(config, run, count)
    check_shards_finished(config, [run], count)
    lines = []
    for folder in shard_dirs:
        lines += read_lines(folder / "instances.log")
    lines.sort(key=lambda line: json.loads(line)["index"])
    merged_record = merged_run_record(shard_dirs)
    if merged_record is not None:
        claim_run_folder(run_dir, merged_record)
    with hold_run_lock(run_dir, INSTANCES_LOCK):
        clear_scores(run_dir)  # an earlier merge's, if any
        write_atomically(run_dir / "instances.log", "\n".join(lines) + "\n")
        record_types(run_dir, "text", "text")
        merge_batch_records(shard_dirs, run_dir)
        merge_settings_records(shard_dirs, run_dir)
    tries = [attempt for folder in shard_dirs for attempt in settled_tries(folder) or []]
    write_tries(run_dir / "wall_seconds.json", tries)
    score_again(config, prepared_named(config.testset_dir, config.testset), run_dir)
