"""`east-simuleval --standalone`: this package's agents served over HTTP, one session per client.

SimulEval's protocol (`POST /reset`, `PUT /input`, `GET /output`) has no sessions: its
server keeps one agent state, so two clients interleaving their requests silently get
mixtures of both translations. Here a client names its session (the `X-Session-Id`
header, or `?session=` in the URL) and every session has its own stream of one decoder
built with `--batch-size` streams (`east_agent.decoding.stream_pool`): the forwards of all the
sessions waiting for output run together, so concurrent listeners share the device, and
each gets exactly what a local run writes. A client that names no session (SimulEval's
own remote evaluator) uses the one *legacy* session, as with SimulEval's server: two such
clients cannot be told apart.

- `POST /reset` starts a sentence (and opens the session); `POST /close` ends the session
  (a request still waiting for its output then gets 409). Any other request of a session
  that is not open gets 404: one dropped for being idle lost its sentence, which is not
  continued on a new stream from the middle (a wrong translation). A closed session is
  not opened again (410, even by `POST /reset`): a reset a client sent before its close,
  queued behind it, would hold a stream no client owns.
- `POST /step` is `PUT /input` and `GET /output` in one request (the input segment in,
  the output segment out): half the requests a sentence takes. `GET /` says the server
  takes it (`"step": true`), and `east-remote-eval` then uses it.
- A body over 1 MiB gets 413 naming the limit (the client fails that sentence alone);
  a body that is not a JSON segment object, or lacks a key, gets 400 naming the problem; a
  new session when every stream is in use gets 503; a sentence that overflows the
  context gets 422; a forward that fails gets 500 naming the error, for every session
  whose sentence was in it, and none of them is tried again (each session stays usable
  after a reset).
- The server listens on 127.0.0.1 unless `--remote-address` names another address.
- The evaluator's flags (`--source`, `--target`, `--output`, the metrics ...) are refused:
  the client reads the data and scores (`east-remote-eval`); the server would ignore them.
- A session idle for `--session-timeout` seconds is dropped (its stream goes back).
- Before each forward the server waits up to `--batch-wait-ms` (5) for the sessions the
  forward before it answered (their clients read the answer and send the next unit), so
  that they join this forward rather than the next: a dynamic batcher's queue delay.
  A session that is not back by then is not waited for again until it is answered
  again, so a client that keeps its session open and idle costs one wait at most.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from east_agent.common.arguments import given_flags, non_negative_int, positive_int
from east_agent.simuleval_glue.server_sessions import SESSION_HEADER

if TYPE_CHECKING:  # the client (`east-remote-eval`) imports this module without torch
    from simuleval.agents.states import AgentStates
    from simuleval.data.segments import Segment
    from tornado import web

    from east_agent.decoding.stream_pool import StreamPool
    from east_agent.decoding.streaming import Stream
    from east_agent.simuleval_glue.adapter import StreamingAgent

logger = logging.getLogger("east_agent.simuleval_glue.agent_server")

LEGACY_SESSION = ""
CLOSED_KEPT = 100_000  # closed session names remembered (a client names each anew: uuid4)
MAX_BODY_BYTES = 1 << 20  # a request's body: a segment of one source unit, or a few
# what the server reads of a body, the bytes above MAX_BODY_BYTES read and dropped, so
# that a body too large gets 413 with the limit named, not tornado's bare 400 or a dropped
# connection (which a client that sends its whole body before it reads takes for a lost
# server); above it, the connection is closed
READ_LIMIT_BYTES = 1 << 30
DEFAULT_SESSIONS = 8
DEFAULT_BATCH_WAIT_MS = 5


class RequestError(ValueError):
    """A request the server refuses; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Session:
    stream: Stream
    states: AgentStates  # the source and target as SimulEval keeps them
    last_seen: float = field(default_factory=time.monotonic)
    pushed: int = 0  # source units handed to the stream
    written: int = 0  # chunks sent to the client
    waiter: asyncio.Future | None = None


