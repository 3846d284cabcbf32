"""Loading checkpoints and adapters, and refusing what is not an EAST checkpoint."""

import re

import pytest
import torch
from peft import LoraConfig, get_peft_model

from east_agent.lm.checkpoint import (
    CheckpointError,
    east_token_ids,
    load_east_checkpoint,
    merge_adapter,
    resolve_dtype,
)
from tiny_east import build_chat_llama3_tokenizer, tiny_llama_config


def test_east_token_ids_of_the_llama3_format(east_tokenizer):
    ids = east_token_ids(east_tokenizer, generation_eos=[128001, 128009])
    assert (ids.end_of_read, ids.end_of_write) == (128256, 128257)
    assert ids.eos == (128009, 128001)
    assert set(ids.read_suppressed) == {128009, 128001, 128257, 128000}
    assert set(ids.write_suppressed) == {128256, 128000}
    assert set(ids.write_stops) == {128009, 128001, 128257}


def test_tokenizer_without_east_tokens_is_not_an_east_checkpoint(tmp_path):
    from transformers import LlamaForCausalLM

    plain = build_chat_llama3_tokenizer()
    plain.chat_template = None
    LlamaForCausalLM(tiny_llama_config(plain, num_hidden_layers=1)).save_pretrained(tmp_path)
    plain.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no <\\|end-of-read\\|> / <\\|end-of-write\\|>"):
        load_east_checkpoint(tmp_path)


def test_missing_model_path(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_east_checkpoint(tmp_path / "nowhere")


def test_local_looking_path_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(CheckpointError, match="'models/east' does not exist"):
        load_east_checkpoint("models/east")


def test_unreachable_hub_id_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="'no-org/no-model': no such folder here .*offline"):
        load_east_checkpoint("no-org/no-model")


def test_a_hub_id_the_hub_does_not_give_is_asked_once(monkeypatch, tmp_path):
    """Before: the loaders retried for about 50 s without a network, then a traceback."""
    import huggingface_hub

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    asked = []

    def no_network(name, timeout=None):
        asked.append(name)
        raise ConnectionError("no network")

    monkeypatch.setattr(huggingface_hub, "model_info", no_network)
    said = "model_path 'no-org/no-model': no such folder here .* the hub gives none"
    with pytest.raises(CheckpointError, match=said + r" \(ConnectionError: no network\)"):
        load_east_checkpoint("no-org/no-model")
    assert asked == ["no-org/no-model"]


def test_a_device_this_machine_lacks_is_refused_before_the_load(east_checkpoint):
    """Before: `AssertionError: Torch not compiled with CUDA enabled` from the load."""
    with pytest.raises(CheckpointError, match=r"^device: 'cuda:99': this machine has no "):
        load_east_checkpoint(east_checkpoint, device="cuda:99")
    # a torch.device, as `.to()` takes it, loads as before
    model, _ = load_east_checkpoint(east_checkpoint, device=torch.device("cpu"))
    assert model.device.type == "cpu"


