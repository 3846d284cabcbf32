"""Each training command names itself as it is run (`python -m training.sft`), in its usage
line and in its one-line errors, not by its file's name."""

from __future__ import annotations

import importlib

import pytest

COMMANDS = ["average_checkpoints", "base_model", "build_data", "demo", "merge_lora", "sft"]


@pytest.mark.parametrize("name", COMMANDS)
def test_usage_and_errors_name_the_command_as_it_is_run(name, capsys):
    module = importlib.import_module(f"training.{name}")
    with pytest.raises(SystemExit) as exit_help:
        module.main(["--help"])
    assert exit_help.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m training.{name} ")
    with pytest.raises(SystemExit) as exit_bad_flag:
        module.main(["--no-such-flag"])
    assert exit_bad_flag.value.code == 2
    assert f"python -m training.{name}: error: " in capsys.readouterr().err
