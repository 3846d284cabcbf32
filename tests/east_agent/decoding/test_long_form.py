"""Long-form input: one unbounded stream of units in a bounded cache, re-anchored on the
prompt and the context it says, with exact logits throughout."""

import random
from pathlib import Path

import pytest
from lm_trace import TracingLM, assert_trace_matches_full_recompute

from east_agent.decoding.east import FORCED, DecoderConfig, EastStreamDecoder
from east_agent.decoding.long_form import ends_sentence, sentence_ends
from east_agent.decoding.token_stream import TokenStream
from east_agent.decoding.units import join_source_units
from east_agent.decoding.waitk import EastWaitkDecoder, OfflineWaitkDecoder, WaitkConfig
from tiny_east import synthetic_sentence


def sentences(count, seed, period=True, end="."):
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        units = synthetic_sentence(rng)[0]
        result.append([*units[:-1], units[-1] + end] if period else units)
    return result


POLICIES = ("east", "waitk-east", "waitk-offline")


def make_decoder(policy, model, tokenizer, src_lang="de", **settings):
    """An EAST or wait-k (k=2) decoder; `settings` are the long-form ones."""
    if policy == "east":
        config = DecoderConfig(src_lang, "en", "low", **settings)
        return EastStreamDecoder(model, tokenizer, config)
    config = WaitkConfig(src_lang, "en", 2, prompt=policy.split("-")[1], **settings)
    if config.prompt == "east":
        return EastWaitkDecoder(model, tokenizer, config.east_config(), config.waitk)
    return OfflineWaitkDecoder(model, tokenizer, config)


def long_form(model, tokenizer, policy="east", src_lang="de", **settings):
    decoder = make_decoder(policy, model, tokenizer, src_lang, long_form=True, **settings)
    trace = TracingLM(decoder.lm)
    decoder.wrap_lm(lambda lm: trace)
    return decoder, trace


@pytest.mark.parametrize(
    "context_words, end, src_lang",
    [
        (0, ".", "de"), (20, ".", "de"), (20, '."', "de"), (20, "?»", "de"),  # closing marks:
        (20, ";", "el"),  # and Greek's question mark as typed: before, sentences ran on
    ],
)  # fmt: skip
@pytest.mark.parametrize("policy", POLICIES)
def test_a_punctuated_talk_is_its_sentences_one_after_another(
    east_model, east_tokenizer, policy, context_words, end, src_lang
):
    """Context is carried within a cut sentence, not past a sentence end (by default).
    A sentence's first words, written as a sentence's, follow the target's separator
    (before: `Translation.text` ran the sentences together, `phone.A woman`)."""
    talk = sentences(6, seed=1, end=end)
    sentence_level = make_decoder(policy, east_model, east_tokenizer, src_lang)
    expected_chunks, expected_delays, offset = [], [], 0
    for units in talk:
        chunks = list(sentence_level.translate(units).chunks)
        first = next((index for index, chunk in enumerate(chunks) if chunk), None)
        if offset and first is not None and not chunks[first][0].isspace():
            chunks[first] = " " + chunks[first]
        expected_chunks += chunks
        expected_delays += [offset + delay for delay in sentence_level.delays]
        offset += len(units)
    decoder, _ = long_form(
        east_model, east_tokenizer, policy, src_lang, context_words=context_words
    )
    translation = decoder.translate([unit for units in talk for unit in units])
    assert translation.chunks == expected_chunks
    assert translation.delays == expected_delays
    if policy != "waitk-offline":  # which re-encodes its target prefix after every unit
        assert translation.counters.tokens_reencoded == 0  # nothing carried over


@pytest.mark.parametrize("policy", POLICIES)
def test_a_talks_text_reads_as_its_sentences_joined(policy):
    """On the shipped demo model, whose sentences end where Multi30k's do: a talk's text
    is its sentences' translations joined with spaces (before: `phone.A woman`)."""
    from east_agent.lm.checkpoint import load_east_checkpoint

    demo = Path(__file__).resolve().parents[3] / "models" / "east-demo"
    model, tokenizer = load_east_checkpoint(demo, torch_dtype="float32")
    talk = [["Ein", "Mann", "schläft", "."], ["Eine", "Frau", "liest", "."], ["Zwei", "Hunde", "."]]
    sentence_level = make_decoder(policy, model, tokenizer)
    texts = [sentence_level.translate(units).text for units in talk]
    decoder = make_decoder(policy, model, tokenizer, long_form=True)
    text = decoder.translate([unit for units in talk for unit in units]).text
    assert all(texts) and text == " ".join(texts)


@pytest.mark.parametrize("policy", POLICIES)
def test_an_unpunctuated_stream_stays_within_its_budget(east_model, east_tokenizer, policy):
    units = [unit for sentence in sentences(60, seed=2, period=False) for unit in sentence]
    assert len(units) > 300
    decoder, trace = long_form(
        east_model, east_tokenizer, policy, cache_budget=140, context_words=4, segment_units=1000
    )
    translation = decoder.translate(units)
    longest = max(len(ids) for ids, _ in trace.seen)
    assert longest <= 140
    assert translation.decisions.count(FORCED) > 5  # the budget closed segments
    assert len(translation.decisions) == len(units)
    assert translation.counters.tokens_reencoded > 0  # the context pairs, counted
    # float32 sums in another order over rows of up to 140 positions: 2e-5 apart at most
    assert_trace_matches_full_recompute(east_model, trace, atol=1e-4)


