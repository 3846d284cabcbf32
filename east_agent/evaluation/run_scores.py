"""A finished run's scores, kept beside its log and made again when what they were made
from has changed.

SimulEval's `scores.tsv` records the scorers' settings it was made with
(`east_agent.simuleval_glue.scoring`): a finished run whose record differs from the grid's
(other `latency_metrics` or `quality_metrics`, another `ca_unit_seconds`), or that has
none, is scored again from its log (`rescore_if_changed`, `rescore_tabled`), nothing
decoded; one that cannot be (its folder held by another process) is left out of the tables.

Sentence-level runs get OmniSTEval's YAAL (computation-unaware and -aware, source units)
and its degenerate-policy diagnostics (`omnisteval_scoring.shortform_latency`), kept in
`omnisteval_scores.json`. Long-form runs are re-segmented and scored by OmniSTEval
(`omnisteval_scoring.score_longform`: BLEU, chrF, LongYAAL, StreamLAAL, in ms), kept in
`longform_scores.json` with its inputs; a gold-sentence run of a long-form grid is joined
into talks first (`talk_outputs_from_sentences`). Either file records what it was made
from (the `instances.log`'s size and time, the clock, COMET; a long-form run's, the talk
files' content too) and is made again when that has changed (a run continued, shards
merged, another `ca_unit_seconds`, a talk file mended). A long-form run's
COMET is made apart, from the re-segmented sentences kept with it (COMET added or dropped
re-segments nothing); a finished long-form run whose file is not the grid's is named and
scored again with the rest (`rescore_if_changed`).
"""

from __future__ import annotations

import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

from east_agent.common.atomic import write_atomically
from east_agent.common.comet_process import COMET_INPUTS, checkpoint_identity
from east_agent.common.entry import CommandError
from east_agent.common.fingerprint import content_of, files_fingerprint
from east_agent.common.records import read_json_object
from east_agent.common.run_lock import may_be_held
from east_agent.evaluation.config import EvalConfig, Run
from east_agent.evaluation.jobs import CONSOLE_LOG
from east_agent.evaluation.longform import TALK_FILES, read_longform
from east_agent.evaluation.omnisteval_scoring import (
    RESEGMENTED_FILE,
    SOURCE_FILE,
    add_resegmented_comet,
    score_longform,
    set_references,
    shortform_latency,
    talk_outputs_from_log,
    talk_outputs_from_sentences,
)
from east_agent.evaluation.runs import RUN_RECORD, score_only_arguments
from east_agent.evaluation.testsets import PreparedTestset
from east_agent.simuleval_glue.run_folder import INSTANCES_LOCK, missing_from_span, streams_of

SHORTFORM_FILE = "omnisteval_scores.json"
LONGFORM_FILE = "longform_scores.json"


def wanted_scoring(config: EvalConfig, testset: PreparedTestset) -> dict:
    """The scorers' settings of the grid's runs: what `scoring.json` holds in a run folder
    scored as the grid scores (taken once per grid)."""
    from east_agent.simuleval_glue.scoring import scoring_args, scoring_settings

    return scoring_settings(scoring_args(score_only_arguments(config, testset, Path("."))))


def score_again(config: EvalConfig, testset: PreparedTestset, run_dir: Path) -> None:
    """Score the finished log in `run_dir` as the grid scores its runs (its folder held);
    SimulEval's printed table goes to the run's console log."""
    from east_agent.simuleval_glue.batch import score_folder
    from east_agent.simuleval_glue.scoring import scoring_args

    arguments = score_only_arguments(config, testset, run_dir)
    print("$ east-simuleval " + " ".join(arguments), flush=True)
    with open(run_dir / CONSOLE_LOG, "a", encoding="utf-8") as console, redirect_stdout(console):
        score_folder(scoring_args(arguments))


