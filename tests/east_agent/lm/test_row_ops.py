"""Row copies, saves and loads recorded, then made together: the same buffers as making
each at once, in a number of tensor operations that does not grow with the streams."""

import random

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from east_agent.lm.row_ops import PendingRowOps

ROWS, HEADS, POSITIONS, DIM = 6, 2, 12, 3


def buffers(seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(ROWS, HEADS, POSITIONS, DIM, generator=generator) for _ in range(3)]


class Reference:
    """Each operation made at once, by slicing."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors, self.saved = tensors, []

    def save(self, row: int, start: int, end: int) -> None:
        self.saved.append((start, end, [t[row, :, start:end].clone() for t in self.tensors]))

    def copy(self, pairs) -> None:
        read = [[t[s, :, start:end].clone() for t in self.tensors] for _, s, start, end in pairs]
        for (target, _, start, end), vectors in zip(pairs, read):
            for tensor, vector in zip(self.tensors, vectors):
                tensor[target, :, start:end] = vector

    def load(self, row: int, number: int) -> None:
        start, end, vectors = self.saved[number]
        for tensor, vector in zip(self.tensors, vectors):
            tensor[row, :, start:end] = vector


def grown(tensors: list[torch.Tensor], extra: int) -> list[torch.Tensor]:
    """As `StaticLM` grows its buffers: more positions, the old ones kept."""
    return [torch.cat([t, torch.zeros(*t.shape[:2], extra, DIM)], dim=2) for t in tensors]


def test_made_together_equals_each_made_at_once():
    """Random saves, copies (several pairs a call, rows that are each other's source,
    empty spans) and loads (of saves made or not yet, some twice) on a few rows, with the
    pending ones made at random points and the buffers grown between them."""
    rng = random.Random(7)
    shared_levels = 0
    for trial in range(300):
        reference, tensors = Reference(buffers(trial)), buffers(trial)
        pending, saves, asked = PendingRowOps(), [], 0
        for _ in range(rng.randint(1, 20)):
            positions = tensors[0].shape[2]
            start = rng.randrange(positions + 1)
            end = rng.randrange(start, positions + 1)
            kind = rng.choice(
                ["save", "copy", "load", "make", "grow"] if saves else ["copy", "save"]
            )
            if kind == "save":
                row = rng.randrange(ROWS)
                reference.save(row, start, end)
                saves.append(pending.save(row, start, end))
            elif kind == "copy":
                targets = rng.sample(range(ROWS), rng.randint(1, 3))
                pairs = [(t, s, start, end) for t in targets if (s := rng.randrange(ROWS)) != t]
                reference.copy(pairs)
                pending.copy(pairs)
            elif kind == "load":
                number, row = rng.randrange(len(saves)), rng.randrange(ROWS)
                reference.load(row, number)
                pending.load(row, saves[number])
            else:
                shared_levels += len(pending.levels) < asked
                pending.make(tensors)
                asked = 0
                if kind == "grow":
                    extra = rng.randint(1, 3)
                    tensors, reference.tensors = (
                        grown(tensors, extra),
                        grown(reference.tensors, extra),
                    )
            asked += kind in ("save", "copy", "load")
        pending.make(tensors)
        for expected, actual in zip(reference.tensors, tensors):
            assert torch.equal(expected, actual), f"trial {trial}"
        for (_, _, expected), saved in zip(reference.saved, saves):
            for number, vectors in enumerate(expected):  # [heads, positions, dim]
                by_position = vectors.transpose(0, 1).reshape(-1, DIM)
                assert torch.equal(by_position, saved.vectors(number)), f"trial {trial}"
    assert shared_levels > 0  # operations did share levels


def test_a_load_waits_for_its_save_and_a_save_sees_the_row_before_a_copy():
    tensors = buffers(1)
    row_2 = tensors[0][2].clone()
    pending = PendingRowOps()
    pending.copy([(1, 0, 0, POSITIONS)])
    pending.copy([(2, 1, 0, POSITIONS)])  # row 2: row 0's, at the second level
    saved = pending.save(2, 4, 9)  # third level
    pending.copy([(2, 5, 0, POSITIONS)])
    pending.load(3, saved)  # row 3 is free, but the save is not made before the third level
    pending.make(tensors)
    assert torch.equal(tensors[0][3, :, 4:9], buffers(1)[0][0, :, 4:9])
    assert not torch.equal(row_2, tensors[0][2])


class CountKernels(TorchDispatchMode):
    """Tensor operations that compute (views of a tensor launch nothing on a GPU)."""

    def __enter__(self):
        self.total = 0
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.total += not func.is_view
        return func(*args, **(kwargs or {}))


def test_the_operations_of_many_streams_cost_as_many_tensor_operations_as_one():
    """A GPU launches a kernel per operation: a step's copies, saves and loads are a fixed
    number of them, not a few per layer and stream."""

    def operations(streams: int) -> int:
        tensors = [torch.zeros(3 * streams, HEADS, POSITIONS, DIM) for _ in range(4)]
        pending = PendingRowOps()
        for stream in range(streams):
            home, beams = 3 * stream, [3 * stream + 1, 3 * stream + 2]
            saved = pending.save(beams[0], 2, 5)
            pending.copy([(home, beams[1], 2, 6), (beams[1], beams[0], 2, 6)])
            pending.load(beams[0], saved)
        with CountKernels() as counted:
            pending.make(tensors)
        return counted.total

    assert operations(1) == operations(8) > 0
