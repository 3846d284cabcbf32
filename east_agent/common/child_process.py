"""Child processes that die with their parent.

A grid runs SimulEval's own loop (`--batch-size 1`) as a child process. If only the parent
is killed (SIGKILL cannot be caught), an orphaned child would go on writing to the run
folder beside the rerun. On Linux the kernel is asked to send the child SIGKILL when its
parent dies (`PR_SET_PDEATHSIG`); elsewhere the run folder's lock
(`east_agent.common.run_lock`) still refuses the rerun while the orphan lives.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> Callable[[], None]:
    """What the child runs before its command (`preexec_fn`). The C library is found here,
    in the parent: `find_library` starts a program, which a forked child of a process with
    threads (torch's) must not do before it execs."""
    prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl

    def ask_the_kernel() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the request was in place
            os._exit(1)

    return ask_the_kernel


def _die_with_this_process():
    return die_with(os.getpid()) if sys.platform.startswith("linux") else None


def run_child(command: list[str]) -> int:
    """Run `command` to its end and return its exit status; it dies if this process does."""
    return subprocess.run(command, preexec_fn=_die_with_this_process()).returncode


def start_child(command: list[str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    """`command` started to talk to on the descriptors `pass_fds` (kept open in it) while
    it runs: its standard input empty (`/dev/null`: a library that reads it gets no
    request, nor waits), its standard output and error one pipe (`stdout`, text, stray bytes
    replaced). It dies if this process does (on Linux, if the thread that started it ends:
    start it from the main thread). It leads a session of its own, so that `kill_child`
    ends what it started too (a wrapper script that runs the interpreter without `exec`),
    and a Ctrl-C at the terminal reaches this process alone, which decides its end."""
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        encoding="utf-8",
        errors="replace",  # a stray byte must not stop the reading of its output
        pass_fds=pass_fds,
        preexec_fn=_die_with_this_process(),
        start_new_session=True,
    )


def run_briefly(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """`command` run to its end, its standard input empty and its output and error captured
    (bytes), in a session of its own: past `timeout` seconds (`subprocess.TimeoutExpired`)
    or interrupted, it is killed with all it started (`subprocess.run` kills the child
    alone, and a wrapper script's own child lived on)."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_die_with_this_process(),
        start_new_session=True,
    )
    try:
        output, error = process.communicate(timeout=timeout)
    except BaseException:
        kill_child(process)
        process.communicate()
        raise
    return subprocess.CompletedProcess(command, process.returncode, output, error)


def kill_child(process: subprocess.Popen) -> None:
    """SIGKILL to a child `start_child` started and to every process of its group, then
    wait for the child. A child waited for already no longer holds its id, which another
    process may have taken since: its group is signalled then only while a live process
    leads or belongs to a group and session of that id (what a wrapper script left behind;
    Linux gives no id away while a group or session holds it, so only a new session led by
    a process given the same id, after the id space wrapped around, could pass for it)."""
    if process.returncode is None or session_lives_on(process.pid):
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def session_lives_on(leader: int) -> bool:
    """Whether a live process (not a zombie) of the session and group that the process
    `leader` started (and that ended) is still there; where /proc cannot tell (not Linux),
    taken as yes."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if fields[0] != "Z" and fields[2:4] == [str(leader), str(leader)]:  # group, session
            return True
    return False
