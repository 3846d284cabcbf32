"""SFT data: SiMT chunk records and offline MT records as tokenized chat samples.

Record formats (a JSON list or JSON Lines file, `.gz` read through):
- SiMT (as released with the paper, SiMT-De-En-660K / SiMT-Multi-90K):
  `{"src_lang", "tgt_lang", "latency", "source_chunks": [...], "target_chunks": [...]}`
- offline MT: `{"src_lang", "tgt_lang", "source", "target"}`, or alpaca style
  `{"instruction", "input", "output"}`.

A SiMT record becomes one user turn (the EAST instruction) and one assistant turn
`sep(i) + source_i + <|end-of-read|> + sep(i) + target_i + <|end-of-write|>` over its chunk
pairs, `sep(i)` being one space for i > 0 and nothing for i = 0; on a Chinese/Japanese
side, only the space the record keeps at that boundary (before a Latin word). The paper's
released preprocessing never advances its chunk index and so writes no spaces at all, while
its inference inserts them; we follow the inference side, which is what the decoder feeds.
Labels are -100 on the prompt (user turn and assistant header) and carry loss on the whole
assistant turn: chunks, both EAST tokens and the end-of-turn token.
An optional system turn (`data.system_prompt`) goes before the user turn, loss-free.

JSON Lines end at `\n` (or `\r\n`) only, never at a lone `\r` (JSON whitespace) or
U+2028 / U+0085 (which JSON strings may hold unescaped). A line that is not UTF-8, not JSON
or not an object, like a record with a bad field, stops the run naming file and line
(`record N` in a JSON list file), or with `skip_malformed` is skipped and counted; a JSON
list file is one JSON value, so an encoding or syntax error in it always stops the run.
Fields a record adds (an `id`, a score) are ignored, unless the record lacks a field of its
kind that one of them resembles (`Target`, `target_chunk`, `inptu`): a misspelling, named.
A record whose text holds a lone surrogate (a JSON `\\ud83d` escape without its pair,
which no UTF-8 text holds) is malformed the same way, and so is one whose text holds a
control token: an EAST token, found when it is read; or a special token of the tokenizer
(a chat header, an end of turn), which the tokenizer would make that token, found once it
is known, before anything is tokenized.

Every record is read and checked before anything is tokenized (bad input fails fast). The
tokenization is one `datasets` `Dataset.map`; given a `cache_dir`, its result is cached
there under a fingerprint of the conversations, the tokenizer, the chat template, the
settings and this module's source, so a second run (another rank, a resumed or repeated
run) loads the samples instead of tokenizing them again. The map also keeps each sample's
prompt and full length, and the report's sample, truncation and drop counts are computed
from those columns: the same numbers whether the samples were tokenized or loaded.
"""

from __future__ import annotations

import codecs
import difflib
import hashlib
import io
import itertools
import json
import logging
import os
import random
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from east_agent.common.records import RecordError, invalid_json
from east_agent.common.text_lines import bad_byte, not_utf8, open_binary
from east_agent.decoding import units
from east_agent.decoding.prompt import (
    END_OF_READ,
    END_OF_WRITE,
    LATENCY_LEVELS,
    is_unspaced,
    language_name,
    offline_instruction,
    simt_instruction,
)
from east_agent.lm.checkpoint import end_of_turn_ids

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
SIMT_FIELDS = ("src_lang", "tgt_lang", "latency", "source_chunks", "target_chunks")
OFFLINE_FIELDS = ("source", "target", "instruction", "input", "output")
MAX_SKIPPED_EXAMPLES = 5  # skipped records named in the report and the log
SAMPLE_COLUMNS = ("input_ids", "labels")
LENGTH_COLUMNS = ("prompt_tokens", "tokens")  # before truncation; what the report counts


@dataclass(frozen=True)
class Conversation:
    user: str
    assistant: str
    file: str = ""  # where its record was read, if it was: the file
    place: str = ""  # and "line 7" or "record 3" in it
    src_lang: str = ""  # a SiMT record's source language (its chunks are in `assistant`)


@dataclass(frozen=True)
class RawRecord:
    place: str  # "record 3" in a JSON list file, "line 7" in a JSON Lines file
    record: dict | None
    problem: str | None = None  # why the line is unreadable (then record is None)


