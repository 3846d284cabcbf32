"""Child processes that die with their parent, and with what they started."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from east_agent.common import child_process
from east_agent.common.child_process import kill_child, session_lives_on, start_child


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_what_a_waited_for_child_left_behind_is_killed(tmp_path):
    """A wrapper that ended and was waited for, its `sleep` living on: killed by its group."""
    pid_file = tmp_path / "sleep.pid"
    script = f"sleep 1000 & echo $! > {pid_file}; exit 0"
    process = start_child(["sh", "-c", script])
    process.wait()  # the wrapper ended and was waited for: its id is free
    deadline = time.time() + 10
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.time() < deadline
        time.sleep(0.01)
    left = int(pid_file.read_text())
    assert session_lives_on(process.pid)
    kill_child(process)
    while os.path.exists(f"/proc/{left}") and "Z" not in _state(left):
        assert time.time() < deadline, "the wrapper's sleep outlived kill_child"
        time.sleep(0.01)
    assert not session_lives_on(process.pid)


def test_a_waited_for_child_with_nothing_left_signals_no_group(monkeypatch):
    """Before: its group was signalled by the id the child no longer held (another
    process's group, had the id been taken since)."""
    process = start_child([sys.executable, "-c", "pass"])
    process.wait()
    signalled = []
    monkeypatch.setattr(child_process.os, "killpg", lambda *a: signalled.append(a))
    kill_child(process)
    expected = [] if sys.platform.startswith("linux") else [(process.pid, signal.SIGKILL)]
    assert signalled == expected


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
