"""The streaming decoder against a cache-free reference, full recomputes and transformers."""

import copy
import random
import re

import numpy as np
import pytest
import torch
from lm_trace import TracingLM, assert_trace_matches_full_recompute, generate_chunk

from east_agent.decoding.east import (
    FORCED,
    READ,
    WRITE,
    ContextOverflowError,
    DecoderConfig,
    EastStreamDecoder,
)
from east_agent.decoding.prompt import END_OF_READ, END_OF_WRITE, render_user_turn, simt_instruction
from east_agent.decoding.units import SourceError, source_units, unit_text
from tiny_east import cutting_model, synthetic_sentence

CHINESE = "是否有途径处罚他，中国人民银行今天发布了新的规定。"
# Character units (as some SimulEval setups feed Chinese): "中" + "国" re-tokenize as one
# Llama-3 token, so the cached "中" must be rolled back.
CHINESE_CHARACTERS = list("中国人民银行今天发布了新的规定。")


def reference_decode(model, tokenizer, units, src_lang, tgt_lang, latency="low", **options):
    """The paper's greedy algorithm, keeping no cache: every step recomputes the whole
    sequence. Text (prompt, units, end-of-read/-write) is tokenized as full strings; the
    generated ids are inserted verbatim."""
    max_new_tokens = options.get("max_new_tokens", 128)
    document_level = options.get("document_level", False)
    prompt = render_user_turn(tokenizer, simt_instruction(src_lang, tgt_lang, latency))
    eor, eow, eot = tokenizer.convert_tokens_to_ids([END_OF_READ, END_OF_WRITE, "<|eot_id|>"])
    eos = {tokenizer.eos_token_id, eot}
    read_suppressed = sorted(eos | {eow, tokenizer.bos_token_id})
    write_suppressed = [eor, tokenizer.bos_token_id]
    parts = [prompt]

    def full_ids(generated=()):
        ids, text = [], ""
        for part in parts:
            if isinstance(part, str):
                text += part
            else:
                ids += tokenizer(text, add_special_tokens=False).input_ids + part
                text = ""
        return ids + tokenizer(text, add_special_tokens=False).input_ids + list(generated)

    def argmax(ids, suppressed):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].float()
        logits[suppressed] = float("-inf")
        return int(logits.argmax())

    chunks, delays, decisions = [], [], []
    since_write = 0
    for position, unit in enumerate(units):
        parts.append(unit_text(unit, src_lang, first=position == 0))
        since_write += 1
        choice = argmax(full_ids(), read_suppressed)
        sentence_end = document_level and unit[-1] in "。？！.!?" and since_write >= 20
        if position == len(units) - 1 or sentence_end:
            decision = FORCED
        else:
            decision = WRITE if choice == eor else READ
        decisions.append(decision)
        if decision == READ:
            continue
        parts.append(END_OF_READ)
        generated = []
        for _ in range(min(max_new_tokens, 2 * (since_write + 25))):
            token = argmax(full_ids(generated), write_suppressed)
            if token in eos or token == eow:
                break
            generated.append(token)
        parts += [generated, END_OF_WRITE]
        chunks.append(tokenizer.decode(generated, skip_special_tokens=True).rstrip())
        delays.append(position + 1)
        since_write = 0
    return chunks, delays, decisions


def toy_sentences(count, seed=0):
    rng = random.Random(seed)
    return [synthetic_sentence(rng)[0] for _ in range(count)]


@pytest.fixture(scope="module")
def greedy_decoder(east_model, east_tokenizer):
    return EastStreamDecoder(east_model, east_tokenizer, DecoderConfig("de", "en", "low"))


