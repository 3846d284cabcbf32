"""The one way a command ends on an error the user can fix: a one-line message, exit 2.

Every console script's `main` is wrapped by `command_line("east-eval")`: the project's
errors (`ValueError`, including the data-file errors; `CommandError` for runs that could
not finish, whose message says why; a file missing, already there, unreadable, a folder
or inside a file) become `east-eval: <message>` on stderr and exit status 2, the status
argparse gives a bad flag.
Ctrl-C prints `east-eval: interrupted` after the command's own clean-up (`finally`
blocks: locks, sessions, child processes) and ends the process by SIGINT, as an
unhandled Ctrl-C would, so that a shell running it in a loop or script stops too (a
plain exit 130 would not stop bash). Anything else is a bug and keeps its traceback: a
plain `RuntimeError` too, since that is what torch raises when a program is wrong (a
shape, a device, a dtype).
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import TypeVar


class CommandError(RuntimeError):
    """A run that could not finish for a reason its message says in full (a failed job,
    a busy folder, a sentence too long for the model): one line, no traceback."""


# a file the user named that is missing, there already, unreadable or of the wrong kind
FILE_ERRORS = (
    FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError,
)  # fmt: skip
USER_ERRORS = (ValueError, CommandError, *FILE_ERRORS)
EXIT_USER_ERROR = 2

Main = TypeVar("Main", bound=Callable)


def fail(command: str, message: object) -> None:
    """End `command` with `message` (exit 2)."""
    print(f"{command}: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def command_line(command: str) -> Callable[[Main], Main]:
    def wrap(main: Main) -> Main:
        @functools.wraps(main)
        def wrapped(*args, **kwargs):
            try:
                return main(*args, **kwargs)
            except USER_ERRORS as error:
                fail(command, error)
            except KeyboardInterrupt:
                sys.stdout.flush()  # the signal ends the process without Python's flush
                print(f"{command}: interrupted", file=sys.stderr, flush=True)
                # what Python does before it ends by SIGINT itself: the exit handlers, so that
                # multiprocessing unlinks its semaphores (before: the resource tracker warned
                # of leaked ones after a grid's Ctrl-C)
                atexit._run_exitfuncs()
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGINT)
                raise  # not reached on POSIX

        return wrapped

    return wrap
