"""README.md's command lines take only flags their commands accept.

Every command line in a ```bash block of README.md that runs one of this package's console
scripts (setup.cfg), the stock `simuleval`, or `python -m` / `torchrun -m` on a module of
`training` or `east_agent` is read as the shell would split it (backslash continuations
joined, `#` comments dropped, `|`, `&&`, `;` separating commands; `[--flag x]` is taken as
an optional `--flag`). Each `--flag` must be one its command's parser accepts, matched
whole. Nothing is run but `--help`, once per distinct command, through the command's own
entry (its console script, or `python -m`), and the option strings are read off the help's
usage and option lines. `east-simuleval --agent FILE --help` lists SimulEval's flags, the
agent's, the command's own and those of the scorers its `--quality-metrics` and
`--latency-metrics` name; the stock `simuleval` cannot print its help without an agent,
so its flags are SimulEval's part of that help (without `east-simuleval`'s own). The helps
of SimulEval's commands run in an interpreter each, all the others together in one more
(one torch import), those interpreters at once: about 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from commands import REPO, console_script, console_script_entries

README = REPO / "README.md"
STOCK_SIMULEVAL = "simuleval"
MODULE_PACKAGES = ("training.", "east_agent.")
AGENT_FLAGS = ("--agent", "--agent-class")
METRIC_FLAGS = ("--quality-metrics", "--latency-metrics")
FENCE = re.compile(r"^\s*```\s*(\S*)")
OPTION_LINE = re.compile(r"^  (-{1,2}[A-Za-z0-9].*)")
OPTION = re.compile(r"(?:^|,\s)(-{1,2}[A-Za-z0-9][\w-]*)")
USAGE_OPTION = re.compile(r"(?<=[\[(|\s])(-{1,2}[A-Za-z0-9][\w-]*)")


@dataclass(frozen=True)
class Command:
    """One command line: where it starts, which help lists its flags, the flags it uses."""

    line: int
    text: str
    help_key: tuple[str, ...]
    flags: tuple[str, ...]


def bash_lines(markdown: str) -> list[tuple[int, str]]:
    """(first line number, logical line) of each ```bash block line, continuations joined."""
    lines, in_bash, pending, start = [], False, "", 0
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = FENCE.match(line)
        if fence:
            in_bash = not in_bash and fence.group(1) in ("bash", "sh", "shell")
        elif in_bash:
            start = start if pending else number
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            lines.append((start, pending + line))
            pending = ""
    return lines


def simple_commands(line: str) -> list[list[str]]:
    """The words of each command on a shell line: comments dropped, split at | && ; and the
    like, redirections (`> FILE`) left out."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, words, tokens = [], [], list(lexer)
    while tokens:
        token = tokens.pop(0)
        if token and set(token) <= set("<>&") and set(token) & set("<>"):
            tokens = tokens[1:]  # a redirection and its target
        elif token and set(token) <= set("|&;()"):
            commands.append(words)
            words = []
        else:
            words.append(token)
    return [words for words in [*commands, words] if words]


def module_arguments(words: list[str]) -> tuple[str, list[str]] | None:
    """`python -m MODULE ARGS` / `torchrun ... -m MODULE ARGS` on a module of this project."""
    if Path(words[0]).name not in ("python", "python3", "torchrun") or "-m" not in words[:-1]:
        return None
    at = words.index("-m")
    module = words[at + 1]
    return (module, words[at + 2 :]) if module.startswith(MODULE_PACKAGES) else None


def agent_arguments(arguments: list[str]) -> tuple[str, ...]:
    """The `--agent FILE` / `--agent-class CLASS` of a SimulEval command line, if any."""
    found: list[str] = []
    for index, word in enumerate(arguments):
        flag, equals, value = word.partition("=")
        if flag in AGENT_FLAGS:
            found += [flag, *([value] if equals else arguments[index + 1 : index + 2])]
    return tuple(found)


def metric_arguments(arguments: list[str]) -> tuple[str, ...]:
    """The `--quality-metrics` / `--latency-metrics` of a SimulEval command line: SimulEval's
    help lists the flags of the scorers they name (`--comet-checkpoint` with COMET)."""
    found: list[str] = []
    for index, word in enumerate(arguments):
        if word in METRIC_FLAGS:
            names = []
            for name in arguments[index + 1 :]:
                if name.startswith("-"):
                    break
                names.append(name)
            found += [word, *names]
    return tuple(found)


def help_key(words: list[str], scripts: frozenset[str]) -> tuple[tuple[str, ...], list[str]] | None:
    """How to ask for this command's flags and the arguments it was given (None: not ours)."""
    module = module_arguments(words)
    if module:
        return ("-m", module[0]), module[1]
    program, arguments = words[0], words[1:]
    if program == "east-simuleval" or program == STOCK_SIMULEVAL:
        return (program, *agent_arguments(arguments), *metric_arguments(arguments)), arguments
    return ((program,), arguments) if program in scripts else None


def used_flags(arguments: list[str]) -> tuple[str, ...]:
    """The long flags among the arguments (`[--flag` and `--flag=value` included)."""
    words = (word.lstrip("[").partition("=")[0].rstrip("]") for word in arguments)
    return tuple(word for word in words if re.fullmatch(r"--[A-Za-z0-9][\w-]*", word))


def readme_commands(markdown: str, scripts: frozenset[str]) -> list[Command]:
    """Every command of this project in the markdown's bash blocks."""
    found = []
    for number, line in bash_lines(markdown):
        for words in simple_commands(line):
            key = help_key(words, scripts)
            if key:
                text = shlex.join(words)
                found.append(Command(number, text, key[0], used_flags(key[1])))
    return found


def help_flags(text: str) -> frozenset[str]:
    """The option strings in a help text: its usage lines and its option lines."""
    flags: set[str] = set()
    in_usage = False
    for line in text.splitlines():
        wrapped = in_usage and line[:1].isspace() and line.strip() != ""
        in_usage = line.startswith("usage:") or wrapped
        if in_usage:
            flags.update(USAGE_OPTION.findall(line))
        elif OPTION_LINE.match(line):
            head = re.split(r"\s{2,}", line.strip())[0]
            flags.update(OPTION.findall(head))
    return frozenset(flags)


# Runs each command of a JSON list as `python -m` or its console script would, with
# `--help` added, in this one interpreter; prints what each wrote (a crash: its traceback).
HELP_RUNNER = """
import contextlib, io, json, runpy, sys, traceback
texts = []
for kind, target, *arguments in json.loads(sys.argv[1]):
    sys.argv, out = [target, *arguments, "--help"], io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            if kind == "-m":
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(target, run_name="__main__")
        except SystemExit:
            pass
        except Exception:
            traceback.print_exc()
    texts.append(out.getvalue())
print(json.dumps(texts))
"""


def help_invocation(key: tuple[str, ...]) -> list[str]:
    """What HELP_RUNNER runs for commands with this key: ["-m", module] or a script."""
    if key[0] == "-m":
        return list(key)
    program = "east-simuleval" if key[0] == STOCK_SIMULEVAL else key[0]
    return ["script", console_script(program), *key[1:]]


def help_texts(keys: list[tuple[str, ...]]) -> list[str]:
    """The helps of these keys, asked for in one new interpreter."""
    invocations = json.dumps([help_invocation(key) for key in keys])
    result = subprocess.run(
        [sys.executable, "-c", HELP_RUNNER, invocations],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def help_groups(keys: set[tuple[str, ...]]) -> list[list[tuple[str, ...]]]:
    """The keys by interpreter: SimulEval's commands (which import an agent file and patch
    argparse) one each, every other command together in one."""
    simuleval = sorted(key for key in keys if key[0] in ("east-simuleval", STOCK_SIMULEVAL))
    rest = sorted(keys - set(simuleval))
    return [[key] for key in simuleval] + ([rest] if rest else [])


def simuleval_part(key: tuple[str, ...], text: str) -> str:
    """The stock `simuleval`'s flags are SimulEval's: `east-simuleval`'s own go."""
    return text[text.find("usage:") :] if key[0] == STOCK_SIMULEVAL else text


def all_help_texts(keys: set[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """Each key's help, the interpreters run at once."""
    groups = help_groups(keys)
    with ThreadPoolExecutor(max_workers=len(groups) or 1) as pool:
        texts = list(pool.map(help_texts, groups))
    pairs = zip(sum(groups, []), sum(texts, []))
    return {key: simuleval_part(key, text) for key, text in pairs}


def mismatches(commands: list[Command], accepted: dict) -> list[str]:
    """One line per flag a command uses but its parser does not accept."""
    return [
        f"README.md:{command.line}: {command.text}\n    {flag} is not a flag of "
        f"{' '.join(command.help_key)}"
        for command in commands
        for flag in command.flags
        if flag not in accepted[command.help_key]
    ]


SCRIPTS = frozenset(console_script_entries())
COMMANDS = readme_commands(README.read_text(encoding="utf-8"), SCRIPTS)


@pytest.fixture(scope="module")
def readme_helps() -> dict[tuple[str, ...], str]:
    return all_help_texts({command.help_key for command in COMMANDS})


@pytest.fixture(scope="module")
def readme_accepted(readme_helps) -> dict[tuple[str, ...], frozenset[str]]:
    return {key: help_flags(text) for key, text in readme_helps.items()}


def test_readme_has_commands_of_every_kind():
    programs = {command.help_key[0] for command in COMMANDS}
    assert {"east-simuleval", STOCK_SIMULEVAL, "-m"} <= programs
    assert len(programs & SCRIPTS) >= 5, programs
    assert sum(len(command.flags) for command in COMMANDS) > 40


def test_every_help_lists_flags(readme_helps, readme_accepted):
    for key, flags in readme_accepted.items():
        assert flags - {"-h", "--help"}, f"no flags in the help of {key}:\n{readme_helps[key]}"


def test_readme_commands_take_only_accepted_flags(readme_accepted):
    wrong = mismatches(COMMANDS, readme_accepted)
    assert not wrong, "README.md uses flags its commands refuse:\n" + "\n".join(wrong)


SNIPPET = """\
Text with `east-demo --not-in-a-block`.
```bash
east-demo --all-levels   # --ignored-comment
east-eval cfg.yaml --model-path m \\
    --bogus-flag 3 --only=a b && python -m training.merge_lora --base b \\
    [--weights 1 1] | tee log 2> err.txt
python -m pytest --tb=short; torchrun --nproc_per_node 8 -m training.sft --config c
simuleval --agent-class x.Y --source s ; make --fake
```
```python
east-demo --in-python
```
"""


def test_line_parser_on_a_made_up_snippet():
    found = readme_commands(SNIPPET, SCRIPTS)
    assert [(c.line, c.help_key, c.flags) for c in found] == [
        (3, ("east-demo",), ("--all-levels",)),
        (4, ("east-eval",), ("--model-path", "--bogus-flag", "--only")),
        (4, ("-m", "training.merge_lora"), ("--base", "--weights")),
        (7, ("-m", "training.sft"), ("--config",)),
        (8, (STOCK_SIMULEVAL, "--agent-class", "x.Y"), ("--agent-class", "--source")),
    ]


def test_a_bogus_flag_is_reported_with_its_line():
    found = readme_commands(SNIPPET, SCRIPTS)
    accepted = {c.help_key: frozenset(c.flags) - {"--bogus-flag"} for c in found}
    wrong = mismatches(found, accepted)
    assert len(wrong) == 1 and wrong[0].startswith("README.md:4: east-eval cfg.yaml")
    assert "--bogus-flag is not a flag of east-eval" in wrong[0]


def test_help_parser_reads_every_option_string_of_an_argparse_help():
    parser = argparse.ArgumentParser(prog="tool", description="a tool\n  --not-a-flag here")
    parser.add_argument("config")
    parser.add_argument("--latency", "--latency-level", choices=["low", "low-medium"])
    parser.add_argument("--a-very-long-option-name", nargs="+", help="see --not-this-one")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("-x", "--exclusive-one", action="store_true")
    group.add_argument("--exclusive-two", metavar="N")
    options = [action.option_strings for action in parser._actions if action.option_strings]
    assert help_flags(parser.format_help()) == {s for strings in options for s in strings}
    # A parser without --help prints only its usage: each option's first string.
    assert help_flags(parser.format_usage()) == {strings[0] for strings in options}
