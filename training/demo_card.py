"""The model card of the demo model: how it was made and what it scores."""

from __future__ import annotations

import json
from pathlib import Path


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


def model_card(args, timings: dict) -> str:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.workdir / "merged")
    stage1, stage2 = _summary(args.workdir / "stage1"), _summary(args.workdir / "stage2")
    results = args.workdir / "eval" / "results.md"
    table = results.read_text() if results.exists() else "(not evaluated)\n"
    data_reports = "\n".join(
        f"- `{path.name.removesuffix('.report.txt')}`: " + "; ".join(path.read_text().splitlines())
        for path in sorted((args.workdir / "data").glob("*.report.txt"))
    )
    smoke = any(
        value is not None
        for value in (args.max_pairs, args.stage1_steps, args.stage2_steps, args.eval_limit)
    )
    return f"""# east-demo: a toy EAST model for Multi30k German→English

{"**Smoke-test build (reduced settings); not the shipped model.**" if smoke else ""}

A {config.num_hidden_layers}-layer Llama ({config.hidden_size} hidden, {config.intermediate_size}
FFN, {config.num_attention_heads} heads, vocabulary {config.vocab_size}, tied embeddings)
trained from scratch with this project's own EAST recipe, in the exact format of EAST-8B
(Llama-3 chat template, `<|end-of-read|>` / `<|end-of-write|>`): the agent loads it like
any EAST checkpoint. Weights are stored in bfloat16 (loaded as float32 on a CPU).

## Reproduce

    python -m training.demo --seed {args.seed}

which runs, in order (outputs under `outputs/demo/`):

    python -m training.build_data --source multi30k/train.de.gz --target multi30k/train.en.gz \\
        --src-lang de --tgt-lang en --output outputs/demo/data/simt-de-en.jsonl.gz \\
        --alignments models/east-demo/alignments/simt-de-en.links.gz --seed {args.seed}
    (the same for the val split and for French→English; offline records from the pairs)
    python -m training.base_model --corpus multi30k/train.{{de,en,fr}}.gz --output outputs/demo/base
    python -m training.sft --config training/configs/demo_stage1.yaml
    python -m training.sft --config training/configs/demo_stage2.yaml
    python -m training.merge_lora --base outputs/demo/stage1/model \\
        --adapter outputs/demo/stage2/model --output outputs/demo/merged --save-dtype bfloat16
    east-eval eval_configs/multi30k-de-en.yaml --model-path outputs/demo/merged

The word alignments (eflomal seeds itself and cannot be seeded) ship in `alignments/`, so
the rebuilt data are identical; `--realign` aligns again. Time per step on
{timings.get("machine", "this machine")}: data {_minutes(timings, "data")}, base
{_minutes(timings, "base")}, Stage I {_minutes(timings, "stage1")}, Stage II
{_minutes(timings, "stage2")}, merge {_minutes(timings, "merge")}, evaluation
{_minutes(timings, "eval")}.{_notes(timings)} On a GPU, `python -m training.demo --device
cuda` runs the same recipes (the Trainer takes the GPU by itself).

## Data

Multi30k task 1 (`east_agent/data/multi30k`, see its README). SiMT records built by
`training.build_data` (eflomal alignments, monotonic segmentation, five latency levels):
{data_reports}

## Training

- Stage I (full fine-tuning, German→English SiMT, all five levels; batch 32, lr 1e-3
  cosine, weight decay 0.1; the checkpoint with the lowest validation loss is kept):
  {stage1.get("global_step", "?")} steps, train loss {_metric(stage1, "train_loss")},
  {stage1.get("wall_seconds", "?")} s; validation loss (Multi30k val, German→English SiMT):
  {_eval_losses(stage1)}.
- Stage II (LoRA r 64, alpha 128, dropout 0.05 on all linear layers, lr 5e-4; French→English
  SiMT + offline de→en and fr→en + the German→English SiMT data replayed):
  {stage2.get("global_step", "?")} steps, train loss {_metric(stage2, "train_loss")},
  {stage2.get("wall_seconds", "?")} s; German→English validation loss:
  {_eval_losses(stage2)}.

## Results: Multi30k test_2016_flickr German→English, 1,000 sentences

SimulEval, sacrebleu BLEU, word-level AL/LAAL with the reference length; `_CA`: with
computation time at {0.4} s per source word (this machine, float32, one sentence at a
time). `waitk-offline` at a large k is offline translation with the offline prompt.

{table}
![BLEU against LAAL](curves.png)
"""


def _metric(summary: dict, name: str) -> str:
    value = summary.get("train_metrics", {}).get(name)
    return f"{float(value):.3f}" if value is not None else "?"


def _notes(timings: dict) -> str:
    notes = timings.get("notes") or []
    return "".join(f" {note}" for note in notes)
