"""Both SFT stages, LoRA merging and kill-and-resume on a tiny Llama with the Llama-3 tokenizer."""

import base64
import copy
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from commands import python_with_ctrl_c
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from east_agent.lm.checkpoint import east_token_ids, load_east_checkpoint
from tiny_east import (
    LEXICON,
    build_chat_llama3_tokenizer,
    synthetic_record,
    synthetic_sentence,
    tiny_llama_config,
)
from training.config import parse_config
from training.merge_lora import MergeMismatchError, check_merge, merge
from training.resume import (
    check_checkpoints,
    finished_step,
    last_complete_checkpoint,
    record_recipe,
    resolve_resume,
    run_length,
    schedule_follows_length,
    trained_recipe,
)
from training.sft import (
    LAUNCHED,
    launched_alone,
    load_model,
    load_tokenizer,
    main,
    non_finite_weights,
    resize_embeddings_with_mean,
    run,
    wrap_with_lora,
)

REPO = Path(__file__).resolve().parents[2]
# what a launcher (torchrun, deepspeed, accelerate, mpirun) sets: none, as `python -m` runs
LAUNCHER_ENV = (*LAUNCHED, "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("sft")


@pytest.fixture(scope="module")
def base_checkpoint(workspace):
    """A chat model before EAST: Llama-3 tokenizer and chat template, no EAST tokens."""
    tokenizer = build_chat_llama3_tokenizer()
    torch.manual_seed(0)
    path = workspace / "base"
    LlamaForCausalLM(tiny_llama_config(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data_files(workspace):
    rng = random.Random(0)
    simt = [synthetic_record(rng, rng.choice(["low", "medium", "high"])) for _ in range(96)]
    (workspace / "simt.json").write_text(json.dumps(simt))
    with open(workspace / "offline.jsonl", "w") as handle:
        for _ in range(32):
            words, _ = synthetic_sentence(rng)
            target = " ".join(LEXICON[word] for word in words)
            record = {
                "src_lang": "de",
                "tgt_lang": "en",
                "source": " ".join(words),
                "target": target,
            }
            handle.write(json.dumps(record) + "\n")
    return workspace / "simt.json", workspace / "offline.jsonl"


def recipe(stage, model, files, output_dir, **train):
    tree = {
        "stage": stage,
        "model": {"name_or_path": str(model), "torch_dtype": "float32"},
        "data": {
            "files": [str(path) for path in files],
            "cutoff_len": 256,
            "cache_dir": str(Path(output_dir).parent / "tokenized"),
        },
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "train": {
            "output_dir": str(output_dir),
            "learning_rate": 3e-3,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.1,
            "per_device_train_batch_size": 8,
            "logging_steps": 5,
            "save_steps": 100,
            "report_to": "none",
            "use_cpu": True,
            "seed": 0,
            **train,
        },
    }
    return tree


@pytest.fixture(scope="module")
def stage1(base_checkpoint, data_files, workspace):
    tree = recipe("full", base_checkpoint, data_files[:1], workspace / "stage1", max_steps=30)
    return run(parse_config(tree))


@pytest.fixture(scope="module")
def stage2(stage1, data_files, workspace):
    tree = recipe("lora", stage1, data_files, workspace / "stage2", max_steps=10)
    tree["train"]["learning_rate"] = 1e-2
    return run(parse_config(tree))


def logged_losses(output_dir):
    summary = json.loads((Path(output_dir) / "train_summary.json").read_text())
    state = json.loads(
        (last_complete_checkpoint(Path(output_dir)) / "trainer_state.json").read_text()
    )
    return summary, [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_new_embedding_rows_start_at_the_mean(base_checkpoint):
    model = AutoModelForCausalLM.from_pretrained(base_checkpoint)
    old = model.get_input_embeddings().weight.detach().clone()
    assert resize_embeddings_with_mean(model, old.shape[0] + 2) == 2
    for matrix in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
        assert matrix.shape[0] == old.shape[0] + 2
        torch.testing.assert_close(matrix[-2:], matrix[:-2].mean(0, keepdim=True).expand(2, -1))
    torch.testing.assert_close(model.get_input_embeddings().weight[:-2], old)


def test_a_tokenizer_longer_than_the_embeddings_grows_them_with_no_new_token(base_checkpoint):
    """EAST tokens already in the tokenizer (none added), the embeddings shorter: grown."""
    model = AutoModelForCausalLM.from_pretrained(base_checkpoint)
    rows = model.get_input_embeddings().weight.shape[0]
    assert resize_embeddings_with_mean(model, rows + 2, new_tokens=0) == 2
    assert model.get_input_embeddings().weight.shape[0] == rows + 2


def test_new_ids_in_spare_rows_start_at_the_mean(base_checkpoint):
    """A vocabulary padded past the tokenizer: the EAST ids fall in spare rows, which were
    left untrained (and the log said 0 new rows)."""
    model = AutoModelForCausalLM.from_pretrained(base_checkpoint)
    rows = model.get_input_embeddings().weight.shape[0]
    tokenizer_size = rows - 6  # six spare rows; the last two of the tokenizer are new
    assert resize_embeddings_with_mean(model, tokenizer_size, new_tokens=2) == 2
    for matrix in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
        assert matrix.shape[0] == rows
        mean = matrix[: tokenizer_size - 2].mean(0, keepdim=True).expand(2, -1)
        torch.testing.assert_close(matrix[tokenizer_size - 2 : tokenizer_size], mean)


def test_stage1_adds_east_tokens_and_learns(stage1):
    tokenizer = AutoTokenizer.from_pretrained(stage1)
    ids = east_token_ids(tokenizer)
    assert (ids.end_of_read, ids.end_of_write) == (128256, 128257)
    assert (stage1 / "model.safetensors").exists() and (stage1 / "chat_template.jinja").exists()
    summary, losses = logged_losses(stage1.parent)
    assert summary["global_step"] == 30
    assert summary["data"]["samples"] == 96
    assert losses[-1] < 0.6 * losses[0], losses


def test_stage2_trains_only_the_adapter(stage1, stage2, data_files, workspace):
    with safe_open(stage2 / "adapter_model.safetensors", "pt") as tensors:
        names = list(tensors.keys())
    assert names and all("lora_A" in name or "lora_B" in name for name in names)
    # The wrapped model as Stage II builds it: nothing but LoRA weights take gradients.
    config = parse_config(recipe("lora", stage1, data_files, workspace / "probe"))
    model = load_model(config, load_tokenizer(config))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    summary, losses = logged_losses(stage2.parent)
    assert summary["data"]["records"] == 128  # SiMT and offline records mixed
    assert losses[-1] < losses[0]


def test_stage2_refuses_a_base_without_east_tokens(base_checkpoint, data_files, workspace):
    config = parse_config(recipe("lora", base_checkpoint, data_files, workspace / "no"))
    with pytest.raises(ValueError, match="not an EAST checkpoint"):
        load_model(config, load_tokenizer(config))


@pytest.fixture(scope="module")
def merged(stage1, stage2, workspace):
    output = workspace / "merged"
    deviation = merge(stage1, stage2, output)
    return output, deviation


def test_merge_matches_base_plus_adapter(merged, stage1, stage2):
    output, deviation = merged
    assert deviation < 1e-4
    from peft import PeftModel

    probe = torch.tensor([[128000, 128006, 882, 128007, 271, 35, 648, 128256]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(stage1)
        expected = PeftModel.from_pretrained(base, stage2)(probe).logits
        actual = AutoModelForCausalLM.from_pretrained(output)(probe).logits
        plain = AutoModelForCausalLM.from_pretrained(stage1)(probe).logits
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(actual, plain, atol=1e-3)  # the adapter did change the model


def test_merge_mismatch_fails_loudly():
    expected = torch.randn(1, 4, 10)
    with pytest.raises(MergeMismatchError, match="nothing was written"):
        check_merge(expected, expected + 0.1, torch.float32)


def test_merge_refuses_an_existing_output(merged, stage1, stage2):
    output, _ = merged
    result = subprocess.run(
        [sys.executable, "-m", "training.merge_lora", "--model-path", str(stage1)]
        + ["--adapter-path", str(stage2), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "exists; choose a new output folder" in result.stderr


def test_merge_refuses_another_base_than_the_adapters(base_checkpoint, stage2, tmp_path):
    """Before: merged into any base and "verified" (base + adapter equals the merge
    whatever the base)."""
    for base, adapter, message in (
        (
            base_checkpoint,
            stage2,
            f"--adapter-path {stage2} was trained on .*stage1.*another model",
        ),
        (base_checkpoint, tmp_path / "none", f"--adapter-path {tmp_path / 'none'}: no such folder"),
        (tmp_path / "none", stage2, f"--model-path {tmp_path / 'none'}: no such folder"),
    ):
        with pytest.raises(ValueError, match=message):
            merge(base, adapter, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize(
    ("adapter_config", "error"),
    [
        ({}, ": cannot be loaded (KeyError: 'peft_type'"),
        # refused before loading (before: peft's state-dict error, said in one line)
        ({"r": 2}, ".lora_A.weight is of rank 8, but adapter_config.json says r: 2"),
    ],
)
def test_an_adapter_folder_that_does_not_load_is_one_line(
    stage1, stage2, tmp_path, adapter_config, error
):
    """Before: a traceback (exit 1) for peft's KeyError (a config lacking a key) and
    RuntimeError (a config not matching its weights: now refused before loading)."""
    adapter = tmp_path / "adapter"
    shutil.copytree(stage2, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    if adapter_config:  # a setting changed: the config no longer matches the weights
        config.update(adapter_config)
    else:  # every key gone
        config = {}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "training.merge_lora", "--model-path", str(stage1)]
        + ["--adapter-path", str(adapter), "--output", str(tmp_path / "merged")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"--adapter-path {adapter}" in result.stderr and error in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "merged").exists()


def test_an_adapter_is_merged_only_into_its_stage1_model_as_it_was(
    stage1, stage2, tmp_path, capsys
):
    """Stage II records the model it trained on by content (recipe.json beside the
    adapter): a copy of it is taken, the same folder trained again since is not, by
    merge_lora, the agents and east-package-system alike (before: merged and "verified"
    against itself, exit 0)."""
    from safetensors.torch import load_file, save_file

    from east_agent.agent import EastAgent
    from east_agent.lm.checkpoint import CheckpointError, check_adapter_base
    from east_agent.simuleval_glue import system_dir
    from east_agent.simuleval_glue.system_dir import agent_parser

    copied = tmp_path / "copied"
    shutil.copytree(stage1, copied)
    check_adapter_base(copied, stage2)  # the same model elsewhere
    again = tmp_path / "trained-again"
    shutil.copytree(stage1, again)
    weights = load_file(again / "model.safetensors")
    shifted = {name: tensor + 0.01 for name, tensor in weights.items()}
    save_file(shifted, again / "model.safetensors", metadata={"format": "pt"})
    said = (
        f"--adapter-path {stage2} was trained on {stage1.resolve()} as it was then "
        f"({stage2.parent / 'recipe.json'} holds its fingerprint), and --model-path {again} "
        "is another model"
    )
    with pytest.raises(ValueError, match=re.escape(said)):
        merge(again, stage2, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    args = agent_parser("east").parse_args(
        [
            "--model-path",
            str(again),
            "--adapter-path",
            str(stage2),
            "--src-lang",
            "de",
            "--tgt-lang",
            "en",
        ]
    )
    args.device = "cpu"  # SimulEval's flag
    with pytest.raises(CheckpointError, match=re.escape(said)):
        EastAgent.checked_config(args)
    (tmp_path / "linked").symlink_to(stage2)  # a linked adapter: its real folder's record
    with pytest.raises(CheckpointError, match="as it was then"):
        check_adapter_base(again, tmp_path / "linked")
    # no record beside a copy: the agents take it; a merge goes by the folder its
    # adapter_config.json names
    copied_adapter = tmp_path / "copy" / "adapter"
    shutil.copytree(stage2, copied_adapter)
    check_adapter_base(again, copied_adapter)
    check_adapter_base(stage1, copied_adapter, by_named_folder=True)
    with pytest.raises(CheckpointError, match="is another model: give the model"):
        check_adapter_base(again, copied_adapter, by_named_folder=True)
    submission = tmp_path / "submission"
    flags = [f"adapter_path={stage2}", "src_lang=de", "tgt_lang=en"]
    with pytest.raises(SystemExit):
        system_dir.main([str(submission), "--model-path", str(again), *flags])
    packaged = said.replace("--adapter-path", "adapter_path").replace(
        str(again), str(again.resolve())
    )
    assert packaged in capsys.readouterr().err and not submission.exists()


def test_merged_checkpoint_runs_in_simuleval(merged, tmp_path):
    output, _ = merged
    model, tokenizer = load_east_checkpoint(output)
    assert east_token_ids(tokenizer).end_of_read == 128256
    rng = random.Random(3)
    sentences = [synthetic_sentence(rng)[0] for _ in range(3)]
    (tmp_path / "src.txt").write_text("".join(" ".join(s) + "\n" for s in sentences))
    (tmp_path / "ref.txt").write_text(
        "".join(" ".join(LEXICON[w] for w in s) + "\n" for s in sentences)
    )
    result = subprocess.run(
        [str(Path(sys.executable).with_name("east-simuleval"))]
        + ["--agent", str(REPO / "east_agent" / "agent.py"), "--model-path", str(output)]
        + ["--src-lang", "de", "--tgt-lang", "en", "--latency", "medium"]
        + ["--source", str(tmp_path / "src.txt"), "--target", str(tmp_path / "ref.txt")]
        + ["--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((tmp_path / "out" / "instances.log").read_text().splitlines()) == 3
    assert "BLEU" in (tmp_path / "out" / "scores.tsv").read_text()


def test_partial_checkpoints_are_not_resumed_from(tmp_path):
    """No trainer state yet, or one cut short by the kill (the Trainer writes it in place)."""
    states = {4: "{}", 8: '{"global_step": 8}', 12: None, 16: "", 20: '{"global_step": 2'}
    for step, state in states.items():
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-8"


@pytest.mark.parametrize("setting", [True, "auto"])
def test_resume_true_means_the_last_complete_checkpoint(tmp_path, setting, caplog):
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    tree = recipe("full", "base", ["data.json"], tmp_path)
    config = parse_config({**tree, "resume_from_checkpoint": setting})
    with caplog.at_level("INFO"):
        assert resolve_resume(config) == str(tmp_path / "checkpoint-4")
    # said by the run that resumes, once (before: by each look, training.demo's too)
    assert "resuming from" not in caplog.text


class StopBeforeTraining(Exception):
    pass


def test_run_reads_the_data_as_the_recipe_says(base_checkpoint, data_files, workspace, monkeypatch):
    """The samples handed to the Trainer are build_samples' own: the same records, settings,
    shuffle and order, though the records are read before the model loads."""
    from training import sft
    from training.data import build_samples

    seen = {}
    tokenize = sft.tokenize_records

    def recording_tokenize(encoder, conversations, report, cache_dir, progress):
        seen["cache_dir"] = cache_dir
        return tokenize(encoder, conversations, report, cache_dir, progress)

    def build_trainer(config, training_args, model, tokenizer, samples, eval_samples=None):
        seen.update(model=model, tokenizer=tokenizer, samples=samples)
        raise StopBeforeTraining

    monkeypatch.setattr(sft, "tokenize_records", recording_tokenize)
    monkeypatch.setattr(sft, "build_trainer", build_trainer)
    tree = recipe("full", base_checkpoint, data_files, workspace / "settings")
    prompt = "You are a helpful assistant."
    tree["data"].update(skip_malformed=True, system_prompt=prompt, max_samples=50)
    with pytest.raises(StopBeforeTraining):
        run(parse_config(tree))
    assert seen["cache_dir"] == workspace / "tokenized"
    expected, _ = build_samples(
        seen["tokenizer"], [str(path) for path in data_files], cutoff_len=256,
        skip_malformed=True, max_samples=50, seed=0, progress=False, system_prompt=prompt,
        generation_eos=seen["model"].generation_config.eos_token_id,
    )  # fmt: skip
    assert len(seen["samples"]) == 50
    assert seen["samples"]["input_ids"] == expected["input_ids"]
    assert seen["samples"]["labels"] == expected["labels"]


def stub_loaders(monkeypatch) -> list[str]:
    """The tokenizer and model loaders replaced by notes of their calls (the list)."""
    loaded = []
    monkeypatch.setattr("training.sft.load_tokenizer", lambda *a: loaded.append("tokenizer"))
    monkeypatch.setattr("training.sft.load_model", lambda *a: loaded.append("model"))
    return loaded


def one_record_file(tmp_path):
    good = tmp_path / "good.jsonl"
    record = {"src_lang": "de", "tgt_lang": "en", "source": "ein Haus", "target": "a house"}
    good.write_text(json.dumps(record) + "\n")
    return good, record


def stub_model(tmp_path) -> Path:
    """A model folder that passes the checks before the data are read (its loaders stubbed)."""
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model" / "model.safetensors").write_text("")
    return tmp_path / "model"


def refused(tree: dict, tmp_path, capsys) -> str:
    """`sft` on the recipe `tree`, which must end with exit status 2: its stderr."""
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(tree))
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(recipe_path)])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("section", "fault", "message"),
    [
        ("files", "bad line", ": line 2: invalid JSON"),
        ("files", "missing", ": no such file"),
        ("eval_files", "bad line", ": line 2: invalid JSON"),
        ("eval_files", "missing", ": no such file"),
    ],
)
def test_bad_data_fails_before_the_model_loads(
    tmp_path, monkeypatch, capsys, section, fault, message
):
    """A bad JSON Lines line or a missing data file is named (file and line) in one line,
    exit 2, before the tokenizer or the model is loaded."""
    loaded = stub_loaders(monkeypatch)
    good, record = one_record_file(tmp_path)
    bad = tmp_path / "bad.jsonl"
    if fault == "bad line":
        bad.write_text(json.dumps(record) + '\n{"src_lang": "de",\n')
    tree = recipe("full", stub_model(tmp_path), [good], tmp_path / "out")
    tree["data"][section] = [*tree["data"].get(section, []), str(bad)]
    if section == "eval_files":
        tree["train"]["eval_strategy"] = "steps"
    error = refused(tree, tmp_path, capsys)
    named = f"{bad}{message}"
    if fault == "missing":  # the recipe's line and setting named (before: the file alone)
        line = (tmp_path / "recipe.yaml").read_text().splitlines().index(f"  {section}:") + 1
        named = f"{tmp_path / 'recipe.yaml'}, line {line}: data.{section}: {bad}{message}"
    assert error.startswith(f"python -m training.sft: {named}") and error.count("\n") == 1, error
    assert loaded == []


def test_a_relative_data_file_that_is_missing_says_where_it_was_looked_for(
    tmp_path, monkeypatch, capsys
):
    stub_loaders(monkeypatch)
    good, _ = one_record_file(tmp_path)
    tree = recipe("full", stub_model(tmp_path), [good, "data/simt.jsonl"], tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    error = refused(tree, tmp_path, capsys)
    assert f"data.files: data/simt.jsonl: no such file, read from {tmp_path}\n" in error
    # given by an override: named so (before: blamed on the recipe file)
    with pytest.raises(SystemExit):
        main(["--config", str(tmp_path / "recipe.yaml"), "data.files=[nope.jsonl]"])
    assert capsys.readouterr().err.endswith(
        "override 'data.files=[nope.jsonl]': data.files: nope.jsonl: no such file, read from "
        f"{tmp_path}\n"
    )


@pytest.mark.parametrize("fault", ["empty eval set", "no model folder", "output is a file"])
def test_what_no_run_can_use_is_refused_before_the_model_loads(
    tmp_path, monkeypatch, capsys, fault
):
    """Before: an empty eval set crashed at the first evaluation (KeyError), a missing
    model folder was looked up on the hub (a traceback), an output_dir that is a file
    gave a bare errno."""
    loaded = stub_loaders(monkeypatch)
    good, _ = one_record_file(tmp_path)
    tree = recipe("full", stub_model(tmp_path), [good], tmp_path / "out")
    if fault == "empty eval set":
        (tmp_path / "empty.jsonl").write_text("")
        tree["data"]["eval_files"] = [str(tmp_path / "empty.jsonl")]
        tree["train"]["eval_strategy"] = "steps"
        message = f"data.eval_files hold no record: {tmp_path / 'empty.jsonl'}"
    elif fault == "no model folder":  # relative, as recipes write it: no hub id either
        monkeypatch.chdir(tmp_path)
        tree["model"]["name_or_path"] = "outputs/stage1/model"
        message = "model.name_or_path: model path 'outputs/stage1/model' does not exist"
    else:
        (tmp_path / "out").write_text("mine")
        message = f"train.output_dir {tmp_path / 'out'}: a file, not a folder"
    error = refused(tree, tmp_path, capsys)
    assert error == f"python -m training.sft: {message}\n" and loaded == []


def test_a_bad_recipe_is_one_line_and_exit_2(tmp_path, capsys):
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe("full", "base", ["data.json"], tmp_path)))
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(recipe_path), "data.cutoff_lenn=3"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(
        "python -m training.sft: override 'data.cutoff_lenn=3': unknown key data.cutoff_lenn"
    )
    assert error.count("\n") == 1


def train_in_subprocess(recipe_path, kill_after_checkpoint=None):
    """`training.sft` on the recipe: its exit status if killed after that checkpoint, else
    (it must succeed) what it wrote on stderr."""
    command = [sys.executable, "-m", "training.sft", "--config", str(recipe_path)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    if kill_after_checkpoint is not None:
        deadline = time.time() + 240
        while not kill_after_checkpoint.exists() and process.poll() is None:
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        assert process.poll() is None, "training ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
        return process.returncode
    _, errors = process.communicate(timeout=600)
    assert process.returncode == 0, errors[-3000:]
    return errors


def test_kill_and_resume_ends_like_an_uninterrupted_run(base_checkpoint, data_files, workspace):
    runs = {}
    for name in ("uninterrupted", "killed"):
        tree = recipe(
            "full", base_checkpoint, data_files[:1], workspace / name,
            max_steps=8, save_steps=4, logging_steps=1,
            # the resumed run's checkpoint-8 rotates out checkpoint-4, the one it resumed
            # from (before: its step, read after training, failed the run at its end)
            save_total_limit=1,
        )  # fmt: skip
        runs[name] = workspace / f"{name}.yaml"
        runs[name].write_text(yaml.safe_dump(tree))
    train_in_subprocess(runs["uninterrupted"])
    first_checkpoint = workspace / "killed" / "checkpoint-4" / "trainer_state.json"
    assert train_in_subprocess(runs["killed"], kill_after_checkpoint=first_checkpoint) != 0
    assert not (workspace / "killed" / "model").exists()
    said = train_in_subprocess(runs["killed"])  # resume_from_checkpoint: auto
    assert said.count("resuming from") == 1 and "checkpoint-4" in said

    uninterrupted, losses = logged_losses(workspace / "uninterrupted")
    resumed, resumed_losses = logged_losses(workspace / "killed")
    assert uninterrupted["global_step"] == resumed["global_step"] == 8
    # the same data, tokenizer and settings: the killed run loaded the first run's samples
    assert resumed["data"]["cache_reused"]
    assert resumed["data"]["cache_file"] == uninterrupted["data"]["cache_file"]
    assert len(resumed_losses) == 8  # steps from before the kill come from the checkpoint
    assert resumed_losses[-1] == pytest.approx(losses[-1], abs=1e-3)
    # the Trainer's train_loss averages the steps it ran: the summary says which
    assert (uninterrupted["resumed_at_step"], resumed["resumed_at_step"]) == (0, 4)


SWALLOWED_BEFORE_TRAINING = """
import os, signal, sys
from training import sft

class Swallows:  # Python does not raise what a __del__ raises (a library import's lock)
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)

build_trainer = sft.build_trainer
def swallowing(*arguments, **settings):
    Swallows()
    return build_trainer(*arguments, **settings)
sft.build_trainer = swallowing
sft.main(["--config", sys.argv[1]])
"""


def test_a_ctrl_c_swallowed_before_training_ends_the_run_at_its_first_step(
    base_checkpoint, data_files, workspace
):
    """Before: every step trained and the model written, then "interrupted" (hours later,
    on a real run)."""
    output = workspace / "swallowed"
    tree = recipe(
        "full", base_checkpoint, data_files[:1], output,
        max_steps=6, save_steps=100, logging_steps=1,
    )  # fmt: skip
    config = workspace / "swallowed.yaml"
    config.write_text(yaml.safe_dump(tree))
    result = python_with_ctrl_c(SWALLOWED_BEFORE_TRAINING, config, timeout=600)
    assert result.returncode == -signal.SIGINT, result.stderr[-3000:]
    assert result.stderr.endswith("python -m training.sft: interrupted\n")
    assert "Exception ignored" not in result.stderr
    assert not (output / "model").exists() and not list(output.glob("checkpoint-*"))
    assert "'loss'" not in result.stdout  # stopped at the end of step 1, before its log


def test_a_finished_run_is_not_trained_again_nor_resumed_by_another_recipe(
    base_checkpoint, data_files, workspace
):
    """Before: each rerun of a finished `max_steps` run trained one step more (transformers
    resumed at the last step goes on), and `auto` resumed the checkpoints of whatever
    recipe had trained into the folder."""
    output = workspace / "finished"
    tree = recipe("full", base_checkpoint, data_files[:1], output, max_steps=4, save_steps=4)
    final = run(parse_config(tree))
    weights, summary = (final / "model.safetensors").read_bytes(), logged_losses(output)[0]
    assert summary["global_step"] == 4 and summary["train_metrics"]["train_loss"] > 0

    assert run(parse_config(tree)) == final  # nothing to train: model and summary as they were
    assert (final / "model.safetensors").read_bytes() == weights
    assert logged_losses(output)[0] == summary
    assert sorted(path.name for path in output.glob("checkpoint-*")) == ["checkpoint-4"]

    shutil.rmtree(final)  # killed between the last checkpoint and the model
    (output / "train_summary.json").unlink()
    (output / ".model.tmp").mkdir()  # or while the model was saved: the ranks' copy
    (output / ".model.tmp" / "model.safetensors").write_bytes(b"cut")
    assert run(parse_config(tree)) == final
    assert not (output / ".model.tmp").exists()
    assert (final / "model.safetensors").read_bytes() == weights
    written = json.loads((output / "train_summary.json").read_text())
    assert written["global_step"] == 4 and written["written_from"] == str(output / "checkpoint-4")
    assert not {"optimizer.pt", "trainer_state.json"} & {path.name for path in final.iterdir()}

    other_data = recipe("full", base_checkpoint, data_files[1:], output, max_steps=4, save_steps=4)
    other_rate = copy.deepcopy(tree)
    other_rate["train"]["learning_rate"] = 1e-3
    longer = copy.deepcopy(tree)
    longer["train"]["max_steps"] = 5  # going on is a resume, not another recipe
    assert finished_step(resolve_resume(parse_config(longer)), 5) is None
    with pytest.raises(ValueError, match="checkpoint-4 is at step 4, past train.max_steps 3"):
        finished_step(resolve_resume(parse_config(longer)), 3)
    longer_config = parse_config(longer)
    with pytest.raises(ValueError) as refusal:  # before: resumed, the cosine jumping back up
        check_checkpoints(
            longer_config, trained_recipe(longer_config), resolve_resume(longer_config)
        )
    assert str(refusal.value) == (
        f"{output / 'checkpoint-4'} was trained with train.max_steps 4, over which "
        "train.lr_scheduler_type cosine lays out the learning rate; resumed with "
        "train.max_steps 5, the schedule would jump midway: resume with train.max_steps 4, "
        "or train the new length into another train.output_dir (training.demo: another "
        "--workdir) (a constant schedule, its warm-up in whole steps, resumes for any length)"
    )
    other_epochs = copy.deepcopy(tree)  # a run of steps reads no epochs (a review)
    other_epochs["train"]["num_train_epochs"] = 5
    epochs_config = parse_config(other_epochs)
    check_checkpoints(epochs_config, trained_recipe(epochs_config), resolve_resume(epochs_config))
    # named by its path (before: taken, the checkpoint's schedule overriding the new rate,
    # which recipe.json recorded)
    named = {**other_rate, "resume_from_checkpoint": str(output / "checkpoint-4")}
    for changed, message in (
        (other_data, r"data.files: \['.*simt.json' \(sha256 .*\)\] then, \['.*offline.jsonl'"),
        (other_rate, "train.learning_rate: 0.003 then, 0.001 now"),
        (named, "0.003 then, 0.001 now.*set model.name_or_path to it, resume_from_checkpoint"),
    ):
        with pytest.raises(
            ValueError, match=f"checkpoint-4 was trained by another recipe .*{message}"
        ):
            run(parse_config(changed))
    moved = copy.deepcopy(tree)  # before: "checkpoint-4 was trained by another recipe"
    moved["data"]["files"] = [str(output / "moved.jsonl")]
    with pytest.raises(ValueError, match=f"data.files: {output / 'moved.jsonl'}: no such file"):
        run(parse_config(moved))
    fresh = {**tree, "resume_from_checkpoint": None}
    with pytest.raises(ValueError, match="holds checkpoints of an earlier run \\(checkpoint-4\\)"):
        run(parse_config(fresh))
    assert (final / "model.safetensors").read_bytes() == weights

    # a last checkpoint without weights (ZeRO-3 not gathering them) is refused, not copied
    # as a model of config and tokenizer alone (training_args.bin passed for weights)
    shutil.rmtree(final)
    (output / "train_summary.json").unlink()
    (output / "checkpoint-4" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="checkpoint-4 ended the run .* holds no model weights"):
        run(parse_config(tree))
    assert not final.exists()


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}


def assert_same_weights(one: Path, other: Path) -> None:
    first, second = weights_of(one), weights_of(other)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_a_checkpoint_cut_while_written_does_not_stop_a_fresh_run(
    base_checkpoint, data_files, tmp_path
):
    """A run killed while writing its first checkpoint: the rerun (auto) refused to start,
    taking the unusable checkpoint for an earlier run's."""
    output = tmp_path / "out"
    (output / "checkpoint-2").mkdir(parents=True)
    (output / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2, "log_')
    tree = recipe("full", base_checkpoint, data_files[:1], output, max_steps=2, save_steps=2)
    final = run(parse_config(tree))
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["resumed_at_step"] == 0
    assert_same_weights(final, output / "checkpoint-2")  # written again, whole


def test_a_finished_run_keeps_its_best_model(base_checkpoint, data_files, tmp_path):
    """With load_best_model_at_end, a rerun after a kill between the last checkpoint and
    the model copied the last checkpoint, not the best."""
    output = tmp_path / "best"
    tree = recipe(
        "full", base_checkpoint, data_files[:1], output, max_steps=4, save_steps=2,
        eval_strategy="steps", eval_steps=2, load_best_model_at_end=True,
        metric_for_best_model="eval_loss", greater_is_better=True,  # the worse loss: step 2
    )  # fmt: skip
    tree["data"]["eval_files"] = [str(data_files[1])]
    final = run(parse_config(tree))
    assert_same_weights(final, output / "checkpoint-2")
    shutil.rmtree(final)  # killed after the last checkpoint
    (output / "train_summary.json").unlink()
    assert run(parse_config(tree)) == final
    assert_same_weights(final, output / "checkpoint-2")
    written = json.loads((output / "train_summary.json").read_text())
    assert written["written_from"] == str(output / "checkpoint-2")


def test_a_finished_epoch_run_is_not_summarised_again(base_checkpoint, data_files, tmp_path):
    """A rerun of a run sized in epochs trains no step: its summary said train_loss 0.0."""
    output = tmp_path / "epochs"
    tree = recipe("full", base_checkpoint, data_files[:1], output, num_train_epochs=1, save_steps=2)
    tree["data"]["max_samples"] = 16  # two steps
    final = run(parse_config(tree))
    summary = (output / "train_summary.json").read_text()
    weights = (final / "model.safetensors").read_bytes()
    assert json.loads(summary)["train_metrics"]["train_loss"] > 0
    assert run(parse_config(tree)) == final
    assert (output / "train_summary.json").read_text() == summary
    assert (final / "model.safetensors").read_bytes() == weights


def test_lora_modules_the_model_lacks_are_named_with_the_field(tmp_path):
    tokenizer = build_chat_llama3_tokenizer()
    model = LlamaForCausalLM(tiny_llama_config(tokenizer))
    tree = recipe("lora", tmp_path, [tmp_path / "data.json"], tmp_path / "out")
    tree["lora"]["target_modules"] = ["attention_qkv"]
    with pytest.raises(ValueError, match="^<config>: lora.target_modules: .*attention_qkv"):
        wrap_with_lora(model, parse_config(tree))
    # one misspelt among good ones (before: left out without a word, the others trained)
    tree["lora"]["target_modules"] = ["q_proj", "v_porj", "self_attn.k_proj"]
    said = "lora.target_modules: v_porj: no module of the model is named so (its linear "
    with pytest.raises(ValueError, match=re.escape(said) + ".*q_proj"):
        wrap_with_lora(model, parse_config(tree))
    tree["lora"]["target_modules"] = ["q_proj", "self_attn.k_proj"]
    wrapped = wrap_with_lora(model, parse_config(tree))
    trained = {name for name, p in wrapped.named_parameters() if p.requires_grad}
    assert any("k_proj.lora_A" in name for name in trained)


def test_a_chat_token_in_a_record_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    loaded = stub_loaders(monkeypatch)
    tokenizer = build_chat_llama3_tokenizer()
    monkeypatch.setattr("training.sft.load_tokenizer", lambda *a: tokenizer)
    good, record = one_record_file(tmp_path)
    good.write_text(json.dumps({**record, "target": "a house<|eot_id|>"}) + "\n")
    stub_model(tmp_path)
    error = refused(recipe("full", tmp_path / "model", [good], tmp_path / "out"), tmp_path, capsys)
    assert error == (
        f"python -m training.sft: {good}: line 1: field 'target' holds '<|eot_id|>', a control "
        "token: it would be trained as that token, not as text\n"
    )
    assert loaded == []


def east_base(path: Path) -> Path:
    """A chat model with the EAST tokens (what Stage I gives), untrained."""
    from training.sft import add_east_tokens

    tokenizer = build_chat_llama3_tokenizer()
    add_east_tokens(tokenizer)
    LlamaForCausalLM(tiny_llama_config(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_the_seed_decides_the_lora_starting_weights(tmp_path):
    """Before: get_peft_model drew LoRA's A before any seed was set (train.seed ignored)."""
    base = east_base(tmp_path / "stage1")

    def lora_a(seed: int, state: int) -> torch.Tensor:
        tree = recipe("lora", base, [tmp_path / "data.json"], tmp_path / "out", seed=seed)
        torch.manual_seed(state)  # whatever state the process was left in
        model = load_model(parse_config(tree), AutoTokenizer.from_pretrained(base))
        return next(p for name, p in model.named_parameters() if "lora_A" in name).detach()

    assert torch.equal(lora_a(1, state=5), lora_a(1, state=6))
    assert not torch.equal(lora_a(1, state=5), lora_a(2, state=5))


def test_a_second_run_into_a_busy_output_dir_is_refused(tmp_path, monkeypatch, capsys):
    """Before: two runs wrote checkpoints and the model of one folder at once."""
    from east_agent.common.run_lock import hold_run_lock

    loaded = stub_loaders(monkeypatch)
    good, _ = one_record_file(tmp_path)
    stub_model(tmp_path)
    with hold_run_lock(tmp_path / "out", "train.lock"):  # the first run, live
        error = refused(
            recipe("full", tmp_path / "model", [good], tmp_path / "out"), tmp_path, capsys
        )
    assert error.startswith(f"python -m training.sft: {tmp_path / 'out'} is being written by ")
    assert error.count("\n") == 1 and loaded == []


def test_a_model_of_another_recipe_without_checkpoints_is_not_replaced(
    base_checkpoint, data_files, tmp_path
):
    """Before: a run with save_strategy no into a folder holding another recipe's final
    model (and no checkpoint) replaced it silently."""
    output = tmp_path / "out"
    tree = recipe("full", base_checkpoint, data_files[:1], output, max_steps=1, save_strategy="no")
    final = run(parse_config(tree))
    weights = (final / "model.safetensors").read_bytes()
    other = copy.deepcopy(tree)
    other["train"]["learning_rate"] = 1e-3
    with pytest.raises(ValueError, match="model was trained by another recipe .*learning_rate"):
        run(parse_config(other))
    assert (final / "model.safetensors").read_bytes() == weights


def test_a_refused_run_leaves_no_folder_it_made(tmp_path, monkeypatch, capsys):
    """Before: a new train.output_dir was left behind, empty but for train.lock."""
    stub_loaders(monkeypatch)
    output = tmp_path / "out"
    tree = recipe("full", stub_model(tmp_path), [str(tmp_path / "gone.jsonl")], output)
    assert "data.files: " in refused(tree, tmp_path, capsys)
    assert not output.exists()
    output.mkdir()  # the user's folder: kept, and the lock with it
    refused(tree, tmp_path, capsys)
    assert [path.name for path in output.iterdir()] == ["train.lock"]
    # the folders above it the run made go too (before: `outputs/` of `outputs/stage1`)
    nested = recipe("full", stub_model(tmp_path), [str(tmp_path / "gone.jsonl")],
                    tmp_path / "outputs" / "east" / "stage1")  # fmt: skip
    refused(nested, tmp_path, capsys)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_a_model_entry_no_run_wrote_is_refused_before_anything_loads(
    tmp_path, monkeypatch, capsys, kind
):
    """Before: a user's `<output_dir>/model/` (no recipe.json beside it) replaced by the
    run's model, exit 0; a file of that name found after the whole training (errno 20)."""
    loaded = stub_loaders(monkeypatch)
    good, _ = one_record_file(tmp_path)
    final = tmp_path / "out" / "model"
    if kind == "folder":
        final.mkdir(parents=True)
        (final / "notes.txt").write_text("mine")
        said = f"{final} was not written by a training run of this version (no recipe.json"
    else:
        final.parent.mkdir()
        final.write_text("mine")
        said = f"train.output_dir {tmp_path / 'out'}: its model is a file, not the folder"
    error = refused(
        recipe("full", stub_model(tmp_path), [good], tmp_path / "out"), tmp_path, capsys
    )
    assert error.startswith(f"python -m training.sft: {said}"), error
    kept = final / "notes.txt" if kind == "folder" else final
    assert loaded == [] and kept.read_text() == "mine"


def test_a_stage_whose_model_is_its_own_output_is_refused(tmp_path, monkeypatch, capsys):
    """Before: Stage II from `<output_dir>/model` into `output_dir` deleted its own base."""
    loaded = stub_loaders(monkeypatch)
    good, _ = one_record_file(tmp_path)
    tree = recipe("lora", tmp_path / "out" / "model", [good], tmp_path / "out")
    error = refused(tree, tmp_path, capsys)
    assert error == (
        f"python -m training.sft: model.name_or_path {tmp_path / 'out' / 'model'} is this run's "
        f"own final model ({tmp_path / 'out' / 'model'}), which the run replaces: train into "
        "another train.output_dir\n"
    )
    assert loaded == []


@pytest.mark.parametrize("fault", ["no weights", "truncated weights"])
def test_an_incomplete_model_folder_is_one_line(base_checkpoint, tmp_path, capsys, fault):
    """Before: OSError or SafetensorError tracebacks once the model loaded."""
    good, _ = one_record_file(tmp_path)
    model = tmp_path / "model"
    shutil.copytree(base_checkpoint, model)
    if fault == "no weights":
        (model / "model.safetensors").unlink()
        message = f"model.name_or_path {model}: no weights file"
    else:
        (model / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes()[:999])
        message = f"model.name_or_path {model}: cannot be loaded (SafetensorError"
    error = refused(recipe("full", model, [good], tmp_path / "out"), tmp_path, capsys)
    assert error.startswith(f"python -m training.sft: {message}") and error.count("\n") == 1


def test_a_hub_id_no_folder_and_no_hub_has_is_refused_first(tmp_path, monkeypatch, capsys):
    """Before: `stage1/model` run from another folder was asked of the hub for a minute,
    then a traceback; later, once every record was read (a bad one is named after)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = stub_loaders(monkeypatch)
    good, _ = one_record_file(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    monkeypatch.chdir(tmp_path)
    tree = recipe("full", "stage1/model", [good, bad], tmp_path / "out")
    error = refused(tree, tmp_path, capsys)
    assert error == (
        f"python -m training.sft: model.name_or_path 'stage1/model': no such folder here "
        f"({tmp_path}), and the hub is offline (HF_HUB_OFFLINE) and has no copy in its cache\n"
    )
    assert loaded == []


def test_stage2_checks_the_east_tokens_before_the_weights_load(
    base_checkpoint, tmp_path, monkeypatch
):
    """Before: the weights loaded, then the missing EAST tokens were found."""
    import transformers

    def loads(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", loads)
    config = parse_config(recipe("lora", base_checkpoint, [tmp_path / "d.json"], tmp_path / "o"))
    said = f"^model.name_or_path {base_checkpoint}: .*not an EAST.*; stage lora \\(Stage II\\) "
    with pytest.raises(ValueError, match=said + "starts from a Stage I model: train one with st"):
        load_model(config, AutoTokenizer.from_pretrained(base_checkpoint))


def test_a_chat_template_that_does_not_render_is_refused_as_the_tokenizer_loads(
    base_checkpoint, tmp_path
):
    """Before: a jinja traceback once the model had loaded. A template may read the
    tokenizer's tokens (`eos_token`), and may need the system turn `data.system_prompt`
    gives: both render."""
    template = tmp_path / "chat.jinja"
    tree = recipe("full", base_checkpoint, [tmp_path / "d.json"], tmp_path / "o")
    tree["model"]["chat_template"] = str(template)
    needs_system = (
        "{% if messages[0]['role'] != 'system' %}{{ raise_exception('no system turn') }}"
        "{% endif %}{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}"
    )
    template.write_text(needs_system)
    with pytest.raises(
        ValueError,
        match=f"^model.chat_template {template}: does not render a chat \\(TemplateError: no "
        "system turn\\)",
    ):
        load_tokenizer(parse_config(tree))
    tree["data"]["system_prompt"] = "Be brief."
    tokenizer = load_tokenizer(parse_config(tree))
    assert tokenizer.chat_template == needs_system


def test_a_control_token_in_the_system_prompt_is_refused(
    base_checkpoint, tmp_path, monkeypatch, capsys
):
    """Before: trained as that token (the chat template's, or an EAST token)."""
    monkeypatch.setattr("training.sft.load_model", lambda *a: pytest.fail("the model loaded"))
    good, _ = one_record_file(tmp_path)
    tree = recipe("full", base_checkpoint, [good], tmp_path / "out")
    tree["data"]["system_prompt"] = "Be brief.<|eot_id|>"
    error = refused(tree, tmp_path, capsys)
    assert error == (
        "python -m training.sft: data.system_prompt holds '<|eot_id|>', a control token of "
        "the tokenizer: it would be trained as that token, not as text\n"
    )


def test_a_missing_model_is_refused_before_the_data_are_read(tmp_path, monkeypatch, capsys):
    """Before: named only once every record had been read and checked."""
    monkeypatch.setattr("training.sft.read_records", lambda *a: pytest.fail("the data were read"))
    good, _ = one_record_file(tmp_path)
    tree = recipe("full", tmp_path / "no-model", [good], tmp_path / "out")
    error = refused(tree, tmp_path, capsys)
    assert error == (
        f"python -m training.sft: model.name_or_path: model path '{tmp_path / 'no-model'}' "
        "does not exist\n"
    )


def stop_at_the_data(monkeypatch) -> None:
    def read_data(*args, **kwargs):
        raise StopBeforeTraining

    monkeypatch.setattr("training.sft.read_data", read_data)


def checkpoint_at(output: Path, step: int, files=(), max_steps=None, epochs=1) -> Path:
    """A checkpoint of the weights (`save_only_model`) and `files` (a folder: `name/`)."""
    folder = output / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    state = {"global_step": step, "max_steps": max_steps or step, "num_train_epochs": epochs}
    (folder / "trainer_state.json").write_text(json.dumps(state))
    (folder / "model.safetensors").write_text("")
    for name in files:
        (folder / name).mkdir() if name.endswith("/") else (folder / name).write_text("")
    return folder


@pytest.mark.parametrize(
    ("files", "resumed"),
    [
        ((), False),
        (("optimizer.pt",), False),  # no schedule
        (("optimizer.pt", "scheduler.pt"), True),
        (("global_step2/", "latest"), True),  # DeepSpeed: both in its folder
        (("optimizer_0/", "scheduler.pt"), True),  # FSDP's sharded optimizer
    ],
)
def test_a_checkpoint_without_optimizer_state_is_not_resumed(tmp_path, monkeypatch, files, resumed):
    """Before: resumed with a fresh optimizer and learning-rate schedule, exit 0, the model
    unlike an uninterrupted run's (`save_only_model`)."""
    stop_at_the_data(monkeypatch)
    checkpoint = checkpoint_at(tmp_path / "out", 2, files)
    good, _ = one_record_file(tmp_path)
    for setting in ("auto", str(checkpoint)):
        tree = recipe("full", stub_model(tmp_path), [good], tmp_path / "out", max_steps=4)
        config = parse_config({**tree, "resume_from_checkpoint": setting})
        if resumed:
            with pytest.raises(StopBeforeTraining):
                run(config)
            continue
        with pytest.raises(ValueError) as refusal:
            run(config)
        assert str(refusal.value) == (
            f"{checkpoint} cannot be resumed exactly: it holds no optimizer and scheduler "
            "state (train.save_only_model keeps the weights only), so the learning-rate "
            f"schedule and the optimizer would restart; delete {tmp_path / 'out'} to train "
            "afresh, or set resume_from_checkpoint: null and train into another "
            "train.output_dir"
        )


@pytest.mark.parametrize(("epochs", "resumed"), [(1, True), (2, False)])
def test_an_epoch_run_that_ended_at_a_checkpoint_of_the_weights_goes_on(
    tmp_path, monkeypatch, epochs, resumed
):
    """The run that ended there (1 epoch) trains no step from it; one longer would."""
    stop_at_the_data(monkeypatch)
    checkpoint_at(tmp_path / "out", 2, epochs=1)
    good, _ = one_record_file(tmp_path)
    tree = recipe("full", stub_model(tmp_path), [good], tmp_path / "out", num_train_epochs=epochs)
    with pytest.raises(StopBeforeTraining if resumed else ValueError):
        run(parse_config(tree))


def test_runs_of_the_weights_alone_end_or_are_refused(base_checkpoint, data_files, tmp_path):
    """transformers' `save_only_model` checkpoints: a finished run is finished, a longer
    one refused before anything loads."""
    output = tmp_path / "out"
    tree = recipe(
        "full", base_checkpoint, data_files[:1], output, max_steps=2, save_steps=2,
        save_only_model=True, lr_scheduler_type="constant",  # a length a resume may change
    )  # fmt: skip
    final = run(parse_config(tree))
    assert not (output / "checkpoint-2" / "optimizer.pt").exists()
    assert run(parse_config(tree)) == final  # rerun: nothing to train
    tree["train"]["max_steps"] = 4
    with pytest.raises(ValueError, match="checkpoint-2 cannot be resumed exactly"):
        run(parse_config(tree))

    epochs = recipe("full", base_checkpoint, data_files[:1], tmp_path / "epochs",
                    num_train_epochs=1, save_steps=2, save_only_model=True)  # fmt: skip
    epochs["data"]["max_samples"] = 16  # two steps
    final = run(parse_config(epochs))
    weights, summary = (final / "model.safetensors").read_bytes(), logged_losses(final.parent)[0]
    assert run(parse_config(epochs)) == final  # resumed at its end: no step more
    assert (final / "model.safetensors").read_bytes() == weights
    assert logged_losses(final.parent)[0] == summary


def test_a_run_resumed_for_another_length_goes_on_only_where_its_schedule_allows(
    base_checkpoint, data_files, tmp_path
):
    """A constant learning rate, its warm-up in whole steps, resumes for a longer run and
    goes on from its checkpoint; a decay (or a warm-up given as a ratio) is laid out over
    the run's length and is refused (`test_a_finished_run_is_not_trained_again...`)."""
    output = tmp_path / "out"
    tree = recipe(
        "full", base_checkpoint, data_files[:1], output, max_steps=2, save_steps=2,
        lr_scheduler_type="constant_with_warmup", warmup_steps=1, logging_steps=1,
    )  # fmt: skip
    run(parse_config(tree))
    tree["train"]["max_steps"] = 3
    run(parse_config(tree))
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["resumed_at_step"] == 2
    recorded = json.loads((output / "recipe.json").read_text())["length"]
    assert recorded == {"max_steps": 3, "num_train_epochs": 3.0}


@pytest.mark.parametrize(
    ("train", "follows"),
    [
        ({}, True),  # linear decay, transformers' default
        ({"lr_scheduler_type": "cosine", "warmup_steps": 10}, True),
        ({"lr_scheduler_type": "constant", "warmup_steps": 0.1}, False),  # no warm-up there
        ({"lr_scheduler_type": "constant_with_warmup", "warmup_steps": 100}, False),
        ({"lr_scheduler_type": "constant_with_warmup", "warmup_steps": 0.03}, True),
        ({"lr_scheduler_type": "inverse_sqrt"}, False),
        ({"lr_scheduler_type": "reduce_lr_on_plateau"}, False),
        ({"lr_scheduler_type": "greedy"}, False),  # stepped by the evaluation's loss
    ],
)
def test_which_schedules_follow_the_run_length(train, follows):
    assert schedule_follows_length(train) is follows


def test_a_run_that_takes_no_step_writes_no_model(base_checkpoint, data_files, tmp_path):
    """Before: fewer samples than a batch with `dataloader_drop_last` wrote the base model
    as the trained one, exit 0."""
    tree = recipe("full", base_checkpoint, data_files[:1], tmp_path / "out", max_steps=2,
                  dataloader_drop_last=True)  # fmt: skip
    tree["data"]["max_samples"] = 4  # half a batch
    with pytest.raises(
        ValueError,
        match=r"^the run took no optimizer step \(4 samples, "
        r"per-device batch 8, train.dataloader_drop_last True\): no model",
    ):
        run(parse_config(tree))  # fmt: skip
    assert not (tmp_path / "out" / "model").exists()
    # said before training, no recipe written (before: once trained, recipe.json left)
    assert not (tmp_path / "out" / "recipe.json").exists()
    # sized in epochs too (before: transformers'
    # "args.max_steps must be set to a positive value if dataloader does not have a length")
    tree["train"].update(max_steps=-1, num_train_epochs=1, output_dir=str(tmp_path / "epochs"))
    with pytest.raises(ValueError, match=r"^the run took no optimizer step \(4 samples, "):
        run(parse_config(tree))
    assert not (tmp_path / "epochs" / "recipe.json").exists()


def test_a_lora_checkpoint_is_started_from_once_merged(tmp_path):
    """A LoRA checkpoint is an adapter: model.name_or_path takes no adapter (a review); the
    hint follows the stage that wrote the checkpoint, not the recipe resuming it (before: a
    LoRA recipe named a full Stage I checkpoint was told to merge it)."""
    from training.resume import start_from_hint

    assert "merge it into its base with training.merge_lora" in start_from_hint("lora")
    assert "set model.name_or_path to it" in start_from_hint("full")
    output = tmp_path / "stage1"
    full = parse_config(recipe("full", "model", ["data.json"], output))
    record_recipe(full, trained_recipe(full))
    checkpoint = output / "checkpoint-2"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text('{"global_step": 2}')
    named = {"resume_from_checkpoint": str(checkpoint)}
    lora = parse_config({**recipe("lora", "model", ["data.json"], output), **named})
    with pytest.raises(ValueError, match="another recipe .*set model.name_or_path to it"):
        check_checkpoints(lora, trained_recipe(lora), str(checkpoint))


def test_no_sample_left_says_why(base_checkpoint, data_files, tmp_path):
    """Before: "no training sample is left after reading the data", naming neither the
    files nor the cut-off that dropped every sample."""
    tree = recipe("full", base_checkpoint, data_files[:1], tmp_path / "out", max_steps=2)
    tree["data"].update(cutoff_len=8, max_samples=5)
    with pytest.raises(ValueError) as refused:
        run(parse_config(tree))
    assert str(refused.value) == (
        f"no training sample is left after reading the data: 96 records read from data.files "
        f"({data_files[0]}); 91 left out by data.max_samples; 5 dropped: their prompt alone "
        "exceeds data.cutoff_len 8"
    )


def test_a_default_written_out_is_the_same_recipe(tmp_path):
    """Before: `gradient_accumulation_steps: 1` written out was refused as "None then, 1
    now" by the run that had left it out."""
    checkpoint_at(tmp_path / "out", 2, ("optimizer.pt", "scheduler.pt"))
    tree = recipe("full", "model", ["data.json"], tmp_path / "out")
    record_recipe(parse_config(tree), trained_recipe(parse_config(tree)))
    written = copy.deepcopy(tree)
    written["train"].update(gradient_accumulation_steps=1, weight_decay=0)
    written["data"]["max_samples"] = None
    config = parse_config(written)
    check_checkpoints(config, trained_recipe(config), resolve_resume(config))
    written["train"]["gradient_accumulation_steps"] = 2
    config = parse_config(written)
    with pytest.raises(
        ValueError, match=r"\(train.gradient_accumulation_steps: 1 \(default\) then, 2 now\)"
    ):
        check_checkpoints(config, trained_recipe(config), resolve_resume(config))


def test_settings_to_know_of_are_warned(tmp_path, monkeypatch, caplog):
    stop_at_the_data(monkeypatch)
    good, _ = one_record_file(tmp_path)
    tree = recipe("full", stub_model(tmp_path), [good], tmp_path / "out", save_only_model=True)
    tree["data"]["system_prompt"] = "You are a helpful assistant."
    with pytest.raises(StopBeforeTraining):
        run(parse_config(tree))
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [
        "train.save_only_model: the checkpoints keep the weights only; a killed run cannot "
        "resume from them (its optimizer and learning-rate schedule would restart)",
        # the recipe's lora section, in a full stage (before: read, and silently unused)
        "lora: its settings are not used: stage full trains every weight (stage: lora "
        "trains an adapter)",
        "data.system_prompt: the samples get a system turn that east_agent's decoder does "
        "not render; the model is decoded without it",
    ]


def test_a_deepspeed_config_not_there_is_named_with_the_folder_it_was_read_from(
    tmp_path, monkeypatch
):
    """The Stage I recipe run outside the repository: before, TrainingArguments' "Expected
    a string path to an existing deepspeed config ... Received: training/configs/...", the
    folder the relative path was read from unsaid."""
    from training.config import load_config

    monkeypatch.chdir(tmp_path)
    output = tmp_path / "run"
    overrides = [f"train.output_dir={output}", "train.bf16=false"]
    config = load_config(REPO / "training/configs/stage1_full.yaml", overrides)
    said = (
        r"stage1_full\.yaml, line \d+: train\.deepspeed: training/configs/ds_zero3\.json: no "
        f"such file, read from {tmp_path}$"
    )
    with pytest.raises(ValueError, match=said):
        run(config)
    assert not output.exists()
    # what names no file is left to TrainingArguments and accelerate, as before: empty (no
    # DeepSpeed), a JSON text, or one encoded in base64
    from training.sft import names_a_file

    encoded = base64.b64encode(json.dumps({"zero_optimization": {"stage": 3}}).encode())
    assert [names_a_file(text) for text in ("", " ", '{"a": 1}', encoded.decode())] == [False] * 4
    assert names_a_file("ds_zero3.json") and names_a_file("abcd")  # base64, but no JSON


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine with a GPU may take bf16")
def test_a_bfloat16_recipe_on_a_machine_without_it_names_its_line(tmp_path):
    """The Stage II recipe on a CPU: before, TrainingArguments' words alone ("Your setup
    doesn't support bf16/gpu"), the recipe and its line unnamed."""
    from training.config import load_config

    output = tmp_path / "run"
    config = load_config(REPO / "training/configs/stage2_lora.yaml", [f"train.output_dir={output}"])
    said = r"stage2_lora\.yaml, line \d+: train\.bf16 true, and this machine has no bfloat16 device"
    with pytest.raises(ValueError, match=said + r" \(train\.bf16=false to try it here\): Your"):
        run(config)
    assert not output.exists()
    from training.sft import training_arguments_fault

    other = ValueError("At most one of fp16 and bf16 can be True, but not both")  # its words
    said = training_arguments_fault(config, other)  # another fault naming bf16: not the machine
    assert said.endswith("TrainingArguments refused the train settings"), said
    # a value the message quotes names its setting, and where it was given (before: the
    # recipe's train section for an override's value)
    optim = load_config(REPO / "training/configs/stage1_full.yaml", ["train.optim=adamw_torc"])
    said = training_arguments_fault(optim, ValueError("adamw_torc is not a valid OptimizerNames"))
    assert said == "override 'train.optim=adamw_torc': TrainingArguments refused train.optim"
    # a value that is an ordinary word of another message names no setting (before:
    # `eval_strategy: steps` blamed for `--load_best_model_at_end requires the saving steps`)
    steps = load_config(REPO / "training/configs/demo_stage1.yaml", ["train.eval_steps=300"])
    other = ValueError("--load_best_model_at_end requires the saving steps to be a round ...")
    assert training_arguments_fault(steps, other).endswith("refused the train settings")


def test_a_run_whose_weights_diverge_writes_no_model(base_checkpoint, data_files, workspace):
    """Before: `'loss': 0, 'grad_norm': nan`, every weight NaN, model/ written, exit 0."""
    output = workspace / "diverged"
    tree = recipe(
        "full", base_checkpoint, data_files[:1], output,
        max_steps=4, logging_steps=1, learning_rate=1e9, warmup_steps=0,
    )  # fmt: skip
    with pytest.raises(ValueError, match="gradients were NaN or inf|weights hold NaN or inf"):
        run(parse_config(tree))
    assert not (output / "model").exists() and not (output / "train_summary.json").exists()
    assert (output / "checkpoint-4").is_dir()  # kept for a look
    # run again: its last checkpoint is no model either (before: copied as one, exit 0)
    with pytest.raises(ValueError, match="checkpoint-4 ended the run, but .*NaN or inf"):
        run(parse_config(tree))
    assert not (output / "model").exists()
    state = json.loads((output / "checkpoint-4" / "trainer_state.json").read_text())
    for entry in state["log_history"]:  # the gradients logged finite: its weights are read
        entry["grad_norm"] = 1.0
    (output / "checkpoint-4" / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"checkpoint-4 ended the run, but its tensor .* holds"):
        run(parse_config(tree))


def test_the_trained_weights_are_checked_for_nan(base_checkpoint):
    model = AutoModelForCausalLM.from_pretrained(base_checkpoint)
    assert non_finite_weights(model) == []
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("inf")
        model.lm_head.weight.requires_grad_(False)
        model.lm_head.weight[1, 1] = float("nan")  # not trained: not this run's doing
    assert non_finite_weights(model) == ["model.layers.0.mlp.up_proj.weight"]


def run_alone_with_zero3(tree: dict) -> subprocess.CompletedProcess:
    """`python -m training.sft` of `tree` with the recipes' ZeRO-3 config, as one process
    with no launcher (none of its variables set); it must succeed."""
    pytest.importorskip("deepspeed")
    tree["train"]["deepspeed"] = str(REPO / "training" / "configs" / "ds_zero3.json")
    config = Path(tree["train"]["output_dir"]).with_suffix(".yaml")
    config.write_text(yaml.safe_dump(tree))
    env = {name: value for name, value in os.environ.items() if name not in LAUNCHER_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "training.sft", "--config", str(config)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_a_deepspeed_recipe_runs_as_one_process_without_a_launcher(
    base_checkpoint, data_files, workspace
):
    """The recipes' one-GPU command, `python -m training.sft --config stage1_full.yaml`
    (before: DeepSpeed looked for MPI: `ModuleNotFoundError: mpi4py`, a traceback once the
    data had been read), with the recipes' ZeRO-3: the embeddings' rows are read whole
    (before: a shard's 0 rows, every row set to the mean of none: NaN embeddings, every
    step skipped as an overflow, the base model written as trained, exit 0)."""
    output = workspace / "deepspeed"
    result = run_alone_with_zero3(
        recipe("full", base_checkpoint, data_files[:1], output, max_steps=2, logging_steps=1)
    )
    assert "one process, no launcher: DeepSpeed runs as rank 0 of 1" in result.stderr
    assert "embeddings: 2 new rows (mean-initialised)" in result.stderr
    summary, losses = logged_losses(output)
    assert summary["global_step"] == 2 and all(0 < loss < 100 for loss in losses), losses
    trained = AutoModelForCausalLM.from_pretrained(output / "model")
    base = AutoModelForCausalLM.from_pretrained(base_checkpoint)
    rows = base.get_input_embeddings().weight.shape[0]
    embeddings = trained.get_input_embeddings().weight
    assert embeddings.shape[0] == rows + 2 and non_finite_weights(trained) == []
    mean = base.get_input_embeddings().weight.mean(0)
    torch.testing.assert_close(embeddings[rows], mean, atol=0.05, rtol=0)  # 2 steps from it
    assert not torch.equal(embeddings[:rows], base.get_input_embeddings().weight)


def test_stage2_runs_under_deepspeed_zero3(stage1, data_files, workspace):
    """Before: the ZeRO-3 shard's 0 embedding rows were read as the model's, and every
    Stage II run was refused as no Stage I model."""
    output = workspace / "deepspeed-lora"
    run_alone_with_zero3(recipe("lora", stage1, data_files, output, max_steps=2, logging_steps=1))
    assert (output / "model" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("sized_in", ["steps", "epochs"])
def test_a_finished_run_whose_checkpoints_were_removed_is_not_trained_again(
    base_checkpoint, data_files, workspace, sized_in
):
    """Checkpoints removed to save disk (before: every step trained again, exit 0)."""
    output = workspace / f"no-checkpoints-{sized_in}"
    length = {"max_steps": 3} if sized_in == "steps" else {"num_train_epochs": 1}
    tree = recipe("full", base_checkpoint, data_files[:1], output, save_steps=3, **length)
    tree["data"]["max_samples"] = 24  # 3 steps an epoch
    final = run(parse_config(tree))
    weights = (final / "model.safetensors").read_bytes()
    summary = (output / "train_summary.json").read_text()
    for checkpoint in output.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    assert run(parse_config(tree)) == final
    assert (final / "model.safetensors").read_bytes() == weights
    assert (output / "train_summary.json").read_text() == summary
    assert not list(output.glob("checkpoint-*"))  # nothing trained
    # longer: no checkpoint to go on from, trained from the start (before, in epochs: the
    # shorter run's model kept as finished)
    longer = copy.deepcopy(tree)
    longer["train"].update({"max_steps": 4} if sized_in == "steps" else {"num_train_epochs": 2})
    assert run(parse_config(longer)) == final
    written = json.loads((output / "train_summary.json").read_text())
    assert written["length"] == run_length(parse_config(longer))
    assert written["global_step"] == (
        4 if sized_in == "steps" else 2 * json.loads(summary)["global_step"]
    )


def test_a_last_checkpoint_whose_weights_are_cut_short_is_not_copied_as_the_model(
    base_checkpoint, data_files, workspace
):
    """A run killed between its last checkpoint and its model copies the checkpoint's
    weights; weights damaged since are refused (before: a 1,000-byte model copied, exit 0)."""
    output = workspace / "cut-checkpoint"
    tree = recipe("full", base_checkpoint, data_files[:1], output, max_steps=2, save_steps=2)
    final = run(parse_config(tree))
    shutil.rmtree(final)
    (output / "train_summary.json").unlink()
    weights = output / "checkpoint-2" / "model.safetensors"
    os.truncate(weights, 1000)
    # the checkpoint named once (before: "<it> (the run's last checkpoint) <it>: ...")
    said = f"the run's last checkpoint {weights.parent}: {weights.name} cannot be loaded ("
    with pytest.raises(ValueError, match=f"^{re.escape(said)}"):
        run(parse_config(tree))
    assert not final.exists()


def test_a_run_alone_gets_a_launchers_environment_while_it_lasts(tmp_path, monkeypatch):
    """Rank 0 of 1 for a DeepSpeed recipe run alone, given back after (a later run in the
    process, training.demo's, is not launched by it); under mpirun, or without DeepSpeed,
    the environment is left as it is."""
    config = parse_config(recipe("full", tmp_path, [tmp_path / "d.json"], tmp_path / "out"))
    speed = parse_config(
        recipe("full", tmp_path, [tmp_path / "d.json"], tmp_path / "out", deepspeed="ds.json")
    )
    for name in LAUNCHER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.7")  # the user's, for another job
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # no mpi4py
    with launched_alone(speed):
        assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == ("0", "1")
        assert os.environ["MASTER_ADDR"] == "127.0.0.1" and int(os.environ["MASTER_PORT"]) > 0
    assert "RANK" not in os.environ and os.environ["MASTER_ADDR"] == "10.0.0.7"
    with launched_alone(config):
        assert "RANK" not in os.environ  # no DeepSpeed: nothing to set up
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "8")
    with launched_alone(speed):
        assert "RANK" not in os.environ  # mpirun's: DeepSpeed asks MPI
