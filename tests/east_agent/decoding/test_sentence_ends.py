"""Where a source sentence ends, from the unit just read."""

import pytest

from east_agent.decoding.sentence_ends import SentenceEnds, nonbreaking_prefixes, sentence_ends


@pytest.mark.parametrize(
    "unit, ends",
    [
        ("Haus.", True), ('weekend."', True), ("paying.)", True), ("。」", True),
        ("说。”", True), ("why?»", True), ("Haus", False), ("Mr", False),
        # closing marks alone end no sentence (a Chinese unit `）`, spaced punctuation)
        (")", False), ("）", False), ("》", False), ('"', False), ("」", False),
        # Hindi, Arabic, Persian, Urdu, fullwidth, Greek (before: no sentence end)
        ("है।", True), ("هل؟", True), ("است.", True), ("ہے۔", True), ("done．", True),
        ("τι\u037e", True), ("है", False), ("،", False),
    ],
)  # fmt: skip
def test_a_sentence_end_is_its_mark_closing_marks_aside(unit, ends):
    assert SentenceEnds()(unit) is ends


@pytest.mark.parametrize("language, ends", [("el", True), ("Greek", True), ("de", False)])
def test_a_semicolon_ends_a_greek_sentence_alone(language, ends):
    assert sentence_ends(language)("γιατί;") is ends
    assert sentence_ends(language)("γιατί\u037e")


@pytest.mark.parametrize(
    "language, unit, ends",
    [
        # Moses' non-breaking prefixes of the language: before, each cut its sentence
        ("de", "z.B.", False), ("de", "Dr.", False), ("de", "(ggf.", False),
        ("de", "3.", False),  # am 3. Oktober
        ("de", "1990.", True), ("de", "Haus.", True), ("de", "e.g.", True),
        ("en", "e.g.", False), ("en", "Mr.", False), ("en", "3.", True),
        ("en", "No.", True),  # a prefix only before a number: the next unit is not known
        ("en", "Dr.)", True),  # a closing mark after the period: Moses breaks too
        ("ru", "тыс.", False), ("cs", "např.", False),
        # upper-case acronyms, in any language
        ("en", "U.S.", False), ("de", "J.P.", False), ("ar", "U.N.", False),
        ("en", "end.", True), ("ar", "e.g.", True),  # Arabic: no Moses list
    ],
)  # fmt: skip
def test_a_period_after_an_abbreviation_ends_no_sentence(language, unit, ends):
    assert sentence_ends(language)(unit) is ends


def test_numeric_only_prefixes_are_left_out_and_unlisted_languages_have_none():
    english = nonbreaking_prefixes("English")
    assert {"Mr", "e.g", "Dr"} <= english
    assert not {"No", "Art", "pp"} & english  # Moses keeps these before a number alone
    assert nonbreaking_prefixes("Chinese") == frozenset()
