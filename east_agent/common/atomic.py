"""Writing a file or a folder so that a reader never sees it half-written.

Everything the project writes for others to read (tables, records, figures, data files,
checkpoints, submission folders) is written beside its final path under a temporary name
and renamed into place in one step; a failure leaves the old content, never a torn one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temporary_beside(path: Path, private: bool = True) -> Path:
    """The temporary name of `path`, emptied of any leftover of a crashed write. `private`
    adds this process's id; cooperating processes (the ranks of one training run) share
    the name with `private=False`."""
    path = Path(path)
    tag = f".{os.getpid()}" if private else ""
    temporary = path.with_name(f".{path.name}{tag}.tmp")
    remove(temporary)
    return temporary


def install(temporary: Path, path: Path) -> None:
    """Put `temporary` in `path`'s place (a folder already there is replaced)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.replace(temporary, path)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write; when the block ends it becomes `path` in one rename (on an
    error it is removed and `path` is left as it was)."""
    temporary = temporary_beside(path)
    try:
        yield temporary
    except BaseException:
        remove(temporary)
        raise
    install(temporary, path)


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
