"""Writing a file or a folder so that a reader never sees it half-written.

Everything the project writes for others to read (tables, records, figures, data files,
checkpoints, submission folders) is written beside its final path under a temporary name
and renamed into place in one step; a failure leaves the old content, never a torn one.
A folder already in place is swapped out in one step too, and deleted only afterwards.
A device or a pipe (`/dev/null`, `/dev/stdout`, a FIFO) is written into, never replaced.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # renameat2(2)
AT_FDCWD = -100


STALE_SECONDS = 3600  # a leftover of a process gone, untouched this long, is a crashed write's


def temporary_beside(path: Path, private: bool = True) -> Path:
    """The temporary name of `path`, emptied of any leftover of a crashed write: this
    process's own, and those of processes that no longer run here and have not been
    touched for an hour (a writer on another machine sharing the folder keeps its files).
    An old folder that an interrupted `install` had set aside goes back to `path` if
    `path` is missing. `private` adds this process's id; cooperating processes (the ranks
    of one training run) share the name with `private=False`."""
    path = Path(path)
    tag = f".{os.getpid()}" if private else ""
    temporary = path.with_name(f".{path.name}{tag}.tmp")
    settle(aside_of(temporary), path)
    remove_tree(temporary)
    for leftover in stale_leftovers(path):
        try:
            settle(leftover, path)
        except OSError:  # another user's, say: not ours to clean
            pass
    return temporary


def aside_of(temporary: Path) -> Path:
    return temporary.with_name(f"{temporary.name}.old.tmp")


def stale_leftovers(path: Path) -> list[Path]:
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.tmp(\.old\.tmp)?")
    stale = []
    for entry in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.fullmatch(entry.name)
        if match and int(match[1]) != os.getpid() and not alive(int(match[1])):
            if time.time() - entry.lstat().st_mtime > STALE_SECONDS:
                stale.append(entry)
    return stale


def settle(leftover: Path, path: Path) -> None:
    """Put a set-aside old folder back where `path` is missing; remove any other leftover."""
    if leftover.name.endswith(".old.tmp") and leftover.is_dir() and not path.exists():
        os.replace(leftover, path)
    else:
        remove_tree(leftover)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def is_special_file(path: Path) -> bool:
    """Whether `path` is a device, a pipe or a socket, or a link to one or through a
    process's open files (`/dev/stdout` -> /proc/self/fd/1, wherever that leads): what a
    write goes into (`/dev/null`, a shell's redirection), not a file to replace."""
    hop = Path(path).absolute()
    for _ in range(40):  # the kernel's limit on a chain of links
        if Path(os.path.realpath(hop.parent)).parts[1:2] == ("proc",):
            return True  # /proc/<pid>/fd/1: a process's open file, not a path to replace
        if not hop.is_symlink():
            break
        hop = hop.parent / os.readlink(hop)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def write_into(temporary: Path, path: Path) -> None:
    """The bytes of `temporary` appended to the device or pipe at `path`, as a shell's
    `>>` would (`>` would truncate a file a process's stdout leads to); `temporary` is
    removed either way, and a failure names `path`."""
    try:
        if temporary.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a device or pipe, not replaced by a folder")
        with open(temporary, "rb") as source, open(path, "ab") as target:
            shutil.copyfileobj(source, target)
    except OSError as error:
        raise type(error)(error.errno, error.strerror, str(path)) from None
    finally:
        remove_tree(temporary)


def install(temporary: Path, path: Path) -> None:
    """Put `temporary` in `path`'s place. A folder already there is swapped with it in one
    step, then deleted under the temporary name: a kill leaves the old folder whole or the
    new one, never a torn one (the leftover is deleted by a later `temporary_beside`). A
    device or pipe at `path` takes the temporary's bytes instead (before: `--output
    /dev/null` replaced the system's /dev/null with a file)."""
    path = Path(path)
    if is_special_file(path):
        write_into(temporary, path)
    elif not path.is_dir() or path.is_symlink():
        os.replace(temporary, path)
    elif not temporary.is_dir():
        remove(temporary)  # a file: a folder's temporary is a folder
        raise IsADirectoryError(errno.EISDIR, "a folder, not replaced by a file", str(path))
    elif exchange(temporary, path):
        remove_tree(temporary)
    else:  # no atomic exchange here: the old folder goes aside first
        aside = aside_of(temporary)
        try:
            os.replace(path, aside)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            remove_tree(path)  # overlayfs cannot rename a lower layer's folder: delete it first
            os.replace(temporary, path)
            return
        os.replace(temporary, path)
        remove_tree(aside)


CANNOT_EXCHANGE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM)


def exchange(one: Path, other: Path) -> bool:
    """Swap two paths in one step (Linux's `renameat2` with RENAME_EXCHANGE); False where
    the system or the file system cannot."""
    return _renameat2(one, other, RENAME_EXCHANGE)


def install_new(temporary: Path, path: Path) -> None:
    """Put `temporary` at `path`, which must not be there: FileExistsError if something
    took the name meanwhile (checked in the rename itself where `renameat2` can, else just
    before it)."""
    if _renameat2(temporary, path, RENAME_NOREPLACE):
        return
    if path.exists() or path.is_symlink():
        raise FileExistsError(errno.EEXIST, "appeared meanwhile, not replaced", str(path))
    os.rename(temporary, path)


