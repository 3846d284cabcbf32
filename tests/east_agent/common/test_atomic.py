"""Files and folders replaced in one step: never torn, leftovers of dead writers removed."""

import os
import subprocess
import sys

import pytest

from east_agent.common import atomic
from east_agent.common.atomic import atomic_path, temporary_beside, write_atomically


def folder_of(path, names, text):
    path.mkdir()
    for name in names:
        (path / name).write_text(text)


def contents(path):
    return {entry.name: entry.read_text() for entry in path.iterdir()}


def test_a_file_is_replaced_and_a_failed_write_leaves_the_old_one(tmp_path):
    table = tmp_path / "results.md"
    write_atomically(table, "old\n")
    with pytest.raises(RuntimeError), atomic_path(table) as temporary:
        temporary.write_text("half")
        raise RuntimeError("killed")
    assert table.read_text() == "old\n"
    write_atomically(table, "new\n")
    assert table.read_text() == "new\n" and os.listdir(tmp_path) == ["results.md"]


@pytest.mark.parametrize("can_exchange", [True, False])
def test_a_folder_cut_off_while_the_old_one_is_deleted_is_whole(
    tmp_path, monkeypatch, can_exchange
):
    """The old folder is deleted only once the new one is in place: an interruption while
    it is deleted leaves the new folder whole (before, the old one was deleted in place and
    an interruption left part of it)."""
    model = tmp_path / "model"
    folder_of(model, [f"old-{index}" for index in range(20)], "old")
    if not can_exchange:  # a system without renameat2's exchange: the folder goes aside
        monkeypatch.setattr(atomic, "exchange", lambda one, other: False)
    real_unlink = os.unlink
    deleted = []

    def interrupted_unlink(path, *args, **kwargs):
        real_unlink(path, *args, **kwargs)
        deleted.append(path)
        if len(deleted) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "unlink", interrupted_unlink)
    with pytest.raises(KeyboardInterrupt), atomic_path(model) as temporary:
        folder_of(temporary, ["new"], "new")
    monkeypatch.undo()
    assert len(deleted) == 5 and contents(model) == {"new": "new"}
    temporary_beside(model)  # the next write removes what was left of the old folder
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_leftovers_of_dead_writers_go_and_live_ones_stay(tmp_path):
    data = tmp_path / "data.jsonl"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_leftover = tmp_path / f".data.jsonl.{dead.stdout.strip()}.tmp"
    live_leftover = tmp_path / f".data.jsonl.{os.getppid()}.tmp"
    other_file = tmp_path / ".data.jsonl.notes.tmp"
    for leftover in (dead_leftover, live_leftover, other_file):
        leftover.write_text("partial")
    write_atomically(data, "{}\n")
    assert not dead_leftover.exists() and live_leftover.exists() and other_file.exists()
    assert data.read_text() == "{}\n"