def interleave_chunks(
    source_chunks: Sequence[str], target_chunks: Sequence[str], src_lang: str, tgt_lang: str
) -> str:
    """The EAST assistant turn for one chunked sentence pair. A source chunk is written as
    the decoder feeds its units: one space between two words (`Das  kostet` as `Das
    kostet`). On a Chinese or Japanese side a space goes before a chunk only where the
    record keeps one at that boundary: a Latin word that followed a space, which the decoder
    feeds with that space (`units.SPACE_MARK`) and the model writes with it (before, a
    target chunk's was dropped: `我买了 iPhone` was learned as `我买了iPhone`)."""
    turn, previous_source, previous_target = "", "", ""
    for index, (source, target) in enumerate(zip(source_chunks, target_chunks, strict=True)):
        source_gap = _chunk_gap(previous_source, source, src_lang) if index else ""
        target_gap = _chunk_gap(previous_target, target, tgt_lang) if index else ""
        words = " ".join(source.split())
        turn += f"{source_gap}{words}{END_OF_READ}{target_gap}{target.strip()}{END_OF_WRITE}"
        previous_source, previous_target = source, target
    return turn


def _chunk_gap(previous: str, chunk: str, language: str) -> str:
    """What goes between two chunks of one side: a space, or on an unspaced side the space
    the record keeps at that boundary, if any."""
    if not is_unspaced(language):
        return " "
    return " " if previous[-1:].isspace() or chunk[:1].isspace() else ""


EAST_TOKENS = units.token_pattern((END_OF_READ, END_OF_WRITE))
SURROGATES = re.compile("[\ud800-\udfff]")
JSON_TYPES = {
    bool: "boolean",
    int: "number",
    float: "number",
    str: "string",
    dict: "object",
    list: "array",
}


def lone_surrogate(text: str) -> str | None:
    """What is wrong with `text` if it holds a lone surrogate, or None. JSON's `\\ud83d`
    escape without its pair decodes to one: no UTF-8 text holds it, and it would fail the
    tokenizing (before: inside pyarrow, once the model had loaded, naming no record)."""
    if found := SURROGATES.search(text):
        return (
            f"holds a lone surrogate {found.group()!r} at character {found.start()} (a \\u "
            "escape of half a character, without its other half): not text"
        )
    return None


def _json_type(value: object) -> str:
    return "null" if value is None else JSON_TYPES.get(type(value), type(value).__name__)


def _misspelling_of(name: str, record: dict) -> str | None:
    """A field of `record` this reader does not know, spelled close to `name`, or None."""
    unknown = [key for key in record if key not in SIMT_FIELDS + OFFLINE_FIELDS]
    close = difflib.get_close_matches(name, unknown, n=1, cutoff=0.8)
    return close[0] if close else None


def _missing(name: str, record: dict) -> str:
    """The problem of a record without field `name`, naming a field that may misspell it."""
    misspelled = _misspelling_of(name, record)
    hint = f" (the record has {misspelled!r}: a misspelling?)" if misspelled else ""
    return f"missing field {name!r}{hint}"


def _check_simt(record: dict) -> str | None:
    """What is wrong with a SiMT record, or None."""
    for name in SIMT_FIELDS:
        if name not in record:
            return _missing(name, record)
    for name in ("src_lang", "tgt_lang"):
        if not isinstance(record[name], str):  # before: null was "unknown language 'None'"
            return f"field {name!r} must be a language, as a string (got {record[name]!r})"
        try:
            language_name(record[name])
        except ValueError as error:
            return f"field {name!r}: {error}"
    if record["latency"] not in LATENCY_LEVELS:
        return f"field 'latency': unknown latency {record['latency']!r} (one of {LATENCY_LEVELS})"
    sources, targets = record["source_chunks"], record["target_chunks"]
    for name, chunks in (("source_chunks", sources), ("target_chunks", targets)):
        if not isinstance(chunks, list) or not chunks:
            return f"field {name!r} must be a non-empty list"
        for position, chunk in enumerate(chunks):
            if not isinstance(chunk, str):  # before: `true` or `3` said "chunk 1 is empty"
                return f"field {name!r}: chunk {position} is not text (a JSON {_json_type(chunk)})"
            if not chunk.strip():
                return f"field {name!r}: chunk {position} is empty"
    if len(sources) != len(targets):
        return f"{len(sources)} source chunks but {len(targets)} target chunks"
    return None


