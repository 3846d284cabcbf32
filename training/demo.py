"""Reproduce the shipped demo model, `models/east-demo`, with the project's own recipe.

    python -m training.demo                      # everything, about 3 h on 2 CPU cores
    python -m training.demo --steps eval card    # some steps only (each is resumable)

Steps (outputs under `--workdir`, default outputs/demo):
- data:   SiMT records from Multi30k with `training.build_data` (German→English train and
          val, French→English train; the five latency levels) and offline records
          (German→English, French→English). The word alignments shipped in
          `models/east-demo/alignments/` are reused unless `--realign` or `--max-pairs`
          (whatever `--output` is), so the data are byte-identical to the shipped model's;
          a rerun with the same flags keeps the data built (`data/made_with.json`: eflomal
          cannot be seeded, and the stages' checkpoints are of those data);
- base:   `training.base_model`: a byte-level BPE tokenizer on Multi30k de/en/fr and a
          random 7M-parameter Llama (hidden 256, 6 layers, FFN 768, tied embeddings);
- stage1: `training.sft` with training/configs/demo_stage1.yaml (full fine-tuning on
          German→English SiMT data, best checkpoint by validation loss; the tokenized
          samples of both stages are cached in `tokenized/`);
- stage2: `training.sft` with training/configs/demo_stage2.yaml (LoRA r 64 on French→English
          SiMT data mixed with offline data and the German→English SiMT data replayed;
          seeded by the recipe, not by `--seed`: `--stage2-seed` overrides it);
- merge:  `training.merge_lora`, verified, stored in bfloat16;
- eval:   `east-eval eval_configs/multi30k-de-en.yaml` on the merged model (test_2016,
          the main grid), its EAST runs on Multi30k val (the numbers Stage II's settings
          were chosen by), `eval_configs/multi30k-fr-en.yaml` (Stage II's direction), and
          both German→English EAST grids again with `--num-beams 5` (the paper's decoding),
          and `eval_configs/multi30k-de-en.talks50.yaml` (the test set as unsegmented talks,
          against the same text as gold sentences);
- card:   `--output` (default models/east-demo): the model, its alignments, results.md,
          curves.png and README.md, the model card with commands, data, seed, metrics and
          the time each step took.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from east_agent.common.arguments import parse_once_each, positive_int
from east_agent.common.atomic import (
    atomic_path,
    check_folder_path,
    check_replaceable,
    remove,
    write_atomically,
)
from east_agent.common.entry import command_line
from east_agent.common.records import read_json_object
from east_agent.evaluation.testsets import shipped_file
from training.base_model import add_size_arguments, check_sizes

COMMAND = "python -m training.demo"

if TYPE_CHECKING:
    from training.config import SFTConfig

logger = logging.getLogger("training.demo")

STEPS = ("data", "base", "stage1", "stage2", "merge", "eval", "card")
CONFIGS = Path(__file__).resolve().parent / "configs"
REPOSITORY = Path(__file__).resolve().parent.parent
EVAL_CONFIG = REPOSITORY / "eval_configs" / "multi30k-de-en.yaml"
# the links the shipped model's data were built from (whatever `--output` says)
SHIPPED_ALIGNMENTS = REPOSITORY / "models" / "east-demo" / "alignments"
ALIGNED = {  # data file -> (split, source language)
    "simt-de-en": ("train", "de"),
    "simt-de-en-val": ("val", "de"),
    "simt-fr-en": ("train", "fr"),
}
OFFLINE = {"offline-de-en": "de", "offline-fr-en": "fr"}  # data file -> source language
DATA_MADE_WITH = "made_with.json"  # the data step's flags, written after its last file


def read_lines(path: Path) -> list[str]:
    from east_agent.common.text_lines import read_lines as read_text_lines

    return read_text_lines(path)


def multi30k_file(name: str) -> Path:
    """A shipped Multi30k file, as shipped (`shipped_file`)."""
    return shipped_file(f"multi30k/{name}")


# what a step did, for its time in the card (`step_seconds`)
FRESH = "fresh"  # made its outputs from scratch: its time is this try's
RESUMED = "resumed"  # went on from an earlier try's work: its time adds to theirs
SKIPPED = "skipped"  # found its outputs made: the earlier tries' time stands


def step_seconds(outcome: str, earlier: float | None, seconds: float) -> float | None:
    """A step's time after a try: before, the last try's alone (a rerun that found the data
    built recorded 0.0 s for the data step, and a resumed stage its last part)."""
    if outcome == SKIPPED:
        return earlier
    if outcome == RESUMED:
        return round((earlier or 0.0) + seconds, 1)
    return round(seconds, 1)


def data_built(args: argparse.Namespace) -> bool:
    """Whether the data step's files are there, made with this run's flags: eflomal cannot
    be seeded, so built again, realigned data would differ from those the stages'
    checkpoints were trained on, and a resumed stage would be refused."""
    data = args.workdir / "data"
    marker = data / DATA_MADE_WITH
    outputs = [data / f"{name}.jsonl.gz" for name in (*ALIGNED, *OFFLINE)]
    return (
        marker.exists()
        and read_json_object(marker) == data_flags(args)
        and all(map(Path.exists, outputs))
    )


def build_data(args: argparse.Namespace) -> None:
    from east_agent.common.records import write_jsonl
    from training.build_data import build

    data = args.workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    made_with, marker = data_flags(args), data / DATA_MADE_WITH
    if data_built(args):
        logger.info("data: built already with these flags (%s); remove %s to build again",
                    marker, data)  # fmt: skip
        return
    remove(marker)  # until every file is built again
    for name, (split, source) in ALIGNED.items():
        output = data / f"{name}.jsonl.gz"
        sources = read_lines(multi30k_file(f"{split}.{source}.gz"))[: args.max_pairs]
        targets = read_lines(multi30k_file(f"{split}.en.gz"))[: args.max_pairs]
        report = build(
            list(zip(sources, targets)),
            source,
            "en",
            output,
            alignments=_shipped_links(args, name),
            seed=args.seed,
            progress=False,
        )
        write_atomically(data / f"{name}.report.txt", "\n".join(report.lines()) + "\n")
        logger.info("%s: %s", name, "; ".join(report.lines()))
    for name, source in OFFLINE.items():
        sources = read_lines(multi30k_file(f"train.{source}.gz"))[: args.max_pairs]
        targets = read_lines(multi30k_file("train.en.gz"))[: args.max_pairs]
        records = [
            {"src_lang": source, "tgt_lang": "en", "source": s, "target": t}
            for s, t in zip(sources, targets)
            if s.strip() and t.strip()
        ]
        write_jsonl(data / f"{name}.jsonl.gz", records)
    write_atomically(marker, json.dumps(made_with) + "\n")


def data_flags(args: argparse.Namespace) -> dict:
    """The flags the data step's files are made with (`DATA_MADE_WITH`)."""
    return {"max_pairs": args.max_pairs, "realign": args.realign, "seed": args.seed}


