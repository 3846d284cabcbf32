"""What every streaming decoder shares: streams, their programs, and driving them.

A decoder owns one LM backend (`east_agent.lm`) and one or more *streams*. A stream is one
sentence at a time: its rows of the backend (a home row; more while it beam-searches), its
token ids (`TokenStream`), counters, and the record of its sentence (chunks written, their
delays, one decision per source unit). Every id the model ever sees is in the stream's
`tokens.ids`; its home row holds a prefix of them and each forward feeds exactly the ids
after that prefix. A row is rolled back only where the ids themselves changed
(`tokens_reencoded` counts what is then fed again).

The decoding policy of a decoder is a *program*: a generator, one per stream and sentence,
that yields
- `WAIT` when it needs the next source event (a unit, or `END` when the source ended), and
- a `Feed` when it needs a forward (tokens for its rows; with a suppression mask, the
  driver also returns each row's masked argmax; with a `BeamStep`, a beam search's next
  candidates, chosen for every stream of the step together),
and receives the unit, or the `Fed` result, in return. All decisions, stop tokens, chunk
limits and context checks live in the program, so one policy serves both drivers:
- this module's sequential one (`push_unit` / `finish` / `translate`, one stream), and
- `east_agent.decoding.batching`, which advances many streams together, one forward per step.
Decoders here never import SimulEval.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import astuple, dataclass, field, fields
from numbers import Integral
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from east_agent.common.counts import counted
from east_agent.common.entry import CommandError
from east_agent.decoding.characters import CharacterCuts
from east_agent.decoding.prompt import language_name
from east_agent.decoding.token_stream import TokenStream
from east_agent.decoding.units import check_unit, check_unit_list
from east_agent.lm import build_lm

if TYPE_CHECKING:
    from collections import deque

    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from east_agent.decoding.east import DecoderConfig
    from east_agent.decoding.waitk import WaitkConfig
    from east_agent.lm.protocol import LMBackend

logger = logging.getLogger(__name__)

READ = "read"  # the policy asked for more source
WRITE = "write"  # the policy wrote after this unit
FORCED = "forced"  # a write forced by the end of the source (or a document-level sentence end)

WAIT = "wait"  # what a program yields when it needs the next source event
END = "end of source"  # the source event that ends the source (`finish`); units are tuples


class ContextOverflowError(CommandError):
    """The sentence does not fit in the model's context window."""


def context_limit(max_context: int | None, model_positions: int) -> int:
    """The token limit of one sentence: `max_context`, or the model's positions; a limit
    below 1 or above what the model has positions for is refused."""
    if max_context is None:
        return model_positions
    if max_context < 1:
        raise ValueError(f"--max-context must be at least 1, got {max_context}")
    if max_context > model_positions:
        raise ValueError(
            f"--max-context {max_context} is above the {model_positions} positions the model "
            "has (max_position_embeddings)"
        )
    return max_context


SENTENCE_ROOM = 4  # the least a sentence adds: a one-token unit, end-of-read, a token, its end


def check_sentence_room(max_context: int, fixed_tokens: int) -> None:
    """Refuse a --max-context that leaves no sentence room after the `fixed_tokens` of the
    prompt (every sentence would overflow it)."""
    if max_context < fixed_tokens + SENTENCE_ROOM:
        raise ValueError(
            f"--max-context {max_context} leaves no room for a sentence after the "
            f"{fixed_tokens}-token prompt (at least {fixed_tokens + SENTENCE_ROOM})"
        )


def check_shared_settings(config: DecoderConfig | WaitkConfig) -> None:
    """What every decoder's config holds, checked (and the languages named) in one place:
    `src_lang`, `tgt_lang`, `max_new_tokens`, `max_context` (frozen dataclasses call it
    from `__post_init__`), and every field of the type it is declared with."""
    check_field_types(config)
    object.__setattr__(config, "src_lang", language_name(config.src_lang))
    object.__setattr__(config, "tgt_lang", language_name(config.tgt_lang))
    if config.src_lang == config.tgt_lang:  # before: "Translate ... from German into German"
        raise ValueError(
            f"src_lang and tgt_lang (--src-lang, --tgt-lang) are both {config.src_lang}: "
            "a translation is from one language into another"
        )
    for name, flag in (("max_new_tokens", "--max-new-tokens"), ("max_context", "--max-context")):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} ({flag}) must be at least 1, got {value}")


