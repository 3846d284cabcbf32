"""`east-simuleval`: the `simuleval` command, with three SimulEval 1.1.4 traps defused.

1. SimulEval parses its own flags before it has imported the agent, with argparse's
   prefix matching on: an agent flag `--latency low` is read as `--latency-metrics low`
   ("No latency metric called low"). This command turns prefix matching off, so agent
   flags are matched whole. (With the stock `simuleval`, write `--latency-level`.)
2. Importing SimulEval warns that ffmpeg is missing, which text evaluation never needs.
3. When no sentence got a single word, the latency scorers take the mean of nothing and
   the run dies after all the decoding; here they report NaN instead.
4. `--score-only` prints the scores of an existing `instances.log` but writes no
   `scores.tsv`; here it writes `scores.tsv` and `metrics.tsv` like a full run.
5. Its loop keeps one buffered handle on `instances.log` for the whole run, so a run killed
   hard loses finished sentences; here the handle is line-buffered: every finished
   sentence is on disk when the next one starts (and `--continue-unfinished` drops a line
   the kill cut in half instead of failing on it).

`--batch-size N` (N > 1) evaluates N sentences at once (`east_agent.simuleval_glue.batch`):
the same output folder, SimulEval's format and scorers. `--standalone` serves this
package's agents with sessions (`east_agent.simuleval_glue.agent_server`: one stream per client, the
clients' forwards batched, 127.0.0.1 unless `--remote-address` says otherwise).

It also loads `east_agent.simuleval_plugin`: computation-aware latency for text (`AL_CA`,
`LAAL_CA`, `AP_CA`, `DAL_CA`, see `east_agent.simuleval_glue.ca_latency`) and COMET.

Everything else is SimulEval's own `main()`, unchanged.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

from east_agent.common.entry import command_line


def _match_flags_whole() -> None:
    original_init = argparse.ArgumentParser.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.allow_abbrev = False

    argparse.ArgumentParser.__init__ = init


def _score_empty_runs() -> None:
    from simuleval.evaluator.scorers import latency_scorer

    def mean_or_nan(values):
        values = list(values)
        return statistics.mean(values) if values else float("nan")

    latency_scorer.mean = mean_or_nan


def _drop_a_torn_line(log: Path) -> None:
    """A run killed while writing leaves half a line, which SimulEval's resume would read."""
    from east_agent.simuleval_glue.instance_log import finished_records

    finished_records(log)


def _flush_every_instance() -> None:
    import builtins

    from simuleval.evaluator import evaluator

    def line_buffered(*args, **kwargs):
        return builtins.open(*args, buffering=1, **kwargs)

    evaluator.open = line_buffered  # the module's own `open`: its instances.log handles


def _score_only() -> None:
    from simuleval import options
    from simuleval.evaluator import SentenceLevelEvaluator

    parser = options.general_parser()
    options.add_evaluator_args(parser)
    options.add_scorer_args(parser)
    options.add_dataloader_args(parser)
    args = parser.parse_args()
    from east_agent.simuleval_glue.instance_log import check_log

    check_log(Path(args.output or ".") / "instances.log")
    evaluator = SentenceLevelEvaluator.from_args(args)
    evaluator.dump_results()
    evaluator.dump_metrics()


@command_line("east-simuleval")
def main() -> None:
    warnings.filterwarnings(
        "ignore", message="Couldn't find ffmpeg or avconv", category=RuntimeWarning
    )
    _match_flags_whole()
    _score_empty_runs()
    _flush_every_instance()
    from simuleval.cli import main as simuleval_main

    import east_agent.simuleval_plugin  # noqa: F401
    from east_agent.simuleval_glue.batch import batch_size_of

    batch_size, rest = batch_size_of(sys.argv[1:])
    batch_size_given = _given("--batch-size")
    sys.argv = [sys.argv[0], *rest]
    if "--score-only" in rest:
        _score_only()
    elif "--standalone" in rest:
        _serve(rest, batch_size if batch_size_given else None, simuleval_main)
    elif batch_size > 1:
        _run_batched(rest, batch_size)
    else:
        _run_simuleval_loop(rest, simuleval_main)


def _run_simuleval_loop(argv: list[str], simuleval_main) -> None:
    """SimulEval's own loop; its output folder is locked while it writes there."""
    from east_agent.common.run_lock import hold_run_lock
    from east_agent.simuleval_glue.batch import INSTANCES_LOCK

    _check_data_files(argv)
    if "--output" not in argv:
        simuleval_main()
        return
    output = Path(argv[argv.index("--output") + 1])
    with hold_run_lock(output, INSTANCES_LOCK):
        if "--continue-unfinished" in argv:
            _drop_a_torn_line(output / "instances.log")
        simuleval_main()


def _check_data_files(argv: list[str]) -> None:
    """The source and reference files, checked before SimulEval builds the agent."""
    from east_agent.simuleval_glue.adapter import check_source_file

    def value(flag: str) -> str | None:
        return argv[argv.index(flag) + 1] if flag in argv[:-1] else None

    check_source_file(value("--source"), value("--target"))


def _given(flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in sys.argv[1:])


def _serve(argv: list[str], batch_size: int | None, simuleval_main) -> None:
    """This package's agents get the session server; any other agent SimulEval's own."""
    from simuleval.utils.agent import EVALUATION_SYSTEM_LIST, get_agent_class

    from east_agent.simuleval_glue.adapter import StreamingAgent
    from east_agent.simuleval_glue.agent_server import DEFAULT_SESSIONS, add_server_args, serve
    from east_agent.simuleval_glue.batch import parse_args

    agent_class = get_agent_class()
    if not issubclass(agent_class, StreamingAgent):
        EVALUATION_SYSTEM_LIST.clear()  # SimulEval registers the agent again
        simuleval_main()
        return
    server_parser = argparse.ArgumentParser(prog="east-simuleval", add_help=False)
    add_server_args(server_parser)
    server_args, rest = server_parser.parse_known_args(argv)
    args = parse_args(agent_class, [*rest, "--batch-size", str(batch_size or DEFAULT_SESSIONS)])
    args.session_timeout = server_args.session_timeout
    serve(agent_class, args)


def _run_batched(argv: list[str], batch_size: int) -> None:
    from simuleval.utils.agent import get_agent_class

    from east_agent.simuleval_glue.batch import parse_args, run_batched

    for flag in ("--standalone", "--remote-eval", "--system-dir", "--slurm"):
        if flag in argv:
            raise ValueError(f"--batch-size above 1 evaluates locally; drop {flag}")
    agent_class = get_agent_class()
    args = parse_args(agent_class, [*argv, "--batch-size", str(batch_size)])
    run_batched(agent_class, args)


if __name__ == "__main__":
    main()
