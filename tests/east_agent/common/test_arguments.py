"""The shared argument helpers."""

import argparse

import pytest
import torch

from east_agent.common.arguments import (
    ArgumentsRefused,
    add_old_spelling,
    checked_device,
    given_flags,
    parse_once_each,
    parse_quietly,
    positive_int,
    positive_seconds,
    values_apart,
)


def test_given_flags_reads_either_spelling_and_no_longer_flag():
    argv = ["--source-type", "text", "--output=out", "--source", "a", "--comet-gpus", "1"]
    assert given_flags(argv, ("--source", "--output", "--target")) == ["--output", "--source"]
    assert given_flags(argv, ("--target",), prefix="--comet-") == ["--comet-gpus"]
    assert given_flags(["--output", "a", "--output", "b"], ("--output",)) == ["--output"]


def test_positive_int_refuses_zero_and_words():
    assert positive_int("3") == 3
    for text in ("0", "-1", "two"):
        with pytest.raises(argparse.ArgumentTypeError, match="at least 1"):
            positive_int(text)


def test_positive_seconds_refuses_zero_infinity_and_words():
    assert positive_seconds("0.4") == 0.4 and positive_seconds("1e-3") == 0.001
    for text in ("0", "-1", "inf", "nan", "soon"):
        with pytest.raises(argparse.ArgumentTypeError, match="seconds above 0"):
            positive_seconds(text)


def test_checked_device_takes_the_cpu_and_refuses_what_torch_does_not_know():
    assert checked_device("cpu", "--device") == torch.device("cpu")
    assert checked_device("cpu:0", "--device") == torch.device("cpu:0")
    for name in ("gpu", "CPU", "cuda:-1", ""):
        with pytest.raises(ValueError, match=f"^--device: {name!r} is not a device: "):
            checked_device(name, "--device", needed_here=False)


@pytest.mark.parametrize("name", ["mps", "mps:0", "xpu", "xpu:0", "mtia", "hpu", "xla"])
def test_checked_device_refuses_an_accelerator_this_machine_lacks(name):
    """Before: only CUDA was checked, so `--device mps` loaded the model and failed in a
    traceback, after the run folder was made (exit 1)."""
    kind = name.split(":")[0]
    if kind == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    module = getattr(torch, kind, None)
    if kind != "mps" and module is not None and module.is_available():
        pytest.skip(f"this machine has a {kind} device")
    message = f"^--device: {name!r}: this machine has no {kind.upper()} device \\(it has cpu"
    with pytest.raises(ValueError, match=message):
        checked_device(name, "--device")
    # The evaluator's machine, not this one, runs a submission's device.
    assert checked_device(name, "device", needed_here=False) == torch.device(name)


@pytest.mark.parametrize("needed_here", [True, False])
def test_checked_device_refuses_meta_which_holds_no_weights(needed_here):
    """Before: `--device meta` was taken, and decoding failed in a NotImplementedError."""
    with pytest.raises(ValueError, match="^--device: 'meta': a meta device holds no weights"):
        checked_device("meta", "--device", needed_here)


def test_checked_device_takes_an_accelerator_torch_says_is_here(monkeypatch):
    monkeypatch.setattr("torch.xpu.is_available", lambda: True)
    monkeypatch.setattr("torch.xpu.device_count", lambda: 2)
    for other in ("torch.cuda.is_available", "torch.backends.mps.is_available"):
        monkeypatch.setattr(other, lambda: False)
    assert checked_device("xpu", "--device") == torch.device("xpu")
    assert checked_device("xpu:1", "--device") == torch.device("xpu:1")
    with pytest.raises(
        ValueError,
        match=r"^--device: 'xpu:2': this machine has no xpu:2, only cpu, xpu:0 and xpu:1",
    ):
        checked_device("xpu:2", "--device")
    with pytest.raises(ValueError, match=r"'cuda': this machine has no CUDA device \(it has cpu, "):
        checked_device("cuda", "--device")


def test_checked_device_names_a_cuda_device_out_of_range(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 8)
    assert checked_device("cuda:7", "--device") == torch.device("cuda:7")
    with pytest.raises(
        ValueError, match=r"^--device: 'cuda:8': this machine has no cuda:8, only cpu"
    ):
        checked_device("cuda:8", "--device")
    with pytest.raises(ValueError, match="only cpu and cuda:0 to cuda:7$"):
        checked_device("cuda:8", "--device")


