"""Source units: what one READ step consumes.

Spaced languages are read word by word (whitespace split). Chinese and Japanese are read
the way EAST reads them: in the smallest groups of the checkpoint's tokens that decode to
whole characters, joined back with no separator. Evaluation files store such units
space-separated, because SimulEval splits source lines on whitespace; a unit that followed
a space in the original text (a Latin word inside Chinese text, say) starts with
`SPACE_MARK`, which the decoder turns back into that space.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, cast

from east_agent.decoding.prompt import END_OF_READ, END_OF_WRITE, is_unspaced

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SPACE_MARK = "\u2581"  # "▁", as in sentencepiece


class SourceError(ValueError):
    """A source sentence the decoder cannot take (an empty unit, text that re-tokenizes
    what it follows): in a batch it fails alone, its message its outcome's error."""


def token_pattern(tokens: Iterable[str]) -> re.Pattern | None:
    """Any of `tokens`, the longest first where one begins another (None: no token)."""
    tokens = sorted(tokens, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, tokens))) if tokens else None


def control_tokens(tokenizer: PreTrainedTokenizerBase) -> frozenset[str]:
    """The texts `tokenizer` makes into one of its control tokens wherever they stand: its
    special tokens (the chat template's among them) and the EAST tokens where it has them
    (special or not; a chat LLM without them reads their text as text)."""
    added = list(getattr(tokenizer, "added_tokens_decoder", {}).values())
    special = {token.content for token in added if token.special}
    east = {token.content for token in added} & {END_OF_READ, END_OF_WRITE}
    named = getattr(tokenizer, "all_special_tokens", ())  # bos, eos, pad, unk, ...
    return frozenset({*named, *special, *east} - {"", None})


def control_token_in(text: str, pattern: re.Pattern | None) -> str | None:
    """The first control token (`token_pattern(control_tokens(...))`) `text` holds."""
    found = pattern.search(text) if pattern is not None else None
    return found.group() if found else None


def control_token_problem(token: str) -> str:
    return (
        f"holds {token!r}, one of the checkpoint's control tokens: the model would read it "
        "as that token, not as text (a turn's end, a READ or WRITE); remove it from the source"
    )


def token_group_units(text: str, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Split `text` into the smallest runs of its tokens that decode to whole characters."""
    text = text.strip()
    units: list[str] = []
    group: list[int] = []
    space_before = False
    read = 0  # how much of `text` the groups so far decoded to
    for token_id in tokenizer(text, add_special_tokens=False)["input_ids"]:
        group.append(token_id)
        piece = cast(str, tokenizer.decode(group))  # one sequence: one str
        found = text.find(piece.strip(), read)
        if "\ufffd" in piece and (found < 0 or text[read:found].strip()):
            continue  # a character split across tokens (not a U+FFFD of the text's own)
        read = found + len(piece.strip()) if found >= 0 else read
        group = []
        space_before = space_before or piece[:1].isspace()
        for word in piece.split():
            units.append(SPACE_MARK + word if space_before and units else word)
            space_before = True
        space_before = piece[-1:].isspace()
    if group:
        raise SourceError(f"{text!r}: its last tokens do not decode to a whole character")
    return units


def source_units(
    text: str, language: str, tokenizer: PreTrainedTokenizerBase | None = None
) -> list[str]:
    """The units EAST reads for `text` in `language` (zh/ja need the checkpoint's tokenizer)."""
    if not is_unspaced(language):
        return text.split()
    if tokenizer is None:
        raise ValueError(
            f"splitting {language} text into units needs the checkpoint's tokenizer: "
            f"source_units(text, {language!r}, tokenizer)"
        )
    return token_group_units(text, tokenizer)


def check_unit_list(units: object, where: str) -> None:
    """Units given as one string are refused (before: `translate("Katze")` read its five
    letters as five units, and `"Die Katze ."` failed on its spaces as an empty unit), and
    so are units that are no sequence (a generator: before, an empty translation)."""
    if isinstance(units, str):
        raise TypeError(
            f"{where}: a sequence of source units, not a string: pass text.split() (or, for "
            "Chinese and Japanese, source_units(text, language, tokenizer) from "
            "east_agent.decoding.units)"
        )
    if not isinstance(units, Sequence):  # before: a generator read up by this check
        raise TypeError(
            f"{where}: a sequence of source units (a list or tuple), got "
            f"{type(units).__name__}: pass list(...)"
        )
    for position, unit in enumerate(units):
        check_unit(unit, f"{where}: unit {position}")


def check_unit(unit: object, where: str) -> None:
    """A unit is a string (before: a number or None failed as an AttributeError)."""
    if not isinstance(unit, str):
        raise TypeError(f"{where}: a source unit is a string, got {type(unit).__name__} {unit!r}")


def unit_text(unit: str, language: str, first: bool) -> str:
    """The text a unit adds to the rendered source (separator included)."""
    word = unit.strip()
    if not word:
        raise SourceError("a source unit must not be empty or whitespace")
    if is_unspaced(language):
        if word.startswith(SPACE_MARK) and len(word) > 1:
            return word[1:] if first else " " + word[1:]
        return word
    return word if first else " " + word


def join_source_units(units: list[str], language: str) -> str:
    return "".join(unit_text(unit, language, first=index == 0) for index, unit in enumerate(units))
