"""Argument types shared by the command lines."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import math
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# --torch-dtype's choices: here, not beside the loader, so that a command's flags are read
# without importing torch (before: east-demo's first 1.3 s, a Ctrl-C there a torch traceback)
TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, but not a `None` (a flag whose absence says it all)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


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


def file_path(text: str) -> str:
    """A file to write (argparse `type`): an empty path names none."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: name a file")
    return text


class _OldSpelling(argparse._StoreAction):
    """Stores as the new flag does, and says on stderr which flag it is: the command's own
    refusals and --help name the new one (before: `--adapter X` refused as `--adapter-path
    X: ...`, without a word on the old spelling)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        new = _new_spelling(parser, self.dest)
        print(f"{parser.prog}: {option_string} is the old spelling of {new}", file=sys.stderr)
        super().__call__(parser, namespace, values, option_string)


def add_old_spelling(parser: argparse.ArgumentParser, old: str, dest: str, **kwargs: Any) -> None:
    """Accept a flag's old spelling for a release, hidden from --help (`dest` is the new
    flag's, added before it, whose default stands when neither is given)."""
    parser.add_argument(
        old,
        dest=dest,
        action=_OldSpelling,
        help=argparse.SUPPRESS,
        default=argparse.SUPPRESS,
        **kwargs,
    )


def _parsers_of(
    parser: argparse.ArgumentParser, argv: list[str] | None = None
) -> list[argparse.ArgumentParser]:
    """`parser` and the parsers of its subcommands: of the one `argv` names, if it names
    one."""
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            named = [action.choices[arg] for arg in argv or [] if arg in action.choices]
            for subparser in named[:1] or dict.fromkeys(action.choices.values()):
                parsers.extend(_parsers_of(subparser, argv))
    return parsers


def _flag_like(arg: str) -> bool:
    return arg.startswith("-") and arg != "-" and not arg.lstrip("-").replace(".", "").isdigit()


def _new_spelling(parser: argparse.ArgumentParser, dest: str) -> str | None:
    """The flag --help shows for `dest` (an old spelling's new one), if any."""
    for action in parser._actions:
        if action.dest == dest and action.option_strings and action.help is not argparse.SUPPRESS:
            return action.option_strings[0]
    return None


def _offered_flags(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, str]:
    """Each flag of `parser` and its subcommands (the one `argv` names, if it names one),
    and the flag a refusal offers for it: the flag itself, or for an old spelling (hidden
    from --help) its new one."""
    offered = {}
    for each in _parsers_of(parser, argv):
        for flag, action in each._option_string_actions.items():
            if action.help is not argparse.SUPPRESS:
                offered[flag] = flag
            elif (new := _new_spelling(each, action.dest)) is not None:
                offered[flag] = new
    return offered


def refuse_unknown_first(
    parser: argparse.ArgumentParser, argv: list[str], intermixed: bool = False
) -> None:
    """An argument `parser` does not know refused before a required flag it lacks: argparse
    checks the required ones first, so `--outptu DIR` was refused as `the following
    arguments are required: --output`. The refusal names the flag it may misspell, with
    the word after it where that flag takes one (argparse had taken `DIR` for a positional).
    `intermixed`: positionals after the flags too, as `parse_intermixed_args` reads them."""
    extras = _unknown_arguments(parser, argv, intermixed)
    # a relaxed parse that exits may have taken a misspelt flag's value for a positional
    # it refuses (`--model-pth M OUT`: OUT a bad key=value): the unknown flags found alone
    unknown = extras if extras is not None else _unknown_flags(parser, argv)
    if not unknown:
        return
    meant = flags_meant(parser, unknown, argv)
    valued = {flag for flag, known in meant.items() if _takes_value(parser, known)}
    paired, left = _with_their_values(argv, valued, _subcommands(parser))
    if paired:  # named first, whatever else the line gets wrong (said once they are mended)
        extras = paired + (_unknown_arguments(parser, left, intermixed) or [])
    if extras is None:  # no unknown flag to name: argparse's own words say why
        return
    parser.error(f"unrecognized arguments: {' '.join(extras)}{meant_said(parser, meant, argv)}")