class AgentService:
    """The sessions of one server and the loop that steps their streams."""

    def __init__(
        self,
        pool: StreamPool,
        target_language: str,
        timeout: float,
        batch_wait: float = 0.0,
        settings: dict | None = None,
    ) -> None:
        self.pool, self.target_language, self.timeout = pool, target_language, timeout
        self.settings = settings  # what decides its translations, as a local run records it
        self.batch_wait = batch_wait  # seconds a step waits for sessions between requests
        self.sessions: dict[str, Session] = {}
        self.closed: dict[str, None] = {}  # names closed (`POST /close`), oldest first
        self.runner: asyncio.Task | None = None
        self.returning: set[str] = set()  # answered by the last step, not back yet
        self.arrived = asyncio.Event()  # one of them is back
        self.steps = 0

    def info(self) -> dict:
        info = {
            "info": type(self.pool.decoder).__name__,
            "source_language": self.pool.decoder.src_lang,  # how its source units join
            "streams": self.pool.size,
            "sessions": len(self.sessions),
            "step": True,  # POST /step: an input and its output in one request
        }
        if self.settings is not None:  # recorded by the client, compared when it resumes
            info["settings"] = self.settings
        return info

    def session(self, name: str, opening: bool = False) -> Session:
        """The session `name`; with `opening` (a reset) a new one if it is not open."""
        session = self.sessions.get(name)
        if session is None:
            if name in self.closed:  # before: a reset queued behind the close reopened it,
                raise self._closed_error(name)  # holding a stream no one owned till the timeout
            if not opening:
                raise RequestError(
                    404, f"no session {name!r}: POST /reset opens one (a session idle for "
                    f"{self.timeout:g} s, --session-timeout, is dropped with its sentence)"
                )  # fmt: skip
            session = self._open(name)
        session.last_seen = time.monotonic()
        return session

    def _open(self, name: str) -> Session:
        from simuleval.agents.states import AgentStates

        from east_agent.decoding.stream_pool import NoFreeStream

        try:
            stream = self.pool.acquire()
        except NoFreeStream as error:
            raise RequestError(503, f"{error}; retry later or start the server with a "
                               "larger --batch-size") from None  # fmt: skip
        self.pool.begin(stream)
        session = self.sessions[name] = Session(stream, AgentStates())
        logger.info("session %r opened (%d open)", name, len(self.sessions))
        return session

    def reset(self, name: str) -> None:
        session = self.session(name, opening=True)
        self._check_idle(session, name)
        session.states.reset()
        session.pushed = session.written = 0
        self.pool.begin(session.stream)

    def close(self, name: str) -> None:
        """`POST /close`: the session ends, and its name is not opened again, a session
        dropped for being idle too (its close gets 404, and a reset queued behind it 410)."""
        if name in self.closed:
            raise self._closed_error(name)
        if name != LEGACY_SESSION:  # SimulEval's evaluator names none: it resets it again
            self.closed[name] = None
            if len(self.closed) > CLOSED_KEPT:
                del self.closed[next(iter(self.closed))]
        self._end(name)
        logger.info("session %r closed (%d open)", name, len(self.sessions))

    @staticmethod
    def _closed_error(name: str) -> RequestError:
        return RequestError(
            410, f"session {name!r} was closed (POST /close): a closed session is not opened "
            "again; name a new one"
        )  # fmt: skip

    def _end(self, name: str) -> None:
        """The session gone, its stream back (a request waiting for it gets 409)."""
        session = self.sessions.pop(name, None)
        if session is None:
            raise RequestError(404, f"no session {name!r}")
        _settle(session.waiter, RequestError(409, f"session {name!r} was closed while it waited"))
        self.pool.release(session.stream)
        self._back(name)  # not to be waited for

    def push(self, name: str, body: bytes) -> None:
        session = self.session(name)
        self._check_idle(session, name)
        segment = parse_segment(body)
        self._check_target_language(segment)
        if session.states.source_finished and (
            getattr(segment, "content", None) or not segment.finished
        ):  # a unit, or a source said unfinished again
            raise RequestError(  # before: 200, the unit dropped
                409, f"session {name!r}: its source has finished (a segment said so); "
                "POST /reset starts the next sentence"
            )  # fmt: skip
        session.states.update_config(segment.config)
        session.states.update_source(segment)

    def _check_target_language(self, segment: Segment) -> None:
        """A segment that names a known target language (SimulEval's `tgt_lang`; `en-US`
        by its language) must name this server's (before: ignored, a French request
        answered in English with 200). SimulEval's own evaluator sends none."""
        from east_agent.decoding.prompt import known_language_name, language_name

        asked = getattr(segment, "tgt_lang", None)
        if not isinstance(asked, str):
            return
        try:
            language = language_name(asked.replace("_", "-").split("-")[0])
        except ValueError:  # no language this package knows: nothing to compare
            return
        if language != known_language_name(self.target_language):
            raise RequestError(
                400, f"the segment asks for tgt_lang {asked!r}; this server translates "
                f"into {known_language_name(self.target_language)}"
            )  # fmt: skip

    async def pop(self, name: str) -> Segment:
        from simuleval.data.segments import EmptySegment, TextSegment

        from east_agent.decoding.stream_pool import StepFailed

        session = self.session(name)
        self._check_idle(session, name)
        self._back(name)
        states, stream = session.states, session.stream
        if states.target_finished:
            return EmptySegment(finished=True)
        units = states.source[session.pushed :]
        session.pushed = len(states.source)
        if self.pool.error(stream) is None:  # a failed sentence: its error again, below
            self.pool.push(stream, units, states.source_finished)
        if self.pool.busy(stream):
            session.waiter = asyncio.get_running_loop().create_future()
            self._start_runner()
            try:
                await session.waiter
            finally:  # a failed step leaves the session usable; idle from its answer on
                session.waiter = None
                session.last_seen = time.monotonic()
        if (error := self.pool.error(stream)) is not None:
            status = 500 if isinstance(error, StepFailed) else 422  # 422: the sentence's fault
            raise RequestError(
                status, f"session {name!r}: {error} (this sentence has ended: POST /reset "
                "starts the next)"
            )  # fmt: skip
        text = "".join(stream.chunks[session.written :])
        session.written = len(stream.chunks)
        if not text and not stream.finished:
            return EmptySegment()
        segment = TextSegment(
            index=0, content=text, finished=stream.finished, tgt_lang=self.target_language
        )
        states.update_target(segment)
        return segment

    def _check_idle(self, session: Session, name: str) -> None:
        if session.waiter is not None:
            raise RequestError(409, f"session {name!r} is waiting for its output already")

    def _start_runner(self) -> None:
        if self.runner is None or self.runner.done():
            self.runner = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        """Step every stream with work, one forward for all of them, until none has any;
        between steps the requests that arrived meanwhile join."""
        while self.pool.feeds:
            await self._gather()
            try:
                idle = self.pool.step()
                self.steps += 1
            except Exception:  # every waiting client's stream is failed (`pop`: a 500)
                logger.exception("a batched step failed")
                for session in self.sessions.values():
                    _settle(session.waiter)
                return
            by_stream = {session.stream: name for name, session in self.sessions.items()}
            for stream in idle:
                if stream in by_stream:
                    name = by_stream[stream]
                    _settle(self.sessions[name].waiter)
                    self.returning.add(name)
            await asyncio.sleep(0)

    def _back(self, name: str) -> None:
        if name in self.returning:
            self.returning.discard(name)
            self.arrived.set()

    async def _gather(self) -> None:
        """Wait up to `batch_wait` for the sessions the last step answered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_wait
        while self.returning and (left := deadline - loop.time()) > 0:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except asyncio.TimeoutError:  # TimeoutError from Python 3.11
                break
        self.returning.clear()

    def drop_idle(self) -> None:
        now = time.monotonic()
        for name, session in list(self.sessions.items()):
            if session.waiter is None and now - session.last_seen > self.timeout:
                logger.info("session %r idle for %.0f s: dropped", name, now - session.last_seen)
                self._end(name)  # its client may reset it again, from a sentence's start


def _settle(waiter: asyncio.Future | None, error: Exception | None = None) -> None:
    if waiter is None or waiter.done():
        return
    if error is None:
        waiter.set_result(None)
    else:
        waiter.set_exception(error)


def is_unicode_text(text: str) -> bool:
    """JSON's `\\ud800` escapes decode to lone surrogates, which no text holds."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_segment(body: bytes) -> Segment:
    """A SimulEval text segment from a request body; RequestError(400) names what is wrong."""
    from simuleval.data.segments import segment_from_json_string

    try:
        info = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestError(400, f"the body is not JSON: {error}") from None
    except RecursionError:
        raise RequestError(400, "the body's JSON is nested too deeply") from None
    if not isinstance(info, dict):
        raise RequestError(400, f"the body must be a JSON object, got {type(info).__name__}")
    for key, kinds in (("data_type", (str, type(None))), ("finished", (bool,))):
        if key not in info:
            raise RequestError(400, f"the segment has no {key!r}")
        if not isinstance(info[key], kinds):
            raise RequestError(400, f"the segment's {key!r} has the wrong type")
    if info["data_type"] == "text" and not isinstance(info.get("content"), str):
        raise RequestError(400, "a text segment needs a string 'content'")
    if info["data_type"] == "text" and not is_unicode_text(info["content"]):
        raise RequestError(400, "the segment's 'content' holds a lone surrogate (\\ud800-\\udfff)")
    if info["data_type"] not in ("text", None):
        raise RequestError(400, f"this server translates text, not {info['data_type']!r}")
    if info["data_type"] is None and info.get("content") not in (None, "", []):
        raise RequestError(  # SimulEval's empty segment: its content would be dropped
            400, "a segment with no 'data_type' (empty) carries no content; send text with "
            "'data_type': 'text'"
        )  # fmt: skip
    if not isinstance(info.get("config", {}), dict):
        raise RequestError(400, "the segment's 'config' must be an object")
    if info["data_type"] == "text" and not info["content"].strip():
        if not info["finished"]:  # before: 200, then 422 for the empty unit at GET /output
            raise RequestError(
                400, "a text segment with an empty 'content' carries no unit: send one, or "
                "'finished': true to end the source"
            )  # fmt: skip
        info = {**info, "data_type": None, "content": [], "is_empty": True}  # the end, no unit
    try:
        return segment_from_json_string(json.dumps(info))
    except (TypeError, RecursionError) as error:
        raise RequestError(400, f"not a SimulEval segment: {error}") from None