FIELD_TYPES = {"int": Integral, "str": str, "bool": bool}
# what a field's value is made into: an int, a str enum's text, a bool
PLAIN_TYPES: dict[str, Callable[[Any], object]] = {"int": int, "str": str.__str__, "bool": bool}


def check_field_types(config: DecoderConfig | WaitkConfig) -> None:
    """Each `int`, `str` or `bool` field of a config holds one (`| None`: or None): an
    integer of any kind (numpy's) is made an `int`, a bool is none (before: `num_beams="3"`
    failed later as a comparison of str and int)."""
    for setting in fields(config):
        declared = declared_name(setting.type)
        kind, _, optional = declared.partition(" | ")
        value = getattr(config, setting.name)
        if kind not in FIELD_TYPES or (value is None and optional == "None"):
            continue
        if isinstance(value, FIELD_TYPES[kind]) and not (kind == "int" and isinstance(value, bool)):
            object.__setattr__(config, setting.name, PLAIN_TYPES[kind](value))
            continue
        shown = type(value).__qualname__
        module = type(value).__module__
        raise TypeError(
            f"{type(config).__name__}.{setting.name} must be {declared}, got "
            f"{shown if module == 'builtins' else f'{module}.{shown}'} {value!r}"
        )


def whole_number(value: object, name: str) -> int:
    """`value` as an `int`: an integer of any kind (numpy's), not a bool (before: `streams`
    refused numpy's, a wait-k `waitk` took 2.5 and True, and `"3"` failed as a comparison
    of str and int)."""
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"{name}: a whole number, got {type(value).__name__} {value!r}")


def check_config_type(config: object, expected: type, decoder: str) -> None:
    """A decoder's config is its own kind (before: a wait-k decoder given a DecoderConfig
    failed on its missing `waitk` after the first READ; an EAST decoder given a WaitkConfig,
    on `num_beams`, as an AttributeError)."""
    if not isinstance(config, expected):
        raise TypeError(f"{decoder} takes a {expected.__name__}, got {type(config).__name__}")


def declared_name(annotation: object) -> str:
    """`int`, or `int | None`, as a module without postponed annotations declares it
    (`Optional[int]` too)."""
    if isinstance(annotation, type):
        return annotation.__name__
    optional = re.fullmatch(r"(?:typing\.)?Optional\[(\w+)\]", str(annotation))
    return f"{optional[1]} | None" if optional else str(annotation)


@dataclass
class Counters:
    forward_passes: int = 0
    tokens_fed: int = 0  # positions computed, summed over beams
    tokens_reencoded: int = 0  # positions computed again after a cache roll-back
    chunks_capped: int = 0  # long form: chunks cut short by the cache budget
    characters_cut: int = 0  # chunks whose cap cut a character, its tokens taken back

    def __sub__(self, other: Counters) -> Counters:
        return Counters(*(a - b for a, b in zip(astuple(self), astuple(other))))

    def __add__(self, other: Counters) -> Counters:
        return Counters(*(a + b for a, b in zip(astuple(self), astuple(other))))


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
    chunk_seconds: list[float] = field(default_factory=list)  # since the first unit, per chunk

    @property
    def text(self) -> str:
        return "".join(self.chunks)


@dataclass(frozen=True)
class BeamStep:
    """What a beam search asks of the logits of its rows: the `candidates` best (row,
    token) pairs by running score + log-probability (suppressed ids masked after the
    log-softmax, as transformers' `suppress_tokens`), which of them stop (a stop id, or
    the chunk's last token), and the `num_beams` best that do not."""

    running_scores: tuple[float, ...]  # one per fed row (float32 values)
    candidates: int
    num_beams: int
    suppress_mask: torch.Tensor  # bool [vocab]
    stop_ids: tuple[int, ...]
    at_max_length: bool  # every candidate is the chunk's last token

    def group(self) -> tuple:
        """Steps that are chosen in one batched computation share this."""
        shape = (len(self.running_scores), self.candidates, self.num_beams)
        return (*shape, id(self.suppress_mask), self.stop_ids)


