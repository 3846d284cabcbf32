"""The one way a command ends on an error the user can fix: a one-line message, exit 2.

Every console script's `main` is wrapped by `command_line("east-eval")`: the project's
errors (`ValueError`, including the data-file errors; `CommandError` for runs that could
not finish, whose message says why; a file missing, already there, unreadable, a folder
or inside a file; a file system full, over a size limit or quota, read-only, or given a
name too long for it) become `east-eval: <message>` on stderr and exit status 2, the status
argparse gives a bad flag.
Ctrl-C prints `east-eval: interrupted` after the command's own clean-up (`finally`
blocks: locks, sessions, child processes) and ends the process by SIGINT, as an
unhandled Ctrl-C would, so that a shell running it in a loop or script stops too (a
plain exit 130 would not stop bash). SIGTERM (`kill`, `timeout`, a batch scheduler's
end of a job) and SIGHUP (a closed terminal) are taken the same way (`east-eval:
terminated`, `east-eval: hung up`), and end the process by their own signal; one that
the command was started ignoring (`nohup`) stays ignored. A signal ends the command so
even where a library swallowed its `KeyboardInterrupt` (CPython wraps one raised in a
`__set_name__` in a RuntimeError, and only prints one raised in a `__del__` or a weakref
callback, as importlib's module locks; before, `east-eval` then ended with that traceback,
or ran its whole grid and exited 0): it stops
at its next `raise_if_signalled()` (a grid's, before each run) or at its end. Anything
else is a bug and keeps its traceback: a plain `RuntimeError` too, since that is what
torch raises when a program is wrong (a shape, a device, a dtype).
A reader of stdout that went away (`east-eval ... | head -2`) ends the command as the
SIGPIPE Python ignores would end any Unix tool: silently, exit status 141 (before: a
`BrokenPipeError` traceback).
"""

from __future__ import annotations

import atexit
import errno
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import ParamSpec, TypeVar


class CommandError(RuntimeError):
    """A run that could not finish for a reason its message says in full (a failed job,
    a busy folder, a sentence too long for the model): one line, no traceback."""


# a file the user named that is missing, there already, unreadable or of the wrong kind
FILE_ERRORS = (
    FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError,
)  # fmt: skip
USER_ERRORS = (ValueError, CommandError, *FILE_ERRORS)
# a file system that takes no more: full, over a size limit or quota, read-only, or a name
# too long for it (before: tracebacks, from every command)
FILE_SYSTEM_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG}
)
EXIT_USER_ERROR = 2
# signals that end a command as Ctrl-C does, after its clean-up, and what it then says
ENDING_SIGNALS: dict[int, str] = {
    signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up",
}  # fmt: skip
RAISED_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # Python raises KeyboardInterrupt itself


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C would be, so that every clean-up written for
    Ctrl-C (`except KeyboardInterrupt`, `finally`) runs for them too."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def __reduce__(self) -> tuple[type[Terminated], tuple[int]]:
        return Terminated, (self.signum,)


_handlers_owner: int | None = None  # the process whose command installed the handlers
_signalled: int | None = None  # the first ending signal its command took
_early: list[int] = []  # those taken before the command's handlers went in, one a kind
_armed = False  # whether the handlers raise: once the command's `try` is open (`_arm`)


def _raise_terminated(signum: int, frame) -> None:
    global _signalled
    if os.getpid() != _handlers_owner:  # a copy made by fork that kept it: the default
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _signalled = _signalled or signum
    if not _armed:  # as the handlers go in: raised once the command's `try` is open
        return
    # once: a second one (a closed terminal sends SIGHUP twice, a scheduler SIGTERM again)
    # must not cut the clean-up short
    for taken in RAISED_SIGNALS:
        signal.signal(taken, signal.SIG_IGN)
    raise Terminated(signum)


def _raise_interrupt(signum: int, frame) -> None:
    """Ctrl-C as Python takes it (each one raises: a second one cuts a slow clean-up
    short), and kept in mind."""
    global _signalled
    if os.getpid() == _handlers_owner:
        _signalled = _signalled or signum
        if not _armed:  # as the handlers go in: raised once the command's `try` is open
            return
    signal.default_int_handler(signum, frame)


