"""One writer per run folder: a live holder is named, a dead one's lock is taken over."""

import os
import signal
import subprocess
import sys
import time

import pytest

from east_agent.common.run_lock import RunFolderBusyError, hold_run_lock, may_be_held

HOLD = """
import sys, time
from pathlib import Path
from east_agent.common.run_lock import hold_run_lock
folder = Path(sys.argv[1])
sys.argv = sys.argv[:1]  # as east-simuleval rewrites it for SimulEval
with hold_run_lock(folder):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_live_holder_is_named_and_a_killed_ones_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(
            RunFolderBusyError, match=f"being written by process {holder.pid} "
        ) as busy:
            with hold_run_lock(tmp_path):
                pass
        assert f"{tmp_path}, since" in str(busy.value)  # the command as started
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with hold_run_lock(tmp_path):  # the dead holder's lock is free
        assert f'"pid": {os.getpid()}' in (tmp_path / "run.lock").read_text()


def test_a_lock_is_released_when_its_block_ends(tmp_path):
    with hold_run_lock(tmp_path, "a.lock"):
        with hold_run_lock(tmp_path, "b.lock"):  # other names do not collide
            pass
    started = time.time()
    with hold_run_lock(tmp_path, "a.lock"):
        assert time.time() - started < 5


def test_may_be_held_reads_the_lock_file_without_taking_it(tmp_path):
    assert not may_be_held(tmp_path)  # no lock file
    with hold_run_lock(tmp_path):
        assert may_be_held(tmp_path)
    assert not may_be_held(tmp_path)  # its holder ended: cleared


def test_shared_holders_hold_together_and_clear_a_killed_holders_record(tmp_path):
    """Shared holders (a grid's shards) refuse, and are refused by, an exclusive one only;
    the first clears the record a killed exclusive holder left, which named a dead
    process as the folder's writer."""
    (tmp_path / "grid.lock").write_text('{"pid": 1, "command": "dead", "started": 0}\n')
    with hold_run_lock(tmp_path, "grid.lock", shared=True):
        assert (tmp_path / "grid.lock").read_text() == ""
        assert not may_be_held(tmp_path, "grid.lock")
        with hold_run_lock(tmp_path, "grid.lock", shared=True):
            pass
        with pytest.raises(RunFolderBusyError):
            with hold_run_lock(tmp_path, "grid.lock"):
                pass
    with hold_run_lock(tmp_path, "grid.lock"):
        with pytest.raises(RunFolderBusyError, match=f"by process {os.getpid()}"):
            with hold_run_lock(tmp_path, "grid.lock", shared=True):
                pass
