"""`east-remote-eval`: evaluate a system served by `simuleval --standalone`, over HTTP.

    # system side (a shared-task submission, or any of this package's agents)
    east-simuleval --standalone --remote-port 12321 --agent east_agent/agent.py \\
        --model-path DIR --src-lang de --tgt-lang en --latency low
    # evaluator side
    east-remote-eval --remote-address localhost --remote-port 12321 \\
        --source src.txt --target ref.txt --output out/

SimulEval 1.1.4's own `--remote-eval` cannot do this for text: its client calls an
`instance_iterator` the evaluator does not have, and text segments carry a typing object
as `tgt_lang`, which neither side can serialize (the server answers `GET /output` with a
500; this package's agents send a plain language instead). This client walks the same
instances, speaks the same protocol (`POST /reset`, `PUT /input`, `GET /output`; with a
server that says it takes `POST /step`, this package's, a unit and its output in one
request), writes the same `instances.log` and scores it the same way as a local run.

Each run is its own session of an `east-simuleval --standalone` server (the
`X-Session-Id` header, a fresh id per run; closed at the end), so several clients can
evaluate against one server at once. SimulEval's own server ignores the header.

`--batch-size N` (N > 1) sends N sentences at once, each in its own session, so the
server steps them in one batched forward: the run's `elapsed` then measures N listeners
sharing the server (`batch.json` says so), and the log is written in finishing order and
put in index order at the end, as a local batched run's. SimulEval's own server keeps one
agent state and is refused for N > 1; this package's is asked first for N free streams
(fewer if fewer sentences are left).

The output folder is written as `east-simuleval` writes one (`run_folder`): held by one
writer, every finished sentence flushed as it finishes, the scores written atomically and
only beside the log they were made from; `--continue-unfinished` resumes after the
finished sentences (and scores a complete log); `--score-only` needs no server.

Faults: no server answering is one line before the folder changes. A sentence the server
refuses (too long for its context: 422) is named with the server's reason; a session it
has no stream for (503) gives its sentence back to the others (`batch.json` counts the
sessions that had one); a lost server ends the run, as does a request the server leaves
unanswered for `--request-timeout` seconds (600). Sessions are closed whatever happens
(Ctrl-C included), a close waits `CLOSE_TIMEOUT` at most; Ctrl-C ends a run at once (a
concurrent run's threads are daemons), in one line. A run killed outright cannot close
them: its `--output` names them while it runs (`server_sessions`), and the next run into
that folder closes them first.
"""

from __future__ import annotations

import argparse
import sys
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from east_agent.common.arguments import parse_once_each, positive_int
from east_agent.common.counts import instance_kind
from east_agent.common.entry import CommandError, command_line
from east_agent.decoding.prompt import known_language_name
from east_agent.simuleval_glue.scoring import SCORER_FLAGS
from east_agent.simuleval_glue.server_sessions import (
    SESSION_HEADER,
    close,
    close_all,
    recorded_sessions,
    server_url,
)

CONNECT_SECONDS = 10
ANSWER_SECONDS = 600  # --request-timeout: the longest wait for an answer (a step)
NO_FREE_STREAM = 503  # the server's answer to a new session when its streams are all in use
# The served system's flags, refused here (it was started with its own): SimulEval's for
# the system it runs, which this command's parser (SimulEval's) has, and this package's
# agents' own (all but `--tgt-lang`, which the client sends in its segments), which it has
# not; a test keeps them complete
SERVED_SYSTEM_FLAGS = (
    "--agent", "--agent-class", "--system-dir", "--system-config", "--standalone",
    "--remote-eval", "--slurm", "--device", "--dtype", "--fp16",
    "--adapter-path", "--beam-stop", "--cache-budget", "--context-across-sentences",
    "--context-words", "--document-level", "--kv-cache", "--latency", "--latency-level",
    "--long-form", "--max-context", "--max-new-tokens", "--model-path", "--num-beams",
    "--prompt", "--segment-units", "--src-lang", "--torch-dtype", "--trust-remote-code",
    "--waitk",
)  # fmt: skip


