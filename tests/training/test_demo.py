"""The demo model's pipeline (tokenizer and base model from scratch, both stages, merge,
evaluation, model card) at smoke-test size, and the shipped demo model itself."""

import json
import subprocess
import sys
from pathlib import Path

from transformers import AutoTokenizer

from east_agent.prompt import render_user_turn, simt_instruction
from training.base_model import build_base_model

REPO = Path(__file__).resolve().parents[2]
MULTI30K = REPO / "east_agent" / "data" / "multi30k"
SHIPPED = REPO / "models" / "east-demo"


def test_base_model_is_a_chat_checkpoint_without_east_tokens(tmp_path):
    path = build_base_model(
        [MULTI30K / "val.de.gz", MULTI30K / "val.en.gz"], tmp_path / "base",
        vocab_size=800, hidden_size=32, layers=1, heads=2, intermediate_size=64,
    )  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompt = render_user_turn(tokenizer, simt_instruction("de", "en", "low"))
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>")
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == prompt  # byte-level: nothing is out of vocabulary
    assert "<|end-of-read|>" not in tokenizer.get_vocab()  # Stage I adds the EAST tokens
    assert tokenizer.eos_token == "<|eot_id|>"
    text = "Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text


def test_demo_pipeline_at_smoke_size(tmp_path):
    command = [
        sys.executable, "-m", "training.demo", "--workdir", str(tmp_path / "work"),
        "--output", str(tmp_path / "model"), "--max-pairs", "200", "--stage1-steps", "12",
        "--stage2-steps", "6", "--eval-every", "6", "--eval-limit", "3", "--vocab-size", "900",
        "--hidden-size", "32", "--layers", "1", "--heads", "2", "--intermediate-size", "64",
        "--realign", "--steps", "data", "base", "stage1", "stage2", "merge", "card",
    ]  # fmt: skip
    # (east-eval, the "eval" step, is tested on its own in tests/east_agent/test_evaluation.py)
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    model = tmp_path / "model"
    for name in ("model.safetensors", "tokenizer.json", "chat_template.jinja", "README.md",
                 "alignments/simt-de-en.links.gz"):  # fmt: skip
        assert (model / name).exists(), name
    card = (model / "README.md").read_text()
    assert "Smoke-test build" in card and "python -m training.demo" in card
    timings = json.loads((tmp_path / "work" / "timings.json").read_text())
    assert {"data", "base", "stage1", "stage2", "merge"} <= set(timings)
    from east_agent.model import load_east_checkpoint

    load_east_checkpoint(model)  # the merged demo model is an EAST checkpoint


def test_demo_evaluations_are_valid_grids(tmp_path):
    """Every grid of the `eval` step loads and names runs its config has; the beam grids
    decode EAST with 5 beams, the others greedily."""
    from east_agent.evaluation import load_eval_config
    from training.demo import EVALUATIONS

    assert {"eval", "eval-val", "eval-beam5", "eval-val-beam5"} <= set(EVALUATIONS)
    for folder, evaluation in EVALUATIONS.items():
        config = load_eval_config(
            evaluation.config,
            num_beams=evaluation.num_beams,
            model_path=str(SHIPPED),
            output=tmp_path / folder,
            testset=evaluation.testset,
        )
        runs = {run.name: run for run in config.runs()}
        assert set(evaluation.runs or runs) <= set(runs), folder
        east = [runs[name] for name in evaluation.runs or runs if runs[name].agent == "east"]
        assert east, folder
        beams = {run.flags.get("num_beams", 1) for run in east}
        assert beams == {5 if folder.endswith("beam5") else 1}, folder
        expected = "multi30k-val.de-en" if "-val" in folder else config.testset
        assert config.testset == expected


def test_stage_two_keeps_its_recipe_seed_unless_told(tmp_path, monkeypatch):
    """`--seed` seeds the data, the base model and Stage I; Stage II's seed is its recipe's
    (the one chosen on val) unless `--stage2-seed` says otherwise."""
    import training.demo as demo
    from training.config import load_config

    def seeds(*flags):
        captured = {}

        def record(args, timings):  # stands in for the card step: sees the parsed args
            for stage in ("stage1", "stage2"):
                path = demo.CONFIGS / f"demo_{stage}.yaml"
                captured[stage] = load_config(path, demo.recipe_overrides(args, stage)).train[
                    "seed"
                ]

        monkeypatch.setattr(demo, "write_card", record)
        demo.main(["--workdir", str(tmp_path), "--steps", "card", *flags])
        return captured

    assert seeds() == {"stage1": 0, "stage2": 2}
    assert seeds("--seed", "3") == {"stage1": 3, "stage2": 2}
    assert seeds("--seed", "3", "--stage2-seed", "7") == {"stage1": 3, "stage2": 7}


def test_shipped_demo_model_is_small_and_loads_as_east():
    from east_agent.model import east_token_ids, load_east_checkpoint

    assert (SHIPPED / "model.safetensors").stat().st_size <= 30 * 2**20
    model, tokenizer = load_east_checkpoint(SHIPPED)
    assert east_token_ids(tokenizer).end_of_write == len(tokenizer) - 1
    card = (SHIPPED / "README.md").read_text()
    assert "python -m training.demo" in card and "Smoke-test" not in card
    for name in ("curves.png", "results.csv", "alignments/simt-de-en.links.gz"):
        assert (SHIPPED / name).exists(), name


def test_shipped_results_meet_the_quality_bar():
    """What the README claims of the shipped model's 1,000-sentence evaluation."""
    import csv

    with open(SHIPPED / "results.csv") as handle:
        rows = {(row["system"], row["setting"]): row for row in csv.DictReader(handle)}
    assert float(rows["offline", "k100"]["BLEU"]) >= 30
    levels = ("low", "low-medium", "medium", "medium-high", "high")
    east = [rows["east", level] for level in levels]
    al = [float(row["AL"]) for row in east]
    assert al == sorted(set(al))  # strictly rising
    bleu = [float(row["BLEU"]) for row in east]
    assert bleu[0] < bleu[-1]
    # With 5 beams (the paper's decoding) both rise at every level, as the README says.
    with open(SHIPPED / "results-beam5.csv") as handle:
        beam = {row["setting"]: row for row in csv.DictReader(handle) if row["system"] == "east"}
    for metric in ("AL", "BLEU"):
        values = [float(beam[level][metric]) for level in levels]
        assert values == sorted(set(values)), metric


def test_shipped_model_translates_stage_two_direction():
    """Stage II's French→English, as the README reports it (Stage I alone scores ~0)."""
    import csv

    with open(SHIPPED / "results-fr-en.csv") as handle:
        rows = list(csv.DictReader(handle))
    east = [float(row["BLEU"]) for row in rows if row["system"] == "east"]
    assert len(east) == 5 and min(east) >= 10
    with open(SHIPPED / "results-val.csv") as handle:
        val = [float(row["BLEU"]) for row in csv.DictReader(handle) if row["system"] == "east"]
    assert val == sorted(val)  # the curve Stage II was chosen by