def build_app(service: AgentService) -> web.Application:
    from tornado import web

    @web.stream_request_body
    class Handler(web.RequestHandler):
        """An endpoint: its methods (`SUPPORTED_METHODS`, others get 405) all `answer`. A
        request's body is read as it comes, kept up to `MAX_BODY_BYTES` and above that
        only counted, and a body too large is refused with 413 once it is read."""

        def session_name(self) -> str:
            return self.request.headers.get(SESSION_HEADER) or self.get_query_argument(
                "session", LEGACY_SESSION
            )

        def prepare(self) -> None:
            self.body_parts: list[bytes] = []
            self.body_size = 0

        def data_received(self, chunk: bytes) -> None:
            self.body_size += len(chunk)
            if self.body_size <= MAX_BODY_BYTES:
                self.body_parts.append(chunk)
            else:
                self.body_parts.clear()

        async def get(self) -> None:
            try:
                if self.body_size > MAX_BODY_BYTES:
                    raise RequestError(
                        413,
                        f"the request's body has {self.body_size} bytes, above this "
                        f"server's limit of {MAX_BODY_BYTES} (a segment of a source unit "
                        "or a few)",
                    )
                await self.answer()
            except RequestError as error:
                self.set_status(error.status)
                self.finish({"error": str(error)})

        post = put = get

        def body(self) -> bytes:
            return b"".join(self.body_parts)

        async def answer(self) -> None:
            raise NotImplementedError

        async def send_output(self, take_input: bool = False) -> None:
            """The session's next output (`take_input`: the body is its input, first)."""
            if take_input:
                service.push(self.session_name(), self.body())
            segment = await service.pop(self.session_name())
            self.write(segment.json())

    class Info(Handler):
        SUPPORTED_METHODS = ("GET",)

        async def answer(self) -> None:
            self.write(json.dumps(service.info()))

    class Reset(Handler):
        SUPPORTED_METHODS = ("POST",)

        async def answer(self) -> None:
            service.reset(self.session_name())

    class Close(Handler):
        SUPPORTED_METHODS = ("POST",)

        async def answer(self) -> None:
            service.close(self.session_name())

    class Input(Handler):
        SUPPORTED_METHODS = ("PUT",)

        async def answer(self) -> None:
            service.push(self.session_name(), self.body())

    class Output(Handler):
        SUPPORTED_METHODS = ("GET",)

        async def answer(self) -> None:
            await self.send_output()

    class Step(Handler):
        SUPPORTED_METHODS = ("POST",)

        async def answer(self) -> None:
            await self.send_output(take_input=True)

    return web.Application(
        [(r"/", Info), (r"/reset", Reset), (r"/close", Close), (r"/input", Input),
         (r"/output", Output), (r"/step", Step)]
    )  # fmt: skip