@dataclass(frozen=True)
class Server:
    """Where the served system answers, and how: `one_request` when it takes an input and
    gives its output in one request (`POST /step`, this package's server), else SimulEval's
    `PUT /input` then `GET /output`."""

    url: str
    timeout: tuple[float, float]  # seconds to connect, and to wait for each answer
    one_request: bool = False
    instance: str = "sentence"  # what a source line is to it, for messages: a talk in long form


def _serializable(segment):
    if not isinstance(getattr(segment, "tgt_lang", None), (str, type(None))):
        segment.tgt_lang = None
    return segment


def evaluate_remote(args: argparse.Namespace, span: tuple[int, int] | None = None) -> None:
    """Evaluate the served system on `args.source` (`span`: the sentences the run covers,
    for resuming `args.output`), `args.batch_size` sentences at once."""
    from east_agent.simuleval_glue import simuleval_fixes
    from east_agent.simuleval_glue.batch import score
    from east_agent.simuleval_glue.run_folder import loop_in, says_long_form
    from east_agent.simuleval_glue.scoring import check_latency_unit, check_scoring_flags

    check_scoring_flags(args, args.tgt_lang)  # the flags given, before a server is asked
    base_url = server_url(args.remote_address, args.remote_port)
    info = _server_info(base_url, args.request_timeout)  # before the folder changes
    if args.output is not None and _close_stale_sessions(Path(args.output)):
        info = _server_info(base_url, args.request_timeout)  # their streams freed
    _take_source_language(args, info)
    _check_source_units(args.source, info)
    _check_target_language(args.tgt_lang, info, base_url)
    check_latency_unit(args, _served_target_language(info))
    served = _served_settings(args, info)
    server = Server(
        base_url,
        (CONNECT_SECONDS, args.request_timeout),
        info.get("step") is True,
        instance_kind(says_long_form(info.get("settings"))),
    )
    if args.batch_size > 1:
        if args.output is None:
            raise ValueError("--batch-size above 1 needs --output (its instances.log goes there)")
        _evaluate_concurrently(args, server, served, info)
        return
    if isinstance(info.get("streams"), int):  # SimulEval's server: none
        _check_free_streams(info, 1, base_url)  # before the folder changes
    simuleval_fixes.apply()
    if args.output is None:
        _loop(args, server)
        return
    scores = None if args.no_scoring else partial(score, args)
    loop = partial(_loop, args, server)
    loop_in(Path(args.output), served, args.continue_unfinished, span, loop, scores)


def _server_info(base_url: str, timeout: float) -> dict:
    """What the server says of itself (`GET /`); an error naming the address if nothing
    answers there, or nothing in `timeout` seconds (--request-timeout)."""
    import requests

    try:
        reply = requests.get(f"{base_url}/", timeout=(CONNECT_SECONDS, timeout))
        reply.raise_for_status()
    except requests.ReadTimeout:
        raise ValueError(
            f"the server at {base_url} took the connection but said nothing in {timeout:g} s "
            "(--request-timeout): is it stopped, or busy loading?"
        ) from None
    except requests.RequestException as error:
        raise ValueError(
            f"no system answers at {base_url} ({type(error).__name__}): start one with "
            "`east-simuleval --standalone --remote-port PORT ...`, or check --remote-address "
            "and --remote-port"
        ) from None
    try:
        info = reply.json()
    except ValueError:  # before: the folder begun, then "sentence 0: ... answered 501"
        kind = reply.headers.get("Content-Type", "no content type").split(";")[0]
        raise ValueError(
            f"the server at {base_url} is no SimulEval server: GET / answered {kind}, not "
            "JSON (another program on that port? check --remote-address and --remote-port)"
        ) from None
    return info if isinstance(info, dict) else {}


def _take_source_language(args: argparse.Namespace, info: dict) -> None:
    """COMET reads the source as the served decoder read it: without --comet-source-lang,
    in the language this package's server says it translates from (SimulEval's own server
    says none: the units are then joined by spaces)."""
    language = info.get("source_language")
    if getattr(args, "comet_source_lang", "") is None and isinstance(language, str):
        args.comet_source_lang = language


