"""merge_lora and average_checkpoints on model folders that cannot be what they need:
refused in one line naming the folder (before: IndexError, OSError, SafetensorError)."""

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM

from tiny_east import build_chat_llama3_tokenizer, tiny_llama_config
from training.average_checkpoints import main as average_main
from training.merge_lora import main as merge_main
from training.sft import add_east_tokens


def save_model(path: Path, east: bool) -> Path:
    tokenizer = build_chat_llama3_tokenizer()
    if east:
        add_east_tokens(tokenizer)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_adapter(path: Path) -> Path:
    """A LoRA adapter of an EAST model, its tokenizer beside it (as Stage II saves it); its
    base named as a folder that is not here, so no base is compared with it."""
    tokenizer = build_chat_llama3_tokenizer()
    add_east_tokens(tokenizer)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer))
    model.name_or_path = "/elsewhere/stage1/model"
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], task_type="CAUSAL_LM")
    get_peft_model(model, lora).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def one_line_error(main, argv: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err  # after the progress bars of loading a good input
    assert error.endswith("\n"), error
    return error.splitlines()[-1]


def truncate(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:999])


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return save_adapter(tmp_path_factory.mktemp("adapter") / "stage2")


@pytest.mark.parametrize("fault", ["no EAST tokens", "an adapter", "no weights", "truncated"])
def test_merge_refuses_a_base_it_cannot_merge_into(tmp_path, adapter, capsys, fault):
    base = tmp_path / "base"
    if fault == "an adapter":
        base = adapter
        message = f"--model-path {base} is a LoRA adapter"
    else:
        save_model(base, east=fault != "no EAST tokens")
        message = {
            "no EAST tokens": f"--model-path {base}: the tokenizer has no <|end-of-read|>",
            "no weights": f"--model-path {base}: no weights file",
            "truncated": f"--model-path {base}: cannot be loaded (SafetensorError",
        }[fault]
    if fault == "no weights":
        (base / "model.safetensors").unlink()
    if fault == "truncated":
        truncate(base)
    argv = [
        "--model-path",
        str(base),
        "--adapter-path",
        str(adapter),
        "--output",
        str(tmp_path / "out"),
    ]
    error = one_line_error(merge_main, argv, capsys)
    assert error.startswith(f"python -m training.merge_lora: {message}"), error
    assert not (tmp_path / "out").exists()


def test_merge_names_an_adapter_path_that_is_a_file_as_the_agent_does(tmp_path, capsys):
    """Before: a file was "no such folder" here, "has no adapter_config.json" to the agent;
    a base that is a file or a broken link "no such folder"."""
    base = save_model(tmp_path / "base", east=True)
    (tmp_path / "adapter").write_text("")
    argv = ["--model-path", str(base), "--adapter-path", str(tmp_path / "adapter")]
    error = one_line_error(merge_main, [*argv, "--output", str(tmp_path / "out")], capsys)
    said = f"--adapter-path {tmp_path / 'adapter'}: a file, not a folder"
    assert error == f"python -m training.merge_lora: {said}"
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    for path, why in (
        (tmp_path / "adapter", "a file, not a folder"),
        (tmp_path / "link", f"a broken link, to {tmp_path / 'gone'}, which is not there"),
    ):
        argv = ["--model-path", str(path), "--adapter-path", str(tmp_path / "adapter")]
        error = one_line_error(merge_main, [*argv, "--output", str(tmp_path / "out")], capsys)
        assert error == f"python -m training.merge_lora: --model-path {path}: {why}"


def test_merge_refuses_an_adapter_without_its_weights(tmp_path, adapter, capsys):
    base = save_model(tmp_path / "base", east=True)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_bytes((adapter / "adapter_config.json").read_bytes())
    argv = [
        "--model-path",
        str(base),
        "--adapter-path",
        str(broken),
        "--output",
        str(tmp_path / "out"),
    ]
    error = one_line_error(merge_main, argv, capsys)
    assert error.startswith(
        f"python -m training.merge_lora: --adapter-path {broken}: no weights file"
    )


def test_merge_takes_the_agents_flag_names_and_the_old_ones(tmp_path, adapter, capsys):
    """--model-path/--adapter-path as everywhere else (before: --base/--adapter, still
    taken for a release and hidden from --help)."""
    base = save_model(tmp_path / "base", east=False)
    error = one_line_error(merge_main, ["--output", str(tmp_path / "out")], capsys)
    assert error.endswith("the following arguments are required: --model-path, --adapter-path")
    argv = ["--adapter-path", str(adapter), "--output", str(tmp_path / "out")]
    assert one_line_error(merge_main, argv, capsys).endswith("required: --model-path")
    old = ["--base", str(base), "--adapter", str(adapter), "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        merge_main(old)
    said = capsys.readouterr().err.splitlines()
    assert said[:2] == [
        "python -m training.merge_lora: --base is the old spelling of --model-path",
        "python -m training.merge_lora: --adapter is the old spelling of --adapter-path",
    ]
    assert said[-1].startswith(f"python -m training.merge_lora: --model-path {base}: the tokenizer")
    with pytest.raises(SystemExit):
        merge_main(["--help"])
    assert "--base" not in capsys.readouterr().out


@pytest.mark.parametrize("fault", ["no weights", "truncated"])
def test_average_refuses_an_incomplete_input(tmp_path, capsys, fault):
    good, bad = save_model(tmp_path / "a", east=True), save_model(tmp_path / "b", east=True)
    if fault == "no weights":
        (bad / "model.safetensors").unlink()
        message = f"--inputs {bad}: no weights file"
    else:
        truncate(bad)  # read from its header before anything loads: the file named
        message = f"--inputs {bad}: model.safetensors cannot be loaded (SafetensorError"
    argv = ["--inputs", str(good), str(bad), "--output", str(tmp_path / "avg")]
    error = one_line_error(average_main, argv, capsys)
    assert error.startswith(f"python -m training.average_checkpoints: {message}"), error
    assert not (tmp_path / "avg").exists()
