"""Long-form test sets: talks of consecutive sentences, read as one stream each.

    east-prepare wmt22.de-en.talks50 --output outputs/testsets/wmt22.de-en.talks50

`<testset>.talksN` cuts a sentence-level test set (`testsets.available_testsets`) into
talks of N consecutive sentences in the set's order (the last talk takes the rest). The
WMT sets are ordered by document but carry no document ids, so a talk may straddle two
documents; Multi30k captions are unrelated sentences. The folder holds:

- `source.txt`: one talk per line, its source units space-separated (one SimulEval
  instance per talk); `reference.txt`: the talk's references joined, SimulEval's target;
- `reference_sentences.txt` / `source_sentences.txt`: one sentence per line, in talk order
  (OmniSTEval's `--ref_sentences_file`, and the COMET sources);
- `segmentation.txt`: `docid=D,segid=S` per reference sentence (OmniSTEval's
  `--text_segmentation`: quality only; `omnisteval_scoring` writes the timed one);
- `talks.json`: per talk its id, unit count, first sentence and `sentence_ends`, the unit
  offsets where each source sentence ends;
- `testset.json`: `prepare_testset`'s metadata (`sentences` counts SimulEval instances,
  that is talks) plus a `longform` section.

Text has no clock: source unit j of a talk (1-based) is heard at `j * unit_seconds`, or
at the time a word-timestamp file gives (one line per talk, the seconds at which each unit
has been heard, as an ASR would give).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from east_agent.common.atomic import write_atomically
from east_agent.common.records import placed_records, read_json_object
from east_agent.common.text_lines import read_lines
from east_agent.decoding.prompt import unit_separator

if TYPE_CHECKING:
    from east_agent.evaluation.testsets import PreparedTestset

TALK_FILES = ("source_sentences.txt", "reference_sentences.txt", "segmentation.txt", "talks.json")
TALKS_SUFFIX = re.compile(r"\.talks(?P<size>[^.]*)$")
DECIMAL = re.compile(r"[+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")  # seconds, ASCII digits
PREPARE_AGAIN = (  # a grid's set: `east-prepare NAME --output <grid output>/testset`
    "(edited by hand, or prepared by an older version? east-prepare the set again into its "
    "folder, with --tokenizer for a Chinese or Japanese source)"
)
DEFAULT_UNIT_SECONDS = 0.4  # as --ca-unit-seconds: speech at 150 words per minute


@dataclass(frozen=True)
class Talk:
    talk_id: str
    first_sentence: int  # 0-based index of its first sentence in reference_sentences.txt
    sentence_ends: tuple[int, ...]  # unit offset where each source sentence ends

    @property
    def units(self) -> int:
        return self.sentence_ends[-1]

    @property
    def sentences(self) -> int:
        return len(self.sentence_ends)


@dataclass(frozen=True)
class LongformSet:
    """A prepared long-form folder, as `read_longform` finds it."""

    folder: Path
    name: str
    base: str
    talk_size: int
    src_lang: str
    tgt_lang: str
    tgt_code: str
    eval_latency_unit: str
    sacrebleu_tokenizer: str
    talks: tuple[Talk, ...]

    @property
    def reference_sentences(self) -> Path:
        return self.folder / "reference_sentences.txt"

    @property
    def source_sentences(self) -> Path:
        return self.folder / "source_sentences.txt"

    @property
    def char_level(self) -> bool:
        return self.eval_latency_unit == "char"


def parse_name(name: str) -> tuple[str, int | None]:
    """(sentence-level test set, sentences per talk) of `wmt22.de-en.talks50`; a
    sentence-level name is returned with None."""
    match = TALKS_SUFFIX.search(name)
    if match is None:
        return name, None
    size = match["size"]
    # N as written once: `talks050` would be another name of talks50's set (before: taken,
    # and a talks50 grid on its folder refused as another test set)
    if not (size.isascii() and size.isdigit()) or int(size) < 1 or size != str(int(size)):
        raise ValueError(
            f"{name!r}: a long-form name ends in .talksN, N >= 1 sentences a talk (no leading 0)"
        )
    return name[: match.start()], int(match["size"])


def is_longform(name: str) -> bool:
    return TALKS_SUFFIX.search(name) is not None


def talk_id(number: int) -> str:
    return f"talk{number:04d}"  # no dot: OmniSTEval strips what follows one as an extension


def cut_talks(sentence_units: Sequence[Sequence[str]], talk_size: int) -> list[Talk]:
    """Talks of `talk_size` consecutive sentences (the last one takes the rest)."""
    talks = []
    for number, first in enumerate(range(0, len(sentence_units), talk_size)):
        lengths = [len(units) for units in sentence_units[first : first + talk_size]]
        ends = tuple(sum(lengths[: k + 1]) for k in range(len(lengths)))
        talks.append(Talk(talk_id(number), first, ends))
    return talks


def write_talks(
    output: Path,
    name: str,
    talk_size: int,
    pairs: list[tuple[str, str]],
    units: list[list[str]],
    references: list[str],
    tgt_lang: str,
) -> tuple[list[str], list[str], dict]:
    """Write the talk files of a long-form set (`prepare_testset` writes the rest):
    returns its SimulEval source and target lines, and the `longform` metadata."""
    talks = cut_talks(units, talk_size)
    sources, talk_references = write_talk_files(output, talks, units, references, tgt_lang)
    # the gold sentences' units as the talks have them (Chinese, Japanese: the checkpoint's
    # token groups; before, the raw text, which SimulEval read as a unit a line)
    write_lines(output / "source_sentences.txt", [" ".join(sentence) for sentence in units])
    base = parse_name(name)[0]
    return sources, talk_references, {"longform": longform_meta(base, talk_size, talks, name)}


def write_talk_files(
    output: Path,
    talks: list[Talk],
    units: list[list[str]],
    references: list[str],
    tgt_lang: str,
) -> tuple[list[str], list[str]]:
    sentences = [" ".join(sentence_units) for sentence_units in units]
    sources, talk_references = talk_texts(talks, sentences, references, tgt_lang)
    segmentation = segmentation_lines(talks)
    write_lines(output / "reference_sentences.txt", references)
    write_lines(output / "segmentation.txt", segmentation)
    records = [
        {
            "talk": talk.talk_id,
            "units": talk.units,
            "first_sentence": talk.first_sentence,
            "sentence_ends": list(talk.sentence_ends),
        }
        for talk in talks
    ]
    lines = ",\n".join(json.dumps(record) for record in records)
    write_atomically(output / "talks.json", f"[\n{lines}\n]\n")
    return sources, talk_references


def talk_texts(
    talks: Sequence[Talk], sentences: list[str], references: list[str], tgt_lang: str
) -> tuple[list[str], list[str]]:
    """Each talk's source (its sentences' units, spaced) and reference (its sentences'
    references, joined as `tgt_lang` joins them)."""
    separator = unit_separator(tgt_lang)
    spans = [slice(talk.first_sentence, talk.first_sentence + talk.sentences) for talk in talks]
    return (
        [" ".join(sentences[span]) for span in spans],
        [separator.join(references[span]) for span in spans],
    )


def segmentation_lines(talks: Sequence[Talk]) -> list[str]:
    """The segmentation OmniSTEval reads: a line a reference sentence."""
    return [
        f"docid={doc},segid={seg}"
        for doc, talk in enumerate(talks)
        for seg in range(talk.sentences)
    ]


def longform_meta(base: str, talk_size: int, talks: list[Talk], name: str) -> dict:
    return {
        "base": base,
        "talk_size": talk_size,
        "talks": len(talks),
        "reference_sentences": sum(talk.sentences for talk in talks),
        "tgt_code": base.split(".")[1].split("-")[1],
        "made_of": (
            f"runs of {talk_size} consecutive sentences of {base} in its order (the last "
            "talk takes the rest); not documents: the set has no document ids"
        ),
        "files": {
            "source.txt": "one talk per line (SimulEval source, one instance per talk)",
            "reference.txt": "one talk's references joined per line (SimulEval target)",
            "reference_sentences.txt": "one reference sentence per line, talk order",
            "source_sentences.txt": "one source sentence per line, talk order, in units",
            "segmentation.txt": "docid=D,segid=S per reference sentence (OmniSTEval)",
            "talks.json": "per talk: units, first_sentence, sentence_ends (unit offsets)",
        },
        "prepare": f"east-prepare {name} --output DIR",
    }


def write_lines(path: Path, lines: list[str]) -> None:
    write_atomically(path, "\n".join(lines) + "\n")


def read_longform(folder: str | Path) -> LongformSet:
    """The long-form test set `prepare_testset` wrote into `folder`, its files checked
    against each other (`check_talk_files`): a file edited by hand is named with its line
    before anything reads it (before: a reference line missing shifted every later one,
    scores wrong, exit 0)."""
    folder = Path(folder)
    if folder.is_file():  # before: "<folder>/testset.json/testset.json: no such file"
        raise ValueError(
            f"{folder}: a file, not a test set's folder (give the folder east-prepare wrote)"
        )
    meta_path = folder / "testset.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: no such file; run east-prepare NAME.talksN")
    meta = read_json_object(meta_path)
    if "longform" not in meta:
        raise ValueError(f"{meta_path}: {meta.get('name')!r} is not a long-form test set")
    text = partial(_meta_field, meta_path, meta)
    long = meta["longform"]
    if not isinstance(long, dict):
        raise ValueError(f"{meta_path}: 'longform' is no mapping: {long!r} {PREPARE_AGAIN}")
    in_long = partial(_meta_field, meta_path, long, section="longform.")
    unit = text("eval_latency_unit")
    if unit not in LATENCY_UNITS:
        raise ValueError(f"{meta_path}: 'eval_latency_unit' {unit!r}: word or char {PREPARE_AGAIN}")
    talk_size = long.get("talk_size")
    if isinstance(talk_size, bool) or not isinstance(talk_size, int) or talk_size < 1:
        raise ValueError(
            f"{meta_path}: 'longform.talk_size' is no count of sentences: {talk_size!r} "
            f"{PREPARE_AGAIN}"
        )
    testset = LongformSet(
        folder=folder,
        name=text("name"),
        base=in_long("base"),
        talk_size=talk_size,
        src_lang=text("src_lang"),
        tgt_lang=text("tgt_lang"),
        tgt_code=in_long("tgt_code"),
        eval_latency_unit=unit,
        sacrebleu_tokenizer=text("sacrebleu_tokenizer"),
        talks=read_talks(folder / "talks.json"),
    )
    check_talk_files(testset)
    return testset


LATENCY_UNITS = ("word", "char")  # what the talks' latency is counted in (OmniSTEval's)


def _meta_field(meta_path: Path, record: dict, key: str, section: str = "") -> str:
    """A text field of `testset.json` (`section`: of its mapping of that name), or a
    ValueError naming it (before: a KeyError or TypeError traceback)."""
    value = record.get(key)
    if not isinstance(value, str) or not value:
        said = "missing" if key not in record else f"is no text: {value!r}"
        raise ValueError(f"{meta_path}: {section + key!r} {said} {PREPARE_AGAIN}")
    return value


def read_talks(path: Path) -> tuple[Talk, ...]:
    """`talks.json`'s talks, each record checked: its fields, sentence ends that grow,
    and sentences that follow the previous talk's (the talks cover the sentences in
    order, none twice, none left out)."""
    records = placed_records(path)
    if not records:
        raise ValueError(f"{path}: no talk {PREPARE_AGAIN}")
    talks, next_sentence, ids = [], 0, set()
    for place, record in records:
        talk = _talk_of(f"{path}: {place}", record, next_sentence)
        if talk.talk_id in ids:
            raise ValueError(f"{path}: {place}: {talk.talk_id!r} named twice {PREPARE_AGAIN}")
        ids.add(talk.talk_id)
        talks.append(talk)
        next_sentence += talk.sentences
    return tuple(talks)


def _talk_of(where: str, record: dict, first_sentence: int) -> Talk:
    missing = [key for key in ("talk", "first_sentence", "sentence_ends") if key not in record]
    if missing:
        raise ValueError(f"{where}: missing field {missing[0]!r} {PREPARE_AGAIN}")
    name, ends = record["talk"], record["sentence_ends"]
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(
            f"{where}: field 'talk' must be a name without a dot, got {name!r} {PREPARE_AGAIN}"
        )
    if record["first_sentence"] != first_sentence or type(record["first_sentence"]) is not int:
        raise ValueError(
            f"{where}: field 'first_sentence' is {record['first_sentence']!r}, but the talks "
            f"before it end at sentence {first_sentence} {PREPARE_AGAIN}"
        )
    whole = isinstance(ends, list) and all(type(end) is int for end in ends)
    if not whole or not ends or any(later <= end for end, later in zip([0, *ends], ends)):
        raise ValueError(
            f"{where}: field 'sentence_ends' must be a non-empty list of growing unit "
            f"counts, got {ends!r} {PREPARE_AGAIN}"
        )
    if record.get("units", ends[-1]) != ends[-1]:
        raise ValueError(
            f"{where}: field 'units' is {record['units']!r}, but its last sentence ends "
            f"at unit {ends[-1]} {PREPARE_AGAIN}"
        )
    return Talk(name, first_sentence, tuple(ends))


def check_talk_files(testset: LongformSet) -> None:
    """The talk files agree with `talks.json`: a line a sentence in the sentence files, a
    line a talk with the talk's units in `source.txt`, each talk's references joined in
    `reference.txt`, the segmentation OmniSTEval reads, no empty reference."""
    folder, talks = testset.folder, testset.talks
    lengths = [end - start for talk in talks for start, end in _sentence_spans(talk)]
    references = _lines_of(folder / "reference_sentences.txt", len(lengths), "sentences")
    for number, reference in enumerate(references, 1):
        if not reference.strip():
            raise ValueError(
                f"{folder / 'reference_sentences.txt'}: line {number}: empty {PREPARE_AGAIN}"
            )
    sources = _lines_of(folder / "source_sentences.txt", len(lengths), "sentences")
    _check_units(folder / "source_sentences.txt", sources, lengths)
    talk_sources = _lines_of(folder / "source.txt", len(talks), "talks")
    _check_units(folder / "source.txt", talk_sources, [talk.units for talk in talks])
    # the gold-sentence systems read source_sentences.txt (before: a word edited there was
    # translated and scored as the test set's, its unit count the same)
    sentences_joined, joined = talk_texts(talks, sources, references, testset.tgt_lang)
    _check_same_lines(
        folder / "source.txt", sentences_joined, "talks",
        "its talk's lines of source_sentences.txt joined",
    )  # fmt: skip
    _check_same_lines(folder / "reference.txt", joined, "talks", "its talk's references joined")
    _check_same_lines(
        folder / "segmentation.txt", segmentation_lines(talks), "sentences",
        "docid=TALK,segid=SENTENCE",
    )  # fmt: skip


def _sentence_spans(talk: Talk) -> list[tuple[int, int]]:
    """(first unit, end unit) of each of the talk's sentences."""
    return list(zip((0, *talk.sentence_ends), talk.sentence_ends))


