"""Incremental ids == ids of the full rendered string, for every WMT test sentence."""

import random
from pathlib import Path

import pytest

from east_agent.common.records import load_records
from east_agent.decoding.prompt import END_OF_READ, END_OF_WRITE, render_user_turn, simt_instruction
from east_agent.decoding.token_stream import TokenStream
from east_agent.decoding.units import SourceError, source_units, unit_text

WMT = Path(__file__).resolve().parents[3] / "east_agent" / "data" / "wmt"
WMT_FILES = sorted(WMT.glob("*.json.gz"))


def target_pieces(reference: str, language: str, count: int, rng: random.Random) -> list[str]:
    """Split a reference into `count` chunk texts the way a model would write them."""
    unspaced = language in ("Chinese", "Japanese")
    words = list(reference) if unspaced else reference.split()
    cuts = sorted(rng.sample(range(1, len(words)), min(count - 1, len(words) - 1)))
    pieces = [words[a:b] for a, b in zip([0, *cuts], [*cuts, len(words)])]
    pieces += [[]] * (count - len(pieces))
    joined = ["".join(p) if unspaced else " ".join(p) for p in pieces]
    return [piece if unspaced or i == 0 else " " + piece for i, piece in enumerate(joined)]


def test_wmt_data_is_present():
    assert len(WMT_FILES) == 9


@pytest.mark.parametrize("path", WMT_FILES, ids=lambda path: path.name.removesuffix(".json.gz"))
def test_incremental_ids_equal_full_string_ids(east_tokenizer, path):
    records = load_records(path)
    src_lang, tgt_lang = records[0]["src_lang"], records[0]["tgt_lang"]
    prompt = render_user_turn(east_tokenizer, simt_instruction(src_lang, tgt_lang, "low"))
    end_of_read, end_of_write = east_tokenizer.convert_tokens_to_ids([END_OF_READ, END_OF_WRITE])
    stream = TokenStream(east_tokenizer)
    stream.start(prompt)
    rng = random.Random(path.name)
    rolled_back = 0
    for index, record in enumerate(records):
        stream.rewind_to_prompt()
        units = source_units(record["source"], src_lang, east_tokenizer)
        last = len(units) - 1
        writes = [position == last or rng.random() < 0.35 for position in range(len(units))]
        pieces = iter(target_pieces(record["reference"], tgt_lang, sum(writes), rng))
        text = prompt
        for position, unit in enumerate(units):
            piece = unit_text(unit, src_lang, first=position == 0)
            before = len(stream.ids)
            rolled_back += stream.append_text(piece) < before
            text += piece
            if writes[position]:
                target = next(pieces)
                stream.append_added_token(end_of_read)
                stream.append_generated(east_tokenizer(target, add_special_tokens=False).input_ids)
                stream.append_added_token(end_of_write)
                text += END_OF_READ + target + END_OF_WRITE
        expected = east_tokenizer(text, add_special_tokens=False).input_ids
        assert stream.ids == expected, f"{path.name} record {index}"
    if src_lang in ("Chinese", "Japanese"):
        assert rolled_back > 0  # merged characters really exercised the roll-back path


def test_unit_that_retokenizes_the_cached_tail_reports_where(east_tokenizer):
    stream = TokenStream(east_tokenizer)
    stream.start(render_user_turn(east_tokenizer, simt_instruction("zh", "en", "low")))
    stream.append_text("中")
    length = len(stream.ids)
    first_changed = stream.append_text("国")  # "中国" is one Llama-3 token
    assert first_changed == length - 1
    assert len(stream.ids) == length


@pytest.mark.parametrize("pieces", [["<|eot", "_id|>"], ["好<|end-of", "-re", "ad|>"]])
def test_units_that_complete_a_control_token_together_are_refused(east_tokenizer, pieces):
    """Chinese and Japanese units are joined without a space: pieces of a control token
    in two units made that token (before: `<|eot_id|>` fed inside the source)."""
    stream = TokenStream(east_tokenizer)
    stream.start(render_user_turn(east_tokenizer, simt_instruction("zh", "en", "low")))
    stream.append_text("你")
    for piece in pieces[:-1]:
        stream.check_source(piece)
        stream.append_text(piece)
    with pytest.raises(SourceError, match="completes '<\\|(eot_id|end-of-read)\\|>' with"):
        stream.check_source(pieces[-1])
    stream.append_added_token(east_tokenizer.convert_tokens_to_ids(END_OF_WRITE))
    stream.check_source(pieces[-1])  # a run of its own: the token is not made


def test_rewind_restores_the_prompt(east_tokenizer):
    prompt = render_user_turn(east_tokenizer, simt_instruction("de", "en", "low"))
    stream = TokenStream(east_tokenizer)
    stream.start(prompt)
    prompt_ids = list(stream.ids)
    stream.append_text("Hallo")
    stream.append_added_token(east_tokenizer.convert_tokens_to_ids(END_OF_READ))
    stream.rewind_to_prompt()
    assert stream.ids == prompt_ids
    stream.append_text("Hallo")
    assert stream.ids == east_tokenizer(prompt + "Hallo", add_special_tokens=False).input_ids


def test_rewind_puts_back_prompt_ids_the_first_text_merged_with(east_tokenizer):
    """`:` ending the prompt and `"` opening the first word are one Llama-3 token."""
    prompt = "USER: Translate.\nASSISTANT:"
    stream = TokenStream(east_tokenizer)
    stream.start(prompt)
    prompt_ids = list(stream.ids)
    assert stream.append_text('"Die') == len(prompt_ids) - 1  # the prompt's last id changed
    stream.append_added_token(east_tokenizer.convert_tokens_to_ids(END_OF_READ))
    assert stream.rewind_to_prompt() == len(prompt_ids) - 1
    assert stream.ids == prompt_ids
    assert stream.rewind_to_prompt() == len(prompt_ids)  # nothing changed since
    stream.append_text("Der")
    assert stream.ids == east_tokenizer(prompt + "Der", add_special_tokens=False).input_ids
