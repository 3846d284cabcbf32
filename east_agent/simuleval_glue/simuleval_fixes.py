"""What SimulEval 1.1.4 does that this package's runs cannot live with, fixed in place.

`apply()` patches, once per process, both SimulEval's own loop (`east-simuleval
--batch-size 1`) and the batched runs that score with SimulEval's scorers (`east-simuleval
--batch-size N`, `east-eval`'s workers):
- When no sentence got a single word, the latency scorers take the mean of nothing and the
  run dies after all the decoding: they report NaN instead (ATD too, which also died on a
  run with no sentence at all, an empty `--start-index`/`--end-index` span, and BLEU, which
  logged sacrebleu's error on such a run and reported 0).
- A log is scored (`--score-only`, and every run of this package, which scores its
  `instances.log`) as records that ATD takes for speech input, 300 ms a source word and
  target words of no length: ATD of a text run came out 0. A text run's records are scored
  as the text instances they were.
- An unknown metric name raised a `RuntimeError` (a traceback): it is a user error
  (`ValueError`, one line) naming the metrics there are.
- Its loop keeps one buffered handle on `instances.log` for the whole run, so a run killed
  hard loses finished sentences: the handle is line-buffered, every finished sentence is
  on disk when the next one starts.
- It reads the source and reference files in the locale's encoding, which this package
  checks as UTF-8 (under a C or Latin-1 locale, an error after the model loaded, or text
  silently garbled): it reads them as UTF-8.
- It writes `config.yaml`, `scores.tsv` and `metrics.tsv` in place, so a kill while it
  writes leaves a torn or empty file (and an empty `scores.tsv` reads as a finished run):
  each is written under a temporary name and renamed into place.
  `scores.tsv` and `metrics.tsv` are followed by `scoring.json`, the settings they were
  scored with (`east_agent.simuleval_glue.scoring`), so a grid knows when to score a log
  again.
- `--continue-unfinished` resumes after the log's last line, which skips the sentences a
  batched run (finishing out of order) left out before it: the loop translates every
  sentence of the span the log lacks, and the log is put in index order before it is
  scored.

`refuse_computation_aware_for_text` refuses SimulEval's `--computation-aware` for text
runs before anything is decoded (the commands call it; this package's `*_CA` metrics
measure computation-aware latency for text).
"""

from __future__ import annotations

import builtins
import io
import statistics
from pathlib import Path

from east_agent.common.atomic import named_as, write_atomically

_applied = False


def apply() -> None:
    global _applied
    if _applied:
        return
    _score_empty_runs()
    _score_text_logs_as_text()
    _name_unknown_metrics()
    _open_logs_line_buffered_and_write_atomically()
    _dump_scores_atomically()
    _read_text_files_as_utf8()
    _resume_every_missing_sentence()
    _applied = True


def _score_empty_runs() -> None:
    from sacrebleu.metrics import BLEU
    from simuleval.evaluator.scorers import latency_scorer, quality_scorer

    def mean_or_nan(values):
        values = list(values)
        return statistics.mean(values) if values else float("nan")

    latency_scorer.mean = mean_or_nan
    atd = latency_scorer.ATDScorer.__call__

    def atd_of_any_instances(self, instances):
        # SimulEval reads the first instance's type as `instances[0]`: keys may start
        # elsewhere (a log scored without its span's --start-index) or be none at all
        return atd(self, dict(enumerate(instances.values()))) if instances else float("nan")

    latency_scorer.ATDScorer.__call__ = atd_of_any_instances

    def bleu_of_any_instances(self, instances):
        # SimulEval's returns 0 for any error (a tokenizer without its package): raised here
        if not instances:
            return float("nan")
        predictions = [instance.prediction for instance in instances.values()]
        references = [instance.reference for instance in instances.values()]
        return BLEU(tokenize=self.tokenizer).corpus_score(predictions, [references]).score

    quality_scorer.SacreBLEUScorer.__call__ = bleu_of_any_instances


def _score_text_logs_as_text() -> None:
    from simuleval.evaluator import SentenceLevelEvaluator
    from simuleval.evaluator.instance import LogInstance, TextInputInstance
    from simuleval.evaluator.scorers import latency_scorer

    class TextLogInstance(LogInstance):
        """A logged instance of a run with text input."""

    build_from_log = SentenceLevelEvaluator.build_instances_from_log

    def build_instances_from_log(self) -> None:
        build_from_log(self)
        if self.source_type == "text":
            for instance in self.instances.values():
                instance.__class__ = TextLogInstance

    SentenceLevelEvaluator.build_instances_from_log = build_instances_from_log
    # the latency scorers' only type tests: ATD's input type, and the refusal of
    # SimulEval's --computation-aware for text (this package refuses it before decoding)
    latency_scorer.TextInputInstance = (TextInputInstance, TextLogInstance)


