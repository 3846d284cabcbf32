"""Build SiMT chunk records from plain parallel text.

    python -m training.build_data --source train.de.gz --target train.en.gz \\
        --src-lang de --tgt-lang en --output data/simt-de-en.jsonl.gz

Input: two line-aligned text files (gzip read through), or one JSON test-set file of
`{"source", "reference"}` records (`--pairs`). Output: JSON Lines in the released SiMT
format, `{"src_lang", "tgt_lang", "latency", "source_chunks", "target_chunks"}`, one
record per sentence and latency level, ready for `training.sft`.

Method.
1. Word alignment with eflomal (a statistical aligner; no model to download), both
   directions, symmetrised with grow-diag-final-and. Words are whitespace tokens, the
   units the agent reads.
2. The base segmentation writes every target word as soon as all the source words it is
   aligned to have been read: with `need(t)` the last source position aligned to target
   word t or to any word before it (target words come out in order; unaligned words at
   the start take the first known need), each distinct need level is one chunk pair: the
   target words of that level, and the source words read since the previous level. It
   is the finest split in which every target word of chunk j is aligned only to source
   words of chunks <= j and no word is written later than its alignment allows; source
   words after the last need join the last chunk.
3. The five latency levels merge adjacent chunks, left to right, until every source
   chunk holds at least this many words (a short remainder joins the last chunk):

       low 1, low-medium 2, medium 3, medium-high 4, high 6

   Merging only delays target words, so each level's mean AL (printed at the end, with
   the reference length as in SimulEval) is at least the previous level's; the builder
   checks that it rises strictly from low to high.

Bad pairs (an empty side, more than `--max-words` words, a length ratio beyond
`--max-ratio`, no alignment link) are counted and reported, never dropped silently.
eflomal aligns no sentence of more than 1023 words (it writes an empty links line), so
`--max-words` is at most that, and a pair left with no link is dropped. eflomal seeds itself
from /dev/urandom and cannot be seeded, so the links are saved next to the output
(`<output>.links.gz`) and `--alignments` reuses them: with the same links and seed the
output is byte-identical (the gzip header holds neither a time nor a file name). The two
are put in place only after every check, the old output removed first, so that a failed
or killed rebuild never leaves new links beside old records.
Errors end the command with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from east_agent.common.arguments import parse_once_each, positive_int
from east_agent.common.atomic import (
    check_folder_path,
    check_replaceable,
    install,
    is_special_file,
    remove,
    remove_tree,
    temporary_beside,
)
from east_agent.common.child_process import run_child
from east_agent.common.entry import CommandError, command_line, raise_if_signalled
from east_agent.common.records import RecordError, placed_records, text_output, write_jsonl
from east_agent.common.text_lines import check_input_file, read_lines
from east_agent.decoding.prompt import (
    LATENCY_LEVELS,
    is_unspaced,
    known_language_name,
    language_name,
)
from east_agent.decoding.units import control_token_in
from training.data import EAST_TOKENS, lone_surrogate

COMMAND = "python -m training.build_data"

logger = logging.getLogger("training.build_data")

MIN_SOURCE_CHUNK = {"low": 1, "low-medium": 2, "medium": 3, "medium-high": 4, "high": 6}
# eflomal 2.0 writes an empty links line for a sentence of more words than this
EFLOMAL_MAX_WORDS = 1023
TOO_LONG_FOR_EFLOMAL = (
    f"at most {EFLOMAL_MAX_WORDS}: eflomal leaves a sentence of more words unaligned "
    "(one chunk at every latency level)"
)
Links = set[tuple[int, int]]  # (source position, target position), 0-based
Segmentation = list[tuple[list[str], list[str]]]


@dataclass
class BuildReport:
    pairs: int = 0
    kept: int = 0
    empty_side: int = 0
    too_long: int = 0
    bad_ratio: int = 0
    unaligned: int = 0
    mean_al: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        lines = [
            f"{self.pairs} sentence pairs read, {self.kept} kept",
            f"{self.empty_side} dropped: an empty side",
            f"{self.too_long} dropped: too long",
            f"{self.bad_ratio} dropped: length ratio out of bounds",
            f"{self.unaligned} dropped: no alignment link",
        ]
        lines += [
            f"mean AL of the {level} segmentation: {al:.3f}" for level, al in self.mean_al.items()
        ]
        return lines


# -- alignment ---------------------------------------------------------------------------------


def grow_diag_final_and(forward: Links, reverse: Links) -> Links:
    """Koehn's symmetrisation: the intersection, grown into the union through neighbours,
    then union links that connect two still unaligned words."""
    union = forward | reverse
    alignment = forward & reverse
    aligned_source = {i for i, _ in alignment}
    aligned_target = {j for _, j in alignment}
    neighbours = [(-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
    grown = True
    while grown:
        grown = False
        for i, j in sorted(alignment):
            for di, dj in neighbours:
                link = (i + di, j + dj)
                if link in union and link not in alignment:
                    if link[0] not in aligned_source or link[1] not in aligned_target:
                        alignment.add(link)
                        aligned_source.add(link[0])
                        aligned_target.add(link[1])
                        grown = True
    for link in sorted(forward) + sorted(reverse):
        if link[0] not in aligned_source and link[1] not in aligned_target:
            alignment.add(link)
            aligned_source.add(link[0])
            aligned_target.add(link[1])
    return alignment


def parse_links(line: str) -> Links:
    """Pharaoh links, `i-j` of two word numbers each; ValueError for anything else (`0-0-1`,
    `1`, `+1-0`, `1_0-0`)."""
    links = set()
    for pair in line.split():
        numbers = pair.split("-")
        if len(numbers) != 2 or not all(part.isascii() and part.isdigit() for part in numbers):
            raise ValueError(f"not a link: {pair!r}")
        links.add((int(numbers[0]), int(numbers[1])))
    return links


def align(sources: Sequence[str], targets: Sequence[str], workdir: Path) -> list[Links]:
    """eflomal in both directions, symmetrised, its files all in `workdir`.

    Its binary is started here, not by `eflomal.Aligner().align`: that one starts it with
    no way to make it die with this process (killed, the builder left it writing links
    into the output folder) and puts its inputs in /tmp (left there by a kill)."""
    import eflomal

    source, target = workdir / "source.eflomal", workdir / "target.eflomal"
    forward_path, reverse_path = workdir / "forward.links", workdir / "reverse.links"
    with open(source, "wb") as source_file, open(target, "wb") as target_file:
        eflomal.Aligner().prepare_files(
            list(sources), source_file, list(targets), target_file, None, None
        )
    command = eflomal_command(source, target, forward_path, reverse_path, len(sources))
    status = run_child(command)
    if status != 0:
        ended = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        raise CommandError(f"eflomal failed ({ended}) aligning {len(sources)} sentence pairs")
    forward, reverse = read_lines(forward_path), read_lines(reverse_path)
    return [grow_diag_final_and(parse_links(f), parse_links(r)) for f, r in zip(forward, reverse)]


def eflomal_command(
    source: Path, target: Path, forward: Path, reverse: Path, sentences: int
) -> list[str]:
    """The command `eflomal.Aligner().align(..., quiet=True)` runs (eflomal 2.0): model 3,
    3 samplers, null prior 0.2, iterations from the number of sentences."""
    import eflomal

    iterations = max(2, round(5000 / math.sqrt(sentences)))
    quarter = max(1, iterations // 4)
    executable = Path(eflomal.__file__).parent / "bin" / "eflomal"
    return [
        str(executable), "-m", "3", "-s", str(source), "-t", str(target), "-n", "3",
        "-N", "0.2", "-1", str(max(2, quarter)), "-q", "-2", str(quarter),
        "-3", str(iterations), "-f", str(forward), "-r", str(reverse),
    ]  # fmt: skip


# -- segmentation ------------------------------------------------------------------------------


def target_needs(links: Links, target_length: int) -> list[int]:
    """How many source words must be read before each target word can be written.

    A word is written after the words before it, so needs are running maxima of the last
    aligned source position; unaligned words at the start borrow the first known need."""
    last_aligned = [0] * target_length
    for source_position, target_position in links:
        last_aligned[target_position] = max(last_aligned[target_position], source_position + 1)
    first_known = next((need for need in last_aligned if need), 1)
    needs, running = [], first_known
    for need in last_aligned:
        running = max(running, need)
        needs.append(running)
    return needs


def base_segmentation(source: list[str], target: list[str], links: Links) -> Segmentation:
    """The finest segmentation that writes every target word as early as its links allow."""
    needs = target_needs(links, len(target))
    chunks: Segmentation = []
    read = 0
    start = 0
    for position in range(len(target)):
        last_of_level = position + 1 == len(target) or needs[position + 1] != needs[position]
        if last_of_level:
            level_end = max(needs[position], read + 1)
            chunks.append((source[read:level_end], target[start : position + 1]))
            read, start = level_end, position + 1
    if read < len(source):
        last_source, last_target = chunks[-1]
        chunks[-1] = (last_source + source[read:], last_target)
    return chunks


def merge_to_min_source(chunks: Segmentation, min_words: int) -> Segmentation:
    merged: Segmentation = []
    source: list[str] = []
    target: list[str] = []
    for chunk_source, chunk_target in chunks:
        source, target = source + chunk_source, target + chunk_target
        if len(source) >= min_words:
            merged.append((source, target))
            source, target = [], []
    if source or target:
        if merged:
            merged[-1] = (merged[-1][0] + source, merged[-1][1] + target)
        else:
            merged.append((source, target))
    return merged


def segmentation_delays(chunks: Segmentation) -> list[int]:
    delays, read = [], 0
    for source, target in chunks:
        read += len(source)
        delays += [read] * len(target)
    return delays


def average_lagging(delays: list[int], source_length: int) -> float:
    """SimulEval's AL, with the reference (here: the target itself) as the target length."""
    from simuleval.evaluator.scorers.latency_scorer import ALScorer

    instance = SimpleNamespace(delays=delays, reference=None, source_length=source_length)
    return ALScorer(use_ref_len=False).compute(instance)


