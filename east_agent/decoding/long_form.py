"""Long-form input: one unbounded source (a talk, an ASR word stream) in a bounded cache.

Sentence-level EAST keeps every id of a sentence in the cache, so a talk of 20,000 words
would overflow any context. In long-form mode a stream is cut into *segments*:
- a segment ends at a source sentence end (a unit ending in . ! ? 。 ？ ！), after
  `segment_units` units without one (unpunctuated, ASR-like input), or when the cache could
  not hold another unit and a write within `cache_budget` tokens; the model then writes
  what it has not written yet (a FORCED write, as at the end of a sentence);
- the next segment starts from the prompt, whose keys stay cached, and one context pair:
  the last `context_words` source units and target words as
  `source<|end-of-read|>target<|end-of-write|>`, so the model keeps the discourse. The
  context's ids are computed again (counted in `tokens_reencoded`), in the forward of the
  next unit.
A stream's cache therefore never holds more than `cache_budget` tokens, and time and memory
per source word stay flat however long the talk is.
"""

from __future__ import annotations

from collections import deque

from east_agent.decoding.prompt import is_unspaced
from east_agent.decoding.streaming import Stream
from east_agent.decoding.units import join_source_units

SENTENCE_END = "。？！.!?"
ROOM_PER_UNIT = 16  # tokens kept free for the next unit, so a forced write always fits


class Segmenter:
    """The long-form bookkeeping of an EAST decoder's streams."""

    def __init__(self, decoder, cache_budget: int | None, context_words: int, segments: int):
        self.decoder = decoder
        self.budget = cache_budget or decoder.max_context // 2
        prompt = len(decoder.prompt_ids)
        if self.budget > decoder.max_context:
            raise ValueError(
                f"cache_budget {self.budget} is above the context of {decoder.max_context}"
            )
        if self.budget < prompt + 4 * ROOM_PER_UNIT:
            raise ValueError(
                f"cache_budget {self.budget} leaves too little room after the {prompt}-token "
                f"prompt (at least {prompt + 4 * ROOM_PER_UNIT})"
            )
        self.context_words, self.segment_units = context_words, segments

    def begin(self, stream: Stream) -> None:
        stream.segment_units = 0
        stream.segment_context = False
        stream.recent_units = deque(maxlen=max(self.context_words, 1))

    def note_unit(self, stream: Stream, unit: str) -> bool:
        """Record a unit about to be read; whether it opens a segment with no context."""
        first = stream.segment_units == 0 and not stream.segment_context
        stream.segment_units += 1
        stream.recent_units.append(unit)
        return first

    def ends_segment(self, stream: Stream, unit: str) -> bool:
        """Whether this unit (read, not fed) must close its segment with a forced write."""
        return (
            unit.rstrip()[-1:] in SENTENCE_END
            or stream.segment_units >= self.segment_units
            or self.room(stream) < ROOM_PER_UNIT
        )

    def room(self, stream: Stream) -> int:
        """Tokens left in the budget after the pending ids, a write and its two EAST tokens."""
        used = stream.lm.length(stream.home) + len(stream.pending()) + 2
        return self.budget - used - self.decoder.write_tokens(stream)

    def write_cap(self, stream: Stream) -> int:
        """The most tokens a chunk may have without the cache passing the budget."""
        used = stream.lm.length(stream.home) + len(stream.pending()) + 1
        return max(1, self.budget - used - 1)

    def start_next(self, stream: Stream) -> None:
        """Back to the prompt, then the context pair (fed with the next unit)."""
        source, target = self.context(stream)
        stream.rewind_to_prompt()
        stream.segment_units = 0
        stream.segment_context = bool(source and target)
        if not stream.segment_context:
            return
        prompt_length = len(stream.tokens.ids)
        stream.tokens.append_text(source)
        stream.tokens.append_added_token(self.decoder.token_ids.end_of_read)
        stream.tokens.append_text(target)
        stream.tokens.append_added_token(self.decoder.token_ids.end_of_write)
        stream.totals.tokens_reencoded += len(stream.tokens.ids) - prompt_length

    def context(self, stream: Stream) -> tuple[str, str]:
        """The last `context_words` source units and target words, as text."""
        if self.context_words == 0:
            return "", ""
        units = list(stream.recent_units)[-self.context_words :]
        source = join_source_units(units, self.decoder.src_lang)
        return source, self.target_tail(stream.chunks, self.decoder.config.tgt_lang)

    def target_tail(self, chunks: list[str], language: str) -> str:
        if is_unspaced(language):
            return "".join(chunks)[-self.context_words :].strip()
        words: list[str] = []
        for chunk in reversed(chunks):
            words[:0] = chunk.split()
            if len(words) >= self.context_words:
                break
        return " ".join(words[-self.context_words :])