def test_parse_quietly_gives_argparses_reason_alone(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", choices=["low", "high"])
    assert parse_quietly(parser, ["--latency", "low"]).latency == "low"
    assert parse_quietly(parser, ["--latency", "low", "--x"], known_only=True).latency == "low"
    with pytest.raises(ArgumentsRefused) as refused:
        parse_quietly(parser, ["--latency", "meduim"])
    assert str(refused.value).startswith("argument --latency: invalid choice: 'meduim'")
    with pytest.raises(ArgumentsRefused, match="unrecognized arguments: --x"):
        parse_quietly(parser, ["--x"])
    assert capsys.readouterr().err == ""  # no usage printed


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--config", "a", "--config=b"], "--config given 2 times; give it once"),
        (["--model-path", "A", "--base", "B"], "--model-path and --base: spellings of one flag"),
        # argparse's abbreviations: before, the last one won
        (["--conf", "a", "--config", "b"], "--conf and --config: spellings of one flag"),
        (["--model", "A", "--model", "B"], "--model given 2 times; give it once"),
    ],
)
def test_a_setting_given_twice_is_refused(capsys, argv, said):
    """Before: the last one won, without a word (another recipe trained, another base)."""
    parser = argparse.ArgumentParser(prog="cmd")
    parser.add_argument("--config")
    parser.add_argument("--model-path")
    parser.add_argument("--verbose", action="store_true")
    add_old_spelling(parser, "--base", "model_path")
    with pytest.raises(SystemExit) as ended:
        parse_once_each(parser, argv)
    assert ended.value.code == 2 and f"cmd: error: {said}" in capsys.readouterr().err
    args = parse_once_each(parser, ["--config", "a", "--base", "B", "--verbose", "--verbose"])
    assert (args.config, args.model_path, args.verbose) == ("a", "B", True)


def _required_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmd")
    parser.add_argument("name")
    parser.add_argument("--output", required=True)
    parser.add_argument("--count", type=positive_int, default=1)
    parser.add_argument("--quiet", action="store_true")
    add_old_spelling(parser, "--number", "count", type=positive_int)
    return parser


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["set", "--outptu", "o"],
            "unrecognized arguments: --outptu o (--outptu: did you mean --output?)",
        ),
        (
            ["set", "--outptu=o"],
            "unrecognized arguments: --outptu=o (--outptu: did you mean --output?)",
        ),
        (["set", "--output", "o", "stray"], "unrecognized arguments: stray"),
        (["set", "--zzz"], "unrecognized arguments: --zzz"),  # nothing close: no guess
        (
            ["set", "--output", "o", "--numbr", "2"],
            "unrecognized arguments: --numbr 2 (--numbr: did you mean --count?)",
        ),
        # before the name: argparse took `o` for it, and said `--outptu set`
        (
            ["--outptu", "o", "set"],
            "unrecognized arguments: --outptu o (--outptu: did you mean --output?)",
        ),
        (
            ["--outptu", "o", "set", "stray"],
            "unrecognized arguments: --outptu o stray (--outptu: did you mean --output?)",
        ),
        (  # a flag that takes no value keeps no word
            ["--quiett", "set", "--output", "o"],
            "unrecognized arguments: --quiett (--quiett: did you mean --quiet?)",
        ),
    ],
)
def test_an_unknown_argument_is_named_before_a_missing_required_flag(capsys, argv, said):
    """Before: `--outptu o` was refused as `the following arguments are required:
    --output`, the flag the user thought given. An old spelling's new one is offered."""
    parser = _required_parser()
    with pytest.raises(SystemExit) as ended:
        parse_once_each(parser, argv)
    assert ended.value.code == 2 and capsys.readouterr().err.endswith(f"cmd: error: {said}\n")
    assert parse_once_each(parser, ["set", "--output", "o", "--number", "2"]).count == 2


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["set"], "the following arguments are required: --output"),  # still required
        (["--output", "o"], "the following arguments are required: name"),
        (["set", "--count", "0", "--x"], "argument --count: takes a whole number of at least 1"),
    ],
)
def test_other_refusals_are_argparses_own(capsys, argv, said):
    with pytest.raises(SystemExit) as ended:
        parse_once_each(_required_parser(), argv)
    assert ended.value.code == 2 and f"cmd: error: {said}" in capsys.readouterr().err


