"""Where a source sentence ends, told from the unit just read (no look-ahead: a decoder
decides before the next unit comes).

A unit ends a sentence when its last character, closing quotes and brackets aside, is a
sentence mark of its language: `. ! ? 。 ？ ！ ． ｡`, Hindi `। ॥`, Arabic `؟`, Urdu `۔`,
the Greek question mark U+037E (and in Greek `;`, as it is typed: U+037E is `;` once
NFC-normalized), `‼ ⁇ ⁈ ⁉`. A period does not end one after an abbreviation: a word of the
language's Moses non-breaking prefixes (`Dr.`, `z.B.`, `e.g.`, the German `3.` of `am 3.
Oktober`), as Moses' `split-sentences.perl` reads them, or an upper-case acronym (`U.S.`);
the lists ship with `mosestokenizer` (a dependency of OmniSTEval's), for the languages
Moses has one. The prefixes Moses keeps only before a number (`No.`, `Art.`) still end a
sentence here: the next unit is not known yet.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from east_agent.decoding.prompt import LANGUAGE_CODES, language_name

SENTENCE_END = "。？！.!?．｡।॥؟۔\u037e‼⁇⁈⁉"
CLOSING_MARKS = "\"'”’»」』）)]】〉》"  # may follow a sentence's end: `weekend."`, `。」`
# split-sentences.perl's prefix before a run of periods, and its upper-case acronym
PERIODS = re.compile(r"([\w.\-]*?)(\.+)$")
ACRONYM = re.compile(r"\.[\w\-]+\.+$")


@dataclass(frozen=True)
class SentenceEnds:
    """The sentence ends of one source language; called with a unit, whether it ends one."""

    marks: str = SENTENCE_END
    prefixes: frozenset[str] = frozenset()  # words a period after them does not end

    def __call__(self, unit: str) -> bool:
        text = unit.rstrip()
        bare = text.rstrip(CLOSING_MARKS)
        if not bare or bare[-1] not in self.marks:
            return False  # a unit of closing marks alone, `）` or `"`, ends none
        return bare != text or not self._abbreviation(bare)

    def _abbreviation(self, text: str) -> bool:
        """Whether the period(s) `text` ends with close an abbreviation, not a sentence."""
        periods = PERIODS.search(text)
        if periods is None:
            return False
        if periods.group(1) in self.prefixes:
            return True
        acronym = ACRONYM.search(text)
        return acronym is not None and _upper_case(acronym.group())


def _upper_case(acronym: str) -> bool:
    letters = acronym.replace(".", "").replace("-", "")
    return letters.isalpha() and letters.isupper()


@cache
def sentence_ends(language: str) -> SentenceEnds:
    """The sentence ends of `language` (an ISO code or an English name)."""
    name = language_name(language)
    marks = SENTENCE_END + (";" if name == "Greek" else "")
    return SentenceEnds(marks, nonbreaking_prefixes(name))


def nonbreaking_prefixes(language_name: str) -> frozenset[str]:
    """The Moses non-breaking prefixes of a language that no number needs to follow, or
    none where Moses has no list for it."""
    path = _moses_prefix_folder() / f"nonbreaking_prefix.{_two_letter_code(language_name)}"
    if not path.is_file():
        return frozenset()
    prefixes = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "#NUMERIC_ONLY#" not in line:
            prefixes.add(line)
    return frozenset(prefixes)


def _two_letter_code(language_name: str) -> str:
    return next(
        code for code, name in LANGUAGE_CODES.items() if name == language_name and len(code) == 2
    )


def _moses_prefix_folder() -> Path:
    spec = importlib.util.find_spec("mosestokenizer")  # its data; the module is not run
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("mosestokenizer is not installed: pip install mosestokenizer")
    return Path(next(iter(spec.submodule_search_locations))) / "nonbreaking_prefixes"
