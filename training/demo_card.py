"""The model card of the demo model: how it was made and what it scores."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    from training.config import SFTConfig


def _summary(folder: Path) -> dict:
    path = folder / "train_summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    evaluations = []
    for state in folder.glob("checkpoint-*/trainer_state.json"):
        history = json.loads(state.read_text()).get("log_history", [])
        evaluations += [
            (entry["step"], entry["eval_loss"]) for entry in history if "eval_loss" in entry
        ]
    summary["eval_losses"] = sorted(set(evaluations))
    return summary


def _eval_losses(summary: dict) -> str:
    losses = summary.get("eval_losses") or []
    return ", ".join(f"{loss:.3f} (step {step})" for step, loss in losses) or "not evaluated"


def _minutes(timings: dict, step: str) -> str:
    return f"{timings[step] / 60:.1f} min" if step in timings else "not run"


def _hyperparameters(recipe) -> str:
    train = recipe.train
    parts = [
        f"batch {train.get('per_device_train_batch_size', '?')}",
        f"lr {train.get('learning_rate', '?'):g} {train.get('lr_scheduler_type', 'linear')}",
    ]
    if train.get("weight_decay"):
        parts.append(f"weight decay {train['weight_decay']:g}")
    parts.append(f"seed {train.get('seed', 42)}")
    if recipe.stage == "lora":
        lora = recipe.lora
        parts.insert(0, f"LoRA r {lora.r}, alpha {lora.alpha}, dropout {lora.dropout:g}")
    return ", ".join(parts)


def _files(recipe) -> str:
    return ", ".join(f"`{Path(name).name.removesuffix('.jsonl.gz')}`" for name in recipe.data.files)


def _table(args, folder: str) -> str:
    results = args.workdir / folder / "results.md"
    if not results.exists():
        return "(not evaluated)\n"
    from east_agent.evaluation.runs import counted_seconds, settled_tries

    # each run's tries as the tables count them: a killed last try lasted until its log's
    # last sentence (before: its seconds read as 0)
    runs = (args.workdir / folder / "runs").glob("*/wall_seconds.json")
    seconds = sum(counted_seconds(settled_tries(path.parent) or []) for path in runs)
    return results.read_text() + f"\n({seconds / 60:.1f} min of SimulEval runs.)\n"


def _significance(args, folder: str) -> str:
    table = args.workdir / folder / "significance.md"
    if not table.exists():
        return ""
    return (
        "\nEach setting against the one before it (paired bootstrap resampling, 1,000 "
        "samples; `tie`: p ≥ 0.05; CI95_to: half-width of the 95% interval of its BLEU, "
        "centred on the resamples' mean):\n\n" + table.read_text()
    )


SIZE_FLAGS = ("--vocab-size", "--hidden-size", "--layers", "--heads", "--intermediate-size")


def _warning(args, flags: Sequence[str]) -> str:
    smoke = any(
        value is not None
        for value in (args.max_pairs, args.stage1_steps, args.stage2_steps, args.eval_limit)
    )
    if smoke:
        return "**Smoke-test build (reduced settings); not the shipped model.**\n\n"
    if flags:
        return "**Built with other settings (see Reproduce); not the shipped model.**\n\n"
    return ""


def _alignment_flag(links: Path | None) -> str:
    return "" if links is None else f"--alignments {links} "


def _pairs_note(args) -> str:
    return "" if args.max_pairs is None else f"; the first {args.max_pairs} pairs of each file"


def _alignment_note(args, links: Path | None) -> str:
    if links is not None:
        return (
            "The word alignments (eflomal seeds itself and cannot be seeded) ship in "
            "`alignments/`, so\nthe rebuilt data are identical; `--realign` aligns again."
        )
    if args.max_pairs is not None:
        return (
            "These data were aligned again by eflomal (`--max-pairs` always aligns), which "
            "cannot be seeded:\ntheir links are in `alignments/`, but a rebuild aligns again, "
            "so its data differ."
        )
    return (
        "These data were aligned again by eflomal (`--realign`), which cannot be seeded; "
        "their links are in\n`alignments/`, and the command above reuses "
        "`models/east-demo/alignments/`: it rebuilds these data\nwhere this folder is "
        "`models/east-demo/` (the default `--output`), other data elsewhere."
    )


def _curves(args) -> str:
    """The curves' image, where the eval step drew it (before: a broken link without)."""
    if not (args.workdir / "eval" / "curves.png").exists():
        return ""
    return "\n![BLEU against LAAL](curves.png)\n"


