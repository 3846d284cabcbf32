"""`east-eval`: quality–latency grids of SimulEval runs from one YAML config.

    east-eval eval_configs/wmt22-de-en.yaml [--model-path DIR] [--only east-low ...]

`--testset` and `--num-beams` (every EAST system) override the config without editing
it; `--shard I/N` and `--merge-shards N` split a large grid (`east_agent.evaluation.shards`).
"""

from __future__ import annotations

import argparse

from east_agent.common.arguments import folder_path, parse_once_each, positive_int
from east_agent.common.atomic import check_folder_path
from east_agent.common.entry import command_line
from east_agent.evaluation.config import (
    DEFAULT_BATCH_SIZE,
    EvalConfigError,
    check_comet_settings,
    check_device,
    check_metric_names,
    check_relative_paths,
    read_eval_config,
)
from east_agent.evaluation.grid import (
    check_grid_output,
    check_merge_limit,
    holding_grid,
    run_grid,
    summarize_merged,
)
from east_agent.evaluation.jobs import start_worker_imports
from east_agent.evaluation.shards import (
    check_shards_finished,
    merge_shards,
    parse_shard,
    picked_runs,
)


@command_line("east-eval")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="run a quality-latency grid with SimulEval")
    parser.add_argument("config", help="an eval_configs/*.yaml file")
    parser.add_argument("--model-path", help="override the config's checkpoint")
    parser.add_argument("--output", type=folder_path, help="override the config's output folder")
    parser.add_argument("--device", help="override the config's device")
    parser.add_argument(
        "--testset", help="override the config's test set (e.g. multi30k-val.de-en)"
    )
    parser.add_argument(
        "--num-beams", type=positive_int, help="beams per WRITE chunk for every EAST system"
    )
    parser.add_argument("--only", nargs="+", help="run only these runs (names as in results)")
    parser.add_argument(
        "--limit",
        type=positive_int,
        help="only the first N sentences, or talks of a long-form set (smoke tests)",
    )
    parser.add_argument("--shard", type=parse_shard, help="run shard I of N: --shard 2/4")
    parser.add_argument(
        "--merge-shards", type=positive_int, metavar="N", help="join N finished shards"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the runs' commands, run nothing"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"sentences decoded at once (default {DEFAULT_BATCH_SIZE}, or the config's "
        "batch_size); 1 runs SimulEval's own loop, one sentence at a time, as a child process",
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        help="runs at once, each in its own process on a share of the CPU threads (default "
        "1, or the config's jobs); what each prints goes to console.log in its folder",
    )
    args = parse_once_each(parser, argv)
    merging = args.merge_shards is not None
    if merging and (args.dry_run or args.shard):
        parser.error("--merge-shards joins finished shards: use it without --dry-run or --shard")
    config = read_eval_config(
        args.config,
        num_beams=args.num_beams,
        model_path=args.model_path,
        output=args.output,
        device=args.device,
        testset=args.testset,
        batch_size=args.batch_size,
        jobs=args.jobs,
    )
    if config.jobs > 1 and not (args.dry_run or merging):
        start_worker_imports()  # while the systems are checked and the folders prepared
    every_run = config.runs()  # the systems checked against their agents' flags, first
    check_metric_names(config)
    if args.shard:
        config = config.without_comet()  # checked and scored at the merge
    check_device(config, not (args.dry_run or merging), dry_run=args.dry_run)
    check_folder_path(config.output, config.place().of("output"))
    check_relative_paths(config, model_needed=not merging)
    check_comet_settings(config)
    if merging:
        picked = picked_runs(every_run, args.only)
        if not config.output.is_dir():  # before: a grid.lock made there, every path listed
            raise EvalConfigError(
                f"output {config.output}: no such folder, so no shards to merge (the grid's "
                "--shard I/N runs write them there)"
            )
        with holding_grid(config, None):
            check_shards_finished(config, picked, args.merge_shards)
            check_merge_limit(config, picked, args.merge_shards, args.limit)
            check_grid_output(config.output)
            for run in picked:
                merge_shards(config, run, args.merge_shards)
            summarize_merged(config, every_run, {run.name for run in picked}, args.limit)
    else:
        run_grid(config, args.only, args.shard, args.limit, args.dry_run)


if __name__ == "__main__":
    main()
