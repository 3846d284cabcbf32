"""Counting and timing what a method of `east-bench` spends on one sentence: forward
passes, tokens fed, wall time with the device synchronized; a progress line per stage."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from east_agent.common.entry import raise_if_signalled

if TYPE_CHECKING:
    from east_agent.lm.protocol import LMBackend


@dataclass
class ForwardCounter:
    """Counts every forward of the model (whoever calls it): passes and positions fed."""

    passes: int = 0
    tokens: int = 0
    handle: object = field(default=None, repr=False)

    def attach(self, model: torch.nn.Module) -> ForwardCounter:
        def count(module, args, kwargs):
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            self.passes += 1
            self.tokens += input_ids.numel() if input_ids is not None else 0

        self.handle = model.register_forward_pre_hook(count, with_kwargs=True)
        return self

    def take(self) -> tuple[int, int]:
        taken = (self.passes, self.tokens)
        self.passes = self.tokens = 0
        return taken


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class MethodResult:
    name: str
    forward_passes: int = 0
    tokens_fed: int = 0
    tokens_reencoded: int = 0
    seconds: float = 0.0
    sentences: int = 0

    def per_sentence(self, value: float) -> float:
        return value / max(self.sentences, 1)


@contextmanager
def one_sentence(
    result: MethodResult, device: torch.device | str, lm: LMBackend | None = None
) -> Iterator[None]:
    """Time one sentence of a method (the device synchronized at both ends) and add what
    the backend `lm` counted meanwhile: the skeleton every method shares."""
    passes, fed = (lm.forward_passes, lm.tokens_fed) if lm is not None else (0, 0)
    synchronize(device)
    started = time.perf_counter()
    yield
    synchronize(device)
    result.seconds += time.perf_counter() - started
    result.sentences += 1
    if lm is not None:
        # StaticLM runs the model's layers itself (and replays CUDA graphs), so the model's
        # forward hook cannot see its steps: every backend counts the forwards it runs.
        result.forward_passes += lm.forward_passes - passes
        result.tokens_fed += lm.tokens_fed - fed


def progress(text: str, started: float) -> None:
    """One line on stderr per stage: a GPU run is timed from outside, so say where it is.
    A stage is done: a Ctrl-C a library swallowed ends the run here, not after the rest."""
    elapsed = time.perf_counter() - started
    print(f"[east-bench {elapsed:7.1f} s] {text}", file=sys.stderr, flush=True)
    raise_if_signalled()
