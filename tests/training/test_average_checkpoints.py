"""Checkpoint averaging on tiny Llama checkpoints with the Llama-3 tokenizer."""

import json
import re
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from tiny_east import tiny_llama_config
from training.average_checkpoints import CheckpointMismatchError, average, main


def save_model(path, tokenizer, seed, **overrides):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, **overrides))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model.state_dict()


def test_average_is_the_weighted_mean(tmp_path, east_tokenizer):
    first = save_model(tmp_path / "a", east_tokenizer, seed=1)
    second = save_model(tmp_path / "b", east_tokenizer, seed=2)
    average([tmp_path / "a", tmp_path / "b"], tmp_path / "avg", weights=[3, 1])
    averaged = AutoModelForCausalLM.from_pretrained(tmp_path / "avg").state_dict()
    for name, tensor in averaged.items():
        torch.testing.assert_close(tensor, 0.75 * first[name] + 0.25 * second[name])
    assert (tmp_path / "avg" / "tokenizer.json").exists()
    main(["--inputs", str(tmp_path / "a"), str(tmp_path / "b"), "--output",
          str(tmp_path / "bf16"), "--save-dtype", "bfloat16"])  # fmt: skip
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16


def test_mismatched_checkpoints_are_named_and_nothing_is_written(tmp_path, east_tokenizer, capsys):
    save_model(tmp_path / "a", east_tokenizer, seed=1)
    save_model(tmp_path / "wide", east_tokenizer, seed=2, intermediate_size=96)
    said = rf"wide: config.json differs from {tmp_path / 'a'}'s in intermediate_size: not a"
    with pytest.raises(CheckpointMismatchError, match=said):
        average([tmp_path / "a", tmp_path / "wide"], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()
    assert not any(path.name.startswith(".avg") for path in tmp_path.iterdir())
    capsys.readouterr()  # the progress bars of saving the checkpoints
    with pytest.raises(SystemExit) as exit_info:
        main(["--inputs", str(tmp_path / "a"), "--output", str(tmp_path / "avg")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert (
        error == "python -m training.average_checkpoints: average needs at least two checkpoints\n"
    )
    with pytest.raises(ValueError, match="wide exists; choose a new output folder"):
        average([tmp_path / "a", tmp_path / "a"], tmp_path / "wide")


def test_checkpoints_of_another_model_are_refused_before_loading(tmp_path, east_tokenizer):
    """Before: averaged, the output taking the first input's tokenizer and config."""
    save_model(tmp_path / "a", east_tokenizer, seed=1)
    shutil.copytree(tmp_path / "a", tmp_path / "retokenized")
    vocabulary = json.loads((tmp_path / "retokenized" / "tokenizer.json").read_text())
    vocabulary["added_tokens"][-1]["content"] = "<|end-of-something|>"
    (tmp_path / "retokenized" / "tokenizer.json").write_text(json.dumps(vocabulary))
    said = f"retokenized: tokenizer.json holds another vocabulary than {tmp_path / 'a'}'s"
    with pytest.raises(CheckpointMismatchError, match=re.escape(said)):
        average([tmp_path / "a", tmp_path / "retokenized"], tmp_path / "avg")
    shutil.copytree(tmp_path / "a", tmp_path / "longer")
    config = json.loads((tmp_path / "longer" / "config.json").read_text())
    config["max_position_embeddings"] *= 2
    config["transformers_version"] = "0.0"  # how it was saved: no difference
    (tmp_path / "longer" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError, match="in max_position_embeddings: not a"):
        average([tmp_path / "longer", tmp_path / "a"], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


def test_tensors_of_other_names_or_shapes_are_named():
    """Configs alike, tensors not (a checkpoint edited by hand): named, not averaged."""
    from training.average_checkpoints import _check_same_tensors

    first = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    with pytest.raises(CheckpointMismatchError, match=r"y: tensors differ from x: missing \['b'\]"):
        _check_same_tensors(first, {"a": torch.zeros(2, 3)}, "x", "y")
    with pytest.raises(CheckpointMismatchError, match=r"y: tensor a has shape \(3, 2\), \(2, 3\)"):
        _check_same_tensors(first, {"a": torch.zeros(3, 2), "b": torch.zeros(4)}, "x", "y")


def test_weights_files_of_other_tensors_are_named_before_loading(tmp_path, east_tokenizer):
    """Configs alike, weights files not: before, a tensor one input lacked was made up by
    the load at random and averaged in (exit 0), and one of another shape was
    transformers' traceback (now read from the files' headers, before anything loads)."""
    from safetensors.torch import load_file, save_file

    save_model(tmp_path / "a", east_tokenizer, seed=1)
    for name in ("lacking", "reshaped"):
        shutil.copytree(tmp_path / "a", tmp_path / name)
    weights = load_file(tmp_path / "a" / "model.safetensors")
    down = "model.layers.0.mlp.down_proj.weight"
    lacking = {name: tensor for name, tensor in weights.items() if name != down}
    save_file(lacking, tmp_path / "lacking" / "model.safetensors", metadata={"format": "pt"})
    reshaped = {**weights, down: weights[down][:-1].clone()}
    save_file(reshaped, tmp_path / "reshaped" / "model.safetensors", metadata={"format": "pt"})
    for inputs in (["a", "lacking"], ["lacking", "a"]):
        said = f"lacking: its weights files lack {down} (1 tensors the load would make up at"
        with pytest.raises(CheckpointMismatchError, match=re.escape(said)):
            average([tmp_path / name for name in inputs], tmp_path / "avg")
    # a tied lm_head saved by one tool and not by another is one model (a review)
    save_model(tmp_path / "tied", east_tokenizer, seed=1, tie_word_embeddings=True)
    shutil.copytree(tmp_path / "tied", tmp_path / "headed")
    tied = load_file(tmp_path / "tied" / "model.safetensors")
    assert "lm_head.weight" not in tied
    headed = {**tied, "lm_head.weight": tied["model.embed_tokens.weight"].clone()}
    save_file(headed, tmp_path / "headed" / "model.safetensors", metadata={"format": "pt"})
    average([tmp_path / "tied", tmp_path / "headed"], tmp_path / "tied-average")
    assert (tmp_path / "tied-average" / "model.safetensors").exists()
    rows, columns = weights[down].shape
    said = f"reshaped: tensor {down} has shape ({rows - 1}, {columns}), ({rows}, {columns}) in"
    with pytest.raises(CheckpointMismatchError, match=re.escape(said)):
        average([tmp_path / "a", tmp_path / "reshaped"], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


def test_inputs_no_run_can_average_are_refused_before_loading(tmp_path, east_tokenizer):
    """Before: a NaN weight wrote an all-NaN model (exit 0); a LoRA adapter's factors
    were averaged one by one (not as updates); a missing folder was asked of the hub."""
    save_model(tmp_path / "a", east_tokenizer, seed=1)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    for inputs, weights, message in (
        (["a", "a"], [float("nan"), 1.0], r"need one positive weight per input, got \[nan"),
        (["a", "a"], [float("inf"), 1.0], r"need one positive weight per input, got \[inf"),
        (["a", "adapter"], None, "adapter is a LoRA adapter: merge it into its base first"),
        (["a", "nope"], None, "nope: no such checkpoint folder"),
        # before: "no such checkpoint folder"; and a checkpoint averaged with itself
        (["a", "a/config.json"], None, "config.json: a file, not a checkpoint folder"),
        (["a", "a/../a"], None, "a/../a: given twice \\(as .*a too\\); to count a checkpoint"),
    ):
        with pytest.raises(ValueError, match=message):
            average([tmp_path / name for name in inputs], tmp_path / "avg", weights)
    assert not (tmp_path / "avg").exists()


def test_a_save_dtype_wider_than_the_inputs_keeps_the_float32_average(tmp_path, east_tokenizer):
    """Before: the float32 average was cast to the first input's bfloat16, then saved as
    float32: bfloat16-rounded values."""
    states = []
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_llama_config(east_tokenizer)).to(torch.bfloat16)
        model.save_pretrained(tmp_path / name)
        east_tokenizer.save_pretrained(tmp_path / name)
        states.append(model.state_dict())
    average([tmp_path / "a", tmp_path / "b"], tmp_path / "avg", save_dtype="float32")
    averaged = AutoModelForCausalLM.from_pretrained(tmp_path / "avg", dtype=torch.float32)
    assert averaged.config.dtype == torch.float32
    for name, tensor in averaged.state_dict().items():
        expected = states[0][name].float() * 0.5 + states[1][name].float() * 0.5
        torch.testing.assert_close(tensor, expected, rtol=0, atol=0)


@pytest.mark.parametrize("command", ["average_checkpoints", "merge_lora"])
def test_an_output_inside_a_file_is_refused_before_loading(tmp_path, capsys, command):
    """Before: NotADirectoryError (a traceback) once the models were averaged or merged."""
    from training.merge_lora import main as merge_main

    (tmp_path / "file").write_text("mine")
    (tmp_path / "model").mkdir()
    output = tmp_path / "file" / "x"
    if command == "merge_lora":
        argv = ["--model-path", str(tmp_path / "model"), "--adapter-path", str(tmp_path / "model")]
        run = merge_main
    else:
        argv, run = ["--inputs", str(tmp_path / "model"), str(tmp_path / "model")], main
    with pytest.raises(SystemExit) as exit_info:
        run([*argv, "--output", str(output)])
    assert exit_info.value.code == 2
    message = (
        f"python -m training.{command}: --output {output}: inside a file "
        f"({tmp_path / 'file'} is a file, not a folder)\n"
    )
    assert capsys.readouterr().err == message


@pytest.mark.parametrize("diverged", ["a", "b"])
def test_an_input_of_nan_weights_is_refused(tmp_path, east_tokenizer, diverged):
    """Before: averaged in without a word, the average NaN where it was."""
    save_model(tmp_path / "a", east_tokenizer, seed=1)
    save_model(tmp_path / "b", east_tokenizer, seed=2)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / diverged)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    model.save_pretrained(tmp_path / diverged)
    with pytest.raises(ValueError, match=f"{diverged}: tensor model.norm.weight holds NaN"):
        average([tmp_path / "a", tmp_path / "b"], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


def test_a_unigram_vocabulary_is_compared_by_its_tokens_ids(tmp_path):
    """A sentencepiece-unigram tokenizer.json lists [token, score] pairs, a token's id its
    place (before: an AttributeError, its list taken for a BPE dictionary): the same
    pieces in another order are another vocabulary; other scores alone are not."""
    from tokenizers import Tokenizer, models

    from training.average_checkpoints import vocabulary

    orders = {
        "a": [("<unk>", 0.0), ("x", -1.0), ("y", -2.0)],
        "swapped": [("<unk>", 0.0), ("y", -2.0), ("x", -1.0)],
        "rescored": [("<unk>", 0.0), ("x", -1.5), ("y", -2.5)],
    }
    for name, pieces in orders.items():
        Tokenizer(models.Unigram(pieces, unk_id=0)).save(str(tmp_path / f"{name}.json"))
    tokens, added = vocabulary(tmp_path / "a.json")
    assert tokens == [("<unk>", 0), ("x", 1), ("y", 2)] and added == []
    assert vocabulary(tmp_path / "swapped.json") != vocabulary(tmp_path / "a.json")
    assert vocabulary(tmp_path / "rescored.json") == vocabulary(tmp_path / "a.json")
