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


@pytest.mark.parametrize("kind", ["a folder", "inside a file", "unreadable"])
def test_a_file_of_the_wrong_kind_or_unreadable_is_one_line(tmp_path, capsys, kind):
    """Before: IsADirectoryError, NotADirectoryError and PermissionError tracebacks (a
    `chmod 000` corpus, a folder where east-prepare writes a file)."""
    (tmp_path / "file").write_text("x")
    path = {"a folder": tmp_path, "inside a file": tmp_path / "file" / "sub"}.get(kind)

    @command_line("east-test")
    def main() -> None:
        if path is None:  # root reads a chmod-000 file: the error as open() raises it
            raise PermissionError(13, "Permission denied", str(tmp_path / "file"))
        open(path).close()

    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == EXIT_USER_ERROR
    error = capsys.readouterr().err
    assert error.startswith("east-test: [Errno") and error.count("\n") == 1