def _lines_of(path: Path, expected: int, what: str) -> list[str]:
    lines = read_lines(path)
    if len(lines) != expected:
        raise ValueError(
            f"{path}: {len(lines)} lines, but talks.json has {expected} {what} {PREPARE_AGAIN}"
        )
    return lines


def _check_units(path: Path, lines: list[str], units: list[int]) -> None:
    for number, (line, wanted) in enumerate(zip(lines, units), 1):
        if len(line.split()) != wanted:
            raise ValueError(
                f"{path}: line {number}: {len(line.split())} source units, but talks.json "
                f"says {wanted} {PREPARE_AGAIN}"
            )


def _check_same_lines(path: Path, expected: list[str], what: str, should_be: str) -> None:
    for number, (line, wanted) in enumerate(zip(_lines_of(path, len(expected), what), expected), 1):
        if line != wanted:
            raise ValueError(
                f"{path}: line {number}: not what talks.json makes it ({should_be}) {PREPARE_AGAIN}"
            )


def gold_sentences_of(prepared: PreparedTestset, testset: LongformSet) -> PreparedTestset:
    """The prepared long-form set as its gold sentences, one SimulEval instance each
    (`source_sentences.txt`, `reference_sentences.txt`): the sentence-level runs a
    long-form grid compares with."""
    from dataclasses import replace

    return replace(
        prepared,
        source=testset.source_sentences,
        reference=testset.reference_sentences,
        sentences=sum(talk.sentences for talk in testset.talks),
    )


