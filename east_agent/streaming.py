"""What every streaming decoder shares: one id stream, one KV cache, counters, the record
of the sentence so far (chunks written, their delays, one decision per source unit).

Every id the model ever sees is in `TokenStream.ids`; the cache holds a prefix of them and
each forward feeds exactly the ids after that prefix. A decoder rolls the cache back only
where the stream itself changed (`tokens_reencoded` counts what is then fed again).
Decoders here never import SimulEval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from east_agent.kv_cache import CachedLM, build_lm
from east_agent.prompt import language_name
from east_agent.token_stream import TokenStream

READ = "read"  # the policy asked for more source
WRITE = "write"  # the policy wrote after this unit
FORCED = "forced"  # a write forced by the end of the source (or a document-level sentence end)


class ContextOverflowError(RuntimeError):
    """The sentence does not fit in the model's context window."""


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
    chunk: str | None = None  # the text written at this step, if any
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


class StreamingDecoder:
    """Base of the decoders: subclasses define `push_unit` and `_final_write`."""

    def __init__(
        self,
        model,
        tokenizer,
        src_lang: str,
        max_context: int | None,
        kv_cache: str = "auto",
        max_rows: int = 1,
    ) -> None:
        self.tokenizer = tokenizer
        self.src_lang = language_name(src_lang)
        self.max_context = max_context or model.config.max_position_embeddings
        self.kv_cache, self.max_rows = kv_cache, max_rows
        self.lm = CachedLM(model)  # replaced in `start_stream`, once the prompt is known
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.stream = TokenStream(tokenizer)
        self.tokens_reencoded = 0
        # Called with (ids in the cache, float32 logits of the last one) after each one-row
        # forward of the READ loop; tests use it to compare against full recomputes.
        self.on_forward: Callable[[list[int], torch.Tensor], None] | None = None

    def start_stream(self, model, prompt: str) -> None:
        """Tokenize the prompt and pick the cache backend (checked on the prompt)."""
        self.stream.start(prompt)
        self.lm = build_lm(model, self.kv_cache, self.max_context, self.max_rows, self.stream.ids)

    def mask(self, token_ids: Sequence[int]) -> torch.Tensor:
        mask = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.lm.device)
        mask[list(token_ids)] = True
        return mask

    @property
    def counters(self) -> Counters:
        return Counters(self.lm.forward_passes, self.lm.tokens_fed, self.tokens_reencoded)

    def reset(self) -> None:
        """Forget the sentence (subclasses also rewind their stream)."""
        self.units_read = 0
        self.units_since_write = 0
        self.finished = False
        self.chunks: list[str] = []
        self.chunk_ids: list[list[int]] = []
        self.delays: list[int] = []
        self.decisions: list[str] = []

    def push_unit(self, unit: str, is_last: bool = False) -> Step:
        raise NotImplementedError

    @torch.inference_mode()
    def finish(self) -> Step:
        """End the source without a last-unit flag: write what is still unwritten.

        For sources whose end arrives after their last unit (a server, a live stream).
        The outcome equals pushing the last unit with `is_last=True`.
        """
        if self.finished:
            raise RuntimeError("the sentence is already finished")
        self.finished = True
        if not self._needs_final_write():
            return Step(decision=None, finished=True)
        self.decisions[-1] = FORCED
        return self._final_write()

    def _needs_final_write(self) -> bool:
        return self.units_since_write > 0

    def _final_write(self) -> Step:
        raise NotImplementedError

    # -- the id stream and the cache -------------------------------------------------------

    def _rewind_cache(self, length: int) -> None:
        """Drop cached positions from `length` on: they will be fed again."""
        if self.lm.length > length:
            self.tokens_reencoded += self.lm.crop(length)

    def _rewind_to_prompt(self) -> None:
        """Forget the sentence's ids and cached positions, keeping the prompt's (not a
        re-encoding: nothing of the sentence is fed again)."""
        self.stream.rewind_to_prompt()
        if self.lm.length > len(self.stream.ids):
            self.lm.crop(len(self.stream.ids))

    def _append_text(self, text: str) -> None:
        self._rewind_cache(self.stream.append_text(text))

    def _pending(self) -> list[int]:
        return self.stream.ids[self.lm.length :]

    def _check_room(self, new_positions: int) -> None:
        if self.lm.length + new_positions > self.max_context:
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

    def _start_unit(self, unit_text: str) -> None:
        if self.finished:
            raise RuntimeError("the sentence is finished; call reset() before the next one")
        self._append_text(unit_text)
        self.units_read += 1
        self.units_since_write += 1

    def _record_chunk(self, chunk_ids: list[int], text: str) -> None:
        self.chunks.append(text)
        self.chunk_ids.append(chunk_ids)
        self.delays.append(self.units_read)
        self.units_since_write = 0

    # -- whole sentences ---------------------------------------------------------------------

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
