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
instances, speaks the same protocol (`POST /reset`, `PUT /input`, `GET /output`), writes
the same `instances.log` and scores it the same way as a local run.

Each run is its own session of an `east-simuleval --standalone` server (the
`X-Session-Id` header, a fresh id per run; closed at the end), so several clients can
evaluate against one server at once. SimulEval's own server ignores the header.

`--batch-size N` (N > 1) sends N sentences at once, each in its own session, so the
server steps them in one batched forward: the run's `elapsed` then measures N listeners
sharing the server (`batch.json` says so), and the log is written in finishing order and
put in index order at the end, as a local batched run's. SimulEval's own server keeps one
agent state and is refused for N > 1; this package's is asked first for N free streams.

The output folder is written as `east-simuleval` writes one (`run_folder`): held by one
writer, every finished sentence flushed as it finishes, the scores written atomically and
only beside the log they were made from; `--continue-unfinished` resumes after the
finished sentences (and scores a complete log). A sentence the server refuses (too long
for its context: 422) is named with the server's reason.
"""

from __future__ import annotations

import argparse
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from east_agent.common.entry import command_line
from east_agent.simuleval_glue.agent_server import SESSION_HEADER


def _serializable(segment):
    if not isinstance(getattr(segment, "tgt_lang", None), (str, type(None))):
        segment.tgt_lang = None
    return segment


def evaluate_remote(args: argparse.Namespace, span: tuple[int, int] | None = None) -> None:
    """Evaluate the served system on `args.source` (`span`: the sentences the run covers,
    for resuming `args.output`), `args.batch_size` sentences at once."""
    from east_agent.simuleval_glue import simuleval_fixes
    from east_agent.simuleval_glue.batch import score
    from east_agent.simuleval_glue.run_folder import loop_in

    base_url = f"http://{args.remote_address}:{args.remote_port}"
    info = _server_info(base_url)  # before the folder changes
    if args.batch_size > 1:
        _check_free_streams(info, args.batch_size, base_url)
        if args.output is None:
            raise ValueError("--batch-size above 1 needs --output (its instances.log goes there)")
        _evaluate_concurrently(args, base_url)
        return
    simuleval_fixes.apply()
    if args.output is None:
        _loop(args, base_url)
        return
    scores = None if args.no_scoring else partial(score, args)
    loop = partial(_loop, args, base_url)
    loop_in(Path(args.output), None, args.continue_unfinished, span, loop, scores)


def _server_info(base_url: str) -> dict:
    """What the server says of itself (`GET /`); an error naming the address if nothing
    answers there."""
    import requests

    try:
        reply = requests.get(f"{base_url}/", timeout=30)
        reply.raise_for_status()
    except requests.RequestException as error:
        raise ValueError(
            f"no system answers at {base_url} ({type(error).__name__}): start one with "
            "`east-simuleval --standalone --remote-port PORT ...`, or check --remote-address "
            "and --remote-port"
        ) from None
    try:
        info = reply.json()
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _check_free_streams(info: dict, wanted: int, base_url: str) -> None:
    if not isinstance(info.get("streams"), int):
        raise ValueError(
            f"the server at {base_url} keeps one agent state (SimulEval's own server): "
            f"--batch-size {wanted} would mix sentences; evaluate with --batch-size 1, or "
            "serve this package's agent with `east-simuleval --standalone`"
        )
    free = info["streams"] - info.get("sessions", 0)
    if free < wanted:
        raise ValueError(
            f"the server at {base_url} has {free} free streams of {info['streams']}; "
            f"--batch-size {wanted} needs as many: lower it, or start the server with "
            f"--batch-size {wanted} or more"
        )


def _loop(args: argparse.Namespace, base_url: str) -> None:
    """SimulEval's evaluation loop, each sentence's source units sent to the server."""
    import requests
    from simuleval.evaluator import SentenceLevelEvaluator

    evaluator = SentenceLevelEvaluator.from_args(args)
    with requests.Session() as session:
        session.headers[SESSION_HEADER] = uuid.uuid4().hex
        for instance in evaluator.iterator:
            try:
                _translate(session, base_url, instance, evaluator.source_segment_size)
            except requests.RequestException as error:
                kept = (
                    f"; the sentences finished before it are in {args.output}/instances.log "
                    "(--continue-unfinished resumes after them)"
                    if args.output
                    else ""
                )
                raise RuntimeError(_failure(instance.index, error) + kept) from None
            evaluator.write_log(instance)
        session.post(f"{base_url}/close")  # SimulEval's server answers 404: no sessions there
    if evaluator.output is not None:
        evaluator.build_instances_from_log()
    if not evaluator.no_scoring:
        evaluator.dump_results()
        evaluator.dump_metrics()


def _translate(session, base_url: str, instance, segment_size: int) -> None:
    """One sentence, unit by unit, through the server."""
    from simuleval.data.segments import segment_from_json_string

    session.post(f"{base_url}/reset").raise_for_status()
    while not instance.finish_prediction:
        segment = _serializable(instance.send_source(segment_size))
        session.put(f"{base_url}/input", data=segment.json()).raise_for_status()
        reply = session.get(f"{base_url}/output")
        reply.raise_for_status()
        instance.receive_prediction(segment_from_json_string(reply.text))


def _failure(index: int, error) -> str:
    """What went wrong with sentence `index`: the server's own reason when it gave one."""
    reply = getattr(error, "response", None)
    if reply is None:
        return f"sentence {index}: the server was lost ({type(error).__name__})"
    try:
        reason = reply.json()["error"]  # this package's server says why
    except (ValueError, KeyError, TypeError):
        reason = reply.reason
    return f"sentence {index}: the server answered {reply.status_code}: {reason}"