def test_parity_with_cache_free_reference(east_model, east_tokenizer, greedy_decoder):
    sentences = toy_sentences(12)
    chunk_counts, all_decisions = [], []
    for units in sentences:
        ours = greedy_decoder.translate(units)
        reference = reference_decode(east_model, east_tokenizer, units, "de", "en")
        assert (ours.chunks, ours.delays, ours.decisions) == reference, units
        chunk_counts.append(len(ours.chunks))
        all_decisions += ours.decisions
    # The test only means something if the model really reads and writes on its own.
    assert max(chunk_counts) >= 3
    assert all_decisions.count(READ) >= 3 and all_decisions.count(WRITE) >= 5


@pytest.mark.parametrize("characters", [False, True], ids=["token-groups", "characters"])
def test_parity_on_chinese_units(east_model, east_tokenizer, characters):
    units = CHINESE_CHARACTERS if characters else source_units(CHINESE, "zh", east_tokenizer)
    decoder = EastStreamDecoder(east_model, east_tokenizer, DecoderConfig("zh", "en", "low"))
    ours = decoder.translate(units)
    reference = reference_decode(east_model, east_tokenizer, units, "zh", "en")
    assert (ours.chunks, ours.delays, ours.decisions) == reference


def traced(decoder) -> TracingLM:
    decoder.wrap_lm(TracingLM)
    return decoder.lm


@pytest.mark.parametrize("num_beams", [1, 5])
@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_a_chunk_cut_inside_a_character_ends_before_it(east_tokenizer, num_beams, kv_cache):
    """A chunk cap of 8 cuts "𩸽" (four tokens) after two of them: the paper's loop writes
    U+FFFD there; here the chunk ends before the character, whose tokens leave the cache
    (every forward sees exactly the stream's ids). Decisions and delays are the loop's."""
    model = cutting_model(east_tokenizer)
    units = ["Ein", "Hund", "läuft", "schnell"]
    paper = reference_decode(model, east_tokenizer, units, "de", "en", max_new_tokens=8)
    assert paper[0] == [" a𩸽 a\ufffd"] * 2
    config = DecoderConfig("de", "en", max_new_tokens=8, num_beams=num_beams, kv_cache=kv_cache)
    decoder = EastStreamDecoder(model, east_tokenizer, config)
    trace = traced(decoder)
    ours = decoder.translate(units)
    assert ours.chunks == [" a𩸽 a"] * 2
    assert (ours.delays, ours.decisions) == (paper[1], paper[2])
    assert ours.counters.characters_cut == 2
    home = decoder.streams[0].home
    assert trace.ids[home] == decoder.stream.ids[: len(trace.ids[home])]
    assert_trace_matches_full_recompute(model, trace)


@pytest.mark.parametrize("num_beams", [1, 5])
def test_a_chunk_cap_after_the_model_s_own_u_fffd_keeps_it(east_tokenizer, num_beams):
    """U+FFFD is one Llama-3 token (a whole character): a chunk its cap ends on it is the
    paper loop's chunk (before: taken for a cut character and dropped)."""
    model = cutting_model(east_tokenizer, character="\ufffd")
    units = ["Ein", "Hund", "läuft", "schnell"]
    paper = reference_decode(model, east_tokenizer, units, "de", "en", max_new_tokens=4)
    assert paper[0] == [" a\ufffd a\ufffd"] * 2
    config = DecoderConfig("de", "en", max_new_tokens=4, num_beams=num_beams)
    ours = EastStreamDecoder(model, east_tokenizer, config).translate(units)
    assert (ours.chunks, ours.delays, ours.decisions) == paper
    assert ours.counters.characters_cut == 0


def test_cached_logits_equal_full_recompute_at_every_step(east_model, east_tokenizer):
    decoder = EastStreamDecoder(east_model, east_tokenizer, DecoderConfig("de", "en", "low"))
    trace = traced(decoder)
    for units in toy_sentences(3, seed=1):  # the prompt stays cached across sentences
        decoder.translate(units)
    assert trace.forwards == decoder.counters.forward_passes  # the static cache's probe is not
    assert decoder.counters.tokens_reencoded == 0  # nor is dropping a finished sentence
    assert_trace_matches_full_recompute(east_model, trace)


