"""COMET in a Python environment of its own.

unbabel-comet (2.2.7, the newest) requires transformers < 5 and numpy < 2, and this package
transformers >= 5.17: pip refuses to put them in one environment. COMET therefore runs as a
child process of the interpreter of an environment that has it (`--comet-python`; by
default this interpreter, for the rare environment where both import). The child runs
`comet_child.py` beside this file (COMET and the standard library only): it reads a request
a line on a pipe of its own and answers each on another (its standard input is empty, so
nothing COMET imports can take a request or wait for one there, and what it prints is kept
apart from the answers); nothing goes to disk. One such child serves a process, started at
its first request and kept until the process ends, so that a grid's runs scored one after
the other in one process import COMET and load a checkpoint once, not once a run. The model
stays in the child's memory meanwhile (about 2.3 GB for wmt22-comet-da; with `--comet-gpus
1` its CUDA context stays on the GPU too), and the child keeps the environment of its
start, thread settings included. It dies with this process; on Linux also with the thread
that started it, so callers ask from the main thread (a child that died meanwhile is
replaced at the next request). A copy of the process made by `fork` lets go of the
child's pipes and, if it asks, starts a child of its own. `check_comet` refuses, before
anything is decoded, a batch size below 1 or more than one GPU, a missing checkpoint or
`hparams.yaml`, an interpreter that cannot run or has no COMET, a checkpoint that is empty
or no torch checkpoint by its first bytes, and a COMET that does not import or cannot load
the checkpoint's encoder (its tokenizer and configuration), or an encoder neither in the
Hugging Face cache nor on a hub that answers one quick request (`comet_child.hub_unreachable`;
one that is here is never asked of the hub): the last is the child's first request, so that
its imports (about 7 s, once per process) serve the scores after it. An interpreter that
does not answer the check in `ANSWER_SECONDS` is refused too.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import json
import os
import select
import subprocess
import sys
import threading
import zipfile
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from east_agent.common.child_process import kill_child, run_briefly, start_child
from east_agent.common.entry import CommandError
from east_agent.common.fingerprint import files_fingerprint

CHILD = Path(__file__).with_name("comet_child.py")
OUTPUT_LINES = 200  # of what the COMET child prints, kept for its failures
SETUP = (
    "python3 -m venv comet-env && comet-env/bin/pip install unbabel-comet 'setuptools<81', "
    "then --comet-python comet-env/bin/python"
)
NO_COMET = 3  # FINDS_COMET's exit status when the interpreter has no COMET
FINDS_COMET = (
    f"import importlib.util, sys; sys.exit({NO_COMET} if importlib.util.find_spec('comet') "
    "is None else 0)"
)
ANSWER_SECONDS = 120  # for the interpreter's check (COMET's imports take about 7 s)
# a checkpoint's first bytes: torch.save's zip, or a pickle before torch 1.6
CHECKPOINT_STARTS = (b"PK\x03\x04", b"\x80")


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


def add_comet_flags(parser: argparse.ArgumentParser) -> None:
    """COMET's flags, one spelling for every command that scores with it."""
    parser.add_argument("--comet-checkpoint", default=None, help="a local COMET model.ckpt")
    parser.add_argument(
        "--comet-python",
        default=sys.executable,
        help="the interpreter of an environment with unbabel-comet (default: this one); a "
        "wrapper script must exec it, keeping the descriptors it inherits",
    )
    parser.add_argument("--comet-batch-size", type=int, default=16)
    parser.add_argument("--comet-gpus", type=int, default=0)


def check_named_by_flag(settings: CometSettings) -> None:
    """`check_comet`, a refusal named by the flag to change (`--comet-python: ...`)."""
    try:
        check_comet(settings)
    except CometError as error:
        flag = f"--comet-{error.setting.replace('_', '-')}: " if error.setting else ""
        raise CometError(flag + str(error), error.setting) from None


def comet_settings(args: argparse.Namespace) -> CometSettings | None:
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