def _shipped_links(args, name: str) -> Path | None:
    """The shipped links of data file `name`, unless eflomal is to align again: asked
    (`--realign`), or a part of the pairs (`--max-pairs`), which the links do not fit."""
    shipped = SHIPPED_ALIGNMENTS / f"{name}.links.gz"
    if args.realign or args.max_pairs is not None or not shipped.exists():
        return None
    return shipped


def build_base(args: argparse.Namespace) -> None:
    from training.base_model import build_base_model

    corpus = [multi30k_file(f"train.{language}.gz") for language in ("de", "en", "fr")]
    build_base_model(
        corpus,
        args.workdir / "base",
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        layers=args.layers,
        heads=args.heads,
        intermediate_size=args.intermediate_size,
        seed=args.seed,
    )


def quoted(*paths: Path) -> str:
    """`paths` as override text YAML reads back whole (a path may hold `,`, ` #`, `: `...)."""
    return ", ".join(json.dumps(str(path), ensure_ascii=False) for path in paths)


def recipe_overrides(args: argparse.Namespace, stage: str) -> list[str]:
    work = args.workdir
    data = work / "data"
    overrides = [
        f"train.output_dir={quoted(work / stage)}",
        f"data.cache_dir={quoted(work / 'tokenized')}",
    ]
    # Stage II keeps its recipe's own seed (chosen on val, see demo_stage2.yaml) unless told
    seed = args.seed if stage == "stage1" else args.stage2_seed
    if seed is not None:
        overrides += [f"train.seed={seed}"]
    if stage == "stage1":
        overrides += [
            f"model.name_or_path={quoted(work / 'base')}",
            f"data.files=[{quoted(data / 'simt-de-en.jsonl.gz')}]",
            f"data.eval_files=[{quoted(data / 'simt-de-en-val.jsonl.gz')}]",
        ]
        if args.stage1_steps:
            overrides += [f"train.max_steps={args.stage1_steps}"]
    else:
        names = ("simt-fr-en", "simt-de-en", "offline-de-en", "offline-fr-en")
        files = quoted(*(data / f"{name}.jsonl.gz" for name in names))
        overrides += [
            f"model.name_or_path={quoted(work / 'stage1' / 'model')}",
            f"data.files=[{files}]",
            f"data.eval_files=[{quoted(data / 'simt-de-en-val.jsonl.gz')}]",
        ]
        if args.stage2_steps:
            overrides += [f"train.max_steps={args.stage2_steps}"]
    if args.eval_every:
        overrides += [f"train.eval_steps={args.eval_every}", f"train.save_steps={args.eval_every}"]
    return overrides


