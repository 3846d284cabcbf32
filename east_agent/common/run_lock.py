"""One writer per run folder: a lock held while a process writes there.

`hold_run_lock(folder, name)` takes an exclusive `flock` on `folder/name` and records who
holds it (process id, command, start time). A second process asking for the same lock is
refused with that record named. The kernel drops the lock when its holder dies, however it
dies, so the lock of a killed process is simply taken over: there is never a stale lock to
delete by hand.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from east_agent.common.entry import CommandError

RUN_LOCK = "run.lock"  # a run of a grid (`east-eval`, `east-demo`)
GRID_LOCK = "grid.lock"  # a grid's output folder (`east_agent.evaluation.grid`)


class RunFolderBusyError(CommandError):
    """Another live process is writing to the folder."""


@contextmanager
def hold_run_lock(folder: Path, name: str = RUN_LOCK, shared: bool = False) -> Iterator[None]:
    """`shared`: held beside other shared holders (a grid's shards), refused only by, and
    refusing, an exclusive one; it records no holder (the shards record theirs in locks
    of their own)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusyError(f"{folder} is being written by {holder(path)}; wait for "
                                     "it to end or stop it") from None  # fmt: skip
        if shared:  # no exclusive holder now: what the file says is a killed one's
            handle.seek(0)
            handle.truncate()
            yield
            return
        handle.seek(0)
        handle.truncate()
        record = {"pid": os.getpid(), "command": command_line(), "started": time.time()}
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()  # the file stays: another process may be waiting on it


def may_be_held(folder: Path, name: str = RUN_LOCK) -> bool:
    """Whether a process may be writing to `folder`, read only (taking the lock to see
    would refuse its writer in that moment): its lock file names a holder, a live one or
    one killed while holding it (a holder that ends clears it)."""
    try:
        return bool((folder / name).read_text(encoding="utf-8").strip())
    except OSError:
        return False


_works_for: list[str] | None = None  # the command a worker process runs for (`works_for`)


def works_for(command: list[str]) -> None:
    """Name this process's lock holders by `command` (`sys.orig_argv` of the process it
    works for: `east-eval`'s, for a grid worker the forkserver made; not written into
    `sys.orig_argv`, which tells a command from a library's process, `entry`)."""
    global _works_for
    _works_for = list(command)


def command_line() -> str:
    """The process's command as it was started (`east-simuleval` rewrites `sys.argv` for
    SimulEval, leaving out flags of its own such as --batch-size)."""
    return " ".join((_works_for or sys.orig_argv)[1:]) or sys.executable


def holder(path: Path) -> str:
    """Who the lock file says holds it."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["started"]))
    return f"process {record['pid']} ({record['command']}, since {started})"
