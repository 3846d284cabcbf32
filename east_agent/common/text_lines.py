"""Reading line-aligned text files (sources, references, training pairs, JSON Lines).

A line ends at `\\n` or `\\r\\n` only. `str.splitlines()` and text-mode files also end
lines elsewhere (`str.splitlines()` at U+2028, U+0085, form feeds, `\\x1c`-`\\x1e`...;
universal newlines at a lone `\\r`), characters a sentence may hold: two parallel files
then keep the same line count while their sentences shift. Files are UTF-8 (`.gz` read
through, known by their first bytes: a cut-off one named as such); a byte that is not is
named with its file, line and column, and so are a NUL (a UTF-16 file reads as UTF-8 with
one after every ASCII character) and a byte-order mark starting a line past the first
(files joined with `cat`).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

SHOWN = 10  # line numbers named in one message


class TextFileError(ValueError):
    """A text file that is not UTF-8, or has a line SimulEval would read otherwise."""


def check_path_given(value: str | None, flag: str, kind: str = "file") -> None:
    """Refuse an empty path flag (`Path("")` would be the current folder)."""
    if value is not None and not value.strip():
        raise ValueError(f"{flag} is empty: name a {kind}")


def check_input_file(path: str | Path, flag: str) -> None:
    """Refuse, naming `flag`, an input path that is a folder or nothing (a pipe, `<(...)`,
    is read as a file)."""
    if Path(path).is_dir():
        raise ValueError(f"{flag} {path}: a folder, not a file")
    if not Path(path).exists():
        raise ValueError(f"{flag} {path}: no such file")


def check_regular_file(path: str | Path, flag: str) -> None:
    """`check_input_file`, and a pipe or device refused: a file read more than once (checked
    here, then read by SimulEval) must be there for each reading."""
    check_input_file(path, flag)
    if not Path(path).is_file():
        raise ValueError(
            f"{flag} {path}: not a regular file (a pipe?); it is read more than once: write "
            "it to a file"
        )


GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
# what a gzip stream that is cut off or damaged raises as it is read
BROKEN_GZIP = (EOFError, gzip.BadGzipFile, zlib.error)


class GzipReader(gzip.GzipFile):
    """A gzip stream that closes the file it reads."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__(fileobj=raw, mode="rb")
        self.raw_file = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.raw_file.close()


def open_binary(path: str | Path) -> BinaryIO:
    """A file's bytes, gunzipped where it starts as gzip does (whatever its name says: a
    plain file named `.gz` is read as it is; a pipe is read once)."""
    handle = open(path, "rb")
    if not starts_as_gzip(handle.peek(len(GZIP_MAGIC))):
        return handle
    return cast(BinaryIO, GzipReader(handle))  # a GzipFile reads as BinaryIO, undeclared


def broken_gzip(path: str | Path, number: int, error: Exception) -> TextFileError:
    return TextFileError(f"{path}: line {number}: the gzip stream is cut off or damaged ({error})")


def strip_newline(raw: bytes) -> bytes:
    if raw.endswith(b"\r\n"):
        return raw[:-2]
    return raw[:-1] if raw.endswith(b"\n") else raw


def not_utf8(raw: bytes, start: int) -> str:
    """What is wrong with a line whose byte `start` is not UTF-8 (column in characters)."""
    column = len(raw[:start].decode("utf-8")) + 1
    return f"not UTF-8 (byte 0x{raw[start]:02x} at column {column})"


def bad_byte(data: bytes, start: int) -> tuple[int, str]:
    """The line number of a whole file's bad byte at `start`, and what is wrong there."""
    line_start = data.rfind(b"\n", 0, start) + 1
    return data.count(b"\n", 0, start) + 1, not_utf8(data[line_start:], start - line_start)


def decode_line(path: str | Path, number: int, raw: bytes) -> str:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TextFileError(f"{path}: line {number}: {not_utf8(raw, error.start)}") from None
    check_decoded(path, number, line)
    return line


def check_decoded(path: str | Path, number: int, line: str) -> None:
    """Refuse a NUL in a line, and a byte-order mark starting one past the first (the
    first line's is the reader's business: `check_plain_text`)."""
    if "\0" in line:
        raise TextFileError(
            f"{path}: line {number}: a NUL byte at column {line.index(chr(0)) + 1}; a "
            "UTF-16 file? save it as UTF-8"
        )
    if number > 1 and line.startswith("\ufeff"):
        raise TextFileError(
            f"{path}: line {number}: starts with a byte-order mark (U+FEFF), a file's "
            "first bytes (files joined with cat?); remove it"
        )


def iter_lines(path: str | Path) -> Iterator[str]:
    """The lines of a UTF-8 file, without their `\\n` / `\\r\\n`, one at a time."""
    number = 0
    with open_binary(path) as handle:
        try:
            for number, raw in enumerate(handle, 1):  # binary files split at b"\n" only
                yield decode_line(path, number, strip_newline(raw))
        except BROKEN_GZIP as error:
            raise broken_gzip(path, number + 1, error) from None


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 file, without their `\\n` / `\\r\\n` (no empty last line)."""
    return list(iter_lines(path))


def read_text(path: str | Path) -> str:
    """A whole UTF-8 file as it is (line ends kept), a bad byte named by line and column."""
    with open_binary(path) as handle:
        try:
            data = handle.read()
        except BROKEN_GZIP as error:
            raise broken_gzip(path, 1, error) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        number, problem = bad_byte(data, error.start)
        raise TextFileError(f"{path}: line {number}: {problem}") from None
    if "\0" in text or "\n\ufeff" in text:
        for number, line in enumerate(text.split("\n"), 1):
            check_decoded(path, number, line)
    return text


def read_simuleval_lines(path: str | Path) -> list[str]:
    """The lines of a source or reference file that SimulEval reads too.

    SimulEval reads them with universal newlines, which also end a line at a lone `\\r`:
    a line holding one would be two sentences there and one here, so it is refused. It
    reads them as they are: a gzip file (read through here) and a byte-order mark (a word
    of the first sentence there) are refused too."""
    check_plain_text(path)
    lines = read_lines(path)
    split = [number for number, line in enumerate(lines, 1) if "\r" in line]
    if split:
        raise TextFileError(
            f"{path}: {numbered(split)}: a carriage return (\\r) inside the line, where "
            "SimulEval would start a new sentence; remove it (lines end with \\n or \\r\\n)"
        )
    return lines


def numbered(numbers: list[int]) -> str:
    """`line 3, 7`: the lines a message names (the first `SHOWN`, then how many more)."""
    more = f" and {len(numbers) - SHOWN} more" if len(numbers) > SHOWN else ""
    return f"line {', '.join(str(number) for number in numbers[:SHOWN])}{more}"


def starts_as_gzip(head: bytes) -> bool:
    """Whether a file's first bytes are gzip's, whatever its name says."""
    return head[: len(GZIP_MAGIC)] == GZIP_MAGIC


def check_plain_text(path: str | Path) -> None:
    """Refuse a file SimulEval would read otherwise than `read_lines`: gzip-compressed, or
    starting with a UTF-8 byte-order mark."""
    with open(path, "rb") as handle:
        head = handle.read(len(UTF8_BOM))
    if starts_as_gzip(head):
        raise TextFileError(
            f"{path}: gzip-compressed; SimulEval reads plain text files: decompress it "
            "first (gunzip -k)"
        )
    if head == UTF8_BOM:
        raise TextFileError(
            f"{path}: line 1: starts with a UTF-8 byte-order mark (U+FEFF), which SimulEval "
            "would read as part of the first sentence; save the file without it"
        )