# -- the builder -------------------------------------------------------------------------------


def pair_of(record: dict, path: Path, place: str) -> tuple[str, str]:
    """(source, reference or target) of a `--pairs` record at `place` (`line 3`, `record
    0`); an empty one is counted later as an empty side, a missing or non-text one is an
    error naming the record, and so is one holding a lone surrogate (a JSON escape such
    as `\\ud83d`; before: an encoding error naming no record, after the alignment)."""
    target_field = "reference" if "reference" in record else "target"
    for name in ("source", target_field):
        if name not in record:
            also = " (or 'reference')" if name == "target" else ""
            raise RecordError(f"{path}: {place}: missing field {name!r}{also}")
        if not isinstance(record[name], str):
            raise RecordError(f"{path}: {place}: field {name!r} must be a string")
        if surrogate := lone_surrogate(record[name]):
            raise RecordError(f"{path}: {place}: field {name!r}: {surrogate}")
        check_no_control_token(record[name], f"{path}: {place}: field {name!r}")
    return record["source"], record[target_field]


LANGUAGE_FIELDS = {"src_lang": "--src-lang", "tgt_lang": "--tgt-lang"}


def check_languages(src_lang: str, tgt_lang: str) -> tuple[str, str]:
    """The two languages' names, two languages that space their words: the builder splits
    words on whitespace (Chinese and Japanese need a segmenter it does not have)."""
    languages = language_name(src_lang), language_name(tgt_lang)
    for language in languages:
        if is_unspaced(language):
            raise ValueError(
                f"{language}: the builder splits words on whitespace only, and {language} "
                "does not space its words (it has no segmenter); a corpus in languages "
                "that space theirs"
            )
    if languages[0] == languages[1]:  # before: built, chunks of a copy task
        raise ValueError(
            f"--src-lang {src_lang} and --tgt-lang {tgt_lang} are both {languages[0]}: "
            "SiMT data translates from one language into another"
        )
    return languages


