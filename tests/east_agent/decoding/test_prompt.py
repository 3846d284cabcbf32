import pytest

from east_agent.decoding.prompt import (
    LATENCY_LEVELS,
    check_latency,
    language_name,
    offline_instruction,
    render_user_turn,
    simt_instruction,
    unit_separator,
)

EXPECTED_PROMPT = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    "You are a professional simultaneous interpreter, your task is to translate the following "
    "German text into English with low latency.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def test_rendered_prompt_is_the_east_8b_prompt(east_tokenizer):
    prompt = render_user_turn(east_tokenizer, simt_instruction("de", "en", "low"))
    assert prompt == EXPECTED_PROMPT


def test_prompt_token_ids_match_llama3_ids(east_tokenizer):
    prompt = render_user_turn(east_tokenizer, simt_instruction("German", "English", "low"))
    ids = east_tokenizer(prompt, add_special_tokens=False).input_ids
    # <|begin_of_text|> <|start_header_id|> user <|end_header_id|> "\n\n" ...
    assert ids[:5] == [128000, 128006, 882, 128007, 271]
    assert ids[-4:] == [128006, 78191, 128007, 271]


@pytest.mark.parametrize(
    "given, name",
    [("de", "German"), ("zh", "Chinese"), ("ZH", "Chinese"), ("deu", "German"), ("czech", "Czech")],
)
def test_language_codes_and_names(given, name):
    assert language_name(given) == name


def test_unknown_language_names_the_choices():
    with pytest.raises(ValueError, match="unknown language 'Klingon'.*three-letter.*German"):
        language_name("Klingon")


@pytest.mark.parametrize(("tag", "code"), [("de-DE", "de"), ("zh_CN", "zh"), ("pt-BR", "pt")])
def test_a_language_tag_with_a_region_is_named_with_its_language(tag, code):
    """Before: refused with the list of every code, as if the language were unknown."""
    with pytest.raises(ValueError, match=f"{tag!r}: a tag with a region or script is not taken"):
        language_name(tag)
    with pytest.raises(
        ValueError, match=f"language alone, {language_name(code)}\\): use {code!r}$"
    ):
        language_name(tag)


@pytest.mark.parametrize("latency", LATENCY_LEVELS)
def test_every_latency_level_is_accepted(latency):
    assert latency in simt_instruction("de", "en", latency)


def test_unknown_latency_lists_the_levels():
    with pytest.raises(ValueError, match="low, low-medium, medium, medium-high, high"):
        check_latency("ultra-low")


def test_chinese_and_japanese_have_no_separator():
    assert unit_separator("zh") == unit_separator("Japanese") == ""
    assert unit_separator("de") == " "


def test_offline_prompt_puts_the_source_on_its_own_line():
    assert offline_instruction("de", "en", "Hallo Welt") == (
        "Translate the following sentence from German into English:\nHallo Welt"
    )


def test_tokenizer_without_chat_template_is_refused(east_tokenizer):
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="no chat template"):
        render_user_turn(NoTemplate(), "hi")
