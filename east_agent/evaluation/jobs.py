"""Several runs of a grid at once (`east-eval --jobs N`), each in its own worker process.

On a CPU much of a small model's step is not the matrix products but the operators around
them and the programs' Python, which one process runs on one core at a time; two runs side
by side keep both cores busy (the Multi30k grid on 2 cores: `benchmarks/RESULTS.md`). Each
worker:
- is forked from a process that `east-eval` starts as soon as it knows it will need
  workers (a multiprocessing forkserver: fresh, none of `east-eval`'s thread pools or
  locks), which has imported what a run needs meanwhile (`east_agent.evaluation.
  worker_imports`), so that no worker spends seconds on imports; it takes `east-eval`'s
  environment as it is when the pool starts;
- dies with `east-eval`: the forkserver ends when `east-eval` does, and the worker with the
  forkserver (`PR_SET_PDEATHSIG`, as the SimulEval children of
  `east_agent.common.child_process`), taking its own children along;
- runs on `threads` CPU threads (the machine's threads shared among the jobs; SimulEval
  children it starts inherit the setting through `OMP_NUM_THREADS`);
- loads the checkpoint once for all the runs it is handed, and runs each exactly as
  `run_simuleval` does (locked folder, resumable, timed);
- writes what a run prints to `console.log` in that run's folder, so runs side by side do
  not interleave on the terminal;
- after a run, does what the job asks next in the same worker (the grid: the run's
  OmniSTEval columns, kept in its folder), so that the report at the end has less to do;
- takes a follow-up (`FollowUp`: the grid's significance tests of a system) as soon as the
  runs it needs are done, before the next run.
What is left to `east-eval` itself after a run (`after_run`: the grid's COMET, with the one
COMET child of `east-eval`) it does while the workers go on with the next runs.
Once no run is left to start, the runs still going share out the threads of the workers
that are done (a signal tells them to take more), so the last run does not go on alone on
one core of an idle machine.
A run's wall time and computation-aware latency are then measured beside the other jobs:
`wall_seconds.json` records `jobs` for each try and the grid's table has a `jobs` column.
A run that fails is named with its console log (where its traceback is) once the other
runs have finished, as with one job (`_run_here`). A worker that dies (killed, out of
memory) ends the grid at once, naming the runs it cut off; Ctrl-C too (`east-eval` stops
the workers, which ignore it: `east-eval: interrupted` is all it prints), a SIGHUP to the process
group likewise (`hung up`), and a SIGTERM to `east-eval` (`terminated`; one sent to the
whole group also ends the workers at once, as a library's process pool inside them needs
SIGTERM to end its own). A rerun resumes them.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from east_agent.common.counts import counted, instance_kind
from east_agent.common.entry import USER_ERRORS, CommandError, raise_if_signalled

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

CONSOLE_LOG = "console.log"


@dataclass(frozen=True)
class Job:
    number: int  # 1-based, as the grid prints it
    name: str
    command: list[str]
    output: Path
    then: Callable[[], object] | None = None  # after the run, in its worker (picklable)


WORKER_IMPORTS = "east_agent.evaluation.worker_imports"
LEFT_TO_EAST_EVAL = (signal.SIGINT, signal.SIGHUP)  # ignored by the workers: see _start_worker
FORKSERVER_PARENT = "EAST_EVAL_PID"  # tells the forkserver whom to die with


def start_worker_imports() -> multiprocessing.context.ForkServerContext:
    """Start the process the workers will be forked from (unless it runs already) and
    return its multiprocessing context; it imports what a run needs while this one goes on,
    touches nothing of the grid's, and ends with this process. It sees this process's
    `sys.path` and nothing else (`PYTHONSAFEPATH`: not an `east_agent` folder that happens
    to lie in the current directory), as spawned workers did."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([WORKER_IMPORTS])  # no effect once it runs
    with _environment(
        PYTHONSAFEPATH="1",
        PYTHONPATH=os.pathsep.join(path for path in sys.path if path),
        **{FORKSERVER_PARENT: str(os.getpid())},
    ):
        # SIGHUP kept from the resource tracker (it ignores SIGINT and SIGTERM itself, and
        # keeps the blocked mask it starts with): a closed terminal ended it with the grid,
        # and the semaphores it was to unlink stayed in /dev/shm. Not the forkserver's mask:
        # the workers' children would inherit it (the forkserver ignores SIGHUP itself)
        with _blocked(signal.SIGHUP):
            multiprocessing.resource_tracker.ensure_running()
        # Ctrl-C and SIGHUP held back from the forkserver until it ignores them (at the
        # top of its preload): before, one in its first half second, while Python started
        # and multiprocessing imported, printed the forkserver's traceback
        with _blocked(*LEFT_TO_EAST_EVAL):
            multiprocessing.forkserver.ensure_running()  # at once; the imports go on there
    return context


