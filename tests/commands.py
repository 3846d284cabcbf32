"""What the command-line tests share: the agent files, the installed console scripts, and
toy SimulEval files (a source and its reference) from the tiny model's synthetic language."""

from __future__ import annotations

import os
import random
import subprocess
import sys
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


def east_eval(*arguments, timeout=900):
    """`east-eval` with these arguments, its output captured."""
    command = [console_script("east-eval"), *map(str, arguments)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


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
