"""`east-simuleval ... --batch-size N`: SimulEval's evaluation, N sentences at a time.

SimulEval evaluates one sentence after another: its loop sends a source unit, takes the
agent's action, and only starts the next sentence when this one is finished. Here the
agent's decoder is built with N streams (`east_agent.decoding.batching`): N sentences advance
together, one forward per step, each finished one replaced by the next at once. What
comes out is what SimulEval writes:
- each sentence becomes SimulEval's own instance, fed the chunks exactly as the agent
  would have returned them (a chunk's words, delayed by the source units read when it was
  written), so `instances.log` has SimulEval's format and is appended (and flushed) as
  each sentence finishes; a killed run keeps every finished sentence, and
  `--continue-unfinished` resumes after them, whatever their order;
- at the end the log is put in index order and scored by SimulEval's own scorers
  (`scores.tsv`, `metrics.tsv`), exactly as `--score-only` scores a log.
Computation-aware latency (`elapsed`, `*_CA`) then measures what a listener sees while N
streams share the device; `batch.json` in the output folder says so. `--batch-size 1` is
SimulEval's own loop (single-stream computation-aware latency).

A sentence that overflows the context fails alone: the others are finished and kept,
the failures are named (index, source length, the limit) and the run exits non-zero
without scores.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from contextlib import suppress
from copy import copy
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from east_agent.common.arguments import positive_int, refuse_repeated, refuse_unknown_first
from east_agent.common.atomic import write_atomically
from east_agent.common.counts import instance_kind
from east_agent.common.entry import CommandError, raise_if_signalled
from east_agent.common.records import read_json_object
from east_agent.simuleval_glue import simuleval_fixes
from east_agent.simuleval_glue.ca_latency import TimedTextToTextInstance
from east_agent.simuleval_glue.instance_log import InstanceLog, finished_records, sort_log
from east_agent.simuleval_glue.run_folder import (
    BATCH_RECORD,
    SETTINGS_RECORD,
    check_log_units,
    check_recorded_span,
    clear_scores,
    combined_batch_record,
    record_types,
    recorded_settings,
    score_complete_log,
    translation_settings,
    writing,
)
from east_agent.simuleval_glue.scoring import UNSPACED_UNITS, recorded_source_units

if TYPE_CHECKING:
    from simuleval.agents import GenericAgent
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from east_agent.simuleval_glue.adapter import StreamingAgent

logger = logging.getLogger("east_agent.simuleval_glue.batch")


class BatchedRunError(CommandError):
    """Some sentences of a batched run could not be translated (the rest were kept)."""


BATCH_HELP = "sentences decoded at once (1: SimulEval's own loop, one sentence at a time)"


def add_batch_arg(parser: argparse.ArgumentParser, help: str = BATCH_HELP) -> None:
    parser.add_argument("--batch-size", type=positive_int, default=1, help=help)


def batch_size_of(argv: list[str]) -> tuple[int, list[str]]:
    """`--batch-size` read (and taken out of) a command line; errors exit like argparse."""
    parser = argparse.ArgumentParser(prog="east-simuleval", add_help=False, allow_abbrev=False)
    add_batch_arg(parser)
    known, rest = parser.parse_known_args(argv)
    refuse_repeated(parser, argv)
    return known.batch_size, rest


def parse_args(
    agent_class: type[GenericAgent],
    argv: list[str],
    known_only: bool = False,
    given: list[str] | None = None,
) -> argparse.Namespace:
    """SimulEval's flags, the scorers', the dataloader's and the agent's, as SimulEval
    parses them (unknown flags are errors; `known_only`: left out, as SimulEval reads a
    `--system-dir`'s config). `given`: the user's command line, refused if it gives one of
    these flags twice (`argv` may add a folder's flags or a default after it)."""
    from simuleval import options

    import east_agent.simuleval_plugin  # noqa: F401  (the *_CA metrics and COMET, in any process)

    parser = options.general_parser()
    options.add_evaluator_args(parser)
    options.add_scorer_args(parser, argv)
    options.add_slurm_args(parser)
    options.add_dataloader_args(parser, argv)
    agent_class.add_args(parser)
    add_batch_arg(parser)
    if not known_only:  # a misspelt flag named with the one it may be (`--long-from`)
        refuse_unknown_first(parser, argv)
    args = parser.parse_known_args(argv)[0] if known_only else parser.parse_args(argv)
    if given is not None:  # before: the last one won (`--latency high --latency low`)
        refuse_repeated(parser, given)
    for name in ("source_type", "target_type"):  # a pipeline's are properties of its objects
        if isinstance(getattr(agent_class, name, None), str):
            setattr(args, name, getattr(agent_class, name))
    return args


class ReplayedInstance(TimedTextToTextInstance):
    """A SimulEval text instance fed the chunks of a finished translation: SimulEval's own
    bookkeeping (words, delays, elapsed) for each, at the time the chunk was written."""

    def replay(self, delays: list[int], chunks: list[str], seconds: list[float]) -> None:
        from simuleval.data.segments import TextSegment

        steps: dict[int, tuple[list[str], float]] = {}
        for delay, chunk, elapsed in zip(delays, chunks, seconds):
            texts, _ = steps.setdefault(delay, ([], elapsed))
            if chunk:  # what the agent leaves out of its WriteAction
                texts.append(chunk)
            steps[delay] = (texts, elapsed)
        last = len(self.source)
        steps.setdefault(last, ([], seconds[-1] if seconds else 0.0))
        for delay, (texts, elapsed) in sorted(steps.items()):
            self.step, self.replay_elapsed = delay, elapsed
            self.receive_prediction(TextSegment(content="".join(texts), finished=delay == last))

    def step_to_elapsed(self, step: int, current_time: float) -> float:
        return self.replay_elapsed


def run_batched(
    agent_class: type[StreamingAgent],
    args: argparse.Namespace,
    load: Callable[..., tuple[PreTrainedModel, PreTrainedTokenizerBase]] | None = None,
) -> None:
    """Evaluate `args.source` with `args.batch_size` streams into `args.output`.

    `load(args, config)`: (model, tokenizer) in place of `agent_class.load` (a grid keeps
    one checkpoint loaded for all its runs)."""
    from simuleval.data.dataloader import build_dataloader

    from east_agent.simuleval_glue.data_files import (
        check_references_given,
        checked_span,
        sentence_span,
    )
    from east_agent.simuleval_glue.scoring import check_scoring_flags

    simuleval_fixes.apply()  # before its dataloader reads the files
    config = agent_class.checked_config(args)
    source, target = getattr(args, "source", None), getattr(args, "target", None)
    checked_span(source, target, args.start_index, args.end_index, args.eval_latency_unit)
    check_references_given(source, target, args.no_scoring)
    check_scoring_flags(args, config.tgt_lang)
    if not args.output:
        raise ValueError("--batch-size needs --output (the run's instances.log goes there)")
    dataloader = build_dataloader(args)
    settings = translation_settings(agent_class, args)
    translate = partial(_translate_all, agent_class, args, config, load, dataloader)
    span = sentence_span(args.start_index, args.end_index, len(dataloader))
    check = partial(agent_class.check_with_tokenizer, args, config)
    run_out_of_order(args, span, settings, translate, check)


def run_out_of_order(
    args: argparse.Namespace,
    indices: range,
    settings: dict | None,
    translate: Callable[[range], None],
    check: Callable[[], None] | None = None,
) -> None:
    """Write `args.output` as SimulEval would, for a run that finishes sentences in any
    order: `translate(indices)` appends each sentence the log lacks as it finishes; the
    log is then put in index order and scored with SimulEval's scorers. A resumed log
    that is already complete is only scored. `check`: see `writing`."""
    simuleval_fixes.apply()
    output = Path(args.output)
    log = output / "instances.log"
    span = (indices.start, indices.stop)
    with writing(output, settings, args.continue_unfinished, run=True, span=span, check=check):
        done = {record["index"] for record in finished_records(log)}
        scores = None if args.no_scoring else partial(score, args)
        if args.continue_unfinished and indices and done.issuperset(indices):
            sort_log(log)  # killed while scoring, or before it sorted: nothing to translate
            score_complete_log(output, scores)
            return
        # kept sentences keep the record of how their `elapsed` was measured
        clear_scores(output, batching=not (args.continue_unfinished and done))
        record_types(output, args.source_type, args.target_type)
        try:
            translate(indices)
        except BaseException:  # failed sentences, a Ctrl-C: the others kept, in index order
            with suppress(Exception):  # (before: a Ctrl-C left them in finishing order);
                if log.exists():  # the run's own error is the one to show
                    sort_log(log)
            raise
        sort_log(log)
        if scores is not None:
            scores()


def _translate_all(agent_class, args, config, load, dataloader, indices: range) -> None:
    output = Path(args.output)
    log = output / "instances.log"
    if not indices:  # a shard past a short test set's end: no model to load (minutes for 8B)
        with InstanceLog(log, args.continue_unfinished):
            return
    model, tokenizer = (load or agent_class.load)(args, config)
    raise_if_signalled()  # a Ctrl-C a library swallowed as the load imported its modules
    if args.fp16 or args.dtype == "fp16":
        model.half()
    # no more streams than sentences: each stream's cache rows are made (and attended) at once
    streams = max(1, min(args.batch_size, len(indices)))
    decoder = agent_class.build_decoder(model, tokenizer, config, streams=streams)
    recorded = partial(record_batching, output, args.batch_size)
    kind = instance_kind(getattr(args, "long_form", False))
    try:
        failures, todo = _translate(decoder, dataloader, args, indices, log, recorded)
    except CommandError as error:  # the whole run ends (a KV cache outgrowing the device)
        raise BatchedRunError(
            f"{error}; the {kind}s finished so far are in {log} "
            "(--continue-unfinished resumes after them)"
        ) from error
    named = [f"{kind} {index} {why}" for index, why in sorted(failures)]
    check_failures(named, len(todo), log, kind)


SHOWN_FAILURES = 10  # a thousand sentences over the context: not a thousand lines


def check_failures(failures: list[str], tried: int, log: Path, kind: str = "sentence") -> None:
    """Raise naming the sentences (`kind`: talks, in long form) that failed, the first
    `SHOWN_FAILURES` with why (the others, and those a resumed log kept, are in `log`)."""
    if not failures:
        return
    kept = len(finished_records(log))
    where = {0: f"{log} holds no {kind}", 1: f"1 finished {kind} is in {log}"}.get(
        kept, f"{kept} finished {kind}s are in {log}"
    )
    shown = failures[:SHOWN_FAILURES]
    if len(failures) > SHOWN_FAILURES:  # before: every one, a line each
        more = len(failures) - SHOWN_FAILURES
        shown.append(f"... and {more} more (not in the log: --continue-unfinished tries them)")
    raise BatchedRunError(  # before: "the others are in" though none was
        f"{len(failures)} of the {tried} {kind}s this run tried failed; {where} "
        "(no scores written):\n  " + "\n  ".join(shown)
    )


def record_batching(
    output: Path, batch_size: int, streams: int, sharing: str = "the device"
) -> None:
    """`batch.json`: how many streams shared what while `elapsed` was measured, written
    before a run's first sentence goes into the log. A resumed log's kept sentences were
    measured by the runs before: the record says the most streams any run that wrote a
    sentence had, and all that they shared (`combined_batch_record`)."""
    path = output / BATCH_RECORD
    this_run = {"batch_size": batch_size, "streams": streams, "sharing": [sharing]}
    earlier = [read_json_object(path)] if path.exists() else []
    record = combined_batch_record(earlier + [this_run])
    if earlier != [record]:
        write_atomically(path, json.dumps(record, indent=2) + "\n")


def _translate(decoder, dataloader, args, indices: range, log_path: Path, recorded):
    """Translate the sentences of `indices` the log lacks, appending each as it finishes
    (`recorded(streams)` before the first, with the most streams the run can use); return
    the failures (index, why) and the indices that were to do."""
    from east_agent.decoding.batching import Sentence, translate_batch
    from east_agent.decoding.long_form import capped_note
    from east_agent.decoding.streaming import Counters

    failures, totals, translated = [], Counters(), 0
    with InstanceLog(log_path, args.continue_unfinished) as log:
        todo = [index for index in indices if index not in log.done]
        log.before_first = partial(recorded, min(len(decoder.streams), len(todo)))
        sentences = (Sentence(index, dataloader[index]["source"]) for index in todo)
        # closed however the run ends: an interrupted one's message on a line of its own
        with _progress(args, len(indices), len(indices) - len(todo)) as progress:
            for outcome in translate_batch(decoder, sentences):
                progress.update()
                if outcome.error is not None:
                    failures.append((outcome.key, f"({outcome.units} units): {outcome.error}"))
                else:
                    translation = outcome.translation
                    assert translation is not None  # an outcome holds one or an error
                    totals, translated = totals + translation.counters, translated + 1
                    instance = ReplayedInstance(outcome.key, dataloader, args)
                    instance.replay(
                        translation.delays, translation.chunks, translation.chunk_seconds
                    )
                    log.append(instance.summarize())
                raise_if_signalled()  # the sentence finished is in the log: a resume keeps it
    talks = "the 1 talk" if translated == 1 else f"the {translated} talks"  # long form only
    if note := capped_note(totals, f"{talks} translated"):
        print(f"east-simuleval: {note}", file=sys.stderr, flush=True)
    return failures, todo


# a run's flags, which `--score-only` does not read (the log holds the run's sentences)
_RUN_FLAGS = (
    "--start-index", "--end-index", "--continue-unfinished", "--batch-size",
    "--remote-address", "--remote-port", "--request-timeout",
)  # fmt: skip


def refuse_run_flags(argv: list[str]) -> None:
    """`--score-only` beside a run's flags (before: taken and left unread, exit 0: a
    `--start-index 3` scored every sentence)."""
    from east_agent.common.arguments import given_flags

    given = given_flags(argv, _RUN_FLAGS)
    if given:
        raise ValueError(
            "--score-only scores the log in --output with the scoring flags alone; "
            f"{', '.join(given)}: a run's, not read (drop {'it' if len(given) == 1 else 'them'})"
        )


def score_folder(args: argparse.Namespace) -> None:
    """`--score-only`: the scores of the log in `args.output` (a bad line named first),
    with the folder held."""
    from east_agent.simuleval_glue.instance_log import check_log
    from east_agent.simuleval_glue.scoring import check_bleu_tokenizer, check_latency_unit

    for flag in ("source", "target"):  # before: taken and ignored, exit 0
        if getattr(args, flag, None) is not None:
            raise ValueError(
                f"--{flag} with --score-only: a log is scored against the sources and "
                "references it recorded; to score other ones, translate again"
            )
    output = Path(args.output or ".")
    log = output / "instances.log"
    if not log.exists() and args.output is None:
        raise ValueError(
            "--score-only scores the log of a run's folder: give the folder with --output "
            "(there is no instances.log here)"
        )
    if not log.exists():
        raise ValueError(f"{log}: no such file (score a run's --output folder)")
    check_latency_unit(args, recorded_language(output, "tgt_lang"))
    check_bleu_tokenizer(args)
    with writing(output):  # a folder another process writes: refused, before its log is read
        if args.computation_aware:
            source_type = args.source_type or simuleval_fixes.logged_source_type(output)
            simuleval_fixes.refuse_computation_aware_for_text(True, source_type)
        check_log(log)
        check_recorded_span(output)
        check_log_units(output, args)
        before = scored_metrics(output)
        score(argparse.Namespace(**{**vars(args), "output": str(output)}))
        after = scored_metrics(output)
        if before and after and before != after:  # by design; said, not silently dropped
            print(
                f"note: {output / 'scores.tsv'} held {', '.join(before)}; now {', '.join(after)}",
                flush=True,
            )


def scored_metrics(output: Path) -> list[str]:
    """The metrics `scores.tsv` in `output` holds (none where there is none)."""
    try:
        header = (output / "scores.tsv").read_text(encoding="utf-8").partition("\n")[0]
    except (OSError, UnicodeDecodeError):
        return []
    return [name for name in header.split("\t") if name]


def score(args: argparse.Namespace) -> None:
    """SimulEval's scores of the log in `args.output` (`scores.tsv`, `metrics.tsv`, and
    how they were made: `scoring.json`)."""
    from simuleval.evaluator import SentenceLevelEvaluator

    from east_agent.simuleval_glue.instance_log import check_references

    simuleval_fixes.apply()  # the scores written whole, and their record beside them
    # every sentence holds its reference: a log resumed with --target after a run without
    # one holds some that do not (before: sacrebleu's TypeError, the run translated)
    check_references(Path(args.output) / "instances.log")
    scoring = copy(args)
    scoring.score_only = True
    if "COMET" in scoring.quality_metrics and not getattr(scoring, "comet_source_lang", None):
        # a log scored on its own (--score-only, a resumed complete log) has no --src-lang
        output = Path(scoring.output)
        scoring.comet_source_lang = getattr(scoring, "src_lang", None) or recorded_language(
            output, "src_lang"
        )
        if scoring.comet_source_lang is None and recorded_source_units(output) == UNSPACED_UNITS:
            raise ValueError(
                f"{output}: its COMET scores read the source's units {UNSPACED_UNITS} (a "
                "Chinese or Japanese source), and the folder does not record its language (a "
                "run of east-remote-eval against a server that does not name it): give "
                "--comet-source-lang"
            )
    evaluator = SentenceLevelEvaluator.from_args(scoring)
    evaluator.dump_results()
    evaluator.dump_metrics()


def recorded_language(output: Path, name: str) -> str | None:
    """The `src_lang` or `tgt_lang` of the run that wrote `output` as its settings record
    holds it (of a remote run, the language its server named, or its system's)."""
    path = output / SETTINGS_RECORD
    record = read_json_object(path) if path.exists() else {}
    language = record.get(name, recorded_settings(record).get(name))
    return language if isinstance(language, str) else None


def _progress(args, total: int, done: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, disable=args.no_progress_bar, file=sys.stderr)
