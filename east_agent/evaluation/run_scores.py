"""A finished run's scores, kept beside its log and made again when what they were made
from has changed.

SimulEval's `scores.tsv` records the scorers' settings it was made with
(`east_agent.simuleval_glue.scoring`): a finished run whose record differs from the grid's
(other `latency_metrics` or `quality_metrics`, another `ca_unit_seconds`), or that has
none, is scored again from its log (`simuleval_scoring_changes`, `score_again`), nothing
decoded.

Sentence-level runs get OmniSTEval's YAAL (computation-unaware and -aware, source units)
and its degenerate-policy diagnostics (`omnisteval_scoring.shortform_latency`), kept in
`omnisteval_scores.json`. Long-form runs are re-segmented and scored by OmniSTEval
(`omnisteval_scoring.score_longform`: BLEU, chrF, LongYAAL, StreamLAAL, in ms), kept in
`longform_scores.json` with its inputs; a gold-sentence run of a long-form grid is joined
into talks first (`talk_outputs_from_sentences`). Either file records what it was made
from (the `instances.log`'s size and time, the clock, COMET) and is made again when that
has changed (a run continued, shards merged, another `ca_unit_seconds`).
"""

from __future__ import annotations

import json
from contextlib import redirect_stdout
from pathlib import Path

from east_agent.common.atomic import write_atomically
from east_agent.evaluation.config import EvalConfig, Run
from east_agent.evaluation.jobs import CONSOLE_LOG
from east_agent.evaluation.longform import read_longform
from east_agent.evaluation.omnisteval_scoring import (
    score_longform,
    shortform_latency,
    talk_outputs_from_log,
    talk_outputs_from_sentences,
)
from east_agent.evaluation.runs import score_only_arguments
from east_agent.evaluation.testsets import PreparedTestset

SHORTFORM_FILE = "omnisteval_scores.json"
LONGFORM_FILE = "longform_scores.json"


def simuleval_scoring_changes(
    config: EvalConfig, testset: PreparedTestset, run_dir: Path
) -> list[str]:
    """How the finished run in `run_dir` was scored otherwise than the grid scores its runs
    (empty: its `scores.tsv` is the grid's)."""
    from east_agent.simuleval_glue.scoring import (
        scoring_args,
        scoring_differences,
        scoring_settings,
    )

    wanted = scoring_settings(scoring_args(score_only_arguments(config, testset, run_dir)))
    return scoring_differences(run_dir, wanted)


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
    run_dir: Path,
    label: str,
    dry_run: bool = False,
    say_skipped: bool = False,
) -> None:
    """A finished run's SimulEval scores, made again from its log when the grid scores
    otherwise than they were made (`dry_run`: only said)."""
    changes = simuleval_scoring_changes(config, testset, run_dir)
    if not changes:
        if say_skipped:
            print(f"{label}: done already, skipped", flush=True)
    elif dry_run:
        print(f"{label}: done already, would be scored again ({'; '.join(changes)})", flush=True)
    else:
        print(f"{label}: done already, scored again ({'; '.join(changes)})", flush=True)
        score_again(config, testset, run_dir)


def made_from(run_dir: Path, config: EvalConfig) -> dict:
    """What the scores depend on besides the test set: the log as it is now (size and
    time) and the scoring settings (the clock, COMET)."""
    status = (run_dir / "instances.log").stat()
    stamp = {
        "log_bytes": status.st_size,
        "log_mtime": status.st_mtime,
        "unit_seconds": config.ca_unit_seconds,
        "comet": "COMET" in config.quality_metrics,
    }
    if config.word_times:
        times = Path(config.word_times).stat()
        stamp["word_times"] = [str(config.word_times), times.st_size, times.st_mtime]
    return stamp


def kept(path: Path, stamp: dict[str, float]) -> dict | None:
    """The saved scores at `path` if they were made from the log as it is now."""
    if not path.exists():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    return saved if saved.get("made_from") == stamp else None


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
    """BLEU, chrF, LongYAAL(_CA) and StreamLAAL(_CA) of a long-form grid's run, after
    OmniSTEval's re-segmentation to the reference sentences."""
    path, stamp = run_dir / LONGFORM_FILE, made_from(run_dir, config)
    saved = kept(path, stamp)
    if saved is None:
        testset = read_longform(config.testset_dir)
        read = talk_outputs_from_sentences if run.gold_sentences else talk_outputs_from_log
        outputs = read(run_dir / "instances.log", testset.talks, testset.char_level)
        saved = score_longform(
            outputs,
            config.testset_dir,
            run_dir,
            word_times=config.word_times,
            unit_seconds=config.ca_unit_seconds,
            comet="COMET" in config.quality_metrics,
        )
        saved["made_from"] = stamp
        write_atomically(path, json.dumps(saved, indent=2) + "\n")
    return saved["scores"]
