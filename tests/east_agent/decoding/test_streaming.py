"""The masked argmax that every batched step takes: the same choice as `argmax`."""

import torch

from east_agent.decoding.streaming import first_argmax, masked_argmax


def test_masked_argmax_is_argmax_with_the_mask_filled():
    """Ties (small integers) go to the first maximum; widths below, at and past the block
    size, and a row with every id masked."""
    generator = torch.Generator().manual_seed(0)
    for width in (1, 5, 63, 64, 65, 200, 8002):
        for _ in range(20):
            logits = torch.randint(-3, 3, (7, width), generator=generator).float()
            mask = torch.rand(width, generator=generator) < 0.3
            assert torch.equal(first_argmax(logits), logits.argmax(-1))
            expected = logits.masked_fill(mask, float("-inf")).argmax(-1).tolist()
            assert masked_argmax(logits, mask) == expected
    everything = torch.ones(70, dtype=torch.bool)
    assert masked_argmax(torch.randn(2, 70, generator=generator), everything) == [0, 0]


def test_infinities_and_nans_are_argmax_s_too():
    """A masked +inf or NaN is left out; an unmasked NaN is the maximum, in a block or in
    the tail past the last whole block."""
    logits = torch.randn(4, 100, generator=torch.Generator().manual_seed(1))
    logits[0, 5], logits[1, 5], logits[2, 80], logits[3, 30] = (
        float("inf"),
        float("nan"),
        float("nan"),
        float("nan"),
    )
    mask = torch.zeros(100, dtype=torch.bool)
    mask[5] = True
    expected = logits.masked_fill(mask, float("-inf")).argmax(-1).tolist()
    assert masked_argmax(logits, mask) == expected and expected[2:] == [80, 30]
    assert torch.equal(first_argmax(logits), logits.argmax(-1))