def test_a_torch_dtype_is_taken_as_its_name(east_checkpoint):
    """As transformers takes it (before: `unknown --torch-dtype torch.bfloat16`)."""
    model, _ = load_east_checkpoint(east_checkpoint, torch_dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16


def test_model_path_that_is_a_file(tmp_path):
    path = tmp_path / "model.bin"
    path.write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        load_east_checkpoint(path)


def test_model_path_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_east_checkpoint(tmp_path)


def test_checkpoint_loads_for_inference(east_checkpoint, east_model):
    model, tokenizer = load_east_checkpoint(east_checkpoint)
    assert not model.training
    assert model.dtype == torch.float32  # "auto" on CPU
    ids = torch.tensor([[128000, 128006, 882]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, east_model(ids).logits)
    assert east_token_ids(tokenizer).end_of_read == 128256


def test_lora_adapter_is_merged(east_checkpoint, east_model, tmp_path):
    peft_model = get_peft_model(
        load_east_checkpoint(east_checkpoint)[0],
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # a trained adapter: B is no longer zero
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[128000, 128006, 882, 128007, 271]])
    with torch.no_grad():
        expected = peft_model(ids).logits
        merged, _ = load_east_checkpoint(east_checkpoint, adapter_path=tmp_path / "adapter")
        actual = merged(ids).logits
        base = east_model(ids).logits
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(actual, base, atol=1e-3)


def test_adapter_path_without_adapter_config(east_model, tmp_path):
    with pytest.raises(CheckpointError, match="no adapter_config.json"):
        merge_adapter(east_model, tmp_path)


@pytest.mark.parametrize(
    "kind, said",
    [
        ("missing", "no such folder"),
        ("file", "a file, not a folder"),  # before: "has no adapter_config.json"
        ("broken link", "a broken link, to {tmp_path}/gone, which is not there"),
        ("folder", "no adapter_config.json (not a peft adapter)"),
    ],
)
def test_an_adapter_path_that_is_no_adapter_folder_is_named_as_given(tmp_path, kind, said):
    """One message for each, naming the flag and the path as given, whichever command
    checks it (before: "adapter path '...' does not exist" here, "--adapter-path ...: no
    such folder" from merge_lora)."""
    from east_agent.lm.checkpoint import check_adapter_path

    path = tmp_path / "adapter"
    if kind == "file":
        path.write_text("")
    elif kind == "broken link":
        path.symlink_to(tmp_path / "gone")
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(CheckpointError) as refused:
        check_adapter_path(str(path), "--adapter-path")
    assert str(refused.value) == f"--adapter-path {path}: " + said.format(tmp_path=tmp_path)


@pytest.mark.parametrize("fault", ["another rank", "no weights", "config cut off"])
def test_an_adapter_that_would_not_load_is_refused_before_the_model(
    east_checkpoint, tmp_path, fault
):
    """Before: peft's state-dict traceback (another rank), a hub error naming no file (no
    weights), a bare JSON message (a cut config), each once the model had loaded and the
    run's folder been begun."""
    from east_agent.lm.checkpoint import check_adapter_path

    peft_model = get_peft_model(
        load_east_checkpoint(east_checkpoint)[0],
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    check_adapter_path(adapter)  # whole: taken
    config = adapter / "adapter_config.json"
    if fault == "another rank":
        config.write_text(config.read_text().replace('"r": 4', '"r": 8'))
        said = f"--adapter-path {adapter}: base_model.model.model.layers.0.self_attn.q_proj.lora_A."
        said += "weight is of rank 4, but adapter_config.json says r: 8"
    elif fault == "no weights":
        (adapter / "adapter_model.safetensors").unlink()
        said = f"--adapter-path {adapter}: no weights file (adapter_model.safetensors or "
    else:
        config.write_text(config.read_text()[:100])
        said = f"{config}: line "
    with pytest.raises(ValueError) as raised:
        check_adapter_path(adapter)
    assert str(raised.value).startswith(said)


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="unknown --torch-dtype 'fp8'"):
        resolve_dtype("fp8", "cpu")
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype("auto", "cuda") == "auto"


def test_a_weights_file_cut_off_is_one_line_naming_the_folder(east_checkpoint, tmp_path):
    """Before: a SafetensorError traceback (east-simuleval, east-eval, east-demo, east-bench)."""
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(east_checkpoint, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    said = f"--model-path {cut}: model.safetensors cannot be loaded (SafetensorError"
    with pytest.raises(ValueError, match=re.escape(said)):
        load_east_checkpoint(cut)


@pytest.mark.parametrize(
    ("file", "content"),
    [("generation_config.json", "{nope"), ("config.json", '{"a":')],
)
def test_a_config_that_does_not_read_is_one_line_before_the_tokenizer_loads(
    east_checkpoint, tmp_path, file, content
):
    """Before (east-bench, the Python API): the tokenizer's traceback for config.json; for
    generation_config.json the model loaded and ran, then a reshape error."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(east_checkpoint, broken)
    (broken / file).write_text(content)
    said = f"--model-path {broken}: {file} cannot be loaded ("
    with pytest.raises(ValueError, match=re.escape(said)):
        load_east_checkpoint(broken)


def test_weights_of_other_shapes_than_the_config_are_one_line_naming_the_folder(
    east_checkpoint, tmp_path
):
    """Before: transformers' RuntimeError traceback ("You set `ignore_mismatched_sizes` to
    `False`"), after its load report."""
    import json
    import shutil

    edited = tmp_path / "edited"
    shutil.copytree(east_checkpoint, edited)
    config = json.loads((edited / "config.json").read_text())
    config["intermediate_size"] *= 2
    (edited / "config.json").write_text(json.dumps(config))
    said = f"--model-path {edited}: cannot be loaded: its weights are not of the shapes its "
    with pytest.raises(ValueError, match=re.escape(said)):
        load_east_checkpoint(edited)


def test_a_folders_config_and_weights_headers_are_read_without_loading(east_checkpoint, tmp_path):
    """What east-package-system reads of a model folder (no weights load): each
    safetensors file a load reads, a sharded checkpoint's shards too, and its config."""
    import json
    import re
    import shutil

    from east_agent.lm.checkpoint import check_config, check_weights_readable

    check_weights_readable(east_checkpoint, "--model-path")
    check_config(east_checkpoint, "--model-path")
    sharded = tmp_path / "sharded"
    shutil.copytree(east_checkpoint, sharded)
    first, second = (f"model-0000{n}-of-00002.safetensors" for n in (1, 2))
    (sharded / "model.safetensors").rename(sharded / first)
    index = {"metadata": {}, "weight_map": {"a.weight": first, "b.weight": second}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    said = f"--model-path {sharded}: {second} cannot be loaded (FileNotFoundError"
    with pytest.raises(ValueError, match=re.escape(said)):
        check_weights_readable(sharded, "--model-path")
    shutil.copyfile(sharded / first, sharded / second)
    check_weights_readable(sharded, "--model-path")
    cut = sharded / second
    cut.write_bytes(cut.read_bytes()[:-8])
    said = f"--model-path {sharded}: {second} cannot be loaded (SafetensorError: Error while "
    with pytest.raises(ValueError, match=re.escape(said)):
        check_weights_readable(sharded, "--model-path")
    # a config transformers does not validate (before: huggingface_hub's traceback)
    config = json.loads((sharded / "config.json").read_text())
    heads = config["num_attention_heads"]
    (sharded / "config.json").write_text(json.dumps({**config, "hidden_size": heads * 8 + 1}))
    said = f"--model-path {sharded}: config.json cannot be loaded ("
    with pytest.raises(ValueError, match=re.escape(said)) as refused:
        check_config(sharded, "--model-path")
    assert f"hidden size ({heads * 8 + 1}) is not a multiple of the number of attention" in str(
        refused.value
    )
    (sharded / "config.json").write_text(json.dumps(config))
    check_config(sharded, "--model-path")
    # a generation config that is not JSON (before: passed over by the load, its eos ids too)
    (sharded / "generation_config.json").write_text("{")
    said = f"--model-path {sharded}: generation_config.json cannot be loaded (OSError: It looks"
    with pytest.raises(ValueError, match=re.escape(said)):
        check_config(sharded, "--model-path")
    (sharded / "config.json").write_text("{not json")
    said = f"--model-path {sharded}: config.json cannot be loaded (OSError: It looks like"
    with pytest.raises(ValueError, match=re.escape(said)):
        check_config(sharded, "--model-path")