def _name_unknown_metrics() -> None:
    from simuleval import options
    from simuleval.evaluator import scorers

    def get_scorer_class(scorer_type: str, name: str):
        quality = scorer_type == "quality"
        known = scorers.QUALITY_SCORERS_DICT if quality else scorers.LATENCY_SCORERS_DICT
        if name not in known:
            raise ValueError(
                f"--{scorer_type}-metrics {name}: no such metric; SimulEval knows "
                + ", ".join(sorted(known))
            )
        return known[name]

    options.get_scorer_class = get_scorer_class


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
            return _NamedAppend(file, **kwargs)
        return builtins.open(file, mode, *args, **kwargs)

    evaluator.open = opened  # the module's own `open`: instances.log, config.yaml


class _NamedAppend:
    """`instances.log` opened line-buffered for SimulEval's loop, a failed write named by
    the file (a full disk: before, `No space left on device` alone)."""

    def __init__(self, file, **kwargs) -> None:  # SimulEval opens the log with no more
        self.path = file
        self.handle = builtins.open(file, "a", buffering=1, **kwargs)

    def write(self, text: str) -> int:
        with named_as(self.path):
            return self.handle.write(text)

    def close(self) -> None:
        with named_as(self.path):
            self.handle.close()

    def __enter__(self) -> _NamedAppend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dump_scores_atomically() -> None:
    from simuleval.evaluator import SentenceLevelEvaluator

    # SimulEval dumps the results, then the metrics: the record goes before the one and
    # comes back after the other
    def dump_results(self) -> None:
        from east_agent.simuleval_glue.scoring import forget_scoring

        results = self.results
        if self.output:
            forget_scoring(self.output)
            write_atomically(self.output / "scores.tsv", results.to_csv(sep="\t", index=False))
        print(results.to_string(index=False))

    def dump_metrics(self) -> None:
        import pandas

        from east_agent.simuleval_glue.scoring import record_scoring

        metrics = pandas.DataFrame([instance.metrics for instance in self.instances.values()])
        if self.output:
            text = metrics.round(3).to_csv(sep="\t", index=False)
            write_atomically(self.output / "metrics.tsv", text)
            record_scoring(self.output, self.args)

    SentenceLevelEvaluator.dump_results = dump_results
    SentenceLevelEvaluator.dump_metrics = dump_metrics


def _read_text_files_as_utf8() -> None:
    from simuleval.data.dataloader.t2t_dataloader import TextToTextDataloader

    def from_files(cls, source, target):  # SimulEval's, in UTF-8 rather than the locale's
        assert source
        with open(source, encoding="utf-8") as handle:
            source_list = handle.readlines()
        target_list = [None for _ in source_list]
        if target:
            with open(target, encoding="utf-8") as handle:
                target_list = handle.readlines()
        return cls(source_list, target_list)

    TextToTextDataloader.from_files = classmethod(from_files)


def _resume_every_missing_sentence() -> None:
    from simuleval.evaluator import SentenceLevelEvaluator

    from east_agent.simuleval_glue.instance_log import finished_records, sort_log

    build_from_dataloader = SentenceLevelEvaluator.build_instances_from_dataloader
    build_from_log = SentenceLevelEvaluator.build_instances_from_log

    def resumed(self) -> bool:
        resume = getattr(self.args, "continue_unfinished", False)
        return bool(self.output and resume and not self.score_only)

    def build_instances_from_dataloader(self) -> None:
        if resumed(self):  # SimulEval's start: after the last line's index
            self.start_index = getattr(self.args, "start_index", 0)
        build_from_dataloader(self)
        if resumed(self):
            for record in finished_records(self.output / "instances.log"):
                self.instances.pop(record["index"], None)

    def build_instances_from_log(self) -> None:
        if resumed(self):  # after the loop: the sentences it translated come last
            sort_log(self.output / "instances.log")
        build_from_log(self)

    SentenceLevelEvaluator.build_instances_from_dataloader = build_instances_from_dataloader
    SentenceLevelEvaluator.build_instances_from_log = build_instances_from_log


def refuse_computation_aware_for_text(computation_aware: bool, source_type: str | None) -> None:
    """SimulEval's `--computation-aware` raises for text input once the decoding is done
    (or, scored from a log, turns plain AL negative): refused before anything runs when the
    run's source is text (`source_type`: the agent's, or a scored folder's)."""
    if computation_aware and source_type == "text":
        raise ValueError(
            "--computation-aware: SimulEval's computation-aware latency is for speech input "
            "(for text it fails after the decoding); ask for AL_CA, LAAL_CA, AP_CA or DAL_CA "
            "with --latency-metrics instead (--ca-unit-seconds: seconds a source word takes)"
        )


def logged_source_type(output: Path) -> str | None:
    """The source type a run folder's `config.yaml` records (what `--score-only` reads)."""
    import yaml

    try:
        config = yaml.safe_load((Path(output) / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return config.get("source_type") if isinstance(config, dict) else None
