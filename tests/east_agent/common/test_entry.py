"""A command's errors: the user's end in one line and exit 2, a program's keep their traceback."""

from __future__ import annotations

import pytest

from east_agent.common.entry import EXIT_USER_ERROR, CommandError, command_line
from east_agent.decoding.streaming import ContextOverflowError


def failing_with(error: Exception):
    @command_line("east-test")
    def main() -> None:
        raise error

    return main


@pytest.mark.parametrize(
    "error",
    [
        ValueError("--latency: 'fast' is not one of low, medium, high"),
        CommandError("runs failed: de-en-low: it failed"),
        ContextOverflowError("sentence 3 needs 700 tokens; the model has 512 positions"),
        FileNotFoundError("no such test set: wmt22.de"),
    ],
)
def test_a_users_error_is_one_line_and_exit_2(error, capsys):
    with pytest.raises(SystemExit) as stop:
        failing_with(error)()
    assert stop.value.code == EXIT_USER_ERROR
    assert capsys.readouterr().err == f"east-test: {error}\n"


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x64 and 32x64)"),
        KeyError("logits"),
    ],
)
def test_a_programs_error_keeps_its_traceback(error, capsys):
    with pytest.raises(type(error)) as raised:
        failing_with(error)()
    assert raised.value is error
    assert capsys.readouterr().err == ""
