"""Several runs of a grid at once (`east-eval --jobs N`), each in its own worker process.

On a CPU much of a small model's step is not the matrix products but the operators around
them and the programs' Python, which one process runs on one core at a time; two runs side
by side keep both cores busy (the Multi30k grid on 2 cores: `benchmarks/RESULTS.md`). Each
worker:
- is a fresh (spawned) process that dies with `east-eval` (`PR_SET_PDEATHSIG`, as the
  SimulEval children of `east_agent.common.child_process`), taking its own children along;
- runs on `threads` CPU threads (the machine's threads shared among the jobs; SimulEval
  children it starts inherit the setting through `OMP_NUM_THREADS`);
- loads the checkpoint once for all the runs it is handed, and runs each exactly as
  `run_simuleval` does (locked folder, resumable, timed);
- writes what a run prints to `console.log` in that run's folder, so runs side by side do
  not interleave on the terminal;
- after a run, does what the job asks next in the same worker (the grid: the run's
  OmniSTEval columns, kept in its folder), so that the report at the end has less to do.
Once no run is left to start, the runs still going share out the threads of the workers
that are done (a signal tells them to take more), so the last run does not go on alone on
one core of an idle machine.
A run's wall time and computation-aware latency are then measured beside the other jobs:
`wall_seconds.json` records `jobs` for each try and the grid's table has a `jobs` column.
A run that fails lets the running ones finish, starts no new one, and is named with its
console log (where its traceback is). A worker that dies (killed, out of memory) ends the
grid at once, naming the runs it cut off; Ctrl-C too. A rerun resumes them.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

CONSOLE_LOG = "console.log"


@dataclass(frozen=True)
class Job:
    number: int  # 1-based, as the grid prints it
    name: str
    command: list[str]
    output: Path
    then: Callable[[], object] | None = None  # after the run, in its worker (picklable)


def job_threads(jobs: int) -> int:
    """CPU threads for each of `jobs` workers: this process's threads, shared out."""
    import torch

    return max(1, torch.get_num_threads() // jobs)


def run_jobs(jobs_to_run: Sequence[Job], jobs: int, total: int) -> None:
    """Run `jobs_to_run` on up to `jobs` workers, the next one starting as soon as one is
    free; with one worker's worth of runs, one after another in this process (one
    checkpoint load, every thread)."""
    jobs = min(jobs, len(jobs_to_run))  # the workers the runs really need
    if jobs <= 1:
        _run_here(jobs_to_run, total)
        return
    threads = job_threads(jobs)
    with worker_pool(jobs, threads) as (pool, share):
        _run_on_workers(pool, share, jobs_to_run, jobs, total, threads)


@contextmanager
def worker_pool(jobs: int, threads: int):
    """`jobs` spawned workers on `threads` threads each, and the shared count that
    `share_out` raises. Workers start with SIGUSR1 ignored (inherited through exec) until
    their handler is in place: one told to take more threads while it starts up must not
    die of it."""
    context = multiprocessing.get_context("spawn")  # no inherited thread pools or locks
    share = context.Value("i", threads)
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # while workers may spawn
    try:
        pool = ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_start_worker, initargs=(os.getpid(), share)
        )
        try:
            yield pool, share
        except BaseException:
            _stop(pool)  # Ctrl-C, a dead worker, a failed test: the runs left can be resumed
            raise
        pool.shutdown()
    finally:
        signal.signal(signal.SIGUSR1, previous)


