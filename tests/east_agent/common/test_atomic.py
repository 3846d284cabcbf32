"""Files and folders replaced in one step: never torn, leftovers of dead writers removed."""

import errno
import multiprocessing
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from east_agent.common import atomic
from east_agent.common.atomic import (
    append_atomically,
    atomic_path,
    check_folder_path,
    check_replaceable,
    temporary_beside,
    write_atomically,
)


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


def test_a_full_disk_is_named_by_the_file_written_not_its_temporary(tmp_path):
    table = tmp_path / "results.md"
    with pytest.raises(OSError) as raised, atomic_path(table) as temporary:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(temporary))
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(table))
    assert os.listdir(tmp_path) == []  # the temporary removed
    with pytest.raises(FileNotFoundError) as raised, atomic_path(table):
        open(tmp_path / "elsewhere" / "x")  # another file's error: as it was
    assert raised.value.filename == str(tmp_path / "elsewhere" / "x")


def null_device(path: Path) -> Path:
    """A character device like /dev/null at `path` (skipped where this user cannot make one)."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("no permission to make a device node")
    return path


def test_a_device_is_written_into_never_replaced(tmp_path):
    """Before: `--output /dev/null` replaced the system's /dev/null with a regular file."""
    device = null_device(tmp_path / "null")
    link = tmp_path / "stdout"
    link.symlink_to(device)
    for path in (device, link):
        write_atomically(path, "table\n")
        append_atomically(path, "row\n")
    assert stat.S_ISCHR(device.stat().st_mode) and link.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["null", "stdout"]  # no temporary left


def test_a_link_to_a_process_open_file_is_written_into(tmp_path):
    """`--output /dev/stdout` with stdout redirected to a log (`>> log`): the tables go
    into the log, after what it holds (before: the link replaced by a file)."""
    log = tmp_path / "log"
    log.write_text("earlier\n")
    with open(log, "ab") as stdout:
        link = tmp_path / "stdout"
        link.symlink_to(f"/proc/self/fd/{stdout.fileno()}")
        write_atomically(link, "table\n")
        append_atomically(link, "row\n")
    assert link.is_symlink() and log.read_text() == "earlier\ntable\nrow\n"


def test_no_temporary_is_made_beside_a_device(tmp_path, monkeypatch):
    """Before: /dev/.null.PID.tmp (refused to anyone but root, left by a kill)."""
    device = null_device(tmp_path / "null")
    monkeypatch.setattr(atomic, "temporary_beside", lambda *a: pytest.fail("made beside"))
    write_atomically(device, "table\n")
    with pytest.raises(IsADirectoryError), atomic_path(device) as temporary:
        temporary.mkdir()  # a folder: refused, the device kept
    assert stat.S_ISCHR(device.stat().st_mode)


def test_a_pipe_is_written_into(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    read = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_text()), daemon=True)
    reader.start()
    append_atomically(fifo, "row\n")  # before: its read-back blocked, then it was replaced
    reader.join(timeout=10)
    assert read == ["row\n"] and stat.S_ISFIFO(fifo.stat().st_mode)


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


def dead_pid():
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    return int(ended.stdout)


def age(path, hours):
    past = time.time() - hours * 3600
    os.utime(path, (past, past))


def test_leftovers_of_dead_writers_go_and_others_stay(tmp_path):
    """Removed: an hour-old leftover of a process gone. Kept: a live process's, a fresh
    one (a writer on another machine sharing the folder), a sibling's (`data.jsonl.7`)."""
    data = tmp_path / "data.jsonl"
    dead = dead_pid()
    crashed = tmp_path / f".data.jsonl.{dead}.tmp"
    kept = [
        tmp_path / f".data.jsonl.{os.getppid()}.tmp",
        tmp_path / f".data.jsonl.{dead + 1}.tmp",
        tmp_path / f".data.jsonl.7.{dead}.tmp",
        tmp_path / ".data.jsonl.notes.tmp",
    ]
    for leftover in (crashed, *kept):
        leftover.write_text("partial")
        age(leftover, 2)
    age(kept[1], 0)
    write_atomically(data, "{}\n")
    assert not crashed.exists() and all(leftover.exists() for leftover in kept)
    assert data.read_text() == "{}\n"


@pytest.mark.parametrize("tag", ["dead", "shared"])
def test_an_old_folder_set_aside_comes_back_where_the_new_one_never_arrived(tmp_path, tag):
    """Killed between the two renames of the fall-back `install`: the next write puts the
    old folder back before it starts (its own, a dead process's, or the shared name's)."""
    model = tmp_path / "model"
    middle = f".{dead_pid()}" if tag == "dead" else ""
    aside = tmp_path / f".model{middle}.tmp.old.tmp"
    folder_of(aside, ["weights"], "old")
    age(aside, 2)
    temporary_beside(model, private=tag == "dead")
    assert contents(model) == {"weights": "old"} and not aside.exists()