def stage_recipe(args: argparse.Namespace, stage: str) -> SFTConfig:
    """The recipe of `stage` ("stage1" or "stage2") as this run trains it."""
    from training.config import load_config

    return load_config(CONFIGS / f"demo_{stage}.yaml", recipe_overrides(args, stage))


def stage_goes_on(args: argparse.Namespace, stage: str) -> bool:
    """Whether `stage` goes on from an earlier try's work: its last checkpoint, or its
    model finished (its checkpoints removed since, say)."""
    from training.resume import finished_model, resolve_resume

    recipe = stage_recipe(args, stage)
    return resolve_resume(recipe) is not None or finished_model(recipe) is not None


def train_stage(args: argparse.Namespace, stage: str) -> None:
    from training.sft import run

    run(stage_recipe(args, stage))


def merge(args: argparse.Namespace) -> None:
    from training.merge_lora import merge as merge_adapter

    # the merged model of an earlier run is replaced only once the new one is written
    with atomic_path(args.workdir / "merged") as temporary:
        merge_adapter(
            args.workdir / "stage1" / "model",
            args.workdir / "stage2" / "model",
            temporary,
            save_dtype="bfloat16",
        )


EAST_RUNS = [f"east-{level}" for level in ("low", "low-medium", "medium", "medium-high", "high")]


class Evaluation(NamedTuple):
    config: Path
    testset: str | None = None  # overrides the config's
    runs: list[str] | None = None  # all of the config's when None
    num_beams: int | None = None  # overrides the config's EAST systems'


# folder under --workdir -> evaluation: the main grid (test_2016, greedy), the EAST runs on
# val (what Stage II's settings were chosen by), the direction Stage II added, and both
# German→English EAST grids again with beam search (5 beams, the paper's decoding), and the
# test set as long-form talks (unsegmented input against gold sentences)
EVALUATIONS = {
    "eval": Evaluation(EVAL_CONFIG),
    "eval-val": Evaluation(EVAL_CONFIG, "multi30k-val.de-en", EAST_RUNS),
    "eval-fr-en": Evaluation(EVAL_CONFIG.with_name("multi30k-fr-en.yaml")),
    "eval-beam5": Evaluation(EVAL_CONFIG, None, EAST_RUNS, num_beams=5),
    "eval-val-beam5": Evaluation(EVAL_CONFIG, "multi30k-val.de-en", EAST_RUNS, num_beams=5),
    "eval-talks50": Evaluation(EVAL_CONFIG.with_name("multi30k-de-en.talks50.yaml")),
}


def grids_go_on(args: argparse.Namespace) -> bool:
    """Whether the eval step goes on from an earlier try's runs (a grid skips its finished
    runs and resumes its unfinished one), or starts fresh into grids holding no run."""
    logs = (args.workdir / folder / "runs" for folder in EVALUATIONS)
    return any(any(runs.glob("*/instances.log")) for runs in logs if runs.is_dir())


