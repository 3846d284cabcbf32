"""COMET in a Python environment of its own.

unbabel-comet (2.2.7, the newest) requires transformers < 5 and numpy < 2, and this package
transformers >= 5.17: pip refuses to put them in one environment. COMET therefore runs as a
child process of the interpreter of an environment that has it (`--comet-python`; by
default this interpreter, for the rare environment where both import). The child runs
`comet_child.py` beside this file (COMET and the standard library only), reads its request
on standard input and prints its answer; nothing goes to disk, and it dies with this
process. `check_comet` refuses, before anything is decoded, a missing checkpoint or
`hparams.yaml`, an interpreter that cannot run or has no COMET, and a COMET that does not
import or cannot load the checkpoint's encoder (its tokenizer and configuration): the
last takes a child's imports, about 7 s, once per process.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from east_agent.common.child_process import run_captured
from east_agent.common.entry import CommandError
from east_agent.common.fingerprint import files_fingerprint

CHILD = Path(__file__).with_name("comet_child.py")
ANSWER = "east-comet-answer: "  # comet_child.ANSWER: the line of the answer
CHECK_NO_ENCODER = 4  # comet_child's exit status: COMET imports, the encoder does not load
SETUP = (
    "python3 -m venv comet-env && comet-env/bin/pip install unbabel-comet 'setuptools<81', "
    "then --comet-python comet-env/bin/python"
)
FINDS_COMET = "import importlib.util, sys; sys.exit(importlib.util.find_spec('comet') is None)"


class CometError(CommandError):
    """COMET cannot be run as asked, or its run failed; `setting` is the one to change
    (`checkpoint`, `python`), when it is one."""

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


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


def check_named_by_flag(settings: CometSettings) -> None:
    """`check_comet`, a refusal named by the flag to change (`--comet-python: ...`)."""
    try:
        check_comet(settings)
    except CometError as error:
        flag = f"--comet-{error.setting}: " if error.setting else ""
        raise CometError(flag + str(error), error.setting) from None


def comet_settings(args) -> CometSettings | None:
    """The settings `add_comet_flags`' flags give; None without a checkpoint."""
    if not args.comet_checkpoint:
        return None
    return CometSettings(
        args.comet_checkpoint, args.comet_python, args.comet_batch_size, args.comet_gpus
    )


def checkpoint_identity(checkpoint: str | Path) -> dict | str:
    """A checkpoint as records name it: by its content (`model.ckpt`, sampled, and
    `hparams.yaml`), so that a checkpoint moved is the same one and one replaced at the
    same path is not; a path that is not there by the path."""
    path = Path(checkpoint)
    if not path.is_file() or not hparams_of(path).is_file():
        return str(checkpoint)
    return {
        "file": str(path.absolute()),
        "sha256": files_fingerprint([path, hparams_of(path)], path),
    }


def hparams_of(checkpoint: str | Path) -> Path:
    """COMET's `hparams.yaml` of a checkpoint (`<model>/checkpoints/model.ckpt`), found as
    COMET finds it: links not followed (in the Hugging Face cache the checkpoint is a link
    into `blobs/`)."""
    return Path(checkpoint).absolute().parents[1] / "hparams.yaml"


def check_comet(settings: CometSettings) -> None:
    """COMET can score with these settings, as far as can be known without scoring."""
    checkpoint = Path(settings.checkpoint)
    if not checkpoint.is_file():
        raise CometError(f"COMET checkpoint {checkpoint} does not exist", "checkpoint")
    if not hparams_of(checkpoint).is_file():
        raise CometError(
            f"COMET checkpoint {checkpoint}: no {hparams_of(checkpoint)}, which COMET reads "
            "(a checkpoint lies in <model>/checkpoints/)",
            "checkpoint",
        )
    try:
        found = subprocess.run([settings.python, "-c", FINDS_COMET], capture_output=True)
    except OSError as error:
        raise CometError(f"{settings.python} cannot run: {error}", "python") from None
    if found.returncode != 0:
        raise CometError(
            f"{settings.python} has no unbabel-comet; COMET needs an environment of its own "
            f"(it requires transformers < 5): {SETUP}",
            "python",
        )
    _check_in_child(settings.python, str(checkpoint.absolute()), checkpoint.stat().st_mtime_ns)


@functools.cache
def _check_in_child(python: str, checkpoint: str, mtime_ns: int) -> None:
    finished = run_captured([python, str(CHILD), "check", checkpoint])
    if finished.returncode == CHECK_NO_ENCODER:
        raise CometError(
            f"COMET checkpoint {checkpoint}: its encoder (the tokenizer and configuration "
            f"hparams.yaml names) does not load:\n{_tail(finished.stderr)}",
            "checkpoint",
        )
    if finished.returncode != 0:
        raise CometError(
            f"COMET in {python} does not import (exit status {finished.returncode}):\n"
            f"{_tail(finished.stderr)}",
            "python",
        )


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


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
    request = {
        "checkpoint": str(Path(settings.checkpoint).absolute()),
        "batch_size": settings.batch_size,
        "gpus": settings.gpus,
        "samples": [{"src": src, "mt": mt, "ref": ref} for src, mt, ref in triples],
    }
    finished = run_captured([settings.python, str(CHILD), "score"], json.dumps(request))
    answers = [line for line in finished.stdout.splitlines() if line.startswith(ANSWER)]
    if finished.returncode != 0 or not answers:
        raise CometError(
            f"COMET ({settings.python}, {settings.checkpoint}) failed with exit status "
            f"{finished.returncode}:\n{_tail(finished.stderr)}"
        )
    answer = json.loads(answers[-1][len(ANSWER) :])
    if len(answer["scores"]) != len(request["samples"]):
        raise CometError(
            f"COMET gave {len(answer['scores'])} scores for {len(request['samples'])} samples"
        )
    return CometScores(answer["scores"], answer["system_score"])
