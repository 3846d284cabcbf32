"""`east-prepare`: a test set written as SimulEval files (`east_agent.evaluation.testsets`).

    east-prepare wmt22.zh-en --output outputs/testsets/wmt22.zh-en --tokenizer models/EAST-8B

Into a grid's `testset/` it prepares as the grid would: with the grid's folder held, and
never another set (or a source split by another checkpoint) under the runs made on the one
there.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from east_agent.common.arguments import folder_path, parse_once_each
from east_agent.common.atomic import check_folder_path
from east_agent.common.counts import counted
from east_agent.common.entry import command_line
from east_agent.common.run_lock import GRID_LOCK, hold_run_lock
from east_agent.evaluation import longform
from east_agent.evaluation.runs import runs_holding_work
from east_agent.evaluation.testsets import (
    check_own_sentence_files,
    check_testset_name,
    prepare_testset,
    read_prepared,
    same_prepared,
    split_by_tokenizer,
)


@contextmanager
def holding_grid_testset(output: Path, name: str, split_by: str | dict | None) -> Iterator[None]:
    """A grid's `testset/` (its folder holds `grid.lock`) prepared as the grid would: with
    the grid's folder held, so that a grid running there refuses this (before: its test
    set was replaced under it, found by the grid's checks only at its next run) and a grid
    started meanwhile is refused; and not as another set than its runs were made on."""
    grid = output.resolve().parent
    if output.resolve().name != "testset" or not (grid / GRID_LOCK).is_file():
        yield
        return
    with hold_run_lock(grid, GRID_LOCK):
        refuse_replacing_under_runs(output, grid, name, split_by)
        yield


def refuse_replacing_under_runs(
    output: Path, grid: Path, name: str, split_by: str | dict | None
) -> None:
    """Another test set (or one split by another checkpoint) refused where the grid's runs
    were made on the one there (before: replaced, and the grid's next run refused, naming
    the new set as the runs' own)."""
    saved = read_prepared(output)
    if saved is None or same_prepared(output, saved, name, split_by):
        return
    made = runs_holding_work(grid)
    if made:
        what = name if saved.name != name else f"{name} split by another checkpoint"
        raise ValueError(
            f"--output {output}: the test set of the grid in {grid}, whose runs "
            f"({made[0].relative_to(grid / 'runs')}, ...) were made on {saved.name}: "
            f"preparing {what} there would change what they read; prepare it into another "
            "folder"
        )


@command_line("east-prepare")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="write a test set as SimulEval files")
    parser.add_argument(
        "testset",
        help="e.g. wmt22.de-en, wmt15.de-en, multi30k.de-en; long-form: wmt22.de-en.talks50",
    )
    parser.add_argument(
        "--output", type=folder_path, required=True, help="folder for source.txt, reference.txt"
    )
    parser.add_argument(
        "--tokenizer", default=None, help="checkpoint whose tokenizer splits zh/ja sources"
    )
    args = parse_once_each(parser, argv)
    check_folder_path(Path(args.output), "--output")
    check_testset_name(longform.parse_name(args.testset)[0])  # before a tokenizer loads
    check_own_sentence_files(Path(args.output))
    if split_by_tokenizer(args.testset) and not args.tokenizer:
        raise ValueError(
            f"--tokenizer: {args.testset}'s source is split into the checkpoint's token "
            "groups; name the checkpoint (--tokenizer models/EAST-8B)"
        )
    if args.tokenizer and not split_by_tokenizer(args.testset):  # before: loaded, unused
        raise ValueError(
            f"--tokenizer: {args.testset}'s source is split at its spaces, not by a "
            "tokenizer; leave --tokenizer out"
        )
    tokenizer = split_by = None
    if args.tokenizer:
        from east_agent.common.fingerprint import model_setting
        from east_agent.lm.checkpoint import CheckpointError, load_tokenizer

        try:
            tokenizer = load_tokenizer(args.tokenizer)
        except CheckpointError as error:  # before: "model path ...", a flag nobody typed
            raise ValueError(f"--tokenizer: {error}") from None
        split_by = model_setting(args.tokenizer)  # recorded as a grid records it
    with holding_grid_testset(Path(args.output), args.testset, split_by):
        prepared = prepare_testset(args.testset, args.output, tokenizer, split_by)
    unit = "talk" if longform.parse_name(prepared.name)[1] else "sentence"
    print(f"{counted(prepared.sentences, unit)}: {prepared.source} {prepared.reference}")


if __name__ == "__main__":
    main()
