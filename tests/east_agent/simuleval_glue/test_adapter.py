"""What the SimulEval agents share (`east_agent.simuleval_glue.adapter`)."""

import argparse
import os
import shutil

import pytest


def test_the_checks_tokenizer_loads_once_while_its_files_stay(
    east_checkpoint, tmp_path, monkeypatch
):
    """SimulEval's loop checks before its folder changes and again as it builds the agent
    (a system folder's agent inside the folder, naming the model `model`): one load; a
    tokenizer file changed since is read again."""
    from east_agent.simuleval_glue import adapter

    folder = tmp_path / "checkpoint"
    shutil.copytree(east_checkpoint, folder)
    args = argparse.Namespace(model_path=str(folder), trust_remote_code=False)
    first = adapter.checkpoint_tokenizer(args)()
    assert adapter.checkpoint_tokenizer(args)() is first
    monkeypatch.chdir(tmp_path)
    relative = argparse.Namespace(model_path="checkpoint", trust_remote_code=False)
    assert adapter.checkpoint_tokenizer(relative)() is first
    tokenizer_file = folder / "tokenizer.json"
    os.utime(tokenizer_file, ns=(0, tokenizer_file.stat().st_mtime_ns + 1_000_000))
    assert adapter.checkpoint_tokenizer(args)() is not first


@pytest.mark.parametrize("prompt", ["east", "offline"])
def test_the_model_loads_with_the_tokenizer_the_checks_loaded(east_checkpoint, monkeypatch, prompt):
    """The agents' `load` takes the checks' tokenizer (before: loaded again, a second of each
    run with a Llama-3 tokenizer); both wait-k prompts' paths and the EAST agent's."""
    from east_agent.decoding.waitk import WaitkConfig
    from east_agent.lm import checkpoint
    from east_agent.simuleval_glue import adapter
    from east_agent.waitk_agent import WaitkAgent

    args = argparse.Namespace(
        model_path=str(east_checkpoint), trust_remote_code=False, adapter_path=None,
        torch_dtype="float32", device="cpu",
    )  # fmt: skip
    checked = adapter.checkpoint_tokenizer(args)()
    loads = []
    real_load = checkpoint.load_tokenizer
    monkeypatch.setattr(checkpoint, "load_tokenizer", lambda *a: loads.append(a) or real_load(*a))
    config = WaitkConfig(src_lang="de", tgt_lang="en", waitk=3, prompt=prompt)
    model, tokenizer = WaitkAgent.load(args, config)
    assert tokenizer is checked and not loads
    assert model.config.vocab_size == len(tokenizer)


def test_a_mistyped_relative_model_path_is_one_line_at_once(tmp_path):
    """`models/east-dem` from a folder without `models/` reads as a hub id: asked of the hub
    once (before: the loaders' retries, 48 s and some 40 warning lines, then the refusal)."""
    import subprocess

    from commands import AGENT_FILE, console_script, write_toy_test_set

    write_toy_test_set(tmp_path, 2, seed=5)
    output = tmp_path / "out"
    result = subprocess.run(
        [
            console_script("east-simuleval"), "--agent", AGENT_FILE,
            "--model-path", "models/east-dem", "--src-lang", "de", "--tgt-lang", "en",
            "--source", "src.txt", "--target", "ref.txt", "--output", "out", "--device", "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        # a hub that answers nothing, at once (the tests run offline otherwise)
        env={**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    said = "east-simuleval: --model-path 'models/east-dem': no such folder here ("
    assert result.stderr.startswith(said) and "Retry" not in result.stderr
    assert not output.exists()
