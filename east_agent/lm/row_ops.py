"""Copies, saves and loads of cache rows, made together at the next forward.

A beam search moves keys and values between its rows after every step: the beams are
re-ranked (`copy_rows`), each hypothesis that finishes keeps its chunk's positions
(`save`) and the winner's are put back behind the home row (`load`). Made one stream and
one layer at a time, they were about 1,570 of the 1,970 computing tensor operations of a
step of 64 streams of 5 beams on the demo model (`benchmarks/RESULTS.md`), each a kernel
launch on a GPU, and every copy's index tensor a wait for the host. `StaticLM` instead
records what is asked (its lengths change at once, so that the decoders see no
difference) and makes it before anything reads the buffers: every operation goes to the
first *level* after the earlier ones on its rows (a load also not before the save it puts
back), so the operations of one level touch different rows and those of a kind are made
together, one gather and one scatter per buffer for the rows of every stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

Span = tuple[int, int, int]  # (row, start, end): positions start .. end - 1 of a row


class Saved:
    """Positions `start` .. `end` - 1 of a row, as `save` returns them: copied when the
    pending operations are made, into `bundles` (one per buffer, shared by the saves made
    together: one row per position and head), rows `offset` .. `offset` + `size` - 1."""

    __slots__ = ("start", "end", "level", "bundles", "offset", "size")

    def __init__(self, start: int, end: int, level: int) -> None:
        self.start, self.end, self.level = start, end, level
        self.bundles: list[torch.Tensor] | None = None
        self.offset = self.size = 0

    def vectors(self, buffer: int) -> torch.Tensor:
        """What was saved of buffer number `buffer`."""
        assert self.bundles is not None  # loads are made after the saves they put back
        return self.bundles[buffer][self.offset : self.offset + self.size]


Copy = tuple[int, int, int, int]  # (target row, source row, start, the source's end)


@dataclass
class _Level:
    saves: list[tuple[int, Saved]] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    loads: list[tuple[int, Saved]] = field(default_factory=list)


class PendingRowOps:
    def __init__(self) -> None:
        self.levels: list[_Level] = []
        self.level_of: dict[int, int] = {}  # the last level that touches each row

    def __bool__(self) -> bool:
        return bool(self.levels)

    def _place(self, rows: Sequence[int], not_before: int = 0) -> int:
        """The level of a new operation on `rows` (now the last one on each of them)."""
        number = max([not_before] + [self.level_of.get(row, -1) + 1 for row in rows])
        for row in rows:
            self.level_of[row] = number
        while len(self.levels) <= number:
            self.levels.append(_Level())
        return number

    def save(self, row: int, start: int, end: int) -> Saved:
        number = self._place([row])
        saved = Saved(start, end, number)
        self.levels[number].saves.append((row, saved))
        return saved

    def copy(self, copies: Sequence[Copy]) -> None:
        rows = sorted({row for target, source, _, _ in copies for row in (target, source)})
        self.levels[self._place(rows)].copies.extend(copies)

    def load(self, row: int, saved: Saved) -> None:
        # saves come first within a level: a load may share the level of its save
        not_before = saved.level if saved.bundles is None else 0
        self.levels[self._place([row], not_before)].loads.append((row, saved))

    def make(self, buffers: list[torch.Tensor]) -> None:
        """Make every pending operation on `buffers` ([rows, heads, positions, head_dim]
        each), level by level, and forget them."""
        levels, self.levels, self.level_of = self.levels, [], {}
        for level in levels:
            if level.saves:
                _gather(buffers, level.saves)
            if level.copies:
                targets = _flat([(t, start, end) for t, _, start, end in level.copies], buffers)
                sources = _flat([(s, start, end) for _, s, start, end in level.copies], buffers)
                for flat in _flat_views(buffers):
                    flat.index_copy_(0, targets, flat.index_select(0, sources))
            if level.loads:
                _scatter(buffers, level.loads)


def _gather(buffers: list[torch.Tensor], saves: list[tuple[int, Saved]]) -> None:
    index = _flat([(row, saved.start, saved.end) for row, saved in saves], buffers)
    bundles = [flat.index_select(0, index) for flat in _flat_views(buffers)]
    offset = 0
    for _, saved in saves:
        saved.bundles, saved.offset = bundles, offset
        saved.size = (saved.end - saved.start) * buffers[0].shape[1]
        offset += saved.size


def _scatter(buffers: list[torch.Tensor], loads: list[tuple[int, Saved]]) -> None:
    index = _flat([(row, saved.start, saved.end) for row, saved in loads], buffers)
    for number, flat in enumerate(_flat_views(buffers)):
        flat.index_copy_(0, index, torch.cat([saved.vectors(number) for _, saved in loads]))


def _flat_views(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each buffer as [rows x heads x positions, head_dim]: one vector per (row, head,
    position), which one index_select or index_copy_ moves for any set of rows."""
    return [buffer.view(-1, buffer.shape[-1]) for buffer in buffers]


def _flat(spans: Sequence[Span], buffers: list[torch.Tensor]) -> torch.Tensor:
    """The flat indices of the spans' vectors: span by span, position by position, heads
    inner (built on the host, moved to the buffers' device in one copy)."""
    _, heads, positions, _ = buffers[0].shape
    rows, starts, ends = torch.tensor(spans, dtype=torch.long).reshape(-1, 3).T
    lengths = (ends - starts).clamp_(min=0)
    span_of = torch.repeat_interleave(torch.arange(len(spans)), lengths)
    first = torch.cumsum(lengths, 0) - lengths  # where each span's positions begin
    position = starts[span_of] + torch.arange(len(span_of)) - first[span_of]
    head = torch.arange(heads)
    index = (rows[span_of, None] * heads + head) * positions + position[:, None]
    return index.flatten().to(buffers[0].device)