def checkpoint_in(folder: Path) -> str:
    """Where a COMET model folder (or its `checkpoints/`) holds its checkpoint, said: the
    files there, or where one would be (before: `checkpoints/model.ckpt` added to any
    folder, inside `checkpoints/` too)."""
    inside = folder if folder.name == "checkpoints" else folder / "checkpoints"
    found = sorted(inside.glob("*.ckpt")) if inside.is_dir() else []
    if found:
        return "there: " + ", ".join(str(path) for path in found)
    return f"e.g. {inside / 'model.ckpt'}"


def check_comet(settings: CometSettings) -> None:
    """COMET can score with these settings, as far as can be known without scoring."""
    if settings.batch_size < 1:
        raise CometError(f"a batch size of {settings.batch_size}: at least 1", "batch_size")
    if settings.gpus not in (0, 1):
        raise CometError(
            f"{settings.gpus} GPUs: 0 or 1 (on several, COMET's prediction starts copies of "
            "the program it runs in, which would take the requests meant for it)",
            "gpus",
        )
    checkpoint = Path(settings.checkpoint)
    if checkpoint.is_dir():
        raise CometError(
            f"COMET checkpoint {checkpoint} is a folder: give its model.ckpt file "
            f"({checkpoint_in(checkpoint)})",
            "checkpoint",
        )
    if not checkpoint.is_file():
        raise CometError(f"COMET checkpoint {checkpoint} does not exist", "checkpoint")
    if not hparams_of(checkpoint).is_file():
        raise CometError(
            f"COMET checkpoint {checkpoint}: no {hparams_of(checkpoint)}, which COMET reads "
            "(a checkpoint lies in <model>/checkpoints/)",
            "checkpoint",
        )
    check_checkpoint_start(checkpoint)  # its first bytes: before the interpreter's check
    check_finds_comet(settings.python)
    _check_in_child(settings.python, str(checkpoint.absolute()), checkpoint.stat().st_mtime_ns)


def check_finds_comet(python: str) -> None:
    """`python` runs, within `ANSWER_SECONDS`, and finds COMET (not imported: slow)."""
    try:
        found = run_briefly([python, "-c", FINDS_COMET], ANSWER_SECONDS)
    except OSError as error:
        raise CometError(f"{python} cannot run: {error}", "python") from None
    except subprocess.TimeoutExpired:
        raise CometError(f"{python} did not answer in {ANSWER_SECONDS} s", "python") from None
    if found.returncode == NO_COMET:
        raise CometError(
            f"{python} has no unbabel-comet; COMET needs an environment of its own "
            f"(it requires transformers < 5): {SETUP}",
            "python",
        )
    if found.returncode != 0:
        said = _tail(found.stderr.decode(errors="replace"), 5)
        raise CometError(
            f"{python} failed to run Python (exit status {found.returncode}):\n{said}",
            "python",
        )


def check_checkpoint_start(checkpoint: Path) -> None:
    """An empty file, one that does not begin as torch's checkpoints do, or a zip one cut
    short (no zip directory at its end), refused before the decoding (COMET would fail on
    it after); nothing is loaded."""
    with open(checkpoint, "rb") as file:
        start = file.read(4)
    if not start:
        raise CometError(f"COMET checkpoint {checkpoint} is empty (0 bytes)", "checkpoint")
    if not start.startswith(CHECKPOINT_STARTS):
        raise CometError(
            f"COMET checkpoint {checkpoint} is not a torch checkpoint (it begins {start!r}): "
            "a truncated download or another file?",
            "checkpoint",
        )
    if start.startswith(b"PK") and not zipfile.is_zipfile(checkpoint):
        raise CometError(
            f"COMET checkpoint {checkpoint} is cut short (its zip has no directory at its "
            "end): a truncated download?",
            "checkpoint",
        )


