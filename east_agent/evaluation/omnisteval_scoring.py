"""Scoring with OmniSTEval, the scorer of IWSLT 2026's simultaneous track.

Long form (`score_longform`): each talk of a long-form test set (`longform`) is one
stream; its output is a list of chunks, each with the source units read when it was
written and the computation seconds elapsed so far (SimulEval's `elapsed`: wall clock
since the talk's first unit was sent). Every source unit gets a time (`j * unit_seconds`,
or a word-timestamp file; rounded to 1/1024 s, see `longform.TICK`) and each output word
is stamped in milliseconds:

    computation-unaware  time of the last unit read when its chunk was written
    computation-aware    that time + the elapsed computation seconds

These go to OmniSTEval as its long-form inputs (SimulEval-style JSONL hypothesis, speech
segmentation JSON whose segments are the reference sentences' spans of the talk, reference
sentences), which it re-segments to the reference sentences (SoftSegmenter) and scores:
BLEU, chrF, LongYAAL and StreamLAAL (its `long_laal`: LAAL over the re-segmented output),
each latency computation-unaware and computation-aware; COMET (times 100, like the
sentence-level runs' column), when asked, over the re-segmented sentences with their
sources, in COMET's own environment (`east_agent.common.comet_process`; OmniSTEval's own
COMET would download its model). The cumulative `elapsed` is made
incremental with OmniSTEval's `--fix_simuleval_emission_ca` by default: summed over a whole
talk, computation would otherwise count the time the system waits for speech.

Short form (`shortform_latency`): a SimulEval `instances.log` gets OmniSTEval's YAAL
(computation-unaware and -aware, in source units like SimulEval's AL) and its degenerate
policy diagnostics, as extra columns.

    python -m east_agent.evaluation.omnisteval_scoring longform --testset DIR \\
        --log RUN/instances.log --output RUN [--word-times FILE] [--ca-unit-seconds 0.4] \\
        [--comet-checkpoint CKPT --comet-python COMET_ENV/bin/python] [--gold-sentences]
    python -m east_agent.evaluation.omnisteval_scoring shortform --log RUN/instances.log
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import omnisteval
from omnisteval import Instance, evaluate_instances, resegment
from omnisteval.io import format_report, load_resegmentation_inputs

from east_agent.common.arguments import (
    folder_path,
    given_flags,
    parse_once_each,
    positive_seconds,
)
from east_agent.common.atomic import check_folder_path, write_atomically
from east_agent.common.comet_process import (
    COMET_INPUTS,
    CometSettings,
    add_comet_flags,
    check_named_by_flag,
    comet_scores,
    comet_settings,
)
from east_agent.common.entry import command_line
from east_agent.common.records import read_json_object, write_jsonl
from east_agent.common.text_lines import check_input_file, iter_lines, read_lines
from east_agent.decoding.units import join_source_units
from east_agent.evaluation.longform import (
    DEFAULT_UNIT_SECONDS,
    LongformSet,
    Talk,
    check_sentence_durations,
    on_tick,
    read_longform,
    unit_times,
)
from east_agent.simuleval_glue.instance_log import check_record_fields, log_record

LONGFORM_KEYS = {  # our column: OmniSTEval's score key
    "BLEU": "bleu",
    "chrF": "chrf",
    "LongYAAL": "long_yaal",
    "LongYAAL_CA": "ca_long_yaal",
    "StreamLAAL": "long_laal",
    "StreamLAAL_CA": "ca_long_laal",
}
SHORTFORM_KEYS = {
    "YAAL": "yaal",
    "YAAL_CA": "ca_yaal",
    "SWF": "swf",
    "EFSW": "efsw",
    "DSPTV": "dsptv",
    "degenerate": "degenerate_policy",
}
LOG_FIELDS: dict[str, type] = {"prediction": str, "delays": list, "elapsed": list}
RESEGMENTED_FILE = "omnisteval.resegmented.jsonl"  # one re-segmented sentence per line
SOURCE_FILE = "omnisteval.source.txt"  # the scored talks' source sentences, for COMET


@dataclass(frozen=True)
class Chunk:
    text: str
    units_read: int  # source units read when the chunk was written
    elapsed: float  # computation seconds since the talk's first unit was sent


@dataclass(frozen=True)
class TalkOutput:
    talk_id: str
    chunks: tuple[Chunk, ...]


@dataclass(frozen=True)
class OmnistevalInputs:
    hypothesis: Path
    segmentation: Path
    reference: Path
    source: Path  # the source sentences, for COMET
    talks: tuple[Talk, ...]  # those scored


def read_log(path: str | Path, fields: dict[str, type] = LOG_FIELDS) -> list[dict]:
    """The records of a SimulEval `instances.log`; a bad line or field is named, the values
    of `delays` and `elapsed` included (before: a `null` among them was a TypeError, delays
    going backwards or strings were scored)."""
    records = []
    for number, line in enumerate(iter_lines(path), 1):
        if not line.strip():
            continue
        record = log_record(Path(path), number, line)
        check_record_fields(f"{path}: line {number}", record, fields)
        record["_line"] = number
        records.append(record)
    return records


def records_by_index(
    path: str | Path, records: Sequence[dict], count: int, what: str, hint: str = ""
) -> dict[int, dict]:
    """`records` by their `index`: each a `what` number 0..count-1, once (a bad or repeated
    index named with its line; `hint`: what else an index past them may tell)."""
    by_index: dict[int, dict] = {}
    for record in records:
        index = record.get("index")
        if type(index) is not int or not 0 <= index < count:
            raise ValueError(
                f"{path}: line {record['_line']}: field 'index' must be a {what} number "
                f"0..{count - 1}, got {index!r}{hint if type(index) is int else ''}"
            )
        if index in by_index:
            raise ValueError(
                f"{path}: line {record['_line']}: {what} {index} again "
                f"(line {by_index[index]['_line']})"
            )
        by_index[index] = record
    return by_index


def output_units(text: str, char_level: bool) -> list[str]:
    """The latency units of an output: words, or characters without spaces (zh/ja), as
    SimulEval and OmniSTEval count them."""
    return list(text.replace(" ", "")) if char_level else text.split()


def talk_outputs_from_log(
    path: str | Path,
    talks: Sequence[Talk],
    char_level: bool = False,
    references: Sequence[str] | None = None,
) -> list[TalkOutput]:
    """The per-talk outputs of a long-form SimulEval run (one log line per talk, its
    `index` the talk's; a run of some talks, `--end-index` say, gives those). `references`:
    the set's, one per talk, which a log's must be (`set_references`)."""
    by_talk = records_by_index(path, read_log(path), len(talks), "talk", MISREAD_HINT[False])
    if not by_talk:
        raise ValueError(f"{path}: no talk in the log (none finished)")
    outputs = []
    for number in sorted(by_talk):
        record, talk = by_talk[number], talks[number]
        # its source's units first: a log of sentences, or of another set, is named so
        # (before: its references called another target language's)
        outputs.append(log_talk_output(path, record, talk, char_level, talk.units))
        if references is not None:
            check_reference(path, record, references[number], talk.talk_id)
    return outputs


def talk_outputs_from_sentences(
    path: str | Path,
    talks: Sequence[Talk],
    char_level: bool = False,
    references: Sequence[str] | None = None,
) -> list[TalkOutput]:
    """A sentence-level run over a long-form set's gold sentences (`source_sentences.txt`;
    a log line's `index` is the sentence's line) as talks: each talk's sentences one after
    another, their delays shifted by the units of the sentences before them and their
    computation summed, as one stream translating the sentences in turn would have them.
    Talks with a sentence missing from the log are left out (a partial run); a sentence
    twice, or none of the set, is refused (before: the later line taken, or ignored).
    `references`: the set's, one per sentence, which a log's must be."""
    sentences = sum(talk.sentences for talk in talks)
    by_sentence = records_by_index(path, read_log(path), sentences, "sentence")
    outputs = []
    for talk in talks:  # the sources' units first, as for talks
        span = range(talk.first_sentence, talk.first_sentence + talk.sentences)
        if all(number in by_sentence for number in span):
            records = [by_sentence[number] for number in span]
            outputs.append(joined_talk_output(path, records, talk, char_level))
    if not outputs:  # before the references: a log of talks has other ones
        raise ValueError(
            f"{path}: no talk has all its sentences in the log (a log of whole talks is "
            "scored without --gold-sentences)"
        )
    if references is not None:
        for number, record in sorted(by_sentence.items()):
            check_reference(path, record, references[number], f"sentence {number}")
    return outputs


def joined_talk_output(
    path: str | Path, records: Sequence[dict], talk: Talk, char_level: bool
) -> TalkOutput:
    chunks: list[Chunk] = []
    units_before, seconds_before = 0, 0.0
    for record, end in zip(records, talk.sentence_ends):
        units = end - units_before
        sentence = log_talk_output(path, record, talk, char_level, units, gold=True).chunks
        chunks += [
            Chunk(chunk.text, units_before + chunk.units_read, seconds_before + chunk.elapsed)
            for chunk in sentence
        ]
        units_before = end
        seconds_before += sentence[-1].elapsed if sentence else 0.0
    return TalkOutput(talk.talk_id, tuple(chunks))


def set_references(testset: LongformSet, gold_sentences: bool) -> list[str]:
    """The references a log of `testset` holds: one per talk (SimulEval's target of a talk
    run), or one per sentence (a gold-sentence run's)."""
    name = "reference_sentences.txt" if gold_sentences else "reference.txt"
    return read_lines(testset.folder / name)


def check_reference(path: str | Path, record: dict, reference: str, what: str) -> None:
    """A log line's reference, where it holds one, is the set's for its index (before: a
    log of another target language with the same source, Multi30k's de-en scored against
    de-fr, was scored against the other references, exit 0)."""
    logged = record.get("reference")
    if isinstance(logged, str) and logged.strip() != reference.strip():
        raise ValueError(
            f"{path}: line {record['_line']}: field 'reference' is not the test set's "
            f"reference of {what}: a log of another test set (the same source in another "
            "target language?)"
        )


MISREAD_HINT = {  # by whether the log is read as gold sentences
    False: " (or of its gold sentences, not talks: give --gold-sentences)",
    True: " (or of its talks, not gold sentences: leave out --gold-sentences)",
}


def log_talk_output(
    path: str | Path,
    record: dict,
    talk: Talk,
    char_level: bool,
    source_units: int,
    gold: bool = False,
) -> TalkOutput:
    """One log record's chunks; its source must have the `source_units` of the talk (or
    gold sentence) its index names: the log of another test set is refused, and so is a
    delay past them (before: refused while scoring, naming neither the log nor its line)."""
    units = output_units(record["prediction"], char_level)
    for name in ("delays", "elapsed"):
        if len(record[name]) != len(units):
            raise ValueError(
                f"{path}: line {record['_line']}: field {name!r} has {len(record[name])} "
                f"values for {len(units)} output units"
            )
    if record.get("source_length") != source_units:
        raise ValueError(
            f"{path}: line {record['_line']}: field 'source_length' is "
            f"{record.get('source_length')!r}, but {talk.talk_id}'s source there has "
            f"{source_units} units: a log of another test set{MISREAD_HINT[gold]}"
        )
    if record["delays"] and record["delays"][-1] > source_units:  # the largest: they never fall
        raise ValueError(
            f"{path}: line {record['_line']}: field 'delays' reaches {record['delays'][-1]} "
            f"units read, past the {source_units} of {talk.talk_id}'s source there"
        )
    chunks = (
        Chunk(unit, delay, float(seconds))
        for unit, delay, seconds in zip(units, record["delays"], record["elapsed"])
    )
    return TalkOutput(talk.talk_id, tuple(chunks))


def emission_times(
    output: TalkOutput, times: Sequence[float], char_level: bool
) -> tuple[list[str], list[float], list[float]]:
    """(output units, computation-unaware ms, computation-aware ms) of one talk; a chunk's
    bad field is named alone (before: elapsed too, when units_read alone was wrong)."""
    units, cu, ca = [], [], []
    for number, chunk in enumerate(output.chunks, 1):
        if not 0 <= chunk.units_read <= len(times):
            raise ValueError(
                f"{output.talk_id}: chunk {number}: units_read {chunk.units_read} (the talk has "
                f"{len(times)})"
            )
        if not chunk.elapsed >= 0:  # NaN too
            raise ValueError(
                f"{output.talk_id}: chunk {number}: elapsed {chunk.elapsed} s (must be >= 0)"
            )
        heard = times[chunk.units_read - 1] if chunk.units_read else 0.0
        words = output_units(chunk.text, char_level)
        units += words
        cu += [1000 * heard] * len(words)
        ca += [1000 * (heard + on_tick(chunk.elapsed))] * len(words)
    return units, cu, ca


def hypothesis_records(
    outputs: Sequence[TalkOutput], times: Sequence[Sequence[float]], char_level: bool
) -> list[dict]:
    """OmniSTEval's JSONL hypothesis (SimulEval's fields; times in ms), one per talk."""
    records = []
    for output, talk_times in zip(outputs, times):
        units, cu, ca = emission_times(output, talk_times, char_level)
        records.append(
            {
                "source": output.talk_id,
                "prediction": ("" if char_level else " ").join(units),
                "delays": cu,
                "elapsed": ca,
                "source_length": 1000 * talk_times[-1],
            }
        )
    return records


def speech_segmentation(talks: Sequence[Talk], times: Sequence[Sequence[float]]) -> list[dict]:
    """OmniSTEval's segmentation (seconds): a reference sentence spans its source sentence,
    from the moment the previous one was heard to the moment its last unit was."""
    segments = []
    for talk, talk_times in zip(talks, times):
        check_sentence_durations(talk.talk_id, talk, talk_times)
        start = 0.0
        for end in talk.sentence_ends:
            duration = talk_times[end - 1] - start
            segments.append({"wav": talk.talk_id, "offset": start, "duration": duration})
            start = talk_times[end - 1]
    return segments


def write_omnisteval_inputs(
    folder: Path,
    testset: LongformSet,
    outputs: Sequence[TalkOutput],
    times: Sequence[Sequence[float]],
) -> OmnistevalInputs:
    numbers = scored_talks(testset, outputs)
    talks = [testset.talks[number] for number in numbers]
    times = [times[number] for number in numbers]
    inputs = OmnistevalInputs(
        hypothesis=folder / "omnisteval.hypothesis.jsonl",
        segmentation=folder / "omnisteval.segmentation.json",
        reference=folder / "omnisteval.reference.txt",
        source=folder / SOURCE_FILE,
        talks=tuple(talks),
    )
    references = talk_lines(testset.reference_sentences, talks)
    # COMET's sources as text: a Chinese or Japanese sentence's units joined as decoded
    sources = [
        join_source_units(line.split(), testset.src_lang)
        for line in talk_lines(testset.source_sentences, talks)
    ]
    for path, lines in ((inputs.reference, references), (inputs.source, sources)):
        write_atomically(path, "".join(line + "\n" for line in lines))
    write_jsonl(inputs.hypothesis, hypothesis_records(outputs, times, testset.char_level))
    segments = speech_segmentation(talks, times)
    write_atomically(inputs.segmentation, json.dumps(segments, indent=0) + "\n")
    return inputs


def scored_talks(testset: LongformSet, outputs: Sequence[TalkOutput]) -> list[int]:
    """The test set's numbers of the talks `outputs` are for: each once, in its order."""
    numbers = {talk.talk_id: number for number, talk in enumerate(testset.talks)}
    for output in outputs:
        if output.talk_id not in numbers:
            raise ValueError(f"{testset.folder}: no talk {output.talk_id!r} in the test set")
    found = [numbers[output.talk_id] for output in outputs]
    if not found or found != sorted(set(found)):
        raise ValueError(
            f"{testset.folder}: outputs must be for distinct talks in the test set's order, "
            f"got {[output.talk_id for output in outputs][:5]}"
        )
    return found


def talk_lines(path: Path, talks: Sequence[Talk]) -> list[str]:
    lines = read_lines(path)
    return [line for talk in talks for line in lines[talk.first_sentence :][: talk.sentences]]


def moses_language(testset: LongformSet) -> str | None:
    return None if testset.tgt_code in ("zh", "ja") else testset.tgt_code


def omnisteval_command(inputs: OmnistevalInputs, testset: LongformSet, fix_ca: bool) -> str:
    """The CLI call that scores the same files (to check or rerun by hand; COMET apart)."""
    lang = moses_language(testset)
    parts = [
        "omnisteval longform",
        f"--speech_segmentation {inputs.segmentation}",
        f"--ref_sentences_file {inputs.reference}",
        f"--hypothesis_file {inputs.hypothesis}",
        f"--lang {lang}" if lang else "",
        "--char_level" if testset.char_level else "--word_level",
        f"--bleu_tokenizer {testset.sacrebleu_tokenizer}",
        "--fix_simuleval_emission_ca" if fix_ca else "",
    ]
    return " ".join(part for part in parts if part)


def run_omnisteval(
    inputs: OmnistevalInputs, testset: LongformSet, fix_ca: bool
) -> tuple[dict[str, float], list[dict], str]:
    """OmniSTEval's scores, re-segmented records and report for the written inputs."""
    ref_words, hyp_words, segmentation, references = load_resegmentation_inputs(
        str(inputs.segmentation),
        None,
        str(inputs.reference),
        str(inputs.hypothesis),
        char_level=testset.char_level,
        fix_emission_ca_flag=fix_ca,
    )
    instances, records = resegment(
        ref_words,
        hyp_words,
        segmentation,
        references,
        char_level=testset.char_level,
        lang=moses_language(testset),
    )
    with hint_in_our_flags():
        scores, empty, normalization = evaluate_instances(
            instances,
            is_longform=True,
            bleu_tokenizer=testset.sacrebleu_tokenizer,
            fix_emission_ca_flag=fix_ca,
        )
    report = format_report(
        "Longform evaluation (with resegmentation)", {}, scores, empty, normalization
    )
    return scores, records, report


class _HintInOurFlags(logging.Filter):
    """OmniSTEval's advice to use its own CLI flag, said with this command's."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "--fix_simuleval_emission_ca" in text:
            record.msg = text.replace(
                "Consider using --fix_simuleval_emission_ca.",
                "Leave out --no-fix-ca (OmniSTEval's --fix_simuleval_emission_ca).",
            )
            record.args = None
        return True


@contextmanager
def hint_in_our_flags() -> Iterator[None]:
    """While OmniSTEval scores: its hint under `--no-fix-ca` names the flag to leave out
    (before: its own `--fix_simuleval_emission_ca`, which this command does not take)."""
    hint = _HintInOurFlags()
    logger = logging.getLogger("omnisteval.scoring")
    logger.addFilter(hint)
    try:
        yield
    finally:
        logger.removeFilter(hint)


def add_resegmented_comet(result: dict, output_dir: str | Path, comet: CometSettings) -> dict:
    """`result` (`score_longform`'s, of `output_dir`) with COMET (times 100) of the
    re-segmented sentences kept there, each with its reference's source: no re-segmentation
    again, so that a run scored without COMET in one process gets it in another."""
    folder = Path(output_dir)
    sentences = [json.loads(line) for line in iter_lines(folder / RESEGMENTED_FILE)]
    sources = read_lines(folder / SOURCE_FILE)
    translations = [str(sentence["prediction"]) for sentence in sentences]
    references = [str(sentence["reference"]) for sentence in sentences]
    system = comet_scores(comet, sources, translations, references).system
    scores = {**result["scores"], "COMET": 100 * system}
    return {**result, "scores": scores, "comet": comet_record(comet)}


def comet_record(comet: CometSettings | None) -> dict | None:
    """How `longform_scores.json` names the COMET it holds (None: none)."""
    if comet is None:
        return None
    return {"checkpoint": comet.checkpoint, "scale": "COMET x 100", "inputs": COMET_INPUTS}


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def score_longform(
    outputs: Sequence[TalkOutput],
    testset_dir: str | Path,
    output_dir: str | Path,
    *,
    word_times: str | Path | None = None,
    unit_seconds: float = DEFAULT_UNIT_SECONDS,
    fix_ca: bool = True,
    comet: CometSettings | None = None,
) -> dict:
    """Score a long-form run with OmniSTEval; writes its inputs, the re-segmented output,
    its report and `longform_scores.json` into `output_dir`. Latencies in milliseconds."""
    testset = read_longform(testset_dir)
    times = [[on_tick(t) for t in talk] for talk in unit_times(testset, word_times, unit_seconds)]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    inputs = write_omnisteval_inputs(output_dir, testset, outputs, times)
    raw, records, report = run_omnisteval(inputs, testset, fix_ca)
    scores = {
        column: finite_or_none(raw[key]) for column, key in LONGFORM_KEYS.items() if key in raw
    }
    write_jsonl(output_dir / RESEGMENTED_FILE, records)
    write_atomically(output_dir / "omnisteval.report.txt", report + "\n")
    result = {
        "testset": testset.name,
        "talks": len(inputs.talks),
        "testset_talks": len(testset.talks),
        "reference_sentences": sum(talk.sentences for talk in inputs.talks),
        "scores": scores,
        "latency_unit": "ms",
        "clock": {
            "word_times": str(word_times) if word_times else None,
            "unit_seconds": None if word_times else unit_seconds,
        },
        "omnisteval": {
            "version": omnisteval.__version__,
            "fix_simuleval_emission_ca": fix_ca,
            "scores": {key: finite_or_none(value) for key, value in raw.items()},
            "command": omnisteval_command(inputs, testset, fix_ca),
        },
        "comet": None,
    }
    if comet is not None:
        result = add_resegmented_comet(result, output_dir, comet)
    write_atomically(output_dir / "longform_scores.json", json.dumps(result, indent=2) + "\n")
    return result


def shortform_instance(record: dict, unit_seconds: float, latency_unit: str) -> Instance:
    # CA delay = units read + elapsed / unit_seconds: ca_latency's convention (AL_CA...)
    delays = [float(delay) for delay in record["delays"]]
    ca = [delay + seconds / unit_seconds for delay, seconds in zip(delays, record["elapsed"])]
    info = {
        "index": record.get("index"),
        "prediction": record["prediction"],
        "reference": record["reference"].strip(),
        "source_length": record["source_length"],
        "emission_cu": delays,
        "emission_ca": ca,
    }
    return Instance.from_dict(info, latency_unit=latency_unit)


def shortform_latency(
    instances_log: str | Path,
    unit_seconds: float = DEFAULT_UNIT_SECONDS,
    latency_unit: str = "word",
) -> dict[str, float | None]:
    """OmniSTEval's YAAL (CU and CA, in source units) and degenerate-policy diagnostics
    (SWF, EFSW, DSPTV in %; `degenerate` 1 or 0) of a sentence-level SimulEval log."""
    if unit_seconds <= 0:
        raise ValueError(f"unit seconds must be positive, got {unit_seconds}")
    fields = {**LOG_FIELDS, "reference": str, "source_length": int}
    records = read_log(instances_log, fields)
    if not records:
        raise ValueError(f"{instances_log}: no instances")
    for record in records:
        if len(record["delays"]) != len(record["elapsed"]):
            raise ValueError(
                f"{instances_log}: line {record['_line']}: {len(record['elapsed'])} 'elapsed' "
                f"for {len(record['delays'])} 'delays'"
            )
    instances = [shortform_instance(r, unit_seconds, latency_unit) for r in records]
    scores, _, _ = evaluate_instances(instances, compute_quality=False, is_longform=False)
    return {column: finite_or_none(scores.get(key)) for column, key in SHORTFORM_KEYS.items()}


def check_shortform_log(log: Path, latency_unit: str) -> None:
    """A run's `instances.log` scored as its run recorded it (`run_settings.json` beside
    it): in its `--eval-latency-unit`, and sentence by sentence (before: a word-level log
    scored in characters was called degenerate, and a long-form run's talks were scored
    as sentences, both exit 0)."""
    from east_agent.simuleval_glue.run_folder import (
        SETTINGS_RECORD,
        recorded_settings,
        refuse_other_units,
    )

    record = log.parent / SETTINGS_RECORD
    if log.name != "instances.log" or not record.is_file():
        return  # a log on its own: taken as given
    saved = recorded_settings(read_json_object(record))
    if saved.get("eval_latency_unit") not in (None, "word", "char"):  # spm: no flag here
        raise ValueError(
            f"{log} was written with --eval-latency-unit {saved['eval_latency_unit']}: "
            "shortform scores logs in words or characters"
        )
    refuse_other_units(log.parent, saved, {"eval_latency_unit": latency_unit})
    if saved.get("long_form") is True:
        raise ValueError(
            f"{log}: a long-form run's log (one line per talk): score it with `longform "
            "--testset DIR --log ...`, re-segmented to the reference sentences"
        )


def say_left_out(log: str, talks: Sequence[Talk], outputs: Sequence[TalkOutput]) -> None:
    """Say on stderr how many talks a log of gold sentences holds whole, when not all, and
    the sentences of talks it holds in part (a run cut by --end-index mid-talk), which
    scoring leaves out (before: said only of those, a log of whole talks unsaid)."""
    scored = {output.talk_id for output in outputs}
    kept = sum(talk.sentences for talk in talks if talk.talk_id in scored)
    logged = len(read_log(log))
    said = f"{log}: talks scored: {len(scored)} of {len(talks)}"
    if logged > kept:
        said += f" ({kept} sentences); sentences left out, of talks it does not hold whole: "
        print(said + str(logged - kept), file=sys.stderr)
    elif len(scored) < len(talks):
        print(said, file=sys.stderr)


def refuse_comet_flags_alone(argv: list[str], checkpoint: str | None) -> None:
    """COMET's other flags without `--comet-checkpoint`, which asks for COMET, refused as
    `east-simuleval` refuses them without `--quality-metrics COMET` (before: taken, and
    no COMET scored)."""

    if checkpoint is not None and not checkpoint.strip():  # before: no COMET, said nothing
        raise ValueError("--comet-checkpoint is empty: the path of a local COMET model.ckpt")
    given = [
        flag for flag in given_flags(argv, (), prefix="--comet-") if flag != "--comet-checkpoint"
    ]
    if checkpoint is None and given:
        raise ValueError(
            f"{' '.join(given)} without --comet-checkpoint: COMET scores only with a "
            "checkpoint (a local COMET model.ckpt); give it, or leave COMET's flags out"
        )


@command_line("east_agent.evaluation.omnisteval_scoring")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m east_agent.evaluation.omnisteval_scoring",
        description="score a run with OmniSTEval",
        allow_abbrev=False,  # as every command here (`--comet-b` is no flag)
    )
    commands = parser.add_subparsers(dest="command", required=True)
    long = commands.add_parser(
        "longform",
        allow_abbrev=False,
        help="a long-form run (one log line per talk; with --gold-sentences, one per gold "
        "sentence)",
    )
    long.add_argument("--testset", required=True, help="folder east-prepare NAME.talksN wrote")
    long.add_argument("--log", required=True, help="the run's instances.log")
    long.add_argument(
        "--output", required=True, type=folder_path, help="folder for the scores and inputs"
    )
    long.add_argument("--word-times", default=None, help="one line per talk: unit times (s)")
    long.add_argument("--no-fix-ca", action="store_true", help="keep cumulative elapsed")
    long.add_argument(
        "--gold-sentences",
        action="store_true",
        help="the log is of the set's gold sentences (source_sentences.txt), one line each: "
        "joined into talks first, as a grid's gold-sentence run is; a talk the log does not "
        "hold whole is left out, and said so",
    )
    add_comet_flags(long)  # COMET too, with --comet-checkpoint
    short = commands.add_parser(
        "shortform", help="YAAL of a sentence-level run", allow_abbrev=False
    )
    short.add_argument("--log", required=True, help="the run's instances.log")
    short.add_argument("--eval-latency-unit", default="word", choices=("word", "char"))
    for command in (long, short):
        command.add_argument(
            "--ca-unit-seconds", type=positive_seconds, default=DEFAULT_UNIT_SECONDS
        )
    argv = sys.argv[1:] if argv is None else argv
    args = parse_once_each(parser, argv)
    if args.command == "longform":
        refuse_comet_flags_alone(argv, args.comet_checkpoint)
        if args.word_times is not None and given_flags(argv, ("--ca-unit-seconds",)):
            raise ValueError(  # before: taken, unread, and recorded as null
                "--ca-unit-seconds: not with --word-times, whose times the source units "
                "are heard at (the uniform clock is for a set without them)"
            )
    check_input_file(args.log, "--log")
    if args.command == "shortform":
        check_shortform_log(Path(args.log), args.eval_latency_unit)
        scores = shortform_latency(args.log, args.ca_unit_seconds, args.eval_latency_unit)
        print(json.dumps(scores, indent=2))
        return
    check_folder_path(Path(args.output), "--output")  # a file: said so (a bare errno before)
    testset = read_longform(args.testset)
    if args.word_times is not None:  # named with its flag (before: a bare errno message)
        check_input_file(args.word_times, "--word-times")
    unit_times(testset, args.word_times, args.ca_unit_seconds)  # refuse a bad file first
    comet = comet_settings(args)
    if comet is not None:
        check_named_by_flag(comet)
    # a gold-sentence run joined as a grid joins it (before: only a grid could score one)
    read = talk_outputs_from_sentences if args.gold_sentences else talk_outputs_from_log
    references = set_references(testset, args.gold_sentences)
    outputs = read(args.log, testset.talks, testset.char_level, references)
    if args.gold_sentences:
        say_left_out(args.log, testset.talks, outputs)
    elif len(outputs) < len(testset.talks):  # before: said by longform_scores.json alone
        print(f"{args.log}: talks scored: {len(outputs)} of {len(testset.talks)}", file=sys.stderr)
    result = score_longform(
        outputs,
        args.testset,
        args.output,
        word_times=args.word_times,
        unit_seconds=args.ca_unit_seconds,
        fix_ca=not args.no_fix_ca,
        comet=comet,
    )
    print(json.dumps(result["scores"], indent=2))


if __name__ == "__main__":
    main()
