"""Choosing a backend: the static cache where it runs the model and checks out, else dynamic."""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING

import torch

from east_agent.lm.dynamic import CachedLM
from east_agent.lm.static import KVCacheMemoryError, StaticLM, supports

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

KV_CACHES = ("auto", "dynamic", "static", "compiled")

# The static backends each model has passed `check_static` as, in this process
# (`_probe_key`): a grid's worker builds a decoder per run over one loaded model, and the
# probe (0.3-0.5 s a build on a 2-core CPU, transformers' own forward included) says the
# same every time.
_PROBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def build_lm(
    model: PreTrainedModel,
    kind: str = "auto",
    max_length: int | None = None,
    max_rows: int = 1,
    probe_ids: list[int] | None = None,
) -> CachedLM | StaticLM:
    """The cache backend: `dynamic` (`CachedLM`, any model, one stream), `static`
    (`StaticLM`, Llama family, many streams, CUDA graphs and compiled layers on GPUs),
    `compiled` (`StaticLM` with compiled layers on any device) or `auto`: static where it
    supports the model and its logits on `probe_ids` match the dynamic path's (on GPUs with
    compiled layers if they pass, else without; eager on CPUs, where it is still the faster
    one), dynamic otherwise. The probe runs once per model and kind of static backend
    (compiled or not, one row or many) in a process."""
    if kind not in KV_CACHES:
        raise ValueError(f"unknown kv cache {kind!r}: choose one of {KV_CACHES}")
    max_length = max_length or model.config.max_position_embeddings
    if kind == "dynamic":
        return CachedLM(model, max_length, max_rows)
    reason = supports(model, max_length)
    if kind in ("static", "compiled"):
        if reason is not None:
            raise ValueError(f"the static cache does not run {reason}; use the dynamic one")
        compile_layers = True if kind == "compiled" else None  # None: compiled on CUDA
        return StaticLM(model, max_length, max_rows, compile_layers=compile_layers)
    if reason is not None:
        return CachedLM(model, max_length, max_rows)
    for compile_layers in static_attempts(model):
        try:
            static = StaticLM(model, max_length, max_rows, compile_layers=compile_layers)
            probe = _probe_key(model, compile_layers, max_rows, max_length)
            if probe_ids and probe not in _PROBED.get(model, ()):
                check_static(model, static, probe_ids)
                _PROBED.setdefault(model, set()).add(probe)
            return static
        except KVCacheMemoryError:
            raise  # the dynamic cache would need as much memory, and could not batch streams
        except Exception as error:  # a fast path must never cost a run: fall back, loudly
            logger.warning("static KV cache (compiled: %s) unavailable: %s", compile_layers, error)
    logger.warning("using the dynamic KV cache")
    return CachedLM(model, max_length, max_rows)


def _probe_key(model, compile_layers: bool | None, max_rows: int, max_length: int) -> tuple:
    """What one probe vouches for: the weights' dtype and device, compiled layers or not,
    one row or many (a ragged step); compiled layers are specialised on the backend's
    shape, so for them the shape too."""
    weights = next(model.parameters())
    shape = (max_rows, max_length) if compile_layers else (max_rows > 1,)
    return (weights.dtype, weights.device, bool(compile_layers), *shape)


def static_attempts(model: PreTrainedModel) -> tuple[bool, ...]:
    """`compile_layers` for each static backend `auto` tries, in order, before the dynamic
    cache: on CUDA compiled layers, then plain ones; on CPUs plain ones only."""
    return (True, False) if next(model.parameters()).device.type == "cuda" else (False,)


def check_static(model: PreTrainedModel, static: StaticLM, probe_ids: list[int]) -> None:
    """Raise unless the static path reproduces the dynamic path's logits (`logits_agree`)
    on a probe: one row fed three times, and (with two rows or more) two rows of other
    lengths in one ragged forward. No row holds more than `probe_ids` and 3 positions
    (the decoders' smallest `--max-context` leaves the prompt 4)."""
    dynamic = CachedLM(model)
    steps = [probe_ids, probe_ids[-2:], probe_ids[-1:]]
    expected = [dynamic.feed(ids) for ids in steps]
    actual = [static.feed(ids) for ids in steps]
    if static.max_rows > 1 and len(probe_ids) > 4:
        dynamic = CachedLM(model)
        dynamic.feed(probe_ids[:3])
        expected += [_fresh_logits(model, probe_ids + probe_ids[:2]), dynamic.feed([7, 9])]
        static.reset()
        static.forward([0], [probe_ids])
        static.forward([1], [probe_ids[:3]])
        actual += list(static.forward([0, 1], [probe_ids[:2], [7, 9]]))
    static.reset()
    static.forward_passes = static.tokens_fed = 0  # the probe is not the caller's work
    dtype = next(model.parameters()).dtype
    tolerance = 1e-3 if dtype == torch.float32 else 5e-2
    tie = 2 * torch.finfo(dtype).eps  # bfloat16: 1.6% of the largest logit
    if not all(logits_agree(want, got, tolerance, tie) for want, got in zip(expected, actual)):
        raise RuntimeError("its logits differ from the dynamic cache's on a probe")


def logits_agree(want: torch.Tensor, got: torch.Tensor, tolerance: float, tie: float) -> bool:
    """Whether `got` is `want` up to rounding: every logit within `tolerance` of the
    largest magnitude, and the token `got` ranks first one that `want` rates within `tie`
    of its best (both relative to that magnitude; NaN agrees with nothing). Not exactly
    the same first token: in bfloat16 two near-equal logits swap places under another
    summation order (4 of 150 random llama3-tiny models in bfloat16 failed that test on a
    CPU, their top two 0.5-0.6% of the largest logit apart)."""
    scale = want.abs().max().clamp_min(1e-6)
    error = float((want - got).abs().max() / scale)
    shortfall = float((want.max() - want[got.argmax()]) / scale)
    return error <= tolerance and shortfall <= tie


def _fresh_logits(model, ids: list[int]) -> torch.Tensor:
    return CachedLM(model).feed(ids)
