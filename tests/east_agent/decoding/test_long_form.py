"""Long-form input: one unbounded stream of units in a bounded cache, re-anchored on the
prompt and the context it says, with exact logits throughout."""

import random

import pytest
from lm_trace import TracingLM, assert_trace_matches_full_recompute

from east_agent.decoding.east import FORCED, DecoderConfig, EastStreamDecoder
from east_agent.decoding.token_stream import TokenStream
from east_agent.decoding.units import join_source_units
from tiny_east import synthetic_sentence


def sentences(count, seed, period=True):
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        units = synthetic_sentence(rng)[0]
        result.append([*units[:-1], units[-1] + "."] if period else units)
    return result


def long_form(model, tokenizer, **settings):
    config = DecoderConfig("de", "en", "low", long_form=True, **settings)
    decoder = EastStreamDecoder(model, tokenizer, config)
    trace = TracingLM(decoder.lm)
    decoder.wrap_lm(lambda lm: trace)
    return decoder, trace


def test_without_context_a_talk_is_its_sentences_one_after_another(east_model, east_tokenizer):
    talk = sentences(6, seed=1)
    sentence_level = EastStreamDecoder(east_model, east_tokenizer, DecoderConfig("de", "en"))
    expected_chunks, expected_delays, offset = [], [], 0
    for units in talk:
        translation = sentence_level.translate(units)
        expected_chunks += translation.chunks
        expected_delays += [offset + delay for delay in translation.delays]
        offset += len(units)
    decoder, _ = long_form(east_model, east_tokenizer, context_words=0)
    translation = decoder.translate([unit for units in talk for unit in units])
    assert translation.chunks == expected_chunks
    assert translation.delays == expected_delays
    assert translation.counters.tokens_reencoded == 0  # nothing carried over


def test_an_unpunctuated_stream_stays_within_its_budget(east_model, east_tokenizer):
    units = [unit for sentence in sentences(60, seed=2, period=False) for unit in sentence]
    assert len(units) > 300
    decoder, trace = long_form(
        east_model, east_tokenizer, cache_budget=140, context_words=4, segment_units=1000
    )
    translation = decoder.translate(units)
    longest = max(len(ids) for ids, _ in trace.seen)
    assert longest <= 140
    assert translation.decisions.count(FORCED) > 5  # the budget closed segments
    assert len(translation.decisions) == len(units)
    assert translation.counters.tokens_reencoded > 0  # the context pairs, counted
    assert_trace_matches_full_recompute(east_model, trace)


def test_a_new_segment_holds_the_prompt_and_the_context_it_claims(east_model, east_tokenizer):
    talk = sentences(3, seed=3)
    decoder, trace = long_form(east_model, east_tokenizer, context_words=3)
    translation = decoder.translate([unit for units in talk for unit in units])
    first_units = len(talk[0])
    # the first forward after the first segment: its row starts again from the prompt
    prompt = decoder.prompt_ids
    rows = [ids for ids, _ in trace.seen]
    restart = next(
        index for index in range(1, len(rows)) if len(rows[index]) < len(rows[index - 1])
    )
    chunks = zip(translation.chunks, translation.delays)
    words_written = " ".join(chunk for chunk, delay in chunks if delay <= first_units).split()
    expected = TokenStream(east_tokenizer)
    expected.start(decoder.prompt)
    expected.append_text(join_source_units(talk[0][-3:], "German"))
    expected.append_added_token(decoder.token_ids.end_of_read)
    expected.append_text(" ".join(words_written[-3:]))
    expected.append_added_token(decoder.token_ids.end_of_write)
    assert rows[restart][: len(prompt)] == prompt
    assert rows[restart][: len(expected.ids)] == expected.ids
    carried = len(expected.ids) - len(prompt)
    segments = translation.decisions.count(FORCED) - 1  # the last one ends the talk
    assert translation.counters.tokens_reencoded == carried * segments or segments > 1
    assert translation.counters.tokens_reencoded >= carried


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"cache_budget": 20}, "leaves too little room"),
        ({"cache_budget": 4096}, "above the context"),
        ({"context_words": -1}, "context_words"),
        ({"document_level": True}, "exclude each other"),
    ],
)
def test_bad_long_form_settings_are_refused(east_model, east_tokenizer, settings, message):
    with pytest.raises(ValueError, match=message):
        long_form(east_model, east_tokenizer, **settings)