def _run_on_workers(pool, share, jobs_to_run, jobs: int, total: int, threads: int) -> None:
    pending, running, failures = list(jobs_to_run), {}, []
    while pending or running:
        while pending and len(running) < jobs and not failures:
            job = pending.pop(0)
            print(f"[{job.number}/{total}] {job.name}: started ({_console(job)})", flush=True)
            running[pool.submit(_run_job, job, jobs)] = job
        if not running:
            break
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        if any(isinstance(future.exception(), BrokenProcessPool) for future in done):
            cut_off = ", ".join(job.name for job in running.values())  # a worker died
            raise RuntimeError(f"a worker process died; cut off (a rerun resumes): {cut_off}")
        for future in done:
            job = running.pop(future)
            if future.exception() is None:
                print(f"[{job.number}/{total}] {job.name}: {future.result():.1f} s", flush=True)
            else:
                failures.append(f"{job.name}: {future.exception()} (see {_console(job)})")
        if running and (not pending or failures):  # no run will start: no worker will need
            share_out(pool, share, threads * jobs // len(running))  # its threads again
    if failures:
        not_started = f"; not started: {', '.join(job.name for job in pending)}" if pending else ""
        raise RuntimeError("runs failed: " + "; ".join(failures) + not_started)


def _run_here(jobs_to_run: Sequence[Job], total: int) -> None:
    from east_agent.evaluation.runs import LoadedModels, run_simuleval

    models = LoadedModels()
    for job in jobs_to_run:
        print(f"[{job.number}/{total}] {job.name}", flush=True)
        run_simuleval(job.command, job.output, models)
        if job.then is not None:
            job.then()


def share_out(pool: ProcessPoolExecutor, share, threads: int) -> None:
    """Tell the workers to use `threads` threads each from now on (if that is more)."""
    if threads <= share.value:
        return
    share.value = threads
    for worker in list((getattr(pool, "_processes", None) or {}).values()):
        with suppress(ProcessLookupError):  # a worker that has just ended
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGUSR1)


def _stop(pool: ProcessPoolExecutor) -> None:
    """End the workers now rather than after their runs (`shutdown` alone waits for them)."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # no public handle
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.kill()


def _console(job: Job) -> Path:
    return job.output / CONSOLE_LOG


# -- in the worker ----------------------------------------------------------------------------

_loaded = None  # the worker's LoadedModels: one checkpoint for every run it is handed


def _start_worker(parent: int, share) -> None:
    from east_agent.common.child_process import die_with

    if sys.platform.startswith("linux"):
        die_with(parent)()
    # Python runs the handler in the main thread, between two operators: the thread that
    # runs the model, which is the one whose thread count counts (OpenMP's is per thread).
    # Installed before the count is first read, so that no raise of it is missed.
    signal.signal(signal.SIGUSR1, lambda *_: _take_threads(share.value))
    _take_threads(share.value)


def _take_threads(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)  # for SimulEval children (--batch-size 1)
    torch.set_num_threads(threads)


def _run_job(job: Job, jobs: int) -> float:
    """One run in this worker; its wall seconds (all tries). A failure's traceback goes to
    the run's console log; what comes back is a plain RuntimeError naming it (any
    exception object might not survive the trip back to `east-eval`)."""
    global _loaded
    from east_agent.evaluation.runs import LoadedModels, run_simuleval

    if _loaded is None:
        _loaded = LoadedModels()
    job.output.mkdir(parents=True, exist_ok=True)
    with _console_to(_console(job)):
        print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}, one of {jobs} jobs", flush=True)
        try:
            seconds = run_simuleval(job.command, job.output, _loaded, jobs=jobs)
            if job.then is not None:
                job.then()
            return seconds
        except SystemExit as stop:  # a flag SimulEval's parser refused: the message is above
            raise RuntimeError(f"the run stopped (exit {stop.code})") from None
        except Exception as error:
            traceback.print_exc()
            raise RuntimeError(f"{type(error).__name__}: {error}") from None


@contextmanager
def _console_to(path: Path):
    """Standard output and error (the file descriptors, so children and C code too) go
    to `path` while the run lasts."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "a", encoding="utf-8") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            _flush_c_streams()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)


def _flush_c_streams() -> None:
    """C code's buffered output belongs to the run that wrote it."""
    import ctypes

    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):  # no C library to ask (not Linux or macOS)
        pass