def sentence_span(talks: Sequence[Talk], talk_span: tuple[int, int]) -> tuple[int, int]:
    """The gold sentences (lines of `source_sentences.txt`) of talks `talk_span[0]` up to
    but excluding `talk_span[1]`."""
    first, end = talk_span
    if not 0 <= first <= end <= len(talks):
        raise ValueError(f"talks {first}..{end} are not within the set's {len(talks)}")
    if first == end:  # an empty shard
        last = talks[-1]
        position = (
            talks[first].first_sentence
            if first < len(talks)
            else last.first_sentence + last.sentences
        )
        return position, position
    last = talks[end - 1]
    return talks[first].first_sentence, last.first_sentence + last.sentences


# The scorer's clock: times are rounded to 1/1024 s (OmniSTEval turns the segmentation's
# seconds into ms, x * 1000, exact only for such binary fractions; a word written as a
# sentence's last unit arrives must land exactly on the sentence's end, not an ulp either
# side of it). Checks of the times read them on this clock too.
TICK = 1 / 1024


def on_tick(seconds: float) -> float:
    return round(seconds / TICK) * TICK


def uniform_unit_times(units: int, unit_seconds: float = DEFAULT_UNIT_SECONDS) -> list[float]:
    """Seconds at which each of `units` source units has been heard: j * unit_seconds."""
    if not unit_seconds >= TICK or not math.isfinite(unit_seconds):
        raise ValueError(
            f"--ca-unit-seconds {unit_seconds:g}: long-form scoring needs at least 1/1024 s "
            "a unit (its clock's tick: shorter units would end sentences at the same time)"
        )
    return [(j + 1) * unit_seconds for j in range(units)]


