"""What every batched step takes from its logits: the masked argmax (the same choice as
`argmax`) and beam searches' candidates (those of each search computed alone)."""

import torch

from east_agent.decoding.streaming import (
    LOST,
    BeamChoices,
    BeamStep,
    Feed,
    beam_choices,
    first_argmax,
    masked_argmax,
    run_feeds,
)


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


def one_search(logits, step: BeamStep) -> BeamChoices:
    """A beam step computed alone, as `beam_chunk` did before the driver took it over."""
    log_probs = torch.log_softmax(logits, dim=-1).masked_fill(step.suppress_mask, float("-inf"))
    running = torch.tensor(step.running_scores)
    vocab = logits.shape[-1]
    scores, flat_ids = torch.topk((log_probs + running[:, None]).view(-1), step.candidates)
    source_rows, token_ids = flat_ids // vocab, flat_ids % vocab
    hits = torch.isin(token_ids, torch.tensor(step.stop_ids)) | step.at_max_length
    keep = torch.topk(scores + hits * LOST, step.num_beams).indices
    return BeamChoices(*(t.tolist() for t in (scores, source_rows, token_ids, hits, keep)))


def random_step(generator, rows: int, mask, at_max_length: bool = False) -> BeamStep:
    running = tuple(torch.randn(rows, generator=generator).tolist())
    return BeamStep(running, 8, 4, mask, (3, 7), at_max_length)


def test_beam_candidates_of_many_searches_are_each_search_s_own():
    generator = torch.Generator().manual_seed(2)
    mask = torch.rand(300, generator=generator) < 0.1
    steps = [random_step(generator, 4, mask, at_max_length=n == 2) for n in range(5)]
    logits = torch.randn(20, 300, generator=generator)
    logits[:, 3] += 4  # stop ids among the candidates
    for number, answer in enumerate(beam_choices(logits, steps)):
        alone = one_search(logits[4 * number : 4 * number + 4], steps[number])
        assert answer == alone
        assert any(answer.hits) and (all(answer.hits) if number == 2 else not all(answer.hits))


class GivenLogits:
    """A backend whose forward returns fixed logits for each row."""

    def __init__(self, logits) -> None:
        self.logits = logits

    def forward(self, rows, tokens):
        return self.logits[torch.tensor(rows)]


def test_a_step_s_feeds_get_their_own_beam_candidates_and_argmaxes():
    """Searches of one row (a chunk's first token) and of four, two masks, and a greedy
    feed, in one forward: each answer is what its feed alone gets."""
    generator = torch.Generator().manual_seed(3)
    masks = [torch.rand(300, generator=generator) < 0.1 for _ in range(2)]
    lm = GivenLogits(torch.randn(16, 300, generator=generator))
    feeds = [
        Feed((0,), [[1, 2]], beam=random_step(generator, 1, masks[0])),
        Feed((4, 5, 6, 7), [[1]] * 4, beam=random_step(generator, 4, masks[0])),
        Feed((8,), [[5]], mask=masks[1]),
        Feed((9,), [[1]], beam=random_step(generator, 1, masks[1])),
        Feed((12, 13, 14, 15), [[1]] * 4, beam=random_step(generator, 4, masks[0])),
        Feed((1,), [[1]], beam=random_step(generator, 1, masks[0])),
    ]
    together = run_feeds(lm, feeds)
    for feed, fed in zip(feeds, together):
        (alone,) = run_feeds(lm, [feed])
        assert fed.choices == alone.choices and torch.equal(fed.logits, alone.logits)
        assert fed.beam == alone.beam
        if feed.beam is not None:
            assert fed.beam == one_search(lm.logits[torch.tensor(feed.rows)], feed.beam)