def check_record_languages(
    record: dict, languages: dict[str, str | None], path: Path, place: str
) -> None:
    """A record's own `src_lang` / `tgt_lang` (a test set's) must be the flag's language,
    `de` being `German` (before: ignored, an en-de set labelled German to English)."""
    for name, flag in LANGUAGE_FIELDS.items():
        language = languages[name]
        if name not in record or language is None:
            continue
        if not isinstance(record[name], str):
            raise RecordError(f"{path}: {place}: field {name!r} must be a string")
        if known_language_name(record[name]) != language_name(language):
            raise RecordError(
                f"{path}: {place}: field {name!r} is {record[name]!r}, but {flag} is {language!r}"
            )


def check_no_control_token(text: str, where: str) -> None:
    """An EAST token in the corpus would be written into the chunks, where it reads as a
    READ or WRITE: refused naming `where` (training.sft refuses the records later)."""
    found = control_token_in(text, EAST_TOKENS)
    if found:
        raise RecordError(f"{where}: holds {found!r}, a control token, not text")


def read_corpus(path: Path) -> list[str]:
    """The lines of one side (gzip read through, whatever the name): a byte-order mark (a
    word of the first sentence) refused, and so is a line holding a control token."""
    lines = read_lines(path)
    if lines and lines[0].startswith("\ufeff"):
        raise ValueError(f"{path}: line 1: starts with a UTF-8 byte-order mark (U+FEFF)")
    for number, line in enumerate(lines, start=1):
        check_no_control_token(line, f"{path}: line {number}")
    return lines