def evaluate(args: argparse.Namespace) -> None:
    """The grids, each skipping its finished runs."""
    from east_agent.evaluation.config import load_eval_config
    from east_agent.evaluation.grid import run_grid

    for folder, evaluation in EVALUATIONS.items():
        config = load_eval_config(
            evaluation.config,
            num_beams=evaluation.num_beams,
            model_path=str(args.workdir / "merged"),
            output=args.workdir / folder,
            device=args.device,
            testset=evaluation.testset,
        )
        run_grid(config, only=evaluation.runs, limit=args.eval_limit)


def step_outcome(step: str, args: argparse.Namespace) -> str:
    """What `step` will do, known before it runs, so that a try that fails or is
    interrupted still counts its time (`step_seconds`)."""
    if step == "data":
        return SKIPPED if data_built(args) else FRESH
    if step in ("stage1", "stage2"):
        return RESUMED if stage_goes_on(args, step) else FRESH
    if step == "eval":
        return RESUMED if grids_go_on(args) else FRESH
    return FRESH


CARD_MARKS = ("README.md", "config.json", "alignments")  # what every card folder holds
SHIPPED_OUTPUT = Path("models/east-demo")  # --output's default: the shipped model, replaced


def check_card_output(output: Path, workdir: Path) -> None:
    """The card replaces `--output` whole: neither the workdir, nor a folder holding it,
    nor one that is not a card (a user's) is replaced."""
    check_folder_path(output, "--output")
    output, workdir = output.resolve(), workdir.resolve()
    if output == workdir or output in workdir.parents:
        raise ValueError(
            f"--output {output} holds --workdir {workdir}: the card would replace it; "
            "choose another --output"
        )
    check_replaceable(output, "model card folder", CARD_MARKS)


def check_card_sources(args: argparse.Namespace) -> None:
    """What the card step copies, made by this run's steps or an earlier run's: the merged
    model and the data's alignments (before: a traceback of transformers' once every other
    step had run); and the shipped model replaced only by a build of its own settings
    (before: a smoke build's 300-line alignments replaced the shipped ones, and every later
    faithful rebuild of the data failed on them)."""
    workdir = args.workdir
    if "merge" not in args.steps and not (workdir / "merged" / "config.json").is_file():
        raise ValueError(
            f"--steps card: {workdir / 'merged'} holds no merged model: run the merge step "
            "first (--steps merge card), or give the --workdir that holds it"
        )
    links = [workdir / "data" / f"{name}.jsonl.gz.links.gz" for name in ALIGNED]
    missing = [path for path in links if not path.is_file()]
    if "data" not in args.steps and missing:
        raise ValueError(
            f"--steps card: {missing[0]} is missing (the alignments the card ships): run the "
            "data step first, or give the --workdir that holds them"
        )
    other = build_flags(args) + ([] if args.seed == 0 else ["--seed", str(args.seed)])
    if not args.output_given and other:
        raise ValueError(
            f"--steps card: a build with {' '.join(other)} would replace the shipped model "
            f"({SHIPPED_OUTPUT}, the default --output) and its alignments: give --output"
        )


# the flags besides --seed that decide the model or its results (not where it is written,
# nor which steps run; nor --realign: the card ships the links the data were built from)
BUILD_FLAGS = (
    "stage2_seed", "max_pairs", "stage1_steps", "stage2_steps", "eval_every", "eval_limit",
    "vocab_size", "hidden_size", "layers", "heads", "intermediate_size",
)  # fmt: skip


def build_flags(args: argparse.Namespace) -> list[str]:
    """The flags of BUILD_FLAGS this run gave other values than the defaults: the card's
    command carries them, so that it rebuilds this model."""
    defaults = parse_args([])
    flags = []
    for name in BUILD_FLAGS:
        if getattr(args, name) != getattr(defaults, name):
            flags += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return flags