def _check_offline(record: dict) -> str | None:
    fields: tuple[str, ...]
    if "instruction" in record:
        fields = ("instruction", "output")
    else:
        fields = ("src_lang", "tgt_lang", "source", "target")
    for name in fields:
        if name not in record:
            return _missing(name, record)
        if not isinstance(record[name], str) or not record[name].strip():
            return f"field {name!r} must be a non-empty string"
    if "instruction" in record and not isinstance(record.get("input") or "", str):
        return "field 'input' must be a string"
    if "instruction" in record and "input" not in record:
        # the one optional field: misspelled, its text would be left out of training unseen
        if misspelled := _misspelling_of("input", record):
            return (
                f"field {misspelled!r} is not one this reader knows, and the record has no "
                "'input': a misspelling? (its text would be left out)"
            )
    if "instruction" not in record:
        for name in ("src_lang", "tgt_lang"):
            try:
                language_name(record[name])
            except ValueError as error:
                return f"field {name!r}: {error}"
    return None


def _texts(record: dict) -> Iterator[tuple[str, str]]:
    """(where, text) of every text a valid record puts into its conversation."""
    if record_kind(record) == "simt":
        for name in ("source_chunks", "target_chunks"):
            for position, chunk in enumerate(record[name]):
                yield f"field {name!r}: chunk {position}", chunk
        return
    names = ("instruction", "input", "output") if "instruction" in record else ("source", "target")
    for name in names:
        if record.get(name):
            yield f"field {name!r}", record[name]


def _first_text_problem(record: dict, problem_of: Callable[[str], str | None]) -> str | None:
    """What `problem_of` finds wrong with the first of a valid record's texts it faults,
    named with its field; or None."""
    for where, text in _texts(record):
        if problem := problem_of(text):
            return f"{where} {problem}"
    return None


def _unencodable(record: dict) -> str | None:
    """Which text of a valid record holds a lone surrogate, or None."""
    return _first_text_problem(record, lone_surrogate)


def _control_token(record: dict, tokens: re.Pattern | None) -> str | None:
    """Which of `tokens` (`units.token_pattern`'s, None for none) a valid record's text
    holds, or None: the tokenizer would make it that token (an EAST token inside a chunk, a
    chat header inside a turn), not text."""

    def holds(text: str) -> str | None:
        found = units.control_token_in(text, tokens)
        if found is None:
            return None
        return f"holds {found!r}, a control token: it would be trained as that token, not as text"

    return _first_text_problem(record, holds)


def record_kind(record: dict) -> str:
    if "source_chunks" in record or "target_chunks" in record or "latency" in record:
        return "simt"
    return "offline"


def conversation(record: dict, file: str = "", place: str = "") -> Conversation:
    """The chat turns of a (valid) record, read at `place` in `file`."""
    src_lang = record["src_lang"] if record_kind(record) == "simt" else ""
    return Conversation(*_turns(record), file, place, src_lang)


def _turns(record: dict) -> tuple[str, str]:
    if record_kind(record) == "simt":
        return (
            simt_instruction(record["src_lang"], record["tgt_lang"], record["latency"]),
            interleave_chunks(
                record["source_chunks"],
                record["target_chunks"],
                record["src_lang"],
                record["tgt_lang"],
            ),
        )
    if "instruction" in record:
        extra = record.get("input") or ""
        user = record["instruction"] + (f"\n{extra}" if extra.strip() else "")
        return user, record["output"]
    return (
        offline_instruction(record["src_lang"], record["tgt_lang"], record["source"]),
        record["target"],
    )


CUT_INSIDE_UNITS = (
    "{} Chinese/Japanese SiMT records end a source chunk inside a unit the decoder reads "
    "whole (a token across the boundary, `，但是`): trained as written, though the decoder "
    "cannot stop there"
)