def read_parallel(
    source: Path | None,
    target: Path | None,
    pairs: Path | None,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
) -> list[tuple[str, str]]:
    """The sentence pairs; a `--pairs` record that names its languages must name these
    (where given)."""
    if pairs is not None:
        languages = {"src_lang": src_lang, "tgt_lang": tgt_lang}
        placed = placed_records(pairs)
        for place, record in placed:
            check_record_languages(record, languages, pairs, place)
        return [pair_of(record, pairs, place) for place, record in placed]
    assert source is not None and target is not None  # main: both, or --pairs
    sources, targets = read_corpus(source), read_corpus(target)
    if len(sources) != len(targets):
        raise ValueError(f"{source} has {len(sources)} lines but {target} has {len(targets)}")
    return list(zip(sources, targets))


def keep_pair(
    source: list[str], target: list[str], report: BuildReport, max_words: int, max_ratio: float
) -> bool:
    if not source or not target:
        report.empty_side += 1
    elif len(source) > max_words or len(target) > max_words:
        report.too_long += 1
    elif max(len(source), len(target)) / min(len(source), len(target)) > max_ratio:
        report.bad_ratio += 1
    else:
        return True
    return False


def build(
    pairs: list[tuple[str, str]],
    src_lang: str,
    tgt_lang: str,
    output: Path,
    levels: Sequence[str] = LATENCY_LEVELS,
    alignments: Path | None = None,
    seed: int = 0,
    max_words: int = 100,
    max_ratio: float = 3.0,
    progress: bool = True,
) -> BuildReport:
    if max_words > EFLOMAL_MAX_WORDS:
        raise ValueError(f"max_words {max_words}: {TOO_LONG_FOR_EFLOMAL}")
    languages = check_languages(src_lang, tgt_lang)
    check_outputs(output)
    report = BuildReport(pairs=len(pairs))
    kept = []
    for source, target in pairs:
        source_words, target_words = source.split(), target.split()
        if keep_pair(source_words, target_words, report, max_words, max_ratio):
            kept.append((source_words, target_words))
    report.kept = len(kept)
    if not kept:
        raise ValueError("no sentence pair is left to align: " + "; ".join(report.lines()))
    levels = list(dict.fromkeys(levels))  # a level given twice would write its records twice
    # this process's own: a concurrent run's, or an orphan's, never mixes with it
    work = temporary_beside(Path(f"{output}.work"))
    remove_tree(output.parent / f".{output.name}.align")  # a killed older version's work folder
    work.mkdir(parents=True)
    try:
        all_links = load_links(alignments, kept) if alignments else None
        if all_links is None:
            logger.info("aligning %d pairs with eflomal", len(kept))
            all_links = align([" ".join(s) for s, _ in kept], [" ".join(t) for _, t in kept], work)
            aligned_now = True
        else:
            aligned_now = False
        try:
            aligned, aligned_links = drop_unaligned(kept, all_links, report)
            records = segment(aligned, aligned_links, languages, levels, report, progress)
        except ValueError as error:
            if not aligned_now:
                raise
            raise ValueError(f"{error}; {kept_links(output, all_links)}") from None
        random.Random(seed).shuffle(records)
        write_outputs(output, records, all_links, work)
    finally:
        remove_tree(work)
    unused = unused_links(output)
    if alignments is not None and same_file(Path(alignments), unused):
        remove(unused)  # kept for this rebuild, now `<output>.links.gz` (before: left over)
        logger.info("%s removed: its links are in %s now", unused, links_of(output))
    return report


