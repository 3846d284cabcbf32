"""What the SimulEval agents share (`east_agent.simuleval_glue.adapter`)."""

import argparse
import os
import shutil


def test_the_checks_tokenizer_loads_once_while_its_files_stay(east_checkpoint, tmp_path):
    """SimulEval's loop checks before its folder changes and again as it builds the agent:
    one load; a tokenizer file changed since is read again."""
    from east_agent.simuleval_glue import adapter

    folder = tmp_path / "checkpoint"
    shutil.copytree(east_checkpoint, folder)
    args = argparse.Namespace(model_path=str(folder), trust_remote_code=False)
    first = adapter.checkpoint_tokenizer(args)()
    assert adapter.checkpoint_tokenizer(args)() is first
    tokenizer_file = folder / "tokenizer.json"
    os.utime(tokenizer_file, ns=(0, tokenizer_file.stat().st_mtime_ns + 1_000_000))
    assert adapter.checkpoint_tokenizer(args)() is not first
