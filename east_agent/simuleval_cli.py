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

It also loads `east_agent.simuleval_plugin`: computation-aware latency for text (`AL_CA`,
`LAAL_CA`, `AP_CA`, `DAL_CA`, see `east_agent.ca_latency`) and COMET.

Everything else is SimulEval's own `main()`, unchanged.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings


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


def _score_only() -> None:
    from simuleval import options
    from simuleval.evaluator import SentenceLevelEvaluator

    parser = options.general_parser()
    options.add_evaluator_args(parser)
    options.add_scorer_args(parser)
    options.add_dataloader_args(parser)
    evaluator = SentenceLevelEvaluator.from_args(parser.parse_args())
    evaluator.dump_results()
    evaluator.dump_metrics()


def main() -> None:
    warnings.filterwarnings(
        "ignore", message="Couldn't find ffmpeg or avconv", category=RuntimeWarning
    )
    _match_flags_whole()
    _score_empty_runs()
    from simuleval.cli import main as simuleval_main

    import east_agent.simuleval_plugin  # noqa: F401

    if "--score-only" in sys.argv:
        _score_only()
    else:
        simuleval_main()


if __name__ == "__main__":
    main()
