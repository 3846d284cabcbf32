"""The EAST streaming decoder: one growing id sequence, one KV cache, no SimulEval.

Per sentence (the paper's algorithm, greedy unless `num_beams` > 1):
1. the prompt (one user turn, chat template, generation prompt) is in the cache;
2. READ: append the next source unit, run one forward, take the argmax of the next-token
   logits with end-of-turn ids, end-of-write and BOS suppressed; end-of-read means WRITE;
3. the last unit (and, in document-level mode, a unit that ends a sentence after 20 or
   more units since the last write) always leads to WRITE;
4. WRITE: generate until end-of-write, an end-of-turn id (treated as end-of-write) or
   `min(max_new_tokens, 2 * (units since the last write + 25))` tokens, then READ again.

Every id the model ever sees is in `TokenStream.ids`; the cache holds a prefix of them and
each forward feeds exactly the ids after that prefix, so nothing is encoded twice. The
prompt stays in the cache from one sentence to the next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from east_agent.chunk_search import ChunkLimits, beam_chunk, greedy_chunk
from east_agent.kv_cache import CachedLM
from east_agent.model import east_token_ids
from east_agent.prompt import (
    check_latency,
    language_name,
    render_user_turn,
    simt_instruction,
)
from east_agent.token_stream import TokenStream
from east_agent.units import unit_text

SENTENCE_END = "。？！.!?"
DOCUMENT_MIN_UNITS = 20

READ = "read"  # the model asked for more source
WRITE = "write"  # the model chose end-of-read
FORCED = "forced"  # end-of-read was forced (last unit, or document-level sentence end)


class ContextOverflowError(RuntimeError):
    """The sentence does not fit in the model's context window."""


@dataclass(frozen=True)
class DecoderConfig:
    src_lang: str
    tgt_lang: str
    latency: str = "low"
    num_beams: int = 1
    max_new_tokens: int = 128
    document_level: bool = False
    max_context: int | None = None  # default: the model's max_position_embeddings

    def __post_init__(self) -> None:
        object.__setattr__(self, "src_lang", language_name(self.src_lang))
        object.__setattr__(self, "tgt_lang", language_name(self.tgt_lang))
        check_latency(self.latency)
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be at least 1, got {self.num_beams}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")


@dataclass
class Counters:
    forward_passes: int = 0
    tokens_fed: int = 0  # positions computed, summed over beams
    tokens_reencoded: int = 0  # positions computed again after a cache roll-back

    def __sub__(self, other: Counters) -> Counters:
        return Counters(
            self.forward_passes - other.forward_passes,
            self.tokens_fed - other.tokens_fed,
            self.tokens_reencoded - other.tokens_reencoded,
        )


@dataclass
class Step:
    """What one source unit led to."""

    decision: str | None  # READ, WRITE or FORCED; None when no unit was pushed
    chunk: str | None = None  # the text written, when the decision was WRITE or FORCED
    chunk_ids: list[int] = field(default_factory=list)
    finished: bool = False


@dataclass
class Translation:
    chunks: list[str]
    chunk_ids: list[list[int]]  # the generated ids of each chunk, stop token excluded
    delays: list[int]  # source units read when each chunk was written
    decisions: list[str]  # one per source unit
    counters: Counters

    @property
    def text(self) -> str:
        return "".join(self.chunks)