@dataclass(frozen=True)
class BeamChoices:
    """A `BeamStep`'s answer, best candidate first."""

    scores: list[float]
    source_rows: list[int]  # index into the feed's rows
    token_ids: list[int]
    hits: list[bool]  # the candidate stops here
    keep: list[int]  # the candidates that run on (indices into the lists above)


@dataclass(frozen=True)
class Feed:
    """A forward a program asks for: append `tokens[i]` to row `rows[i]`."""

    rows: tuple[int, ...]
    tokens: list[list[int]]
    mask: torch.Tensor | None = None  # bool [vocab]: return each row's argmax without these
    beam: BeamStep | None = None  # return a beam search's next candidates


@dataclass(frozen=True)
class Fed:
    logits: torch.Tensor  # float32 [len(rows), vocab]
    choices: list[int] | None  # the masked argmax of each row, when the feed had a mask
    beam: BeamChoices | None = None  # when the feed had a `BeamStep`


NEG_INF = float("-inf")
LOST = -1.0e9  # transformers' score for a candidate that may not be chosen


def run_feeds(lm: LMBackend, feeds: Sequence[Feed]) -> list[Fed]:
    """Run the feeds of one step in one forward; masked argmaxes are taken together, one
    reduction per distinct mask, and so are beam searches' candidates, one computation
    per group of alike `BeamStep`s."""
    logits = lm.forward(
        [row for feed in feeds for row in feed.rows],
        [ids for feed in feeds for ids in feed.tokens],
    )
    spans, start = [], 0
    by_mask: dict[int, tuple[torch.Tensor, list[int]]] = {}
    by_beam: dict[tuple, list[tuple[int, BeamStep]]] = {}  # (feed number, its step)
    for number, feed in enumerate(feeds):
        spans.append((start, start + len(feed.rows)))
        if feed.mask is not None:
            by_mask.setdefault(id(feed.mask), (feed.mask, []))[1].extend(
                range(start, start + len(feed.rows))
            )
        if feed.beam is not None:
            by_beam.setdefault(feed.beam.group(), []).append((number, feed.beam))
        start += len(feed.rows)
    choices: dict[int, int] = {}  # the masked argmax of each row of a masked feed
    for mask, indices in by_mask.values():
        for index, token_id in zip(indices, masked_argmax(_rows(logits, indices), mask)):
            choices[index] = token_id
    beams: list[BeamChoices | None] = [None] * len(feeds)
    for group in by_beam.values():
        rows = [index for number, _ in group for index in range(*spans[number])]
        answers = beam_choices(_rows(logits, rows), [step for _, step in group])
        for (number, _), answer in zip(group, answers):
            beams[number] = answer
    return [
        Fed(
            logits[a:b],
            [choices[index] for index in range(a, b)] if feed.mask is not None else None,
            beams[number],
        )
        for number, (feed, (a, b)) in enumerate(zip(feeds, spans))
    ]


def _rows(logits: torch.Tensor, indices: list[int]) -> torch.Tensor:
    """The step's logits of `indices` (all of them without a copy)."""
    return logits if len(indices) == len(logits) else logits[torch.tensor(indices)]


def beam_choices(logits: torch.Tensor, steps: Sequence[BeamStep]) -> list[BeamChoices]:
    """The candidates of several beam searches at once (alike steps: as many rows each,
    `logits` [steps x rows, vocab]); each search's numbers are those of computing it alone,
    as every operation works within a row or within one search's candidates."""
    first = steps[0]
    searches, rows, vocab = len(steps), len(first.running_scores), logits.shape[-1]
    log_probs = torch.log_softmax(logits, dim=-1)
    # what `masked_fill(suppress_mask, -inf)` gives, without its slow broadcast on CPUs
    log_probs.index_fill_(-1, first.suppress_mask.nonzero()[:, 0], NEG_INF)
    running = [score for step in steps for score in step.running_scores]
    running_scores = torch.tensor(running, dtype=log_probs.dtype, device=log_probs.device)
    totals = log_probs.add_(running_scores[:, None]).view(searches, rows * vocab)  # in place
    scores, flat_ids = torch.topk(totals, first.candidates, dim=-1)
    source_rows, token_ids = flat_ids // vocab, flat_ids % vocab
    stop_ids = torch.tensor(first.stop_ids, dtype=token_ids.dtype, device=token_ids.device)
    last = torch.tensor([step.at_max_length for step in steps], device=token_ids.device)
    hits = torch.isin(token_ids, stop_ids) | last[:, None]
    keep = torch.topk(scores + hits * LOST, first.num_beams, dim=-1).indices
    columns = [tensor.tolist() for tensor in (scores, source_rows, token_ids, hits, keep)]
    return [BeamChoices(*answer) for answer in zip(*columns)]


