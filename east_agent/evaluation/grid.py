"""Running a grid: prepare the test set once, run every run that is not done (one
checkpoint load for all of them), then report. A long-form grid's gold-sentence runs read
the talks' sentences (`--limit` and `--shard` count talks, and such a run takes their
sentences).

A run whose `scores.tsv` exists is not run again; it is scored again from its log when the
grid scores otherwise (other metrics or `ca_unit_seconds`), and so is every other finished
run the table shows (`east_agent.evaluation.run_scores`). One that was cut off continues
from its last finished sentence. With `jobs` above 1 the runs go to that many worker
processes, several at once (`east_agent.evaluation.jobs`). Runs scored in processes of
their own leave COMET to this one, which adds it to each as it finishes
(`EvalConfig.comet_after_runs`, `run_scores.add_comet`).

One grid at a time writes an output folder (`grid.lock` there, which its shards, running
side by side, share): a second one would empty, continue or table the first one's runs.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from east_agent.common.atomic import check_folder_path, check_replaceable, remove
from east_agent.common.entry import CommandError
from east_agent.common.records import read_json_object
from east_agent.common.run_lock import (
    GRID_LOCK,
    RunFolderBusyError,
    hold_run_lock,
    holder,
    may_be_held,
)
from east_agent.common.text_lines import check_input_file
from east_agent.evaluation.config import EvalConfig, EvalConfigError, Run, check_run_values
from east_agent.evaluation.jobs import FollowUp, Job, RunsFailed, run_jobs
from east_agent.evaluation.longform import (
    LongformSet,
    gold_sentences_of,
    read_longform,
    sentence_span,
    unit_times,
)
from east_agent.evaluation.reports import (
    TABLE_FILES,
    check_tabled,
    compare_system,
    omnisteval_cells,
    remove_tables,
    summarize,
)
from east_agent.evaluation.run_scores import (
    add_comet,
    lacking_since_scored,
    rescore_if_changed,
    rescore_tabled,
    wanted_scoring,
)
from east_agent.evaluation.runs import (
    AFRESH_MARK,
    RUN_RECORD,
    check_afresh,
    check_run_folder,
    claim_run_folder,
    holds_work,
    made_otherwise,
    model_setting,
    run_record,
    runs_holding_work,
    simuleval_command,
    start_afresh,
    tabled_runs,
)
from east_agent.evaluation.shards import merged_run_record, picked_runs, shard_folders, shard_range
from east_agent.evaluation.testsets import (
    PreparedTestset,
    check_own_sentence_files,
    prepare_testset,
    prepared_named,
    read_prepared,
    same_prepared,
    split_by_tokenizer,
)
from east_agent.simuleval_glue.run_folder import INSTANCES_LOCK, clear_scores

if TYPE_CHECKING:
    from east_agent.evaluation.significance import Comparison


def prepare(config: EvalConfig) -> PreparedTestset:
    """The grid's test set files, prepared once per output folder: again for another test
    set, and, where the checkpoint's tokenizer splits the source into units (Chinese,
    Japanese), for another checkpoint (before: its runs read the first one's units); but
    never under runs made on the prepared files (`refuse_replacing`)."""
    saved, folder = read_prepared(config.testset_dir), config.testset_dir
    split = split_by_tokenizer(config.testset)
    split_by = model_setting(config.model_path) if split else None
    if saved is not None and same_prepared(folder, saved, config.testset, split_by):
        return saved
    if saved is not None:
        refuse_replacing(config, saved)
    # before: a hand-made source.txt or reference.txt there replaced, --dry-run too
    check_own_sentence_files(folder, "the grid's test set folder")
    tokenizer = None
    if split:
        from east_agent.lm.checkpoint import CheckpointError, load_tokenizer

        try:
            tokenizer = load_tokenizer(config.model_path)
        except CheckpointError as error:  # before: the checkpoint's error alone, a dry run's too
            raise EvalConfigError(
                f"{config.testset}: its source is split into units by the checkpoint's "
                f"tokenizer as the test set is prepared, a dry run's too: {error}"
            ) from None
    return prepare_testset(config.testset, folder, tokenizer, split_by)


def refuse_replacing(config: EvalConfig, saved: PreparedTestset) -> None:
    """A test set prepared for runs in the output folder stays: another grid (or a dry run)
    rewriting it would change what those runs, still running or tabled later, read."""
    made = runs_holding_work(config.output)
    if made:
        what = saved.name if saved.name != config.testset else f"{saved.name} split otherwise"
        raise ValueError(
            f"{config.testset_dir} holds {what}, the test set of the runs in "
            f"{config.output / 'runs'} ({made[0].relative_to(config.output / 'runs')}, ...): "
            f"a grid of {config.testset} by {config.model_path} needs another --output (or "
            "that folder's runs/ removed; a run holds the set with a finished sentence, scores, "
            "or a run.lock naming a process, which a killed run leaves)"
        )


def check_longform(config: EvalConfig) -> LongformSet:
    """The grid's talks, its word-timestamp file checked against them (before any run)."""
    longform_set = read_longform(config.testset_dir)
    if config.word_times is not None:  # before: a bare errno message, naming no config line
        check_input_file(config.word_times, config.place().of("word_times"))
    unit_times(longform_set, config.word_times, config.ca_unit_seconds)
    return longform_set


def grid_span(
    testset: PreparedTestset, limit: int | None, shard: tuple[int, int] | None
) -> tuple[int, int] | None:
    """The sentences (talks, in a long-form grid) the grid's runs take: the first `limit`,
    `shard`'s part of them; None: all, with no span given to the runs."""
    sentences = min(limit or testset.sentences, testset.sentences)
    return shard_range(shard, sentences) if shard else ((0, sentences) if limit else None)


RunInput = Callable[[Run], tuple[PreparedTestset, tuple[int, int] | None]]


def run_inputs(
    testset: PreparedTestset, longform_set: LongformSet | None, indices: tuple[int, int] | None
) -> RunInput:
    """Each run's test set and span of it (the talks' sentences for a gold run)."""

    def run_input(run: Run):
        if run.gold_sentences:  # the talks' sentences, one SimulEval instance each
            assert longform_set is not None  # gold runs are refused outside a long-form grid
            run_set = gold_sentences_of(testset, longform_set)
            return run_set, indices and sentence_span(longform_set.talks, indices)
        return testset, indices

    return run_input


def records_of(
    config: EvalConfig, run_input: RunInput, checkpoint: str | dict
) -> Callable[[Run], dict[str, Any]]:
    """What each run's folder records when it holds this grid's run (`run_record`)."""

    def record_of(run: Run) -> dict[str, Any]:
        run_set, run_indices = run_input(run)
        span = run_indices or (0, run_set.sentences)
        return run_record(config, run, run_set, span, checkpoint)

    return record_of


def summarize_merged(
    config: EvalConfig, every_run: list[Run], merged: set[str], limit: int | None = None
) -> None:
    """The grid's tables after a merge (`merged`: the runs just merged), as the grid would
    table them: a run whose folder holds another's (other flags, agent, span or
    checkpoint) is named and left out, merged or not; every other finished run is scored
    as the grid scores first (one that cannot be is left out). The span is the first
    `limit` sentences (talks) as in the grid, or without `limit` the merged runs' span."""
    testset = prepared_named(config.testset_dir, config.testset)
    longform_set = check_longform(config) if config.long_form else None
    if limit is None:
        limit = merged_limit(config, every_run, merged, longform_set)
    run_input = run_inputs(testset, longform_set, grid_span(testset, limit, None))
    record_of = records_of(config, run_input, model_setting(config.model_path))
    tabled = tabled_runs(config, every_run, record_of)
    unscored = made_otherwise_left_out(config, tabled, run_input, "{run}")
    tabled = [run for run in tabled if run.name not in unscored]
    others = [run for run in tabled if run.name not in merged]
    unscored |= rescore_tabled(config, testset, wanted_scoring(config, testset), others, "{run}")
    asked = [run.name for run in every_run if run.name in merged]
    summarize(config, tabled, left_out=unscored, asked=asked)
    check_tabled(unscored)
    not_tabled = sorted(merged - {run.name for run in tabled})
    if not_tabled:  # before: exit 0, the runs just merged in no table
        raise CommandError(
            f"merged, but left out of the tables (made otherwise, said above; a --limit "
            f"other than the shards'?): {', '.join(not_tabled)}"
        )


def merged_limit(
    config: EvalConfig, every_run: list[Run], merged: set[str], longform_set: LongformSet | None
) -> int | None:
    """The `--limit` the merged runs' shards were cut for: the sentences (talks) their
    span ends at, told by the first merged run with a record (a gold sentences' run by the
    talks its sentences end)."""
    for run in every_run:
        path = config.run_dir(run) / RUN_RECORD
        if run.name not in merged or not path.exists():
            continue
        return limit_ending_at(run, read_json_object(path)["sentences"][1], longform_set)
    return None


def limit_ending_at(run: Run, end: int, longform_set: LongformSet | None) -> int | None:
    """The `--limit` whose span of `run` ends at sentence `end` (a gold sentences' run: the
    talks its sentences end; None if no count of talks ends there)."""
    if not run.gold_sentences:
        return end
    assert longform_set is not None  # gold runs are refused outside a long-form grid
    talks = longform_set.talks
    ends = [sentence_span(talks, (0, count))[1] for count in range(len(talks) + 1)]
    return ends.index(end) if end in ends else None


def check_merge_limit(config: EvalConfig, runs: list[Run], count: int, limit: int | None) -> None:
    """A `--limit` given to a merge is the one the shards were cut for (before: another one
    merged them, then left every merged run out of the tables, exit 2)."""
    if limit is None:
        return
    testset = prepared_named(config.testset_dir, config.testset)
    longform_set = check_longform(config) if config.long_form else None
    wanted = min(limit, testset.sentences)
    for run in runs:
        record = merged_run_record(shard_folders(config, run, count))
        if record is None:
            continue
        cut = limit_ending_at(run, record["sentences"][1], longform_set)
        if cut is None:  # a gold sentences' span no count of talks ends at
            raise CommandError(
                f"--limit {limit}: the shards of {run.name} end at sentence "
                f"{record['sentences'][1]}, where no talk ends (nothing merged); run them "
                "again with the grid's flags"
            )
        if cut != wanted:
            raise CommandError(
                f"--limit {limit}: the shards of {run.name} were cut for --limit {cut} "
                f"(nothing merged); merge them with --limit {cut}, or without --limit"
            )


def run_grid(
    config: EvalConfig,
    only: list[str] | None = None,
    shard: tuple[int, int] | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    afresh: bool = False,
) -> list[dict[str, Any]]:
    """Run the grid's runs not finished yet (`afresh`: its runs again from scratch, their
    folders emptied after the grid's checks), then table them all."""
    every_run = config.runs()
    runs = picked_runs(every_run, only)
    check_outside_other_grids(config.output)
    check_grid_output(config.output)
    for run in runs:  # before: a bare "[Errno 17] File exists" for a file there
        check_folder_path(config.run_dir(run, shard), f"{run.name}'s run folder")
    if afresh or any(not (config.run_dir(run, shard) / "scores.tsv").exists() for run in runs):
        check_checkpoint_folder(config, dry_run)  # afresh: before its finished runs go
    with holding_grid(config, shard, reading=dry_run):
        if afresh and not dry_run:  # before the test set is written, or any run emptied
            check_afresh(config.output / "runs")
        return _run_picked(config, every_run, runs, shard, limit, dry_run, afresh)


def check_checkpoint_folder(config: EvalConfig, dry_run: bool) -> None:
    """The checkpoint a grid's runs load is a model folder with its weights: refused before
    a folder records its path or a run is emptied; a dry run says what the runs would be
    refused (before: it printed their commands alone)."""
    from east_agent.lm.checkpoint import check_checkpoint_files, check_model_path

    try:
        try:  # named where it was given (before: "model path '...' does not exist" alone)
            check_model_path(config.model_path)
        except ValueError as error:
            raise ValueError(f"{config.place().of('model_path')}: {error}") from None
        # before: a config.json that does not parse, or weights cut short, found by the
        # load, after east-demo had emptied the earlier demo's runs
        remote_code = any(run.flags.get("trust_remote_code") for run in config.runs())
        check_checkpoint_files(config.model_path, "the checkpoint", bool(remote_code))
    except ValueError as error:
        if not dry_run:
            raise
        print(f"note: {error}: the runs would be refused", flush=True)


GRID_OWN_FOLDERS = ("runs", "testset")  # what a grid empties or replaces in its output


def check_outside_other_grids(output: Path) -> None:
    """A grid's output is not inside another grid's runs or test set, which that grid
    empties or replaces (before: an `east-demo --output` inside another demo's run folder
    was taken, and emptied with that run)."""
    folder = output.resolve()
    for parent in folder.parents:
        inside = folder.relative_to(parent).parts[0]
        if inside in GRID_OWN_FOLDERS and (parent / GRID_LOCK).is_file():
            where = "is" if folder == parent / inside else "is inside"  # before: "inside"
            raise EvalConfigError(
                f"output {output} {where} {parent / inside}, the {inside} of the grid in "
                f"{parent}; another --output"
            )


def check_grid_output(output: Path) -> None:
    """What a grid's output holds where the grid writes: a file where it keeps its runs or
    test set is refused (before: a bare errno); and, since it writes its tables over files
    of their names, a folder of such a name, or table files in a folder no grid wrote (a
    model card, a user's folder), before any run (before: replaced, a folder deleted
    whole)."""
    for name in GRID_OWN_FOLDERS:
        if (output / name).exists() and not (output / name).is_dir():
            raise EvalConfigError(
                f"output {output}: its {name} is a file, not the grid's folder; another --output"
            )
    present = [name for name in TABLE_FILES if (output / name).exists()]
    for name in present:
        check_replaceable(output / name, "table file")
    if present and not written_by_a_grid(output):
        raise EvalConfigError(
            f"output {output} holds {', '.join(present)} but no grid ({GRID_LOCK}, or runs/ "
            "beside testset/testset.json): a grid would write over them; another --output"
        )


def written_by_a_grid(output: Path) -> bool:
    """A grid holds `output` (`grid.lock`), or held it before that lock was kept: its
    `runs/` beside the test set it prepared (before: any `runs/` folder, a user's too)."""
    if (output / GRID_LOCK).is_file():
        return True
    return (output / "runs").is_dir() and (output / "testset" / "testset.json").is_file()


@contextmanager
def holding_grid(
    config: EvalConfig, shard: tuple[int, int] | None, reading: bool = False
) -> Iterator[None]:
    """The output folder held for one grid, or a merge (`grid.lock`, exclusive): a second
    `east-eval` or `east-demo` there is refused before it changes anything. Shards share
    it (each holds a lock of its own too), and so do dry runs (`reading`: they write only
    the test set a grid there would read)."""
    exclusive = shard is None and not reading
    with ExitStack() as held:
        try:
            held.enter_context(hold_run_lock(config.output, GRID_LOCK, shared=not exclusive))
        except RunFolderBusyError:
            if exclusive and not may_be_held(config.output, GRID_LOCK):  # shared holders
                raise RunFolderBusyError(shared_holders(config.output)) from None
            raise
        if shard is not None and not reading:
            name = f"grid-shard-{shard[0]}-of-{shard[1]}.lock"
            held.enter_context(hold_run_lock(config.output, name))
        yield


def shared_holders(output: Path) -> str:
    """Who holds a grid's folder shared: its live shards, by their locks, or a dry run."""
    shards = [
        path
        for path in sorted(output.glob("grid-shard-*.lock"))
        if may_be_held(path.parent, path.name)
    ]
    if not shards:  # a dry run holds no lock of its own (before: "... (a dry run)")
        return (
            f"{output} is being read by a dry run (or a shard is starting on it); wait for "
            "it to end or stop it"
        )
    held = "; ".join(f"{path.stem}: {holder(path)}" for path in shards)
    return f"{output} is being written by a shard of a grid ({held}); wait for it to end or stop it"


def _run_picked(
    config: EvalConfig,
    every_run: list[Run],
    runs: list[Run],
    shard: tuple[int, int] | None,
    limit: int | None,
    dry_run: bool,
    afresh: bool,
) -> list[dict[str, Any]]:
    checkpoint = model_setting(config.model_path)
    testset = prepare(config)
    wanted, unscored = wanted_scoring(config, testset), set()
    longform_set = check_longform(config) if config.long_form else None
    indices = grid_span(testset, limit, shard)
    # a job array's shard past a short set's end (a shard always has a span)
    if shard and indices is not None and indices[0] == indices[1]:
        print(
            f"--shard {shard[0]}/{shard[1]}: no sentence (talk, in a long-form grid) of the "
            f"{testset.sentences if limit is None else min(limit, testset.sentences)} falls "
            f"in this shard: its runs hold none, for --merge-shards {shard[1]}",
            file=sys.stderr,
        )
    todo, unit = [], testset.eval_latency_unit
    run_input = run_inputs(testset, longform_set, indices)
    for run in runs:  # before any run (a dry run too): a --max-context no sentence fits in
        run_set, run_indices = run_input(run)
        check_run_values(config, run, (run_set.source, run_indices or (0, -1)))
    record_of = records_of(config, run_input, checkpoint)
    comet_after = config.comet_after_runs() and not shard
    run_config = config.without_comet() if comet_after else config
    if afresh and not dry_run:  # tables of runs about to be emptied: gone first
        remove_tables(config.output)
    for number, run in enumerate(runs, 1):
        run_dir = config.run_dir(run, shard)
        run_set, run_indices = run_input(run)
        command = simuleval_command(run_config, run, run_set, run_dir, run_indices)
        if not dry_run:
            if afresh:
                start_afresh(run_dir)
            claim_run_folder(run_dir, record_of(run))
            if not afresh:  # a run the grid tables: east-demo leaves it, made by it or not
                remove(run_dir / AFRESH_MARK)
        elif not afresh:  # the refusal the grid would give
            check_run_folder(run_dir, record_of(run))
        label = f"[{number}/{len(runs)}] {run.name}"
        if holds_work(run_dir):
            check_made_as_run(run_dir, command, run_indices or (0, run_set.sentences))
        finished = (run_dir / "scores.tsv").exists()
        if finished and not translated_again_if_lacking(run_dir, label, dry_run):
            scored = rescore_if_changed(
                config, testset, wanted, run, run_dir, label, dry_run, say_skipped=True
            )
            if not scored:
                unscored.add(run.name)
            continue
        if dry_run:
            print(f"[{number}/{len(runs)}] {run.name}\n$ " + shlex.join(command), flush=True)
            continue
        # the run's OmniSTEval columns, made in its worker (a shard's wait for the merge)
        scores = None if shard else partial(omnisteval_cells, run_config, run, run_dir, unit)
        todo.append(Job(number, run.name, command, run_dir, scores))
    if todo and not shard:  # made again at the grid's end (a shard's runs: at the merge)
        remove_tables(config.output)
    if shard:
        run_jobs(todo, config.jobs, len(runs), [])
        return []
    tabled = tabled_runs(config, every_run, record_of)
    picked = {run.name for run in runs}
    others = [run for run in tabled if run.name not in picked]  # tabled all the same
    unscored |= made_otherwise_left_out(run_config, others, run_input)
    others = [run for run in others if run.name not in unscored]  # not scored as the grid's
    unscored |= rescore_tabled(config, testset, wanted, others, "{run} (not in --only)", dry_run)
    if dry_run:
        return []
    tabled = [run for run in tabled if run.name not in unscored]
    follow_ups = significance_follow_ups(config, tabled, todo)
    asked = [run.name for run in runs]  # named under the table if it lacks them

    def comet_of(job: Job) -> None:
        label = f"[{job.number}/{len(runs)}] {job.name}"
        if not add_comet(config, testset, runs[job.number - 1], job.output, label):
            unscored.add(job.name)

    try:
        compared = cast(  # the follow-ups' compare_system lists, by system
            "dict[str, list[Comparison]]",
            run_jobs(todo, config.jobs, len(runs), follow_ups, comet_of if comet_after else None),
        )
    except (Exception, KeyboardInterrupt) as error:  # runs failed, or Ctrl-C: the tables
        # of those that finished (with the tests the workers made), then the error
        made = (
            cast("dict[str, list[Comparison]]", error.returned)
            if isinstance(error, RunsFailed)
            else None
        )
        with suppress(Exception):  # a rerun tables them too
            summarize(config, tabled, made, left_out=unscored, asked=asked)
        raise
    rows = summarize(config, tabled, compared, left_out=unscored, asked=asked)
    check_tabled(unscored)
    return rows


def check_made_as_run(run_dir: Path, command: list[str], span: tuple[int, int]) -> None:
    """Refuse a run folder whose log another command made (`made_otherwise`)."""
    otherwise = made_otherwise(run_dir, command, span)
    if otherwise:
        raise EvalConfigError(
            f"{run_dir / 'instances.log'} was written by another command than this grid's "
            f"run ({otherwise}): give another --output, or delete that folder to run it again"
        )


def made_otherwise_left_out(
    config: EvalConfig, runs: list[Run], run_input: RunInput, label: str = "{run} (not in --only)"
) -> set[str]:
    """The names of the finished runs (not picked, or merged) whose logs another command
    made (`made_otherwise`), each named on stderr (`label`): left out of the tables."""
    left_out = set()
    for run in runs:
        run_dir = config.run_dir(run)
        if not (run_dir / "scores.tsv").exists():
            continue
        run_set, run_indices = run_input(run)
        command = simuleval_command(config, run, run_set, run_dir, run_indices)
        otherwise = made_otherwise(run_dir, command, run_indices or (0, run_set.sentences))
        if otherwise:
            print(
                f"east-eval: {label.format(run=run.name)}: left out of the tables, its log "
                f"written by another command than this grid's run ({otherwise})",
                file=sys.stderr,
                flush=True,
            )
            left_out.add(run.name)
    return left_out


def translated_again_if_lacking(run_dir: Path, label: str, dry_run: bool) -> bool:
    """Whether a scored run's log lacks sentences of its span (`lacking_since_scored`): if
    so its scores go (`dry_run`: would) and the grid translates them from its log."""
    lacking = lacking_since_scored(run_dir)
    if lacking is None:
        return False
    again = "would be translated" if dry_run else "translated"
    print(f"{label}: {lacking}: {again} and scored again", flush=True)
    if not dry_run:
        with hold_run_lock(run_dir, INSTANCES_LOCK):
            clear_scores(run_dir)
    return True


def significance_follow_ups(
    config: EvalConfig, every_run: list[Run], todo: list[Job]
) -> list[FollowUp]:
    """Each system's significance tests, made as soon as its last run is done."""
    names = {job.name for job in todo}
    follow_ups = []
    for system in dict.fromkeys(run.system for run in every_run):
        needs = frozenset(run.name for run in every_run if run.system == system) & names
        if needs:
            call = partial(compare_system, config, system, every_run)
            follow_ups.append(FollowUp(system, needs, call))
    return follow_ups