@dataclass
class DataReport:
    """What happened to the records on their way to samples; logged, never silent."""

    records: int = 0
    samples: int = 0
    malformed_skipped: int = 0
    unreadable_skipped: int = 0
    truncated: int = 0
    dropped_prompt_too_long: int = 0
    beyond_max_samples: int = 0  # read, and left out by data.max_samples
    cut_inside_units: int = 0  # zh/ja SiMT records with a source chunk ending inside a unit
    by_file: dict[str, int] = field(default_factory=dict)
    skipped_examples: list[str] = field(default_factory=list)
    cache_file: str | None = None  # the tokenized samples' cache, when there is one
    cache_reused: bool = False  # loaded from it rather than tokenized
    skip_malformed: bool = False  # how the records were read: a record found bad later too

    def skip(self, where: str, problem: str, unreadable: bool) -> None:
        if unreadable:
            self.unreadable_skipped += 1
        else:
            self.malformed_skipped += 1
        if len(self.skipped_examples) < MAX_SKIPPED_EXAMPLES:
            self.skipped_examples.append(f"{where}: {problem}")
            logger.warning("skipped %s: %s", where, problem)

    def count_lengths(
        self, prompt_tokens: Sequence[int], tokens: Sequence[int], cutoff_len: int
    ) -> None:
        """Count tokenized samples by their prompt and full lengths (before truncation)."""
        for prompt, total in zip(prompt_tokens, tokens):
            if prompt >= cutoff_len:
                self.dropped_prompt_too_long += 1
            else:
                self.samples += 1
                self.truncated += total > cutoff_len

    def lines(self) -> list[str]:
        cache = []
        if self.cache_file is not None:
            verb = "loaded from" if self.cache_reused else "tokenized and cached in"
            cache = [f"samples {verb} {self.cache_file}"]
        return [
            f"{self.records} records read from {len(self.by_file)} "
            f"file{'' if len(self.by_file) == 1 else 's'}",
            *(
                [f"{self.beyond_max_samples} records left out by data.max_samples"]
                if self.beyond_max_samples
                else []
            ),
            f"{self.samples} training samples",
            f"{self.malformed_skipped} malformed records skipped",
            f"{self.unreadable_skipped} unreadable lines skipped (not UTF-8, not JSON or not "
            "a JSON object)",
            f"{self.truncated} samples truncated to the cut-off",
            f"{self.dropped_prompt_too_long} samples dropped: prompt alone exceeds the cut-off",
            *([CUT_INSIDE_UNITS.format(self.cut_inside_units)] if self.cut_inside_units else []),
            *cache,
            *(f"skipped: {example}" for example in self.skipped_examples),
        ]


def _parse_line(line: bytes) -> tuple[dict | None, str | None]:
    """(record, None) or (None, what is wrong with the line)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, not_utf8(line, error.start)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return None, invalid_json(error)
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {_json_type(value)}"
    return value, None


def _json_list(data: bytes, path: Path) -> Iterator[RawRecord]:
    """The records of a JSON list file; it is one JSON value, so no error in it is skippable."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        number, problem = bad_byte(data, error.start)
        raise RecordError(
            f"{path}: line {number}: {problem}; a JSON list file is read whole, so this "
            "cannot be skipped"
        ) from None
    try:
        records = json.loads(text)
    except json.JSONDecodeError as error:
        raise RecordError(
            f"{path}: line {error.lineno}: {invalid_json(error)}; "
            "a JSON list file is read whole, so this cannot be skipped"
        ) from None
    for index, value in enumerate(records, 1):  # counted from 1, as lines are
        if isinstance(value, dict):
            yield RawRecord(f"record {index}", value)
        else:
            problem = f"expected a JSON object, got {_json_type(value)}"
            yield RawRecord(f"record {index}", None, problem)


def _records_in(handle: BinaryIO, path: Path) -> Iterator[RawRecord]:
    # Binary lines end at b"\n" only: text mode would also split on a lone "\r", and
    # str.splitlines on U+2028 or U+0085, which may stand unescaped inside JSON strings.
    head: list[bytes] = []
    for line in handle:
        head.append(line if head else line.removeprefix(codecs.BOM_UTF8))
        if head[-1].strip():
            break
    if b"".join(head).lstrip().startswith(b"["):
        yield from _json_list(b"".join(head) + handle.read(), path)
        return
    lines: Iterable[bytes] = handle
    if head and not _is_json(head[-1]):  # read whole: one value over several lines?
        rest = handle.read()
        check_not_one_value(b"".join(head) + rest, path)
        lines = io.BytesIO(rest)  # JSON Lines after all (split at b"\n" only, as above)
    for number, line in enumerate(itertools.chain(head, lines), 1):
        if b"\0" in line:  # a file in another encoding: never a record to skip
            raise RecordError(
                f"{path}: line {number}: a NUL byte at column {line.index(0) + 1}; a UTF-16 "
                "file? save it as UTF-8"
            )  # before: "invalid JSON", and with skip_malformed the whole file skipped
        if line.strip():
            record, problem = _parse_line(line)
            yield RawRecord(f"line {number}", record, problem)


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True


