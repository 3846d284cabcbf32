"""The EAST streaming decoder: the model decides after every source unit to read or write.

Per sentence (the paper's algorithm, greedy unless `num_beams` > 1; a beam search stops
by transformers 4.44.2's rule unless `beam_stop="transformers"`, see
`east_agent.decoding.chunk_search`):
1. the prompt (one user turn, chat template, generation prompt) is in the cache;
2. READ: append the next source unit, run one forward, take the argmax of the next-token
   logits with end-of-turn ids, end-of-write and BOS suppressed; end-of-read means WRITE;
3. the last unit (and, in document-level mode, a unit that ends a sentence after 20 or
   more units since the last write) always leads to WRITE: its tokens and end-of-read go
   through the model in one forward, since the decision could not change anything;
4. WRITE: generate until end-of-write, an end-of-turn id (treated as end-of-write) or
   `min(max_new_tokens, 2 * (units since the last write + 25))` tokens, then READ again;
   a chunk that cap cuts inside a character ends before that character (the paper's
   loop writes U+FFFD there: the character's other bytes never follow its end-of-write).

The prompt stays in the cache from one sentence to the next; nothing is encoded twice
(see `east_agent.decoding.streaming`). With `streams` > 1 the decoder holds that many streams for
`east_agent.decoding.batching`; the policy is the same program either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from east_agent.decoding.chunk_search import (
    REFERENCE,
    ChunkLimits,
    beam_chunk,
    check_beam_stop,
    check_beams_fit,
    greedy_chunk,
)
from east_agent.decoding.long_form import (
    DEFAULT_CONTEXT_WORDS,
    DEFAULT_SEGMENT_UNITS,
    capped_tokens,
    check_long_form,
    ends_sentence,
    note_capped,
    opens_source,
    segmenter_of,
    sentence_ends,
)
from east_agent.decoding.prompt import (
    check_latency,
    render_user_turn,
    simt_instruction,
)
from east_agent.decoding.streaming import (
    FORCED,
    READ,
    WRITE,
    ContextOverflowError,
    Counters,
    Feeds,
    Step,
    Stream,
    StreamingDecoder,
    Translation,
    check_config_type,
    check_shared_settings,
)
from east_agent.decoding.units import unit_text
from east_agent.lm.checkpoint import east_token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "FORCED",
    "READ",
    "WRITE",
    "ContextOverflowError",
    "Counters",
    "DecoderConfig",
    "EastStreamDecoder",
    "Step",
    "Translation",
]

DOCUMENT_MIN_UNITS = 20


@dataclass(frozen=True)
class DecoderConfig:
    src_lang: str
    tgt_lang: str
    latency: str = "low"
    num_beams: int = 1
    max_new_tokens: int = 128
    document_level: bool = False
    max_context: int | None = None  # default: the model's max_position_embeddings
    kv_cache: str = "auto"  # auto | dynamic | static | compiled (east_agent.lm.build_lm)
    beam_stop: str = REFERENCE  # reference (transformers 4.44.2) | transformers (5.x)
    # long-form input (`east_agent.decoding.long_form`): one unbounded source per instance
    long_form: bool = False
    cache_budget: int | None = None  # tokens a stream's cache may hold; default: half the context
    context_words: int = DEFAULT_CONTEXT_WORDS  # words carried into each new segment
    segment_units: int = DEFAULT_SEGMENT_UNITS  # units without a sentence end before a write
    context_across_sentences: bool = False  # carry context past sentence ends too

    def __post_init__(self) -> None:
        check_shared_settings(self)
        check_latency(self.latency)
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be at least 1, got {self.num_beams}")
        check_beam_stop(self.beam_stop)
        if self.long_form and self.document_level:
            raise ValueError(
                "long_form and document_level (--long-form, --document-level) exclude each other"
            )
        check_long_form(self)


class EastStreamDecoder(StreamingDecoder):
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: DecoderConfig,
        streams: int = 1,
    ) -> None:
        check_config_type(config, DecoderConfig, type(self).__name__)
        token_ids = east_token_ids(tokenizer, model.generation_config.eos_token_id)
        # before the rows are made (num_beams 10,000: killed for memory, no message)
        vocabulary = model.get_output_embeddings().weight.shape[0]
        check_beams_fit(config.num_beams, len(token_ids.write_stops), vocabulary)
        super().__init__(
            model,
            tokenizer,
            config.src_lang,
            config.max_context,
            config.kv_cache,
            beams=config.num_beams,
            streams=streams,
        )
        self.config = config
        self.token_ids = token_ids
        self.length_penalty = float(getattr(model.generation_config, "length_penalty", 1.0) or 1.0)
        (self.prompt,) = self.fixed_prompt(tokenizer, config)
        self.start_streams(model, self.prompt)
        self.read_mask = self.mask(self.token_ids.read_suppressed)
        self.write_mask = self.mask(self.token_ids.write_suppressed)
        self.segments = segmenter_of(self, config, len(self.prompt_ids))
        self.sentence_ends = sentence_ends(config.src_lang)
        self.reset()

    @staticmethod
    def fixed_prompt(tokenizer: PreTrainedTokenizerBase, config: DecoderConfig) -> tuple[str]:
        """What every sentence (every long-form segment) begins with: the user turn."""
        instruction = simt_instruction(config.src_lang, config.tgt_lang, config.latency)
        return (render_user_turn(tokenizer, instruction),)

    def _begin(self, stream: Stream) -> None:
        if self.segments is not None:
            self.segments.begin(stream)

    def _push(self, stream: Stream, unit: str, is_last: bool) -> Feeds[Step]:
        """Read one source unit; write a chunk if the model (or the end of source) says so."""
        first = opens_source(self.segments, stream, unit)
        stream.start_unit(unit_text(unit, self.src_lang, first=first))
        decision = yield from self._decide(stream, unit, is_last)
        stream.decisions.append(decision)
        if decision == READ:
            return Step(READ)
        stream.tokens.append_added_token(self.token_ids.end_of_read)
        chunk_ids, text = yield from self._write(stream)
        if self.segments is not None and decision == FORCED and not is_last:
            self.segments.start_next(stream)
        return Step(decision, text, chunk_ids, finished=is_last)

    def _final_write(self, stream: Stream) -> Feeds[Step]:
        stream.tokens.append_added_token(self.token_ids.end_of_read)
        chunk_ids, text = yield from self._write(stream)
        return Step(FORCED, text, chunk_ids, finished=True)

    def _decide(self, stream: Stream, unit: str, is_last: bool) -> Feeds[str]:
        """READ, WRITE (the model chose end-of-read, or the script says so) or FORCED."""
        if is_last or self._ends_document_sentence(stream, unit):
            return FORCED
        if self.segments is not None and self.segments.ends_segment(stream, unit):
            return FORCED
        fed = yield stream.feed(stream.pending(), self.read_mask)
        if stream.script is not None:
            return WRITE if stream.units_read in stream.script else READ
        assert fed.choices is not None  # a masked feed's
        return WRITE if fed.choices[0] == self.token_ids.end_of_read else READ

    def _ends_document_sentence(self, stream: Stream, unit: str) -> bool:
        return (
            self.config.document_level
            and ends_sentence(unit, self.sentence_ends)
            and stream.units_since_write >= DOCUMENT_MIN_UNITS
        )

    def _chunk_limits(self, max_tokens: int, stop_ids, suppress_mask) -> ChunkLimits:
        return ChunkLimits(
            max_tokens=max_tokens,
            stop_ids=tuple(stop_ids),
            suppress_mask=suppress_mask,
            length_penalty=self.length_penalty,
        )

    @staticmethod
    def scripted_tokens(stream: Stream) -> int:
        """A script's chunk length here; a write it did not ask for (a long-form segment's
        forced write) has none."""
        assert stream.script is not None  # called for a stream with a script only
        return stream.script.get(stream.units_read, 0)

    def write_tokens(self, stream: Stream) -> int:
        """The most tokens the stream's next chunk may have."""
        if stream.script is not None:  # n tokens, and one more forward for the end-of-write
            return self.scripted_tokens(stream) + 1
        return min(self.config.max_new_tokens, 2 * (stream.units_since_write + 25))

    def anchor_context(self, stream: Stream, source: str, target: str) -> int:
        """Long form: a new segment's context pair after the prompt; its token count."""
        if not source:
            return 0
        prompt_length = len(stream.tokens.ids)
        stream.tokens.append_text(source)
        stream.tokens.append_added_token(self.token_ids.end_of_read)
        stream.tokens.append_text(target)
        stream.tokens.append_added_token(self.token_ids.end_of_write)
        return len(stream.tokens.ids) - prompt_length

    def _write_limits(self, stream: Stream, max_tokens: int) -> ChunkLimits:
        if stream.script is not None:
            return self._chunk_limits(max_tokens, (), self.write_mask)
        return self._chunk_limits(max_tokens, self.token_ids.write_stops, self.write_mask)

    def _write(self, stream: Stream, wanted: int | None = None) -> Feeds[tuple[list[int], str]]:
        """Generate one chunk after end-of-read, close it with end-of-write, record it;
        `wanted`: its cap, where not `write_tokens`'."""
        wanted = self.write_tokens(stream) if wanted is None else wanted
        forced = stream.decisions[-1] == FORCED
        max_tokens = capped_tokens(self.segments, stream, wanted, forced)
        limits = self._write_limits(stream, max_tokens)
        pending = stream.pending()
        if self.config.num_beams > 1:
            chunk_ids, stopped = yield from beam_chunk(
                stream, pending, limits, self.config.num_beams, self.config.beam_stop
            )
        else:
            chunk_ids, stopped = yield from greedy_chunk(stream, pending, limits)
        note_capped(self.segments, stream, len(chunk_ids), max_tokens, wanted)
        if stream.script is not None:
            chunk_ids = chunk_ids[: self.scripted_tokens(stream)]
        elif not stopped:  # cut by its cap: see `_close_chunk`
            chunk_ids = self.characters.whole(stream, chunk_ids)
        return self._close_chunk(stream, chunk_ids)

    def _close_chunk(self, stream: Stream, chunk_ids: list[int]) -> tuple[list[int], str]:
        """A chunk its cap cut inside a character ends before that character: the bytes
        after `<|end-of-write|>` would never complete it (the paper's loop writes U+FFFD
        there), so its tokens, already taken from `chunk_ids`, leave the cache too."""
        stream.tokens.append_generated(chunk_ids)
        stream.crop_to_ids()
        return self._end_chunk(stream, chunk_ids)

    def _end_chunk(self, stream: Stream, chunk_ids: list[int]) -> tuple[list[int], str]:
        """Close the chunk whose ids were just appended with end-of-write; record it."""
        stream.tokens.append_added_token(self.token_ids.end_of_write)
        text = cast(str, self.tokenizer.decode(chunk_ids, skip_special_tokens=True)).rstrip()
        return chunk_ids, stream.record_chunk(chunk_ids, text)