def _check_source_units(source: str | None, info: dict) -> None:
    """A Chinese or Japanese source must be split into units as a local run's: this
    package's server says which language it reads (SimulEval's says none)."""
    from east_agent.simuleval_glue.data_files import check_units_split

    language = info.get("source_language")
    if isinstance(language, str):
        check_units_split(source, language)


def _served_target_language(info: dict) -> str | None:
    settings = info.get("settings")
    served = settings.get("tgt_lang") if isinstance(settings, dict) else None
    return served if isinstance(served, str) else None


def _check_target_language(wanted: str | None, info: dict, base_url: str) -> None:
    """`--tgt-lang` goes to the server in every segment; this package's server translates
    into the language it was started with, and a run that asks for another is refused."""
    served = _served_target_language(info)
    if (
        wanted is None
        or served is None
        or known_language_name(wanted) == known_language_name(served)
    ):
        return
    raise ValueError(
        f"--tgt-lang {wanted}: the server at {base_url} translates into {served} (its "
        "--tgt-lang); evaluate a server of that direction, or drop --tgt-lang"
    )


def _refuse_served_system_flags(argv: list[str]) -> None:
    from east_agent.common.arguments import given_flags

    given = given_flags(argv, SERVED_SYSTEM_FLAGS)
    if given:
        raise ValueError(
            f"{' '.join(given)}: the served system's, given where it is served "
            "(`east-simuleval --standalone ...`); east-remote-eval only sends it the source"
        )


def _served_settings(args: argparse.Namespace, info: dict) -> dict:
    """What the run's folder records (`run_settings.json`): its data files (by content)
    and the language the served system reads its source in, when the server says it (this
    package's), so that the log is scored again later (`--score-only`) as it was. A resumed
    log keeps the record it has (a local run's is richer; a server that says nothing
    cannot contradict it), unless it names other data files or another source language:
    then the resume is refused."""
    from east_agent.common.fingerprint import path_setting, same_setting, shown_setting
    from east_agent.common.records import read_json_object
    from east_agent.simuleval_glue.run_folder import (
        LOG_UNIT_SETTINGS,
        SETTINGS_RECORD,
        kept_records,
    )

    language = info.get("source_language")
    files = {name: getattr(args, name) for name in ("source", "target")}
    # no --target is recorded as such (as a local run records it): a resume that adds one
    # would put sentences with references beside sentences without (before: refused only
    # by sacrebleu's traceback once all was translated)
    now = {name: path_setting(Path(path), False) if path else None for name, path in files.items()}
    now |= {name: getattr(args, name) for name in sorted(LOG_UNIT_SETTINGS)}  # the log's units
    if isinstance(language, str):
        now["src_lang"] = language
    served = info["settings"] if isinstance(info.get("settings"), dict) else None
    if served is not None:  # this package's server: its system's settings
        now["served"] = served
    if not args.output or not args.continue_unfinished:
        return now
    output = Path(args.output)
    record = output / SETTINGS_RECORD
    kept = kept_records(output) if record.exists() else []  # set aside for SimulEval's loop too
    if not kept:
        return now
    saved, log = read_json_object(record), output / "instances.log"
    recorded = saved.get("src_lang")
    if (
        isinstance(language, str)  # the server says it
        and recorded is not None
        and known_language_name(recorded) != known_language_name(language)
    ):
        raise ValueError(
            f"{log} was written from a {recorded} source, and the server reads {language}: "
            "resume against a server of the same system, or write to another --output"
        )
    for name in ("source", "target"):
        if name in saved and not same_setting(saved[name], now.get(name)):
            was, asked = (
                f"--{name} {shown_setting(value)}" if value is not None else f"no --{name}"
                for value in (saved[name], now.get(name))
            )
            raise ValueError(
                f"{log} was written with {was}, not {asked}; resume with the same files, or "
                "write to another --output"
            )
    unreferenced = [sentence for sentence in kept if sentence.get("reference", "") is None]
    if args.target and unreferenced:  # an older version's record named no target then
        raise ValueError(
            f"{log} holds sentences translated without --target (no reference): resume "
            "without it, or write to another --output"
        )
    for name in sorted(LOG_UNIT_SETTINGS & set(saved)):  # a record from before names none
        if not same_setting(saved[name], now[name]):
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"{log} was written with {flag} {saved[name]}, not {now[name]}: its "
                "records are in those units; resume with the same flag, or write to another "
                "--output"
            )
    _refuse_another_system(log, saved, served)
    return saved