def check_not_one_value(data: bytes, path: Path) -> None:
    """Refuse a file that is one JSON value over several lines (a pretty-printed object,
    `{"data": [...]}`): before, its first line was named as invalid JSON, as if the file
    were JSON Lines with a bad record."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return  # JSON Lines with a bad first line: named as such
    raise RecordError(
        f"{path}: one JSON {_json_type(value)} over several lines; records are a JSON list "
        "(`[{...}, {...}]`) or JSON Lines (one object per line)"
    )


def iter_records(path: str | Path) -> Iterator[RawRecord]:
    """Every record of a JSON list or JSON Lines file (`.gz` read through), with its place;
    a file that cannot be read on is named with the place of the last record read (before:
    the file alone, for a `.gz` cut short)."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    read_to = None  # the place of the last record read
    try:
        with open_binary(path) as handle:
            for raw in _records_in(handle, path):
                read_to = raw.place
                yield raw
    except (OSError, EOFError, zlib.error) as error:
        after = f" after {read_to}" if read_to else ""
        raise RecordError(f"{path}: cannot read{after}: {error}") from None


def _problem(record: dict) -> str | None:
    check = _check_simt if record_kind(record) == "simt" else _check_offline
    return check(record) or _unencodable(record) or _control_token(record, EAST_TOKENS)


def read_conversations(
    paths: Sequence[str | Path], report: DataReport, skip_malformed: bool = False
) -> Iterator[Conversation]:
    """Conversations of every record; a malformed one raises naming file and line or index,
    or with `skip_malformed` is skipped and counted in the report."""
    for path in paths:
        file = str(path)
        report.by_file[file] = 0
        for raw in iter_records(path):
            record = raw.record
            if record is not None:  # an unreadable line is counted as such, not as a record
                report.records += 1
                report.by_file[file] += 1
            problem = raw.problem if record is None else _problem(record)
            if problem is None:
                assert record is not None  # an unreadable line comes with its problem
                yield conversation(record, file, raw.place)
            elif skip_malformed:
                report.skip(f"{path}: {raw.place}", problem, unreadable=raw.record is None)
            else:
                raise RecordError(f"{path}: {raw.place}: {problem}")