# SimulEval's flags of the evaluating side: a server translates what its clients send and
# scores nothing, so these would be silently ignored there.
EVALUATOR_FLAGS = (
    "--source", "--target", "--output", "--continue-unfinished", "--start-index",
    "--end-index", "--quality-metrics", "--latency-metrics", "--computation-aware",
    "--no-scoring", "--no-use-ref-len", "--eval-latency-unit", "--eval-latency-spm-model",
    "--sacrebleu-tokenizer", "--ca-unit-seconds", "--dataloader", "--dataloader-class",
)  # fmt: skip


def refuse_evaluator_flags(argv: list[str]) -> None:
    """The evaluator's flags given to the server are refused before anything loads."""
    given = given_flags(argv, EVALUATOR_FLAGS, prefix="--comet-")
    if given:
        raise ValueError(
            f"{' '.join(given)}: the evaluator's, not the server's (it translates what its "
            "clients send and scores nothing): give them to the client, `east-remote-eval "
            "--remote-port PORT --source ... --target ... --output ...`"
        )


def add_server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--session-timeout",
        type=positive_int,
        default=600,
        help="seconds after which an idle session is dropped (--standalone)",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=non_negative_int,
        default=DEFAULT_BATCH_WAIT_MS,
        help="milliseconds a forward waits for the sessions between two requests to join it "
        "(--standalone; 0: step whatever has arrived)",
    )


