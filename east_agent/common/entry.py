"""The one way a command ends on an error the user can fix: a one-line message, exit 2.

Every console script's `main` is wrapped by `command_line("east-eval")`: the project's
errors (`ValueError`, including the data-file errors; `RuntimeError` for runs that
could not finish; a missing or already existing file) become `east-eval: <message>` on
stderr and exit status 2, the status argparse gives a bad flag. Ctrl-C ends it with
`east-eval: interrupted` and status 130 (128 + SIGINT), after the command's own clean-up
(`finally` blocks: locks, sessions, child processes). Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

USER_ERRORS = (ValueError, RuntimeError, FileNotFoundError, FileExistsError)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

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
                print(f"{command}: interrupted", file=sys.stderr)
                sys.exit(EXIT_INTERRUPTED)

        return wrapped

    return wrap