def _record_early(signum: int, frame) -> None:
    """Keep the first ending signal for the command's handlers; a second of its kind acts
    as by default at once (an import that hangs still ends by a second Ctrl-C or kill)."""
    if signum not in _early:
        _early.append(signum)
        return
    if signum == signal.SIGINT:
        signal.default_int_handler(signum, frame)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def take_signals_from_start(commands: Collection[str], modules: Collection[str]) -> None:
    """Where this process runs one of `commands` (console scripts, by name) or `python -m`
    one of `modules`, from its package's first line: an ending signal is kept, not raised,
    until the command's own handlers go in, and the command then ends by it at once
    (before: a Ctrl-C while torch imported printed its traceback, or left modules half
    imported, `training.sft` failing 4 s later with a ModuleNotFoundError chain; a SIGTERM
    ended the process without a word). A signal the process was started ignoring stays
    ignored; any other process (a library user's, a multiprocessing child) keeps Python's."""
    if threading.current_thread() is not threading.main_thread():
        return
    if started_program() not in {*commands, *(f"-m {module}" for module in modules)}:
        return
    for signum, (default, _) in _OWN_HANDLERS.items():
        if signal.getsignal(signum) == default:
            signal.signal(signum, _record_early)


def started_program(argv: list[str] | None = None) -> str | None:
    """What the interpreter was started to run (`sys.orig_argv`, which no library rewrites:
    multiprocessing gives its children the parent's `sys.argv`, and `runpy` the path of a
    main module it imports): a script's file name, `-m module`, or None (`-c`, stdin)."""
    rest = list(sys.orig_argv if argv is None else argv)[1:]
    while rest:
        argument = rest.pop(0)
        if argument == "-" or not argument.startswith("-"):
            return os.path.basename(argument) if argument != "-" else None
        if argument == "--":
            return os.path.basename(rest[0]) if rest else None
        if argument.startswith("--"):  # --help, --version: nothing of ours runs
            continue
        for position, flag in enumerate(argument[1:], start=1):
            if flag == "c":
                return None
            if flag in "mWX":  # a flag with a value: the rest of the cluster, or the next
                value = argument[position + 1 :] or (rest.pop(0) if rest else "")
                if flag == "m":
                    return f"-m {value}"
                break
    return None


def raise_if_signalled() -> None:
    """Raise again the ending signal the command took, if a library swallowed it (at a
    point where work is about to start: nothing of the command catches it for good)."""
    if _signalled is not None and os.getpid() == _handlers_owner:
        raise KeyboardInterrupt() if _signalled == signal.SIGINT else Terminated(_signalled)


SignalHandler = Callable[[int, FrameType | None], None] | signal.Handlers
# each ending signal: how Python takes it by default, and how a command does
_OWN_HANDLERS: dict[int, tuple[SignalHandler, SignalHandler]] = {
    signal.SIGINT: (signal.default_int_handler, _raise_interrupt),
    **dict.fromkeys(RAISED_SIGNALS, (signal.SIG_DFL, _raise_terminated)),
}


# the signal mask of each thread forking, kept while SIGTERM and SIGHUP are blocked across it
_before_fork = threading.local()


def _block_before_fork() -> None:
    """SIGTERM and SIGHUP wait while a child is made: one that reached it before Python
    had finished forking was caught by the parent's handler there, then cleared, and lost
    (a pool's `terminate` just after it started a worker left that worker alive, blocked
    on the task queue's lock the pool holds, and the pool's join hung: OmniSTEval's, 2
    runs in 189 on a loaded 2-core machine). Blocked, it waits for the child's default
    handlers (`_default_in_forked_child`), and the kernel ends the child as it is let
    through. SIGINT is not held: let through, Python's own handler would raise it inside
    the fork's hook, where it is only printed."""
    _before_fork.mask = signal.pthread_sigmask(signal.SIG_BLOCK, RAISED_SIGNALS)


def _restore_mask() -> None:
    mask = getattr(_before_fork, "mask", None)
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _default_in_forked_child() -> None:
    """A process made by `fork` (a library's `multiprocessing` pool: OmniSTEval's, sacrebleu's
    significance) takes SIGTERM and SIGHUP as by default, and SIGINT as Python does: before,
    it kept the handler, so a pool's `terminate` raised in its workers (one left a lock held
    and the pool hung) and a copy could run its parent's clean-up. SIGTERM and SIGHUP,
    blocked across the fork, are let through after."""
    for signum, (default, handler) in _OWN_HANDLERS.items():
        if signal.getsignal(signum) in (handler, _record_early):
            with suppress(ValueError):  # not this interpreter's main thread
                signal.signal(signum, default)
    _restore_mask()


