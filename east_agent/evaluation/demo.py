"""`east-demo`: the project's main job, simultaneous translation of a test set with SimulEval.

    east-demo                          # the shipped demo model, Multi30k de→en, low latency
    east-demo --latency high
    east-demo --all-levels             # the five levels, then the table
    east-demo --model-path /models/EAST-8B --testset wmt22.de-en --device cuda:0

Each level is one real SimulEval run of the EAST agent (the command is printed); the
scores (BLEU, LAAL, AL) are printed as a table and kept in `--output`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from east_agent.common.arguments import (
    TORCH_DTYPES,
    DefaultsHelpFormatter,
    folder_path,
    parse_once_each,
    positive_int,
)
from east_agent.common.atomic import check_folder_path, not_a_folder
from east_agent.common.entry import command_line
from east_agent.decoding.prompt import LATENCY_LEVELS
from east_agent.evaluation.config import (
    DEFAULT_BATCH_SIZE,
    EvalConfig,
    check_device,
    check_testset,
)
from east_agent.evaluation.grid import run_grid

# The repository's copy (the package is installed in editable mode from the checkout).
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "east-demo"
DEMO_OUTPUTS = "outputs/east-demo"


@command_line("east-demo")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="translate a test set with the EAST agent (each level asked for is run "
        "afresh: an earlier demo's run of that level in --output is replaced, never a run "
        "east-eval made; the tables show this demo's runs)",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--model-path", default=str(DEFAULT_MODEL), help="any EAST checkpoint")
    parser.add_argument("--testset", default="multi30k.de-en", help="east-prepare's names")
    parser.add_argument("--latency", default="low", choices=LATENCY_LEVELS, help="the level")
    parser.add_argument("--all-levels", action="store_true", help="run all five latency levels")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument(
        "--torch-dtype", default="auto", choices=TORCH_DTYPES, help="the weights' dtype"
    )
    parser.add_argument("--num-beams", type=positive_int, default=1, help="beams per chunk")
    parser.add_argument(
        "--limit",
        type=positive_int,
        help="only the first N sentences, or talks of a long-form set (default: all)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        help="sentences decoded at once; 1 runs SimulEval's own loop, one at a time",
    )
    parser.add_argument(
        "--output",
        type=folder_path,
        help=f"runs and tables go here (default: {DEMO_OUTPUTS}/TESTSET, a folder per test set)",
    )
    args = parse_once_each(parser, argv)
    if args.output is None:  # one per test set: a demo of another set is no refusal
        args.output = str(Path(DEMO_OUTPUTS) / args.testset)
    if not Path(args.model_path).exists() and args.model_path != str(DEFAULT_MODEL):
        # before: the advice for the shipped model, "or pass --model-path", to one who had
        raise ValueError(f"--model-path {args.model_path}: {not_a_folder(Path(args.model_path))}")
    if not Path(args.model_path).exists():
        raise FileNotFoundError(
            f"no model at {args.model_path} (the demo model ships in the "
            "repository's models/east-demo: install with `pip install -e .` from a clone, "
            "or pass --model-path)"
        )
    check_testset(args.testset, "--testset")
    check_folder_path(Path(args.output), "--output")
    levels = list(LATENCY_LEVELS) if args.all_levels else [args.latency]
    config = EvalConfig(
        source=Path("east-demo"),
        testset=args.testset,
        model_path=args.model_path,
        output=Path(args.output),
        systems={"east": {"agent": "east", "num_beams": args.num_beams, "latency": levels}},
        device=args.device,
        torch_dtype=args.torch_dtype,
        latency_metrics=["LAAL", "AL", "LAAL_CA", "AL_CA"],
        batch_size=args.batch_size,
        overridden=frozenset({"testset", "model_path", "output", "device", "torch_dtype"}),
    )
    check_device(config, needed_here=True)
    # a fresh run each time: this is a demonstration, not a grid (its folders emptied once
    # the grid's checks passed)
    run_grid(config, limit=args.limit, afresh=True)


if __name__ == "__main__":
    main()