def unused_links(output: Path) -> Path:
    """Where the links of a build that failed its checks are kept (`kept_links`)."""
    return Path(f"{output}.unused.links.gz")


def kept_links(output: Path, all_links: list[Links]) -> str:
    """eflomal's links of a build that failed its checks, kept beside the output (eflomal
    cannot be seeded, and a large corpus takes hours to align; before: thrown away with the
    work folder): where they are, and how to reuse them."""
    path = unused_links(output)
    save_links(path, all_links)
    return f"eflomal's links are kept in {path}: --alignments {path} reuses them (other --levels)"


def drop_unaligned(
    kept: list[tuple[list[str], list[str]]], all_links: list[Links], report: BuildReport
) -> tuple[list[tuple[list[str], list[str]]], list[Links]]:
    """The pairs that have a link, and their links; those with none are dropped and
    counted in `report` (before: each became one chunk at every level, a 1144-word pair
    past eflomal's limit raising the mean AL of `low` from 1.0 to 12.25). Their links
    are saved all the same, so that `--alignments` drops them again."""
    aligned = [(pair, links) for pair, links in zip(kept, all_links) if links]
    report.unaligned, report.kept = len(kept) - len(aligned), len(aligned)
    if not aligned:
        raise ValueError("no sentence pair has an alignment link: " + "; ".join(report.lines()))
    return [pair for pair, _ in aligned], [links for _, links in aligned]


def segment(
    kept: list[tuple[list[str], list[str]]],
    all_links: list[Links],
    languages: tuple[str, str],
    levels: list[str],
    report: BuildReport,
    progress: bool,
) -> list[dict]:
    """The records of every kept pair and level; ValueError if the mean AL (in `report`)
    does not rise strictly from level to level."""
    from tqdm import tqdm

    records: list[dict] = []
    lagging: dict[str, list[float]] = {level: [] for level in levels}
    for (source, target), links in tqdm(
        list(zip(kept, all_links)), desc="segmenting", disable=not progress, unit="pair"
    ):
        raise_if_signalled()  # a Ctrl-C a library swallowed (its records are not written)
        base = base_segmentation(source, target, links)
        for level in levels:
            chunks = merge_to_min_source(base, MIN_SOURCE_CHUNK[level])
            lagging[level].append(average_lagging(segmentation_delays(chunks), len(source)))
            records.append(
                {
                    "src_lang": languages[0],
                    "tgt_lang": languages[1],
                    "latency": level,
                    "source_chunks": [" ".join(s) for s, _ in chunks],
                    "target_chunks": [" ".join(t) for _, t in chunks],
                }
            )
    report.mean_al = {level: sum(values) / max(len(values), 1) for level, values in lagging.items()}
    ordered = [report.mean_al[level] for level in LATENCY_LEVELS if level in report.mean_al]
    if any(later <= earlier for earlier, later in zip(ordered, ordered[1:])):
        raise ValueError(f"mean AL does not rise strictly across the levels: {report.mean_al}")
    return records