@functools.cache
def _check_in_child(python: str, checkpoint: str, mtime_ns: int) -> None:
    """The check by the child that will score (its imports then done once)."""
    try:
        with _CHILD_IN_USE:
            child = _comet_child(python)
            answer = child.ask({"task": "check", "checkpoint": checkpoint}, ANSWER_SECONDS)
    except CometError as error:  # the child died, or did not answer as it does
        raise CometError(str(error), "python") from None
    if answer.get("unreachable"):  # before: 26 s of the hub's retries, then its error
        encoder = answer.get("encoder")
        raise CometError(
            f"COMET checkpoint {checkpoint}: its encoder{_encoder_named(answer)} is not in the "
            f"Hugging Face cache, and the hub cannot be reached ({answer['unreachable']}): "
            f"fetch it once where the hub answers (`hf download {encoder}`, into the cache "
            "HF_HOME names), or name a local copy",
            "checkpoint",
        )
    if answer.get("failed") == "encoder":
        raise CometError(  # before: the encoder unnamed, the error's lines unintroduced
            f"COMET checkpoint {checkpoint}: its encoder{_encoder_named(answer)} does not "
            "load: COMET reads its tokenizer and configuration from the Hugging Face cache, "
            "or fetches them once from the hub. The last lines of its error:\n"
            + _tail(answer["error"]),
            "checkpoint",
        )
    if "error" in answer:
        raise CometError(f"COMET in {python} does not import:\n{_tail(answer['error'])}", "python")


def _encoder_named(answer: dict) -> str:
    """The encoder the child tried, by where it read the name: model.ckpt's own, which COMET
    loads, is named beside another that hparams.yaml names (which COMET does not read)."""
    encoder = answer.get("encoder")
    if not encoder:
        return ""
    if (other := answer.get("hparams_encoder")) is None:
        return f" {encoder!r} (hparams.yaml's pretrained_model)"
    return (
        f" {encoder!r} (the name model.ckpt holds, which COMET loads; hparams.yaml's "
        f"pretrained_model, {other!r}, is read for the model's class alone)"
    )


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# how the texts COMET reads are made, in scoring records: scores made otherwise (before,
# with each reference's line end, or a re-segmented sentence's spaces) are made again
COMET_INPUTS = "stripped, as comet-score reads lines"


def comet_scores(
    settings: CometSettings,
    sources: Sequence[str],
    translations: Sequence[str],
    references: Sequence[str],
) -> CometScores:
    """COMET's scores of the (source, translation, reference) triples, in their order, each
    text stripped as `comet-score` reads the lines of its files (`COMET_INPUTS`)."""
    if not len(sources) == len(translations) == len(references):
        raise ValueError(
            f"COMET needs as many sources ({len(sources)}), translations ({len(translations)}) "
            f"and references ({len(references)})"
        )
    checkpoint = Path(settings.checkpoint).absolute()
    triples = zip(sources, translations, references)
    samples = [
        {"src": src.strip(), "mt": mt.strip(), "ref": ref.strip()} for src, mt, ref in triples
    ]
    request = {
        "task": "score",
        "checkpoint": str(checkpoint),
        "identity": checkpoint_identity(checkpoint),
        "batch_size": settings.batch_size,
        "gpus": settings.gpus,
        "samples": samples,
    }
    with _CHILD_IN_USE:
        answer = _comet_child(settings.python).ask(request)
    failed = f"COMET ({settings.python}, {settings.checkpoint}) failed"
    if "error" in answer:
        raise CometError(f"{failed}:\n{_tail(answer['error'])}")
    if len(answer["scores"]) != len(samples):
        raise CometError(f"COMET gave {len(answer['scores'])} scores for {len(samples)} samples")
    return CometScores(answer["scores"], answer["system_score"])