def test_a_folder_that_cannot_be_renamed_is_still_replaced(tmp_path, monkeypatch):
    """overlayfs: a folder of a lower image layer cannot be renamed (EXDEV); it is deleted
    first, as before the exchange."""
    model = tmp_path / "model"
    folder_of(model, ["weights"], "old")
    real_replace = os.replace

    def no_rename_of_the_old(source, target):
        if Path(source) == model:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(source))
        real_replace(source, target)

    monkeypatch.setattr(atomic, "exchange", lambda one, other: False)
    monkeypatch.setattr(os, "replace", no_rename_of_the_old)
    with atomic_path(model) as temporary:
        folder_of(temporary, ["weights"], "new")
    assert contents(model) == {"weights": "new"} and os.listdir(tmp_path) == ["model"]


def test_appends_at_once_are_all_kept(tmp_path):
    """Six writers each append 20 lines by rewriting the file whole; none loses another's
    (without the lock, a writer renames in a file read before another's rename)."""
    output = tmp_path / "RESULTS.md"
    output.write_text("# Results\n")
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=append_many, args=(output, n)) for n in range(6)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
    assert [writer.exitcode for writer in writers] == [0] * 6
    lines = output.read_text().splitlines()
    assert lines[0] == "# Results"
    assert sorted(lines[1:]) == sorted(f"{n} {i}" for n in range(6) for i in range(20))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["RESULTS.md"]


def append_many(output: Path, writer: int) -> None:
    for line in range(20):
        append_atomically(output, f"{writer} {line}\n")


def test_a_folder_is_never_replaced_by_a_file(tmp_path):
    """Before: the folder was swapped out and deleted, whatever it held."""
    folder_of(tmp_path / "data", ["corpus.de"], "mine")
    with pytest.raises(IsADirectoryError, match="a folder, not replaced by a file"):
        write_atomically(tmp_path / "data", "records\n")
    assert contents(tmp_path / "data") == {"corpus.de": "mine"}
    assert os.listdir(tmp_path) == ["data"]  # the temporary file removed


def test_a_folder_where_a_file_is_removed_is_refused_not_deleted(tmp_path):
    """Before: `scores.tsv/` (a folder of the user's) deleted with all it held, exit 0."""
    folder_of(tmp_path / "scores.tsv", ["notes.txt"], "mine")
    with pytest.raises(IsADirectoryError, match="a folder where this command keeps a file, not"):
        atomic.remove(tmp_path / "scores.tsv")
    assert contents(tmp_path / "scores.tsv") == {"notes.txt": "mine"}
    atomic.remove(tmp_path / "nothing-there")  # nothing to remove: nothing said
    atomic.remove_tree(tmp_path / "scores.tsv")  # a folder this package made
    assert os.listdir(tmp_path) == []


def test_a_folder_to_write_that_cannot_be_one_is_said_in_the_words_of_every_refusal(tmp_path):
    """One phrasing for a path that is no folder, here and for a model or adapter folder
    (before, here: "a link to nothing (X)")."""
    (tmp_path / "afile").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    check_folder_path(tmp_path / "new" / "run", "--output")  # made when written
    gone = f"a broken link, to {tmp_path / 'gone'}, which is not there"
    for folder, said in (
        (tmp_path / "afile", "a file, not a folder"),
        (
            tmp_path / "afile" / "run",
            f"inside a file ({tmp_path / 'afile'} is a file, not a folder)",
        ),
        (tmp_path / "link", gone),
        (tmp_path / "link" / "run", f"{tmp_path / 'link'} is {gone}"),
    ):
        with pytest.raises(ValueError) as refused:
            check_folder_path(folder, "--output")
        assert str(refused.value) == f"--output {folder}: {said}"


def test_only_an_output_of_the_same_kind_is_replaceable(tmp_path):
    folder_of(tmp_path / "notes", ["notes.txt"], "mine")
    folder_of(tmp_path / "model", ["config.json", "tokenizer_config.json"], "{}")
    (tmp_path / "data.jsonl").write_text("{}\n")
    check_replaceable(tmp_path / "model", "model folder", ("config.json", "tokenizer_config.json"))
    check_replaceable(tmp_path / "data.jsonl", "JSON Lines file")  # a file: replaced
    check_replaceable(tmp_path / "new", "JSON Lines file")
    with pytest.raises(ValueError, match="notes is a folder, not a model folder \\(no config"):
        check_replaceable(tmp_path / "notes", "model folder", ("config.json",))
    with pytest.raises(ValueError, match="model is a folder, not a JSON Lines file: writing"):
        check_replaceable(tmp_path / "model", "JSON Lines file")


@pytest.mark.parametrize("can_rename_without_replacing", [True, False])
def test_a_new_path_is_never_put_over_one_that_appeared_meanwhile(
    tmp_path, monkeypatch, can_rename_without_replacing
):
    """`atomic_path(new=True)`: a folder someone made while this one was written stays,
    and the temporary one goes (with renameat2's RENAME_NOREPLACE, or without it)."""
    if not can_rename_without_replacing:
        monkeypatch.setattr(atomic, "_renameat2", lambda one, other, flags: False)
    target = tmp_path / "out"
    with atomic.atomic_path(target, new=True) as temporary:
        temporary.mkdir()
        (temporary / "ours").write_text("1")
    assert (target / "ours").read_text() == "1"
    with pytest.raises(FileExistsError):
        with atomic.atomic_path(tmp_path / "other", new=True) as temporary:
            temporary.mkdir()
            (tmp_path / "other").mkdir()
            (tmp_path / "other" / "theirs").write_text("2")
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["theirs"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "out"]