class ChatTokenizer:
    """Turns conversations into (input_ids, labels) with the model's own chat template.

    `system_prompt`, when given, is rendered as a system turn before every user turn (and
    carries no loss). A template that renders the generation prompt whatever
    `add_generation_prompt` says (some Llama-3 checkpoints' do) would put an assistant header
    after the assistant turn; the training text ends at the turn's last end-of-turn token.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        cutoff_len: int = 1024,
        system_prompt: str | None = None,
        generation_eos: int | list[int] | None = None,
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.cutoff_len = cutoff_len
        self.system_prompt = system_prompt
        ids = end_of_turn_ids(tokenizer, generation_eos)
        self.end_of_turn = tuple(dict.fromkeys(tokenizer.convert_ids_to_tokens(list(ids))))
        self.always_prompts = self._generation_prompt_unguarded()

    def _messages(self, user: str) -> list[dict]:
        messages = [{"role": "user", "content": user}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def _apply(self, messages: list[dict], add_generation_prompt: bool) -> str:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return cast(str, text)  # tokenize=False: the rendered text

    def _generation_prompt_unguarded(self) -> bool:
        """Whether the template renders the same with and without add_generation_prompt."""
        messages = self._messages("probe")
        try:
            return self._apply(messages, False) == self._apply(messages, True)
        except Exception as error:  # jinja's own, or what the template raises itself
            if self.system_prompt is None:
                raise
            raise ValueError(
                f"data.system_prompt: the chat template fails with a system turn: {error}"
            ) from error

    def _end_of_last_turn(self, full: str, start: int) -> str:
        """`full` cut after its last end-of-turn token at or after `start`."""
        ends = [
            index + len(token)
            for token in self.end_of_turn
            if (index := full.rfind(token, start)) >= 0
        ]
        return full[: max(ends)] if ends else full

    def render(self, item: Conversation) -> tuple[str, str]:
        """(prompt text, full text): the prompt ends where the assistant's loss begins."""
        messages = self._messages(item.user)
        prompt = self._apply(messages, True)
        assistant = {"role": "assistant", "content": item.assistant}
        full = self._apply([*messages, assistant], False)
        if not full.startswith(prompt):
            raise ValueError(
                "the chat template renders the user turn differently with and without an "
                "assistant turn; cannot tell the prompt from the answer"
            )
        if self.always_prompts:
            full = self._end_of_last_turn(full, len(prompt))
        return prompt, full

    def _sample(self, prompt_ids: list[int], input_ids: list[int]) -> dict:
        """input_ids and labels cut at the cut-off (none when the prompt alone reaches it),
        and the lengths before the cut."""
        if input_ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError("the prompt tokenizes differently inside the full conversation")
        lengths = {"prompt_tokens": len(prompt_ids), "tokens": len(input_ids)}
        if len(prompt_ids) >= self.cutoff_len:
            return {"input_ids": [], "labels": [], **lengths}
        input_ids = input_ids[: self.cutoff_len]
        labels = [IGNORE_INDEX] * len(prompt_ids) + input_ids[len(prompt_ids) :]
        return {"input_ids": input_ids, "labels": labels, **lengths}

    def tokenize(self, batch: dict[str, list[str]]) -> dict[str, list]:
        """The `Dataset.map` function: columns `user` and `assistant` to the sample and
        length columns."""
        texts = [
            self.render(Conversation(*turns)) for turns in zip(batch["user"], batch["assistant"])
        ]
        prompts = self.tokenizer([prompt for prompt, _ in texts], add_special_tokens=False)
        fulls = self.tokenizer([full for _, full in texts], add_special_tokens=False)
        samples = [
            self._sample(prompt_ids, input_ids)
            for prompt_ids, input_ids in zip(prompts["input_ids"], fulls["input_ids"])
        ]
        return {
            name: [sample[name] for sample in samples] for name in SAMPLE_COLUMNS + LENGTH_COLUMNS
        }

    def encode(self, item: Conversation, report: DataReport) -> dict | None:
        """One sample (None when its prompt alone reaches the cut-off), counted in `report`."""
        columns = self.tokenize({"user": [item.user], "assistant": [item.assistant]})
        report.count_lengths(columns["prompt_tokens"], columns["tokens"], self.cutoff_len)
        if columns["prompt_tokens"][0] >= self.cutoff_len:
            return None
        return {name: columns[name][0] for name in SAMPLE_COLUMNS}

    def fingerprint_parts(self) -> list[str]:
        """Everything besides the conversations that decides the samples."""
        import tokenizers
        import transformers

        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            vocabulary = backend.to_str()
        else:
            from datasets.fingerprint import Hasher

            vocabulary = Hasher.hash(self.tokenizer)
        settings = [self.cutoff_len, self.system_prompt, self.end_of_turn, self.always_prompts]
        return [
            transformers.__version__,
            tokenizers.__version__,
            vocabulary,
            str(self.tokenizer.chat_template),
            json.dumps(settings),
        ]


