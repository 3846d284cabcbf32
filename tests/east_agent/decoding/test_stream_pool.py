"""Streams lent to clients that send their units whenever they like: each client gets
what the sequential decoder writes, and the clients' forwards are shared."""

import random

import pytest

from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
from east_agent.decoding.stream_pool import NoFreeStream, StepFailed, StreamPool
from east_agent.decoding.waitk import OfflineWaitkDecoder, WaitkConfig
from tiny_east import synthetic_sentence


def build(kind, model, tokenizer, streams, beams=1):
    if kind == "east":
        config = DecoderConfig("de", "en", "low", num_beams=beams)
        return EastStreamDecoder(model, tokenizer, config, streams=streams)
    return OfflineWaitkDecoder(model, tokenizer, WaitkConfig("de", "en", 2), streams=streams)


def record(chunks, delays, decisions):
    return list(chunks), list(delays), list(decisions)


class Client:
    """Sends one sentence after another, a random number of units at a time."""

    def __init__(self, pool, sentences, rng):
        self.pool, self.sentences, self.rng = pool, list(sentences), rng
        self.stream = pool.acquire()
        self.sent = 0
        self.records = []
        pool.begin(self.stream)

    def done(self):
        return not self.sentences

    def act(self):
        """Send the next units when the stream is idle; collect a finished sentence."""
        if self.pool.busy(self.stream) or self.done():
            return
        stream, units = self.stream, self.sentences[0]
        if stream.finished:
            self.records.append(record(stream.chunks, stream.delays, stream.decisions))
            self.sentences.pop(0)
            self.sent = 0
            if self.sentences:
                self.pool.begin(stream)
            return
        count = self.rng.randint(1, 3)
        new = units[self.sent : self.sent + count]
        self.sent += len(new)
        self.pool.push(stream, new, source_finished=self.sent == len(units))


@pytest.mark.parametrize("kind, beams", [("east", 1), ("east", 3), ("waitk", 1)])
def test_clients_sending_at_their_own_pace_get_sequential_translations(
    east_model, east_tokenizer, kind, beams
):
    rng = random.Random(5 + beams)
    sentences = [synthetic_sentence(rng)[0] for _ in range(9)]
    sequential = build(kind, east_model, east_tokenizer, 1, beams)
    expected = [sequential.translate(units) for units in sentences]
    pool = StreamPool(build(kind, east_model, east_tokenizer, 3, beams))
    clients = [Client(pool, sentences[i::3], rng) for i in range(3)]
    steps, shared = 0, 0
    while not all(client.done() for client in clients):
        for client in rng.sample(clients, len(clients)):
            client.act()
        shared += len(pool.feeds) > 1
        steps += bool(pool.step())
    for index, client in enumerate(clients):
        for record_got, translation in zip(client.records, expected[index::3], strict=True):
            assert record_got == record(
                translation.chunks, translation.delays, translation.decisions
            )
    assert shared > 0  # some forwards really served several clients


def test_a_pool_lends_each_stream_once(east_model, east_tokenizer):
    pool = StreamPool(build("east", east_model, east_tokenizer, 2))
    first, second = pool.acquire(), pool.acquire()
    assert first is not second
    with pytest.raises(NoFreeStream, match="all 2 streams are in use"):
        pool.acquire()
    pool.release(first)
    assert pool.acquire() is first


def test_an_overflow_is_the_failing_clients_alone(east_model, east_tokenizer):
    config = DecoderConfig("de", "en", "low", max_context=60)
    pool = StreamPool(EastStreamDecoder(east_model, east_tokenizer, config, streams=2))
    long_one, short_one = pool.acquire(), pool.acquire()
    rng = random.Random(3)
    short_units = synthetic_sentence(rng)[0][:3]
    for stream in (long_one, short_one):
        pool.begin(stream)
    pool.push(long_one, ["Haus"] * 80, source_finished=True)
    pool.push(short_one, short_units, source_finished=True)
    while pool.feeds:
        pool.step()
    assert "more than 60 tokens" in str(pool.error(long_one))
    assert pool.error(short_one) is None and short_one.finished
    pool.begin(long_one)  # a new sentence clears the failure
    assert pool.error(long_one) is None


