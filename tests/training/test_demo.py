"""The demo model's pipeline (tokenizer and base model from scratch, both stages, merge,
evaluation, model card) at smoke-test size, and the shipped demo model itself."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from east_agent.decoding.prompt import render_user_turn, simt_instruction
from training.base_model import build_base_model
from training.base_model import main as base_model_main

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
    # (east-eval, the "eval" step, is tested on its own in tests/east_agent/evaluation/test_grid.py)
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
    from east_agent.lm.checkpoint import load_east_checkpoint

    load_east_checkpoint(model)  # the merged demo model is an EAST checkpoint


def test_demo_evaluations_are_valid_grids(tmp_path):
    """Every grid of the `eval` step loads and names runs its config has; the beam grids
    decode EAST with 5 beams, the others greedily."""
    from east_agent.evaluation.config import load_eval_config
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
    (the one chosen on val) unless `--stage2-seed` says otherwise. Both stages cache their
    tokenized samples in the workdir."""
    import training.demo as demo

    def seeds(*flags):
        captured = {}

        def record(args, timings):  # stands in for the card step: sees the parsed args
            for stage in ("stage1", "stage2"):
                recipe = demo.stage_recipe(args, stage)
                captured[stage] = recipe.train["seed"]
                assert recipe.data.cache_dir == str(tmp_path / "tokenized")

        monkeypatch.setattr(demo, "write_card", record)
        monkeypatch.setattr(demo, "check_card_sources", lambda args: None)
        demo.main(["--workdir", str(tmp_path), "--steps", "card", *flags])
        return captured

    assert seeds() == {"stage1": 0, "stage2": 2}
    assert seeds("--seed", "3") == {"stage1": 3, "stage2": 2}
    assert seeds("--seed", "3", "--stage2-seed", "7") == {"stage1": 3, "stage2": 7}


def test_a_missing_corpus_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        base_model_main(["--corpus", str(tmp_path / "none.txt"), "--output", str(tmp_path / "b")])
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err
        == f"python -m training.base_model: no such corpus file: {tmp_path / 'none.txt'}\n"
    )
    assert not (tmp_path / "b").exists()


def test_an_output_that_is_not_a_base_model_is_refused_before_any_work(tmp_path, capsys):
    """Before: the folder (and the user's files in it) was replaced by the model."""
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    corpus = [str(MULTI30K / "val.de.gz")]
    for flags in (
        ["--output", str(tmp_path / "keep")],
        ["--output", str(tmp_path / "b"), "--hidden-size", "30", "--heads", "4"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            base_model_main(["--corpus", *corpus, *flags])
        assert exit_info.value.code == 2
    error = capsys.readouterr().err.splitlines()
    assert error[0].startswith(
        f"python -m training.base_model: {tmp_path / 'keep'} is a folder, not a model"
    )
    assert (
        error[1] == "python -m training.base_model: --hidden-size 30 is not a multiple of --heads 4"
    )
    assert os.listdir(tmp_path / "keep") == ["notes.txt"] and not (tmp_path / "b").exists()


@pytest.mark.parametrize("output", ["work", ".", "mine"])
def test_a_card_output_holding_the_workdir_or_not_a_card_is_refused(tmp_path, output):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "work").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "training.demo", "--steps", "card", "--workdir", "work",
         "--output", output],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    message = "holds --workdir" if output != "mine" else "is a folder, not a model card folder"
    assert message in result.stderr and "Traceback" not in result.stderr
    assert sorted(os.listdir(tmp_path)) == ["mine", "work"]
    assert os.listdir(tmp_path / "mine") == ["notes.txt"] and not os.listdir(tmp_path / "work")


