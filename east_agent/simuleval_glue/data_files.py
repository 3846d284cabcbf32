"""A run's source and reference files, checked before anything slow starts.

Torch-free, so that `east-remote-eval` (the evaluator's side, which loads no model)
checks them as `east-simuleval` and the agents do.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from east_agent.common.counts import counted
from east_agent.common.text_lines import check_regular_file, numbered, read_simuleval_lines

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# files found good in this process, as they were then: the source's number of lines
_CHECKED_FILES: dict[tuple, int] = {}


def _file_state(path: str) -> tuple[str, int, int]:
    status = Path(path).stat()
    return str(Path(path).resolve()), status.st_size, status.st_mtime_ns


def check_source_file(
    source: str | None, target: str | None = None, latency_unit: str = "word"
) -> int | None:
    """Refuse a source file with no line or empty lines, or a reference file with another
    number of lines or an empty one, before any model is loaded (and either file not
    UTF-8, or with a carriage return inside a line, where SimulEval's reader would start
    another sentence; for the `word` latency unit, a reference spaced otherwise than
    SimulEval counts its words). Files found good are not read again in this process
    unless they change (`east-simuleval` checks them before SimulEval builds the agent, and
    the agent checks them again). The source's number of lines (None without a source)."""
    for flag, path in (("--source", source), ("--target", target)):
        if path:
            check_regular_file(path, flag)
    if not source:
        return None
    checked = (_file_state(source), _file_state(target) if target else None, latency_unit)
    if checked not in _CHECKED_FILES:
        _CHECKED_FILES[checked] = _check_lines(source, target, latency_unit)
    return _CHECKED_FILES[checked]


# characters that show nothing: a line of them and spaces is an empty sentence
INVISIBLE = str.maketrans("", "", "\u200b\u200c\u200d\u2060\ufeff")
# what SimulEval's count of a reference's words (split at single spaces) gets wrong
MISSPACED = re.compile(r"[\t\v\f]|  |^ | $")


def is_blank(line: str) -> bool:
    return not line.translate(INVISIBLE).strip()


def _check_lines(source: str, target: str | None, latency_unit: str) -> int:
    lines = read_simuleval_lines(source)
    if not lines:
        raise ValueError(f"{source}: no source sentence (an empty file)")
    empty = [number for number, line in enumerate(lines, 1) if is_blank(line)]
    if empty:
        raise ValueError(
            f"{source}: {numbered(empty)}: empty source sentence; remove it "
            "(and the matching reference line) before evaluating (a long-form system reads a "
            "line as a whole talk: join the paragraphs of a talk into one line)"
        )
    if target:
        references = read_simuleval_lines(target)
        if len(references) != len(lines):
            raise ValueError(
                f"{source} has {len(lines)} lines but {target} has {len(references)}: "
                "each source sentence needs its reference on the same line"
            )
        check_references(target, references, latency_unit)
    return len(lines)


def check_references(target: str, references: list[str], latency_unit: str) -> None:
    """An empty reference (SimulEval scored it AP 1.93, AL -6.6), and, counted in words,
    one with a tab or spaces doubled or at either end: SimulEval counts a reference's
    words between single spaces (tabs gave AL -32)."""
    empty = [number for number, line in enumerate(references, 1) if is_blank(line)]
    if empty:
        raise ValueError(
            f"{target}: {numbered(empty)}: empty reference sentence; remove it (and the "
            "matching source line) before evaluating"
        )
    if latency_unit != "word":
        return
    spaced = [
        number for number, line in enumerate(references, 1) if MISSPACED.search(line) is not None
    ]
    if spaced:
        raise ValueError(
            f"{target}: {numbered(spaced)}: a tab, or spaces doubled or at either end; "
            "SimulEval counts a reference's words between single spaces (the latency scores "
            "would count them wrong): fold them, e.g. sed -E 's/[[:blank:]]+/ /g; s/^ | $//g'"
        )


LONGEST_UNIT = 8  # kana and CJK characters: Llama-3's longest token of them has 7
CJK_CHARACTERS = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def check_units_split(source: str | None, language: str) -> None:
    """Refuse a Chinese or Japanese source file of raw text: its units are the checkpoint's
    token groups, written space-separated (`east_agent.decoding.units`); a raw sentence
    would be read as one unit, its latency meaningless."""
    from east_agent.decoding.prompt import is_unspaced
    from east_agent.decoding.units import SPACE_MARK

    if not source or not is_unspaced(language):
        return
    for number, line in enumerate(read_simuleval_lines(source), 1):
        unit = next((unit for unit in line.split() if _is_unsplit(unit, SPACE_MARK)), None)
        if unit is not None:
            raise ValueError(
                f"{source}: line {number}: {unit[:20]!r} is one unit of {len(unit)} "
                f"characters; a {language} source is read in the checkpoint's token groups, "
                "space-separated; split it with east_agent.decoding.units.source_units (as "
                "east-prepare does)"
            )


