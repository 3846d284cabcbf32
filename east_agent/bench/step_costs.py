"""Per-step costs of a READ step and of a WRITE token on each cache backend and with
`generate()`, and the weight-bandwidth floor they are set against (weight bytes over the
measured device-to-device copy bandwidth)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from east_agent.bench.timing import synchronize
from east_agent.lm import CachedLM, build_lm, cache_argument_name

if TYPE_CHECKING:
    from transformers import (
        PreTrainedModel,
    )


def copy_bandwidth(device: torch.device, megabytes: int) -> float:
    """Bytes per second of a device-to-device copy (read + write)."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    synchronize(device)
    repeats = 10
    started = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    synchronize(device)
    return 2 * source.numel() * repeats / (time.perf_counter() - started)


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@torch.inference_mode()
def time_ms(step: Callable[[], object], device: torch.device | str, repeats: int = 30) -> float:
    """Milliseconds a call of `step` takes, after 3 warm-up calls, device work included."""
    for _ in range(3):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(device)
    return 1000 * (time.perf_counter() - started) / repeats


def step_costs(
    model: PreTrainedModel,
    device: torch.device,
    kv_caches: Sequence[str],
    context: int = 120,
    repeats: int = 30,
) -> dict:
    """Milliseconds of a READ step (2 tokens + decision) and of a WRITE token, at a context
    of `context` tokens, on each cache backend and with `generate()` and the cache passed in."""
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(1000, min(20000, vocab), (context + 2,)).tolist()
    mask = torch.zeros(vocab, dtype=torch.bool, device=device)

    def timed(step) -> float:
        return time_ms(step, device, repeats)

    def step(lm, tokens):
        def run():
            int(lm.feed(ids[context : context + tokens]).masked_fill(mask, float("-inf")).argmax())
            lm.crop(0, context)

        return run

    costs = {}
    for kind in kv_caches:
        lm = build_lm(model, kind, max_length=context + 64)
        lm.feed(ids[:context])
        costs[f"READ step, {kind} cache"] = timed(step(lm, 2))
        costs[f"WRITE token, {kind} cache"] = timed(step(lm, 1))
    lm = CachedLM(model)
    lm.feed(ids[:context])
    cache_kwarg = cache_argument_name(model)
    full = torch.tensor([ids], device=device)

    def generate_read_step():
        model.generate(
            input_ids=full, max_new_tokens=1, do_sample=False, pad_token_id=0,
            **{cache_kwarg: lm.cache},
        )  # fmt: skip
        lm.crop(0, context)

    costs["READ step, generate() with the cache"] = timed(generate_read_step)
    return costs
