"""Running a grid: prepare the test set once, run every run that is not done (one
checkpoint load for all of them), then report.

A run whose `scores.tsv` exists is not run again; one that was cut off continues from its
last finished sentence.
"""

from __future__ import annotations

from typing import Any

from east_agent.evaluation.config import EvalConfig, EvalConfigError
from east_agent.evaluation.reports import summarize
from east_agent.evaluation.runs import (
    LoadedModels,
    claim_run_folder,
    run_record,
    run_simuleval,
    simuleval_command,
)
from east_agent.evaluation.shards import shard_range
from east_agent.evaluation.testsets import PreparedTestset, prepare_testset, read_prepared


def prepare(config: EvalConfig) -> PreparedTestset:
    saved = read_prepared(config.testset_dir)
    if saved is not None and saved.name == config.testset:
        return saved
    folder = config.testset_dir
    tokenizer = None
    if config.testset.split(".")[1].split("-")[0] in ("zh", "ja"):
        from east_agent.lm.checkpoint import load_tokenizer

        tokenizer = load_tokenizer(config.model_path)
    return prepare_testset(config.testset, folder, tokenizer)


def run_grid(
    config: EvalConfig,
    only: list[str] | None = None,
    shard: tuple[int, int] | None = None,
    limit: int | None = None,
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    runs = [run for run in config.runs() if not only or run.name in only]
    if only and len(runs) != len(set(only)):
        known = ", ".join(run.name for run in config.runs())
        raise EvalConfigError(f"--only names a run the config lacks (runs: {known})")
    testset = prepare(config)
    sentences = min(limit or testset.sentences, testset.sentences)
    indices = shard_range(shard, sentences) if shard else ((0, sentences) if limit else None)
    models = LoadedModels()
    for number, run in enumerate(runs, 1):
        run_dir = config.run_dir(run, shard)
        command = simuleval_command(config, run, testset, run_dir, indices)
        if not dry_run:
            claim_run_folder(run_dir, run_record(config, run, testset, indices or (0, sentences)))
        if (run_dir / "scores.tsv").exists():
            print(f"[{number}/{len(runs)}] {run.name}: done already, skipped", flush=True)
            continue
        print(f"[{number}/{len(runs)}] {run.name}", flush=True)
        if dry_run:
            print("$ " + " ".join(command))
            continue
        run_simuleval(command, run_dir, models)
    if shard or dry_run:
        return []
    return summarize(config, config.runs())