def _is_unsplit(unit: str, space_mark: str) -> bool:
    """More kana and CJK characters than one token group holds (a Latin word may be long)."""
    return len(CJK_CHARACTERS.findall(unit.removeprefix(space_mark))) > LONGEST_UNIT


def check_control_tokens(source: str | None, tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse a source file a line of which holds one of the checkpoint's control tokens
    (`<|eot_id|>`, `<|end-of-read|>`): the tokenizer would make the token of its text. The
    whole file, as the other checks of its lines (whatever --start-index/--end-index)."""
    from east_agent.decoding.units import (
        control_token_in,
        control_token_problem,
        control_tokens,
        token_pattern,
    )

    if not source:
        return
    pattern = token_pattern(control_tokens(tokenizer))
    for number, line in enumerate(read_simuleval_lines(source), 1):
        token = control_token_in(line, pattern)
        if token is not None:
            raise ValueError(f"{source}: line {number}: {control_token_problem(token)}")


def check_sentences_fit(
    source: str,
    indices: tuple[int, int],
    tokenizer: PreTrainedTokenizerBase,
    language: str,
    fixed_tokens: int,
    max_context: int,
) -> None:
    """Refuse a --max-context that no sentence the run translates (`indices`: --start-index,
    --end-index) fits in: the decoder holds at least the `fixed_tokens` of its prompt and
    a sentence's source read whole, its fewest tokens (before: each sentence failed once
    the weights had loaded). Where some fit, the run goes on: the others fail alone and
    are named, as any sentence too long for the context."""
    lines = read_simuleval_lines(source)
    span = sentence_span(*indices, len(lines))
    if not span:
        return
    sources = source_tokens(lines[span.start : span.stop], tokenizer, language)
    fewest = min(range(len(sources)), key=sources.__getitem__)
    need = fixed_tokens + sources[fewest]
    if need <= max_context:
        return
    raise ValueError(
        f"{source}: none of the {counted(len(sources), 'sentence')} to translate fits in "
        f"--max-context {max_context}: the shortest, line {span.start + fewest + 1}, needs "
        f"at least {need} tokens ({fixed_tokens} of the prompt, {sources[fewest]} of its "
        "source) and room for its translation; raise --max-context, or leave it out (the "
        "model's positions)"
    )


def source_tokens(lines: list[str], tokenizer: PreTrainedTokenizerBase, language: str) -> list[int]:
    """How many tokens each source line's units make, read whole as the decoder feeds
    them. A stream that writes between its units holds them in more runs: the same ids
    where the tokenizer splits words apart before merging (Llama-3's, sentencepiece's;
    tested on the demo model's)."""
    from east_agent.decoding.units import join_source_units

    texts = [join_source_units(line.split(), language) for line in lines]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids]


TEXT_DATALOADER = "text-to-text"  # SimulEval's reader of text files, a sentence a line


def check_dataloader_flags(argv: list[str]) -> None:
    """`--user-dir`, `--dataloader-class` and `--dataloader` as SimulEval will take them,
    refused in one line before anything loads (before: SimulEval's `AssertionError` or
    `ModuleNotFoundError` traceback once the model had loaded and the output folder's
    log was emptied). The user's folder and class are imported here, as SimulEval would:
    a dataloader they register is known."""
    import importlib

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in ("--user-dir", "--dataloader", "--dataloader-class"):
        parser.add_argument(flag)
    known, _ = parser.parse_known_args(argv)
    if known.user_dir is not None:
        _import_user_dir(known.user_dir)
    if known.dataloader_class and known.dataloader is None:  # SimulEval would ignore it
        raise ValueError(
            f"--dataloader-class {known.dataloader_class} without --dataloader: name it "
            "(--dataloader NAME), as SimulEval registers the class under that name"
        )
    if known.dataloader_class:
        module_name, _, class_name = known.dataloader_class.rpartition(".")
        if not module_name:
            raise ValueError(
                f"--dataloader-class {known.dataloader_class}: a dotted path, module.Class"
            )
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # the user's module: any error of its own
            raise ValueError(
                f"--dataloader-class {known.dataloader_class}: module {module_name} does not "
                f"import ({type(error).__name__}: {error})"
            ) from None
        if not isinstance(getattr(module, class_name, None), type):
            raise ValueError(
                f"--dataloader-class {known.dataloader_class}: {module_name} has no class "
                f"{class_name}"
            )
        return  # registered by SimulEval under --dataloader's name, whatever it is
    if known.dataloader is not None:
        from simuleval.data.dataloader import DATALOADER_DICT

        if known.dataloader not in DATALOADER_DICT:
            raise ValueError(
                f"--dataloader {known.dataloader}: no such dataloader (SimulEval's: "
                f"{', '.join(sorted(DATALOADER_DICT))}; yours are registered by a "
                "--user-dir folder, or named with --dataloader-class module.Class)"
            )


