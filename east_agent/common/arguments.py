"""Argument types shared by the command lines."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    """A whole number of at least 1 (argparse `type`)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"takes a whole number of at least 1, got {text!r}")
    return int(text)


def non_negative_int(text: str) -> int:
    """A whole number of at least 0 (argparse `type`)."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"takes a whole number of at least 0, got {text!r}")
    return int(text)


def _positive_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"takes {what} above 0, got {text!r}")
    return value


def positive_number(text: str) -> float:
    """A finite number above 0 (argparse `type`; `nan` and `inf` refused)."""
    return _positive_float(text, "a finite number")


def positive_seconds(text: str) -> float:
    """A finite number of seconds above 0 (argparse `type`)."""
    return _positive_float(text, "a number of seconds")


def folder_path(text: str) -> str:
    """A folder to write (argparse `type`): an empty path would be the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: name a folder")
    return text


def add_old_spelling(parser: argparse.ArgumentParser, old: str, dest: str, **kwargs) -> None:
    """Accept a flag's old spelling for a release, hidden from --help (`dest` is the new
    flag's, whose default stands when neither is given)."""
    parser.add_argument(old, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def given_flags(argv: list[str], flags: tuple[str, ...], prefix: str | None = None) -> list[str]:
    """The flags of `flags` (and those starting with `prefix`) that `argv` gives, either
    spelling (`--flag value`, `--flag=value`), in the order of `argv`."""
    given = []
    for arg in argv:
        name = arg.split("=", 1)[0]
        wanted = name in flags or (prefix is not None and name.startswith(prefix))
        if arg.startswith("--") and wanted and name not in given:
            given.append(name)
    return given


def checked_device(name: str, where: str, needed_here: bool = True):
    """The torch device `name` says (a ValueError naming `where` if torch knows none, or,
    with `needed_here`, if it is a CUDA device this machine lacks). Imports torch."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"{where}: {name!r} is not a device: {error}") from None
    if needed_here and device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{where}: {name!r}: this machine has no CUDA device")
    return device