def test_cache_roll_back_keeps_logits_exact(east_model, east_tokenizer):
    decoder = EastStreamDecoder(east_model, east_tokenizer, DecoderConfig("zh", "en", "low"))
    trace = traced(decoder)
    translation = decoder.translate(CHINESE_CHARACTERS)
    assert translation.counters.tokens_reencoded > 0
    assert_trace_matches_full_recompute(east_model, trace)


def test_forward_passes_are_the_minimum(greedy_decoder):
    for units in toy_sentences(5, seed=2):
        result = greedy_decoder.translate(units)
        target_tokens = sum(map(len, result.chunk_ids))
        # One forward per unit but the last (whose end-of-read is fed with it), one per
        # chunk (its end-of-read or last unit) and one per generated target token.
        assert result.counters.forward_passes == len(units) - 1 + len(result.chunks) + (
            target_tokens
        )
        assert result.counters.tokens_reencoded == 0


def test_stream_renders_the_east_interleaved_format(greedy_decoder, east_tokenizer):
    units = toy_sentences(6, seed=3)[5]
    result = greedy_decoder.translate(units)
    expected = greedy_decoder.prompt
    written = 0
    for chunk_ids, delay in zip(result.chunk_ids, result.delays):
        expected += (
            " ".join(units[written:delay]) if written == 0 else " " + " ".join(units[written:delay])
        )
        expected += END_OF_READ + east_tokenizer.decode(chunk_ids) + END_OF_WRITE
        written = delay
    rendered = east_tokenizer.decode(greedy_decoder.stream.ids)
    assert rendered == expected


def test_document_level_forces_a_write_at_a_sentence_end(east_model, east_tokenizer):
    # A copy of the model that never chooses end-of-read (its logit is pinned to 0).
    model = copy.deepcopy(east_model)
    with torch.no_grad():
        model.lm_head.weight[east_tokenizer.convert_tokens_to_ids(END_OF_READ)] = 0
    units = ["rote"] * 5 + ["Hund."] + ["rote"] * 15 + ["große."] + ["rote"] * 3
    config = DecoderConfig("de", "en", "low", document_level=True)
    ours = EastStreamDecoder(model, east_tokenizer, config).translate(units)
    reference = reference_decode(model, east_tokenizer, units, "de", "en", document_level=True)
    assert (ours.chunks, ours.delays, ours.decisions) == reference
    # Only the sentence end after 20 or more units forces a write.
    assert ours.delays == [22, 25]
    assert ours.decisions[5] == READ and ours.decisions[21] == FORCED
    plain = EastStreamDecoder(model, east_tokenizer, DecoderConfig("de", "en", "low"))
    assert plain.translate(units).delays == [25]


def test_beam_chunks_equal_transformers_beam_search(east_model, east_tokenizer):
    """With 5.x's stop rule: the installed transformers' (see test_chunk_search for 4.44.2's)."""
    beams = 4
    config = DecoderConfig("de", "en", "low", num_beams=beams, beam_stop="transformers")
    decoder = EastStreamDecoder(east_model, east_tokenizer, config)
    ids = decoder.token_ids
    compared = 0
    for units in toy_sentences(4, seed=4):
        result = decoder.translate(units)
        stream = decoder.stream.ids
        ends_of_read = [i for i, token in enumerate(stream) if token == ids.end_of_read]
        previous_delay = 0
        for end_of_read, chunk_ids, delay in zip(ends_of_read, result.chunk_ids, result.delays):
            cap = min(config.max_new_tokens, 2 * (delay - previous_delay + 25))
            previous_delay = delay
            output = generate_chunk(east_model, stream[: end_of_read + 1], beams, cap, ids)
            assert chunk_ids == output
            compared += 1
    assert compared >= 6