def _import_user_dir(user_dir: str) -> None:
    """A `--user-dir` imported as SimulEval imports it (a package by its folder's name)."""
    from simuleval.options import import_user_module

    if not Path(user_dir).is_dir():
        raise ValueError(f"--user-dir {user_dir}: no such folder (a package of your agents)")
    try:
        import_user_module(user_dir)
    except Exception as error:  # the user's code: any error of its own
        raise ValueError(
            f"--user-dir {user_dir} does not import ({type(error).__name__}: {error})"
        ) from None


def check_data_files(argv: list[str]) -> tuple[int, int] | None:
    """The source and reference files, checked before SimulEval builds the agent; the span
    of sentences the run covers (None without a source file)."""
    return check_data_file_flags(_data_file_flags(argv))


def check_data_file_flags(known: argparse.Namespace) -> tuple[int, int] | None:
    """`check_data_files` of flags already read (SimulEval's parser's too)."""
    if not reads_text_files(known):
        return None  # not text files of lines: the dataloader's own business
    span = checked_span(
        known.source, known.target, known.start_index, known.end_index, known.eval_latency_unit
    )
    check_references_given(known.source, known.target, known.no_scoring)
    return None if span is None else (span.start, span.stop)


def _data_file_flags(argv: list[str]) -> argparse.Namespace:
    """SimulEval's flags of a command line that name and read its data files."""
    parser = argparse.ArgumentParser(prog="east-simuleval", add_help=False, allow_abbrev=False)
    parser.add_argument("--source")
    parser.add_argument("--target")
    parser.add_argument("--start-index", type=int, default=0)
    parser.add_argument("--end-index", type=int, default=-1)
    parser.add_argument("--dataloader", default=TEXT_DATALOADER)
    parser.add_argument("--dataloader-class")
    parser.add_argument("--no-scoring", action="store_true")
    parser.add_argument("--eval-latency-unit", default="word")
    return parser.parse_known_args(argv)[0]


def reads_text_files(known: argparse.Namespace) -> bool:
    """Whether a run's dataloader reads text files of lines (SimulEval's parser gives no
    --dataloader as None: the text one, for text agents)."""
    return known.dataloader in (None, TEXT_DATALOADER) and not known.dataloader_class


def check_references_given(source: str | None, target: str | None, no_scoring: bool) -> None:
    """A scored run needs its references: without --target SimulEval scores BLEU 0 and
    the latency against the translations' own lengths, exit 0, saying so only in its log."""
    if source is not None and target is None and not no_scoring:
        raise ValueError(
            "--target: no reference file; the scores need one (without it, BLEU would be "
            "0 and the latency measured against the translations): give --target, or "
            "--no-scoring to translate only"
        )


def checked_span(
    source: str | None,
    target: str | None,
    start_index: int,
    end_index: int,
    latency_unit: str = "word",
) -> range | None:
    """The source and reference files checked (`check_source_file`), and the sentences
    `--start-index` .. `--end-index` of the source, checked against its lines (None without
    a source file)."""
    lines = check_source_file(source, target, latency_unit)
    if lines is None:
        return None
    assert source is not None  # a line count comes only with a source file
    check_indices(start_index, end_index, lines, source)
    span = sentence_span(start_index, end_index, lines)
    if not span:  # a grid's shard past a short test set's end; by hand, a slip said so
        print(
            f"note: --start-index {start_index} --end-index {end_index} holds no sentence of "
            f"{source} ({lines} lines): the log stays empty, its scores NaN",
            file=sys.stderr,
            flush=True,
        )
    return span


def check_indices(start_index: int, end_index: int, lines: int, source: str) -> None:
    """`--start-index` and `--end-index` (below 0: to the end) within the source file's
    lines: 0 <= start <= end <= lines (a negative start would count from the end; an empty
    span is a shard of a test set shorter than its shards)."""
    has = f"{source} has {lines} lines"
    if start_index < 0:
        raise ValueError(f"--start-index {start_index}: must be at least 0 ({has})")
    if end_index > lines:
        raise ValueError(f"--end-index {end_index}: must be at most {lines} ({has})")
    end = lines if end_index < 0 else end_index
    if start_index > end:
        bound = "--end-index" if end_index >= 0 else "the number of lines"
        raise ValueError(f"--start-index {start_index}: must be at most {bound} {end} ({has})")


def sentence_span(start_index: int, end_index: int, sentences: int) -> range:
    """The sentences `--start-index` .. `--end-index` (below 0: to the end) of a test set
    of `sentences`."""
    return range(start_index, sentences if end_index < 0 else min(end_index, sentences))
