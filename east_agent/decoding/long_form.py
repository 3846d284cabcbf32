"""Long-form input: one unbounded source (a talk, an ASR word stream) in a bounded cache.

Sentence-level EAST keeps every id of a sentence in the cache, so a talk of 20,000 words
would overflow any context. In long-form mode a stream is cut into *segments*:
- a segment ends at a source sentence end (a unit ending in . ! ? 。 ？ ！, closing quotes
  and brackets aside), after `segment_units` units without one (unpunctuated, ASR-like
  input), or when the cache could not hold another unit and a short chunk within
  `cache_budget` tokens; the model then writes what it has not written yet (a FORCED
  write, as at the end of a sentence). Every chunk is capped at what the budget has left,
  so a model's long chunk near the end of the budget is cut short, and never a sentence
  that fits;
- the next segment starts from the prompt, whose keys stay cached, and one context pair:
  the last `context_words` source units and target words of the sentence that was cut, so
  the model goes on with it as with any chunk of a sentence (what an EAST checkpoint was
  trained on). After a sentence end the next segment starts afresh, as a gold sentence
  would, unless `context_across_sentences` carries the last words of the sentences before
  it too (the discourse: for checkpoints trained on documents; the demo model, trained on
  single sentences, loses 16–23 BLEU with it, see the README). The EAST stream holds the pair
  as `source<|end-of-read|>target<|end-of-write|>`;
  the offline-prompt wait-k as the start of its source prefix and of its target prefix
  (the decoder's `anchor_context`). The context's ids are computed again (counted in
  `tokens_reencoded`), in the forward of the next unit.
A stream's cache therefore never holds more than `cache_budget` tokens, and time and memory
per source word stay flat however long the talk is. Wait-k decoders start their schedule
again in each segment (k units, then a word per unit), as they would on gold sentences.

Budget arithmetic (`Segmenter.free`): an ordinary chunk is capped so that `RESERVE`
tokens stay free for the next unit (taken to need at most `UNIT_ROOM` tokens), its markers
and a forced chunk of at least `CHUNK_ROOM`; a unit that would leave an ordinary chunk less
than `CHUNK_ROOM` closes the segment. Chunks cut short by a cap are counted
(`chunks_capped`). A unit of more than `UNIT_ROOM` tokens can pass the budget by its excess
(the model's context stays the hard limit). A decoder that segments gives one answer,
`anchor_context(stream, source, target)`: it puts a new segment's context after the prompt
and returns its token count.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import TYPE_CHECKING

from east_agent.decoding.prompt import is_unspaced, language_name, unit_separator
from east_agent.decoding.streaming import Counters, Stream
from east_agent.decoding.units import join_source_units

if TYPE_CHECKING:
    import argparse

    from transformers import PreTrainedTokenizerBase

    from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
    from east_agent.decoding.waitk import OfflineWaitkDecoder, WaitkConfig

# Latin, CJK (full- and halfwidth), Devanagari dandas (Hindi), the Arabic question mark and
# Urdu full stop (Arabic, Persian), the Greek question mark (U+037E), `‼ ⁇ ⁈ ⁉`, and the
# ellipsis as one character, `…` (U+2026; Chinese `……`) and `⋯`, as `...` ends one (before:
# `है।`, `هل؟`, `done．`, `wartete…` ended no sentence, and such talks were cut mid-sentence)
SENTENCE_END = "。？！.!?．｡।॥؟۔\u037e‼⁇⁈⁉…⋯"
# may follow a sentence's end: `weekend."`, `。」`, German and Czech `„Ende.“`, `‚so.‘`,
# `»Ende.«`, `‹so.›` (before: `“` and `‘` were not taken as closing, such a sentence ran on)
CLOSING_MARKS = "\"'”’“‘»«›‹」』）)]】〉》｣］〕｝}"
UNIT_ROOM = 16  # the most tokens one source unit is taken to need
CHUNK_ROOM = 16  # the fewest tokens a chunk may be given before its segment is closed
# kept free after every ordinary write: the next unit, its two markers and a forced chunk
RESERVE = UNIT_ROOM + 2 + CHUNK_ROOM
SEGMENT_ROOM = UNIT_ROOM + 2 + CHUNK_ROOM + RESERVE  # a new segment's need after its context


def sentence_ends(language: str) -> str:
    """The marks that end a sentence of `language`: `SENTENCE_END`, and in Greek the
    semicolon, its question mark as typed (U+037E is `;` once NFC-normalized)."""
    return SENTENCE_END + (";" if language_name(language) == "Greek" else "")


def ends_sentence(unit: str, ends: str = SENTENCE_END) -> bool:
    """Whether the unit ends a sentence: its last character, closing quotes and brackets
    aside, is one of `ends` (a unit of closing marks alone, `）` or `"`, ends none)."""
    text = unit.rstrip().rstrip(CLOSING_MARKS)
    return bool(text) and text[-1] in ends


LONG_FORM_FIELDS = (
    "long_form", "cache_budget", "context_words", "segment_units", "context_across_sentences",
)  # fmt: skip


def long_form_settings(source: argparse.Namespace | DecoderConfig | WaitkConfig) -> dict:
    """The long-form settings of parsed flags or of a decoder config, by field name."""
    return {name: getattr(source, name) for name in LONG_FORM_FIELDS}


DEFAULT_CONTEXT_WORDS = 20
DEFAULT_SEGMENT_UNITS = 60


def check_long_form(config: DecoderConfig | WaitkConfig) -> None:
    """The long-form settings a decoder config (a dataclass) shares (`long_form`,
    `cache_budget`, `context_words`, `segment_units`, `context_across_sentences`): set
    without `long_form` (off their defaults), they would be ignored, and are refused."""
    if not config.long_form:
        defaults = {field.name: field.default for field in dataclasses.fields(config)}
        given = [name for name in LONG_FORM_FIELDS[1:] if getattr(config, name) != defaults[name]]
        if given:
            flags = ", ".join(f"{name} (--{name.replace('_', '-')})" for name in given)
            raise ValueError(f"{flags}: settings of long-form input, given without --long-form")
    if config.context_words < 0:
        raise ValueError(f"context_words must be 0 or more, got {config.context_words}")
    if config.context_across_sentences and config.context_words == 0:
        raise ValueError(  # before: accepted, nothing carried
            "context_across_sentences (--context-across-sentences) carries the last "
            "context_words (--context-words) words past sentence ends, and they are 0"
        )
    if config.segment_units < 1:
        raise ValueError(f"segment_units must be at least 1, got {config.segment_units}")
    if config.cache_budget is not None and config.cache_budget < 1:
        raise ValueError(f"cache_budget must be at least 1, got {config.cache_budget}")


def segmenter_of(
    decoder: EastStreamDecoder | OfflineWaitkDecoder,
    config: DecoderConfig | WaitkConfig,
    fixed_tokens: int,
) -> Segmenter | None:
    """The decoder's long-form bookkeeping, or None when `config.long_form` is off;
    `fixed_tokens`: what every segment holds before its context (the prompt, and for the
    offline prompt the end of the user turn and the assistant header)."""
    if not config.long_form:
        return None
    return Segmenter(
        decoder,
        config.cache_budget,
        config.context_words,
        config.segment_units,
        config.context_across_sentences,
        fixed_tokens,
        sentence_ends(config.src_lang),
    )


def opens_source(segments: Segmenter | None, stream: Stream, unit: str) -> bool:
    """Note a unit about to be read; whether it opens its source text (no separator
    before it): the sentence's first unit, or a segment's first when it has no context."""
    if segments is None:
        return stream.units_read == 0
    return segments.note_unit(stream, unit)


def capped_tokens(segments: Segmenter | None, stream: Stream, wanted: int, forced: bool) -> int:
    """The most tokens the next chunk or word may have: `wanted`, or fewer in long form
    where the cache budget says so."""
    return wanted if segments is None else segments.capped(stream, wanted, forced)


def note_capped(
    segments: Segmenter | None, stream: Stream, length: int, max_tokens: int, wanted: int
) -> None:
    """Count a chunk or word of `length` tokens that the budget's cap (`max_tokens`, below
    the `wanted` it would have had) cut short, in `chunks_capped`."""
    if segments is not None:
        segments.note_chunk(stream, length, max_tokens, wanted)


def capped_note(counters: Counters, talks: str) -> str | None:
    """What a user is told of the chunks the cache budget cut short in `talks` (None: none
    was; only long form has a budget): their writes are shorter than the model asked for."""
    if not counters.chunks_capped:
        return None
    chunks = "1 chunk" if counters.chunks_capped == 1 else f"{counters.chunks_capped} chunks"
    return (
        f"long form: the cache budget (--cache-budget) cut {chunks} of {talks} short "
        "(a larger budget, if the model's context allows, cuts fewer)"
    )


def units_in_segment(segments: Segmenter | None, stream: Stream) -> int:
    """Units read in the current segment (the whole sentence without long form): what a
    wait-k schedule counts."""
    return stream.units_read if segments is None else stream.segment_units


def cache_budget_of(cache_budget: int | None, max_context: int) -> int:
    """The tokens a long-form stream's cache may hold: `cache_budget`, else half the context."""
    return cache_budget or max_context // 2