def test_a_corpus_byte_that_is_not_utf8_is_named_by_file_and_line(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes("ein Hund\nein Café\n".encode("latin-1"))
    with pytest.raises(SystemExit) as exit_info:
        base_model_main(["--corpus", str(corpus), "--output", str(tmp_path / "b")])
    assert exit_info.value.code == 2
    assert f"{corpus}: line 2" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "flags, reused",
    [([], True), (["--realign"], False), (["--max-pairs", "200"], False)],
    ids=["shipped", "realign", "max-pairs"],
)
def test_the_data_step_reuses_the_shipped_alignments_whatever_the_output(
    tmp_path, monkeypatch, flags, reused
):
    """`--output DIR` keeps the shipped model and still builds its data from its links
    (eflomal would align again with another result)."""
    import training.build_data
    from training import demo

    given = {}

    class Report:
        def lines(self):
            return ["(not built)"]

    def build(pairs, source, target, output, alignments=None, **settings):
        given[output.name] = alignments
        output.write_text("built")
        return Report()

    monkeypatch.setattr(training.build_data, "build", build)
    argv = ["--workdir", str(tmp_path / "work"), "--output", str(tmp_path / "model"), *flags]
    demo.build_data(demo.parse_args(argv))
    expected = {
        f"{name}.jsonl.gz": SHIPPED / "alignments" / f"{name}.links.gz" if reused else None
        for name in demo.ALIGNED
    }
    assert given == expected

    # the same command again (after a kill in Stage I, say) keeps the data: before, eflomal
    # aligned again, and the resumed stage was refused for its other data
    given.clear()
    demo.build_data(demo.parse_args(argv))
    assert given == {}
    (tmp_path / "work" / "data" / "simt-fr-en.jsonl.gz").unlink()  # one is missing: again
    demo.build_data(demo.parse_args(argv))
    assert given == expected
    given.clear()
    demo.build_data(demo.parse_args([*argv, "--seed", "1"]))  # other flags: built again
    assert given == expected