def write_outputs(output: Path, records: list[dict], all_links: list[Links], work: Path) -> None:
    """The records at `output` and their links beside them, only data that passed the
    checks, written whole in `work` (on `output`'s file system) first.

    `--alignments <output>.links.gz` must rebuild the `<output>` beside it, so the old
    records go before the new links come: a kill between the renames leaves the links
    with no records (rebuilt from them), never beside records they did not make; a failure
    or a kill before leaves the old pair as it was."""
    staged = work / output.name
    write_jsonl(staged, records)
    save_links(work / links_of(output).name, all_links)
    output.unlink(missing_ok=True)
    install(work / links_of(output).name, links_of(output))
    install(staged, output)


def links_of(output: Path) -> Path:
    return Path(f"{output}.links.gz")


def check_outputs(output: Path) -> None:
    """The output and its links, each a file that can be written (before: an error after
    the alignment, or a folder replaced)."""
    check_folder_path(Path(output).parent, "--output folder")
    if is_special_file(Path(output)):  # before: the device deleted and a file put there
        raise ValueError(
            f"--output {output}: a device or a pipe; the records need a file, their links "
            "are written beside it"
        )
    check_replaceable(output, "JSON Lines file")
    check_replaceable(links_of(output), "links file")


def save_links(path: Path, all_links: list[Links]) -> None:
    lines = [" ".join(f"{i}-{j}" for i, j in sorted(links)) for links in all_links]
    with text_output(path) as handle:
        handle.write("\n".join(lines) + "\n")


def load_links(path: Path, kept: list[tuple[list[str], list[str]]]) -> list[Links]:
    """The saved links of the `kept` pairs, each within its pair's words (links of another
    corpus of as many pairs would otherwise be used silently, or crash later)."""
    lines = read_lines(path)
    if len(lines) != len(kept):
        raise ValueError(
            f"{path}: {len(lines)} alignment lines for {len(kept)} kept pairs: links of "
            "another corpus, or of this one kept with another --max-words or --max-ratio "
            "(give the run's that wrote them)"
        )
    all_links = []
    for number, (line, (source, target)) in enumerate(zip(lines, kept), start=1):
        try:
            links = parse_links(line)
        except ValueError as error:
            raise ValueError(
                f"{path}: line {number}: not links (i-j ...): {line[:60]!r} ({error})"
            ) from None
        outside = [f"{i}-{j}" for i, j in sorted(links) if i >= len(source) or j >= len(target)]
        if outside:
            raise ValueError(
                f"{path}: line {number}: link {outside[0]} is outside its pair ({len(source)} "
                f"source and {len(target)} target words): links of another corpus?"
            )
        all_links.append(links)
    return all_links


INPUT_FLAGS = ("--source", "--target", "--pairs", "--alignments")


def max_words_flag(text: str) -> int:
    """`--max-words` (argparse `type`): 1 to EFLOMAL_MAX_WORDS (before: 0 or 5000 ran, to
    end with no pair left, or with pairs past eflomal's limit as one chunk each)."""
    words = positive_int(text)
    if words > EFLOMAL_MAX_WORDS:
        raise argparse.ArgumentTypeError(f"takes {TOO_LONG_FOR_EFLOMAL}, got {text!r}")
    return words