def _size_flags(flags: Sequence[str]) -> str:
    """The base model's size flags among `flags` (flag, value, flag, value, ...)."""
    pairs = zip(flags[::2], flags[1::2])
    return "".join(f" {flag} {value}" for flag, value in pairs if flag in SIZE_FLAGS)


def model_card(
    args: argparse.Namespace,
    timings: dict,
    recipes: Mapping[str, SFTConfig],
    flags: Sequence[str],
    links: Path | None,
) -> str:
    """The card of the model in `args.workdir`; `recipes` are the two stages' recipes as
    they were run ("stage1", "stage2"); `flags` those the demo was given besides `--seed`
    with other values than its defaults (its reproduce command carries them); `links`: the
    shipped alignments German→English data were built from, as the repository names them
    (None: eflomal aligned them again)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.workdir / "merged")
    stage1, stage2 = _summary(args.workdir / "stage1"), _summary(args.workdir / "stage2")
    recipe1, recipe2 = recipes["stage1"], recipes["stage2"]
    data_reports = "\n".join(
        f"- `{path.name.removesuffix('.report.txt')}`: " + "; ".join(path.read_text().splitlines())
        for path in sorted((args.workdir / "data").glob("*.report.txt"))
    )
    command = " ".join(["python -m training.demo --seed", str(args.seed), *flags])
    return f"""# east-demo: a toy EAST model for Multi30k German→English

{_warning(args, flags)}A {config.num_hidden_layers}-layer Llama ({config.hidden_size} hidden, \
{config.intermediate_size} FFN, {config.num_attention_heads} heads, vocabulary \
{config.vocab_size}, tied embeddings) trained from scratch with this project's own EAST
recipe, in the exact format of EAST-8B (Llama-3 chat template, `<|end-of-read|>` /
`<|end-of-write|>`): the agent loads it like any EAST checkpoint. Weights are stored in
bfloat16 (loaded as float32 on a CPU).

## Reproduce

    {command}

which runs, in order (outputs under `outputs/demo/`):

    python -m training.build_data --source east_agent/data/multi30k/train.de.gz \\
        --target east_agent/data/multi30k/train.en.gz \\
        --src-lang de --tgt-lang en --output outputs/demo/data/simt-de-en.jsonl.gz \\
        {_alignment_flag(links)}--seed {args.seed}
    (the same for the val split and for French→English; offline records from the \
pairs{_pairs_note(args)})
    python -m training.base_model --corpus east_agent/data/multi30k/train.{{de,en,fr}}.gz \\
        --output outputs/demo/base{_size_flags(flags)}
    python -m training.sft --config training/configs/demo_stage1.yaml
    python -m training.sft --config training/configs/demo_stage2.yaml
    python -m training.merge_lora --model-path outputs/demo/stage1/model \\
        --adapter-path outputs/demo/stage2/model --output outputs/demo/merged --save-dtype bfloat16
    east-eval eval_configs/multi30k-de-en.yaml --model-path outputs/demo/merged
    (and its EAST runs on Multi30k val; east-eval eval_configs/multi30k-fr-en.yaml)

