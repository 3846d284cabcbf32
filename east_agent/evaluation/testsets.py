"""Benchmark test sets as SimulEval source/reference files (the command: `east-prepare`,
`east_agent.evaluation.prepare`).

    east-prepare wmt22.zh-en --output outputs/testsets/wmt22.zh-en --tokenizer models/EAST-8B

Test sets (shipped in `east_agent/data/`, see its README.md): `wmt15.de-en`,
`wmt22.{de,cs,ru,zh}-en`, `wmt22.en-{de,cs,ru,zh}` and Multi30k's `multi30k.X-Y` (X, Y among
de, en, fr, cs; the 1,000-sentence test_2016_flickr split, or `multi30k-val.X-Y`).
Any of them as long-form talks of N consecutive sentences: `wmt22.de-en.talks50`
(`east_agent.evaluation.longform`).

Source lines hold the units the agent reads, space-separated: words, or for Chinese and
Japanese the checkpoint tokenizer's character groups (`east_agent.decoding.units`, hence the
`--tokenizer`). Reference lines are the references with line breaks folded. The scoring
settings that go with the target language are returned too: `--eval-latency-unit char`
and `--sacrebleu-tokenizer zh` / `ja-mecab` for Chinese / Japanese targets.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from east_agent.common.atomic import (
    check_replaceable,
    remove,
    write_atomically,
)
from east_agent.common.fingerprint import file_sha256, same_setting
from east_agent.common.records import placed_records, read_json_object, require_fields
from east_agent.common.text_lines import read_lines
from east_agent.decoding.prompt import language_name
from east_agent.decoding.units import source_units
from east_agent.evaluation import longform

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DATA = Path(__file__).resolve().parents[1] / "data"
DATA_SUMS = "SHA256SUMS"  # `sha256sum` of every shipped data file, checked as it is read
MULTI30K_SPLITS = {"multi30k": "test_2016_flickr", "multi30k-val": "val"}
MULTI30K_LANGUAGES = ("de", "en", "fr", "cs")

PREPARED_FILES = ("source.txt", "reference.txt", "testset.json")
PREPARING = ".preparing"  # there while a prepare writes the folder (left by a killed one)


UNITS_SPLIT_BY = "units_split_by"  # testset.json: the checkpoint whose tokenizer made the units
# testset.json: the content of the sentence files it names, as they were written (a file
# edited or cut since is refused: runs would read and be scored on other sentences)
FILES_SHA256 = "files_sha256"


def prepare_again(meta: Path) -> str:
    """The way out of a damaged prepared folder: the files east-prepare wrote there deleted
    (before: `testset.json` alone, as said, and its sentence files were then refused; the
    folder itself may hold the user's own files)."""
    written = (*PREPARED_FILES, *longform.TALK_FILES)
    present = [name for name in written if (meta.parent / name).exists()] or PREPARED_FILES
    return (
        f"delete {', '.join(present)} in {meta.parent} (the next grid, or east-prepare, "
        "prepares the test set again)"
    )


@dataclass(frozen=True)
class PreparedTestset:
    name: str
    source: Path
    reference: Path
    src_lang: str
    tgt_lang: str
    sentences: int
    eval_latency_unit: str  # "word" or "char"
    sacrebleu_tokenizer: str  # "13a", "zh" or "ja-mecab"

    def simuleval_args(self) -> list[str]:
        return ["--source", str(self.source), "--target", str(self.reference), *self.scoring_args()]

    def scoring_args(self) -> list[str]:
        """How SimulEval scores this set: its latency unit and BLEU's tokenizer."""
        return [
            "--eval-latency-unit", self.eval_latency_unit,
            "--sacrebleu-tokenizer", self.sacrebleu_tokenizer,
        ]  # fmt: skip


def available_testsets() -> list[str]:
    wmt = sorted(name for name in shipped_sums() if name.startswith("wmt/"))
    names = [Path(name).name.removesuffix(".json.gz") for name in wmt]
    names = [f"{name.split('.')[0]}.{name.split('.')[2]}" for name in names]
    for prefix in MULTI30K_SPLITS:
        names += [
            f"{prefix}.{src}-{tgt}"
            for src in MULTI30K_LANGUAGES
            for tgt in MULTI30K_LANGUAGES
            if src != tgt
        ]
    return names


def check_testset_name(name: str) -> None:
    if name not in available_testsets():
        raise ValueError(
            f"unknown test set {name!r}; choose one of {', '.join(available_testsets())}"
        )


def read_pairs(name: str) -> tuple[list[tuple[str, str]], str, str]:
    """(source, reference) pairs and the two language names of a test set."""
    check_testset_name(name)
    prefix, direction = name.split(".")
    src, tgt = direction.split("-")
    if prefix in MULTI30K_SPLITS:
        split = MULTI30K_SPLITS[prefix]
        source_lines = read_lines(shipped_file(f"multi30k/{split}.{src}.gz"))
        target_lines = read_lines(shipped_file(f"multi30k/{split}.{tgt}.gz"))
        return list(zip(source_lines, target_lines)), language_name(src), language_name(tgt)
    path = shipped_file(f"wmt/{prefix}.test.{direction}.json.gz")
    placed = placed_records(path)
    for place, record in placed:
        require_fields(record, ("source", "reference"), path, place)
    records = [record for _, record in placed]
    pairs = [(record["source"], record["reference"]) for record in records]
    return pairs, language_name(records[0]["src_lang"]), language_name(records[0]["tgt_lang"])


def shipped_file(relative: str) -> Path:
    """A data file shipped in `east_agent/data`, as shipped: one damaged or cut since is
    refused naming it (before: a Multi30k file cut short was zipped with its pair into
    fewer sentences, every one scored)."""
    path = DATA / relative
    expected = shipped_sums().get(relative)
    if expected is None:
        raise ValueError(f"{path}: not among the shipped data files ({DATA / DATA_SUMS})")
    try:
        digest = file_sha256(path)
    except OSError as error:
        raise ValueError(f"{path}: {error.strerror}; reinstall east-simul") from None
    if digest != expected:
        raise ValueError(
            f"{path}: damaged since it was shipped (its SHA-256 is not the one "
            f"{DATA / DATA_SUMS} names); reinstall east-simul"
        )
    return path


def shipped_sums() -> dict[str, str]:
    """{file below east_agent/data: its SHA-256}, as `sha256sum` wrote them: the shipped
    data files."""
    try:
        lines = (DATA / DATA_SUMS).read_text(encoding="utf-8").split("\n")
        pairs = [line.split(maxsplit=1) for line in lines if line.strip()]
        return {name: digest for digest, name in pairs if len(digest) == 64}
    except OSError as error:
        raise ValueError(f"{DATA / DATA_SUMS}: {error.strerror}; reinstall east-simul") from None


def split_by_tokenizer(name: str) -> bool:
    """Whether the test set's source is split into units by a checkpoint's tokenizer
    (Chinese, Japanese): its name's source language code, long-form or not."""
    source_code = longform.parse_name(name)[0].split(".")[-1].split("-")[0]
    return source_code in ("zh", "ja")


# Zero-width space, word joiner, zero-width no-break space (a BOM inside a line): in a
# few WMT22 lines (`\u200bI find ...`), where the model read a word with an invisible
# character glued on and BLEU's tokenizer never matched `\u200bI` with `I`. Not U+200C/D,
# which join and part letters in Persian, Indic scripts and emoji.
INVISIBLE = str.maketrans("", "", "\u200b\u2060\ufeff")


def scoring_settings(tgt_lang: str) -> tuple[str, str]:
    """(latency unit, sacrebleu tokenizer) for a target language."""
    if tgt_lang == "Chinese":
        return "char", "zh"
    if tgt_lang == "Japanese":
        return "char", "ja-mecab"
    return "word", "13a"


def prepare_testset(
    name: str,
    output: str | Path,
    tokenizer: PreTrainedTokenizerBase | None = None,
    split_by: str | dict | None = None,
) -> PreparedTestset:
    """Write `source.txt`, `reference.txt` and `testset.json` into `output`; a long-form
    name such as `wmt22.de-en.talks50` writes one line per talk and its talk files
    (`longform`). `split_by`: the checkpoint whose `tokenizer` split the source into units
    (Chinese, Japanese), as `testset.json` keeps it (`units_split_by`)."""
    base, talk_size = longform.parse_name(name)
    pairs, src_lang, tgt_lang = read_pairs(base)
    output = Path(output)
    units, references = [], []
    for number, (source, reference) in enumerate(pairs, 1):
        source, reference = source.translate(INVISIBLE), reference.translate(INVISIBLE)
        units.append(source_units(source, src_lang, tokenizer))
        if not units[-1] or not reference.strip():
            raise ValueError(f"{name}: sentence {number} has an empty source or reference")
        references.append(" ".join(reference.split()))
    source_lines = [" ".join(sentence) for sentence in units]
    for written in (*PREPARED_FILES, *longform.TALK_FILES):  # a folder there is the user's
        check_replaceable(output / written, "file east-prepare writes")
    output.mkdir(parents=True, exist_ok=True)
    # the record goes first and comes back last: a kill between the files leaves no record
    # naming files of another test set, and the mark that the files there are this
    # command's (the next run prepares them again)
    write_atomically(output / PREPARING, "")
    remove(output / "testset.json")
    for talk_file in longform.TALK_FILES:  # a long-form set prepared here before
        remove(output / talk_file)
    extra: dict[str, object] = {}
    if talk_size:
        source_lines, references, extra = longform.write_talks(
            output, name, talk_size, pairs, units, references, tgt_lang
        )
    latency_unit, bleu_tokenizer = scoring_settings(tgt_lang)
    prepared = PreparedTestset(
        name=name,
        source=output / "source.txt",
        reference=output / "reference.txt",
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        sentences=len(source_lines),  # SimulEval instances: talks for a long-form set
        eval_latency_unit=latency_unit,
        sacrebleu_tokenizer=bleu_tokenizer,
    )
    write_atomically(prepared.source, "\n".join(source_lines) + "\n")
    write_atomically(prepared.reference, "\n".join(references) + "\n")
    meta = {key: str(value) for key, value in asdict(prepared).items()} | extra
    meta["sentences"] = prepared.sentences  # a number (before: a string, still read)
    meta[FILES_SHA256] = sentence_files_sha256(prepared)
    if split_by is not None:
        meta[UNITS_SPLIT_BY] = split_by
    write_atomically(output / "testset.json", json.dumps(meta, indent=2) + "\n")
    remove(output / PREPARING)
    return prepared


def read_prepared(folder: Path) -> PreparedTestset | None:
    """The test set `prepare_testset` wrote into `folder`, if any; its files are found next
    to `testset.json`, wherever the folder was moved."""
    meta = Path(folder) / "testset.json"
    if not meta.exists():
        return None
    saved = read_json_object(meta)
    try:
        prepared = PreparedTestset(
            name=saved["name"],
            source=meta.parent / Path(saved["source"]).name,
            reference=meta.parent / Path(saved["reference"]).name,
            src_lang=saved["src_lang"],
            tgt_lang=saved["tgt_lang"],
            sentences=_count(saved["sentences"]),
            eval_latency_unit=saved["eval_latency_unit"],
            sacrebleu_tokenizer=saved["sacrebleu_tokenizer"],
        )
    except KeyError as error:
        raise ValueError(f"{meta}: no {error.args[0]!r}; {prepare_again(meta)}") from None
    except (TypeError, ValueError):
        raise ValueError(
            f"{meta}: 'sentences' is no count: {saved['sentences']!r}; {prepare_again(meta)}"
        ) from None
    recorded = saved.get(FILES_SHA256)
    if recorded is not None and not isinstance(recorded, dict):
        raise ValueError(f"{meta}: {FILES_SHA256!r} is no mapping of files; {prepare_again(meta)}")
    check_sentence_files(prepared, recorded, meta)
    return prepared


def _count(saved: object) -> int:
    """`testset.json`'s `sentences`: a whole number, or its digits (a folder prepared
    before it was written as a number); a ValueError for anything else (`true`, `9.5`)."""
    if isinstance(saved, int) and not isinstance(saved, bool) and saved >= 0:
        return saved
    if isinstance(saved, str) and saved.isascii() and saved.isdigit():
        return int(saved)
    raise ValueError(saved)


def sentence_files_sha256(prepared: PreparedTestset) -> dict[str, str]:
    """The SHA-256 of the source and reference files, by name."""
    files = (prepared.source, prepared.reference)
    return {path.name: file_sha256(path) for path in files}


def check_sentence_files(prepared: PreparedTestset, recorded: dict | None, meta: Path) -> None:
    """The source and reference files are there and hold what was prepared (`recorded`;
    None: a set prepared before their content was recorded); else a ValueError naming the
    file. Before: a sentence edited by hand was translated and scored as the test set's, a
    file cut short was found after the grid had emptied the demo's runs."""
    for path in (prepared.source, prepared.reference):
        if not path.is_file():
            raise ValueError(f"{path}: missing, though {meta} names it; {prepare_again(meta)}")
    if recorded is None:
        return
    for name, sha256 in sentence_files_sha256(prepared).items():
        if recorded.get(name) != sha256:
            raise ValueError(
                f"{meta.parent / name}: changed since {prepared.name} was prepared there "
                f"({meta.name} holds its content's SHA-256): delete the folder "
                f"{meta.parent}, and the next grid prepares it again from the shipped data"
            )


def prepared_named(folder: Path, name: str) -> PreparedTestset:
    """The test set prepared in `folder`, checked to be `name`: a grid's tables and tests
    are made against it (a `testset/` of another set made them silently wrong)."""
    prepared = read_prepared(folder)
    if prepared is None or prepared.name != name:
        held = "no prepared test set" if prepared is None else f"the test set {prepared.name}"
        raise ValueError(f"{folder} holds {held}, not the grid's {name}")
    return prepared


def same_prepared(
    folder: Path, saved: PreparedTestset, name: str, split_by: str | dict | None
) -> bool:
    """Whether the test set prepared in `folder` (`saved`) is `name` with its source split
    as `split_by` says (None: at spaces; the checkpoint whose tokenizer split it)."""
    return saved.name == name and same_setting(units_split_by(folder), split_by)


def units_split_by(folder: Path) -> str | dict | None:
    """The checkpoint whose tokenizer split the prepared source (None: whitespace)."""
    return read_json_object(Path(folder) / "testset.json").get(UNITS_SPLIT_BY)


def check_own_sentence_files(output: Path, where: str = "--output") -> None:
    """east-prepare replaces only sentence files it wrote and nobody changed since: a
    `source.txt` or `reference.txt` without a `testset.json` beside it, or other than the
    one it records, is refused (before: replaced, and the user's file lost); `where`: what
    names the folder before its path."""
    present = [output / name for name in PREPARED_FILES[:2] if (output / name).is_file()]
    if not present or (output / PREPARING).is_file():  # a prepare killed midway: its own
        return
    meta = output / "testset.json"
    if not meta.is_file():
        raise ValueError(
            f"{where} {output}: {present[0].name} there was not written by east-prepare "
            f"(no {meta.name} beside it): move it away, or choose another folder"
        )
    recorded = read_json_object(meta).get(FILES_SHA256)
    if not isinstance(recorded, dict):
        return  # prepared before the content was recorded: nothing to compare
    for path in present:
        if recorded.get(path.name) != file_sha256(path):
            raise ValueError(
                f"{where} {output}: {path.name} changed since east-prepare wrote it "
                f"({meta.name} holds its SHA-256): preparing again would replace the "
                "change; move it away, or choose another folder"
            )
