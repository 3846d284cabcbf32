"""SFT data: SiMT chunk records and offline MT records as tokenized chat samples.

Record formats (a JSON list or JSON Lines file, `.gz` read through):
- SiMT (as released with the paper, SiMT-De-En-660K / SiMT-Multi-90K):
  `{"src_lang", "tgt_lang", "latency", "source_chunks": [...], "target_chunks": [...]}`
- offline MT: `{"src_lang", "tgt_lang", "source", "target"}`, or alpaca style
  `{"instruction", "input", "output"}`.

A SiMT record becomes one user turn (the EAST instruction) and one assistant turn
`sep(i) + source_i + <|end-of-read|> + sep(i) + target_i + <|end-of-write|>` over its chunk
pairs, `sep(i)` being one space for i > 0 and nothing for i = 0 or on a Chinese/Japanese
side. The paper's released preprocessing never advances its chunk index and so writes no
spaces at all, while its inference inserts them; we follow the inference side, which is
what the decoder feeds. Labels are -100 on the prompt (user turn and assistant header) and
carry loss on the whole assistant turn: chunks, both EAST tokens and the end-of-turn token.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from east_agent.prompt import (
    END_OF_READ,
    END_OF_WRITE,
    LATENCY_LEVELS,
    language_name,
    offline_instruction,
    simt_instruction,
    unit_separator,
)
from east_agent.records import RecordError, load_records

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
SIMT_FIELDS = ("src_lang", "tgt_lang", "latency", "source_chunks", "target_chunks")


@dataclass(frozen=True)
class Conversation:
    user: str
    assistant: str


def interleave_chunks(
    source_chunks: Sequence[str], target_chunks: Sequence[str], src_lang: str, tgt_lang: str
) -> str:
    """The EAST assistant turn for one chunked sentence pair."""
    source_separator, target_separator = unit_separator(src_lang), unit_separator(tgt_lang)
    turn = ""
    for index, (source, target) in enumerate(zip(source_chunks, target_chunks)):
        source_gap = source_separator if index else ""
        target_gap = target_separator if index else ""
        turn += (
            f"{source_gap}{source.strip()}{END_OF_READ}{target_gap}{target.strip()}{END_OF_WRITE}"
        )
    return turn


def _check_simt(record: dict) -> str | None:
    """What is wrong with a SiMT record, or None."""
    for name in SIMT_FIELDS:
        if name not in record:
            return f"missing field {name!r}"
    for name in ("src_lang", "tgt_lang"):
        try:
            language_name(str(record[name]))
        except ValueError as error:
            return f"field {name!r}: {error}"
    if record["latency"] not in LATENCY_LEVELS:
        return f"field 'latency': unknown latency {record['latency']!r} (one of {LATENCY_LEVELS})"
    sources, targets = record["source_chunks"], record["target_chunks"]
    for name, chunks in (("source_chunks", sources), ("target_chunks", targets)):
        if not isinstance(chunks, list) or not chunks:
            return f"field {name!r} must be a non-empty list"
        for position, chunk in enumerate(chunks):
            if not isinstance(chunk, str) or not chunk.strip():
                return f"field {name!r}: chunk {position} is empty"
    if len(sources) != len(targets):
        return f"{len(sources)} source chunks but {len(targets)} target chunks"
    return None


def _check_offline(record: dict) -> str | None:
    if "instruction" in record:
        fields = ("instruction", "output")
    else:
        fields = ("src_lang", "tgt_lang", "source", "target")
    for name in fields:
        if name not in record:
            return f"missing field {name!r}"
        if not isinstance(record[name], str) or not record[name].strip():
            return f"field {name!r} must be a non-empty string"
    if "instruction" not in record:
        for name in ("src_lang", "tgt_lang"):
            try:
                language_name(record[name])
            except ValueError as error:
                return f"field {name!r}: {error}"
    return None


def record_kind(record: dict) -> str:
    if "source_chunks" in record or "target_chunks" in record or "latency" in record:
        return "simt"
    return "offline"


def conversation(record: dict) -> Conversation:
    """The chat turns of a (valid) record."""
    if record_kind(record) == "simt":
        return Conversation(
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
        return Conversation(user, record["output"])
    return Conversation(
        offline_instruction(record["src_lang"], record["tgt_lang"], record["source"]),
        record["target"],
    )


@dataclass
class DataReport:
    """What happened to the records on their way to samples; logged, never silent."""

    records: int = 0
    samples: int = 0
    malformed_skipped: int = 0
    truncated: int = 0
    dropped_prompt_too_long: int = 0
    by_file: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [
            f"{self.records} records read from {len(self.by_file)} files",
            f"{self.samples} training samples",
            f"{self.malformed_skipped} malformed records skipped",
            f"{self.truncated} samples truncated to the cut-off",
            f"{self.dropped_prompt_too_long} samples dropped: prompt alone exceeds the cut-off",
        ]


def read_conversations(
    paths: Sequence[str | Path], report: DataReport, skip_malformed: bool = False
) -> Iterator[Conversation]:
    """Conversations of every record; a malformed one raises naming file and record index."""
    for path in paths:
        records = load_records(path)
        report.by_file[str(path)] = len(records)
        report.records += len(records)
        for index, record in enumerate(records):
            problem = (
                _check_simt(record) if record_kind(record) == "simt" else _check_offline(record)
            )
            if problem is not None:
                if skip_malformed:
                    report.malformed_skipped += 1
                    continue
                raise RecordError(f"{path}: record {index}: {problem}")
            yield conversation(record)


class ChatTokenizer:
    """Turns conversations into (input_ids, labels) with the model's own chat template."""

    def __init__(self, tokenizer, cutoff_len: int = 1024) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template")
        self.tokenizer = tokenizer
        self.cutoff_len = cutoff_len

    def render(self, item: Conversation) -> tuple[str, str]:
        """(prompt text, full text): the prompt ends where the assistant's loss begins."""
        user = [{"role": "user", "content": item.user}]
        prompt = self.tokenizer.apply_chat_template(
            user, tokenize=False, add_generation_prompt=True
        )
        full = self.tokenizer.apply_chat_template(
            [*user, {"role": "assistant", "content": item.assistant}], tokenize=False
        )
        if not full.startswith(prompt):
            raise ValueError(
                "the chat template renders the user turn differently with and without an "
                "assistant turn; cannot tell the prompt from the answer"
            )
        return prompt, full

    def encode(self, item: Conversation, report: DataReport) -> dict | None:
        prompt, full = self.render(item)
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        input_ids = self.tokenizer(full, add_special_tokens=False)["input_ids"]
        if input_ids[: len(prompt_ids)] != prompt_ids:
            raise ValueError("the prompt tokenizes differently inside the full conversation")
        if len(prompt_ids) >= self.cutoff_len:
            report.dropped_prompt_too_long += 1
            return None
        if len(input_ids) > self.cutoff_len:
            report.truncated += 1
            input_ids = input_ids[: self.cutoff_len]
        labels = [IGNORE_INDEX] * len(prompt_ids) + input_ids[len(prompt_ids) :]
        report.samples += 1
        return {"input_ids": input_ids, "labels": labels}


def build_samples(
    tokenizer,
    paths: Sequence[str | Path],
    cutoff_len: int = 1024,
    skip_malformed: bool = False,
    max_samples: int | None = None,
    seed: int = 42,
    progress: bool = True,
) -> tuple[list[dict], DataReport]:
    """Tokenized, shuffled samples from every file, and the report of what happened."""
    from tqdm import tqdm

    report = DataReport()
    encoder = ChatTokenizer(tokenizer, cutoff_len)
    conversations = list(read_conversations(paths, report, skip_malformed))
    random.Random(seed).shuffle(conversations)
    if max_samples is not None:
        conversations = conversations[:max_samples]
    samples = []
    for item in tqdm(conversations, desc="tokenizing", disable=not progress, unit="sample"):
        sample = encoder.encode(item, report)
        if sample is not None:
            samples.append(sample)
    for line in report.lines():
        logger.info(line)
    return samples, report