def test_beam_search_keeps_the_winners_cache(east_model, east_tokenizer):
    decoder = EastStreamDecoder(
        east_model, east_tokenizer, DecoderConfig("de", "en", "low", num_beams=5)
    )
    trace = traced(decoder)
    results = [decoder.translate(units) for units in toy_sentences(4, seed=5)]
    assert sum(len(result.chunks) for result in results) >= 6
    assert all(result.counters.tokens_reencoded == 0 for result in results)
    # Every step of every beam, and the READ steps after a beam-searched chunk (on the
    # restored row), computes exactly the logits of the ids its row holds.
    assert_trace_matches_full_recompute(east_model, trace)


def test_finish_equals_a_last_unit_flag(east_model, east_tokenizer, greedy_decoder):
    units = toy_sentences(8, seed=6)[7]
    flagged = greedy_decoder.translate(units)
    greedy_decoder.reset()
    for unit in units:
        greedy_decoder.push_unit(unit)
    step = greedy_decoder.finish()
    assert step.finished
    assert (greedy_decoder.chunks, greedy_decoder.delays) == (flagged.chunks, flagged.delays)


def test_source_longer_than_the_context_is_a_clear_error(east_model, east_tokenizer):
    config = DecoderConfig("de", "en", "low", max_context=80)
    decoder = EastStreamDecoder(east_model, east_tokenizer, config)
    with pytest.raises(ContextOverflowError, match="more than 80 tokens") as refused:
        decoder.translate(["rote"] * 200)
    assert str(refused.value).endswith("or run it in long form (--long-form)")


def test_an_overflow_inside_a_beam_step_leaves_the_next_sentence_intact(east_model, east_tokenizer):
    """The dynamic cache holds beams in its batch dimension: a sentence that overflows
    while its beams are forked must not leave them there for the next sentence."""
    config = DecoderConfig("de", "en", "low", num_beams=3, max_context=64, kv_cache="dynamic")
    decoder = EastStreamDecoder(east_model, east_tokenizer, config)
    first, second, third = toy_sentences(3, seed=5)
    with pytest.raises(ContextOverflowError):
        decoder.translate(first + second + third)
    assert decoder.lm.rows == 3  # the overflow came in the middle of a beam search
    expected = EastStreamDecoder(east_model, east_tokenizer, config).translate(first)
    got = decoder.translate(first)
    assert (got.chunk_ids, got.delays) == (expected.chunk_ids, expected.delays)


@pytest.mark.parametrize("fault", ["control token", "overflow"])
def test_a_sentence_that_failed_takes_no_more_input(east_model, east_tokenizer, fault):
    """Before: each later push_unit (and finish) gave the failed sentence's last step
    again, its units dropped, and the sentence never finished."""
    config = DecoderConfig("de", "en", "low", max_context=80)
    decoder = EastStreamDecoder(east_model, east_tokenizer, config)
    units = toy_sentences(1, seed=4)[0]
    decoder.reset()
    decoder.push_unit(units[0])
    with pytest.raises((SourceError, ContextOverflowError)):
        if fault == "control token":
            decoder.push_unit("<|eot_id|>")
        else:
            for _ in range(200):
                decoder.push_unit("rote")
    for call in (lambda: decoder.push_unit(units[1]), decoder.finish):
        with pytest.raises(RuntimeError, match="the sentence failed \\(.*\\); call reset\\(\\)"):
            call()
    expected = EastStreamDecoder(east_model, east_tokenizer, config).translate(units)
    got = decoder.translate(units)  # reset() starts afresh
    assert (got.chunk_ids, got.delays) == (expected.chunk_ids, expected.delays)


