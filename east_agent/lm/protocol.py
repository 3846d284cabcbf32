"""The one interface between the decoders and a model with a KV cache.

Rows. A backend holds `max_rows` rows. Each row is an independent token sequence with its
own length (`length(row)`), its own positions (0 .. length - 1) and its own keys and values;
nothing one row does changes another. How rows are used is the decoders' business:
- a sentence stream owns one row, its *home* row, for the whole run;
- while it beam-searches a chunk it owns `num_beams` rows (home first): the beams are rows
  that share a prefix (`fork`), are re-ranked (`copy_rows`), and the winner's new
  positions are put back behind the home row's prefix (`save` / `load`);
- streams of different sentences are rows that share nothing. One `forward` may carry rows
  of many streams at once, each with its own number of new tokens, when the backend is
  `ragged`; a backend that is not ragged takes only the rows of one stream per forward
  (rows 0 .. k-1, equal lengths, equal token counts).

Every forward is counted (`forward_passes`, and `tokens_fed`, the positions computed).
Lengths change as soon as an operation is asked for; a backend may make the copies,
saves and loads themselves later, as long as nothing reads the rows before
(`StaticLM` makes those of every stream together, at the next forward: `row_ops`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch


class LMBackend(Protocol):
    device: torch.device
    max_rows: int
    max_length: int  # positions one row may hold
    ragged: bool  # one forward may mix rows of any lengths and token counts
    forward_passes: int
    tokens_fed: int

    def length(self, row: int) -> int:
        """Positions row `row` holds."""

    def forward(self, rows: Sequence[int], tokens: Sequence[Sequence[int]]) -> torch.Tensor:
        """Append `tokens[i]` (at least one id) to row `rows[i]`, for every i, in one forward;
        return the float32 logits of each row's last new position, [len(rows), vocab]."""

    def crop(self, row: int, length: int) -> int:
        """Drop the positions of `row` from `length` on; return how many were dropped."""

    def fork(self, source: int, targets: Sequence[int]) -> None:
        """Make every target row a copy of `source` (a shared prompt; beams of one row)."""

    def copy_rows(self, rows: Sequence[int], sources: Sequence[int], starts: Sequence[int]) -> None:
        """Row `rows[i]` becomes a copy of row `sources[i]`, its length too, for every i at
        once (a row may be both a target and a source: every source is read first). The two
        rows already hold equal positions before `starts[i]`, which need not be copied."""

    def save(self, row: int, start: int) -> Any:
        """A copy of the positions of `row` from `start` on, for `load` to put back."""

    def load(self, row: int, saved: Any) -> None:
        """Row `row` becomes its positions before the saved start, then the saved ones.
        The saved keys and values were computed over the saving row's positions before that
        start: `row` must hold the same ones (a beam loads into the row it forked from)."""

    def share_prefix(self, row: int, length: int) -> None:
        """The first `length` positions of `row` (a prompt) are what every row forked from it
        from now on holds; a backend may read them once for all such rows."""

    def release(self, rows: Sequence[int]) -> None:
        """The rows' contents are no longer needed (beam rows after a search)."""

    def reset(self) -> None:
        """Empty every row."""


def check_rows_fit(
    backend: LMBackend, rows: Sequence[int], tokens: Sequence[Sequence[int]]
) -> None:
    """Raise a ValueError naming the row when a forward would not fit or is malformed."""
    if len(rows) != len(tokens) or not rows:
        raise ValueError(f"a forward takes one token list per row ({len(rows)} rows)")
    if len(set(rows)) != len(rows):
        raise ValueError(f"a row appears twice in one forward: {list(rows)}")
    for row, ids in zip(rows, tokens):
        if not 0 <= row < backend.max_rows:
            raise ValueError(f"row {row} out of range: the backend has {backend.max_rows} rows")
        if not ids:
            raise ValueError(f"row {row}: a forward needs at least one new token")
        if backend.length(row) + len(ids) > backend.max_length:
            raise ValueError(
                f"row {row}: {backend.length(row)} + {len(ids)} positions exceed the "
                f"{backend.max_length} the backend holds"
            )


def cropped_positions(held: int, length: int) -> int:
    """How many positions a crop of a row holding `held` to `length` drops: a length below
    0 or above `held` is refused (before: a negative one was taken, and the row's length
    went below zero)."""
    if not 0 <= length <= held:
        raise ValueError(f"cannot crop a row of {held} positions to {length}")
    return held - length