def test_a_pools_decoder_is_the_pools_alone(east_model, east_tokenizer):
    """Before: `push_unit` on a pool's decoder an AttributeError once its first stream was
    lent and released, a lent client's sentence wrecked while its forward was out, and a
    `translate_batch` rewound the clients' streams without a word."""
    from east_agent.decoding.batching import Sentence, translate_batch

    decoder = build("east", east_model, east_tokenizer, 2)
    batch = translate_batch(decoder, [Sentence(0, ["Haus"]), Sentence(1, ["Hund"])])
    next(batch)  # a batch running
    with pytest.raises(RuntimeError, match="a translate_batch of this decoder is running"):
        StreamPool(decoder)
    batch.close()
    decoder.reset()
    decoder.push_unit("Haus")
    with pytest.raises(RuntimeError, match="a sentence push_unit began is not finished"):
        StreamPool(decoder)
    decoder.reset()  # the pushed sentence dropped: the pool takes the decoder
    pool = StreamPool(decoder)
    client = pool.acquire()
    pool.begin(client)
    pool.push(client, ["Haus", "Hund"], source_finished=False)
    said = "this decoder's streams are lent by a StreamPool; build another decoder"
    for call in (
        decoder.reset,
        lambda: decoder.push_unit("Haus"),
        decoder.finish,
        lambda: list(translate_batch(decoder, [Sentence(0, ["Haus"])])),
        lambda: StreamPool(decoder),
    ):
        with pytest.raises(RuntimeError, match=said):
            call()
    with pytest.raises(RuntimeError, match=f"^translate: {said}"):  # before: "reset: ..."
        decoder.translate(["Haus"])
    pool.push(client, ["Katze"], source_finished=True)  # the client goes on, untouched
    run_steps(pool)
    assert client.finished and pool.error(client) is None


def run_steps(pool):
    while pool.feeds:
        pool.step()


@pytest.mark.parametrize("kind, beams", [("east", 1), ("east", 3), ("waitk", 1)])
def test_an_end_of_source_sent_on_its_own_finishes_the_sentence(
    east_model, east_tokenizer, kind, beams
):
    """A live client sends its last unit, then the end of the source with no unit: the
    stream ends as the sequential decoder's `finish()` does."""
    sequential = build(kind, east_model, east_tokenizer, 1, beams)
    pool = StreamPool(build(kind, east_model, east_tokenizer, 2, beams))
    stream = pool.acquire()
    rng = random.Random(9)
    for _ in range(3):
        units = synthetic_sentence(rng)[0]
        sequential.reset()
        for unit in units:
            sequential.push_unit(unit)
        sequential.finish()
        pool.begin(stream)
        for unit in units:
            pool.push(stream, [unit], source_finished=False)
            run_steps(pool)
        pool.push(stream, [], source_finished=True)
        run_steps(pool)
        assert stream.finished and pool.error(stream) is None
        first = sequential.streams[0]
        assert record(stream.chunks, stream.delays, stream.decisions) == record(
            first.chunks, first.delays, first.decisions
        )


def test_units_sent_while_a_forward_is_out_wait_for_it(east_model, east_tokenizer):
    pool = StreamPool(build("east", east_model, east_tokenizer, 1))
    stream = pool.acquire()
    pool.begin(stream)
    units = synthetic_sentence(random.Random(2))[0]
    pool.push(stream, units[:1], source_finished=False)
    assert pool.busy(stream)
    pool.push(stream, units[1:], source_finished=True)
    run_steps(pool)
    expected = build("east", east_model, east_tokenizer, 1).translate(units)
    assert stream.finished and (stream.chunks, stream.delays) == (
        expected.chunks,
        expected.delays,
    )


def test_a_unit_the_program_refuses_is_the_streams_error(east_model, east_tokenizer):
    """Not a dead program that swallows every later unit: the error is kept, and a new
    sentence starts afresh."""
    pool = StreamPool(build("east", east_model, east_tokenizer, 1))
    stream = pool.acquire()
    pool.begin(stream)
    pool.push(stream, ["  "], source_finished=False)
    assert isinstance(pool.error(stream), ValueError) and not pool.busy(stream)
    units = synthetic_sentence(random.Random(2))[0]
    pool.begin(stream)
    pool.push(stream, units, source_finished=True)
    run_steps(pool)
    assert pool.error(stream) is None and stream.finished


