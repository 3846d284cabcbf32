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


def run_simuleval(*arguments, command="east-simuleval", timeout=300, env=None):
    """`command` run from the repository (`env`: variables set on top of this process's)."""
    return subprocess.run(
        [console_script(command), *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=None if env is None else {**os.environ, **env},
    )


def agent_arguments(checkpoint, folder, output, *extra):
    return [
        "--agent", AGENT_FILE,
        "--model-path", checkpoint,
        "--src-lang", "de",
        "--tgt-lang", "en",
        "--source", folder / "src.txt",
        "--target", folder / "ref.txt",
        "--output", output,
        "--device", "cpu",
        *extra,
    ]  # fmt: skip


def write_toy_test_set(folder: Path, count: int, seed: int) -> list[list[str]]:
    """`src.txt` and `ref.txt` in `folder`: `count` synthetic sentences; their units."""
    rng = random.Random(seed)
    sentences = [synthetic_sentence(rng)[0] for _ in range(count)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "src.txt").write_text("".join(" ".join(s) + "\n" for s in sentences))
    references = [" ".join(LEXICON[word] for word in s) for s in sentences]
    (folder / "ref.txt").write_text("".join(r + "\n" for r in references))
    return sentences


def east_eval(*arguments, timeout=900, in_process=True):
    """`east-eval` with these arguments, its output captured. It runs in this process (the
    `main` its console script calls; about 5 s less start-up a call, and the model's code
    already imported) unless `in_process` is False: what a test of the process itself
    needs (its signals, its children's deaths, its worker processes). `timeout` is the
    child's."""
    arguments = [str(argument) for argument in arguments]
    if in_process:
        from east_agent.evaluation.cli import main

        return run_in_process(main, arguments)
    command = [console_script("east-eval"), *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def run_in_process(main, arguments: list[str]) -> subprocess.CompletedProcess:
    """`main(arguments)` as its console script would run it, in this process: its exit
    status (`SystemExit`; 1 and the traceback on stderr for any other exception), and what
    it and the children it started wrote to standard output and error, read from the
    file descriptors (a grid's SimulEval children write there), and its warnings printed as
    Python prints them (not pytest's to record: a test reads them in stderr)."""
    with _output_captured() as output, warnings.catch_warnings():
        warnings.simplefilter("default")  # as outside pytest: each once, printed
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # not __main__'s
        warnings.showwarning = _print_warning
        try:
            main(arguments)
            returncode = 0
        except SystemExit as error:
            returncode = _exit_status(error.code)
        except Exception:
            traceback.print_exc()
            returncode = 1
    return subprocess.CompletedProcess(arguments, returncode, output.stdout, output.stderr)


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


@contextmanager
def _output_captured():
    """File descriptors 1 and 2, and `sys.stdout` and `sys.stderr` writing to them, into
    files while the block runs; their texts in what it yields, after. The streams made are
    not closed: a logging handler made meanwhile keeps writing to the descriptor."""
    output = _Output()
    sys.stdout.flush()
    sys.stderr.flush()
    streams = sys.stdout, sys.stderr
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
    return file.read().decode("utf-8", errors="replace")


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