def rescore_if_changed(
    config: EvalConfig,
    testset: PreparedTestset,
    wanted: dict,
    run: Run,
    run_dir: Path,
    label: str,
    dry_run: bool = False,
    say_skipped: bool = False,
) -> bool:
    """Make a finished run's scores again when they were made otherwise than `wanted`
    (SimulEval's, from its log) or than the grid makes a long-form run's OmniSTEval scores
    and COMET (`dry_run`: only say so). False when they could not be made (the folder held
    by another process, a bad log, COMET failed): named on stderr, the run's scores are not
    the grid's."""
    from east_agent.simuleval_glue.scoring import scoring_differences

    if not (run_dir / "instances.log").exists():  # its significance and rescoring read it
        print(
            f"east-eval: {label}: {run_dir / 'scores.tsv'} without the instances.log it was "
            "made from, left out of the tables; delete the folder to run it again",
            file=sys.stderr,
            flush=True,
        )
        return False
    changes = scoring_differences(run_dir, wanted)
    longform = longform_differences(config, run_dir) if config.long_form else []
    if not changes and not longform:
        if say_skipped:
            print(f"{label}: done already, skipped{measured_note(config, run_dir)}", flush=True)
        return True
    shown = "; ".join([*changes, *longform])
    if dry_run:
        print(f"{label}: done already, would be scored again ({shown})", flush=True)
        return True
    print(f"{label}: done already, scored again ({shown})", flush=True)
    if changes and not _scored_again(config, testset, run_dir, label):
        return False
    return not longform or _longform_scored_again(config, run, run_dir, label)


def measured_note(config: EvalConfig, run_dir: Path) -> str:
    """What a finished run kept for a grid asking for one stream measured: its `_CA`
    columns and time measured with more (before: kept without a word, the table's `streams`
    column alone saying so)."""
    streams = streams_of(run_dir)
    if config.batch_size != 1 or streams == 1:
        return ""
    return (
        f" (its computation-aware latency and time were measured with {streams} streams "
        f"sharing the device; to measure one stream, delete {run_dir} and run again)"
    )


def lacking_since_scored(run_dir: Path) -> str | None:
    """Why a scored run's log no longer holds every sentence of the span its run recorded
    (cut short or mended since it was scored, so that its `scores.tsv` is of other
    sentences than the log's, and a significance test would compare the sentences left;
    before: both tabled, exit 0), or a record or log there that does not read; None where
    it holds them all, is gone (`rescore_if_changed`'s to name) or is being written (its
    writer scores it)."""
    log = run_dir / "instances.log"
    if not log.exists() or may_be_held(run_dir, INSTANCES_LOCK):
        return None
    try:
        missing = missing_from_span(run_dir)
    except ValueError as error:  # a record or a line that does not read: named, left out
        return str(error)
    return None if missing is None else f"{log}: {missing} since it was scored"


def add_comet(
    config: EvalConfig, testset: PreparedTestset, run: Run, run_dir: Path, label: str
) -> bool:
    """A run just decoded and scored without COMET in a process of its own (a worker, or
    SimulEval's loop) given COMET here, by this process's one COMET child: one import of
    COMET and one load of its checkpoint for the grid, not one a process. A sentence-level
    run is scored again from its log (nothing decoded); a long-form run's re-segmented
    sentences, which its worker kept, are scored (nothing re-segmented). False (named on
    stderr) when it could not be: the run is left out of the tables, and the next
    `east-eval` scores it again."""
    print(f"{label}: COMET", flush=True)
    if not config.long_form:
        return _scored_again(config, testset, run_dir, label)
    return _longform_scored_again(config, run, run_dir, label)


def _scored_again(config: EvalConfig, testset: PreparedTestset, run_dir: Path, label: str) -> bool:
    try:
        score_again(config, testset, run_dir)
    except (CommandError, ValueError, OSError) as error:
        message = f"east-eval: {label}: not scored again, left out of the tables: {error}"
        print(message, file=sys.stderr, flush=True)
        return False
    return True