def _refuse_another_system(log: Path, saved: dict, served: dict | None) -> None:
    """A log that a served system of other settings wrote (its record's `served`), or a
    local run of other settings (its record itself), is not resumed against this one; nor
    is a log whose system's settings are known against a server that says nothing of its
    own (SimulEval's), or the other way round: either could hold another system's
    sentences (as `run_folder` refuses for local runs; before: a log of two systems,
    scored, exit 0)."""
    from east_agent.simuleval_glue.run_folder import (
        LOG_UNIT_SETTINGS,
        RECORDED_LATER,
        differences_shown,
        settings_differ,
    )

    written_by = saved.get("served", saved if "agent_class" in saved else None)
    if not isinstance(written_by, dict):
        written_by = None
    if served is None and written_by is None:
        return  # SimulEval's server then and now: nothing to compare
    if served is None or written_by is None:
        unknown = "a server that says nothing of its settings (SimulEval's own)"
        then = unknown if written_by is None else "a system whose settings its record names"
        now = unknown if served is None else "one that names its settings"
        raise ValueError(
            f"{log} was written by {then}, and this run is against {now}: they cannot be "
            "told the same system; resume against the server that wrote it, or write to "
            "another --output"
        )
    served = {name: value for name, value in served.items() if name not in LOG_UNIT_SETTINGS}
    # what the record names of the served settings (not those it is too old to name)
    named = {
        name: written_by.get(name)
        for name in served
        if name in written_by or name not in RECORDED_LATER
    }
    differ = settings_differ(named, served)
    if differ:
        shown = differences_shown(differ, written_by, served)
        raise ValueError(
            f"{log} was written by a system of other settings ({shown}); resume against "
            "a server of the same system, or write to another --output"
        )


def _check_free_streams(
    info: dict, wanted: int, base_url: str, batch_size: int | None = None
) -> None:
    """Refuse a run the server has too few free streams for: `wanted` sessions at once
    (`--batch-size`, or fewer when fewer sentences are left)."""
    batch_size = wanted if batch_size is None else batch_size
    if not isinstance(info.get("streams"), int):
        raise ValueError(
            f"the server at {base_url} keeps one agent state (SimulEval's own server): "
            f"--batch-size {batch_size} would mix sentences; evaluate with --batch-size 1, or "
            "serve this package's agent with `east-simuleval --standalone`"
        )
    sessions = info.get("sessions", 0)
    free = info["streams"] - sessions
    if free < wanted:
        lower = "lower it, " if wanted > 1 else ""
        left = "1 sentence is" if wanted == 1 else f"{wanted} sentences are"
        needs = "" if wanted == batch_size else f" ({left} left)"
        if sessions == 0:  # the server is too small (before: told of open sessions too)
            raise ValueError(
                f"the server at {base_url} has {info['streams']} streams; --batch-size "
                f"{batch_size} needs {wanted}{needs}: lower it, or start a server with "
                f"--batch-size {wanted} or more"
            )
        raise ValueError(
            f"the server at {base_url} has {free} free of its {info['streams']} streams: "
            f"{sessions} sessions are open (other clients', or a killed client's until the "
            f"server's --session-timeout drops them); --batch-size {batch_size} needs "
            f"{wanted}{needs}: {lower}wait, or start a server with --batch-size "
            f"{wanted + sessions} or more"
        )


def _close_stale_sessions(output: Path) -> bool:
    """Close the sessions a killed run into `output` left open, before asking the server
    for free streams (a live run holds the folder: refused)."""
    from east_agent.common.run_lock import hold_run_lock
    from east_agent.simuleval_glue.run_folder import INSTANCES_LOCK
    from east_agent.simuleval_glue.server_sessions import SESSIONS_RECORD, close_stale_sessions

    if not (output / SESSIONS_RECORD).is_file():
        return False
    with hold_run_lock(output, INSTANCES_LOCK):
        return close_stale_sessions(output)