def checked_budget(cache_budget: int | None, max_context: int, fixed_tokens: int) -> int:
    """The cache budget (`cache_budget_of`), refused where it is above the context or
    leaves a segment too little room after `fixed_tokens` (the prompt). Agents check it
    before a run folder changes (`prompt_tokens`), decoders again."""
    budget = cache_budget_of(cache_budget, max_context)
    named = f"cache_budget (--cache-budget) {budget}" + (
        "" if cache_budget else f", half the context of {max_context} by default,"
    )
    if budget > max_context:
        raise ValueError(f"{named} is above the context of {max_context}")
    if budget < fixed_tokens + SEGMENT_ROOM:
        raise ValueError(
            f"{named} leaves too little room after the {fixed_tokens}-token prompt (at "
            f"least {fixed_tokens + SEGMENT_ROOM}; --max-context {max_context})"
        )
    return budget


def prompt_tokens(tokenizer: PreTrainedTokenizerBase, *texts: str) -> int:
    """How many ids `texts` (a decoder's fixed prompt pieces) tokenize to, as a stream
    holds them (no special tokens added)."""
    return sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts)


class Segmenter:
    """The long-form bookkeeping of an EAST decoder's streams."""

    def __init__(
        self,
        decoder: EastStreamDecoder | OfflineWaitkDecoder,
        cache_budget: int | None,
        context_words: int,
        segments: int,
        across_sentences: bool,
        fixed_tokens: int,
        ends: str,
    ) -> None:
        self.decoder = decoder
        self.budget = checked_budget(cache_budget, decoder.max_context, fixed_tokens)
        self.fixed_tokens = fixed_tokens
        self.context_words, self.segment_units = context_words, segments
        self.across_sentences = across_sentences
        self.sentence_ends = ends  # the source language's

    def begin(self, stream: Stream) -> None:
        stream.segment_units = 0
        stream.segment_context = False
        stream.recent_units = deque(maxlen=max(self.context_words, 1))
        stream.sentence_first_chunk = 0  # where the chunks of the current sentence start

    def note_unit(self, stream: Stream, unit: str) -> bool:
        """Record a unit about to be read; whether it opens a segment with no context."""
        first = stream.segment_units == 0 and not stream.segment_context
        stream.segment_units += 1
        stream.recent_units.append(unit)
        return first

    def ends_segment(self, stream: Stream, unit: str) -> bool:
        """Whether this unit (read, not fed) must close its segment with a forced write:
        a sentence end, `segment_units` units, or too little room for an ordinary chunk."""
        return (
            ends_sentence(unit, self.sentence_ends)
            or stream.segment_units >= self.segment_units
            or self.free(stream) - RESERVE < CHUNK_ROOM
        )

    def free(self, stream: Stream) -> int:
        """Budget left for a chunk after the ids so far and two markers (one more than a
        chunk needs once its end-of-read is among the ids: a cap one token safe)."""
        return self.budget - len(stream.tokens.ids) - 2

    def write_cap(self, stream: Stream, forced: bool) -> int:
        """The most tokens the next chunk may have: an ordinary one leaves `RESERVE` free
        (so the next unit and a forced chunk still fit), a forced one may fill the budget."""
        return max(1, self.free(stream) - (0 if forced else RESERVE))

    def capped(self, stream: Stream, wanted: int, forced: bool) -> int:
        """`wanted` tokens, or fewer where the budget says so (counted in `chunks_capped`
        when the chunk then reaches the cap: see `note_chunk`)."""
        return min(wanted, self.write_cap(stream, forced))

    def note_chunk(self, stream: Stream, length: int, max_tokens: int, wanted: int) -> None:
        if max_tokens < wanted and length >= max_tokens:
            stream.totals.chunks_capped += 1

    def start_next(self, stream: Stream) -> None:
        """Back to the prompt, then the context pair (fed with the next unit); a context
        that would leave a segment too little room is dropped."""
        if not self.across_sentences and ends_sentence(stream.recent_units[-1], self.sentence_ends):
            stream.recent_units.clear()
            stream.sentence_first_chunk = len(stream.chunks)
        source, target = self.context(stream)
        if not (source and target):
            source, target = "", ""
        stream.rewind_to_prompt()
        stream.segment_units = 0
        carried = self.decoder.anchor_context(stream, source, target)
        if carried and self.fixed_tokens + carried + SEGMENT_ROOM > self.budget:
            stream.rewind_to_prompt()
            carried = self.decoder.anchor_context(stream, "", "")
        stream.segment_context = carried > 0
        stream.totals.tokens_reencoded += carried
        if any(stream.chunks):  # the model begins the segment as a sentence: no space before
            stream.joint = unit_separator(self.decoder.config.tgt_lang)

    def context(self, stream: Stream) -> tuple[str, str]:
        """The last `context_words` source units and target words, as text (of the current
        sentence only, unless across sentences)."""
        if self.context_words == 0 or not stream.recent_units:
            return "", ""
        units = list(stream.recent_units)[-self.context_words :]
        source = join_source_units(units, self.decoder.src_lang)
        chunks = stream.chunks[stream.sentence_first_chunk :]
        return source, self.target_tail(chunks, self.decoder.config.tgt_lang)

    def target_tail(self, chunks: list[str], language: str) -> str:
        if is_unspaced(language):
            return "".join(chunks)[-self.context_words :].strip()
        words: list[str] = []
        for chunk in reversed(chunks):
            words[:0] = chunk.split()
            if len(words) >= self.context_words:
                break
        return " ".join(words[-self.context_words :])
