"""`east-eval --jobs N`: a failed job, a killed grid (its scores equal one run at a time:
`test_grid.py`, on the grid there)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from commands import console_script, east_eval, python_with_ctrl_c
from commands import write_grid_config as write_config
from kill import descendants, group_members, live_processes

from east_agent.evaluation.jobs import LEFT_TO_EAST_EVAL


def test_a_failed_job_is_named_and_the_others_are_kept(east_checkpoint, tmp_path):
    """The failed run is named with its console log; the run beside it finishes, and so
    does the one still waiting (before: not started). Rerun, the one run left runs in
    `east-eval` itself (no worker for a single run), on every thread."""
    from east_agent.common.run_lock import hold_run_lock

    systems = {"east": {"agent": "east", "latency": ["low", "medium", "high"]}}
    output = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", east_checkpoint, output, systems)
    with hold_run_lock(output / "runs" / "east-low"):  # another writer holds the first run
        result = east_eval(config, "--limit", "3", "--jobs", "2")
    assert result.returncode == 2
    assert "runs failed: east-low" in result.stderr and "is being written by" in result.stderr
    assert str(output / "runs" / "east-low" / "console.log") in result.stderr
    assert "not started" not in result.stderr
    assert (output / "runs" / "east-high" / "scores.tsv").exists()
    # the killed workers' progress-bar locks (before: "1 leaked semaphore objects")
    assert "leaked semaphore" not in result.stderr
    assert (output / "runs" / "east-medium" / "scores.tsv").exists()
    console = (output / "runs" / "east-low" / "console.log").read_text()
    assert "failed: " in console and "is being written by" in console  # a user error: no
    assert "Traceback" not in console  # traceback, as in east-eval (before: its traceback)
    # the finished run's table all the same (before: none until every run succeeded)
    assert "| east | medium |" in (output / "results.md").read_text()
    assert "| east | high |" in (output / "results.md").read_text()
    assert result.stdout.rindex("| east | medium |") > result.stdout.rindex("east-medium:")
    rerun = east_eval(config, "--limit", "3", "--jobs", "2", "--only", "east-low", "east-medium")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "east-medium: done already, skipped" in rerun.stdout
    assert "[1/2] east-low\n" in rerun.stdout and "started" not in rerun.stdout
    tries = json.loads((output / "runs" / "east-low" / "wall_seconds.json").read_text())
    assert [attempt["jobs"] for attempt in tries["tries"]] == [1]


def test_a_failed_run_of_one_job_keeps_the_tables_of_the_others(
    east_checkpoint, tmp_path, monkeypatch, capsys
):
    """One job: the runs run in `east-eval` itself, so a run's failure is whatever it
    raised, not a worker's CommandError; the finished runs were tabled only for the latter
    (a system's max_new_tokens of 0 failed so before the config check found it). The runs
    after it go on, as beside workers (before: the grid ended at the failed run, none
    tabled), and the failed one is named."""
    from east_agent.evaluation import runs
    from east_agent.evaluation.cli import main

    systems = {"east": {"agent": "east", "latency": ["low", "high"]}}
    output = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", east_checkpoint, output, systems)
    run_simuleval = runs.run_simuleval

    def failing_low(command, run_output, *args, **kwargs):
        if run_output.name == "east-low":
            raise ValueError("the decoder refused a setting")
        return run_simuleval(command, run_output, *args, **kwargs)

    monkeypatch.setattr(runs, "run_simuleval", failing_low)
    with pytest.raises(SystemExit) as ended:
        main([str(config), "--limit", "3", "--jobs", "1"])
    assert ended.value.code == 2
    printed = capsys.readouterr()
    assert "[1/2] east-low: failed (named at the end)" in printed.out
    assert printed.err.endswith("east-eval: runs failed: east-low: the decoder refused a setting\n")
    table = (output / "results.md").read_text()
    assert "| east | high |" in table and "| east | low |" not in table
    assert table.endswith(  # before: only stderr said the grid was not whole
        "\n\nNot in this table: east-low (failed, unfinished or not scored; `east-eval` said "
        "why).\n"
    )
    assert "east-low" not in (output / "results.csv").read_text()


def test_a_grid_interrupted_keeps_the_tables_of_its_finished_runs(east_checkpoint, tmp_path):
    """Ctrl-C during a run: the runs that finished are tabled, as for a failed run (before:
    no table, so that `east-demo --all-levels` interrupted at its last level showed none
    of the four it had finished)."""
    systems = {"east": {"agent": "east", "latency": ["low", "high"]}}
    output = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", east_checkpoint, output, systems)
    script = (
        "import sys\n"
        "from east_agent.evaluation import runs\n"
        "from east_agent.evaluation.cli import main\n"
        "real = runs.run_simuleval\n"
        "def interrupted(command, run_output, *args, **kwargs):\n"
        "    if run_output.name == 'east-high':\n"
        "        raise KeyboardInterrupt  # as Python raises it for a Ctrl-C\n"
        "    return real(command, run_output, *args, **kwargs)\n"
        "runs.run_simuleval = interrupted\n"
        "main(sys.argv[1:])\n"
    )
    result = python_with_ctrl_c(script, config, "--limit", "3", "--jobs", "1")
    assert result.returncode == -signal.SIGINT, result.stderr[-3000:]
    assert result.stderr.endswith("east-eval: interrupted\n")
    table = (output / "results.md").read_text()
    assert "| east | low |" in table and "| east | high |" not in table
    assert "Not in this table: east-high" in table


def test_a_worker_is_started_with_the_signals_that_stop_the_grid_held_back():
    """A Ctrl-C taken after the forkserver forked a worker, before the pool listed it:
    before, that worker was not stopped, and once `east-eval` had removed the pool's
    semaphore it printed a traceback (`SemLock._rebuild`: FileNotFoundError) after
    `east-eval: interrupted` (3 of 30 Ctrl-Cs in a probe, timing-bound). Held back while
    the pool starts it, the signal is taken once `_stop` knows the worker."""
    from east_agent.evaluation.jobs import _submit

    class Pool:
        def submit(self, call, *arguments):
            return signal.pthread_sigmask(signal.SIG_BLOCK, [])

    held = _submit(Pool(), print)
    assert {signal.SIGINT, signal.SIGHUP, signal.SIGTERM} <= held
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])  # taken after


def test_runs_left_out_by_only_are_not_named_under_the_table(east_checkpoint, tmp_path):
    """The note names the runs asked for that the table lacks (before: every run of the
    config not run yet, though `--only` left it out)."""
    from east_agent.evaluation.cli import main

    systems = {"east": {"agent": "east", "latency": ["low", "high"]}}
    output = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", east_checkpoint, output, systems)
    main([str(config), "--limit", "2", "--only", "east-low"])
    table = (output / "results.md").read_text()
    assert "| east | low |" in table and "Not in this table" not in table


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_east_eval_kills_its_job_workers(east_checkpoint, tmp_path):
    """SIGKILL of `east-eval` alone ends its workers (and their SimulEval children); the
    rerun writes every sentence once."""
    systems = {
        "east": {"agent": "east", "latency": ["low"]},
        "waitk": {"agent": "waitk", "waitk": [2]},
    }
    output = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", east_checkpoint, output, systems)
    arguments = [str(config), "--limit", "20", "--jobs", "2", "--batch-size", "1"]
    command = [console_script("east-eval"), *arguments]
    logs = [output / "runs" / name / "instances.log" for name in ("east-low", "waitk-k2")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, seen = time.time() + 300, {}  # seen: a run may end before the other logs
    while not all(log.exists() and log.read_text().count("\n") >= 1 for log in logs):
        assert process.poll() is None and time.time() < deadline, "east-eval ended first"
        seen.update(descendants(process.pid))
        time.sleep(0.02)
    workers = descendants(process.pid)
    children = [pid for pid, command in {**seen, **workers}.items() if "east-simuleval" in command]
    assert len(children) == 2  # one SimulEval loop under each worker
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.time() + 30
    while set(workers) & set(live_processes()):
        assert time.time() < deadline, "a worker or its child outlived east-eval"
        time.sleep(0.1)
    result = east_eval(*arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(": started, resumed after its ") == 2  # before: "started"
    for log in logs:
        indices = [json.loads(line)["index"] for line in log.read_text().splitlines()]
        assert sorted(indices) == list(range(20))  # each once


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_leave_ctrl_c_to_east_eval():
    """Ctrl-C reaches the whole process group; east-eval stops the workers, which ignore it
    (one that took it printed its traceback, an idle one too) and go on until then; so do
    a scheduler's SIGTERM and a closed terminal's SIGHUP. The resource tracker, which
    ignores SIGINT and SIGTERM itself, is kept from SIGHUP: before, a closed terminal ended
    it with the grid and its semaphores stayed in /dev/shm."""
    from multiprocessing import resource_tracker

    from east_agent.evaluation.jobs import worker_pool

    with worker_pool(2, 1) as (pool, _):
        worker = pool.submit(os.getpid).result(timeout=60)
        for signum in (signal.SIGINT, signal.SIGHUP):
            assert _signal_set(worker, "SigIgn") >> (signum - 1) & 1, signum
        # a library's process pool in a worker ends its own workers by SIGTERM, which they
        # inherit: ignored, the pool hung (OmniSTEval's alignment in a long-form grid)
        assert not _signal_set(worker, "SigIgn") >> (signal.SIGTERM - 1) & 1
        assert _signal_set(worker, "SigBlk") == 0  # nothing held back from its children
        for signum in (signal.SIGINT, signal.SIGHUP):
            os.kill(worker, signum)
        assert pool.submit(sum, [1, 2]).result(timeout=60) == 3
        tracker = resource_tracker._resource_tracker._pid
        held = _signal_set(tracker, "SigIgn") | _signal_set(tracker, "SigBlk")
        assert held >> (signal.SIGHUP - 1) & 1


FORKSERVER_SIGNALLED = """
import multiprocessing.forkserver, os, signal
from concurrent.futures import ProcessPoolExecutor
from east_agent.evaluation.jobs import start_worker_imports

context = start_worker_imports()
forkserver = multiprocessing.forkserver._forkserver._forkserver_pid
for signum in (signal.SIGINT, signal.SIGHUP):  # while its Python starts up
    os.kill(forkserver, signum)
with ProcessPoolExecutor(1, mp_context=context) as pool:
    print(pool.submit(abs, -3).result(timeout=60))
print(multiprocessing.forkserver._forkserver._forkserver_pid == forkserver)
status = open(f"/proc/{forkserver}/status").read().splitlines()
print(int(dict(line.split(":\t", 1) for line in status)["SigBlk"], 16))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_forkserver_leaves_ctrl_c_to_east_eval_from_its_start():
    """Before: a Ctrl-C or a closed terminal's SIGHUP in the forkserver's first half second
    (Python's start, multiprocessing's imports, before the preload ignored them) printed its
    traceback or ended it silently, and a new one was started for the workers. Now they
    are held back until it ignores them, and dropped then."""
    result = subprocess.run(
        [sys.executable, "-c", FORKSERVER_SIGNALLED],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in LEFT_TO_EAST_EVAL],
    )
    assert result.returncode == 0, result.stderr
    # the same forkserver, nothing left blocked for the workers and their children
    assert result.stdout.splitlines() == ["3", "True", "0"]
    assert "Traceback" not in result.stderr