def bind_address(remote_address: str | None) -> str | None:
    """SimulEval's default `localhost` means the loopback address here: nothing listens on
    other interfaces unless asked."""
    return "127.0.0.1" if remote_address == "localhost" else remote_address


def listening_sockets(remote_address: str | None, remote_port: int | str) -> list:
    """The server's sockets, bound before the model loads: a port in use (another server),
    or one out of range, is refused at once, in one line. `remote_address` None: every
    interface."""
    from tornado.netutil import bind_sockets

    address = bind_address(remote_address)
    try:  # SimulEval's flag takes any text
        port = int(remote_port)
    except ValueError:
        raise ValueError(f"--remote-port {remote_port}: not a port number (1 to 65535)") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"--remote-port {port}: a port is 1 to 65535")
    try:
        return bind_sockets(port, address=address)
    except socket.gaierror as error:
        raise ValueError(
            f"--remote-address {remote_address}: no such address ({error.strerror})"
        ) from None
    except OSError as error:
        if error.errno == errno.EADDRNOTAVAIL:
            raise ValueError(
                f"--remote-address {remote_address}: not an address of this machine "
                f"({error.strerror})"
            ) from None
        raise ValueError(
            f"--remote-port {port}: cannot listen on "
            f"{f'{address}:{port}' if address else f'port {port} of every interface'} "
            f"({error.strerror}); "
            "another server there? choose another port"
        ) from None


def served_settings(agent_class: type[StreamingAgent], args: argparse.Namespace) -> dict:
    """What decides the served system's translations, as a local run of it records them
    (`run_settings.json`), less the data files: each client has its own."""
    from east_agent.simuleval_glue.run_folder import LOG_UNIT_SETTINGS, translation_settings

    settings = translation_settings(agent_class, args)
    clients = {"source", "target", *LOG_UNIT_SETTINGS}  # each client's: its files, its log
    return {name: value for name, value in settings.items() if name not in clients}


def serve(agent_class: type[StreamingAgent], args: argparse.Namespace) -> None:
    """Load the agent's model once and serve `args.batch_size` sessions until killed."""
    from tornado import ioloop
    from tornado.httpserver import HTTPServer

    from east_agent.decoding.stream_pool import StreamPool

    sockets = listening_sockets(args.remote_address, args.remote_port)
    config = agent_class.checked_config(args)
    agent_class.check_with_tokenizer(args, config)
    model, tokenizer = agent_class.load(args, config)
    if args.fp16 or args.dtype == "fp16":
        model.half()
    decoder = agent_class.build_decoder(model, tokenizer, config, streams=args.batch_size)
    pool, wait = StreamPool(decoder), args.batch_wait_ms / 1000
    service = AgentService(
        pool, config.tgt_lang, args.session_timeout, wait, served_settings(agent_class, args)
    )
    address, port = bind_address(args.remote_address), int(args.remote_port)
    HTTPServer(build_app(service), max_body_size=READ_LIMIT_BYTES).add_sockets(sockets)
    sweep_ms = min(args.session_timeout * 1000 / 4, 5000)
    ioloop.PeriodicCallback(service.drop_idle, sweep_ms).start()
    logger.info(
        "serving %s on %s:%d, %d sessions at once", agent_class.__name__, address, port,
        service.pool.size,
    )  # fmt: skip
    ioloop.IOLoop.current().start()