def _evaluate_concurrently(args: argparse.Namespace, base_url: str) -> None:
    from simuleval.data.dataloader import build_dataloader

    from east_agent.simuleval_glue.batch import run_out_of_order, sentence_span

    dataloader = build_dataloader(args)
    translate = partial(_translate_concurrently, args, base_url, dataloader)
    run_out_of_order(args, sentence_span(args, len(dataloader)), None, translate)


class _Sentences:
    """The sentences of a concurrent run: handed out one at a time, each finished one
    appended to the log as it finishes, the failures kept (all of it thread-safe)."""

    def __init__(self, todo: list[int], log) -> None:
        self.todo, self.log = iter(todo), log
        self.failures: list[str] = []
        self.stop = threading.Event()  # no new sentence is started
        self.server_lost = False
        self.lock = threading.Lock()

    def next(self) -> int | None:
        with self.lock:
            return None if self.stop.is_set() else next(self.todo, None)

    def finished(self, record: dict) -> None:
        with self.lock:
            self.log.append(record)

    def failed(self, message: str, server_lost: bool) -> None:
        with self.lock:
            self.failures.append(message)
            if server_lost:
                self.server_lost = True
                self.stop.set()


def _translate_concurrently(args, base_url: str, dataloader, indices: range) -> None:
    """The sentences of `indices` the log lacks, `args.batch_size` at a time, each
    session translating one sentence after another."""
    from simuleval.evaluator.instance import INSTANCE_TYPE_DICT

    from east_agent.simuleval_glue.batch import check_failures, record_batching
    from east_agent.simuleval_glue.instance_log import InstanceLog

    output = Path(args.output)
    record_batching(output, args.batch_size, args.batch_size, sharing="the server")
    instance_class = INSTANCE_TYPE_DICT[f"{args.source_type}-{args.target_type}"]
    with InstanceLog(output / "instances.log", resume=args.continue_unfinished) as log:
        todo = [index for index in indices if index not in log.done]
        sentences = _Sentences(todo, log)
        make = partial(instance_class, dataloader=dataloader, args=args)
        segment_size = getattr(args, "source_segment_size", 1)
        session = partial(_session, base_url, sentences, make, segment_size)
        with ThreadPoolExecutor(args.batch_size, thread_name_prefix="session") as pool:
            sessions = [pool.submit(session) for _ in range(args.batch_size)]
            try:
                for running in sessions:
                    running.result()
            finally:
                sentences.stop.set()  # on an error or Ctrl-C, the others stop too
    if sentences.server_lost:
        raise RuntimeError(
            f"the server at {base_url} was lost; the sentences finished before are in "
            f"{output / 'instances.log'} (--continue-unfinished resumes after them):\n  "
            + "\n  ".join(sentences.failures)
        )
    check_failures(sentences.failures, len(todo), output / "instances.log")


def _session(base_url: str, sentences: _Sentences, make, segment_size: int) -> None:
    """One session of the server, translating sentences until none is left."""
    import requests

    with requests.Session() as session:
        session.headers[SESSION_HEADER] = uuid.uuid4().hex
        try:
            while (index := sentences.next()) is not None:
                instance = make(index)
                try:
                    _translate(session, base_url, instance, segment_size)
                except requests.RequestException as error:
                    lost = getattr(error, "response", None) is None
                    sentences.failed(_failure(index, error), server_lost=lost)
                    continue
                sentences.finished(instance.summarize())
        except BaseException:
            sentences.stop.set()
            raise
        try:
            session.post(f"{base_url}/close")
        except requests.RequestException:
            pass  # the server is gone, and its sessions with it


@command_line("east-remote-eval")
def main(argv: list[str] | None = None) -> None:
    from simuleval import options

    import east_agent.simuleval_plugin  # noqa: F401  (timing and CA metrics)
    from east_agent.simuleval_glue.batch import add_batch_arg

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser = options.general_parser()
    parser.allow_abbrev = False
    options.add_dataloader_args(parser)
    options.add_evaluator_args(parser)
    options.add_scorer_args(parser)
    add_batch_arg(parser)
    args = parser.parse_args()
    args.source_type = args.source_type or "text"
    args.target_type = args.target_type or "text"
    from east_agent.simuleval_glue.cli import check_data_files

    span = check_data_files(sys.argv[1:])
    evaluate_remote(args, span)


if __name__ == "__main__":
    main()