def rescore_tabled(
    config: EvalConfig,
    testset: PreparedTestset,
    wanted: dict,
    runs: list[Run],
    label: str,
    dry_run: bool = False,
) -> set[str]:
    """Before a table shows finished runs a command did not pick (outside `--only`, beside
    merged shards): each of this test set scored as the grid scores (`label`: how the
    messages name them, `{run}` in it). The names of those that could not be."""
    failed = set()
    for run in runs:
        run_dir = config.run_dir(run)
        if not (run_dir / "scores.tsv").exists():
            continue
        if recorded_testset(run_dir) not in (None, config.testset):
            continue  # another test set's run: its own latency unit and tokenizer
        name = label.format(run=run.name)
        if lacking := lacking_since_scored(run_dir):
            print(
                f"east-eval: {name}: {lacking}: left out of the tables; east-eval --only "
                f"{run.name} translates them",
                file=sys.stderr,
                flush=True,
            )
            failed.add(run.name)
        elif not rescore_if_changed(config, testset, wanted, run, run_dir, name, dry_run):
            failed.add(run.name)
    return failed


def recorded_testset(run_dir: Path) -> str | None:
    """The test set a run folder's `run.json` names (None: no record, taken as this grid's)."""
    path = run_dir / RUN_RECORD
    return read_json_object(path)["testset"] if path.exists() else None


def made_from(run_dir: Path, config: EvalConfig) -> dict:
    """What the scores depend on besides the test set: the log as it is now (size and
    time) and the clock."""
    status = (run_dir / "instances.log").stat()
    stamp: dict[str, object] = {
        "log_bytes": status.st_size,
        "log_mtime": status.st_mtime,
        "unit_seconds": config.ca_unit_seconds,
    }
    if config.word_times:
        times = Path(config.word_times).stat()
        stamp["word_times"] = [str(config.word_times), times.st_size, times.st_mtime]
    return stamp


def longform_made_from(run_dir: Path, config: EvalConfig) -> dict:
    """`made_from`, and the content of the talk files OmniSTEval reads (before: scores
    made from a talk file edited by hand stayed after it was mended)."""
    folder = Path(config.testset_dir)
    talk_files = [folder / name for name in TALK_FILES]
    return {**made_from(run_dir, config), "talk_files": files_fingerprint(talk_files, folder)}


def comet_made_from(config: EvalConfig) -> dict | None:
    """COMET's part of what long-form scores depend on: its checkpoint by its content and
    how its texts are made, or None when the grid asks for no COMET."""
    comet = config.comet()
    if comet is None:
        return None
    return {"checkpoint": content_of(checkpoint_identity(comet.checkpoint)), "inputs": COMET_INPUTS}


def kept(path: Path, stamp: dict, apart: tuple[str, ...] = ()) -> dict | None:
    """The saved scores at `path` if they were made from the log as it is now (`stamp`),
    whatever their record says of the parts named `apart`."""
    if not path.exists():
        return None
    saved = read_json_object(path)
    made = saved.get("made_from") or {}
    return saved if {key: made[key] for key in made if key not in apart} == stamp else None


def shortform_columns(config: EvalConfig, run_dir: Path, latency_unit: str) -> dict:
    """YAAL, YAAL_CA, SWF, EFSW, DSPTV and degenerate of a sentence-level run."""
    path, stamp = run_dir / SHORTFORM_FILE, made_from(run_dir, config)
    saved = kept(path, stamp)
    if saved is None:
        scores = shortform_latency(run_dir / "instances.log", config.ca_unit_seconds, latency_unit)
        saved = {"scores": scores, "made_from": stamp}
        write_atomically(path, json.dumps(saved, indent=2) + "\n")
    return saved["scores"]


