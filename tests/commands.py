"""What the command-line tests share: the agent files, the installed console scripts, and
toy SimulEval files (a source and its reference) from the tiny model's synthetic language."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import traceback
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path

import yaml

from tiny_east import LEXICON, synthetic_sentence

REPO = Path(__file__).resolve().parents[1]
AGENT_FILE = REPO / "east_agent" / "agent.py"
WAITK_AGENT_FILE = REPO / "east_agent" / "waitk_agent.py"
DEMO_MODEL = REPO / "models" / "east-demo"


def console_script_entries() -> dict[str, str]:
    """setup.cfg's console scripts, each name with its entry point
    (`east-demo`: `east_agent.evaluation.demo:main`)."""
    import configparser

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    lines = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines)


def python_with_ctrl_c(script: str, *arguments, timeout: int = 300):
    """`python -c script arguments...`, its output captured, SIGINT as a terminal leaves it
    (not as a background pytest may: ignored)."""
    import signal

    return subprocess.run(
        [sys.executable, "-c", script, *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def console_script(name: str) -> str:
    script = Path(sys.executable).with_name(name)
    assert script.exists(), f"{name} is not installed next to {sys.executable}"
    return str(script)


def run_simuleval(*arguments, command="east-simuleval", timeout=300, env=None, in_process=None):
    """`command` run from the repository (`env`: variables set on top of this process's).
    `east-simuleval` runs in this process (`run_in_process`; about 5 s less a call) unless
    `in_process` is False or `env` is given (what the process reads as it starts); any
    other command in a process of its own. `timeout` is a process's: in this process a
    command runs as any test's code does, without one."""
    arguments = [str(argument) for argument in arguments]
    if in_process is None:
        in_process = command == "east-simuleval" and env is None
    if in_process:
        assert command == "east-simuleval" and env is None, "in this process: east-simuleval"
        return _east_simuleval_in_process(arguments)
    return subprocess.run(
        [console_script(command), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=None if env is None else {**os.environ, **env},
    )


def _east_simuleval_in_process(arguments: list[str]) -> subprocess.CompletedProcess:
    """`east-simuleval arguments` in this process, from the repository, as a new process
    starts it: SimulEval's `sys.argv`, its registry of agent classes empty, its logging."""
    from simuleval.utils.agent import EVALUATION_SYSTEM_LIST

    from east_agent.simuleval_glue.cli import main

    argv, folder, path = sys.argv, os.getcwd(), sys.path[:]
    sys.argv = [console_script("east-simuleval"), *arguments]
    os.chdir(REPO)  # and back: a --system-dir run goes into the folder
    EVALUATION_SYSTEM_LIST.clear()
    try:
        return run_in_process(lambda _: main(), arguments, simuleval_logging=True)
    finally:
        sys.argv = argv
        os.chdir(folder)
        sys.path[:] = path  # SimulEval adds a --system-dir's and a --user-dir's folder
        EVALUATION_SYSTEM_LIST.clear()


def agent_arguments(checkpoint, folder, output, *extra):
    """An EAST run's command line; a flag of `extra` given here too (`--agent`, `--device`)
    takes the place of this one (a flag given twice is refused)."""
    return with_flags(
        [
            "--agent", AGENT_FILE,
            "--model-path", checkpoint,
            "--src-lang", "de",
            "--tgt-lang", "en",
            "--source", folder / "src.txt",
            "--target", folder / "ref.txt",
            "--output", output,
            "--device", "cpu",
        ],
        *extra,
    )  # fmt: skip


def with_flags(arguments, *flags):
    """`arguments` with `flags` (`--flag value` pairs and bare switches) put in: a flag
    already there has its value replaced where it stands; others are added at the end."""
    arguments, flags = list(arguments), list(flags)
    added = []
    while flags:
        flag = flags.pop(0)
        takes_value = flags and not str(flags[0]).startswith("--")
        value = flags.pop(0) if takes_value else None
        if flag in arguments and takes_value:
            arguments[arguments.index(flag) + 1] = value
        elif flag not in arguments:
            added += [flag] if value is None else [flag, value]
    return arguments + added


def write_toy_test_set(folder: Path, count: int, seed: int) -> list[list[str]]:
    """`src.txt` and `ref.txt` in `folder`: `count` synthetic sentences; their units."""
    rng = random.Random(seed)
    sentences = [synthetic_sentence(rng)[0] for _ in range(count)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "src.txt").write_text("".join(" ".join(s) + "\n" for s in sentences))
    references = [" ".join(LEXICON[word] for word in s) for s in sentences]
    (folder / "ref.txt").write_text("".join(r + "\n" for r in references))
    return sentences


def east_eval(*arguments, timeout=900, in_process=None):
    """`east-eval` with these arguments, its output captured. It runs in this process (the
    `main` its console script calls; about 5 s less start-up a call, and the model's code
    already imported) unless `in_process` is False or the grid runs job workers (`--jobs`
    or the config's `jobs` above 1: multiprocessing's fork server, started once a process,
    keeps the output of the call that started it): what a test of the process itself
    needs (its signals, its children's deaths, its worker processes). `timeout` is a
    process's (see `run_simuleval`)."""
    arguments = [str(argument) for argument in arguments]
    if in_process is None:
        in_process = not _runs_job_workers(arguments)
    if in_process:
        from east_agent.evaluation.cli import main

        return run_in_process(main, arguments)
    command = [console_script("east-eval"), *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def _runs_job_workers(arguments: list[str]) -> bool:
    """Whether `east-eval arguments` would run job workers: `--jobs N` (or `--jobs=N`) above
    1, or no `--jobs` and a config (the first argument) whose `jobs` is above 1. A value
    east-eval refuses is left to it (in this process: it refuses before any worker)."""
    given = [arguments[i + 1] for i, arg in enumerate(arguments[:-1]) if arg == "--jobs"]
    given += [arg.split("=", 1)[1] for arg in arguments if arg.startswith("--jobs=")]
    if given:
        return given[-1].isdigit() and int(given[-1]) > 1
    try:
        tree = yaml.safe_load(Path(arguments[0]).read_text())
    except (IndexError, OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(tree, dict) and isinstance(tree.get("jobs"), int) and tree["jobs"] > 1


def run_in_process(
    main, arguments: list[str], simuleval_logging: bool = False
) -> subprocess.CompletedProcess:
    """`main(arguments)` as its console script would run it, in this process: its exit
    status (`SystemExit`; 1 and the traceback on stderr for any other exception), and what
    it and the children it started wrote to standard output and error, read from the
    file descriptors (a grid's SimulEval children write there). Warnings and log records
    go there as in a new process: warnings filtered as Python's defaults and the targeted
    `ignore`s in place (the package's own, the suite's), each printed once; logging with
    no handler but Python's last resort, or SimulEval's (`simuleval_logging`: set up as
    importing `simuleval.cli` sets it), and the handlers that write to stderr (transformers')
    writing there; no COMET child kept between commands. What only a new process shows
    stays unseen: its first imports, its exit (atexit, the resource tracker), what a
    library prints once a process; and a signal the command takes ends this process (the
    command ends itself by it): such tests start the command as a process."""
    with (
        _output_captured() as output,
        warnings.catch_warnings(),
        _fresh_logging(simuleval_logging, output.stderrs_before),
    ):
        _warnings_as_outside_pytest()
        _own_comet_child()
        try:
            main(arguments)
            returncode = 0
        except SystemExit as error:
            returncode = _exit_status(error.code)
        except Exception:
            traceback.print_exc()
            returncode = 1
        finally:
            _own_comet_child()
    return subprocess.CompletedProcess(arguments, returncode, output.stdout, output.stderr)


def _own_comet_child() -> None:
    """No COMET child, nor its checks, kept from an earlier command (or a test's own
    scoring): a command starts and checks its own, as a new process does."""
    from east_agent.common import comet_process

    comet_process._end_own_child()
    comet_process._child = None
    comet_process._check_in_child.cache_clear()


def _warnings_as_outside_pytest() -> None:
    targeted = [kept for kept in warnings.filters if kept[0] == "ignore" and kept[1]]
    warnings.resetwarnings()  # what no filter names: "default", printed once a place
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category, append=True)
    for _, message, category, module, lineno in targeted:
        module = module.pattern if module else ""
        warnings.filterwarnings("ignore", message.pattern, category, module, lineno)
    warnings.showwarning = _print_warning


@contextmanager
def _fresh_logging(simuleval_logging: bool, stderrs: list):
    """Within `_output_captured`: the root logger as a new process has it (no handlers,
    WARNING: the last resort prints to stderr), or as SimulEval's import sets it up; a
    stream handler made to write to stderr (before the capture) writes to the capture."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []
    root.setLevel(logging.WARNING)
    if simuleval_logging:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(SIMULEVAL_LOG_FORMAT, "%Y-%m-%d %H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    moved = []
    for logger in [root, *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", ()):
            if type(handler) is logging.StreamHandler and handler.stream in stderrs:
                moved.append((handler, handler.setStream(sys.stderr)))
    try:
        yield
    finally:
        for handler, stream in moved:
            handler.setStream(stream)
        root.handlers = handlers
        root.setLevel(level)


SIMULEVAL_LOG_FORMAT = "%(asctime)s | %(levelname)-8s | %(name)-16s | %(message)s"


def _exit_status(code) -> int:
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


class _Output:
    stdout = ""
    stderr = ""
    stderrs_before: list  # the streams that wrote to stderr before the capture


@contextmanager
def _output_captured():
    """File descriptors 1 and 2, and `sys.stdout` and `sys.stderr` writing to them, into
    files while the block runs; their texts in what it yields, after. The streams made are
    not closed: a logging handler made meanwhile keeps writing to the descriptor."""
    output = _Output()
    sys.stdout.flush()
    sys.stderr.flush()
    streams = sys.stdout, sys.stderr
    output.stderrs_before = [sys.stderr, sys.__stderr__]
    kept = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)
        try:
            yield output
        finally:
            for stream in (sys.stdout, sys.stderr):
                with suppress(OSError, ValueError):
                    stream.flush()
            sys.stdout, sys.stderr = streams
            for fd, saved in zip((1, 2), kept):
                os.dup2(saved, fd)
                os.close(saved)
            output.stdout = _read_text(out)
            output.stderr = _read_text(err)


def _read_text(file) -> str:
    file.seek(0)
    return file.read().decode()  # strictly, as `subprocess.run(text=True)` decodes


def write_grid_config(path: Path, checkpoint, output: Path, systems: dict) -> Path:
    """A Multi30k grid config on the tiny checkpoint, scored with and without computation."""
    config = {
        "testset": "multi30k.de-en",
        "model_path": str(checkpoint),
        "output": str(output),
        "device": "cpu",
        "torch_dtype": "float32",
        "latency_metrics": ["LAAL", "AL", "LAAL_CA", "AL_CA"],
        "systems": systems,
    }
    path.write_text(yaml.safe_dump(config))
    return path