def max_ratio_flag(text: str) -> float:
    """`--max-ratio` (argparse `type`): a finite number of at least 1, the longer side's
    words over the shorter's (before: below 1 ran, to end with no pair left)."""
    try:
        ratio = float(text)
    except ValueError:
        ratio = math.nan
    if not (math.isfinite(ratio) and ratio >= 1):  # `nan` would turn the filter off
        raise argparse.ArgumentTypeError(
            f"takes a finite number of at least 1 (the longer side's words over the "
            f"shorter's), got {text!r}"
        )
    return ratio


def check_inputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, an input flag naming a folder or nothing."""
    for flag in INPUT_FLAGS:
        path = getattr(args, flag.removeprefix("--"))
        if path is not None:
            check_input_file(path, flag)


def check_inputs_kept(args: argparse.Namespace) -> None:
    """Refuse, before any work, --source and --target naming one file, and an --output, or
    the links written beside it, that is an input file (before: the input was overwritten).
    The links of this very output may be given back as --alignments: they are read whole
    first, and written again the same."""
    if args.source is not None and same_file(args.source, args.target):
        raise ValueError(
            f"--source {args.source} and --target {args.target} are one file: every pair "
            "would be a sentence and itself"
        )
    links = links_of(args.output)
    for flag in INPUT_FLAGS:
        given = getattr(args, flag.removeprefix("--"))
        if given is None:
            continue
        if same_file(given, args.output):
            written = "is"
        elif same_file(given, links) and flag != "--alignments":
            written = f"writes its links to {links}, which is"
        else:
            continue
        raise ValueError(
            f"--output {args.output} {written} the {flag} file {given}: it would be "
            "overwritten; choose another output"
        )


def same_file(one: Path, other: Path) -> bool:
    """Whether two paths name one file: through links (symbolic or hard) where both are
    there, by their resolved paths where one is still to be written."""
    if one.exists() and other.exists():
        return os.path.samefile(one, other)
    return one.resolve() == other.resolve()


@command_line(COMMAND)
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="build SiMT chunk records from parallel text"
    )
    parser.add_argument("--source", type=Path, help="source sentences, one per line (.gz ok)")
    parser.add_argument("--target", type=Path, help="target sentences, aligned by line")
    parser.add_argument("--pairs", type=Path, help="or: a JSON test-set file")
    parser.add_argument("--src-lang", required=True)
    parser.add_argument("--tgt-lang", required=True)
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        help="JSON Lines file (`.jsonl`; gzip-compressed where the name ends in `.gz`)",
    )
    parser.add_argument("--levels", nargs="+", default=list(LATENCY_LEVELS), choices=LATENCY_LEVELS)
    parser.add_argument("--alignments", type=Path, help="reuse saved links (<output>.links.gz)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-words",
        type=max_words_flag,
        default=100,
        help="longest sentence kept, in words, 1 to 1023 (default: %(default)s)",
    )
    parser.add_argument(
        "--max-ratio",
        type=max_ratio_flag,
        default=3.0,
        help="largest length ratio kept, the longer side's words over the shorter's "
        "(default: %(default)s)",
    )
    args = parse_once_each(parser, argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    texts_given = [args.source is not None, args.target is not None]
    if texts_given != [args.pairs is None] * 2:  # --pairs holds both sides itself
        parser.error("give --source and --target, or --pairs without them")
    check_languages(args.src_lang, args.tgt_lang)  # before the corpus is read (it was after)
    check_inputs(args)
    check_inputs_kept(args)
    check_outputs(args.output)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = build(
        read_parallel(args.source, args.target, args.pairs, args.src_lang, args.tgt_lang),
        args.src_lang,
        args.tgt_lang,
        args.output,
        args.levels,
        args.alignments,
        args.seed,
        args.max_words,
        args.max_ratio,
    )
    for line in report.lines():
        print(line)


if __name__ == "__main__":
    main()