class _CometChild:
    """`comet_child.py` in `python`'s environment, talked to a request at a time on pipes
    of their own; the last lines it writes on its standard output and error kept for the
    messages of its failures."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.parent = os.getpid()
        requests_read, requests_write = map(_above_standard, os.pipe())
        answers_read, answers_write = map(_above_standard, os.pipe())
        try:
            command = [python, str(CHILD), str(requests_read), str(answers_write)]
            self.process = start_child(command, pass_fds=(requests_read, answers_write))
        except BaseException:
            os.close(requests_write)
            os.close(answers_read)
            raise
        finally:  # the child's ends: the child alone holds them
            os.close(requests_read)
            os.close(answers_write)
        self.requests = os.fdopen(requests_write, "w", encoding="utf-8")
        self.answers = os.fdopen(answers_read, encoding="utf-8")
        self.output_tail: deque[str] = deque(maxlen=OUTPUT_LINES)
        self.output_reader = threading.Thread(target=self._keep_output, daemon=True)
        self.output_reader.start()

    def _keep_output(self) -> None:
        assert self.process.stdout is not None  # start_child makes it a pipe
        for line in self.process.stdout:
            self.output_tail.append(line.rstrip("\n"))

    def serves(self, python: str) -> bool:
        """Alive, this process's own (not a forked copy's), in `python`'s environment."""
        return self.python == python and self.parent == os.getpid() and self.alive()

    def alive(self) -> bool:
        return self.process.poll() is None

    def ask(self, request: dict, timeout: float | None = None) -> dict:
        """Its answer to `request` (with `error` when COMET failed); a `CometError` when it
        died meanwhile, or (killed) when it began no answer in `timeout` seconds."""
        late = False
        try:
            self.requests.write(json.dumps(request) + "\n")
            self.requests.flush()
            late = timeout is not None and not select.select([self.answers], [], [], timeout)[0]
            line = "" if late else self.answers.readline()
        except BrokenPipeError:
            line = ""
        except BaseException:  # interrupted (Ctrl-C): its answer would answer the next request
            self.kill()
            raise
        if late:  # its answer, if it ever came, would answer the next request
            self.kill()
            raise CometError(f"{self.python} did not answer in {timeout:g} s")
        failed = f"COMET ({self.python}, {request['checkpoint']}) failed"
        if not line:
            status = self.process.wait()
            self.output_reader.join(timeout=5)
            said = _tail("\n".join(self.output_tail))
            self._close_pipes()
            if status == 0 and not said:  # it read the end of its requests: none reached it
                said = (
                    "it ended without an answer, as if its requests' pipe were empty: the "
                    "interpreter was started by a wrapper that replaced the descriptors it "
                    "inherits; give the environment's own interpreter (ENV/bin/python)"
                )
            raise CometError(f"{failed} with exit status {status}:\n{said}")
        try:
            return json.loads(line)
        except ValueError:
            self.kill()
            raise CometError(f"{failed}: its answer is not JSON: {line[:200]!r}") from None

    def let_go_in_forked_copy(self) -> None:
        """In a copy of this process made by `fork` (also one that a `subprocess` with a
        `preexec_fn` makes before it execs): its descriptors of the child's pipes still
        open pointed at /dev/null (the objects that own them close that, and flush what
        they hold there), so that the copy holds no pipe open (its requests' pipe would not
        reach its end when this process closes it, nor its answers' when it dies)."""
        assert self.process.stdout is not None  # start_child makes it a pipe
        pipes = (self.requests, self.answers, self.process.stdout)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            for pipe in pipes:
                if not pipe.closed:  # closed: the child died or was ended
                    os.dup2(null, pipe.fileno(), inheritable=False)
        finally:
            os.close(null)

    def kill(self) -> None:
        kill_child(self.process)
        self._close_pipes()

    def close(self) -> None:
        """End it: its requests' pipe closed, then killed if it does not end."""
        with suppress(OSError):
            self.requests.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.requests, self.answers):
            with suppress(OSError):
                pipe.close()


def _above_standard(fd: int) -> int:
    """`fd`, moved above 0..2 if it is one of them (this process started with its standard
    input or output closed): in the child its standard streams would take that number."""
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


_CHILD_IN_USE = threading.Lock()
_child: _CometChild | None = None  # this process's, once a request has started it


def _end_own_child() -> None:
    """This process's child ended (a forked copy's belongs to the process that started it)."""
    if _child is not None and _child.parent == os.getpid():
        _child.close()


def _let_go_in_forked_copy() -> None:
    """A copy of this process made by `fork` (a `fork` multiprocessing pool's worker, say)
    holds none of the child's pipes and does not wait on a lock a thread of this process
    held at the fork; a request it makes starts a child of its own."""
    global _CHILD_IN_USE
    _CHILD_IN_USE = threading.Lock()
    if _child is not None:
        _child.let_go_in_forked_copy()


os.register_at_fork(after_in_child=_let_go_in_forked_copy)


def _comet_child(python: str) -> _CometChild:
    """This process's COMET child in `python`'s environment, started at the first request
    (then kept: the next requests skip COMET's imports and, for the same checkpoint, its
    load); one that died meanwhile, or one of another environment, replaced."""
    global _child
    if _child is not None and _child.serves(python):
        return _child
    _end_own_child()
    _child = _CometChild(python)
    return _child
