"""A causal LM with one growing KV cache, across transformers 5.x releases.

transformers renamed the cache argument of `forward` from `past_key_values` to `cache`
(5.17 has the old name and silently ignores the new one; later releases deprecate the old
one), and `DynamicCache.crop(n)` with a positive `n` changed from "keep n" to an error.
This module is the only place that knows either: it reads the argument name from the
model's signature and only ever crops by a negative count.
"""

from __future__ import annotations

import inspect
import logging

import torch

logger = logging.getLogger(__name__)


def cache_argument_name(model) -> str:
    """The keyword under which `model.forward` accepts a KV cache."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(type(base).forward).parameters
    if "cache" in parameters:
        return "cache"
    if "past_key_values" in parameters:
        return "past_key_values"
    raise TypeError(f"{type(base).__name__}.forward takes neither `cache` nor `past_key_values`")


def new_dynamic_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


class LMBackend:
    """What the decoders need of a model with a KV cache: `forward` [rows, n] -> the last
    position's float32 logits, `crop`, `reset`, the beam-row operations, and counters."""

    device: torch.device
    length: int
    forward_passes: int = 0
    tokens_fed: int = 0

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def feed(self, token_ids: list[int]) -> torch.Tensor:
        """Feed a list of ids to the single row and return its last logits [vocab]."""
        input_ids = torch.tensor([token_ids], dtype=torch.long, device=self.device)
        return self.forward(input_ids)[0]

    def _dropped(self, length: int) -> int:
        dropped = self.length - length
        if dropped < 0:
            raise ValueError(f"cannot crop a cache of {self.length} positions to {length}")
        return dropped


class CachedLM(LMBackend):
    """Feeds token ids through `model`, keeping their keys and values in one cache.

    The owner decides which ids to feed; this class only guarantees that the cache holds
    exactly `length` positions and counts the work done (forward passes, tokens fed).
    Rows of the batch dimension are beams; outside beam search there is one row.
    """

    def __init__(self, model) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self._cache_kwarg = cache_argument_name(model)
        self.cache = new_dynamic_cache(model)
        self.forward_passes = 0
        self.tokens_fed = 0

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    @property
    def rows(self) -> int:
        layer = self.cache.layers[0] if self.cache.layers else None
        keys = getattr(layer, "keys", None)
        return 1 if keys is None or keys.numel() == 0 else keys.shape[0]

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Feed `input_ids` [rows, n]; return the last position's float32 logits [rows, vocab]."""
        output = self.model(
            input_ids=input_ids,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kwarg: self.cache},
        )
        self.forward_passes += 1
        self.tokens_fed += input_ids.numel()
        return output.logits[:, -1, :].float()

    def crop(self, length: int) -> int:
        """Drop every position from `length` on; return how many were dropped."""
        dropped = self._dropped(length)
        if dropped:
            self.cache.crop(-dropped)
        return dropped

    def reset(self) -> None:
        self.cache = new_dynamic_cache(self.model)

    # Beam search support: the batch dimension of every layer holds the beams.

    def _layers(self):
        layers = self.cache.layers
        if not all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
            raise NotImplementedError(
                f"beam search needs a plain key/value cache; {type(self.model).__name__} uses "
                f"{type(layers[0]).__name__}"
            )
        return layers

    def snapshot(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """References to the current per-layer tensors (later updates never write into them)."""
        return [(layer.keys, layer.values) for layer in self._layers()]

    def expand(self, rows: int) -> None:
        self.cache.batch_repeat_interleave(rows)

    def reorder(self, row_indices: torch.Tensor) -> None:
        self.cache.reorder_cache(row_indices)

    def row_suffix(self, row: int, start: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Copies of the positions from `start` on of one row, per layer."""
        return [
            (
                layer.keys[row : row + 1, :, start:].clone(),
                layer.values[row : row + 1, :, start:].clone(),
            )
            for layer in self._layers()
        ]

    def restore(
        self,
        prefix: list[tuple[torch.Tensor, torch.Tensor]],
        suffix: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        """Make the cache one row: `prefix` (one row) followed by `suffix` (one row)."""
        for layer, (prefix_keys, prefix_values), (suffix_keys, suffix_values) in zip(
            self._layers(), prefix, suffix
        ):
            layer.keys = torch.cat([prefix_keys, suffix_keys], dim=-2)
            layer.values = torch.cat([prefix_values, suffix_values], dim=-2)


KV_CACHES = ("auto", "dynamic", "static", "compiled")


def build_lm(
    model,
    kind: str = "auto",
    max_length: int | None = None,
    max_rows: int = 1,
    probe_ids: list[int] | None = None,
):
    """The cache backend: `dynamic` (`CachedLM`, any model), `static` (`StaticLM`, Llama
    family, CUDA graphs and compiled layers on GPUs), `compiled` (`StaticLM` with compiled
    layers on any device) or `auto`: static where it supports the model and its logits on
    `probe_ids` match the dynamic path's (on GPUs with compiled layers if they pass, else
    without; eager on CPUs, where it is still the faster one), dynamic otherwise."""
    from east_agent.static_lm import StaticLM, supports

    if kind not in KV_CACHES:
        raise ValueError(f"unknown kv cache {kind!r}: choose one of {KV_CACHES}")
    max_length = max_length or model.config.max_position_embeddings
    if kind == "dynamic":
        return CachedLM(model)
    reason = supports(model)
    if kind in ("static", "compiled"):
        if reason is not None:
            raise ValueError(f"the static cache does not run {reason}; use the dynamic one")
        compile_layers = True if kind == "compiled" else None  # None: compiled on CUDA
        return StaticLM(model, max_length, max_rows, compile_layers=compile_layers)
    if reason is not None:
        return CachedLM(model)
    for compile_layers in static_attempts(model):
        try:
            static = StaticLM(model, max_length, max_rows, compile_layers=compile_layers)
            if probe_ids:
                check_static(model, static, probe_ids)
            return static
        except Exception as error:  # a fast path must never cost a run: fall back, loudly
            logger.warning("static KV cache (compiled: %s) unavailable: %s", compile_layers, error)
    logger.warning("using the dynamic KV cache")
    return CachedLM(model)


def static_attempts(model) -> tuple[bool, ...]:
    """`compile_layers` for each static backend `auto` tries, in order, before the dynamic
    cache: on CUDA compiled layers, then plain ones; on CPUs plain ones only."""
    return (True, False) if next(model.parameters()).device.type == "cuda" else (False,)


def check_static(model, static, probe_ids: list[int]) -> None:
    """Raise unless the static path reproduces the dynamic path's logits on a probe."""
    dynamic = CachedLM(model)
    expected = [dynamic.feed(probe_ids), dynamic.feed(probe_ids[-2:]), dynamic.feed(probe_ids[-1:])]
    actual = [static.feed(probe_ids), static.feed(probe_ids[-2:]), static.feed(probe_ids[-1:])]
    static.reset()
    static.forward_passes = static.tokens_fed = 0  # the probe is not the caller's work
    tolerance = 1e-3 if next(model.parameters()).dtype == torch.float32 else 5e-2
    for want, got in zip(expected, actual):
        scale = want.abs().max().clamp_min(1e-6)
        if float((want - got).abs().max() / scale) > tolerance or want.argmax() != got.argmax():
            raise RuntimeError("its logits differ from the dynamic cache's on a probe")