def test_a_fault_of_the_program_is_a_failed_step_not_the_sentences(
    east_model, east_tokenizer, monkeypatch
):
    """A bug (not the input's fault) is logged and held as StepFailed: a server answers 500."""
    decoder = build("east", east_model, east_tokenizer, 1)
    pool = StreamPool(decoder)
    stream = pool.acquire()
    pool.begin(stream)

    def broken(stream, unit, is_last):
        raise TypeError("a bug")
        yield

    monkeypatch.setattr(decoder, "_push", broken)
    pool.push(stream, ["Hund"], source_finished=False)
    assert isinstance(pool.error(stream), StepFailed) and "TypeError('a bug')" in str(
        pool.error(stream)
    )


def test_a_failed_step_fails_its_streams_and_drops_their_work(
    east_model, east_tokenizer, monkeypatch
):
    """A forward that raises (out of memory, say) leaves no stream of it half-way: each
    holds the failure and no work, so the next step does not try it again; a new
    sentence on the stream translates as the sequential decoder does."""
    from east_agent.decoding import stream_pool

    pool = StreamPool(build("east", east_model, east_tokenizer, 3))
    first, second, idle = pool.acquire(), pool.acquire(), pool.acquire()
    units = synthetic_sentence(random.Random(4))[0]
    for stream in (first, second, idle):
        pool.begin(stream)
    pool.push(first, units[:1], source_finished=False)
    pool.push(second, units[:2], source_finished=False)
    real_forward = stream_pool.run_feeds

    def out_of_memory(lm, feeds):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(stream_pool, "run_feeds", out_of_memory)
    with pytest.raises(StepFailed, match="the batched step failed: .*out of memory"):
        pool.step()
    assert isinstance(pool.error(first), StepFailed) and pool.error(second) is pool.error(first)
    assert pool.error(idle) is None and not pool.feeds and pool.step() == []
    monkeypatch.setattr(stream_pool, "run_feeds", real_forward)
    pool.begin(first)
    pool.push(first, units, source_finished=True)
    while pool.feeds:
        pool.step()
    expected = build("east", east_model, east_tokenizer, 1).translate(units)
    assert pool.error(first) is None and first.chunks == expected.chunks


def test_units_and_streams_a_push_is_given_are_checked(east_model, east_tokenizer):
    """Before: a string's letters were read as units, a number failed inside the program as
    StepFailed, a released stream's push was a KeyError, and units pushed after the
    sentence finished were dropped without a word."""
    pool = StreamPool(build("east", east_model, east_tokenizer, 2))
    stream = pool.acquire()
    pool.begin(stream)
    with pytest.raises(TypeError, match="push: a sequence of source units, not a string"):
        pool.push(stream, "Katze", True)
    with pytest.raises(TypeError, match="push: unit 1: a source unit is a string, got int 5"):
        pool.push(stream, ["Die", 5], True)
    assert not pool.busy(stream) and pool.error(stream) is None  # nothing was queued
    pool.push(stream, ["Die", "Katze"], source_finished=True)
    run_steps(pool)
    assert stream.finished
    with pytest.raises(RuntimeError, match=r"sentence is finished; begin\(\) the next first"):
        pool.push(stream, ["Hund"], source_finished=True)
    pool.push(stream, [], source_finished=True)  # nothing new: taken, as a server may send
    pool.release(stream)
    with pytest.raises(RuntimeError, match=r"push: stream \d+ is not lent by this pool"):
        pool.push(stream, ["Hund"], source_finished=False)


def test_an_interrupted_step_leaves_no_stream_waiting_on_it(
    east_model, east_tokenizer, monkeypatch
):
    """Ctrl-C in a forward is raised as it is; its streams hold a failure, not a feed."""
    from east_agent.decoding import stream_pool

    pool = StreamPool(build("east", east_model, east_tokenizer, 2))
    stream = pool.acquire()
    pool.begin(stream)
    pool.push(stream, ["Die"], source_finished=False)

    def interrupted(lm, feeds):
        raise KeyboardInterrupt

    monkeypatch.setattr(stream_pool, "run_feeds", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pool.step()
    assert isinstance(pool.error(stream), StepFailed) and not pool.feeds


def test_units_for_a_failed_sentence_are_refused_not_dropped(east_model, east_tokenizer):
    """Before: taken and dropped without a word, as units for a finished sentence were."""
    pool = StreamPool(build("east", east_model, east_tokenizer, 1))
    stream = pool.acquire()
    pool.begin(stream)
    pool.push(stream, ["  "], source_finished=False)
    assert pool.error(stream) is not None
    with pytest.raises(RuntimeError, match=r"sentence failed \(.*\); begin\(\) the next"):
        pool.push(stream, ["Hund"], source_finished=False)