def test_an_interrupted_sentence_takes_no_more_input(east_model, east_tokenizer, monkeypatch):
    """Ctrl-C inside a forward: before, the next push_unit failed as an AttributeError
    from the cut-off program."""
    from east_agent.decoding import streaming

    decoder = EastStreamDecoder(east_model, east_tokenizer, DecoderConfig("de", "en", "low"))
    units = toy_sentences(1, seed=4)[0]
    decoder.reset()
    decoder.push_unit(units[0])
    real_run_feeds = streaming.run_feeds

    def interrupted(lm, feeds):
        raise KeyboardInterrupt

    monkeypatch.setattr(streaming, "run_feeds", interrupted)
    with pytest.raises(KeyboardInterrupt):
        decoder.push_unit(units[1])
    monkeypatch.setattr(streaming, "run_feeds", real_run_feeds)
    with pytest.raises(
        RuntimeError, match=r"the sentence failed \(KeyboardInterrupt\); call reset"
    ):
        decoder.push_unit(units[2])
    expected = EastStreamDecoder(east_model, east_tokenizer, decoder.config).translate(units)
    got = decoder.translate(units)
    assert (got.chunk_ids, got.delays) == (expected.chunk_ids, expected.delays)


def test_a_unit_no_context_holds_beside_the_prompt_is_said_so(east_model, east_tokenizer):
    """Before: advised shorter segments or long form, where neither helps."""
    decoder = EastStreamDecoder(
        east_model, east_tokenizer, DecoderConfig("de", "en", "low", max_context=80)
    )
    for units in (["Katze" * 100], ["Die", "Katze" * 100]):
        with pytest.raises(ContextOverflowError) as refused:
            decoder.translate(units)
        said = r"one unit does not fit beside the \d+-token prompt \(it and the end-of-read "
        assert re.search(said + r"or end-of-write fed with it: \d+ tokens\)$", str(refused.value))
        assert "long-form" not in str(refused.value)
    assert "(after 2 source units and 0 chunks)" in str(refused.value)
    with pytest.raises(ContextOverflowError, match=r"\(after 1 source unit and 0 chunks\)"):
        decoder.translate(["Katze" * 100])  # before: "1 source units"


def test_the_number_of_streams_and_the_last_unit_flag_are_checked(east_model, east_tokenizer):
    """Before: `streams="4"` failed comparing str and int; `is_last="no"` ended the source."""
    config = DecoderConfig("de", "en", "low")
    with pytest.raises(TypeError, match="streams: a whole number, got str '4'"):
        EastStreamDecoder(east_model, east_tokenizer, config, streams="4")
    # numpy's integers are whole numbers, as in a config's fields (before: refused here)
    assert len(EastStreamDecoder(east_model, east_tokenizer, config, np.int64(2)).streams) == 2
    decoder = EastStreamDecoder(east_model, east_tokenizer, config)
    decoder.reset()
    with pytest.raises(TypeError, match="push_unit: is_last is True or False, got 'no'"):
        decoder.push_unit("Katze", is_last="no")


def test_default_context_is_the_models(east_model, east_tokenizer, greedy_decoder):
    assert greedy_decoder.max_context == east_model.config.max_position_embeddings
    with pytest.raises(ContextOverflowError, match="more than 512 tokens"):
        greedy_decoder.translate(["rote"] * 600)


def test_context_above_the_models_positions_is_refused(east_model, east_tokenizer):
    config = DecoderConfig("de", "en", "low", max_context=4096)
    with pytest.raises(ValueError, match="above the 512 positions the model has"):
        EastStreamDecoder(east_model, east_tokenizer, config)


def test_empty_source_is_refused(greedy_decoder):
    with pytest.raises(ValueError, match="empty"):
        greedy_decoder.translate([])