SWALLOWED_WHILE_CHECKED = """
import os, signal, sys
from east_agent.evaluation import cli, config

class Swallows:  # Python does not raise what a __del__ raises (a library import's lock)
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)

checked = config.EvalConfig.runs
def runs(self):
    Swallows()
    return checked(self)
config.EvalConfig.runs = runs
sys.argv[0] = "east-eval"
cli.main()
"""


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_ctrl_c_swallowed_while_the_grid_is_checked_starts_no_run(
    east_checkpoint, tmp_path, jobs
):
    """Before: the grid ran to its end and east-eval exited 0 (a test's Ctrl-C half a
    second in, while SimulEval imported)."""
    systems = {"east": {"agent": "east", "latency": ["low", "high"]}}
    output = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", east_checkpoint, output, systems)
    result = python_with_ctrl_c(SWALLOWED_WHILE_CHECKED, config, "--limit", "3", "--jobs", jobs)
    assert result.returncode == -signal.SIGINT, result.stderr[-3000:]
    assert result.stderr == "east-eval: interrupted\n"
    assert "[1/2]" not in result.stdout
    assert not (output / "runs" / "east-low" / "instances.log").exists()


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # ended meanwhile
        return b""


def _signal_set(pid: int, field: str) -> int:
    status = dict(line.split(":\t", 1) for line in open(f"/proc/{pid}/status").read().splitlines())
    return int(status[field], 16)