def _loop(args: argparse.Namespace, server: Server) -> None:
    """SimulEval's evaluation loop, each sentence's source units sent to the server."""
    import requests
    from simuleval.evaluator import SentenceLevelEvaluator

    evaluator = SentenceLevelEvaluator.from_args(args)
    name = uuid.uuid4().hex
    with requests.Session() as session, recorded_sessions(args.output, server.url, [name]):
        session.headers[SESSION_HEADER] = name
        try:
            for instance in evaluator.iterator:
                segment_size = evaluator.source_segment_size
                try:
                    _translate(session, server, instance, segment_size)
                except (requests.RequestException, BadAnswer) as error:
                    kept = (
                        f"; the {server.instance}s finished before it are in {args.output}/"
                        "instances.log (--continue-unfinished resumes after them)"
                        if args.output
                        else ""
                    )
                    why = _failure(instance.index, error, server.instance)
                    raise CommandError(why + kept) from None
                evaluator.write_log(instance)
        finally:
            close(session, server.url)
    if evaluator.output is not None:
        evaluator.build_instances_from_log()
    if not evaluator.no_scoring:
        evaluator.dump_results()
        evaluator.dump_metrics()


class _Stopped(Exception):
    """The run is stopping: a session leaves its sentence unfinished."""


class BadAnswer(Exception):
    """A server's answer that is no SimulEval segment (a proxy's error page, another
    service), or a server that never finishes a sentence."""


# answers a sentence may take once its whole source is sent (an agent that writes a word
# a step writes a long sentence's tail in as many): past this the server never finishes
MAX_ANSWERS_AFTER_SOURCE = 10_000


def _translate(
    session, server: Server, instance, segment_size: int, stopping=None, served=None
) -> None:
    """One sentence, unit by unit, through the server (`stopping()`: give up between
    units; `served()`: the server gave the session a stream)."""
    session.post(f"{server.url}/reset", timeout=server.timeout).raise_for_status()
    if served is not None:
        served()
    after_source = 0
    while not instance.finish_prediction:
        if stopping is not None and stopping():
            raise _Stopped
        if instance.step >= instance.source_length:
            after_source += 1
            if after_source > MAX_ANSWERS_AFTER_SOURCE:
                raise BadAnswer(
                    f"the server gave {MAX_ANSWERS_AFTER_SOURCE} answers after the whole "
                    "source was sent, none of them finishing the translation"
                )
        segment = _serializable(instance.send_source(segment_size))
        if server.one_request:
            reply = session.post(f"{server.url}/step", data=segment.json(), timeout=server.timeout)
        else:
            session.put(
                f"{server.url}/input", data=segment.json(), timeout=server.timeout
            ).raise_for_status()
            reply = session.get(f"{server.url}/output", timeout=server.timeout)
        reply.raise_for_status()
        instance.receive_prediction(_answered_segment(reply.text))


def _answered_segment(text: str):
    """The segment a server answered, checked as SimulEval's instance will read it."""
    from simuleval.data.segments import segment_from_json_string

    try:
        segment = segment_from_json_string(text)
    except (ValueError, KeyError, TypeError, AttributeError) as error:  # JSON errors too
        problem = f"{type(error).__name__}: {error}"
    else:
        if isinstance(segment.content, (str, list)) and isinstance(segment.finished, bool):
            return segment
        problem = "its 'content' is no text or its 'finished' no true or false"
    shown = text if len(text) <= 80 else text[:80] + "..."
    raise BadAnswer(f"the server's answer is not a SimulEval segment ({problem}): {shown!r}")


def _failure(index: int, error, kind: str = "sentence") -> str:
    """What went wrong with sentence (`kind`: talk) `index`: the server's own reason when
    it gave one."""
    from requests import ReadTimeout

    reply = getattr(error, "response", None)
    if isinstance(error, BadAnswer):
        return f"{kind} {index}: {error}"
    if isinstance(error, ReadTimeout):
        return f"{kind} {index}: the server gave no answer in time (--request-timeout)"
    if reply is None:
        return f"{kind} {index}: the server was lost ({type(error).__name__})"
    try:
        reason = reply.json()["error"]  # this package's server says why
    except (ValueError, KeyError, TypeError):
        reason = reply.reason
    return f"{kind} {index}: the server answered {reply.status_code}: {reason}"