def write_card(args: argparse.Namespace, timings: dict[str, float]) -> None:
    from training.demo_card import model_card

    recipes = {stage: stage_recipe(args, stage) for stage in ("stage1", "stage2")}
    links = _shipped_links(args, "simt-de-en")
    named = None if links is None else links.relative_to(REPOSITORY)
    card = model_card(args, timings, recipes, build_flags(args), named)
    with atomic_path(args.output) as temporary:
        shutil.copytree(args.workdir / "merged", temporary)
        _fill_card_folder(args, temporary)
        (temporary / "README.md").write_text(card)


def _fill_card_folder(args, temporary: Path) -> None:
    (temporary / "alignments").mkdir()
    for name in ALIGNED:
        shutil.copy(
            args.workdir / "data" / f"{name}.jsonl.gz.links.gz",
            temporary / "alignments" / f"{name}.links.gz",
        )
    for name in ("results.md", "results.csv", "curves.png"):
        if (args.workdir / "eval" / name).exists():
            shutil.copy(args.workdir / "eval" / name, temporary / name)
    for folder in EVALUATIONS:
        results = args.workdir / folder / "results.csv"
        if folder != "eval" and results.exists():
            shutil.copy(results, temporary / f"results-{folder.removeprefix('eval-')}.csv")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=COMMAND, description="reproduce the demo model")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    parser.add_argument("--workdir", type=Path, default=Path("outputs/demo"))
    parser.add_argument(
        "--output",
        type=Path,
        help=f"the model card folder the card step writes (default: {SHIPPED_OUTPUT}, the "
        "shipped demo model, replaced: only by a build of its own settings)",
    )
    parser.add_argument("--device", default="cpu", help="for the evaluation (training picks one)")
    parser.add_argument("--seed", type=int, default=0, help="data, base model and Stage I")
    parser.add_argument("--stage2-seed", type=int, help="Stage II (default: its recipe's, 2)")
    parser.add_argument(
        "--realign",
        action="store_true",
        help="align again with eflomal (else the shipped models/east-demo/alignments are "
        "reused, whatever --output is; --max-pairs always aligns again)",
    )
    parser.add_argument(
        "--max-pairs",
        type=positive_int,
        help="only the first N pairs (smoke tests of the steps: leave `eval` out of --steps, "
        "as a model trained a few steps may never end a wait-k word and overflow the context)",
    )
    parser.add_argument("--stage1-steps", type=positive_int, help="override the recipe's max_steps")
    parser.add_argument("--stage2-steps", type=positive_int, help="override the recipe's max_steps")
    parser.add_argument(
        "--eval-every", type=positive_int, help="override eval_steps and save_steps"
    )
    parser.add_argument(
        "--eval-limit", type=positive_int, help="evaluate on the first N test sentences"
    )
    add_size_arguments(parser)
    args = parse_once_each(parser, argv)
    check_sizes(args)
    args.output_given = args.output is not None
    args.output = args.output or SHIPPED_OUTPUT
    return args


@command_line(COMMAND)
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if "card" in args.steps:
        check_card_output(args.output, args.workdir)
        check_card_sources(args)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    args.workdir.mkdir(parents=True, exist_ok=True)
    timing_file = args.workdir / "timings.json"
    timings = read_json_object(timing_file) if timing_file.exists() else {}
    timings["machine"] = machine_description()
    actions = {
        "data": build_data,
        "base": build_base,
        "stage1": lambda a: train_stage(a, "stage1"),
        "stage2": lambda a: train_stage(a, "stage2"),
        "merge": merge,
        "eval": evaluate,
    }
    for step in STEPS:
        if step not in args.steps:
            continue
        logger.info("== %s", step)
        if step == "card":
            write_card(args, timings)
            continue
        outcome, started = step_outcome(step, args), time.time()
        if outcome == FRESH and step in timings:  # an earlier run's, whose work is gone:
            del timings[step]  # dropped now, before a SIGKILL could leave it to add to
            write_atomically(timing_file, json.dumps(timings, indent=2))
        try:
            actions[step](args)
        finally:  # a failed or interrupted try's time counts: the next one goes on from it
            seconds = step_seconds(outcome, timings.get(step), time.time() - started)
            if seconds is not None:
                timings[step] = seconds
            write_atomically(timing_file, json.dumps(timings, indent=2))
    print(f"done: {', '.join(args.steps)}")


def machine_description() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores"


if __name__ == "__main__":
    main()