def test_a_subcommands_flags_are_checked_too(capsys):
    parser = argparse.ArgumentParser(prog="cmd")
    commands = parser.add_subparsers(dest="command", required=True)
    long = commands.add_parser("long")
    long.add_argument("--log", required=True)
    with pytest.raises(SystemExit):
        parse_once_each(parser, ["long", "--lgo", "a"])
    assert "unrecognized arguments: --lgo a (--lgo: did you mean --log?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_once_each(parser, ["long", "--log", "a", "--log", "b"])
    assert "--log given 2 times; give it once" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_once_each(parser, ["long"])
    assert "the following arguments are required: --log" in capsys.readouterr().err
    assert parse_once_each(parser, ["long", "--log", "a"]).log == "a"
    short = commands.add_parser("short")
    short.add_argument("--output")
    with pytest.raises(SystemExit):  # the other subcommand's flag: not offered as itself
        parse_once_each(parser, ["long", "--log", "a", "--output", "o"])
    assert capsys.readouterr().err.endswith("error: unrecognized arguments: --output o\n")
    with pytest.raises(SystemExit):  # nor offered for a misspelling (before: it was)
        parse_once_each(parser, ["long", "--log", "a", "--outptu", "o"])
    assert capsys.readouterr().err.endswith("error: unrecognized arguments: --outptu o\n")
    with pytest.raises(SystemExit):
        parse_once_each(parser, ["short", "--outptu", "o"])
    said = "unrecognized arguments: --outptu o (--outptu: did you mean --output?)\n"
    assert capsys.readouterr().err.endswith(said)


def test_a_misspelt_flags_value_refused_as_a_positional_is_named_with_it(capsys):
    """`east-package-system --model-pth M OUT`: M taken for the folder and OUT refused as
    an agent flag (key=value), so the relaxed parse exited; before: "the following
    arguments are required: --model-path", the flag the user thought given."""

    def key_value(text):
        if "=" not in text:
            raise argparse.ArgumentTypeError(f"{text}: not key=value")
        return text

    parser = argparse.ArgumentParser(prog="cmd")
    parser.add_argument("output")
    parser.add_argument("--model-path", required=True)
    parser.add_argument("flags", nargs="*", type=key_value)
    with pytest.raises(SystemExit):
        parse_once_each(parser, ["--model-pth", "M", "OUT", "a=b"])
    said = "error: unrecognized arguments: --model-pth M (--model-pth: did you mean --model-path?)"
    assert capsys.readouterr().err.endswith(said + "\n")
    with pytest.raises(SystemExit):  # the misspelt flag first; the rest once it is mended
        parse_once_each(parser, ["--model-pth", "M", "OUT", "bad"])
    assert capsys.readouterr().err.endswith(said + "\n")
    with pytest.raises(SystemExit):
        parse_once_each(parser, ["--model-path", "M", "OUT", "bad"])
    assert "argument flags: bad: not key=value" in capsys.readouterr().err


def test_a_subcommand_is_not_taken_for_a_misspelt_flags_value(capsys):
    parser = argparse.ArgumentParser(prog="cmd")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("long").add_argument("--log")
    with pytest.raises(SystemExit):
        parse_once_each(parser, ["--lgo", "long", "--log", "a"])
    said = "error: unrecognized arguments: --lgo (--lgo: did you mean --log?)\n"
    assert capsys.readouterr().err.endswith(said)  # before: "--lgo long"


def test_help_is_printed_once_with_its_required_flags(capsys):
    """Before: twice, the first time with --output shown as optional."""
    with pytest.raises(SystemExit) as ended:
        parse_once_each(_required_parser(), ["--help"])
    said = capsys.readouterr().out
    assert ended.value.code == 0 and said.count("usage:") == 1 and " --output OUTPUT " in said


def test_values_apart_splits_a_flags_attached_value():
    argv = ["--device=cuda:1", "--user-dir", "a=b", "--x=", "-", "--", "name=value", "--o=-r",
            "--end-index=-1"]  # fmt: skip
    assert values_apart(argv) == [
        "--device", "cuda:1", "--user-dir", "a=b", "--x", "", "-", "--", "name=value", "--o=-r",
        "--end-index", "-1",
    ]  # fmt: skip
    parser = argparse.ArgumentParser()
    parser.add_argument("--o")
    assert parser.parse_args(values_apart(["--o=-r"])).o == "-r"  # before: "expected one argument"


def test_an_old_spelling_says_which_flag_refusals_name(capsys):
    """Before: `merge_lora --adapter X` was refused as `--adapter-path X: ...`, a flag the
    user never typed, without a word on the old spelling."""
    parser = _required_parser()
    assert parse_once_each(parser, ["set", "--output", "o", "--number", "2"]).count == 2
    assert capsys.readouterr().err == "cmd: --number is the old spelling of --count\n"
    assert parse_once_each(parser, ["set", "--output", "o"]).output == "o"
    assert capsys.readouterr().err == ""
