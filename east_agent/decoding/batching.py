"""Continuous batching: many sentences advance together, one forward per step.

A decoder built with `streams=N` holds N streams (`east_agent.decoding.streaming`).
`translate_batch` gives each stream a sentence, then repeats one step:
1. every active stream has asked for one forward (a READ: its new unit's tokens; a WRITE:
   one token, or one per beam; the last unit with end-of-read); all of them run as one
   ragged forward of the backend, every row at its own positions;
2. each stream's program takes its logits (its masked argmax, or its beam search's
   candidates: both taken for all streams at once) and goes on: it decides,
   reads its next unit (source units arrive as fast as a stream asks for them, as in
   SimulEval), and asks for its next forward;
3. a stream whose sentence is finished hands its outcome back at once and takes the next
   sentence, so the batch stays full until the input runs out.
Decisions, stop tokens, chunk limits, suppression masks and context checks are each
stream's own: they are the decoder's program, the same one the sequential driver runs. A
sentence that overflows the context ends with an error outcome that names it, and so does
one whose program fails (a bug: its traceback is logged); the others go on, and its
stream takes the next sentence. A failed forward (or choice of argmaxes or candidates,
which runs for all streams at once) fails the batch: no row of it is known.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from east_agent.decoding.streaming import (
    BATCH_HOLDS,
    ContextOverflowError,
    Fed,
    Feed,
    Stream,
    StreamingDecoder,
    Translation,
    run_feeds,
)
from east_agent.decoding.units import SourceError, check_unit_list

logger = logging.getLogger("east_agent.decoding.batching")


class StepFailed(RuntimeError):
    """The forward failed in a step this stream was part of, or the stream's program
    failed (not for its input: that is the sentence's own error): its sentence is lost,
    and the stream takes a new one (`begin`)."""


@dataclass(frozen=True)
class Sentence:
    key: Any  # handed back with the outcome (an instance index, say)
    units: Sequence[str]
    script: dict[int, int] | None = None  # see `StreamingDecoder.begin`

    def __post_init__(self) -> None:
        check_unit_list(self.units, f"Sentence {self.key!r}")


@dataclass
class Outcome:
    key: Any
    units: int
    translation: Translation | None = None
    error: Exception | None = None  # a sentence that could not be translated (too long, a bug)


@dataclass
class BatchStats:
    """What the steps of one or more batches did."""

    steps: int = 0
    rows: int = 0  # rows fed, summed over steps
    tokens: int = 0  # positions fed, summed over steps
    seconds: float = 0.0  # inside the forwards and the programs' reactions to them
    rows_per_step: list[int] = field(default_factory=list)


@dataclass
class _Job:
    sentence: Sentence
    next_unit: int = 0
    error: Exception | None = None


def share_prompt(decoder: StreamingDecoder) -> None:
    """Feed the prompt once and copy it to every stream's home row (rows that share it read
    it once per step where the backend can)."""
    for stream in decoder.streams:
        stream.rewind_to_prompt()
    lm, prompt = decoder.lm, decoder.prompt_ids
    if len(decoder.streams) == 1 or len(prompt) >= lm.max_length:
        # one stream feeds its prompt with its first unit, as always; a prompt the context
        # cannot hold is not fed here, so that each sentence fails alone, as in sequence
        return
    homes = [stream.home for stream in decoder.streams]
    source = next((home for home in homes if lm.length(home) == len(prompt)), None)
    if source is None:
        source = homes[0]
        lm.crop(source, 0)
        lm.forward([source], [prompt])
    lm.share_prefix(source, len(prompt))
    lm.fork(source, [home for home in homes if home != source])


def translate_batch(
    decoder: StreamingDecoder, sentences: Iterable[Sentence], stats: BatchStats | None = None
) -> Iterator[Outcome]:
    """Translate `sentences` on all of the decoder's streams at once; yield each outcome as
    soon as its sentence is finished (not in input order). A list (any sequence) is checked
    whole before the first forward; an iterator's sentences as they come, a refusal ending
    the batch (the sentences in flight have no outcome)."""
    queue = _checked(sentences)
    if isinstance(sentences, Sequence):  # before: refused after the outcomes before it
        queue = iter(list(queue))
    active: dict[Stream, _Job] = {}
    feeds: dict[Stream, Feed] = {}
    with torch.inference_mode(), _holding(decoder):
        share_prompt(decoder)
        for stream in decoder.streams:
            yield from _fill(decoder, stream, queue, active, feeds)
        while feeds:
            started = time.perf_counter()
            streams = sorted(feeds, key=lambda stream: stream.home)
            step = [feeds[stream] for stream in streams]
            results = run_feeds(decoder.lm, step)
            done = []
            for stream, fed in zip(streams, results):
                feed = _pump(decoder, stream, active[stream], fed)
                if feed is None:
                    del feeds[stream]
                    done.append(stream)
                else:
                    feeds[stream] = feed
            if stats is not None:
                _count(stats, step, time.perf_counter() - started)
            for stream in done:
                yield _outcome(stream, active.pop(stream))
                yield from _fill(decoder, stream, queue, active, feeds)


@contextmanager
def _holding(decoder: StreamingDecoder) -> Iterator[None]:
    """Every stream of `decoder` held by one `translate_batch` until it ends or is closed:
    a second one, a pool's decoder, or a sentence `push_unit` began and did not finish,
    refused (before: the two batches' outcomes carried each other's translations, without
    an error, and the pushed sentence was dropped)."""
    decoder.hold_streams(BATCH_HOLDS, "translate_batch")
    try:
        yield
    finally:
        decoder.release_streams()


def _checked(sentences: Iterable[Sentence]) -> Iterator[Sentence]:
    """`sentences`, each refused as it comes if it is not a `Sentence` or repeats a key
    (before: a tuple failed as an AttributeError, and two outcomes could share a key)."""
    keys: set = set()
    unhashable: list = []  # a list or dict key, compared by equality
    for sentence in sentences:
        if not isinstance(sentence, Sentence):
            raise TypeError(
                f"translate_batch takes Sentence(key, units) items, got "
                f"{type(sentence).__name__} {sentence!r:.80}"
            )
        try:
            seen = sentence.key in keys
        except TypeError:
            seen = any(_same_key(sentence.key, other) for other in unhashable)
            unhashable.append(sentence.key)
        else:
            keys.add(sentence.key)
        if seen:  # before, for a list key: two outcomes under one key
            raise ValueError(
                f"Sentence key {sentence.key!r} given twice: its outcomes could not be told apart"
            )
        yield sentence


def _same_key(one: object, other: object) -> bool:
    """Two unhashable keys are one when `==` says a plain True (an array's elementwise
    answer, or an error, is not taken for it)."""
    if one is other:
        return True
    try:
        return (one == other) is True
    except Exception:  # arrays of two shapes, and such
        return False


def _fill(decoder, stream: Stream, queue, active: dict, feeds: dict) -> Iterator[Outcome]:
    """Give `stream` the next sentence that needs a forward (yielding any that end before)."""
    for sentence in queue:
        job = _Job(sentence)
        if not sentence.units:
            yield Outcome(sentence.key, 0, error=ValueError("the source sentence is empty"))
            continue
        decoder.begin(stream, sentence.script)
        feed = _pump(decoder, stream, job, None)
        if feed is not None:
            active[stream], feeds[stream] = job, feed
            return
        yield _outcome(stream, job)


def _pump(decoder, stream: Stream, job: _Job, fed) -> Feed | None:
    """Hand the stream `fed` (None: nothing yet), then its next units while it waits for
    them; return its next feed, or None once its sentence is finished (or failed)."""
    units = job.sentence.units

    def next_unit() -> tuple[str, bool]:
        index = job.next_unit
        job.next_unit += 1
        return units[index], index == len(units) - 1

    feed, job.error = run_program(decoder, stream, fed, next_unit, f"sentence {job.sentence.key}")
    return feed


def run_program(
    decoder: StreamingDecoder,
    stream: Stream,
    fed: Fed | None,
    next_event: Callable[[], tuple[str, bool] | str | None],
    name: str,
) -> tuple[Feed | None, Exception | None]:
    """`decoder.run_until_feed`: (the stream's next feed, None), or (None, why its sentence
    is lost): its own fault (too long, bad input) as raised, or a fault of the program (a
    bug), logged with its traceback as `name`'s, as StepFailed. The other streams go on."""
    try:
        return decoder.run_until_feed(stream, fed, next_event), None
    except (ContextOverflowError, SourceError) as error:
        return None, error
    except Exception as error:
        logger.exception("%s: the stream's program failed", name)
        return None, StepFailed(f"the stream's program failed: {error!r} (traceback logged)")


def _outcome(stream: Stream, job: _Job) -> Outcome:
    sentence = job.sentence
    if job.error is not None:
        return Outcome(sentence.key, len(sentence.units), error=job.error)
    return Outcome(sentence.key, len(sentence.units), translation=stream.translation())


def _count(stats: BatchStats, step: list[Feed], seconds: float) -> None:
    rows = sum(len(feed.rows) for feed in step)
    stats.steps += 1
    stats.rows += rows
    stats.tokens += sum(len(ids) for feed in step for ids in feed.tokens)
    stats.seconds += seconds
    stats.rows_per_step.append(rows)