def test_the_model_card_takes_the_recipes_from_the_demo():
    """No import circle: training.demo imports training.demo_card, never the reverse."""
    tree = ast.parse((REPO / "training" / "demo_card.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "training.demo" not in imported


def test_shipped_demo_model_is_small_and_loads_as_east():
    from east_agent.lm.checkpoint import east_token_ids, load_east_checkpoint

    assert (SHIPPED / "model.safetensors").stat().st_size <= 30 * 2**20
    model, tokenizer = load_east_checkpoint(SHIPPED)
    assert east_token_ids(tokenizer).end_of_write == len(tokenizer) - 1
    card = (SHIPPED / "README.md").read_text()
    assert "python -m training.demo" in card and "Smoke-test" not in card
    for name in ("curves.png", "results.csv", "alignments/simt-de-en.links.gz"):
        assert (SHIPPED / name).exists(), name


def test_shipped_model_translates_stage_two_direction(tmp_path):
    """Stage II's French→English, decoded for real by the demo's fr-en grid on its first ten
    test sentences (Stage I alone scores ~0 BLEU; the 1,000-sentence numbers are in
    results-fr-en.csv)."""
    from east_agent.evaluation.config import load_eval_config
    from east_agent.evaluation.grid import run_grid
    from training.demo import EVALUATIONS

    evaluation = EVALUATIONS["eval-fr-en"]
    config = load_eval_config(
        evaluation.config, model_path=str(SHIPPED), output=tmp_path, testset=evaluation.testset
    )
    rows = run_grid(config, only=["east-low", "east-high"], limit=10)
    scores = {row["setting"]: (float(row["BLEU"]), float(row["AL"])) for row in rows}
    (low_bleu, low_al), (high_bleu, high_al) = scores["low"], scores["high"]
    assert min(low_bleu, high_bleu) >= 10  # measured: 16.6 and 20.3
    assert 0 < low_al < high_al


@pytest.mark.parametrize(
    "flag", ["--stage1-steps", "--stage2-steps", "--eval-every", "--max-pairs"]
)
def test_a_count_of_zero_is_refused_not_ignored(flag, capsys):
    """Before: `--stage1-steps 0` fell back to the recipe's 1,000 steps, silently."""
    from training.demo import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args([flag, "0"])
    assert exit_info.value.code == 2
    assert f"argument {flag}: takes a whole number of at least 1" in capsys.readouterr().err


SIZE_FLAGS = [["--heads", "0"], ["--hidden-size", "-8"], ["--vocab-size", "0"], ["--layers", "0"],
              ["--intermediate-size", "0"]]  # fmt: skip


@pytest.mark.parametrize("flags", SIZE_FLAGS)
def test_a_size_below_one_is_refused_at_parsing(flags, tmp_path, capsys):
    """Before: `--heads 0` was a ZeroDivisionError, `--hidden-size -8` a RuntimeError after
    the tokenizer was trained, `--vocab-size 0` and `--layers 0` were built."""
    from training.demo import parse_args

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("ein Hund\n")
    for parse in (parse_args, base_model_main):
        with pytest.raises(SystemExit) as exit_info:
            parse([*flags, "--corpus", str(corpus), "--output", str(tmp_path / "b")]
                  if parse is base_model_main else flags)  # fmt: skip
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert f"argument {flags[0]}: takes a whole number of at least 1" in error
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "heads, message",
    [
        ("4", "--hidden-size 30 is not a multiple of --heads 4"),
        # before: transformers refused it once the tokenizer was trained (the data built)
        ("2", "--hidden-size 30 / --heads 2 makes heads of size 15, odd: rotary position "
              "embeddings need an even size"),
    ],
)  # fmt: skip
def test_heads_not_splitting_the_hidden_size_are_refused_before_the_data_step(
    tmp_path, capsys, heads, message
):
    """Before: the demo built its data first, then failed in the base step."""
    from training.demo import main as demo_main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("ein Hund\n")
    for command, main, flags in (
        ("training.demo", demo_main,
         ["--workdir", str(tmp_path / "work"), "--max-pairs", "1", "--steps", "data", "base"]),
        ("training.base_model", base_model_main,
         ["--corpus", str(corpus), "--output", str(tmp_path / "base")]),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(["--hidden-size", "30", "--heads", heads, *flags])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == f"python -m {command}: {message}\n"
    assert not (tmp_path / "work").exists() and not (tmp_path / "base").exists()


@pytest.mark.parametrize(
    "given, sizes",
    [
        (["--stage2-seed", "5", "--layers", "2"], " --layers 2"),
        (["--seed", "3", "--hidden-size", "64", "--heads", "2", "--max-pairs", "200"],
         " --hidden-size 64 --heads 2"),
    ],
)  # fmt: skip
def test_the_card_command_rebuilds_the_model_it_describes(tmp_path, given, sizes):
    """Before: `--stage2-seed 5 --layers 2` made a card saying `python -m training.demo
    --seed 0`, which builds another model, and no warning."""
    from transformers import LlamaConfig

    from training.demo import BUILD_FLAGS, build_flags, parse_args, stage_recipe
    from training.demo_card import model_card

    args = parse_args([*given, "--workdir", str(tmp_path)])
    LlamaConfig(num_hidden_layers=args.layers).save_pretrained(tmp_path / "merged")
    recipes = {stage: stage_recipe(args, stage) for stage in ("stage1", "stage2")}
    card = model_card(args, {}, recipes, build_flags(args), None).splitlines()
    command = next(line.split() for line in card if "python -m training.demo --" in line)
    rebuilt = parse_args([*command[3:], "--workdir", str(tmp_path)])
    for name in ("seed", *BUILD_FLAGS):
        assert getattr(rebuilt, name) == getattr(args, name), name
    assert "not the shipped model" in card[2]
    assert any(line.endswith(f"--output outputs/demo/base{sizes}") for line in card)


@pytest.mark.parametrize(
    ("given", "shipped", "said"),
    [
        ([], True, "--alignments models/east-demo/alignments/simt-de-en.links.gz --seed 0"),
        ([], True, "so\nthe rebuilt data are identical"),
        (["--max-pairs", "300"], False, "the first 300 pairs of each file"),
        (["--max-pairs", "300"], False, "(`--max-pairs` always aligns)"),
        (["--realign"], False, "it rebuilds these data\nwhere this folder is"),
    ],
)
def test_the_card_says_how_its_data_were_aligned(tmp_path, given, shipped, said):
    """Before: every card said the rebuilt data were identical and named the shipped
    links, a `--max-pairs` build's too, and linked curves.png though no eval drew it."""
    from transformers import LlamaConfig

    from training.demo import build_flags, parse_args, stage_recipe
    from training.demo_card import model_card

    args = parse_args([*given, "--workdir", str(tmp_path)])
    LlamaConfig().save_pretrained(tmp_path / "merged")
    recipes = {stage: stage_recipe(args, stage) for stage in ("stage1", "stage2")}
    links = Path("models/east-demo/alignments/simt-de-en.links.gz") if shipped else None
    card = model_card(args, {}, recipes, build_flags(args), links)
    assert said in card
    assert ("identical" in card) is shipped and "curves.png" not in card


def test_the_card_says_a_resumed_stages_loss_is_of_the_steps_after_the_resume(tmp_path):
    """The Trainer's train_loss after a resume averages only the steps it ran: the card
    called it the final train loss of the stage."""
    import json

    from transformers import LlamaConfig

    from training.demo import build_flags, parse_args, stage_recipe
    from training.demo_card import model_card

    args = parse_args(["--workdir", str(tmp_path)])
    LlamaConfig().save_pretrained(tmp_path / "merged")
    for stage, resumed in (("stage1", 4), ("stage2", 0)):
        (tmp_path / stage).mkdir()
        losses = {"train_loss": 1.5}
        summary = {"global_step": 8, "train_metrics": losses, "resumed_at_step": resumed}
        (tmp_path / stage / "train_summary.json").write_text(json.dumps(summary))
    recipes = {stage: stage_recipe(args, stage) for stage in ("stage1", "stage2")}
    card = model_card(args, {}, recipes, build_flags(args), None)
    assert "8 steps, final train loss 1.500 (the mean of the steps after step 4, where it" in card
    assert "8 steps, final train loss 1.500;" in card  # stage 2, never resumed


@pytest.mark.parametrize("command", ["base_model", "demo"])
def test_an_output_inside_a_file_is_refused_before_any_work(tmp_path, capsys, monkeypatch, command):
    """Before: found when the model (base_model) or the card (demo) was written, after hours."""
    from training import base_model, demo

    monkeypatch.setattr(base_model, "train_tokenizer", lambda *a: pytest.fail("work began"))
    monkeypatch.setattr(demo, "build_data", lambda *a: pytest.fail("work began"))
    (tmp_path / "file").write_text("mine")
    output = tmp_path / "file" / "out"
    if command == "base_model":
        argv = ["--corpus", str(MULTI30K / "val.de.gz"), "--output", str(output)]
        run = base_model_main
    else:
        argv = ["--workdir", str(tmp_path / "work"), "--output", str(output)]
        argv += ["--steps", "data", "card"]
        run = demo.main
    with pytest.raises(SystemExit) as exit_info:
        run(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"python -m training.{command}: --output {output}: inside a file "
        f"({tmp_path / 'file'} is a file, not a folder)\n"
    )
    assert not (tmp_path / "work").exists()


def test_a_workdir_with_yaml_characters_reaches_the_recipes_whole(tmp_path):
    """Before: a `,` split a data file in two, ` #` cut the path, `: ` or `[` broke the
    override; a character beyond the BMP, written as two JSON escapes, came back as two
    lone surrogates."""
    from training.demo import parse_args, stage_recipe

    work = tmp_path / 'a,b #c: [d] "e" \\f \U0001f600'

    args = parse_args(["--workdir", str(work)])
    stage2 = stage_recipe(args, "stage2")
    data = work / "data"
    assert stage2.data.files == [
        str(data / f"{name}.jsonl.gz")
        for name in ("simt-fr-en", "simt-de-en", "offline-de-en", "offline-fr-en")
    ]
    assert stage2.model.name_or_path == str(work / "stage1" / "model")
    assert stage2.output_dir == work / "stage2"
    stage1 = stage_recipe(args, "stage1")
    assert stage1.data.eval_files == [str(data / "simt-de-en-val.jsonl.gz")]
    assert stage1.data.cache_dir == str(work / "tokenized")


def test_the_merge_step_keeps_the_merged_model_when_it_cannot_merge(tmp_path, capsys):
    """Before: `--steps merge` deleted merged/ before finding that stage2/model is missing."""
    from training.demo import main as demo_main

    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    (tmp_path / "stage1" / "model").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        demo_main(["--workdir", str(tmp_path), "--steps", "merge"])
    assert exit_info.value.code == 2
    assert (
        f"--adapter-path {tmp_path / 'stage2' / 'model'}: no such folder" in capsys.readouterr().err
    )
    assert os.listdir(merged) == ["config.json"]


def test_a_steps_time_is_the_sum_of_its_tries_since_it_started_fresh(tmp_path, monkeypatch, capsys):
    """Before: the last try's alone: a rerun that found the data built recorded 0.0 s for
    the data step, and a resumed stage only its last part."""
    import training.demo as demo

    outcomes = {"data": [demo.FRESH, demo.SKIPPED, demo.FRESH], "stage1": [demo.RESUMED] * 3}
    clock = iter(range(0, 1000, 5))  # each step takes 5 s
    monkeypatch.setattr(demo.time, "time", lambda: float(next(clock)))
    monkeypatch.setattr(demo, "step_outcome", lambda step, args: outcomes[step].pop(0))
    monkeypatch.setattr(demo, "build_data", lambda args: None)
    monkeypatch.setattr(demo, "train_stage", lambda args, stage: None)
    timing_file = tmp_path / "timings.json"
    seen = []
    for _ in range(3):
        demo.main(["--workdir", str(tmp_path), "--steps", "data", "stage1"])
        timings = json.loads(timing_file.read_text())
        seen.append((timings["data"], timings["stage1"]))
    assert seen == [(5.0, 5.0), (5.0, 10.0), (5.0, 15.0)]

    # a failed try counts (before: lost), and a fresh start drops an earlier run's time
    def failed(args, stage):
        raise RuntimeError("a stage that failed after 5 s")

    monkeypatch.setattr(demo, "train_stage", failed)
    outcomes["stage1"] = [demo.RESUMED, demo.FRESH]
    for _ in range(2):
        with pytest.raises(RuntimeError):
            demo.main(["--workdir", str(tmp_path), "--steps", "stage1"])
        seen.append(json.loads(timing_file.read_text())["stage1"])
    assert seen[3:] == [20.0, 5.0]
    timing_file.write_text('{"data": 5.0,')
    with pytest.raises(SystemExit) as ended:
        demo.main(["--workdir", str(tmp_path), "--steps", "data"])
    assert ended.value.code == 2  # before: a JSONDecodeError naming no file
    assert str(timing_file) in capsys.readouterr().err


def test_the_eval_step_starts_fresh_into_grids_holding_no_run(tmp_path, monkeypatch):
    """Its time is summed over tries only when a grid went on from an earlier one's runs."""
    import argparse

    import east_agent.evaluation.grid as grid
    import training.demo as demo

    monkeypatch.setattr(grid, "run_grid", lambda *args, **kwargs: [])
    args = argparse.Namespace(workdir=tmp_path, device="cpu", eval_limit=2)
    assert demo.step_outcome("eval", args) == demo.FRESH
    (tmp_path / "eval-val" / "runs" / "east-low").mkdir(parents=True)
    (tmp_path / "eval-val" / "runs" / "east-low" / "instances.log").write_text("")
    assert demo.step_outcome("eval", args) == demo.RESUMED


@pytest.mark.parametrize(
    ("given", "made", "message"),
    [
        ([], [], "merged holds no merged model: run the merge step first"),
        ([], ["merged"], "simt-de-en.jsonl.gz.links.gz is missing"),
        (["--max-pairs", "300"], ["merged", "links"], "--max-pairs 300 would replace the sh"),
        (["--seed", "3"], ["merged", "links"], "--seed 3 would replace the shipped model"),
    ],
)
def test_the_card_step_checks_what_it_copies_and_keeps_the_shipped_model(
    tmp_path, capsys, given, made, message
):
    """Before: a traceback of transformers' for a workdir without a merged model; a smoke
    build replaced the shipped model and its alignments, so that later faithful rebuilds
    of the data failed on 300-line links."""
    import training.demo as demo

    work = tmp_path / "work"
    if "merged" in made:
        (work / "merged").mkdir(parents=True)
        (work / "merged" / "config.json").write_text("{}")
    if "links" in made:
        (work / "data").mkdir(parents=True)
        for name in demo.ALIGNED:
            (work / "data" / f"{name}.jsonl.gz.links.gz").write_bytes(b"")
    shipped = demo.REPOSITORY / demo.SHIPPED_OUTPUT
    before = sorted(path.name for path in shipped.iterdir())
    with pytest.raises(SystemExit) as ended:
        demo.main([*given, "--workdir", str(work), "--steps", "card"])
    assert ended.value.code == 2
    assert message in capsys.readouterr().err
    assert sorted(path.name for path in shipped.iterdir()) == before
