"""COMET in a Python environment of its own.

unbabel-comet (2.2.7, the newest) requires transformers < 5 and numpy < 2, and this package
transformers >= 5.17: pip refuses to put them in one environment. COMET therefore runs as a
child process of the interpreter of an environment that has it (`--comet-python`; by
default this interpreter, for the rare environment where both import). The child runs
`comet_child.py` beside this file (COMET and the standard library only) on a JSON request
and writes a JSON answer; it dies with this process. `check_comet` refuses a missing
checkpoint or an interpreter without COMET in well under a second, before anything is
decoded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from east_agent.common.child_process import run_captured
from east_agent.common.entry import CommandError

CHILD = Path(__file__).with_name("comet_child.py")
SETUP = (
    "python3 -m venv comet-env && comet-env/bin/pip install unbabel-comet 'setuptools<81', "
    "then --comet-python comet-env/bin/python"
)
FINDS_COMET = "import importlib.util, sys; sys.exit(importlib.util.find_spec('comet') is None)"


class CometError(CommandError):
    """COMET cannot be run as asked, or its run failed."""


@dataclass(frozen=True)
class CometSettings:
    checkpoint: str  # a local model.ckpt (nothing is downloaded)
    python: str = sys.executable  # the interpreter of an environment with unbabel-comet
    batch_size: int = 16
    gpus: int = 0


@dataclass(frozen=True)
class CometScores:
    sentences: list[float]  # one a sample, as COMET gives them (about 0 to 1)
    system: float


def add_comet_flags(parser) -> None:
    """COMET's flags, one spelling for every command that scores with it."""
    parser.add_argument("--comet-checkpoint", default=None, help="a local COMET model.ckpt")
    parser.add_argument(
        "--comet-python",
        default=sys.executable,
        help="the interpreter of an environment with unbabel-comet (default: this one)",
    )
    parser.add_argument("--comet-batch-size", type=int, default=16)
    parser.add_argument("--comet-gpus", type=int, default=0)


def comet_settings(args) -> CometSettings | None:
    """The settings `add_comet_flags`' flags give; None without a checkpoint."""
    if not args.comet_checkpoint:
        return None
    return CometSettings(
        args.comet_checkpoint, args.comet_python, args.comet_batch_size, args.comet_gpus
    )


def check_comet(settings: CometSettings) -> None:
    """The checkpoint is a file and the interpreter finds COMET (without importing it)."""
    if not Path(settings.checkpoint).is_file():
        raise CometError(f"COMET checkpoint {settings.checkpoint} does not exist")
    try:
        found = subprocess.run([settings.python, "-c", FINDS_COMET], capture_output=True)
    except OSError as error:
        raise CometError(f"COMET's interpreter {settings.python} cannot run: {error}") from None
    if found.returncode != 0:
        raise CometError(
            f"{settings.python} has no unbabel-comet; COMET needs an environment of its own "
            f"(it requires transformers < 5): {SETUP}"
        )


def comet_scores(
    settings: CometSettings,
    sources: Sequence[str],
    translations: Sequence[str],
    references: Sequence[str],
) -> CometScores:
    """COMET's scores of the (source, translation, reference) triples, in their order."""
    if not len(sources) == len(translations) == len(references):
        raise ValueError(
            f"COMET needs as many sources ({len(sources)}), translations ({len(translations)}) "
            f"and references ({len(references)})"
        )
    triples = zip(sources, translations, references)
    samples = [{"src": src, "mt": mt, "ref": ref} for src, mt, ref in triples]
    request = {
        "checkpoint": str(Path(settings.checkpoint).resolve()),
        "batch_size": settings.batch_size,
        "gpus": settings.gpus,
        "samples": samples,
    }
    with tempfile.TemporaryDirectory(prefix="east-comet-") as folder:
        request_path, answer_path = Path(folder) / "request.json", Path(folder) / "answer.json"
        request_path.write_text(json.dumps(request), encoding="utf-8")
        command = [settings.python, str(CHILD), str(request_path), str(answer_path)]
        finished = run_captured(command)
        if finished.returncode != 0 or not answer_path.exists():
            tail = "\n".join(finished.stderr.strip().splitlines()[-15:])
            raise CometError(
                f"COMET ({settings.python}, {settings.checkpoint}) failed with exit status "
                f"{finished.returncode}:\n{tail}"
            )
        answer = json.loads(answer_path.read_text(encoding="utf-8"))
    if len(answer["scores"]) != len(samples):
        raise CometError(f"COMET gave {len(answer['scores'])} scores for {len(samples)} samples")
    return CometScores(answer["scores"], answer["system_score"])