def _evaluate_concurrently(
    args: argparse.Namespace, server: Server, served: dict | None, info: dict
) -> None:
    from simuleval.data.dataloader import build_dataloader

    from east_agent.simuleval_glue.batch import run_out_of_order
    from east_agent.simuleval_glue.data_files import sentence_span

    dataloader = build_dataloader(args)
    span = sentence_span(args.start_index, args.end_index, len(dataloader))
    # the sessions it will open: no more than the sentences left (before the folder changes)
    streams = min(args.batch_size, len(_sentences_left(args, span)))
    _check_free_streams(info, streams, server.url, args.batch_size)
    translate = partial(_translate_concurrently, args, server, dataloader)
    run_out_of_order(args, span, served, translate)


def _sentences_left(args: argparse.Namespace, span: range) -> list[int]:
    """The sentences of `span` a run has to translate: all, or those its log lacks when
    it resumes (`--continue-unfinished`)."""
    from east_agent.simuleval_glue.instance_log import finished_records

    if not args.continue_unfinished:
        return list(span)
    done = {record["index"] for record in finished_records(Path(args.output) / "instances.log")}
    return [index for index in span if index not in done]


class _Sentences:
    """The sentences of a concurrent run and what became of them, shared by the sessions'
    threads: handed out one at a time (a session waits while the queue is empty but
    another may still give its sentence back), each finished one appended to the log as
    it finishes, never after the run has closed it. `record(streams)` writes `batch.json`
    before a sentence goes into the log whenever more sessions have had a stream by then
    (a session the server had none for never translated beside the others)."""

    def __init__(self, todo: list[int], log, record: Callable[[int], None]) -> None:
        self.pending, self.log, self.record = deque(todo), log, record
        self.in_flight = 0  # sentences handed out and not yet finished, failed or given back
        self.failures: list[str] = []
        self.errors: list[BaseException] = []  # a session's thread crashed
        self.withdrawn = 0  # sessions the server had no free stream for
        self.sessions: set[str] = set()  # open on the server
        self.served: set[str] = set()  # the sessions the server gave a stream
        self.recorded = 0  # the streams `batch.json` says
        self.closed = False
        self.ended: str | None = None  # what ended the run: the server lost, or its answers
        self.changed = threading.Condition()

    def stopping(self) -> bool:
        return self.closed or self.ended is not None or bool(self.errors)

    def next(self) -> int | None:
        with self.changed:
            while not self.stopping():
                if self.pending:
                    self.in_flight += 1
                    return self.pending.popleft()
                if not self.in_flight:
                    return None
                self.changed.wait(0.5)
            return None

    def _settled(self) -> None:
        self.in_flight -= 1
        self.changed.notify_all()

    def give_back(self, index: int) -> None:
        with self.changed:
            self.pending.appendleft(index)
            self.withdrawn += 1
            self._settled()

    def finished(self, record: dict) -> None:
        with self.changed:
            if not self.closed:
                if len(self.served) > self.recorded:
                    self.recorded = len(self.served)
                    self.record(self.recorded)
                self.log.append(record)
            self._settled()

    def serving(self, name: str) -> None:
        with self.changed:
            self.served.add(name)

    def failed(self, message: str, ends_the_run: str | None = None) -> None:
        """A sentence that failed; `ends_the_run`: why no other may go on (the server was
        lost, answers what is no segment)."""
        with self.changed:
            self.failures.append(message)
            self.ended = self.ended or ends_the_run
            self._settled()

    def crashed(self, error: BaseException) -> None:
        with self.changed:
            self.errors.append(error)
            self.changed.notify_all()

    def opened(self, name: str, is_open: bool = True) -> None:
        with self.changed:
            (self.sessions.add if is_open else self.sessions.discard)(name)

    def close(self) -> list[str]:
        """Stop: no sentence is started or logged any more; the sessions still open."""
        with self.changed:
            self.closed = True
            self.changed.notify_all()
            return sorted(self.sessions)