class EastStreamDecoder:
    def __init__(self, model, tokenizer, config: DecoderConfig) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.token_ids = east_token_ids(tokenizer, model.generation_config.eos_token_id)
        self.lm = CachedLM(model)
        self.max_context = config.max_context or model.config.max_position_embeddings
        self.length_penalty = float(getattr(model.generation_config, "length_penalty", 1.0) or 1.0)
        self.prompt = render_user_turn(
            tokenizer, simt_instruction(config.src_lang, config.tgt_lang, config.latency)
        )
        self.stream = TokenStream(tokenizer)
        self.stream.start(self.prompt)
        vocab_size = model.get_output_embeddings().weight.shape[0]
        self.read_mask = self._mask(vocab_size, self.token_ids.read_suppressed)
        self.write_mask = self._mask(vocab_size, self.token_ids.write_suppressed)
        self.tokens_reencoded = 0
        # Called with (ids in the cache, float32 logits of the last one) after each
        # one-row forward; tests use it to compare against full recomputes.
        self.on_forward: Callable[[list[int], torch.Tensor], None] | None = None
        self.reset()

    def _mask(self, vocab_size: int, token_ids: Sequence[int]) -> torch.Tensor:
        mask = torch.zeros(vocab_size, dtype=torch.bool, device=self.lm.device)
        mask[list(token_ids)] = True
        return mask

    @property
    def counters(self) -> Counters:
        return Counters(self.lm.forward_passes, self.lm.tokens_fed, self.tokens_reencoded)

    def reset(self) -> None:
        """Start a new sentence; the prompt's keys and values stay in the cache."""
        self.stream.rewind_to_prompt()
        if self.lm.length > len(self.stream.ids):
            self.lm.crop(len(self.stream.ids))
        self.units_read = 0
        self.units_since_write = 0
        self.finished = False
        self.chunks: list[str] = []
        self.chunk_ids: list[list[int]] = []
        self.delays: list[int] = []
        self.decisions: list[str] = []

    # -- the id sequence and the cache ---------------------------------------------------

    def _append_text(self, text: str) -> None:
        first_changed = self.stream.append_text(text)
        if first_changed < self.lm.length:
            # The new text changed how cached text tokenizes: drop those positions.
            self.tokens_reencoded += self.lm.crop(first_changed)

    def _pending(self) -> list[int]:
        return self.stream.ids[self.lm.length :]

    def _check_room(self, new_positions: int) -> None:
        needed = self.lm.length + new_positions
        if needed > self.max_context:
            raise ContextOverflowError(
                f"the sentence needs more than {self.max_context} tokens, the model's context "
                f"(after {self.units_read} source units and {len(self.chunks)} chunks); "
                "split the source into shorter segments"
            )

    def _feed_pending(self) -> torch.Tensor:
        pending = self._pending()
        self._check_room(len(pending))
        logits = self.lm.feed(pending)
        if self.on_forward is not None:
            self.on_forward(list(self.stream.ids[: self.lm.length]), logits)
        return logits

    # -- the policy -----------------------------------------------------------------------

    @torch.inference_mode()
    def push_unit(self, unit: str, is_last: bool = False) -> Step:
        """Read one source unit; write a chunk if the model (or the end of source) says so."""
        if self.finished:
            raise RuntimeError("the sentence is finished; call reset() before the next one")
        self._append_text(unit_text(unit, self.config.src_lang, first=self.units_read == 0))
        self.units_read += 1
        self.units_since_write += 1
        if is_last or self._ends_document_sentence(unit):
            decision = FORCED
        else:
            logits = self._feed_pending()
            chosen = int(logits.masked_fill(self.read_mask, float("-inf")).argmax())
            decision = WRITE if chosen == self.token_ids.end_of_read else READ
        self.decisions.append(decision)
        if decision == READ:
            return Step(READ)
        self.stream.append_added_token(self.token_ids.end_of_read)
        chunk_ids, text = self._write()
        self.finished = is_last
        return Step(decision, text, chunk_ids, finished=is_last)

    @torch.inference_mode()
    def finish(self) -> Step:
        """End the source without a last-unit flag: write what is still unwritten.

        For sources whose end arrives after their last unit (a server, a live stream).
        The outcome equals pushing the last unit with `is_last=True`.
        """
        if self.finished:
            raise RuntimeError("the sentence is already finished")
        self.finished = True
        if self.units_since_write == 0:
            return Step(decision=None, finished=True)
        self.decisions[-1] = FORCED
        self.stream.append_added_token(self.token_ids.end_of_read)
        chunk_ids, text = self._write()
        return Step(FORCED, text, chunk_ids, finished=True)

    def _ends_document_sentence(self, unit: str) -> bool:
        return (
            self.config.document_level
            and unit.rstrip()[-1:] in SENTENCE_END
            and self.units_since_write >= DOCUMENT_MIN_UNITS
        )

    def _write(self) -> tuple[list[int], str]:
        limits = ChunkLimits(
            max_tokens=min(self.config.max_new_tokens, 2 * (self.units_since_write + 25)),
            stop_ids=self.token_ids.write_stops,
            suppress_mask=self.write_mask,
            check_room=self._check_room,
            length_penalty=self.length_penalty,
        )
        pending = self._pending()
        if self.config.num_beams == 1:
            on_logits = None
            if self.on_forward is not None:

                def on_logits(chunk: list[int], logits: torch.Tensor) -> None:
                    self.on_forward(self.stream.ids + chunk, logits)

            chunk_ids, _ = greedy_chunk(self.lm, pending, limits, on_logits)
        else:
            chunk_ids, _ = beam_chunk(self.lm, pending, limits, self.config.num_beams)
        self.stream.append_generated(chunk_ids)
        self.stream.append_added_token(self.token_ids.end_of_write)
        text = self.tokenizer.decode(chunk_ids, skip_special_tokens=True).rstrip()
        self.chunks.append(text)
        self.chunk_ids.append(chunk_ids)
        self.delays.append(self.units_read)
        self.units_since_write = 0
        return chunk_ids, text

    def translate(self, units: Sequence[str]) -> Translation:
        """Decode one whole sentence given as source units (a convenience over `push_unit`)."""
        if not units:
            raise ValueError("the source sentence is empty")
        self.reset()
        before = self.counters
        for position, unit in enumerate(units):
            self.push_unit(unit, is_last=position == len(units) - 1)
        return Translation(
            list(self.chunks),
            list(self.chunk_ids),
            list(self.delays),
            list(self.decisions),
            self.counters - before,
        )