def fingerprint(encoder: ChatTokenizer, conversations: Sequence[Conversation]) -> str:
    """The cache key of the tokenized `conversations`. This module's source is part of it: a
    change to how samples are made must not be served from an older cache."""
    digest = hashlib.blake2b(digest_size=16)
    for part in [Path(__file__).read_text(encoding="utf-8"), *encoder.fingerprint_parts()]:
        digest.update(json.dumps(part).encode() + b"\n")
    for item in conversations:
        digest.update(json.dumps([item.user, item.assistant]).encode() + b"\n")
    return digest.hexdigest()


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def tokenize_conversations(
    encoder: ChatTokenizer,
    conversations: Sequence[Conversation],
    report: DataReport,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Dataset:
    """The samples of `conversations` as a `datasets.Dataset` (columns input_ids, labels),
    in order, those whose prompt alone reaches the cut-off left out; counted in `report`."""
    import pyarrow as pa
    from datasets import Dataset, Features, Sequence, Value

    ids = Sequence(Value("int32"))
    features = Features(
        {"input_ids": ids, "labels": ids, "prompt_tokens": Value("int32"), "tokens": Value("int32")}
    )
    if not conversations:
        empty = Dataset.from_dict({name: [] for name in features}, features=features)
        return empty.select_columns(list(SAMPLE_COLUMNS))
    source = Dataset.from_dict(
        {
            "user": [item.user for item in conversations],
            "assistant": [item.assistant for item in conversations],
        }
    )
    cache_file, key = None, None
    if cache_dir is not None:
        key = fingerprint(encoder, conversations)
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache_file = Path(cache_dir) / f"tokenized-{key}.arrow"
        report.cache_file, report.cache_reused = str(cache_file), cache_file.exists()
    tokenize = partial(
        source.map,
        encoder.tokenize,
        batched=True,
        remove_columns=source.column_names,
        features=features,
        cache_file_name=None if cache_file is None else str(cache_file),
        new_fingerprint=key,
        desc="tokenizing",
    )
    with _progress_bars(progress):
        try:
            tokenized = tokenize()
        except pa.ArrowException as error:
            if cache_file is None or not cache_file.exists():
                raise
            # a cache file damaged since it was written (datasets writes it whole, then
            # renames it): made again (before: the same arrow error, naming no file, at
            # every rerun)
            logger.warning("%s does not read (%s): tokenized again", cache_file, error)
            cache_file.unlink(missing_ok=True)  # another node's process may be first
            report.cache_reused = False
            tokenized = tokenize()
    prompt_tokens = list(tokenized["prompt_tokens"])
    report.count_lengths(prompt_tokens, list(tokenized["tokens"]), encoder.cutoff_len)
    if report.dropped_prompt_too_long:
        kept = [index for index, length in enumerate(prompt_tokens) if length < encoder.cutoff_len]
        tokenized = tokenized.select(kept)
    return tokenized.select_columns(list(SAMPLE_COLUMNS))


def build_samples(
    tokenizer: PreTrainedTokenizerBase,
    paths: Sequence[str | Path],
    cutoff_len: int = 1024,
    skip_malformed: bool = False,
    max_samples: int | None = None,
    seed: int = 42,
    progress: bool = True,
    system_prompt: str | None = None,
    generation_eos: int | list[int] | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[Dataset, DataReport]:
    """Tokenized, shuffled samples from every file (a `datasets.Dataset`: input_ids, labels)
    and the report of what happened. Every record is read and checked first; with
    `cache_dir` the tokenized samples are cached there and reused by a later call."""
    conversations, report = read_records(paths, skip_malformed, max_samples, seed)
    encoder = ChatTokenizer(tokenizer, cutoff_len, system_prompt, generation_eos)
    return tokenize_records(encoder, conversations, report, cache_dir, progress), report


def repeated_file(paths: Sequence[str | Path]) -> tuple[str, str] | None:
    """The first two of `paths` that name one file (the same path, spelled otherwise or
    through a link; relative to the working directory), as given; or None."""
    seen: dict[object, str] = {}
    for path in paths:
        key = _file_identity(Path(path))
        if key in seen:
            return seen[key], str(path)
        seen[key] = str(path)
    return None


def _file_identity(path: Path) -> object:
    try:
        status = os.stat(path)
    except OSError:  # not there (yet): its path, resolved
        return str(path.resolve())
    return status.st_dev, status.st_ino


def read_records(
    paths: Sequence[str | Path],
    skip_malformed: bool = False,
    max_samples: int | None = None,
    seed: int = 42,
) -> tuple[list[Conversation], DataReport]:
    """Every record of every file read and checked (no tokenizer needed: a bad record is
    found before any model loads), shuffled, cut to `max_samples`; and the report so far.
    A file listed twice is refused (before: its records were read twice, the report
    counting them once in `by_file`)."""
    if repeated := repeated_file(paths):
        raise RecordError(
            f"{repeated[0]} and {repeated[1]} are one file: its records would be read twice"
        )
    report = DataReport(skip_malformed=skip_malformed)
    conversations = list(read_conversations(paths, report, skip_malformed))
    random.Random(seed).shuffle(conversations)
    if max_samples is not None:  # the rest named in the report (before: not accounted for)
        report.beyond_max_samples = max(len(conversations) - max_samples, 0)
        conversations = conversations[:max_samples]
    return conversations, report


def tokenize_records(
    encoder: ChatTokenizer,
    conversations: Sequence[Conversation],
    report: DataReport,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Dataset:
    """The samples of `read_records`' conversations, counted in `report`, which is logged;
    a record whose text holds one of the tokenizer's control tokens raises or is skipped
    (`check_control_tokens`) before any is tokenized."""
    conversations = check_control_tokens(encoder.tokenizer, conversations, report)
    report.cut_inside_units = count_cut_inside_units(encoder.tokenizer, conversations)
    samples = tokenize_conversations(encoder, conversations, report, cache_dir, progress)
    for line in report.lines():
        logger.info(line)
    return samples


def count_cut_inside_units(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Conversation]
) -> int:
    """How many Chinese or Japanese SiMT conversations end a source chunk inside one of the
    tokens the decoder's units are made of (`units.token_group_units`: `，但是` is one
    token of Llama-3's): the decoder reads that unit whole, so the model never decides
    there. Counted for the report (a fast tokenizer's offsets; none without them)."""
    unspaced = [item for item in conversations if item.src_lang and is_unspaced(item.src_lang)]
    if not unspaced or not getattr(tokenizer, "is_fast", False):
        return 0
    assert EAST_TOKENS is not None  # two tokens
    chunks = [EAST_TOKENS.split(item.assistant)[0:-1:2] for item in unspaced]
    texts = ["".join(source) for source in chunks]
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    cut = 0
    for source, offsets in zip(chunks, encoded["offset_mapping"], strict=True):
        ends = set(itertools.accumulate(map(len, source[:-1])))
        cut += any(start < end < stop for start, stop in offsets for end in ends)
    return cut


def control_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The special tokens `tokenizer` makes of their text wherever it stands (its chat
    template's among them), but the EAST tokens: the reader refuses those in a record's
    text itself, and a SiMT turn holds them by design."""
    return sorted(units.control_tokens(tokenizer) - {END_OF_READ, END_OF_WRITE})


def check_control_tokens(
    tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Conversation], report: DataReport
) -> list[Conversation]:
    """`conversations` but those whose record's text holds one of the tokenizer's control
    tokens (`a dog<|eot_id|><|start_header_id|>user` would end the turn and open a user's):
    the first raises naming file, line and field, or, read with `skip_malformed`, each is
    skipped and counted in `report`. Needs the tokenizer; run it before tokenizing."""
    tokens = control_tokens(tokenizer)
    if not tokens:
        return list(conversations)
    pattern = units.token_pattern(tokens)
    assert pattern is not None  # tokens is not empty
    bad = [item for item in conversations if _turns_hold(item, pattern)]
    if not bad:
        return list(conversations)
    if not report.skip_malformed:
        item, problem = _named_problems(bad[:1], pattern)[0]
        raise RecordError(f"{item.file}: {item.place}: {problem}")
    for item, problem in _named_problems(bad, pattern):
        report.skip(f"{item.file}: {item.place}", problem, unreadable=False)
    refused = set(map(id, bad))
    return [item for item in conversations if id(item) not in refused]


def check_system_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str | None) -> None:
    """`data.system_prompt` holding one of the tokenizer's control tokens, refused."""
    found = units.control_token_in(prompt or "", units.token_pattern(control_tokens(tokenizer)))
    if found:
        raise ValueError(
            f"data.system_prompt holds {found!r}, a control token of the tokenizer: it "
            "would be trained as that token, not as text"
        )


def _turns_hold(item: Conversation, pattern: re.Pattern) -> re.Match | None:
    return pattern.search(item.user) or pattern.search(item.assistant)


def _named_problems(
    items: Sequence[Conversation], pattern: re.Pattern
) -> list[tuple[Conversation, str]]:
    """Each of `items` with what is wrong with its record, naming the field: their records
    read again (only those refused), as a conversation no longer knows its fields."""
    wanted = {(item.file, item.place) for item in items}
    records = {}
    for file in sorted({item.file for item in items if item.file}):
        for raw in iter_records(file):
            if (file, raw.place) in wanted and raw.record and not _problem(raw.record):
                records[file, raw.place] = raw.record
    named = []
    for item in items:
        record = records.get((item.file, item.place))
        problem = _control_token(record, pattern) if record is not None else None
        if problem is None:  # the file changed since, or the token spans two fields
            held = _turns_hold(item, pattern)
            assert held is not None  # items are conversations whose turns hold a token
            token = held.group()
            problem = f"its chat turns hold {token!r}, a control token"
        named.append((item, problem))
    return named