def _translate_concurrently(args, server: Server, dataloader, indices: range) -> None:
    """The sentences of `indices` the log lacks, `args.batch_size` at a time: a session
    (a thread) per stream, each translating one sentence after another. The threads are
    daemons: on Ctrl-C the run ends at once, keeping the finished sentences, and closes
    the sessions they left open."""
    from simuleval.evaluator.instance import INSTANCE_TYPE_DICT

    from east_agent.simuleval_glue.batch import record_batching
    from east_agent.simuleval_glue.instance_log import InstanceLog

    output = Path(args.output)
    log_path = output / "instances.log"
    instance_class = INSTANCE_TYPE_DICT[f"{args.source_type}-{args.target_type}"]
    with InstanceLog(log_path, args.continue_unfinished) as log:
        todo = [index for index in indices if index not in log.done]
        streams = min(args.batch_size, len(todo))  # sessions that translate at once
        record = partial(record_batching, output, args.batch_size, sharing="the server")
        sentences = _Sentences(todo, log, record)
        make = partial(instance_class, dataloader=dataloader, args=args)
        segment_size = getattr(args, "source_segment_size", 1)
        session = partial(_session, server, sentences, make, segment_size)
        names = [uuid.uuid4().hex for _ in range(streams)]
        threads = [
            threading.Thread(target=session, args=(name,), name=f"session-{number}", daemon=True)
            for number, name in enumerate(names)
        ]
        with recorded_sessions(args.output, server.url, names):
            try:
                for thread in threads:
                    thread.start()
                for thread in threads:
                    while thread.is_alive():
                        thread.join(0.2)
            finally:
                close_all(server.url, sentences.close())
    _report(sentences, streams, len(todo), server, log_path)


def _report(sentences: _Sentences, sessions: int, tried: int, server: Server, log: Path) -> None:
    """Raise for whatever stopped some sentences (one line each); say on stderr when the
    server had fewer streams than sessions."""
    from east_agent.simuleval_glue.batch import check_failures

    base_url, kind = server.url, server.instance
    if sentences.errors:
        raise sentences.errors[0]
    kept = f"the {kind}s finished before are in {log} (--continue-unfinished resumes)"
    if sentences.ended:
        raise CommandError(
            f"the server at {base_url} {sentences.ended}; {kept}:\n  "
            + "\n  ".join(sentences.failures)
        )
    if sentences.pending:
        raise CommandError(
            f"the server at {base_url} had no free stream (503) for any of the {sessions} "
            f"sessions; {len(sentences.pending)} {kind}s are left; {kept}"
        )
    if sentences.withdrawn:
        print(
            f"east-remote-eval: the server had no free stream (503) for {sentences.withdrawn} "
            f"of {sessions} sessions; the other {len(sentences.served)} went on",
            file=sys.stderr,
        )
    check_failures(sentences.failures, tried, log, kind)


def _session(server: Server, sentences: _Sentences, make, segment_size: int, name: str) -> None:
    """One session of the server (`name`), translating sentences until none is left: a
    sentence the server refuses is named and the next one taken; a session the server has
    no stream for (503) gives its sentence back and ends; a lost server ends them all."""
    import requests

    try:
        with requests.Session() as session:
            session.headers[SESSION_HEADER] = name
            sentences.opened(name)
            try:
                while (index := sentences.next()) is not None:
                    instance = make(index)
                    try:
                        _translate(
                            session, server, instance, segment_size, sentences.stopping,
                            partial(sentences.serving, name),
                        )  # fmt: skip
                    except requests.HTTPError as error:
                        assert error.response is not None  # raise_for_status sets it
                        if error.response.status_code == NO_FREE_STREAM:
                            sentences.give_back(index)
                            return
                        sentences.failed(_failure(index, error, server.instance))
                        continue
                    except (requests.RequestException, BadAnswer) as error:
                        why = (
                            "did not answer as a SimulEval agent does"
                            if isinstance(error, BadAnswer)
                            else "was lost"
                        )
                        sentences.failed(_failure(index, error, server.instance), ends_the_run=why)
                        return
                    sentences.finished(instance.summarize())
            finally:
                close(session, server.url)
                sentences.opened(name, is_open=False)
    except _Stopped:
        pass
    except BaseException as error:  # handed to the main thread, which raises it
        sentences.crashed(error)