@contextmanager
def _blocked(*signums: int):
    """`signums` held back from this thread (and kept from the processes it starts)
    meanwhile; one that came is taken after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, set(signums))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


@contextmanager
def _environment(**values: str):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass(frozen=True)
class FollowUp:
    """Work for a worker once every run it `needs` (job names) has finished: a grid's
    significance tests of one system while its other systems still run, rather than after
    the last run. What it returns comes back from `run_jobs`; one that fails is left for
    the caller to do again (and fail in plain sight)."""

    name: str
    needs: frozenset[str]
    call: Callable[[], object]  # picklable


def process_threads() -> int:
    """The CPU threads this process may use (`OMP_NUM_THREADS`, else torch's default):
    what the workers share, never more."""
    import torch

    return torch.get_num_threads()


def job_threads(available: int, jobs: int) -> int:
    """CPU threads for each of `jobs` workers sharing `available` (at least one each)."""
    return max(1, available // jobs)


def run_jobs(
    jobs_to_run: Sequence[Job],
    jobs: int,
    total: int,
    follow_ups: Sequence[FollowUp] = (),
    after_run: Callable[[Job], object] | None = None,
) -> dict[str, object]:
    """Run `jobs_to_run` on up to `jobs` workers, the next one starting as soon as one is
    free, and each follow-up as soon as its runs are done; with one worker's worth of runs,
    one after another in this process (one checkpoint load, every thread), and no
    follow-ups. `after_run(job)`, when given, runs in this process after each run that
    finished (the next runs started first, so that the workers go on meanwhile). A run
    that fails stops none of the others, whatever `jobs`: once they are done, a
    `CommandError` names each that failed. What the follow-ups returned, by name."""
    jobs = min(jobs, len(jobs_to_run))  # the workers the runs really need
    raise_if_signalled()  # a Ctrl-C a library swallowed while the grid was checked
    if jobs <= 1:
        _run_here(jobs_to_run, total, after_run)
        return {}
    available = process_threads()
    with worker_pool(jobs, job_threads(available, jobs)) as (pool, share):
        return _run_on_workers(
            pool, share, jobs_to_run, follow_ups, after_run, jobs, total, available
        )


@contextmanager
def worker_pool(jobs: int, threads: int) -> Iterator[tuple[ProcessPoolExecutor, Synchronized]]:
    """`jobs` workers on `threads` threads each, and the shared count that `share_out`
    raises."""
    context = start_worker_imports()
    share = context.Value("i", threads)
    pool = ProcessPoolExecutor(
        jobs,
        mp_context=context,
        initializer=_start_worker,
        initargs=(share, dict(os.environ), sys.orig_argv),
    )
    try:
        yield pool, share
    except BaseException:
        _stop(pool)  # Ctrl-C, a dead worker, a failed test: the runs left can be resumed
        raise
    pool.shutdown()


def _run_on_workers(
    pool, share, jobs_to_run, follow_ups, after_run, jobs: int, total: int, available: int
):
    pending = list(jobs_to_run)
    running: dict[Future, Job | FollowUp] = {}
    failures: list[str] = []
    waiting, finished, returned = list(follow_ups), set(), {}
    done_here: list[Job] = []  # finished runs whose `after_run` is still to come
    while pending or running or done_here:
        raise_if_signalled()
        while pending and len(running) < jobs:  # a failed run stops none of the others
            job = pending.pop(0)
            said = f"started{_resumed(job)} ({_console(job)})"
            print(f"[{job.number}/{total}] {job.name}: {said}", flush=True)
            running[_submit(pool, _run_job, job, jobs)] = job
        if not running:
            if not done_here:
                break
            after_run(done_here.pop(0))
            continue
        # with work left here, only what has finished by now: the workers get theirs first
        done, _ = wait(running, timeout=0 if done_here else None, return_when=FIRST_COMPLETED)
        if not done:
            after_run(done_here.pop(0))
            continue
        if any(isinstance(future.exception(), BrokenProcessPool) for future in done):
            cut_off = ", ".join(w.name for w in running.values() if isinstance(w, Job))
            raise CommandError(f"a worker process died; cut off (a rerun resumes): {cut_off}")
        for future in done:
            work = running.pop(future)
            if isinstance(work, FollowUp):
                if future.exception() is None:
                    returned[work.name] = future.result()
            elif future.exception() is None:
                finished.add(work.name)
                print(f"[{work.number}/{total}] {work.name}: {future.result():.1f} s", flush=True)
                if after_run is not None:
                    done_here.append(work)
            else:
                failures.append(f"{work.name}: {future.exception()} (see {_console(work)})")
        for follow_up in [f for f in waiting if f.needs <= finished]:
            waiting.remove(follow_up)  # before the next run: it holds a worker a moment
            running[_submit(pool, follow_up.call)] = follow_up
        if running and not pending:  # no run will start: no worker will need
            # its threads again (before: the workers' threads summed, above `available`
            # where the jobs outnumber them, and a last run on 2 threads of 1 crawled)
            share_out(pool, share, job_threads(available, len(running)))
    check_runs(failures, returned)
    return returned


class RunsFailed(CommandError):
    """Runs that failed, named (`name: why`), once the others were done; what the
    follow-ups returned meanwhile (`returned`, by name), for the grid's tables."""

    def __init__(self, failures: Sequence[str], returned: dict[str, object]) -> None:
        super().__init__("runs failed: " + "; ".join(failures))
        self.returned = returned


def check_runs(failures: Sequence[str], returned: dict[str, object] | None = None) -> None:
    """Fail naming the runs that failed, if any (`RunsFailed`)."""
    if failures:
        raise RunsFailed(failures, returned or {})


def _run_here(
    jobs_to_run: Sequence[Job], total: int, after_run: Callable[[Job], object] | None
) -> None:
    from east_agent.evaluation.runs import LoadedModels, run_simuleval

    models, failures = LoadedModels(), []
    for job in jobs_to_run:
        raise_if_signalled()
        # a resumed run says so itself, here on this console (`note: ... resumed after`)
        print(f"[{job.number}/{total}] {job.name}", flush=True)
        try:
            run_simuleval(job.command, job.output, models)
            if job.then is not None:
                job.then()
        except (Exception, SystemExit) as error:  # the next runs go on, as beside workers
            failures.append(f"{job.name}: {_failure(error)}")
            print(f"[{job.number}/{total}] {job.name}: failed (named at the end)", flush=True)
            continue
        if after_run is not None:
            after_run(job)
    check_runs(failures)


def _failure(error: BaseException) -> str:
    """Why a run failed, for the grid's last line: a user error's message; another
    error's type too, its traceback printed now (to the console log, in a worker)."""
    if isinstance(error, SystemExit):  # a flag SimulEval's parser refused: said above
        return f"the run stopped (exit {error.code if error.code is not None else 0})"
    if isinstance(error, USER_ERRORS):
        return str(error)
    traceback.print_exception(error)
    return f"{type(error).__name__}: {error}"


def share_out(pool: ProcessPoolExecutor, share: Synchronized, threads: int) -> None:
    """Tell the workers to use `threads` threads each from now on (if that is more)."""
    if threads <= share.value:
        return
    share.value = threads
    for worker in list((getattr(pool, "_processes", None) or {}).values()):
        with suppress(ProcessLookupError):  # a worker that has just ended
            if worker.pid is not None and worker.is_alive():
                os.kill(worker.pid, signal.SIGUSR1)


def _submit(pool: ProcessPoolExecutor, call: Callable, *arguments) -> Future:
    """`pool.submit`, Ctrl-C, SIGHUP and SIGTERM held back meanwhile: the worker it may
    start is then one `_stop` knows of and kills (before: a signal taken after the
    forkserver forked it, before the pool listed it, left it to unpickle the pool's
    semaphore once `east-eval` had removed it, and print that traceback after
    `east-eval: interrupted`)."""
    with _blocked(*LEFT_TO_EAST_EVAL, signal.SIGTERM):
        return pool.submit(call, *arguments)


def _stop(pool: ProcessPoolExecutor) -> None:
    """End the workers now rather than after their runs (`shutdown` alone waits for them)."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # no public handle
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.kill()


def _resumed(job: Job) -> str:
    """`, resumed after its N finished sentences` (talks, in long form) for a run whose
    folder holds some (before: `started`, as a fresh one): a worker's run says so in its
    console.log only."""
    from east_agent.evaluation.runs import finished_lines

    finished = finished_lines(job.output / "instances.log")
    kind = instance_kind("--long-form" in job.command)
    return f", resumed after its {counted(finished, f'finished {kind}')}" if finished else ""


def _console(job: Job) -> Path:
    return job.output / CONSOLE_LOG


# -- in the worker ----------------------------------------------------------------------------

_loaded = None  # the worker's LoadedModels: one checkpoint for every run it is handed


def _start_worker(share, environment: dict[str, str], command: list[str]) -> None:
    from east_agent.common.child_process import die_with
    from east_agent.common.run_lock import works_for

    os.environ.clear()  # east-eval's, as a spawned worker would have it, not the forkserver's
    os.environ.update(environment)
    # east-eval's too: a run folder's lock names its holder by it (the forkserver's before)
    works_for(command)
    if sys.platform.startswith("linux"):
        # the forkserver, which ends with east-eval: its pid as it was at the fork, so that
        # a forkserver gone before this line is noticed (then the parent is another)
        preloaded = sys.modules.get(WORKER_IMPORTS)
        die_with(preloaded.FORKSERVER_PID if preloaded else os.getppid())()
    # Python runs the handler in the main thread, between two operators: the thread that
    # runs the model, which is the one whose thread count counts (OpenMP's is per thread).
    # Installed before the count is first read, so that no raise of it is missed.
    signal.signal(signal.SIGUSR1, lambda *_: _take_threads(share.value))
    # Ctrl-C reaches the whole process group: it is east-eval's to act on (it stops the
    # workers); a worker that took it would print its traceback, an idle one too. So does
    # a closed terminal's SIGHUP. Not SIGTERM: a library's process pool ends its workers
    # by it (OmniSTEval's alignment), and they would inherit it ignored (the pool hung)
    for signum in LEFT_TO_EAST_EVAL:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, LEFT_TO_EAST_EVAL)  # see worker_imports
    _take_threads(share.value)
    # tqdm's progress bars lock across processes with a named semaphore, which a worker
    # killed by a failed grid never unlinks (multiprocessing then warns of a leak at exit);
    # a worker's bars are its own: a thread lock serves
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


def _take_threads(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)  # for SimulEval children (--batch-size 1)
    torch.set_num_threads(threads)


def _run_job(job: Job, jobs: int) -> float:
    """One run in this worker; its wall seconds (all tries). A failure's traceback goes to
    the run's console log; what comes back is a plain CommandError naming it (any
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
        except (Exception, SystemExit) as error:  # said as a run in east-eval would be
            why = _failure(error)
            print(f"failed: {why}", file=sys.stderr, flush=True)  # in the console log too
            raise CommandError(why) from None


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
