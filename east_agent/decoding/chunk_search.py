"""Generating one WRITE chunk: greedy, or beam search that keeps the winner's KV cache.

Each is a generator of feeds (`east_agent.decoding.streaming`) for one stream whose home row holds
everything before `pending` (the ids not fed yet, ending with `<|end-of-read|>`). It
returns the chunk's ids (stop token excluded) and leaves the home row holding `pending`
and a prefix of the chunk; the caller feeds the rest later, so no position is ever
computed twice.

Beam search reproduces transformers' `generate(num_beams=N)` (length penalty 1,
`early_stopping=False`, top-2N candidates, suppressed tokens masked after the log-softmax,
as `suppress_tokens` does) for one sequence, so EAST's reference decoding and ours pick the
same chunk. The beams are the stream's rows: forked from the home row, re-ranked in place;
transformers' beam search throws the beams' caches away, here every hypothesis that
finishes copies the keys and values of its own chunk tokens (a few positions), and the
winner's copy is put behind the home row's prefix when the search ends.

When the search stops (`beam_stop`): once `num_beams` hypotheses are finished, it goes on
only while a score of this step, divided by (tokens generated) ** length_penalty, beats the
worst finished one. That score is
- "reference": the best of the step's candidates, one that just hit a stop token included
  (transformers 4.44.2, the release the paper's code ran: `BeamHypotheses.is_done` gets
  `next_scores.max()`). It stops later: while the step's best candidate is a hypothesis
  that just finished above the worst one, the search goes on;
- "transformers": the best beam still running (transformers 5.x,
  `_check_early_stop_heuristic`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from east_agent.decoding.characters import CharacterCuts
from east_agent.decoding.streaming import BeamStep, Feeds, Stream

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REFERENCE, TRANSFORMERS = "reference", "transformers"
BEAM_STOP_RULES = (REFERENCE, TRANSFORMERS)


@dataclass
class ChunkLimits:
    max_tokens: int  # new tokens at most, the stop token included
    stop_ids: tuple[int, ...]
    suppress_mask: torch.Tensor  # bool [vocab]: ids that may not be generated
    length_penalty: float = 1.0  # beam search only: scores are divided by length ** penalty


def greedy_chunk(
    stream: Stream, pending: list[int], limits: ChunkLimits
) -> Feeds[tuple[list[int], bool]]:
    """Return (chunk ids, whether a stop token ended it)."""
    chunk: list[int] = []
    to_feed = pending
    for _ in range(limits.max_tokens):
        fed = yield stream.feed(to_feed, limits.suppress_mask)
        assert fed.choices is not None  # a masked feed's
        token_id = fed.choices[0]
        if token_id in limits.stop_ids:
            return chunk, True
        chunk.append(token_id)
        to_feed = [token_id]
    return chunk, False


@dataclass
class _Finished:
    score: float
    tokens: list[int]
    saved: Any = field(repr=False)  # the keys and values of the chunk tokens it holds


def beam_candidates(num_beams: int, stop_count: int) -> int:
    """How many best tokens of one row a beam step takes: room for every beam to go on
    when the best candidates stop."""
    return max(2, 1 + stop_count) * num_beams


def check_beams_fit(num_beams: int, stop_count: int, vocab_size: int) -> None:
    """A beam step cannot take more candidates than the vocabulary holds (before:
    "selected index k out of range" from the first beam search, after the model loaded)."""
    candidates = beam_candidates(num_beams, stop_count)
    if num_beams > 1 and candidates > vocab_size:
        factor = candidates // num_beams
        raise ValueError(
            f"--num-beams {num_beams}: a beam search step takes the {factor} x {num_beams} "
            f"best tokens, more than this model's vocabulary of {vocab_size}; at most "
            f"{vocab_size // factor} beams here"
        )


def beam_chunk(
    stream: Stream,
    pending: list[int],
    limits: ChunkLimits,
    num_beams: int,
    beam_stop: str = REFERENCE,
) -> Feeds[tuple[list[int], bool]]:
    """Return (chunk ids of the best hypothesis, whether a stop token ended it).

    The log-softmax and the choice of candidates are the driver's (`BeamStep`: one
    computation for the beam searches of every stream in a step); what is left here is
    plain Python over a few candidates."""
    check_beam_stop(beam_stop)
    lm, beam_rows = stream.lm, stream.rows[:num_beams]
    ask = partial(
        BeamStep,
        candidates=beam_candidates(num_beams, len(limits.stop_ids)),
        num_beams=num_beams,
        suppress_mask=limits.suppress_mask,
        stop_ids=tuple(limits.stop_ids),
    )
    # one row: every beam starts from it
    choices = (
        yield stream.feed(pending, beam=ask((0.0,), at_max_length=limits.max_tokens <= 1))
    ).beam
    assert choices is not None  # a feed with a BeamStep gets its choices
    prefix_length = lm.length(stream.home)

    running_tokens: list[list[int]] = [[]]
    finished: list[_Finished] = []
    can_improve = True
    for step in range(limits.max_tokens):
        scores = choices.scores
        # Candidates among the first `num_beams` that hit a stop become finished hypotheses.
        generated = step + 1  # new tokens of these hypotheses, the last one included
        if can_improve:
            for rank in (rank for rank in range(num_beams) if choices.hits[rank]):
                score = scores[rank] / generated**limits.length_penalty
                if _beats_worst(finished, num_beams, score):
                    row = choices.source_rows[rank]
                    tokens = running_tokens[row] + [choices.token_ids[rank]]
                    saved = lm.save(beam_rows[row], prefix_length)
                    finished.append(_Finished(score, tokens, saved))
                    finished = sorted(finished, key=lambda h: -h.score)[:num_beams]
        if all(choices.hits):
            break
        # The best `num_beams` candidates that did not stop keep running.
        running_scores = tuple(scores[rank] for rank in choices.keep)
        row_list = [choices.source_rows[rank] for rank in choices.keep]
        token_list = [choices.token_ids[rank] for rank in choices.keep]
        running_tokens = [running_tokens[row] + [token] for row, token in zip(row_list, token_list)]
        best_score = scores[0] if beam_stop == REFERENCE else running_scores[0]
        best_possible = best_score / generated**limits.length_penalty
        # transformers' early-stopping heuristic (`early_stopping=False`).
        can_improve = can_improve and _beats_worst(finished, num_beams, best_possible)
        if not can_improve:
            break
        if step == 0:
            lm.fork(stream.home, beam_rows[1:])  # every candidate came from the one row
        else:
            sources = [beam_rows[row] for row in row_list]
            lm.copy_rows(beam_rows, sources, [prefix_length] * num_beams)
        request = ask(running_scores, at_max_length=step + 2 >= limits.max_tokens)
        choices = (yield stream.feed_rows(beam_rows, token_list, request)).beam
        assert choices is not None

    best = max(finished, key=lambda hypothesis: hypothesis.score)
    lm.load(stream.home, best.saved)
    lm.release(beam_rows[1:])
    stopped = bool(best.tokens) and best.tokens[-1] in limits.stop_ids
    return (best.tokens[:-1] if stopped else best.tokens), stopped


def check_beam_stop(beam_stop: str) -> None:
    if beam_stop not in BEAM_STOP_RULES:
        raise ValueError(
            f"beam_stop must be one of {', '.join(BEAM_STOP_RULES)}, got {beam_stop!r}"
        )


def _beats_worst(finished: list[_Finished], num_beams: int, score: float) -> bool:
    """Whether `score` would enter the `num_beams` best finished hypotheses."""
    return len(finished) < num_beams or score > min(h.score for h in finished)


WHITESPACE_MARKS = ("Ġ", "▁", "Ċ", "ĉ", " ", "\n", "\t")  # byte-level BPE, sentencepiece, plain
MAX_WORD_TOKENS = 32


class WordBoundary:
    """Where one target word ends, for writers that emit a word at a time (wait-k).

    Spaced languages: a word is complete when the next token starts with whitespace (that
    token belongs to the next word and is not kept). Chinese and Japanese: a "word" is the
    smallest token group that decodes to whole characters.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, characters: CharacterCuts, unspaced: bool
    ) -> None:
        self.characters = characters
        self.unspaced = unspaced
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.space_initial = frozenset(
            token_id
            for token_id, token in enumerate(tokens)
            if token is not None and token.startswith(WHITESPACE_MARKS)
        )

    def starts_next_word(self, word: list[int], token_id: int) -> bool:
        return not self.unspaced and bool(word) and token_id in self.space_initial

    def completes_word(self, word: list[int]) -> bool:
        return self.unspaced and self.characters.ends_whole(word)


def word_cap(limits: ChunkLimits) -> int:
    """The most tokens `word_chunk` generates for one word."""
    return min(limits.max_tokens, MAX_WORD_TOKENS)


def word_chunk(
    stream: Stream,
    pending: list[int],
    limits: ChunkLimits,
    boundary: WordBoundary,
    first_mask: torch.Tensor | None = None,
) -> Feeds[tuple[list[int], bool]]:
    """Greedy-generate one word; return (its ids, whether a stop token came instead).

    A token that starts the next word is dropped unfed, so the home row holds only the word.
    `first_mask`, if given, is the first token's suppress mask instead of the limits' (a
    word that must have a token before a stop token may end it).
    """
    word: list[int] = []
    to_feed = pending
    for _ in range(word_cap(limits)):
        mask = limits.suppress_mask if word or first_mask is None else first_mask
        fed = yield stream.feed(to_feed, mask)
        assert fed.choices is not None  # a masked feed's
        token_id = fed.choices[0]
        if token_id in limits.stop_ids:
            return word, True
        if boundary.starts_next_word(word, token_id):
            return word, False
        word.append(token_id)
        if boundary.completes_word(word):
            return word, False
        to_feed = [token_id]
    return word, False