CLIENT_HELP = {
    "tgt_lang": "the target language (checked against the language this package's "
    "server translates into before any sentence is sent)",
    "no_use_ref_len": "latency with the prediction's length as the target length (by "
    "default AL takes the reference's, LAAL the longer of the two)",
    "eval_latency_unit": "the unit of latency: word, char (Chinese and Japanese) or spm "
    "(the pieces of --eval-latency-spm-model)",
    "source_type": "text (the only type this package's server reads)",
    "target_type": "text (the only type this package's server writes)",
    "computation_aware": "SimulEval's, for speech input: refused for text; ask for AL_CA, "
    "LAAL_CA, AP_CA or DAL_CA with --latency-metrics instead",
}


@command_line("east-remote-eval")
def main(argv: list[str] | None = None) -> None:
    from simuleval import options

    import east_agent.simuleval_plugin  # noqa: F401  (timing and CA metrics)
    from east_agent.simuleval_glue import simuleval_fixes
    from east_agent.simuleval_glue.batch import add_batch_arg
    from east_agent.simuleval_glue.comet_scorer import refuse_comet_flags_without_comet
    from east_agent.simuleval_glue.data_files import check_dataloader_flags
    from east_agent.simuleval_glue.run_folder import check_output_folder

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    simuleval_fixes.apply()
    check_dataloader_flags(sys.argv[1:])  # before SimulEval's parser imports --user-dir
    refuse_comet_flags_without_comet(sys.argv[1:])  # before: "did you mean --batch-size?"
    parser = options.general_parser()  # SimulEval's, made without -h
    parser.prog, parser.allow_abbrev = "east-remote-eval", False
    parser.usage = (
        "%(prog)s [--remote-address HOST] [--remote-port PORT] --source FILE --target FILE "
        "[--output DIR] [options]"
    )
    parser.description = "Evaluate a served system (east-simuleval --standalone) over HTTP."
    parser.epilog = SCORER_FLAGS
    options.add_dataloader_args(parser)
    options.add_evaluator_args(parser)
    options.add_scorer_args(parser)
    add_batch_arg(
        parser,
        "sentences sent at once, each in its own session of the server (1: one sentence "
        "after another)",
    )
    parser.add_argument(
        "--request-timeout",
        type=positive_int,
        default=ANSWER_SECONDS,
        metavar="SECONDS",
        help="the longest wait for the server's answer to one request; a server silent "
        "that long is taken as lost (default: %(default)s)",
    )
    # last: SimulEval's option builders parse what is known so far, and would print a
    # help that lacks the options added after them
    parser.add_argument("-h", "--help", action="help", help="show this help and exit")
    for action in parser._actions:
        if set(action.option_strings) & set(SERVED_SYSTEM_FLAGS):  # refused below
            action.help = argparse.SUPPRESS
        elif action.dest in CLIENT_HELP:  # SimulEval's own texts there are wrong
            action.help = CLIENT_HELP[action.dest]
    _refuse_served_system_flags(sys.argv[1:])  # before argparse calls them unknown
    args = parse_once_each(parser, sys.argv[1:])
    if args.score_only:  # no server needed; the types are the folder's (config.yaml)
        from east_agent.simuleval_glue.batch import refuse_run_flags, score_folder

        refuse_run_flags(sys.argv[1:])
        score_folder(args)
        return
    args.source_type = args.source_type or "text"
    args.target_type = args.target_type or "text"
    for flag, kind in (("--source-type", args.source_type), ("--target-type", args.target_type)):
        if kind != "text":
            raise ValueError(f"{flag} {kind}: east-remote-eval evaluates text to text systems")
    check_output_folder(sys.argv[1:])
    simuleval_fixes.refuse_computation_aware_for_text(args.computation_aware, args.source_type)
    from east_agent.simuleval_glue.data_files import check_data_files

    span = check_data_files(sys.argv[1:])
    evaluate_remote(args, span)


if __name__ == "__main__":
    main()