def test_running_workers_take_the_threads_of_finished_ones(tmp_path):
    """Once nothing is left to start, a worker still running is told (SIGUSR1) to take
    the threads of the others; a worker told so while it starts up does not die of it."""
    from workers import threads_once_more

    from east_agent.evaluation.jobs import share_out, worker_pool

    started = tmp_path / "started"
    with worker_pool(2, 1) as (pool, share):
        share_out(pool, share, 1)  # not more: nobody is told
        waiting = pool.submit(threads_once_more, 2, str(started))
        share_out(pool, share, 2)  # a worker may still be starting up
        while not started.exists() and not waiting.done():
            time.sleep(0.01)
        share_out(pool, share, 3)  # and now the worker runs `waiting`
        assert waiting.result(timeout=60) == 3
        assert pool.submit(os.getpid).result(timeout=60) > 0  # no worker died


class InlinePool:
    """A pool that runs what it is given at once, in this process, and logs it: a run
    (`_run_job`) is not run but logged by name and takes 1 s, or fails if its name says so."""

    def __init__(self):
        self.log = []

    def submit(self, call, *arguments):
        from concurrent.futures import Future

        from east_agent.evaluation.jobs import _run_job

        future = Future()
        if call is _run_job:
            job = arguments[0]
            self.log.append(job.name)
            if "failing" in job.name:
                future.set_exception(RuntimeError("it failed"))
            else:
                future.set_result(1.0)
        else:
            future.set_result(call())
        return future


