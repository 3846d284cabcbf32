"""Killing a real command outright once its log holds some finished sentences, and the
processes that should die with it (Linux /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def sigkill_after_lines(command: list[str], log: Path, lines: int, timeout: float = 300) -> None:
    """Start `command`, wait until `log` has `lines` complete lines, then SIGKILL it."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if log.exists() and log.read_text().count("\n") >= lines:
            break
        time.sleep(0.01)
    assert process.poll() is None, "the command ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def live_processes() -> dict[int, tuple[int, str]]:
    """Every live (not zombie) process: its parent's pid and its command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, parent = (entry / "stat").read_text().rsplit(") ", 1)[1].split()[:2]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if state != "Z":
            found[int(entry.name)] = (int(parent), command)
    return found


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text`."""
    return [pid for pid, (_, command) in live_processes().items() if text in command]


def descendants(pid: int) -> dict[int, str]:
    """Every live process under `pid`, with its command line."""
    processes = live_processes()
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, (its_parent, command) in processes.items():
            if its_parent == parent and child not in found:
                found[child] = command
                todo.append(child)
    return found


def group_members(group: int) -> list[int]:
    """Live processes of the process group `group`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, _, its_group = (entry / "stat").read_text().rsplit(") ", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if state != "Z" and int(its_group) == group:
            found.append(int(entry.name))
    return found
