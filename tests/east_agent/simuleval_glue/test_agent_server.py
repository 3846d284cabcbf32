"""The session server's stepping (`AgentService`), driven in-process: a forward waits for the
sessions between two requests (`--batch-wait-ms`), and what each client gets does not
depend on it. The HTTP side is tested in `test_shared_task.py` and `test_remote_eval.py`."""

import asyncio
import random
import time

import pytest
from simuleval.data.segments import EmptySegment, TextSegment

from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
from east_agent.decoding.stream_pool import StreamPool
from east_agent.simuleval_glue.agent_server import AgentService, RequestError
from tiny_east import synthetic_sentence


def segment_json(unit, finished):
    return TextSegment(index=0, content=unit, finished=finished, tgt_lang="en").json().encode()


async def client(service, name, sentences, pause):
    """SimulEval's client: a unit, then its output, then (after `pause` seconds, the
    client's own work) the next unit; the text written for each sentence."""
    written = []
    for units in sentences:
        service.reset(name)
        text = []
        for position, unit in enumerate(units):
            last = position == len(units) - 1
            service.push(name, segment_json(unit, last))
            while True:
                segment = await service.pop(name)
                text.append(segment.content or "")  # an empty segment holds []
                if not last or segment.finished:
                    break
            await asyncio.sleep(pause)
        written.append("".join(text))
    service.close(name)  # as east-remote-eval's sessions do
    return written


def serve(model, tokenizer, sentences, pauses, batch_wait):
    config = DecoderConfig("de", "en", "low")
    decoder = EastStreamDecoder(model, tokenizer, config, streams=len(pauses))
    service = AgentService(StreamPool(decoder), "en", timeout=600, batch_wait=batch_wait)

    async def clients():
        runs = [
            client(service, f"s{number}", sentences[number :: len(pauses)], pause)
            for number, pause in enumerate(pauses)
        ]
        return await asyncio.wait_for(asyncio.gather(*runs), 120)

    return asyncio.run(clients()), service.steps


def test_a_forward_waits_for_the_sessions_between_requests(east_model, east_tokenizer):
    rng = random.Random(11)
    sentences = [synthetic_sentence(rng)[0] for _ in range(6)]
    # clients out of step with each other: pauses longer than a step even on a loaded
    # machine (a few ms idle), or without waiting they would fall into step by chance
    pauses = [0.0, 0.02, 0.04]
    alone, steps_alone = serve(east_model, east_tokenizer, sentences, pauses, 0.0)
    waited, steps_waited = serve(east_model, east_tokenizer, sentences, pauses, 5.0)
    assert waited == alone  # the same translations, in fewer and fuller forwards
    assert steps_waited < 0.8 * steps_alone
    sequential = EastStreamDecoder(east_model, east_tokenizer, DecoderConfig("de", "en", "low"))
    expected = ["".join(sequential.translate(units).chunks) for units in sentences]
    assert [text for number in range(3) for text in waited[number]] == (
        expected[0::3] + expected[1::3] + expected[2::3]
    )


def test_a_session_that_stays_away_is_waited_for_once(east_model, east_tokenizer):
    """A client that keeps its session open and idle (here: one that has not sent its
    first unit yet) costs the others one wait, not one a step: a 3 s wait a step would
    end the run by `wait_for`'s 120 s."""
    rng = random.Random(12)
    sentences = [synthetic_sentence(rng)[0] for _ in range(2)]
    config = DecoderConfig("de", "en", "low")
    decoder = EastStreamDecoder(east_model, east_tokenizer, config, streams=2)
    service = AgentService(StreamPool(decoder), "en", timeout=600, batch_wait=3.0)

    async def run():
        service.reset("idle")  # open, never sends a unit
        service.returning.add("idle")  # as if the last step had answered it
        return await asyncio.wait_for(client(service, "busy", sentences, 0.0), 120)

    written = asyncio.run(run())
    assert len(written) == 2 and service.steps > 10