def test_what_is_left_to_this_process_comes_after_the_next_runs_started(tmp_path):
    """`after_run` (the grid's COMET) runs here for each run that finished, once the
    workers have their next runs; never for a run that failed."""
    from types import SimpleNamespace

    from east_agent.evaluation.jobs import Job, _run_on_workers

    pool = InlinePool()
    runs = [Job(n, name, [], tmp_path / name) for n, name in enumerate(["a", "b", "c"], 1)]
    _run_on_workers(
        pool, SimpleNamespace(value=1), runs, [], lambda job: pool.log.append(f"after {job.name}"),
        2, 3, 1,
    )  # fmt: skip
    # (a and b finish in one wait: in the order of a set)
    assert pool.log[:3] == ["a", "b", "c"] and pool.log[5:] == ["after c"]
    assert sorted(pool.log[3:5]) == ["after a", "after b"]

    pool = InlinePool()
    runs = [Job(n, name, [], tmp_path / name) for n, name in enumerate(["a", "failing"], 1)]
    with pytest.raises(RuntimeError, match="runs failed: failing: it failed"):
        _run_on_workers(
            pool, SimpleNamespace(value=1), runs, [],
            lambda job: pool.log.append(f"after {job.name}"), 2, 2, 1,
        )  # fmt: skip
    assert pool.log == ["a", "failing", "after a"]


def test_a_follow_up_runs_once_its_runs_are_done_and_before_the_next_run(tmp_path):
    from types import SimpleNamespace

    from east_agent.evaluation.jobs import FollowUp, Job, _run_on_workers

    def job(number, name):
        return Job(number, name, [], tmp_path / name)

    pool = InlinePool()

    def follow_up(name, needs):
        return FollowUp(name, frozenset(needs), lambda: pool.log.append(name) or name.upper())

    runs = [job(1, "a-1"), job(2, "a-2"), job(3, "b-1"), job(4, "b-2")]
    ups = [follow_up("b", ["b-1", "b-2"]), follow_up("a", ["a-1", "a-2"])]
    returned = _run_on_workers(pool, SimpleNamespace(value=1), runs, ups, None, 2, 4, 1)
    assert returned == {"a": "A", "b": "B"}
    assert pool.log == ["a-1", "a-2", "a", "b-1", "b-2", "b"]

    pool = InlinePool()
    runs = [job(1, "a-1"), job(2, "a-failing"), job(3, "b-1")]
    ups = [follow_up("a", ["a-1", "a-failing"]), follow_up("b", ["b-1"])]
    with pytest.raises(RuntimeError, match="runs failed: a-failing: it failed") as failed:
        _run_on_workers(pool, SimpleNamespace(value=1), runs, ups, None, 2, 3, 1)
    # the other runs go on (before: nothing started after a failure), and so do the tests of
    # a system whose runs all finished, handed to the grid's tables with the failure
    # (before: made again one after another in east-eval)
    assert pool.log == ["a-1", "a-failing", "b-1", "b"]
    assert failed.value.returned == {"b": "B"}


