"""transformers' own forward with a `DynamicCache`, across transformers 5.x releases.

transformers renamed the cache argument of `forward` from `past_key_values` to `cache`
(5.17 to 5.23 have the old name and silently ignore the new one; 5.24 and later take the
new one and deprecate the old), and `DynamicCache.crop(n)` with a positive `n` changed
from "keep n" to an error. This module is the only place that knows either: it reads the
argument name from the model's signature and only ever crops by a negative count.

A `DynamicCache` has one length for all its rows, so this backend is not ragged: it runs the
rows of one stream (one row, or the beams of one chunk) and nothing else. It runs any model
transformers runs, which is what it is for; beam search, which cuts and copies the cache's
rows, only on plain key/value layers, and a model whose cache has other layers is refused
when the backend is built for beams.

A sliding-window model gets plain layers too: transformers' sliding-window layer keeps
only a row's last positions, so once the row filled the window it cannot be cut back (a
new sentence, a roll-back) nor its beams copied. Plain layers keep every position up to
the context (memory as a model without a window) and the model still masks by its window.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from east_agent.lm.protocol import check_rows_fit, cropped_positions

if TYPE_CHECKING:
    from transformers import DynamicCache, PreTrainedModel


def cache_argument_name(model: torch.nn.Module) -> str:
    """The keyword under which `model.forward` accepts a KV cache."""
    # peft's wrapper: torch types a module's attributes as tensors or modules
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # type: ignore[operator]
    parameters = inspect.signature(type(base).forward).parameters
    if "cache" in parameters:
        return "cache"
    if "past_key_values" in parameters:
        return "past_key_values"
    raise TypeError(f"{type(base).__name__}.forward takes neither `cache` nor `past_key_values`")


def new_dynamic_cache(model: PreTrainedModel) -> DynamicCache:
    """The model's cache, its sliding-window layers plain ones (cut and copied like any)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    cache = DynamicCache(config=model.config)
    cache.layers = [
        DynamicLayer() if type(layer) is DynamicSlidingWindowLayer else layer
        for layer in cache.layers
    ]
    return cache


class CachedLM:
    """Rows 0 .. k-1 of one `DynamicCache` (the batch dimension); k is 1 outside beam search."""

    ragged = False

    def __init__(
        self, model: PreTrainedModel, max_length: int | None = None, max_rows: int = 1
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.max_length = max_length or model.config.max_position_embeddings
        self.max_rows = max_rows
        self._cache_kwarg = cache_argument_name(model)
        self.cache = new_dynamic_cache(model)
        if max_rows > 1:
            self._layers()  # refused before anything is decoded
        self.forward_passes = 0
        self.tokens_fed = 0

    @property
    def rows(self) -> int:
        layer = self.cache.layers[0] if self.cache.layers else None
        keys = getattr(layer, "keys", None)
        return 1 if keys is None or keys.numel() == 0 else keys.shape[0]

    def length(self, row: int = 0) -> int:
        return self.cache.get_seq_length()

    @torch.inference_mode()
    def forward(self, rows: Sequence[int], tokens: Sequence[Sequence[int]]) -> torch.Tensor:
        check_rows_fit(self, rows, tokens)
        if list(rows) != list(range(self.rows)) or len({len(ids) for ids in tokens}) != 1:
            raise NotImplementedError(
                "the dynamic cache runs the rows of one stream at a time (rows 0..k-1, as many "
                "new tokens each); use the static cache to batch streams"
            )
        input_ids = torch.tensor(tokens, dtype=torch.long, device=self.device)
        output = self.model(
            input_ids=input_ids,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kwarg: self.cache},
        )
        self.forward_passes += 1
        self.tokens_fed += input_ids.numel()
        return output.logits[:, -1, :].float()

    def feed(self, token_ids: Sequence[int], row: int = 0) -> torch.Tensor:
        """Feed ids to one row and return its last logits [vocab]."""
        return self.forward([row], [token_ids])[0]

    def crop(self, row: int, length: int) -> int:
        dropped = cropped_positions(self.length(row), length)
        if dropped:
            self.cache.crop(-dropped)
        return dropped

    def reset(self) -> None:
        self.cache = new_dynamic_cache(self.model)

    # -- beams: the batch dimension of every layer ----------------------------------------------

    def _layers(self):
        """The cache's layers, each a plain `DynamicLayer` (keys and values, their length the
        cache's): what `save`, `load` and `release` cut and join by hand."""
        from transformers.cache_utils import DynamicLayer

        layers = self.cache.layers
        other = next((layer for layer in layers if type(layer) is not DynamicLayer), None)
        if other is not None:
            raise ValueError(
                f"beam search needs a plain key/value cache; {type(self.model).__name__} uses "
                f"{type(other).__name__}: decode it with one beam"
            )
        return layers

    def fork(self, source: int, targets: Sequence[int]) -> None:
        if self.rows != 1 or source != 0 or list(targets) != list(range(1, len(targets) + 1)):
            raise NotImplementedError("the dynamic cache forks row 0 into rows 1..k-1 only")
        if len(targets) + 1 > self.max_rows:
            raise ValueError(f"the backend was built for {self.max_rows} rows")
        self._layers()
        self.cache.batch_repeat_interleave(len(targets) + 1)

    def copy_rows(self, rows: Sequence[int], sources: Sequence[int], starts: Sequence[int]) -> None:
        """Row 0 into new rows 1..k-1 (a fork), or a re-ranking of the rows it holds."""
        if self.rows == 1 and set(sources) == {0} and list(rows) == list(range(1, len(rows) + 1)):
            self.fork(0, rows)
            return
        order = list(range(self.rows))
        for row, source in zip(rows, sources):
            if not (row < self.rows and source < self.rows):
                raise NotImplementedError("the dynamic cache copies between the rows it holds")
            order[row] = source
        if order != list(range(self.rows)):
            self._layers()
            # a long tensor: transformers names the legacy class torch.LongTensor
            self.cache.reorder_cache(torch.tensor(order, device=self.device))  # type: ignore[arg-type]

    def save(self, row: int, start: int) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]:
        return start, [
            (
                layer.keys[row : row + 1, :, start:].clone(),
                layer.values[row : row + 1, :, start:].clone(),
            )
            for layer in self._layers()
        ]

    def load(self, row: int, saved: tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        """Row `row`'s prefix and the saved positions become the cache's only row."""
        start, layers = saved
        for layer, (keys, values) in zip(self._layers(), layers):
            layer.keys = torch.cat([layer.keys[row : row + 1, :, :start], keys], dim=-2)
            layer.values = torch.cat([layer.values[row : row + 1, :, :start], values], dim=-2)

    def share_prefix(self, row: int, length: int) -> None:
        """One stream: nothing to share."""

    def release(self, rows: Sequence[int]) -> None:
        """Beam rows 1..k-1 go and row 0 stays (after `load` there is nothing left to go;
        a beam search cut short by an error leaves them forked)."""
        if self.rows == 1:
            return
        if sorted(rows) != list(range(1, self.rows)):
            raise NotImplementedError("the dynamic cache releases all its beam rows at once")
        for layer in self._layers():
            layer.keys, layer.values = layer.keys[:1], layer.values[:1]