if hasattr(os, "register_at_fork") and hasattr(signal, "pthread_sigmask"):
    os.register_at_fork(
        before=_block_before_fork,
        after_in_parent=_restore_mask,
        after_in_child=_default_in_forked_child,
    )


Params = ParamSpec("Params")
Returned = TypeVar("Returned")


def fail(command: str, message: object) -> None:
    """End `command` with `message` (exit 2)."""
    close_progress_bars()
    print(f"{command}: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def file_system_message(error: OSError) -> str:
    """`path: No space left on device`, the path the file system refused first."""
    if not error.filename:
        return str(error.strerror)
    other = f" -> {error.filename2}" if error.filename2 else ""  # a rename's two paths
    return f"{error.filename}{other}: {error.strerror}"


def command_line(
    command: str,
) -> Callable[[Callable[Params, Returned]], Callable[Params, Returned]]:
    def wrap(main: Callable[Params, Returned]) -> Callable[Params, Returned]:
        @functools.wraps(main)
        def wrapped(*args: Params.args, **kwargs: Params.kwargs) -> Returned:
            return _run_command(command, main, args, kwargs)

        return wrapped

    return wrap


def _run_command(
    command: str, main: Callable[..., Returned], args: tuple, kwargs: dict
) -> Returned:
    with _ending_signals_raised():
        try:
            _arm()
            returned = main(*args, **kwargs)
            _flush_stdout()  # a reader gone is met here, not at Python's exit
        except BaseException as error:
            if _signalled is not None:  # whatever a library made of the signal
                _end_by_signal(command, _signalled)
            _end_by_error(command, error)
            raise
        if _signalled is not None:  # swallowed, and the command went on to its end
            _end_by_signal(command, _signalled)
        return returned


def _arm() -> None:
    """The handlers raise from now on, and a signal kept since the process started (as it
    imported) or taken as they went in is raised now, inside the command's `try` (before:
    one in that moment escaped it, a traceback)."""
    global _armed
    _armed = True
    raise_if_signalled()


@contextmanager
def ended_as_stock_simuleval() -> Iterator[None]:
    """Where SimulEval's own `simuleval` command runs this process (`simuleval --system-dir
    DIR`, the evaluator's command for a submission, or `simuleval --agent FILE`), the
    project's errors raised inside end it as ours would: `simuleval: <message>`, exit 2
    (before: SimulEval's traceback of the one-line error). Elsewhere (`east-simuleval`,
    whose own wrapper says them, a library caller, a test) they are raised."""
    if not stock_simuleval_runs():
        yield
        return
    try:
        yield
    except BaseException as error:
        _end_by_error("simuleval", error)
        raise


def stock_simuleval_runs() -> bool:
    """Whether this process is SimulEval's `simuleval` console script (or `python -m
    simuleval.cli`)."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if main_spec is not None and main_spec.name == "simuleval.cli":
        return True
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "simuleval"


def started_in() -> str | None:
    """The folder this process worked in as this module was first imported (None if that
    folder was gone): SimulEval's `simuleval --system-dir DIR` imports the folder's agent
    class there, then builds the agent inside DIR (`os.chdir`), so that relative
    `--source` and `--target` name files in this folder."""
    return _STARTED_IN


def _working_folder() -> str | None:
    try:
        return os.getcwd()
    except FileNotFoundError:
        return None


_STARTED_IN = _working_folder()


def _end_by_error(command: str, error: BaseException) -> None:
    """End `command` as `error` asks, if it is one the user can fix or a signal (returns
    for a program's error, to be raised with its traceback)."""
    if isinstance(error, FILE_ERRORS) and error.strerror:
        fail(command, file_system_message(error))  # `path: what`, not `[Errno 21] what: 'path'`
    if isinstance(error, USER_ERRORS):
        fail(command, error)
    if isinstance(error, OSError) and error.errno in FILE_SYSTEM_ERRNOS:
        fail(command, file_system_message(error))
    if isinstance(error, KeyboardInterrupt):  # raised by hand, as a test does
        _end_by_signal(command, getattr(error, "signum", signal.SIGINT))
    if isinstance(error, BrokenPipeError) and _stdout_reader_gone():
        _stdout_to_nothing()
        sys.exit(128 + signal.SIGPIPE)


def _flush_stdout() -> None:
    """stdout's buffer written out; where that fails (its reader gone, a full disk) stdout
    goes to nothing before the error is raised, so that Python's own flush at exit does not
    fail again (before: "Exception ignored ..." after the message, exit 120)."""
    if sys.stdout is None or sys.stdout.closed:
        return
    try:
        sys.stdout.flush()
    except OSError as error:
        # a reader gone is `_end_by_error`'s to see, on the pipe still there
        if not (isinstance(error, BrokenPipeError) and _stdout_reader_gone()):
            _stdout_to_nothing()
        raise


def _stdout_to_nothing() -> None:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader closed it (a socket's broken pipe is not)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor, no poll
        return False


@contextmanager
def _ending_signals_raised() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Terminated` while the command runs, and SIGINT is kept in
    mind as it raises, unless the command was started ignoring them; only the main thread
    can take signals (a command called from another, as in a test, keeps what it has)."""
    global _handlers_owner, _signalled, _armed
    _handlers_owner = os.getpid()  # first: a signal as soon as a handler is in is this one's
    taken, free = {}, []
    if threading.current_thread() is threading.main_thread():
        # not ignored, not another's (an outer command's: one it calls keeps its signal)
        free = [
            s
            for s, (default, _) in _OWN_HANDLERS.items()
            if signal.getsignal(s) in (default, _record_early)
        ]
    if free:
        _signalled, _armed = None, False  # before the handlers: one at once is kept
        for signum in free:
            taken[signum] = signal.signal(signum, _OWN_HANDLERS[signum][1])
            if taken[signum] is _record_early:  # after the command: as by default
                taken[signum] = _OWN_HANDLERS[signum][0]
        _signalled = _signalled or next(iter(_early), None)  # `_run_command` ends by it
        _early.clear()
    unraisable_hook = sys.unraisablehook
    if taken:
        sys.unraisablehook = functools.partial(_unless_signalled, unraisable_hook)
    try:
        yield
    finally:
        if taken:  # not a command in another thread: the hook is the process's
            sys.unraisablehook = unraisable_hook
        for signum, handler in taken.items():
            signal.signal(signum, handler)


def close_progress_bars() -> None:
    """Close the progress bars an error or a signal cut off (SimulEval's loop's), so that
    the command's last word starts a line of its own (before: `0/7 [00:00<?,
    ?it/s]east-simuleval: interrupted`)."""
    tqdm = sys.modules.get("tqdm")  # none imported, none open
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or ()):
        with suppress(Exception):  # a bar half made, or its stream closed
            bar.close()


def _unless_signalled(hook: Callable, unraisable) -> None:
    """A signal's exception that Python could not raise (it came in a `__del__` or a weakref
    callback, as importlib's module locks run while a module imports) is not printed as
    "Exception ignored in": the command ends by the signal all the same."""
    if not (_signalled is not None and isinstance(unraisable.exc_value, KeyboardInterrupt)):
        hook(unraisable)


def _end_by_signal(command: str, signum: int) -> None:
    """Say why the command ends and end it by `signum`, as the signal would have; another
    ending signal meanwhile is ignored (it would cut the exit handlers short)."""
    for other in ENDING_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    try:
        sys.stdout.flush()  # the signal ends the process without Python's flush
        close_progress_bars()
        print(f"{command}: {ENDING_SIGNALS[signum]}", file=sys.stderr, flush=True)
    except OSError:  # a terminal that hung up takes no more output
        pass
    # what Python does before it ends by SIGINT itself: the exit handlers, so that
    # multiprocessing unlinks its semaphores (before: the resource tracker warned of leaked
    # ones after a grid's Ctrl-C); their log lines are no user's business after the one
    # line (before: torch's "FakeTensor cache stats", three INFO lines, under SimulEval's
    # root logger, when the signal came as torch was imported)
    logging.disable(logging.INFO)
    atexit._run_exitfuncs()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
