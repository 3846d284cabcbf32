"""A stand-in for `east-simuleval --standalone`, on 127.0.0.1, for the client's fault paths.

It speaks the session protocol (`GET /`, `POST /reset`, `PUT /input`, `GET /output`,
`POST /close`, the `X-Session-Id` header; with `step`, `POST /step` too, an input and its
output in one request, which the client then uses) and translates by echoing each source word as
soon as it arrives (wait-0, target = source). It can be told to
- open fewer sessions than the streams it advertises (`open_limit`: 503 beyond it,
  after `busy_delay` seconds);
- refuse a sentence holding a word (`refuse_word`: 422 on its output);
- drop the connection at a word (`drop_word`: no answer at all, as a server that died);
- hold every output until the test ends (`hold="output"`), or `POST /close` too
  (`hold="all"`: a silent server);
- make the first output of `together` sessions wait until all of them ask at once (a
  client that sent its sentences one after another fails: 500 after 20 s);
- name the language it reads (`source_language`, in `GET /`, as this package's server);
- listen on another loopback address (`address="::1"`, IPv6);
- answer what is no segment (`bad_answer="html"`: a proxy's error page; `"number"`: a
  segment whose content is a number) or never finish a sentence (`"never"`).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from simuleval.data.segments import EmptySegment, TextSegment


class FakeSessionServer:
    def __init__(
        self,
        streams: int = 3,
        open_limit: int | None = None,
        refuse_word: str | None = None,
        drop_word: str | None = None,
        hold: str | None = None,
        together: int = 0,
        busy_delay: float = 0.0,
        step: bool = False,
        source_language: str | None = None,
        address: str = "127.0.0.1",
        bad_answer: str | None = None,
        settings: dict | None = None,
    ) -> None:
        self.streams = streams
        self.open_limit = streams if open_limit is None else open_limit
        self.refuse_word, self.drop_word, self.hold = refuse_word, drop_word, hold
        self.together = threading.Barrier(together, timeout=20) if together else None
        self.busy_delay = busy_delay
        self.step = step
        self.source_language = source_language
        self.bad_answer = bad_answer
        self.settings = settings  # what it says decides its translations, as this package's
        self.requests: list[str] = []  # "METHOD /path" of each request, in order
        self.completed: list[str] = []  # each sentence whose last output was answered
        self.sessions: dict[str, dict] = {}
        self.held = threading.Semaphore(0)  # one release per request being held
        self.released = threading.Event()
        self.lock = threading.Lock()
        server_class = ThreadingHTTPServer if ":" not in address else IPv6HTTPServer
        self.http = server_class((address, 0), self._handler())
        self.http.daemon_threads = True
        self.port = self.http.server_address[1]

    def __enter__(self) -> FakeSessionServer:
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.http.shutdown()
        self.http.server_close()

    def _open(self, name: str) -> dict | None:
        with self.lock:
            if name not in self.sessions:
                if len(self.sessions) >= self.open_limit:
                    return None
                self.sessions[name] = {"words": [], "sent": 0, "finished": False, "asked": 0}
            return self.sessions[name]

    def _hold(self, handler) -> None:
        self.held.release()
        self.released.wait()
        handler.close_connection_now()

    def _output(self, handler, session: dict) -> None:
        session["asked"] += 1
        if self.hold:
            return self._hold(handler)
        if self.together is not None and session["asked"] == 1:
            try:
                self.together.wait()
            except threading.BrokenBarrierError:
                return handler.answer(500, {"error": "the sessions did not ask together"})
        if self.bad_answer == "html":
            return handler.answer_bytes(200, b"<html><body>502 Bad Gateway</body></html>")
        if self.bad_answer == "number":
            bad = {"index": 0, "content": 3, "finished": False, "data_type": "text"}
            return handler.answer(200, bad)
        if self.bad_answer == "never":
            return handler.answer(200, json.loads(EmptySegment(finished=False).json()))
        new = session["words"][session["sent"] :]
        session["sent"] = len(session["words"])
        if self.drop_word in new:
            return handler.close_connection_now()
        if self.refuse_word in new:
            return handler.answer(422, {"error": f"the sentence holds {self.refuse_word!r}"})
        finished = session["finished"] and session["sent"] == len(session["words"])
        if finished and new:  # the last word comes with `finished`: once a sentence
            self.completed.append(" ".join(session["words"]))
        if new:
            segment = TextSegment(content=" ".join(new), finished=finished, tgt_lang="en")
        else:
            segment = EmptySegment(finished=finished)
        handler.answer(200, json.loads(segment.json()))

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def answer(self, status: int, body: dict) -> None:
                self.answer_bytes(status, json.dumps(body).encode())

            def answer_bytes(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def close_connection_now(self) -> None:
                self.close_connection = True

            def parse_request(self) -> bool:
                parsed = super().parse_request()
                if parsed:
                    server.requests.append(f"{self.command} {self.path}")
                return parsed

            def session(self) -> dict | None:
                session = server._open(self.headers.get("X-Session-Id", ""))
                if session is None:
                    time.sleep(server.busy_delay)
                    self.answer(503, {"error": "all streams are in use"})
                return session

            def body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                if self.path == "/":
                    info = {"streams": server.streams, "sessions": len(server.sessions)}
                    if server.source_language is not None:
                        info["source_language"] = server.source_language
                    if server.settings is not None:
                        info["settings"] = server.settings
                    return self.answer(200, {**info, "step": True} if server.step else info)
                if (session := self.session()) is not None:
                    server._output(self, session)

            def do_POST(self) -> None:
                body = self.body()
                if self.path == "/step" and server.step:
                    if (session := self.session()) is not None:
                        self.take(session, json.loads(body))
                        server._output(self, session)
                    return
                if self.path == "/close":
                    if server.hold == "all":
                        return server._hold(self)
                    with server.lock:
                        server.sessions.pop(self.headers.get("X-Session-Id", ""), None)
                    return self.answer(200, {})
                if (session := self.session()) is not None:
                    session.update(words=[], sent=0, finished=False)
                    self.answer(200, {})

            def do_PUT(self) -> None:
                segment = json.loads(self.body())
                if (session := self.session()) is not None:
                    self.take(session, segment)
                    self.answer(200, {})

            def take(self, session: dict, segment: dict) -> None:
                if segment.get("content"):
                    session["words"].append(segment["content"])
                session["finished"] = session["finished"] or segment["finished"]

        return Handler


class IPv6HTTPServer(ThreadingHTTPServer):
    address_family = socket.AF_INET6