def longform_columns(config: EvalConfig, run: Run, run_dir: Path) -> dict:
    """BLEU, chrF, LongYAAL(_CA), StreamLAAL(_CA) and COMET (when the grid asks) of a
    long-form grid's run, after OmniSTEval's re-segmentation to the reference sentences.
    COMET is made apart, from the re-segmented sentences kept: a worker scores a run
    without it and `east-eval` adds it (`add_comet`), nothing re-segmented twice."""
    path, stamp = run_dir / LONGFORM_FILE, longform_made_from(run_dir, config)
    saved = _kept_whatever_comet(path, stamp)
    if saved is None:
        testset = read_longform(config.testset_dir)
        read = talk_outputs_from_sentences if run.gold_sentences else talk_outputs_from_log
        references = set_references(testset, run.gold_sentences)
        outputs = read(run_dir / "instances.log", testset.talks, testset.char_level, references)
        saved = score_longform(
            outputs,
            config.testset_dir,
            run_dir,
            word_times=config.word_times,
            unit_seconds=config.ca_unit_seconds,
        )
        saved["made_from"] = {**stamp, "comet": None}
        write_atomically(path, json.dumps(saved, indent=2) + "\n")
    comet = comet_made_from(config)
    if saved["made_from"].get("comet") != comet:
        if comet is None:
            scores = {key: value for key, value in saved["scores"].items() if key != "COMET"}
            saved = {**saved, "scores": scores, "comet": None}
        else:
            settings = config.comet()
            assert settings is not None  # as `comet` is: COMET is asked
            saved = add_resegmented_comet(saved, run_dir, settings)
        saved["made_from"] = {**stamp, "comet": comet}
        write_atomically(path, json.dumps(saved, indent=2) + "\n")
    return saved["scores"]


def longform_differences(config: EvalConfig, run_dir: Path) -> list[str]:
    """How a finished long-form run's saved OmniSTEval scores were made otherwise than the
    grid makes them (empty: they are the grid's; `longform_columns` makes them again)."""
    if not (run_dir / "instances.log").exists():
        return []
    saved = _kept_whatever_comet(run_dir / LONGFORM_FILE, longform_made_from(run_dir, config))
    if saved is None:
        return [
            "OmniSTEval's scores missing, or made from another log, clock or talk files (or "
            "by a version that did not record the talk files)"
        ]
    was, now = saved["made_from"].get("comet"), comet_made_from(config)
    if was == now:
        return []
    if was is None:
        return ["COMET not scored (now asked)"]
    if now is not None and _comet_checkpoint(was) == now["checkpoint"]:
        return ["COMET of texts not stripped (made before they were)"]
    return ["COMET of another checkpoint (now " + ("none" if now is None else "this one") + ")"]


def _longform_scored_again(config: EvalConfig, run: Run, run_dir: Path, label: str) -> bool:
    """A finished long-form run's OmniSTEval scores (and COMET) made as the grid makes them,
    here; False (named on stderr) when they could not be: left out of the tables."""
    try:
        longform_columns(config, run, run_dir)
    except (ValueError, RuntimeError, OSError, KeyError) as error:  # CometError included
        message = f"east-eval: {label}: not scored again, left out of the tables: {error}"
        print(message, file=sys.stderr, flush=True)
        return False
    return True


def _comet_checkpoint(made_from_comet: dict | str) -> str | None:
    """The checkpoint's content in a record's `made_from.comet` (before COMET's texts were
    stripped, the record was that content alone)."""
    if isinstance(made_from_comet, dict):
        return made_from_comet.get("checkpoint")
    return made_from_comet


def _kept_whatever_comet(path: Path, stamp: dict) -> dict | None:
    """The saved long-form scores at `path` if they were made from the log as it is now,
    with whatever COMET they hold, and the re-segmented sentences COMET reads are there."""
    sentences = (path.with_name(RESEGMENTED_FILE), path.with_name(SOURCE_FILE))
    if not all(file.exists() for file in sentences):
        return None
    return kept(path, stamp, apart=("comet",))
