"""What SimulEval 1.1.4 does that this package's runs cannot live with, fixed in place.

`apply()` patches, once per process, both SimulEval's own loop (`east-simuleval
--batch-size 1`) and the batched runs that score with SimulEval's scorers (`east-simuleval
--batch-size N`, `east-eval`'s workers):
- When no sentence got a single word, the latency scorers take the mean of nothing and the
  run dies after all the decoding: they report NaN instead.
- Its loop keeps one buffered handle on `instances.log` for the whole run, so a run killed
  hard loses finished sentences: the handle is line-buffered, every finished sentence is
  on disk when the next one starts.
- It writes `config.yaml`, `scores.tsv` and `metrics.tsv` in place, so a kill while it
  writes leaves a torn or empty file (and an empty `scores.tsv` reads as a finished run):
  each is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import builtins
import io
import statistics
from pathlib import Path

from east_agent.common.atomic import write_atomically

_applied = False


def apply() -> None:
    global _applied
    if _applied:
        return
    _score_empty_runs()
    _open_logs_line_buffered_and_write_atomically()
    _dump_scores_atomically()
    _applied = True


def _score_empty_runs() -> None:
    from simuleval.evaluator.scorers import latency_scorer

    def mean_or_nan(values):
        values = list(values)
        return statistics.mean(values) if values else float("nan")

    latency_scorer.mean = mean_or_nan


class _AtomicText(io.StringIO):
    """A text file opened for writing that appears at its path, whole, when closed."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)

    def close(self) -> None:
        if not self.closed:
            write_atomically(self.path, self.getvalue())
        super().close()


def _open_logs_line_buffered_and_write_atomically() -> None:
    from simuleval.evaluator import evaluator

    def opened(file, mode="r", *args, **kwargs):
        if mode == "w":
            return _AtomicText(file)
        if mode == "a":
            return builtins.open(file, mode, *args, buffering=1, **kwargs)
        return builtins.open(file, mode, *args, **kwargs)

    evaluator.open = opened  # the module's own `open`: instances.log, config.yaml


def _dump_scores_atomically() -> None:
    from simuleval.evaluator import SentenceLevelEvaluator

    def dump_results(self) -> None:
        results = self.results
        if self.output:
            write_atomically(self.output / "scores.tsv", results.to_csv(sep="\t", index=False))
        print(results.to_string(index=False))

    def dump_metrics(self) -> None:
        import pandas

        metrics = pandas.DataFrame([instance.metrics for instance in self.instances.values()])
        if self.output:
            text = metrics.round(3).to_csv(sep="\t", index=False)
            write_atomically(self.output / "metrics.tsv", text)

    SentenceLevelEvaluator.dump_results = dump_results
    SentenceLevelEvaluator.dump_metrics = dump_metrics