{_alignment_note(args, links)} Time per step on
{timings.get("machine", "this machine")}: data {_minutes(timings, "data")}, base \
{_minutes(timings, "base")}, Stage I {_minutes(timings, "stage1")}, Stage II \
{_minutes(timings, "stage2")}, merge {_minutes(timings, "merge")}, evaluation \
{_minutes(timings, "eval")}.{_notes(timings)} On a GPU, `python -m training.demo --device
cuda` runs the same recipes (the Trainer takes the GPU by itself).

## Data

Multi30k task 1 (`east_agent/data/multi30k`, see its README). SiMT records built by
`training.build_data` (eflomal alignments, monotonic segmentation, five latency levels):
{data_reports}

## Training

- Stage I (`training/configs/demo_stage1.yaml`: full fine-tuning, {_hyperparameters(recipe1)};
  data {_files(recipe1)}; the checkpoint with the lowest validation loss is kept):
  {stage1.get("global_step", "?")} steps, final train loss {_train_loss(stage1)};
  validation loss (Multi30k val, German→English SiMT): {_eval_losses(stage1)}.
- Stage II (`training/configs/demo_stage2.yaml`: {_hyperparameters(recipe2)};
  data {_files(recipe2)}, mixed):
  {stage2.get("global_step", "?")} steps, final train loss {_train_loss(stage2)};
  German→English validation loss: {_eval_losses(stage2)}.

## Results: Multi30k test_2016_flickr German→English, 1,000 sentences

SimulEval, sacrebleu BLEU, word-level AL/LAAL with the reference length; `_CA`: with
computation time at {0.4} s per source word (this machine, float32, with as many
sentences decoded at once as the `streams` column says, and `jobs` runs side by side).
`waitk-offline` at a large k is offline translation with the offline prompt.

{_table(args, "eval")}{_significance(args, "eval")}{_curves(args)}
## Multi30k val German→English (1,014 sentences; Stage II's settings were chosen here)

{_table(args, "eval-val")}{_significance(args, "eval-val")}
## Beam search (5 beams per WRITE chunk, the paper's decoding), German→English EAST

Multi30k test_2016_flickr (1,000 sentences; `east-eval eval_configs/multi30k-de-en.yaml
--num-beams 5 --only east-low ...`):

{_table(args, "eval-beam5")}{_significance(args, "eval-beam5")}
Multi30k val (1,014 sentences; `--testset multi30k-val.de-en`):

{_table(args, "eval-val-beam5")}{_significance(args, "eval-val-beam5")}
## Multi30k test_2016_flickr French→English (Stage II's direction; Stage I saw no French)

{_table(args, "eval-fr-en")}
## Long-form input: the German→English test set as 20 unsegmented talks of 50 sentences

`east-eval eval_configs/multi30k-de-en.talks50.yaml`: each talk is one stream of about 545
words (`--long-form`: segments at sentence ends, a cache of at most 256 tokens;
`east-discourse`: the last 20 source and target words carried past each sentence end;
`east-cut8`: every sentence cut after 8 words and carried on with its last 20 words, as
unpunctuated input would be; `east-cut8-nocontext`: the same cuts without them);
`east-gold` translates the same sentences one at a time. Every run is re-segmented to the
reference sentences and scored by OmniSTEval: BLEU, chrF, LongYAAL and StreamLAAL in ms at
0.4 s per source word (`_CA`: with computation time, this machine, float32, batched).

{_table(args, "eval-talks50")}{_significance(args, "eval-talks50")}"""


def _metric(summary: dict, name: str) -> str:
    value = summary.get("train_metrics", {}).get(name)
    return f"{float(value):.3f}" if value is not None else "?"


def _train_loss(summary: dict) -> str:
    """The Trainer's mean loss, of the steps after a resume where there was one."""
    resumed = summary.get("resumed_at_step") or 0
    after = f" (the mean of the steps after step {resumed}, where it resumed)" if resumed else ""
    return _metric(summary, "train_loss") + after


def _notes(timings: dict) -> str:
    notes = timings.get("notes") or []
    return "".join(f" {note}" for note in notes)
