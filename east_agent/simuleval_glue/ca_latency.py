"""Computation-aware latency for text: `AL_CA`, `LAAL_CA`, `AP_CA`, `DAL_CA`.

SimulEval 1.1.4 records `elapsed = 0` for text, and its `--computation-aware` flag either
raises for text or (through a `from_args` bug, with `--output`) makes plain AL
computation-aware and negative. Importing this module (east-simuleval does; with the stock
command pass `--user-dir` pointing at `east_agent/simuleval_plugin`) instead:

1. times text instances: `elapsed` of each target word is the wall-clock seconds from the
   moment the first source unit was sent until the word came back. SimulEval sends every
   unit as soon as the system asks, so this is the system's own computation time;
2. registers latency metrics that add it, expressed in source units, to the usual delay:

       CA delay of word j = d_j + elapsed_j / u

   with d_j the source units read when word j was written and u = `--ca-unit-seconds`,
   how long one source unit (a word) takes to arrive (default 0.4 s, speech at 150 words
   per minute). This is SimulEval's computation-aware convention for speech (source
   consumed plus computation time so far), carried over to text. AL, LAAL, AP and DAL
   are then the standard formulas over CA delays. Scoring an existing log again with
   another u needs no decoding (`--score-only`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from simuleval.evaluator.instance import INSTANCE_TYPE_DICT, TextToTextInstance
from simuleval.evaluator.scorers.latency_scorer import (
    ALScorer,
    APScorer,
    DALScorer,
    LAALScorer,
    register_latency_scorer,
)

from east_agent.common.arguments import positive_seconds

if TYPE_CHECKING:
    import argparse

    from simuleval.data.segments import Segment
    from simuleval.evaluator.instance import Instance

logger = logging.getLogger("east_agent.simuleval_glue.ca_latency")

DEFAULT_UNIT_SECONDS = 0.4


class TimedTextToTextInstance(TextToTextInstance):
    """A text instance whose `elapsed` is real: seconds since its first source unit."""

    def send_source(self, config_dict: dict | None = None) -> Segment:
        if self.step == 0:
            self.source_started = time.time()
        return super().send_source(config_dict)

    def step_to_elapsed(self, step: int, current_time: float) -> float:
        return current_time - self.source_started


INSTANCE_TYPE_DICT["text-text"] = TimedTextToTextInstance


def refuse_unit_seconds_without_ca_metric(argv: list[str]) -> None:
    """`--ca-unit-seconds` is a flag of the *_CA metrics (SimulEval adds it with them):
    without one, it is refused saying so, not as SimulEval's bare unrecognized argument."""
    import argparse

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--latency-metrics", nargs="+", default=[])
    parser.add_argument("--ca-unit-seconds")
    known, _ = parser.parse_known_args(argv)
    if known.ca_unit_seconds is not None and not any(
        metric.endswith("_CA") for metric in known.latency_metrics
    ):
        raise ValueError(
            "--ca-unit-seconds sets the clock of the computation-aware metrics: ask for one "
            "with --latency-metrics (AL_CA, LAAL_CA, AP_CA or DAL_CA), or leave it out"
        )


def computation_aware_delays(
    delays: Sequence[float], elapsed: Sequence[float], unit_seconds: float
) -> list[float]:
    return [delay + seconds / unit_seconds for delay, seconds in zip(delays, elapsed)]


class ComputationAware:
    """Mixin: the scorer's delays become CA delays; everything else is SimulEval's."""

    unit_seconds = DEFAULT_UNIT_SECONDS

    def get_delays_lengths(self, ins: Instance) -> tuple[list[float], int, int]:
        delays, source_length, target_length = super().get_delays_lengths(ins)  # type: ignore[misc]  # a mixin: the SimulEval scorer after it has it
        elapsed = getattr(ins, "elapsed", None) or []
        if len(elapsed) != len(delays):
            raise ValueError(
                f"instance {ins.index}: {len(elapsed)} timestamps for {len(delays)} words; "
                "run with east-simuleval (or --user-dir east_agent/simuleval_plugin)"
            )
        if not any(elapsed):
            logger.warning("instance %s has no timing: CA latency equals plain latency", ins.index)
        return (
            computation_aware_delays(delays, elapsed, self.unit_seconds),
            source_length,
            target_length,
        )

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--ca-unit-seconds",
            type=positive_seconds,
            default=DEFAULT_UNIT_SECONDS,
            help="computation-aware latency: seconds one source unit takes to arrive",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ComputationAware:
        if args.ca_unit_seconds <= 0:
            raise ValueError(f"--ca-unit-seconds must be positive, got {args.ca_unit_seconds}")
        scorer = cls(computation_aware=False, use_ref_len=not args.no_use_ref_len)  # type: ignore[call-arg]  # __init__ of the SimulEval scorer mixed in
        scorer.unit_seconds = args.ca_unit_seconds
        return scorer


@register_latency_scorer("AL_CA")
class ALCAScorer(ComputationAware, ALScorer):
    pass


@register_latency_scorer("LAAL_CA")
class LAALCAScorer(ComputationAware, LAALScorer):
    pass


@register_latency_scorer("AP_CA")
class APCAScorer(ComputationAware, APScorer):
    pass


@register_latency_scorer("DAL_CA")
class DALCAScorer(ComputationAware, DALScorer):
    pass