def masked_argmax(logits: torch.Tensor, mask: torch.Tensor) -> list[int]:
    """Each row's argmax with the ids in `mask` [vocab] (bool) set to -inf first: what
    `masked_fill(mask, -inf).argmax(-1)` gives, without its slow broadcast on CPUs (a
    mask holds a few ids: the columns are filled in a copy)."""
    masked = logits.clone().index_fill_(-1, mask.nonzero()[:, 0], NEG_INF)
    return first_argmax(masked).tolist()


def first_argmax(scores: torch.Tensor, block: int = 64) -> torch.Tensor:
    """`scores.argmax(-1)` of a contiguous [rows, width] tensor, found block by block: the
    block maxima (`amax`, vectorized), the first block that holds the row's maximum, the
    first maximum inside it. On CPUs `argmax` over a long last dimension is several times
    slower than this. Ties go to the lowest index and NaN counts as the maximum, as with
    `argmax`."""
    rows, width = scores.shape
    full = width - width % block
    if full == 0:
        return scores.argmax(-1)
    blocks = scores[:, :full].view(rows, full // block, block)
    best = blocks.amax(-1).argmax(-1)
    index = best * block + blocks[torch.arange(rows, device=scores.device), best].argmax(-1)
    if full < width:
        tail_max, tail_at = scores[:, full:].max(-1)
        head_max = scores.gather(1, index[:, None])[:, 0]
        later = (tail_max > head_max) | (tail_max.isnan() & ~head_max.isnan())
        index = torch.where(later, full + tail_at, index)
    return index


def check_open(stream: Stream) -> None:
    """A sentence that ended in an error takes no more input (before: each later call gave
    the last step again, and the sentence never finished)."""
    if stream.failed is not None:
        raise RuntimeError(
            f"the sentence failed ({stream.failed}); call reset() before the next one"
        )


class Stream:
    """One sentence stream: its rows, its ids, its counters and the record of its sentence."""

    # long form only: set by `Segmenter.begin` (`check_room` asks whether they are)
    segment_units: int
    segment_context: bool
    recent_units: deque[str]
    sentence_first_chunk: int

    def __init__(
        self,
        lm: LMBackend,
        tokenizer: PreTrainedTokenizerBase,
        rows: tuple[int, ...],
        max_context: int,
    ) -> None:
        self.lm = lm
        self.rows = rows
        self.home = rows[0]
        self.tokens = TokenStream(tokenizer)
        self.max_context = max_context
        self.totals = Counters()  # over every sentence of the stream
        self.program: Program | None = None
        self.clear()

    def clear(self, script: dict[int, int] | None = None) -> None:
        """Forget the sentence record (the ids and the rows are rewound separately)."""
        self.units_read = 0
        self.units_since_write = 0
        self.finished = False
        self.failed: str | None = None  # why the sentence ended in an error, if it did
        self.joint = ""  # put before the next chunk: a long-form segment's separator
        self.chunks: list[str] = []
        self.chunk_ids: list[list[int]] = []
        self.delays: list[int] = []
        self.decisions: list[str] = []
        self.chunk_seconds: list[float] = []
        self.started: float | None = None
        self.step = Step(None)
        self.script = script
        self.totals_at_start = Counters(**vars(self.totals))

    def translation(self) -> Translation:
        return Translation(
            list(self.chunks),
            list(self.chunk_ids),
            list(self.delays),
            list(self.decisions),
            self.totals - self.totals_at_start,
            list(self.chunk_seconds),
        )

    # -- the ids and the home row ------------------------------------------------------------

    def rewind_cache(self, length: int) -> None:
        """Drop cached positions from `length` on: they will be fed again."""
        if self.lm.length(self.home) > length:
            self.totals.tokens_reencoded += self.lm.crop(self.home, length)

    def rewind_to_prompt(self) -> None:
        """Forget the sentence's ids and cached positions, keeping the prompt's (not a
        re-encoding: nothing of the sentence is fed again). Where the sentence's first
        text merged with the prompt's last token (a template that ends in text, say
        `ASSISTANT:` before `"Die`), the prompt's ids come back and their positions are
        fed again: a home row as long as the prompt holds the prompt."""
        changed = self.tokens.rewind_to_prompt()
        self.crop_to_ids()
        self.rewind_cache(changed)

    def crop_to_ids(self) -> None:
        """Drop cached positions past the ids (ids taken back: not fed again, not counted)."""
        if self.lm.length(self.home) > len(self.tokens.ids):
            self.lm.crop(self.home, len(self.tokens.ids))

    def append_text(self, text: str) -> None:
        self.rewind_cache(self.tokens.append_text(text))

    def pending(self) -> list[int]:
        return self.tokens.ids[self.lm.length(self.home) :]

    def check_room(self, new_positions: int) -> None:
        if self.lm.length(self.home) + new_positions > self.max_context:
            raise ContextOverflowError(
                f"the {self.what_fills()} needs more than {self.max_context} tokens, its "
                "context limit (--max-context, else the model's positions) "
                f"(after {counted(self.units_read, 'source unit')} and "
                f"{counted(len(self.chunks), 'chunk')}); " + self.overflow_advice(new_positions)
            )

    @property
    def segmented(self) -> bool:
        """Whether long form cuts this stream into segments (its segmenter counts
        `segment_units`)."""
        return getattr(self, "segment_units", None) is not None

    def what_fills(self) -> str:
        """What fills the context: a sentence, or a talk's segment in long form."""
        return "segment" if self.segmented else "sentence"

    def overflow_advice(self, new_positions: int) -> str:
        """What to do about an overflow: a talk's line goes to long form, which segments it
        as it goes, its cache bounded; a unit too long for any segment must be split."""
        if self.segmented:  # long form: cut between units
            return "long form cuts a talk between units, not inside one: split that unit"
        prompt = self.tokens.prompt_length
        unit = new_positions - max(0, prompt - self.lm.length(self.home))  # a first unit's
        if prompt + unit > self.max_context:  # feed carries the prompt; no segment holds it
            return (  # the count: the unit's tokens and the markers fed with it (before:
                # "one unit of 82 tokens" for 80 and the end-of-write and end-of-read)
                f"one unit does not fit beside the {prompt}-token prompt (it and the "
                f"end-of-read or end-of-write fed with it: {unit} tokens)"
            )
        return "split the source into shorter segments, or run it in long form (--long-form)"

    def feed(
        self,
        token_ids: Sequence[int],
        mask: torch.Tensor | None = None,
        beam: BeamStep | None = None,
    ) -> Feed:
        """A forward of `token_ids` on the home row (counted here)."""
        self.check_room(len(token_ids))
        self.totals.forward_passes += 1
        self.totals.tokens_fed += len(token_ids)
        return Feed((self.home,), [list(token_ids)], mask, beam)

    def feed_rows(self, rows: Sequence[int], token_ids: Sequence[int], beam: BeamStep) -> Feed:
        """A forward of one token on each of `rows` (beams, as long as the home row)."""
        self.check_room(1)
        self.totals.forward_passes += 1
        self.totals.tokens_fed += len(rows)
        return Feed(tuple(rows), [[token_id] for token_id in token_ids], beam=beam)

    # -- the record ----------------------------------------------------------------------------

    def start_unit(self, unit_text: str) -> None:
        if self.units_read == 0:
            self.started = time.perf_counter()
        self.tokens.check_source(unit_text)
        self.append_text(unit_text)
        self.units_read += 1
        self.units_since_write += 1

    def record_chunk(self, chunk_ids: list[int], text: str) -> str:
        """Record a written chunk; its text as recorded (after a long-form segment's
        `joint`, where the model began it as a sentence's first words)."""
        if text and self.joint and not text[0].isspace():
            text = self.joint + text
        if text:
            self.joint = ""
        self.chunks.append(text)
        self.chunk_ids.append(chunk_ids)
        self.delays.append(self.units_read)
        self.chunk_seconds.append(time.perf_counter() - (self.started or time.perf_counter()))
        self.units_since_write = 0
        return text


# A stream's program for one sentence (see the module's docstring): it yields WAIT or a
# Feed, and receives None to start, a source event after WAIT (a unit as (text, is_last),
# or END), the Fed after a Feed.
Program = Generator[Feed | str, Fed | tuple[str, bool] | str | None, None]

_T = TypeVar("_T")
# A part of a program that only asks for forwards (`_push`, a chunk's search): it yields
# Feeds, receives each one's Fed, and returns its result (a Step, a chunk's ids).
Feeds = Generator[Feed, Fed, _T]


# what may hold a decoder's streams, as its refusals name it
BATCH_HOLDS, POOL_HOLDS = "a translate_batch", "a StreamPool"


class StreamingDecoder:
    """Base of the decoders: subclasses write `_push` (one unit) and `_final_write` as
    generators of feeds, and set the prompt with `start_streams`."""

    stream_class = Stream

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        src_lang: str,
        max_context: int | None,
        kv_cache: str = "auto",
        beams: int = 1,
        streams: int = 1,
    ) -> None:
        streams = whole_number(streams, "streams")
        if streams < 1:
            raise ValueError(f"the number of streams must be at least 1, got {streams}")
        self.tokenizer = tokenizer
        self.characters = CharacterCuts(tokenizer)
        self.src_lang = language_name(src_lang)
        self.max_context = context_limit(max_context, model.config.max_position_embeddings)
        self.kv_cache, self.beams, self.max_streams = kv_cache, beams, streams
        self.vocab_size = model.get_output_embeddings().weight.shape[0]
        self.device = next(model.parameters()).device
        self.streams: list[Stream] = []
        # what holds every stream, if anything: a translate_batch (until it ends or is
        # closed) or a StreamPool (for good)
        self.held_by: str | None = None
        # the first stream's sentence is `reset`'s, for `push_unit` (not a batch's)
        self.own_sentence = False

    def start_streams(self, model: PreTrainedModel, prompt: str) -> None:
        """Pick the cache backend (checked on the prompt) and give every stream its rows."""
        probe = TokenStream(self.tokenizer)
        probe.start(prompt)
        self.prompt_ids = list(probe.ids)
        # before: a backend built (the dynamic one, the static one refusing the size), and
        # every sentence failed at its first unit
        check_sentence_room(self.max_context, len(self.prompt_ids))
        rows = self.max_streams * self.beams
        self.lm = build_lm(model, self.kv_cache, self.max_context, rows, self.prompt_ids)
        if self.max_streams > 1 and not self.lm.ragged:
            # named by the flag (before: by the backend's class, `CachedLM`)
            chose = "" if self.kv_cache == "dynamic" else " chose the dynamic cache, which"
            logger.warning(
                "--kv-cache %s%s runs one stream at a time: %d streams become 1",
                self.kv_cache,
                chose,
                self.max_streams,
            )
            self.max_streams = 1
        self.streams = []
        for index in range(self.max_streams):
            stream_rows = tuple(range(index * self.beams, (index + 1) * self.beams))
            stream = self.stream_class(self.lm, self.tokenizer, stream_rows, self.max_context)
            stream.tokens.start(prompt)
            self.streams.append(stream)

    def wrap_lm(self, wrap: Callable) -> None:
        """Put `wrap(backend)` in place of the backend (tracing, counting)."""
        self.lm = wrap(self.lm)
        for stream in self.streams:
            stream.lm = self.lm

    def mask(self, token_ids: Iterable[int]) -> torch.Tensor:
        mask = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
        mask[list(token_ids)] = True
        return mask

    # -- programs --------------------------------------------------------------------------------

    def begin(self, stream: Stream, script: dict[int, int] | None = None) -> None:
        """Start a new sentence on `stream`; the prompt's keys and values stay in its row.

        `script` ({units read: chunk tokens}) imposes the READ/WRITE outcomes and chunk
        lengths on decoders that take one (benchmarks): every forward still runs."""
        stream.clear(script)
        self.lm.release(stream.rows[1:])  # beam rows a failed sentence left forked
        stream.rewind_to_prompt()
        self._begin(stream)
        stream.program = self._program(stream)
        next(stream.program)  # to its first WAIT

    def _begin(self, stream: Stream) -> None:
        """Per-sentence state of a subclass."""

    def _program(self, stream: Stream) -> Program:
        while True:
            event = yield WAIT
            if event is END:
                stream.finished = True
                if self._needs_final_write(stream):
                    stream.decisions[-1] = FORCED
                    stream.step = yield from self._final_write(stream)
                else:
                    stream.step = Step(decision=None, finished=True)
                return
            assert isinstance(event, tuple)  # after WAIT: a unit, or END
            unit, is_last = event
            stream.step = yield from self._push(stream, unit, is_last)
            if stream.step.finished:
                stream.finished = True
                return

    def _push(self, stream: Stream, unit: str, is_last: bool) -> Feeds[Step]:
        raise NotImplementedError

    def _needs_final_write(self, stream: Stream) -> bool:
        return stream.units_since_write > 0

    def _final_write(self, stream: Stream) -> Feeds[Step]:
        raise NotImplementedError

    def advance(self, stream: Stream, value: Fed | tuple[str, bool] | str) -> Feed | None:
        """Send `value` to the stream's program; return the feed it asks for next, or None
        when it waits for the next source event or has finished its sentence."""
        assert stream.program is not None  # `begin` set it
        try:
            request = stream.program.send(value)
        except StopIteration:
            return None
        return request if isinstance(request, Feed) else None  # else WAIT

    def run_until_feed(
        self,
        stream: Stream,
        fed: Fed | None,
        next_event: Callable[[], tuple[str, bool] | str | None],
    ) -> Feed | None:
        """Hand the stream `fed` (None: nothing yet), then the events `next_event` gives
        while it waits for input (None: no event yet); return its next feed, or None when it
        has finished or waits for an event. A ContextOverflowError goes to the caller."""
        feed = self.advance(stream, fed) if fed is not None else None
        while feed is None and not stream.finished:
            event = next_event()
            if event is None:
                return None
            feed = self.advance(stream, event)
        return feed

    # -- the sequential driver: one stream ------------------------------------------------------

    @property
    def stream(self) -> TokenStream:
        """The ids of the first stream (the one the sequential driver runs)."""
        return self.streams[0].tokens

    @property
    def counters(self) -> Counters:
        """All the work of all streams so far, but the forward of a batch's shared prompt
        (`batching.share_prompt`: fed once for all streams, in no sentence's counters; a
        sentence of a batch counts the prompt's tokens as not fed, one alone feeds them
        with its first unit, in the same forward pass)."""
        total = Counters()
        for stream in self.streams:
            total = total + stream.totals
        return total

    def reset(self, script: dict[int, int] | None = None) -> None:
        """Start a new sentence on the first stream."""
        self.check_not_held("reset")
        self.begin(self.streams[0], script)
        self.own_sentence = True

    def check_not_held(self, what: str) -> None:
        """The first stream is not driven one sentence at a time, nor the streams batched
        again, while a `translate_batch` or a `StreamPool` holds every stream (before: the
        two mixed their sentences, without an error; `push_unit` on a pool's decoder an
        AttributeError, or a client's sentence wrecked)."""
        if self.held_by == BATCH_HOLDS:
            raise RuntimeError(
                f"{what}: a translate_batch of this decoder is running; finish or close it "
                "first, or build another decoder"
            )
        if self.held_by is not None:
            raise RuntimeError(
                f"{what}: this decoder's streams are lent by {self.held_by}; build another decoder"
            )

    def hold_streams(self, holder: str, what: str) -> None:
        """Every stream `holder`'s (`BATCH_HOLDS`, `POOL_HOLDS`) until `release_streams`,
        if nothing else drives them: no batch, no pool, no sentence `push_unit` began and
        did not finish."""
        self.check_not_held(what)
        if self.pushed_sentence_open():
            raise RuntimeError(
                f"{what}: a sentence push_unit began is not finished; finish() it, or "
                "reset() to drop it, first"
            )
        self.held_by, self.own_sentence = holder, False

    def release_streams(self) -> None:
        self.held_by = None

    def pushed_sentence_open(self) -> bool:
        """Whether `push_unit` began a sentence that has not finished (nor failed)."""
        stream = self.streams[0]
        pushed = self.own_sentence and bool(stream.decisions)
        return pushed and not stream.finished and stream.failed is None

    def check_own_sentence(self, what: str) -> None:
        """`push_unit` and `finish` go on with a sentence `reset` began, never with the one
        a `translate_batch` left on the first stream."""
        self.check_not_held(what)
        if not self.own_sentence:
            raise RuntimeError(
                f"{what}: the first stream holds a translate_batch's sentence; call reset() "
                "to begin one"
            )

    @torch.inference_mode()
    def push_unit(self, unit: str, is_last: bool = False) -> Step:
        """Read one source unit; write a chunk if the policy (or the end of source) says so."""
        check_unit(unit, "push_unit")
        if not isinstance(is_last, bool):  # before: `is_last="no"` ended the source
            raise TypeError(f"push_unit: is_last is True or False, got {is_last!r}")
        self.check_own_sentence("push_unit")
        stream = self.streams[0]
        check_open(stream)
        if stream.finished:
            raise RuntimeError("the sentence is finished; call reset() before the next one")
        return self._drive(stream, (unit, is_last))

    @torch.inference_mode()
    def finish(self) -> Step:
        """End the source without a last-unit flag: write what is still unwritten.

        For sources whose end arrives after their last unit (a server, a live stream).
        After a READ the outcome equals pushing the last unit with `is_last=True`. After a
        WRITE, EAST writes nothing more (the model wrote after the last unit: nothing new
        to read or write), and wait-k writes the rest of the target as one more chunk, the
        last unit's decision becoming FORCED: the same target as the flag gives (EAST's
        wait-k continues the word's chunk: its end-of-write leaves the cache, and the
        word's last token is fed again, one position re-encoded; the final write's cap
        counts the word, unless the word alone is longer). With beams (EAST's
        wait-k, `num_beams` above 1, from Python only) the target may differ: the word was
        written greedily and is kept, the beam search writes the rest after it, where the
        flag's forced write searches from the end-of-read (2 of 11 Multi30k sentences at 3
        beams, the demo model).
        """
        self.check_own_sentence("finish")
        stream = self.streams[0]
        check_open(stream)
        if stream.finished:
            raise RuntimeError("the sentence is already finished")
        return self._drive(stream, END)

    def _drive(self, stream: Stream, event) -> Step:
        try:
            feed = self.advance(stream, event)
            while feed is not None:
                (fed,) = run_feeds(self.lm, [feed])
                feed = self.advance(stream, fed)
        except BaseException as error:  # the program is closed, or waits for a lost feed
            # Ctrl-C too (before: the next call an AttributeError from the cut-off program)
            said = f": {error}" if str(error) else ""
            stream.failed = f"{type(error).__name__}{said}"
            raise
        return stream.step

    def translate(self, units: Sequence[str], script: dict[int, int] | None = None) -> Translation:
        """Decode one whole sentence given as source units (a convenience over `push_unit`)."""
        check_unit_list(units, "translate")
        if not units:
            raise ValueError("the source sentence is empty")
        self.check_not_held("translate")  # named as called (before: as the reset within)
        self.reset(script)
        for position, unit in enumerate(units):
            self.push_unit(unit, is_last=position == len(units) - 1)
        return self.streams[0].translation()

    @property
    def chunks(self) -> list[str]:
        return self.streams[0].chunks

    @property
    def delays(self) -> list[int]:
        return self.streams[0].delays
