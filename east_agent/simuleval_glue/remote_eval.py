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

The output folder is written as `east-simuleval` writes one (`run_folder`): held by one
writer, every finished sentence flushed as it finishes, the scores written atomically and
only beside the log they were made from; `--continue-unfinished` resumes after the last
finished sentence (and scores a complete log).
"""

from __future__ import annotations

import sys
import uuid

from east_agent.common.entry import command_line
from east_agent.simuleval_glue.agent_server import SESSION_HEADER


def _serializable(segment):
    if not isinstance(getattr(segment, "tgt_lang", None), (str, type(None))):
        segment.tgt_lang = None
    return segment


def evaluate_remote(args, span: tuple[int, int] | None = None) -> None:
    """Evaluate the served system on `args.source` (`span`: the sentences the run covers,
    for resuming `args.output`)."""
    from functools import partial
    from pathlib import Path

    from east_agent.simuleval_glue import simuleval_fixes
    from east_agent.simuleval_glue.batch import score
    from east_agent.simuleval_glue.run_folder import loop_in

    base_url = f"http://{args.remote_address}:{args.remote_port}"
    _check_server(base_url)  # before the folder changes
    simuleval_fixes.apply()
    if args.output is None:
        _loop(args, base_url)
        return
    scores = None if args.no_scoring else partial(score, args)
    loop = partial(_loop, args, base_url)
    loop_in(Path(args.output), None, args.continue_unfinished, span, loop, scores)


def _check_server(base_url: str) -> None:
    import requests

    try:
        requests.get(f"{base_url}/", timeout=30).raise_for_status()
    except requests.RequestException as error:
        raise ValueError(
            f"no system answers at {base_url} ({type(error).__name__}): start one with "
            "`east-simuleval --standalone --remote-port PORT ...`, or check --remote-address "
            "and --remote-port"
        ) from None


def _loop(args, base_url: str) -> None:
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
                raise RuntimeError(_failure(instance.index, error, args.output)) from None
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


def _failure(index: int, error, output: str | None) -> str:
    """What went wrong with sentence `index`: the server's own reason when it gave one."""
    reply = getattr(error, "response", None)
    if reply is None:
        what = f"the server was lost ({type(error).__name__})"
    else:
        try:
            reason = reply.json()["error"]  # this package's server says why
        except (ValueError, KeyError, TypeError):
            reason = reply.reason
        what = f"the server answered {reply.status_code}: {reason}"
    kept = (
        f"; the sentences finished before it are in {output}/instances.log "
        "(--continue-unfinished resumes after them)"
        if output
        else ""
    )
    return f"sentence {index}: {what}{kept}"


@command_line("east-remote-eval")
def main(argv: list[str] | None = None) -> None:
    from simuleval import options

    import east_agent.simuleval_plugin  # noqa: F401  (timing and CA metrics)

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser = options.general_parser()
    options.add_dataloader_args(parser)
    options.add_evaluator_args(parser)
    options.add_scorer_args(parser)
    args = parser.parse_args()
    args.source_type = args.source_type or "text"
    args.target_type = args.target_type or "text"
    from east_agent.simuleval_glue.cli import check_data_files

    span = check_data_files(sys.argv[1:])
    evaluate_remote(args, span)


if __name__ == "__main__":
    main()