def one_stream_service(model, tokenizer, timeout: float = 600) -> AgentService:
    decoder = EastStreamDecoder(model, tokenizer, DecoderConfig("de", "en", "low"), streams=1)
    return AgentService(StreamPool(decoder), "en", timeout=timeout)


def wrap_forward(monkeypatch, forward) -> None:
    """The pool's batched forward becomes `forward(real_forward, lm, feeds)`."""
    from east_agent.decoding import stream_pool

    real_forward = stream_pool.run_feeds
    monkeypatch.setattr(
        stream_pool, "run_feeds", lambda lm, feeds: forward(real_forward, lm, feeds)
    )


def test_a_session_is_idle_from_its_answer_not_from_its_request(
    east_model, east_tokenizer, monkeypatch
):
    """A forward longer than `--session-timeout` must not make the session that waited
    for it look idle the moment it has its answer."""

    def slow(real_forward, lm, feeds):
        time.sleep(0.3)
        return real_forward(lm, feeds)

    wrap_forward(monkeypatch, slow)
    service = one_stream_service(east_model, east_tokenizer, timeout=0.2)

    async def run():
        service.reset("s")
        service.push("s", segment_json("Ein", False))
        await service.pop("s")
        service.drop_idle()

    asyncio.run(run())
    assert "s" in service.sessions
    time.sleep(0.25)
    service.drop_idle()  # and idle it is, once the timeout has passed since
    assert "s" not in service.sessions


def test_a_dropped_session_is_not_continued_from_the_middle_of_its_sentence(
    east_model, east_tokenizer
):
    """A client that comes back after `--session-timeout` (paused, asleep) with the rest of
    its sentence gets 404: before, a new session took the rest on a fresh stream, and its
    translation, wrong, was answered with 200."""
    service = one_stream_service(east_model, east_tokenizer, timeout=0.05)

    async def run():
        service.reset("s")
        service.push("s", segment_json("Ein", False))
        await service.pop("s")
        time.sleep(0.1)
        service.drop_idle()
        with pytest.raises(RequestError, match="no session 's': POST /reset opens one") as gone:
            service.push("s", segment_json("Mann", True))
        assert gone.value.status == 404 and "s" not in service.sessions
        with pytest.raises(RequestError, match="no session 's'"):
            await service.pop("s")
        service.reset("s")  # the sentence again, from its start
        service.push("s", segment_json("Ein", True))
        return await service.pop("s")

    assert asyncio.run(run()).finished


def test_a_closed_session_is_not_opened_again(east_model, east_tokenizer):
    """A client's reset still queued on an old connection when its close came first on a
    new one reopened the session: a stream no client owned, held until --session-timeout
    (a probe, server paused mid-run). The legacy session (no name: SimulEval's evaluator)
    opens again as before."""
    from east_agent.simuleval_glue.agent_server import LEGACY_SESSION

    service = one_stream_service(east_model, east_tokenizer)
    service.reset("s")
    service.close("s")
    for request in (lambda: service.reset("s"), lambda: service.push("s", b"{}")):
        with pytest.raises(RequestError, match="'s' was closed .* not opened again") as gone:
            request()
        assert gone.value.status == 410 and not service.sessions
    assert len(service.pool.free) == 1  # the stream is back, and stays free
    with pytest.raises(RequestError, match="'s' was closed") as again:  # closed twice
        service.close("s")
    assert again.value.status == 410
    # a session dropped for being idle, then closed: its close 404, the name gone all the
    # same (a review: a reset queued behind that close opened it again)
    service.reset("idle")
    service._end("idle")  # as drop_idle does
    with pytest.raises(RequestError, match="no session 'idle'"):
        service.close("idle")
    with pytest.raises(RequestError, match="'idle' was closed"):
        service.reset("idle")
    assert len(service.pool.free) == 1
    service.reset(LEGACY_SESSION)
    service.close(LEGACY_SESSION)
    service.reset(LEGACY_SESSION)
    assert LEGACY_SESSION in service.sessions