def test_waitk_writes_cut_by_the_budget_are_counted():
    """wait-10 under a 100-token budget on unpunctuated Multi30k German, on the demo model
    (the tiny test model's writes stop long before any cap): a forced write the budget's
    cap cuts is counted in `chunks_capped` (before: for wait-k, never). 110 tokens, as
    before the offline prompt suppressed the EAST markers, now cut none."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from east_agent.evaluation.demo import DEFAULT_MODEL
    from east_agent.evaluation.testsets import read_pairs

    pairs, _, _ = read_pairs("multi30k.de-en")
    units = [word.rstrip(".!?") for source, _ in pairs[:30] for word in source.split()]
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_MODEL)
    config = WaitkConfig(
        "de", "en", 10, prompt="offline", long_form=True, cache_budget=100, segment_units=1000
    )
    decoder = OfflineWaitkDecoder(model, tokenizer, config)
    traced = TracingLM(decoder.lm)
    decoder.wrap_lm(lambda lm: traced)
    translation = decoder.translate([unit for unit in units[:200] if unit])
    assert max(len(ids) for ids, _ in traced.seen) <= 100
    assert translation.counters.chunks_capped == 1


def test_a_new_segment_holds_the_prompt_and_the_context_it_claims(east_model, east_tokenizer):
    talk = sentences(3, seed=3)
    decoder, trace = long_form(
        east_model, east_tokenizer, context_words=3, context_across_sentences=True
    )
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


@pytest.mark.parametrize("num_beams", [1, 3])
def test_long_chunks_are_cut_to_the_budget_and_counted(east_model, east_tokenizer, num_beams):
    """Chunks of 40 tokens every other unit (imposed by a script) would pass a 160-token
    budget within a few units: each is capped so that the next unit and a forced chunk still
    fit, and the cache never holds more than the budget."""
    units = [unit for sentence in sentences(10, seed=7, period=False) for unit in sentence]
    script = dict.fromkeys(range(2, len(units), 2), 40)
    decoder, trace = long_form(
        east_model,
        east_tokenizer,
        cache_budget=160,
        segment_units=1000,
        context_words=4,
        num_beams=num_beams,
    )
    translation = decoder.translate(units, script)
    assert max(len(ids) for ids, _ in trace.seen) <= 160
    assert translation.counters.chunks_capped > 3
    assert translation.decisions.count(FORCED) > 3
    assert len(translation.decisions) == len(units)


@pytest.mark.parametrize("policy", POLICIES)
def test_a_talk_that_ends_after_a_segment_end_needs_no_last_write(
    east_model, east_tokenizer, policy
):
    """`finish()` right after the forced write of a sentence end gives what a last unit
    flagged `is_last` gives; a second talk on the same decoder starts clean."""
    talk = [unit for units in sentences(3, seed=8) for unit in units]
    decoder, _ = long_form(east_model, east_tokenizer, policy)
    expected = decoder.translate(talk)
    decoder.reset()
    for unit in talk:
        decoder.push_unit(unit)
    step = decoder.finish()
    assert step.finished and not step.chunk
    assert decoder.streams[0].translation().chunks == expected.chunks
    other = [unit for units in sentences(2, seed=9) for unit in units]
    fresh, _ = long_form(east_model, east_tokenizer, policy)
    assert decoder.translate(other).chunks == fresh.translate(other).chunks


def restarts(trace):
    """The rows of the forwards that start a segment again (shorter than the one before)."""
    rows = [ids for ids, _ in trace.seen]
    return [rows[i] for i in range(1, len(rows)) if len(rows[i]) < len(rows[i - 1])]


@pytest.mark.parametrize("policy", ["east", "waitk-east"])
def test_a_sentence_cut_in_the_middle_goes_on_with_its_own_words(
    east_model, east_tokenizer, policy
):
    """A sentence longer than `segment_units` is cut and carried on with the context of its
    own last words; the sentence before it (ended by a period) gives none."""
    first, second = sentences(2, seed=5)
    second = [*second, *sentences(1, seed=6)[0]]  # one sentence of two, no period inside
    assert len(first) <= 8 < len(second)
    decoder, trace = long_form(east_model, east_tokenizer, policy, context_words=3, segment_units=8)
    translation = decoder.translate([*first, *second])
    fresh, carried = restarts(trace)[:2]
    prompt = list(decoder.prompt_ids)
    expected = TokenStream(east_tokenizer)
    expected.start(decoder.prompt)
    expected.append_text(second[0])
    assert fresh[: len(expected.ids)] == expected.ids  # after the period: the prompt alone
    cut = len(first) + 8
    chunks = zip(translation.chunks, translation.delays)
    words = " ".join(c for c, d in chunks if len(first) < d <= cut).split()
    context = TokenStream(east_tokenizer)
    context.start(decoder.prompt)
    context.append_text(join_source_units(second[5:8], "German"))
    context.append_added_token(decoder.token_ids.end_of_read)
    context.append_text(" ".join(words[-3:]))
    context.append_added_token(decoder.token_ids.end_of_write)
    assert carried[: len(prompt)] == prompt
    assert carried[: len(context.ids)] == context.ids


def test_offline_waitk_opens_a_segment_with_its_context(east_model, east_tokenizer):
    """The context's source words open the new segment's source prefix, its target words
    the target prefix (and are not written again)."""
    talk = sentences(2, seed=4)
    decoder, trace = long_form(
        east_model, east_tokenizer, "waitk-offline", context_words=3, context_across_sentences=True
    )
    translation = decoder.translate([unit for units in talk for unit in units])
    rows = [ids for ids, _ in trace.seen]
    restart = next(
        index for index in range(1, len(rows)) if len(rows[index]) < len(rows[index - 1])
    )
    first_units = len(talk[0])
    chunks = zip(translation.chunks, translation.delays)
    words_written = " ".join(chunk for chunk, delay in chunks if delay <= first_units).split()
    source = join_source_units([*talk[0][-3:], *talk[1][:2]], "German")  # k = 2: one forward
    expected = TokenStream(east_tokenizer)
    expected.start(decoder.head)
    expected.append_text(source)
    expected.append_text(decoder.tail)
    expected.append_generated(
        east_tokenizer(" ".join(words_written[-3:]), add_special_tokens=False)["input_ids"]
    )
    assert rows[restart] == expected.ids
    assert translation.decisions.count(FORCED) == 2


BAD_SETTINGS = [
    ({"cache_budget": 20}, "leaves too little room"),
    ({"cache_budget": 4096}, "above the context"),
    ({"context_words": -1}, "context_words"),
    # before: accepted, nothing carried
    (
        {"context_across_sentences": True, "context_words": 0},
        r"carries the last context_words \(--context-words\) words .* and they are 0",
    ),
]


@pytest.mark.parametrize(
    "policy, settings, message",
    [
        *((policy, *bad) for policy in POLICIES for bad in BAD_SETTINGS),
        (
            "east",
            {"document_level": True},
            r"\(--long-form, --document-level\) exclude each",
        ),  # wait-k has no such mode
    ],
)
def test_bad_long_form_settings_are_refused(east_model, east_tokenizer, policy, settings, message):
    with pytest.raises(ValueError, match=message):
        long_form(east_model, east_tokenizer, policy, **settings)


@pytest.mark.parametrize("policy", POLICIES)
def test_a_unit_longer_than_the_context_says_to_split_it(east_model, east_tokenizer, policy):
    """Before: "split the source into shorter segments", which long form already does."""
    from east_agent.decoding.east import ContextOverflowError

    settings = {"long_form": True, "max_context": 160, "cache_budget": 160}
    decoder = make_decoder(policy, east_model, east_tokenizer, **settings)
    with pytest.raises(ContextOverflowError, match="long form cuts a talk between units, not"):
        decoder.translate(["Hund", "-".join(["rote"] * 100), "."])


@pytest.mark.parametrize("policy", POLICIES)
def test_long_form_settings_without_long_form_are_refused(east_model, east_tokenizer, policy):
    """Before: ignored, yet recorded (a resume with another value was refused)."""
    settings = {"cache_budget": 200, "context_across_sentences": True}
    with pytest.raises(ValueError, match=r"^cache_budget \(--cache-budget\), context_across_sent"):
        make_decoder(policy, east_model, east_tokenizer, **settings)
    make_decoder(policy, east_model, east_tokenizer, context_words=20)  # the default


def test_the_default_budget_is_named_as_such(east_model, east_tokenizer):
    with pytest.raises(ValueError, match=r"--cache-budget\) 50, half the context of 100 by def"):
        long_form(east_model, east_tokenizer, "east", max_context=100)


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
        # German and Czech closing quotes (before: no sentence end; wmt22.cs-en has two)
        ("pokračovat.“", True), ("kokain?“", True), ("so.‘", True), ("Ende.«", True),
        ("so.›", True), ("“", False), ("Ende“", False),
        # an ellipsis as one character, as `...` (before: no sentence end; wmt22.zh-en: 4)
        ("wartete...", True), ("wartete…", True), ("等等……", True), ("说⋯⋯”", True),
    ],
)  # fmt: skip
def test_a_sentence_end_is_its_mark_closing_marks_aside(unit, ends):
    assert ends_sentence(unit) is ends


@pytest.mark.parametrize("language, ends", [("el", True), ("Greek", True), ("de", False)])
def test_a_semicolon_ends_a_greek_sentence_alone(language, ends):
    assert ends_sentence("γιατί;", sentence_ends(language)) is ends
    assert ends_sentence("γιατί\u037e", sentence_ends(language))