def test_a_source_given_as_one_string_is_refused():
    """Before: `translate("Katze")` read five letters as five units; `Sentence(k, "Der
    Hund .")` failed on a space as an empty unit."""
    from east_agent.decoding.batching import Sentence
    from east_agent.decoding.streaming import StreamingDecoder

    said = "a sequence of source units, not a string: pass text.split()"
    with pytest.raises(TypeError, match=f"translate: {said}"):
        StreamingDecoder.translate(None, "Katze")  # refused before anything is decoded
    with pytest.raises(TypeError, match=f"Sentence 7: {said}"):
        Sentence(7, "Der Hund .")
    assert Sentence(7, ("Der", "Hund", ".")).units == ("Der", "Hund", ".")
    # before: a generator was read up by the check, and translated as no unit at all
    said = "a sequence of source units \\(a list or tuple\\), got generator: pass list"
    with pytest.raises(TypeError, match=f"translate: {said}"):
        StreamingDecoder.translate(None, (unit for unit in ["Die", "Katze"]))
    with pytest.raises(TypeError, match="Sentence 2: .* got list_iterator: pass list"):
        Sentence(2, iter(["Die", "Katze"]))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"num_beams": "3"}, "DecoderConfig.num_beams must be int, got str '3'"),
        ({"document_level": 1}, "DecoderConfig.document_level must be bool, got int 1"),
        ({"max_new_tokens": True}, "DecoderConfig.max_new_tokens must be int, got bool True"),
        ({"max_context": 64.0}, "DecoderConfig.max_context must be int | None, got float 64.0"),
    ],
)
def test_a_config_value_of_another_type_is_refused(settings, message):
    """Before: `num_beams="3"` failed later, comparing str and int."""
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        DecoderConfig("de", "en", **settings)
    assert DecoderConfig("de", "en", max_context=None, cache_budget=None).max_context is None
    import numpy  # an integer of another kind is an int (a review: numpy's were refused)

    config = DecoderConfig("de", "en", num_beams=numpy.int64(3))
    assert config.num_beams == 3 and type(config.num_beams) is int
    import enum

    class Level(str, enum.Enum):
        HIGH = "high"

    assert type(DecoderConfig("de", "en", latency=Level.HIGH).latency) is str  # its text


@pytest.mark.parametrize("target", ["de", "German"])
def test_a_source_language_as_the_target_is_refused(target):
    """Before: the decoder was asked to translate "from German into German"."""
    from east_agent.decoding.waitk import WaitkConfig

    for config in (DecoderConfig, WaitkConfig):
        with pytest.raises(ValueError, match="--tgt-lang\\) are both German: a translation"):
            config("de", target, **({"waitk": 3} if config is WaitkConfig else {}))


def test_a_context_that_leaves_no_room_is_refused_as_the_decoder_is_built(
    east_model, east_tokenizer
):
    """Before: built on another backend, every sentence failing at its first unit (the
    command line refused it; the Python API did not)."""
    with pytest.raises(ValueError, match="--max-context 10 leaves no room for a sentence after"):
        EastStreamDecoder(east_model, east_tokenizer, DecoderConfig("de", "en", max_context=10))


def test_a_unit_that_is_not_a_string_is_refused(greedy_decoder):
    """Before: `translate([1, 2])` and `push_unit(None)` failed as AttributeErrors ('int'
    object has no attribute 'strip'), a batch's inside its outcome."""
    from east_agent.decoding.batching import Sentence

    with pytest.raises(TypeError, match="translate: unit 1: a source unit is a string, got int"):
        greedy_decoder.translate(["Katze", 2])
    with pytest.raises(TypeError, match="Sentence 3: unit 0: a source unit is a string, got No"):
        Sentence(3, [None])
    greedy_decoder.reset()
    with pytest.raises(TypeError, match="push_unit: a source unit is a string, got NoneType"):
        greedy_decoder.push_unit(None)
    greedy_decoder.push_unit("Katze", is_last=True)  # refused before the stream took it