def read_word_times(path: str | Path, talks: Sequence[Talk]) -> list[list[float]]:
    """A word-timestamp file: one line per talk, the seconds at which each source unit has
    been heard (non-decreasing, space-separated). Any count that differs from the talk's
    units is refused naming file, line and both counts: check it before loading a model."""
    lines = read_lines(path)
    empty = [number for number, line in enumerate(lines, 1) if not line.strip()]
    if empty:
        raise ValueError(f"{path}: line {empty[0]}: empty (one line of word times per talk)")
    if len(lines) != len(talks):
        raise ValueError(
            f"{path}: {len(lines)} lines of word times for {len(talks)} talks (one line per talk)"
        )
    if lines and lines[0].startswith("\ufeff"):
        raise ValueError(
            f"{path}: line 1: starts with a byte-order mark (U+FEFF); save the file without it"
        )
    numbered = enumerate(zip(lines, talks), 1)
    return [parse_times_line(path, number, line, talk) for number, (line, talk) in numbered]


def parse_times_line(path: str | Path, number: int, line: str, talk: Talk) -> list[float]:
    fields = line.split()
    if len(fields) != talk.units:
        raise ValueError(
            f"{path}: line {number} ({talk.talk_id}): {len(fields)} word times, but the talk "
            f"has {talk.units} source units"
        )
    times, previous = [], 0.0
    for position, field in enumerate(fields, 1):
        # a decimal number: not Python's `1_0` (10), nor `nan`, `inf` or hex
        seconds = float(field) if DECIMAL.fullmatch(field) else math.nan
        if not math.isfinite(seconds) or seconds < previous:
            raise ValueError(
                f"{path}: line {number}: word {position}: {field!r} is not a time in seconds "
                f"at or after the previous one ({previous:g})"
            )
        times.append(seconds)
        previous = seconds
    check_sentence_durations(f"{path}: line {number} ({talk.talk_id})", talk, times)
    return times


def check_sentence_durations(where: str, talk: Talk, times: Sequence[float]) -> None:
    """Every source sentence must last, on the scorer's clock (`on_tick`): OmniSTEval
    re-segments by the sentences' spans, from the time the previous sentence was heard to
    the time its own last unit was."""
    start = 0.0
    for number, end in enumerate(talk.sentence_ends, 1):
        if on_tick(times[end - 1]) <= on_tick(start):
            raise ValueError(
                f"{where}: sentence {number} ends at {times[end - 1]:g} s, not 1/1024 s or "
                f"more after the previous sentence's end ({start:g} s): the scorer's clock "
                "ticks in 1/1024 s, and every sentence must last"
            )
        start = times[end - 1]


def unit_times(
    testset: LongformSet,
    word_times: str | Path | None = None,
    unit_seconds: float = DEFAULT_UNIT_SECONDS,
) -> list[list[float]]:
    """Per talk, the second at which each source unit has been heard."""
    if word_times is not None:
        return read_word_times(word_times, testset.talks)
    return [uniform_unit_times(talk.units, unit_seconds) for talk in testset.talks]