@pytest.mark.parametrize("available, last", [(1, 1), (2, 2), (3, 3), (4, 4)])
def test_the_last_run_takes_the_threads_there_are_never_more(
    tmp_path, monkeypatch, available, last
):
    """Before: the workers' threads summed (at least one each), so with OMP_NUM_THREADS=1
    and two jobs the last run went on 2 threads of 1 (10x slower on a busy machine)."""
    from concurrent.futures import Future
    from types import SimpleNamespace

    from east_agent.evaluation import jobs

    still_running = []

    class Pool:  # "a" finishes at once, "long" once the threads were shared out
        def submit(self, call, job, *_):
            future = Future()
            if job.name == "long":
                still_running.append(future)
            else:
                future.set_result(1.0)
            return future

    told = []

    def share_out(pool, share, threads):
        told.append(threads)
        for future in still_running:
            future.set_result(1.0)

    monkeypatch.setattr(jobs, "share_out", share_out)
    runs = [jobs.Job(n, name, [], tmp_path / name) for n, name in enumerate(["a", "long"], 1)]
    share = SimpleNamespace(value=jobs.job_threads(available, 2))
    jobs._run_on_workers(Pool(), share, runs, [], None, 2, 2, available)
    assert told == [last]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    ("when", "signum", "said"),
    [
        ("while the workers import", signal.SIGINT, "interrupted"),
        ("mid-run", signal.SIGINT, "interrupted"),
        ("mid-run", signal.SIGTERM, "terminated"),
        ("mid-run", signal.SIGHUP, "hung up"),
    ],
)
def test_ctrl_c_of_a_grid_with_workers_is_one_line(east_checkpoint, tmp_path, when, signum, said):
    """Ctrl-C (SIGINT to the process group): before, in a grid's first seconds, the
    forkserver's traceback (it took SIGINT while it imported, or while its Python and
    multiprocessing started up), east-eval's own where a library swallowed or wrapped the
    KeyboardInterrupt as it imported (or the grid went on to its end), and at any time
    multiprocessing's warning of leaked semaphores. A run folder's lock names east-eval's
    command, not the forkserver's. SIGTERM to east-eval, a closed terminal's SIGHUP to the
    group: before, east-eval died of it on the spot, without a word or its clean-up (and
    SIGHUP ended the workers, the forkserver and the resource tracker too)."""
    systems = {"east": {"agent": "east", "latency": ["low", "high"]}}
    output = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", east_checkpoint, output, systems)
    # runs long enough to be mid-run when the signal comes, on a loaded machine too (before:
    # 200 sentences 64 at a time could end first, exit 0, in a busy CI)
    command = [console_script("east-eval"), str(config), "--limit", "1000", "--jobs", "2"]
    command += ["--batch-size", "2"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    if when == "mid-run":
        log, deadline = output / "runs" / "east-low" / "instances.log", time.time() + 300
        while not (log.exists() and log.read_text().count("\n") >= 1):
            assert process.poll() is None and time.time() < deadline, "east-eval ended first"
            time.sleep(0.02)
        held = json.loads((output / "runs" / "east-low" / "run.lock").read_text())
        assert held["command"] == " ".join(command)  # before: the forkserver's
    else:  # east-eval past its own imports (in main: the forkserver started), and the
        # forkserver into the workers' (the moments before: the forkserver test above)
        deadline = time.time() + 60
        while not any(b"forkserver" in _command_line(pid) for pid in group_members(process.pid)):
            assert process.poll() is None and time.time() < deadline, "no forkserver"
            time.sleep(0.01)
        time.sleep(0.5)
    # SIGTERM as `kill` and `timeout` send it, to east-eval (to the group it ends the
    # workers too, at once); Ctrl-C and a closed terminal's SIGHUP reach the whole group
    (os.kill if signum == signal.SIGTERM else os.killpg)(process.pid, signum)
    _, error = process.communicate(timeout=120)
    assert process.returncode == -signum
    assert error == f"east-eval: {said}\n"
    deadline = time.time() + 30  # the workers, the forkserver and the resource tracker
    while group_members(process.pid):
        assert time.time() < deadline, f"left running: {group_members(process.pid)}"
        time.sleep(0.1)


@pytest.mark.parametrize(
    "flags, said", [([], "2 finished sentences"), (["--long-form"], "2 finished talks")]
)
def test_a_resumed_run_is_said_in_its_instances(tmp_path, flags, said):
    """A long-form run's instances are talks (before: "resumed after its 2 finished
    sentences" of two talks)."""
    from east_agent.evaluation.jobs import Job, _resumed

    (tmp_path / "instances.log").write_text('{"index": 0}\n{"index": 1}\n')
    job = Job(1, "east-low", ["east-simuleval", "--output", str(tmp_path), *flags], tmp_path)
    assert _resumed(job) == f", resumed after its {said}"