def test_a_list_of_sentences_is_checked_whole_before_the_first_outcome(greedy_decoder):
    """Before: 93 outcomes came, then the refusal, and the sentences in flight were lost."""
    from east_agent.decoding.batching import Sentence, translate_batch

    sentences = [Sentence(index, ["Hund", "Katze"]) for index in range(5)]
    for last in (Sentence(0, ["Farbe"]), (9, ["Farbe"])):
        outcomes = translate_batch(greedy_decoder, [*sentences, last])
        with pytest.raises((ValueError, TypeError)):
            next(outcomes)  # the first outcome: the refusal comes before it
    lazy = translate_batch(greedy_decoder, iter([*sentences, Sentence(0, ["Farbe"])]))
    assert next(lazy).key == 0  # an iterator's sentences are checked as they come
    lazy.close()


def test_translate_batch_refuses_other_items_and_a_key_twice(greedy_decoder):
    """Before: a (key, units) tuple failed as an AttributeError; two sentences with one
    key both ran, their outcomes not to be told apart."""
    from east_agent.decoding.batching import Sentence, translate_batch

    with pytest.raises(TypeError, match=r"takes Sentence\(key, units\) items, got tuple"):
        list(translate_batch(greedy_decoder, [(0, ["Katze"])]))
    twice = [Sentence(0, ["Hund"]), Sentence(1, ["Katze"]), Sentence(0, ["Farbe"])]
    with pytest.raises(ValueError, match="Sentence key 0 given twice"):
        list(translate_batch(greedy_decoder, twice))
    unhashable = [Sentence([0], ["Hund"]), Sentence([1], ["Katze"])]  # compared by equality
    assert len(list(translate_batch(greedy_decoder, unhashable))) == 2
    with pytest.raises(ValueError, match=r"Sentence key \[1\] given twice"):  # before: taken
        list(translate_batch(greedy_decoder, [*unhashable, Sentence([1], ["Farbe"])]))
    # keys whose `==` answers elementwise, or raises (arrays): not taken for one key
    arrays = [Sentence(ArrayLike([0, 1]), ["Hund"]), Sentence(ArrayLike([0, 1, 2]), ["Katze"])]
    assert len(list(translate_batch(greedy_decoder, arrays))) == 2


class ArrayLike(list):
    """`==` as an array's: elementwise, and an error between two lengths."""

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other):
        if len(self) != len(other):
            raise ValueError("operands could not be broadcast together")
        return [a == b for a, b in zip(self, other)]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"latency": "fast"}, "unknown latency"),
        ({"src_lang": "xx"}, "unknown language"),
        ({"num_beams": 0}, "num_beams"),
        ({"num_beams": 5, "beam_stop": "never"}, "beam_stop must be one of reference, trans"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_context": 0}, "max_context"),
        ({"max_context": -5}, "max_context"),
    ],
)
def test_bad_configuration_is_refused(options, message):
    settings = {"src_lang": "de", "tgt_lang": "en", "latency": "low", **options}
    with pytest.raises(ValueError, match=message):
        DecoderConfig(**settings)


@pytest.mark.parametrize("kind", ["east", "waitk-east"])
def test_beams_the_vocabulary_cannot_fill_are_refused_before_the_rows_are_made(
    demo_model, monkeypatch, kind
):
    """The Python API checks what the CLI checks (before: "selected index k out of range"
    from the first beam search, or, with 10,000 beams, the process killed for memory as
    the decoder made its rows)."""
    from east_agent.decoding import streaming
    from east_agent.decoding.waitk import EastWaitkDecoder

    model, tokenizer = demo_model
    monkeypatch.setattr(
        streaming.StreamingDecoder, "__init__", lambda *a, **k: pytest.fail("rows made")
    )
    config = DecoderConfig("de", "en", num_beams=3000, kv_cache="dynamic")
    said = "--num-beams 3000: a beam search step takes the 3 x 3000 best tokens, more than "
    with pytest.raises(ValueError, match=re.escape(said + "this model's vocabulary of 8002")):
        if kind == "east":
            EastStreamDecoder(model, tokenizer, config)
        else:
            EastWaitkDecoder(model, tokenizer, config, 3)
