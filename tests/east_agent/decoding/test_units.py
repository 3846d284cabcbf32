import pytest

from east_agent.decoding.units import SPACE_MARK, join_source_units, source_units, unit_text


def test_spaced_languages_are_read_word_by_word():
    assert source_units("Die  Katze sitzt.", "de") == ["Die", "Katze", "sitzt."]


def test_chinese_units_are_token_groups_that_decode_to_whole_characters(east_tokenizer):
    text = "是否有途径处罚他"
    units = source_units(text, "zh", east_tokenizer)
    assert "".join(units) == text
    assert len(units) > 1
    for unit in units:
        assert "\ufffd" not in unit


def test_chinese_units_keep_spaces_as_marks(east_tokenizer):
    text = "苹果发布了 iPhone 13 手机"
    units = source_units(text, "zh", east_tokenizer)
    assert all(unit.strip() == unit and unit for unit in units)
    assert sum(unit.startswith(SPACE_MARK) for unit in units) == 3
    assert join_source_units(units, "zh") == text


def test_unit_text_adds_the_separator_after_the_first_unit():
    assert unit_text("Katze", "de", first=True) == "Katze"
    assert unit_text("Katze", "de", first=False) == " Katze"
    assert unit_text("猫", "zh", first=False) == "猫"
    assert unit_text(SPACE_MARK + "13", "zh", first=False) == " 13"


def test_empty_unit_is_refused():
    with pytest.raises(ValueError, match="empty"):
        unit_text("  ", "de", first=True)


def test_chinese_without_tokenizer_is_refused():
    with pytest.raises(ValueError, match="tokenizer"):
        source_units("你好", "zh")


@pytest.mark.parametrize(
    "text, units",
    [
        ("好\ufffd坏", ["好", "\ufffd", "坏"]),
        ("苹果 \ufffd\ufffd 手机\ufffd", ["苹果", "▁\ufffd\ufffd", "▁手机", "\ufffd"]),
        ("𠀀\ufffd龘", ["𠀀", "\ufffd", "龘"]),  # characters of 4 and 3 tokens, split
    ],
)
def test_a_replacement_character_of_the_text_is_a_character(east_tokenizer, text, units):
    """U+FFFD in scraped text is the text's own, not a character split across tokens
    (before: the whole text was refused)."""
    assert source_units(text, "zh", east_tokenizer) == units
    assert join_source_units(units, "zh") == text


def test_control_tokens_are_the_tokenizers_own(east_tokenizer):
    """The special tokens, and the EAST tokens only where the tokenizer has them, special
    or not (a chat LLM without them, run with the offline wait-k prompt, reads their text
    as text)."""
    from east_agent.decoding.prompt import END_OF_READ, END_OF_WRITE
    from east_agent.decoding.units import control_tokens
    from tiny_east import build_chat_llama3_tokenizer

    east = control_tokens(east_tokenizer)
    assert {"<|eot_id|>", "<|start_header_id|>", END_OF_READ, END_OF_WRITE} <= east
    chat = build_chat_llama3_tokenizer()
    assert "<|eot_id|>" in control_tokens(chat)
    assert not {END_OF_READ, END_OF_WRITE} & control_tokens(chat)
    chat.add_tokens([END_OF_READ])  # added, not special: the tokenizer still makes it one token
    assert END_OF_READ in control_tokens(chat)