def test_a_failed_step_fails_its_sessions_and_leaves_them_usable(
    east_model, east_tokenizer, monkeypatch
):
    """A forward that fails (out of memory, say) answers 500 naming it; its work is not
    tried again in the next step, and a reset starts the session afresh."""
    failures = [RuntimeError("out of memory")]

    def fails_once(real_forward, lm, feeds):
        if failures:
            raise failures.pop()
        return real_forward(lm, feeds)

    wrap_forward(monkeypatch, fails_once)
    service = one_stream_service(east_model, east_tokenizer)

    async def run():
        service.reset("s")
        service.push("s", segment_json("Ein", False))
        for _ in range(2):  # answered, then asked again without a reset
            with pytest.raises(
                RequestError, match="the batched step failed: .*out of memory"
            ) as error:
                await service.pop("s")
            assert error.value.status == 500 and not service.pool.feeds
        service.reset("s")  # not "waiting for its output already" (409) for ever
        service.push("s", segment_json("Ein", True))
        while not (await service.pop("s")).finished:
            pass

    asyncio.run(run())
    assert not failures


def test_closing_a_session_answers_the_request_waiting_on_it(east_model, east_tokenizer):
    """As east-remote-eval does on Ctrl-C: the waiting request gets 409, not a traceback."""
    service = one_stream_service(east_model, east_tokenizer)

    async def run():
        service.reset("s")
        service.push("s", segment_json("Ein", False))
        waiting = asyncio.ensure_future(service.pop("s"))
        await asyncio.sleep(0)  # the request now waits for the step
        assert service.sessions["s"].waiter is not None
        service.close("s")
        with pytest.raises(RequestError, match="'s' was closed while it waited") as error:
            await waiting
        assert error.value.status == 409

    asyncio.run(run())
    assert not service.sessions and len(service.pool.free) == 1


def test_the_served_settings_leave_out_each_clients_own():
    """The data files and the units a client's log records its translations in are the
    client's (before: the server's --eval-latency-unit counted as another system's)."""
    from east_agent.agent import EastAgent
    from east_agent.simuleval_glue.agent_server import served_settings
    from east_agent.simuleval_glue.batch import parse_args

    argv = ["--model-path", "m", "--src-lang", "de", "--tgt-lang", "en", "--source", "s.txt"]
    served = served_settings(
        EastAgent, parse_args(EastAgent, [*argv, "--eval-latency-unit", "char"])
    )
    assert served["latency"] == "low" and served["src_lang"] == "de"
    assert not {"source", "target", "eval_latency_unit", "eval_latency_spm_model"} & set(served)


def test_a_segment_holding_a_lone_surrogate_is_a_bad_request():
    """Before: 500 from the stream's program (the tokenizer took no such string)."""
    from east_agent.simuleval_glue.agent_server import parse_segment

    body = b'{"data_type": "text", "content": "Hund\\ud800", "finished": false}'
    with pytest.raises(RequestError, match="lone surrogate") as refused:
        parse_segment(body)
    assert refused.value.status == 400
    good = parse_segment('{"data_type": "text", "content": "Grüße", "finished": false}'.encode())
    assert good.content == "Grüße"


@pytest.mark.parametrize(
    "body",
    [
        b'{"data_type": "text", "content": "Ein", "finished": false, "config": '
        + b'{"a": ' * 5000
        + b"1"
        + b"}" * 5000
        + b"}",
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["config", "array"],
)
def test_json_nested_too_deeply_is_a_bad_request(body):
    """Before: a RecursionError, 500 and a traceback in the server's log."""
    from east_agent.simuleval_glue.agent_server import parse_segment

    with pytest.raises(RequestError, match="nested too deeply") as refused:
        parse_segment(body)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "address, message",
    [
        ("nosuch.invalid", "--remote-address nosuch.invalid: no such address"),
        ("192.0.2.1", "--remote-address 192.0.2.1: not an address of this machine"),
    ],
)
def test_an_address_the_server_cannot_listen_on_is_named(address, message):
    """Before: "--remote-port N: cannot listen ... another server there? choose another
    port", whatever was wrong."""
    from east_agent.simuleval_glue.agent_server import listening_sockets

    with pytest.raises(ValueError) as refused:
        listening_sockets(address, 18777)
    assert str(refused.value).startswith(message)