def _unknown_flags(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """The words of `argv` that look like flags and are none of `parser`'s (nor, where it
    takes them, an abbreviation of one), up to a `--`."""
    known = [flag for each in _parsers_of(parser, argv) for flag in each._option_string_actions]
    unknown = []
    for arg in argv[: argv.index("--")] if "--" in argv else argv:
        name = arg.split("=", 1)[0]
        abbreviates = parser.allow_abbrev and any(flag.startswith(name) for flag in known)
        if _flag_like(arg) and name not in known and not abbreviates:
            unknown.append(arg)
    return unknown


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    return {
        name
        for each in _parsers_of(parser)
        for action in each._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    }


def flags_meant(
    parser: argparse.ArgumentParser, unknown: list[str], argv: list[str]
) -> dict[str, str]:
    """Each flag of `unknown` close to one of `parser`'s (of the subcommand `argv` names),
    and that flag."""
    offered = _offered_flags(parser, argv)
    meant = {}
    for flag in (arg.split("=", 1)[0] for arg in unknown if _flag_like(arg)):
        others = [known for known in offered if known != flag]  # another subcommand's
        if close := difflib.get_close_matches(flag, others, n=1, cutoff=0.7):
            meant[flag] = close[0]
    return meant


def meant_said(parser: argparse.ArgumentParser, meant: dict[str, str], argv: list[str]) -> str:
    """` (--outptu: did you mean --output?)` for each of `meant` (an old spelling's new
    flag offered)."""
    offered = _offered_flags(parser, argv)
    return "".join(f" ({flag}: did you mean {offered[known]}?)" for flag, known in meant.items())


def _unknown_arguments(
    parser: argparse.ArgumentParser, argv: list[str], intermixed: bool
) -> list[str] | None:
    """The arguments `parser` leaves unread in `argv`, its required flags and groups taken
    as optional; None if it exits (--help, or another refusal the whole parse says)."""
    parsers = _parsers_of(parser)
    items: list[argparse.Action | argparse._MutuallyExclusiveGroup] = [
        action
        for each in parsers
        for action in each._actions
        if not isinstance(action, argparse._SubParsersAction)  # a subcommand is needed
    ]
    items += [group for each in parsers for group in each._mutually_exclusive_groups]
    relaxed = [item for item in items if item.required]
    try:
        for item in relaxed:
            item.required = False
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            parse = parser.parse_known_intermixed_args if intermixed else parser.parse_known_args
            return parse(argv)[1]
    except SystemExit:
        return None
    finally:
        for item in relaxed:
            item.required = True


def _takes_value(parser: argparse.ArgumentParser, flag: str) -> bool:
    return any(
        each._option_string_actions[flag].nargs != 0
        for each in _parsers_of(parser)
        if flag in each._option_string_actions
    )


def _with_their_values(
    argv: list[str], flags: set[str], subcommands: set[str]
) -> tuple[list[str], list[str]]:
    """Each of `flags` in `argv` with the word after it (unless that is a flag or one of
    the `subcommands`), and the rest of `argv`."""
    paired: list[str] = []
    left: list[str] = []
    words = iter(enumerate(argv))
    for index, arg in words:
        following = argv[index + 1] if index + 1 < len(argv) else ""
        takes = bool(following) and not _flag_like(following) and following not in subcommands
        if arg in flags and takes:
            paired += [arg, following]
            next(words)
        elif arg in flags:
            paired.append(arg)
        else:
            left.append(arg)
    return paired, left


def values_apart(argv: list[str]) -> list[str]:
    """`argv` with each `--flag=value` given as `--flag value` (SimulEval looks for a flag
    by its whole word, `--device`, and takes `--device=cuda:1` for not given). A value that
    argparse would take for a flag apart (`--output=-run`; not `-1`) stays attached."""
    apart: list[str] = []
    for arg in argv:
        flag, equals, value = arg.partition("=")
        split = arg.startswith("--") and equals and not _flag_like(value)
        apart += [flag, value] if split else [arg]
    return apart


def repeated_flag(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """What is wrong if `argv` gives a flag of `parser` (or of its subcommands) that takes
    one value twice, in one spelling or in two (`--config a --config b`, `--latency high
    --latency-level low`, `--out a --output b` where argparse takes abbreviations); None if
    it gives none twice."""
    parsers = _parsers_of(parser)
    spellings: dict[str, list[str]] = {}
    for action in (action for each in parsers for action in each._actions):
        repeatable = isinstance(action, (argparse._AppendAction, argparse._ExtendAction))
        if action.option_strings and action.nargs != 0 and not repeatable:
            spellings.setdefault(action.dest, []).extend(action.option_strings)
    known = [flag for each in parsers for flag in each._option_string_actions]
    typed = [arg.split("=", 1)[0] for arg in argv]
    meant = [_whole_flag(name, known) if parser.allow_abbrev else name for name in typed]
    for flags in spellings.values():
        given = [name for name, flag in zip(typed, meant) if flag in flags]
        if len(set(given)) > 1:
            return f"{' and '.join(dict.fromkeys(given))}: spellings of one flag; give one"
        if len(given) > 1:
            return f"{given[0]} given {len(given)} times; give it once"
    return None


def refuse_repeated(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """ValueError (east-simuleval's one-line refusal) if `argv` gives a flag of `parser`
    twice, as `repeated_flag` finds it."""
    if (repeated := repeated_flag(parser, argv)) is not None:
        raise ValueError(repeated)


def _whole_flag(name: str, known: list[str]) -> str:
    """The flag of `known` that `name` abbreviates, as argparse reads it (`--out` for
    `--output`, the one flag it begins); else `name`."""
    if name in known or not name.startswith("--"):
        return name
    whole = [flag for flag in known if flag.startswith(name)]
    return whole[0] if len(whole) == 1 else name


def parse_once_each(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """`parser.parse_args(argv)`, an argument it does not know refused first (by
    `refuse_unknown_first`), and a flag given twice (`repeated_flag`) refused as argparse
    refuses (before: the last one won, without a word)."""
    argv = sys.argv[1:] if argv is None else argv
    refuse_unknown_first(parser, argv)
    args = parser.parse_args(argv)
    if (repeated := repeated_flag(parser, argv)) is not None:
        parser.error(repeated)
    return args


class ArgumentsRefused(ValueError):
    """argparse refused a command line: its reason, without the usage."""


def parse_quietly(
    parser: argparse.ArgumentParser, arguments: list[str], known_only: bool = False
) -> argparse.Namespace:
    """`arguments` parsed with argparse's usage and error kept off stderr: a refusal
    raises ArgumentsRefused with argparse's reason (`argument --latency: invalid choice:
    ...`), for the caller to say where the arguments came from (a file, a setting)."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            if known_only:
                return parser.parse_known_args(arguments)[0]
            return parser.parse_args(arguments)
    except SystemExit:
        lines = said.getvalue().strip().splitlines() or ["error: refused"]
        raise ArgumentsRefused(lines[-1].partition("error: ")[2]) from None


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


# Accelerators torch itself has a module for (`torch.cuda`, ...), listed in a refusal when
# this machine has them.
_ACCELERATORS = ("cuda", "xpu", "mps", "mtia")


def _device_count(torch, kind: str) -> int:
    """How many `kind` devices this machine has, by torch's own checks (0 where torch has
    none for `kind`: a type it parses but has no module for, such as `hpu` or `xla`
    without their extensions)."""
    try:
        if kind == "mps":  # one at most; torch.mps.device_count is newer than torch 2.4
            return int(torch.backends.mps.is_available())
        module = getattr(torch, kind, None)
        if module is not None and callable(getattr(module, "is_available", None)):
            if not module.is_available():
                return 0
            count = getattr(module, "device_count", None)
            return count() if callable(count) else 1
        accelerator = getattr(torch, "accelerator", None)  # torch 2.6 and later
        if accelerator is not None:
            current = accelerator.current_accelerator()
            if current is not None and current.type == kind and accelerator.is_available():
                return accelerator.device_count()
    except Exception:  # a backend that cannot tell has nothing to decode on
        return 0
    return 0


def _devices_here(torch) -> str:
    """The devices this machine has, as `--device` takes them (`cpu`, `cpu, cuda:0 and
    cuda:1`, `cpu and cuda:0 to cuda:7`)."""
    names = ["cpu"]
    for kind in _ACCELERATORS:
        count = _device_count(torch, kind)
        if count > 3:
            names.append(f"{kind}:0 to {kind}:{count - 1}")
        else:
            names.extend(f"{kind}:{index}" for index in range(count))
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def checked_device(name: str, where: str, needed_here: bool = True) -> torch.device:
    """The torch device `name` says; a ValueError naming `where` if torch knows none, if it
    cannot hold a model (`meta`), or, with `needed_here`, if it is a device this machine
    lacks (`cuda` without a GPU, `cuda:2` with two, `mps`, `xpu`), naming those it has.
    Imports torch."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"{where}: {name!r} is not a device: {error}") from None
    if device.type == "meta":
        raise ValueError(
            f"{where}: {name!r}: a meta device holds no weights, so nothing decodes on it"
        )
    if not needed_here or device.type == "cpu":
        return device
    count = _device_count(torch, device.type)
    if count == 0:
        kind = device.type.upper()
        raise ValueError(
            f"{where}: {name!r}: this machine has no {kind} device (it has {_devices_here(torch)})"
        )
    if device.index is not None and device.index >= count:
        raise ValueError(
            f"{where}: {name!r}: this machine has no {device}, only {_devices_here(torch)}"
        )
    return device


def torch_dtype_of(args: argparse.Namespace) -> str:
    """The dtype the weights load in: `--torch-dtype`, or float16 where SimulEval's --fp16
    or --dtype fp16 asks for half precision beside `auto` (before: loaded in the
    checkpoint's dtype, cast by `.half()` after, buffers too, and recorded as float32)."""
    half = getattr(args, "fp16", False) or getattr(args, "dtype", None) == "fp16"
    return "float16" if half and args.torch_dtype == "auto" else args.torch_dtype
