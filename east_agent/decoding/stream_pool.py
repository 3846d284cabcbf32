"""A decoder's streams lent to independent clients, their forwards run together.

`east_agent.decoding.batching` owns its input: it hands each stream the next sentence's units as
fast as the stream asks. A server does not: each client (a session) sends its units when
they arrive and then waits for what the model writes. A `StreamPool` lends each client one
stream of a decoder built with `streams=N`; a client queues source events on its stream
(`push`), and `step()` runs one forward for every stream with work, so concurrent clients
share the device. A stream is *idle* when its program waits for a source event its client
has not sent yet, or has finished its sentence. The programs are the decoder's own, so a
client gets exactly what the sequential decoder writes.
"""

from __future__ import annotations

from collections import deque

import torch

from east_agent.decoding.batching import StepFailed, run_program, share_prompt
from east_agent.decoding.streaming import (
    END,
    POOL_HOLDS,
    Feed,
    Stream,
    StreamingDecoder,
    run_feeds,
)
from east_agent.decoding.units import check_unit_list

__all__ = ["NoFreeStream", "StepFailed", "StreamPool"]


class NoFreeStream(RuntimeError):
    """Every stream of the pool is lent."""


class StreamPool:
    def __init__(self, decoder: StreamingDecoder) -> None:
        """`decoder`'s streams, the pool's for good: its sequential and batched calls are
        refused from now on (they would drive the streams the clients hold)."""
        decoder.hold_streams(POOL_HOLDS, "StreamPool")
        self.decoder = decoder
        with torch.inference_mode():
            share_prompt(decoder)
        self.free: list[Stream] = list(decoder.streams)
        self.events: dict[Stream, deque] = {}
        self.feeds: dict[Stream, Feed] = {}
        self.errors: dict[Stream, Exception] = {}

    @property
    def size(self) -> int:
        return len(self.decoder.streams)

    def acquire(self) -> Stream:
        if not self.free:
            raise NoFreeStream(f"all {self.size} streams are in use")
        stream = self.free.pop()
        self.events[stream] = deque()
        return stream

    def release(self, stream: Stream) -> None:
        self.events.pop(stream, None)
        self.feeds.pop(stream, None)
        self.errors.pop(stream, None)
        stream.program = None
        self.free.append(stream)

    def begin(self, stream: Stream) -> None:
        """Start a new sentence on a lent stream (dropping whatever it was doing)."""
        self._events(stream, "begin").clear()
        self.feeds.pop(stream, None)
        self.errors.pop(stream, None)
        self.decoder.begin(stream)

    def push(self, stream: Stream, units: list[str], source_finished: bool) -> None:
        """Queue new source units (and the end of the source) and run them up to the
        stream's next forward. Units are checked as `translate` checks them (before: a
        string's letters read as units), and refused for a stream not lent, or whose
        sentence is finished or failed (before: a KeyError, or the units dropped without a
        word)."""
        check_unit_list(units, "push")
        events = self._events(stream, "push")
        if units and stream.finished:
            raise RuntimeError(
                f"push: stream {stream.home}'s sentence is finished; begin() the next first"
            )
        if (failure := self.errors.get(stream)) is not None:
            raise RuntimeError(
                f"push: stream {stream.home}'s sentence failed ({failure}); begin() the next"
            )
        for position, unit in enumerate(units):
            events.append((unit, source_finished and position == len(units) - 1))
        if source_finished:
            events.append(END)  # ignored by a program the last unit finished
        if not self.busy(stream):  # a busy stream takes its events when its forward is back
            self._pump(stream, None)

    def _events(self, stream: Stream, what: str) -> deque:
        """The source events queued for a lent stream."""
        if stream not in self.events:
            raise RuntimeError(
                f"{what}: stream {stream.home} is not lent by this pool (released, or never "
                "acquired)"
            )
        return self.events[stream]

    def busy(self, stream: Stream) -> bool:
        return stream in self.feeds

    def error(self, stream: Stream) -> Exception | None:
        return self.errors.get(stream)

    def step(self) -> list[Stream]:
        """One forward for every stream with work; the streams that became idle."""
        streams = sorted(self.feeds, key=lambda stream: stream.home)
        if not streams:
            return []
        try:
            with torch.inference_mode():
                results = run_feeds(self.decoder.lm, [self.feeds[stream] for stream in streams])
                for stream, fed in zip(streams, results):
                    self._pump(stream, fed)
        except BaseException as error:  # no stream of the step knows where it is: none goes on
            failure = StepFailed(f"the batched step failed: {error!r}")
            for stream in streams:  # Ctrl-C too: the streams are not left waiting on a step
                self.errors[stream] = failure
                self.feeds.pop(stream, None)
            if not isinstance(error, Exception):
                raise
            raise failure from error
        return [stream for stream in streams if stream not in self.feeds]

    def _pump(self, stream: Stream, fed) -> None:
        events = self.events[stream]
        if stream.program is None or stream in self.errors:
            events.clear()
            return

        def next_event():
            return events.popleft() if events else None

        with torch.inference_mode():
            feed, error = run_program(
                self.decoder, stream, fed, next_event, f"stream {stream.home}"
            )
        if error is not None:
            self.errors[stream] = error
        if feed is None:
            self.feeds.pop(stream, None)
        else:
            self.feeds[stream] = feed
