"""Wait-k baselines: read k units, then write one target word per unit read; once the
source has ended, write to the end. Two decoders, both without SimulEval:

- `OfflineWaitkDecoder`, the classic LLM baseline, for any chat LLM: the user turn is the
  offline prompt `Translate the following sentence from {src} into {tgt}:` + newline + the
  source prefix read so far; the assistant turn holds the target prefix. A new unit lands
  inside the user turn, so everything after the old source prefix (end of the user turn,
  assistant header, target prefix) is fed again: `tokens_reencoded` counts exactly the
  work EAST's growing sequence never does.
- `EastWaitkDecoder`: an EAST checkpoint on its own interleaved stream, but with reads and
  writes on the fixed wait-k schedule instead of its own end-of-read decisions
  (end-of-read / end-of-write forced, one word per write). Nothing is re-encoded.

A word is generated up to the next whitespace boundary (for Chinese and Japanese targets,
up to the next whole character).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from east_agent.decoding.chunk_search import (
    MAX_WORD_TOKENS,
    ChunkLimits,
    WordBoundary,
    greedy_chunk,
    word_cap,
    word_chunk,
)
from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
from east_agent.decoding.long_form import (
    DEFAULT_CONTEXT_WORDS,
    DEFAULT_SEGMENT_UNITS,
    Segmenter,
    capped_tokens,
    check_long_form,
    long_form_settings,
    note_capped,
    opens_source,
    segmenter_of,
    units_in_segment,
)
from east_agent.decoding.prompt import (
    END_OF_READ,
    END_OF_WRITE,
    OFFLINE_INSTRUCTION,
    UNSPACED_LANGUAGES,
    check_latency,
    render_user_turn,
)
from east_agent.decoding.streaming import (
    FORCED,
    READ,
    WRITE,
    Feeds,
    Step,
    Stream,
    StreamingDecoder,
    check_config_type,
    check_shared_settings,
    whole_number,
)
from east_agent.decoding.units import unit_text
from east_agent.lm.checkpoint import end_of_turn_ids, single_token_id

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from east_agent.decoding.token_stream import Mark

SOURCE_SLOT = "\u27e6SOURCE\u27e7"  # stands for the source prefix while the prompt renders


def check_waitk(waitk: int) -> int:
    waitk = whole_number(waitk, "waitk")
    if waitk < 1:
        raise ValueError(f"--waitk must be at least 1, got {waitk}")
    return waitk


PROMPTS = ("offline", "east")


@dataclass(frozen=True)
class WaitkConfig:
    src_lang: str
    tgt_lang: str
    waitk: int
    max_new_tokens: int = 128  # cap on the final write, after the source ended
    max_context: int | None = None
    kv_cache: str = "auto"
    prompt: str = "offline"  # offline: any chat LLM; east: an EAST checkpoint's own stream
    latency: str = "low"  # the EAST prompt's level (prompt "east")
    # long-form input (`east_agent.decoding.long_form`), as DecoderConfig's
    long_form: bool = False
    cache_budget: int | None = None
    context_words: int = DEFAULT_CONTEXT_WORDS
    segment_units: int = DEFAULT_SEGMENT_UNITS
    context_across_sentences: bool = False

    def __post_init__(self) -> None:
        check_shared_settings(self)
        check_waitk(self.waitk)
        check_long_form(self)
        if self.prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {', '.join(PROMPTS)}, got {self.prompt!r}")
        check_latency(self.latency)
        if self.prompt == "offline" and self.latency != "low":  # before: recorded, unused
            raise ValueError(
                f"latency {self.latency!r} (--latency): the offline prompt asks for no "
                "latency level; the EAST prompt (--prompt east) does"
            )

    def east_config(self) -> DecoderConfig:
        """The settings of the EAST stream that `EastWaitkDecoder` drives."""
        return DecoderConfig(
            self.src_lang,
            self.tgt_lang,
            self.latency,
            max_new_tokens=self.max_new_tokens,
            max_context=self.max_context,
            kv_cache=self.kv_cache,
            **long_form_settings(self),
        )


def split_prompt(
    tokenizer: PreTrainedTokenizerBase, src_lang: str, tgt_lang: str
) -> tuple[str, str]:
    """The offline prompt around its source: (text before it, text after it)."""
    header = OFFLINE_INSTRUCTION.format(src_lang=src_lang, tgt_lang=tgt_lang)
    rendered = render_user_turn(tokenizer, f"{header}\n{SOURCE_SLOT}")
    if rendered.count(SOURCE_SLOT) != 1:
        raise ValueError("the chat template does not render the user's text verbatim")
    head, tail = rendered.split(SOURCE_SLOT)
    return head, tail


class OfflineWaitkStream(Stream):
    """A stream of the offline-prompt wait-k: where its source prefix ends, its target."""

    def clear(self, script: dict[int, int] | None = None) -> None:
        super().clear(script)
        # set by the decoder once the ids are back at the prompt
        self.source_end: Mark | None = None
        self.target_ids: list[int] = []


class WritesTheRestAtTheEnd:
    """Wait-k writes the rest of the target at the end of the source (of the segment, in
    long form), even after a WRITE at its last unit."""

    segments: Segmenter | None  # the decoder's

    def _needs_final_write(self, stream: Stream) -> bool:
        return units_in_segment(self.segments, stream) > 0

    @staticmethod
    def last_unit_word(stream: Stream) -> list[int]:
        """The ids of the word written at the last unit read (none after a READ): at the
        end of the source (`finish`), the final write's cap counts them, as the flag's
        forced write holds them (before: the word and a whole cap more)."""
        written_there = stream.delays and stream.delays[-1] == stream.units_read
        return stream.chunk_ids[-1] if written_there else []


class OfflineWaitkDecoder(WritesTheRestAtTheEnd, StreamingDecoder):
    stream_class = OfflineWaitkStream

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: WaitkConfig,
        streams: int = 1,
    ) -> None:
        check_config_type(config, WaitkConfig, type(self).__name__)
        super().__init__(
            model, tokenizer, config.src_lang, config.max_context, config.kv_cache, 1, streams
        )
        self.config = config
        self.head, self.tail = self.fixed_prompt(tokenizer, config)
        self.start_streams(model, self.head)
        self.end_of_turn = end_of_turn_ids(tokenizer, model.generation_config.eos_token_id)
        self.suppress = self.mask(offline_suppressed_ids(tokenizer, self.end_of_turn))
        self.boundary = WordBoundary(
            tokenizer, self.characters, config.tgt_lang in UNSPACED_LANGUAGES
        )
        tail_length = len(tokenizer(self.tail, add_special_tokens=False)["input_ids"])
        self.segments = segmenter_of(self, config, len(self.prompt_ids) + tail_length)
        self.reset()

    @staticmethod
    def fixed_prompt(tokenizer: PreTrainedTokenizerBase, config: WaitkConfig) -> tuple[str, str]:
        """What every sentence (every long-form segment) holds besides its source and
        target: the prompt before the source, and after it up to the target."""
        return split_prompt(tokenizer, config.src_lang, config.tgt_lang)

    def _begin(self, stream: Stream) -> None:
        """The prompt before the source stays cached."""
        assert isinstance(stream, OfflineWaitkStream)  # the decoder's stream_class
        stream.source_end = stream.tokens.mark()
        stream.target_ids = []
        if self.segments is not None:
            self.segments.begin(stream)

    def anchor_context(self, stream: Stream, source: str, target: str) -> int:
        """Long form: the context opens the new segment's source prefix and target prefix
        (fed again with every unit, as the offline prompt's target always is)."""
        assert isinstance(stream, OfflineWaitkStream)  # the decoder's stream_class
        if source:
            stream.tokens.append_text(source)
        stream.source_end = stream.tokens.mark()
        stream.target_ids = self.tokenizer(target, add_special_tokens=False)["input_ids"]
        return len(stream.tokens.ids) - len(self.prompt_ids) + len(stream.target_ids)

    def _limits(self, max_tokens: int) -> ChunkLimits:
        return ChunkLimits(max_tokens, self.end_of_turn, self.suppress)

    def _push(self, stream: Stream, unit: str, is_last: bool) -> Feeds[Step]:
        assert isinstance(stream, OfflineWaitkStream)  # the decoder's stream_class
        assert stream.source_end is not None  # `_begin` set it
        # The unit goes in after the source prefix: what followed it (end of the user turn,
        # assistant header, target prefix) leaves the cache and is fed again.
        stream.rewind_cache(stream.tokens.restore(stream.source_end))
        first = opens_source(self.segments, stream, unit)
        stream.start_unit(unit_text(unit, self.src_lang, first=first))
        stream.source_end = stream.tokens.mark()
        stream.tokens.append_text(self.tail)
        stream.tokens.append_generated(stream.target_ids)
        ends_segment = self.segments is not None and self.segments.ends_segment(stream, unit)
        if is_last or ends_segment:
            stream.decisions.append(FORCED)
            step = yield from self._forced_write(stream, finished=is_last)
            if not is_last and self.segments is not None:  # not the last: a segment ended
                self.segments.start_next(stream)
            return step
        if units_in_segment(self.segments, stream) < self.config.waitk:
            stream.decisions.append(READ)
            return Step(READ)
        stream.decisions.append(WRITE)
        max_tokens = capped_tokens(self.segments, stream, MAX_WORD_TOKENS, False)
        word, _ = yield from word_chunk(
            stream, stream.pending(), self._limits(max_tokens), self.boundary
        )
        note_capped(self.segments, stream, len(word), max_tokens, MAX_WORD_TOKENS)
        return self._step(stream, WRITE, word)

    def _step(
        self,
        stream: OfflineWaitkStream,
        decision: str,
        new_ids: list[int],
        finished: bool = False,
        capped: bool = False,
    ) -> Step:
        """Extend the target prefix; the step's text is what it adds to the decoded target.
        A word cut inside a character (at its token cap) decodes to a trailing U+FFFD: that
        character is written by the step that completes it, or by the forced write, or by
        none where that write's cap (`capped`) cut it again."""
        before = self._written(stream.target_ids)
        stream.target_ids += new_ids
        stream.tokens.append_generated(new_ids)
        stream.crop_to_ids()
        if decision != FORCED or capped:
            after = self.characters.written(stream.target_ids)
        else:
            after = cast(str, self.tokenizer.decode(stream.target_ids, skip_special_tokens=True))
        text = after[len(os.path.commonprefix([before, after])) :]
        if decision == FORCED:  # the end of a sentence (or of a long-form segment)
            text = text.rstrip()
        if new_ids or decision == FORCED:  # a forced write is recorded, empty or not
            text = stream.record_chunk(new_ids, text)
        return Step(decision, text if new_ids else None, new_ids, finished=finished)

    def _written(self, target_ids: list[int]) -> str:
        """The text of the target prefix the steps so far have written."""
        return self.characters.written(target_ids)

    def _final_write(self, stream: Stream) -> Feeds[Step]:
        assert isinstance(stream, OfflineWaitkStream)  # the decoder's stream_class
        if not stream.pending():  # a word was the last thing fed: its last token again
            stream.rewind_cache(len(stream.tokens.ids) - 1)
        word = self.last_unit_word(stream)
        return (yield from self._forced_write(stream, finished=True, written=len(word)))

    def _forced_write(
        self, stream: OfflineWaitkStream, finished: bool, written: int = 0
    ) -> Feeds[Step]:
        """The rest of the target (of the segment's, in long form), to the end of the turn
        or the cap (less the `written` tokens of a word at the last unit); a cap that cuts a
        character ends before it (else: U+FFFD at the end)."""
        wanted = max(0, self.config.max_new_tokens - written)
        max_tokens = capped_tokens(self.segments, stream, wanted, True)
        limits = self._limits(max_tokens)
        new_ids, stopped = yield from greedy_chunk(stream, stream.pending(), limits)
        note_capped(self.segments, stream, len(new_ids), max_tokens, wanted)
        if not stopped:  # the cut character may have begun in an earlier word: not written
            new_ids = self.characters.whole(stream, new_ids, stream.target_ids)
        return self._step(stream, FORCED, new_ids, finished=finished, capped=not stopped)


class EastWaitkStream(Stream):
    """A stream of EAST's wait-k: where the word written at its newest unit ends."""

    def clear(self, script: dict[int, int] | None = None) -> None:
        super().clear(script)
        self.word_end: Mark | None = None  # a TokenStream mark before that word's end-of-write
        self.word_cap = 0  # the cap the flag's forced write would have had at that unit


class EastWaitkDecoder(WritesTheRestAtTheEnd, EastStreamDecoder):
    """An EAST checkpoint driven by the wait-k schedule (test-time wait-k)."""

    stream_class = EastWaitkStream

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: DecoderConfig,
        waitk: int,
        streams: int = 1,
    ) -> None:
        self.waitk = check_waitk(waitk)
        super().__init__(model, tokenizer, config, streams)
        self.boundary = WordBoundary(
            tokenizer, self.characters, config.tgt_lang in UNSPACED_LANGUAGES
        )
        ids = self.token_ids
        # Inside the schedule the model must write a word: its first token no marker, no
        # end of turn; after that its end-of-write (or end of turn) ends the word (before:
        # suppressed, so a model done with its sentence wrote up to 32 tokens of `.D.D.“.`).
        self.word_mask = self.mask(set(ids.read_suppressed) | set(ids.write_suppressed))

    def _push(self, stream: Stream, unit: str, is_last: bool) -> Feeds[Step]:
        assert isinstance(stream, EastWaitkStream)  # the decoder's stream_class
        stream.word_end = None
        first = opens_source(self.segments, stream, unit)
        stream.start_unit(unit_text(unit, self.src_lang, first=first))
        ends_segment = self.segments is not None and self.segments.ends_segment(stream, unit)
        if is_last or ends_segment:
            decision = FORCED
        elif units_in_segment(self.segments, stream) >= self.waitk:
            decision = WRITE
        else:
            stream.decisions.append(READ)  # no forward: the unit is fed with the next write
            return Step(READ)
        stream.decisions.append(decision)
        stream.tokens.append_added_token(self.token_ids.end_of_read)
        if decision == FORCED:  # after the source or a segment: to the model's end-of-write
            chunk_ids, text = yield from self._write(stream)
            if not is_last and self.segments is not None:  # not the last: a segment ended
                self.segments.start_next(stream)
        else:
            max_tokens = capped_tokens(self.segments, stream, MAX_WORD_TOKENS, False)
            limits = self._chunk_limits(max_tokens, self.token_ids.write_stops, self.write_mask)
            word, _ = yield from word_chunk(
                stream, stream.pending(), limits, self.boundary, first_mask=self.word_mask
            )
            note_capped(self.segments, stream, len(word), max_tokens, MAX_WORD_TOKENS)
            if len(word) == word_cap(limits):  # a word its cap may have cut
                word = self.characters.whole(stream, word)
            stream.tokens.append_generated(word)
            stream.crop_to_ids()
            stream.word_end = stream.tokens.mark()
            stream.word_cap = self.write_tokens(stream)  # before the chunk's end resets it
            chunk_ids, text = self._end_chunk(stream, word)
        return Step(decision, text, chunk_ids, finished=is_last)

    def _final_write(self, stream: Stream) -> Feeds[Step]:
        """The end of the source after a word written at the last unit: the word's chunk
        goes on to the model's end-of-write (that end-of-write leaves the cache), the rest
        one more chunk: the ids, and so the target, of the flag's forced write (unless a
        chunk's token cap cuts either). Otherwise: end-of-read, then the rest."""
        assert isinstance(stream, EastWaitkStream)  # the decoder's stream_class
        if stream.word_end is None:
            return (yield from super()._final_write(stream))
        stream.rewind_cache(stream.tokens.restore(stream.word_end))
        if not stream.pending():  # the word's last token was fed: fed again for its logits
            stream.rewind_cache(len(stream.tokens.ids) - 1)
        # what the flag's cap leaves after the word (before: 50 more, where the flag's write
        # took 52 in all)
        rest = max(0, stream.word_cap - len(self.last_unit_word(stream)))
        chunk_ids, text = yield from self._write(stream, rest)
        return Step(FORCED, text, chunk_ids, finished=True)


def offline_suppressed_ids(tokenizer: PreTrainedTokenizerBase, stops: Iterable[int]) -> list[int]:
    """What the offline prompt's target never holds: the BOS token (0 is an id, the demo
    model's: before, taken for none) and an EAST checkpoint's markers (before: written,
    dropped from the text, and the source-like words the model wrote after them kept:
    `There is der Bräutigam eines Mannes, derThe groom of a man ...`); never one of the
    `stops` that end the turn (a BOS that is also the EOS: the target could not end)."""
    markers = [single_token_id(tokenizer, token) for token in (END_OF_READ, END_OF_WRITE)]
    ending = set(stops)
    candidates = (tokenizer.bos_token_id, *markers)
    return [token for token in candidates if token is not None and token not in ending]