def test_a_unit_after_the_source_finished_is_refused(east_model, east_tokenizer):
    """Before: 200, the unit dropped. An empty finished segment (what SimulEval's
    evaluator sends while it waits for the rest of the translation) is still taken."""
    service = one_stream_service(east_model, east_tokenizer)

    async def run():
        service.reset("s")
        service.push("s", segment_json("Hallo", True))
        service.push("s", EmptySegment(finished=True).json().encode())
        with pytest.raises(RequestError) as refused:
            service.push("s", segment_json("Welt", False))
        with pytest.raises(RequestError, match="its source has finished"):
            service.push("s", EmptySegment(finished=False).json().encode())  # reopened
        service.reset("s")  # the next sentence
        service.push("s", segment_json("Welt", False))
        return refused.value

    refused = asyncio.run(run())
    assert refused.status == 409 and "its source has finished" in str(refused)


def test_a_segment_asking_for_another_target_language_is_a_bad_request(east_model, east_tokenizer):
    """Before: the segment's `tgt_lang` ignored, a French request answered in English."""
    service = one_stream_service(east_model, east_tokenizer)
    service.reset("s")
    french = TextSegment(index=0, content="Hallo", finished=False, tgt_lang="fr")
    with pytest.raises(
        RequestError, match="asks for tgt_lang 'fr'; this server translates into English"
    ) as refused:
        service.push("s", french.json().encode())
    assert refused.value.status == 400 and not service.sessions["s"].states.source
    for same in ("en", "English", "en-US", "en_GB", "", "x-klingon", None):
        unit = TextSegment(index=0, content="Hallo", finished=False, tgt_lang=same)
        service.push("s", unit.json().encode())
    assert service.sessions["s"].states.source == ["Hallo"] * 7


@pytest.mark.parametrize("content", ["", "  "])
def test_an_empty_text_segment_that_finishes_ends_the_source(east_model, east_tokenizer, content):
    """A text segment with no unit, `finished`, ends the source as SimulEval's empty
    segment does (before: 200, then 422 for an empty unit at GET /output); unfinished it
    carries nothing and is a bad request when sent."""
    units = synthetic_sentence(random.Random(13))[0]

    async def translate(end: bytes) -> str:
        service = one_stream_service(east_model, east_tokenizer)
        service.reset("s")
        text = []
        for unit in units:
            service.push("s", segment_json(unit, False))
            text.append((await service.pop("s")).content or "")
        service.push("s", end)
        while True:
            segment = await service.pop("s")
            text.append(segment.content or "")
            if segment.finished:
                return "".join(text)

    as_empty = asyncio.run(translate(EmptySegment(finished=True).json().encode()))
    assert asyncio.run(translate(segment_json(content, True))) == as_empty
    service = one_stream_service(east_model, east_tokenizer)
    service.reset("s")
    with pytest.raises(RequestError, match="an empty 'content' carries no unit") as refused:
        service.push("s", segment_json(content, False))
    assert refused.value.status == 400


def test_a_failed_sentence_keeps_answering_its_error_until_reset(east_model, east_tokenizer):
    """Units sent after the sentence failed: its error again (422), not the pool's refusal
    of units for a failed sentence as a server fault."""
    service = one_stream_service(east_model, east_tokenizer)

    async def run():
        service.reset("s")
        service.push("s", segment_json("Mann<|eot_id|>", False))
        answers = []
        for unit in ("Hund", "Katze"):
            with pytest.raises(RequestError) as refused:
                await service.pop("s")
            answers.append(refused.value)
            service.push("s", segment_json(unit, False))
        service.reset("s")
        service.push("s", segment_json("Hund", False))
        await service.pop("s")
        return answers

    answers = asyncio.run(run())
    assert [answer.status for answer in answers] == [422, 422]
    assert all("this sentence has ended: POST /reset starts the next" in str(a) for a in answers)