def _renameat2(one: Path, other: Path, flags: int) -> bool:
    """Linux's `renameat2`; False where the system or the file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    names = os.fsencode(str(one)), os.fsencode(str(other))
    if renameat2(AT_FDCWD, names[0], AT_FDCWD, names[1], flags) == 0:
        return True
    code = ctypes.get_errno()
    if code == errno.EEXIST:
        raise FileExistsError(code, "appeared meanwhile, not replaced", str(other))
    if code in CANNOT_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(one), None, str(other))


@contextmanager
def named_as(path: Path) -> Iterator[None]:
    """An OSError of a write that names no file (a full disk, a size limit: `write()`
    knows its descriptor only) raised naming `path` (before: `No space left on device`,
    which file unsaid)."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise type(error)(error.errno, error.strerror, str(path)) from None


def remove(path: Path) -> None:
    """Remove the file (or link) `path`, if there. A folder there is refused, not deleted
    (before: a folder named as a record or score file, `scores.tsv/`, was deleted with all
    it held, exit 0): `remove_tree` is for the folders this package makes."""
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(
            errno.EISDIR, "a folder where this command keeps a file, not removed", str(path)
        )
    if path.exists() or path.is_symlink():
        path.unlink()


def remove_tree(path: Path) -> None:
    """Remove `path`, a folder with all it holds or a file, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        remove(path)


def check_replaceable(path: Path, kind: str, marks: tuple[str, ...] = ()) -> None:
    """Refuse, before any work, an output `path` that is there and is not what this
    command writes: a folder (written in place of a file, or of a folder that lacks any of
    `marks`, the files every `kind` holds) is replaced whole, and whatever it held lost."""
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return
    missing = [mark for mark in marks if not (path / mark).exists()]
    if not marks or missing:
        holds = f" (no {', '.join(missing)})" if missing else ""
        raise ValueError(
            f"{path} is a folder, not a {kind}{holds}: writing there would delete it; "
            "choose another output"
        )


def not_a_folder(path: Path) -> str:
    """Why `path` is no folder, as every refusal says it: no such folder, a file, or a
    broken link."""
    if path.is_symlink() and not path.exists():
        return f"a broken link, to {os.readlink(path)}, which is not there"
    return "a file, not a folder" if path.exists() else "no such folder"


def check_folder_path(folder: Path, where: str) -> None:
    """A folder to write that is a file, or inside one, or a broken link (or inside one),
    refused saying so (the link a bare "File exists" errno before)."""
    folder = Path(folder)
    for path in (folder, *folder.absolute().parents):
        if path.is_symlink() and not path.exists():
            inside = "" if path == folder else f"{path} is "
            raise ValueError(f"{where} {folder}: {inside}{not_a_folder(path)}")
    existing = next(path for path in (folder, *folder.absolute().parents) if path.exists())
    if existing == folder and not existing.is_dir():
        raise ValueError(f"{where} {folder}: {not_a_folder(folder)}")
    if not existing.is_dir():  # before: "a file, not a folder (X is)" of a path not there
        raise ValueError(f"{where} {folder}: inside a file ({existing} is a file, not a folder)")


@contextmanager
def atomic_path(path: Path, new: bool = False) -> Iterator[Path]:
    """A temporary path to write; when the block ends it becomes `path` in one rename (on an
    error it is removed and `path` is left as it was). `new`: `path` must not be there
    then either (`install_new`), else it is replaced. A device or pipe at `path` takes
    the bytes written instead (`write_into`), the temporary made in the system's temporary
    folder, not beside it (in /dev)."""
    if is_special_file(path):
        with tempfile.TemporaryDirectory(prefix="east-") as folder:
            temporary = Path(folder) / Path(path).name
            yield temporary
            write_into(temporary, Path(path))
        return
    temporary = temporary_beside(path)
    try:
        yield temporary
        if new:
            install_new(temporary, Path(path))
    except OSError as error:
        remove_tree(temporary)
        if error.filename != str(temporary):
            raise
        # named as the file the user knows (before: `.instances.log.1234.tmp: No space ...`)
        raise type(error)(error.errno, error.strerror, str(path)) from None
    except BaseException:
        remove_tree(temporary)
        raise
    if not new:
        install(temporary, path)


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def append_atomically(path: Path, text: str) -> None:
    """Append `text` to `path` (UTF-8) by rewriting it atomically: a kill leaves the old
    content or all of the new. Writers appending at once each hold the file's lock from
    their read to their rename, so none loses another's text."""
    path = Path(path)
    if is_special_file(path):  # nothing to read back and keep (a FIFO's read would block)
        with open(path, "ab") as handle:
            handle.write(text.encode("utf-8"))
        return
    while True:
        with open(path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if os.fstat(handle.fileno()).st_ino != _inode(path):
                continue  # replaced while this one waited: lock the file now in place
            handle.seek(0)
            before = handle.read().decode("utf-8")
            write_atomically(path, before + text)
            return


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None
