"""Continuous batching: many streams in one forward give each sentence exactly what the
sequential decoder gives it."""

import copy
import random

import pytest
from lm_trace import TracingLM, assert_trace_matches_full_recompute

from east_agent.decoding.batching import BatchStats, Sentence, translate_batch
from east_agent.decoding.east import ContextOverflowError, DecoderConfig, EastStreamDecoder
from east_agent.decoding.prompt import END_OF_READ
from east_agent.decoding.waitk import EastWaitkDecoder, OfflineWaitkDecoder, WaitkConfig
from east_agent.lm import static
from tiny_east import cutting_model, synthetic_sentence

CHINESE_CHARACTERS = list("中国人民银行今天发布了新的规定。")


def toy_sentences(count, seed):
    rng = random.Random(seed)
    return [synthetic_sentence(rng)[0] for _ in range(count)]


def record(translation):
    return translation.chunks, translation.chunk_ids, translation.delays, translation.decisions


def batched(decoder, sentences, stats=None):
    outcomes = list(
        translate_batch(decoder, [Sentence(i, u) for i, u in enumerate(sentences)], stats)
    )
    assert sorted(outcome.key for outcome in outcomes) == list(range(len(sentences)))
    return {outcome.key: outcome for outcome in outcomes}


def build(kind, model, tokenizer, streams, beams=1, src="de"):
    if kind == "east":
        config = DecoderConfig(src, "en", "low", num_beams=beams)
        return EastStreamDecoder(model, tokenizer, config, streams=streams)
    if kind == "waitk-east":
        return EastWaitkDecoder(model, tokenizer, DecoderConfig(src, "en"), 2, streams=streams)
    return OfflineWaitkDecoder(model, tokenizer, WaitkConfig(src, "en", 2), streams=streams)


@pytest.mark.parametrize(
    "kind, beams, layout",
    [
        ("east", 1, "cpu"),
        ("east", 5, "cpu"),  # the paper's decoding
        ("waitk-east", 1, "cpu"),
        ("waitk-offline", 1, "cpu"),
        ("waitk-offline", 1, "cut"),  # every row of several new tokens cut apart where it can
        # the GPUs' layout, run here: one padded group, a boolean mask, no shared prefix
        ("east", 4, "gpu"),
        ("waitk-offline", 1, "gpu"),
    ],
)
def test_batched_translations_equal_sequential_ones(
    east_model, east_tokenizer, monkeypatch, kind, beams, layout
):
    if layout == "cut":
        monkeypatch.setattr(static, "GROUP_COST", 0)
    sentences = toy_sentences(11, seed=60 + beams)  # more sentences than streams
    sequential = build(kind, east_model, east_tokenizer, 1, beams)
    expected = [sequential.translate(units) for units in sentences]
    decoder = build(kind, east_model, east_tokenizer, 4, beams)
    assert isinstance(decoder.lm, static.StaticLM) and decoder.lm.split_queries
    decoder.lm.split_queries = layout != "gpu"
    trace = TracingLM(decoder.lm)
    decoder.wrap_lm(lambda lm: trace)
    stats = BatchStats()
    outcomes = batched(decoder, sentences, stats)
    for index, translation in enumerate(expected):
        got = outcomes[index].translation
        assert record(got) == record(translation), sentences[index]
        # each sentence took part in as many forwards as it needs alone
        assert got.counters.forward_passes == translation.counters.forward_passes
        assert got.counters.tokens_reencoded == translation.counters.tokens_reencoded
        assert len(got.chunk_seconds) == len(got.chunks)
    # several streams really shared forwards (and every row got exact logits)
    assert stats.steps < sum(t.counters.forward_passes for t in expected) / 2
    assert max(stats.rows_per_step) >= 4 * beams
    assert_trace_matches_full_recompute(east_model, trace)


@pytest.mark.parametrize("kind", ["east", "waitk-offline"])
def test_a_finished_stream_takes_the_next_sentence_at_once(east_model, east_tokenizer, kind):
    """Continuous batching: until the last sentence is taken, every step has a row from
    each of the 4 streams (a batch refilled only once drained would have fewer)."""
    stats = BatchStats()
    taken_after_steps = []

    def queue(sentences):
        for index, units in enumerate(sentences):
            taken_after_steps.append(stats.steps)
            yield Sentence(index, units)

    decoder = build(kind, east_model, east_tokenizer, 4)
    sentences = toy_sentences(14, seed=9)
    outcomes = list(translate_batch(decoder, queue(sentences), stats))
    assert len(outcomes) == 14 and all(outcome.error is None for outcome in outcomes)
    assert taken_after_steps[:4] == [0, 0, 0, 0] and taken_after_steps[-1] > 0
    full_steps = stats.rows_per_step[: taken_after_steps[-1] + 1]
    assert full_steps == [4] * len(full_steps)
    assert min(stats.rows_per_step) < 4  # the batch drains once the input runs out


@pytest.mark.parametrize("beams", [1, 5])
def test_chunks_cut_inside_a_character_in_a_batch(east_tokenizer, beams):
    """Chunks their cap cuts inside "𩸽" end before it in a batch as alone: each row's
    taken-back tokens leave its own cache only."""
    model = cutting_model(east_tokenizer)
    sentences = [["Ein", "Hund", "läuft"], ["Hund"] * 3, ["Die", "Katze"], ["Ein", "Hund"]]
    config = DecoderConfig("de", "en", max_new_tokens=8, num_beams=beams)
    sequential = EastStreamDecoder(model, east_tokenizer, config)
    expected = [sequential.translate(units) for units in sentences]
    decoder = EastStreamDecoder(model, east_tokenizer, config, streams=3)
    trace = TracingLM(decoder.lm)
    decoder.wrap_lm(lambda lm: trace)
    outcomes = batched(decoder, sentences)
    for index, translation in enumerate(expected):
        got = outcomes[index].translation
        assert record(got) == record(translation)
        assert got.counters.characters_cut == translation.counters.characters_cut > 0
        assert "\ufffd" not in "".join(got.chunks)
    assert_trace_matches_full_recompute(model, trace)


def test_roll_backs_in_a_batch(east_model, east_tokenizer):
    """Chinese characters that re-tokenize roll back their own row only."""
    sentences = [CHINESE_CHARACTERS, CHINESE_CHARACTERS[:9], CHINESE_CHARACTERS[3:]]
    sequential = build("east", east_model, east_tokenizer, 1, src="zh")
    expected = [sequential.translate(units) for units in sentences]
    outcomes = batched(build("east", east_model, east_tokenizer, 3, src="zh"), sentences)
    for index, translation in enumerate(expected):
        assert record(outcomes[index].translation) == record(translation)
        assert outcomes[index].translation.counters.tokens_reencoded > 0


def test_a_sentence_too_long_fails_alone(east_model, east_tokenizer):
    config = DecoderConfig("de", "en", "low", max_context=100)
    decoder = EastStreamDecoder(east_model, east_tokenizer, config, streams=2)
    sentences = toy_sentences(5, seed=3)
    sentences.insert(2, ["rote"] * 150)
    outcomes = batched(decoder, sentences)
    failed = outcomes[2]
    assert isinstance(failed.error, ContextOverflowError) and failed.units == 150
    assert "more than 100 tokens" in str(failed.error)
    sequential = EastStreamDecoder(east_model, east_tokenizer, config)
    for index in (0, 1, 3, 4, 5):
        assert record(outcomes[index].translation) == record(sequential.translate(sentences[index]))


def test_a_context_the_prompt_does_not_fit_in_is_refused_as_the_decoder_is_built(
    east_model, east_tokenizer
):
    """Before: the prompt fed once for all streams overflowed the static cache, and the
    whole batch ended in a ValueError; then each sentence failed on its own. Now neither
    decoder is built (as the command line refuses the flag)."""
    config = DecoderConfig("de", "en", "low", max_context=20, kv_cache="static")
    for streams in (3, 1):
        with pytest.raises(ValueError, match="--max-context 20 leaves no room for a sentence"):
            EastStreamDecoder(east_model, east_tokenizer, config, streams=streams)


def fail_at_bumm(decoder, monkeypatch, error: Exception) -> None:
    """The decoder's program raises `error` at a unit "Bumm" (a bug met by one sentence)."""
    real_push = decoder._push

    def push(stream, unit, is_last):
        if unit == "Bumm":
            raise error
        return (yield from real_push(stream, unit, is_last))

    monkeypatch.setattr(decoder, "_push", push)


@pytest.mark.parametrize("beams", [1, 4])
def test_a_program_fault_fails_its_sentence_alone(
    east_model, east_tokenizer, monkeypatch, caplog, beams
):
    """A bug met by one sentence (here: at its unit "Bumm", after some forwards) is logged
    with its traceback; the stream it broke translates the next sentences as ever."""
    decoder = build("east", east_model, east_tokenizer, 2, beams=beams)
    fail_at_bumm(decoder, monkeypatch, KeyError("a bug"))
    sentences = toy_sentences(6, seed=5)
    sentences.insert(1, [*sentences[0], "Bumm", *sentences[0]])
    outcomes = batched(decoder, sentences)
    assert "the stream's program failed: KeyError('a bug')" in str(outcomes[1].error)
    assert outcomes[1].units == 2 * len(sentences[0]) + 1
    assert "sentence 1: the stream's program failed" in caplog.text
    assert "Traceback" in caplog.text
    sequential = build("east", east_model, east_tokenizer, 1, beams=beams)
    for index in (0, 2, 3, 4, 5, 6):
        assert record(outcomes[index].translation) == record(sequential.translate(sentences[index]))


def test_a_sentences_bad_unit_is_its_error_another_value_error_a_bug(
    east_model, east_tokenizer, monkeypatch, caplog
):
    """A whitespace unit fails its sentence with its own message, no traceback; a
    ValueError of the program's own calls (a backend's, say) is a bug and logged as one."""
    decoder = build("east", east_model, east_tokenizer, 2)
    fail_at_bumm(decoder, monkeypatch, ValueError("row 9 out of range: the backend has 2 rows"))
    sentences = [["der", " ", "Hund"], ["der", "Bumm"], *toy_sentences(2, seed=6)]
    outcomes = batched(decoder, sentences)
    assert str(outcomes[0].error) == "a source unit must not be empty or whitespace"
    assert "sentence 0" not in caplog.text
    assert "the stream's program failed: ValueError('row 9" in str(outcomes[1].error)
    assert "sentence 1: the stream's program failed" in caplog.text and "Traceback" in caplog.text
    assert outcomes[2].translation is not None and outcomes[3].translation is not None


@pytest.mark.parametrize("kind", ["east", "waitk-east", "waitk-offline"])
def test_a_unit_holding_a_control_token_fails_its_sentence_alone(east_model, east_tokenizer, kind):
    """Before: `<|eot_id|>` in the source became the end-of-turn token (the user turn
    ended there), and `<|end-of-read|>` a READ mark; the sentence was translated, exit 0."""
    decoder = build(kind, east_model, east_tokenizer, 2)
    good = toy_sentences(2, seed=9)
    sentences = [["Ein", "Mann<|eot_id|>"], [END_OF_READ], *good]
    outcomes = batched(decoder, sentences)
    assert str(outcomes[0].error).startswith(
        "the source unit 'Mann<|eot_id|>' holds '<|eot_id|>', one of the checkpoint's control"
    )
    assert f"holds '{END_OF_READ}'" in str(outcomes[1].error)
    alone = build(kind, east_model, east_tokenizer, 1)
    for index, sentence in enumerate(good, 2):  # the others as they are alone
        assert record(outcomes[index].translation) == record(alone.translate(sentence))


def test_empty_sentences_fail_without_stopping_the_batch(east_model, east_tokenizer):
    decoder = build("east", east_model, east_tokenizer, 2)
    outcomes = batched(decoder, [[], *toy_sentences(2, seed=4)])
    assert "empty" in str(outcomes[0].error)
    assert outcomes[1].translation.chunks and outcomes[2].translation.chunks


def test_a_script_imposes_decisions_in_a_batch(east_model, east_tokenizer):
    sentences = toy_sentences(3, seed=8)
    scripts = [{2: 1, len(units): 3} for units in sentences]
    decoder = build("east", east_model, east_tokenizer, 3)
    outcomes = translate_batch(
        decoder, [Sentence(i, u, s) for i, (u, s) in enumerate(zip(sentences, scripts))]
    )
    for outcome in outcomes:
        translation = outcome.translation
        assert [(d, len(ids)) for d, ids in zip(translation.delays, translation.chunk_ids)] == [
            (2, 1),
            (len(sentences[outcome.key]), 3),
        ]


def test_the_dynamic_cache_runs_one_stream(east_model, east_tokenizer, caplog):
    config = DecoderConfig("de", "en", "low", kv_cache="dynamic")
    decoder = EastStreamDecoder(east_model, east_tokenizer, config, streams=4)
    assert len(decoder.streams) == 1
    assert "--kv-cache dynamic runs one stream at a time: 4 streams become 1" in caplog.text
    sentences = toy_sentences(3, seed=9)
    outcomes = batched(decoder, sentences)
    sequential = EastStreamDecoder(east_model, east_tokenizer, config)
    for index, units in enumerate(sentences):
        assert record(outcomes[index].translation) == record(sequential.translate(units))


def test_a_prompt_merged_with_a_first_word_is_not_shared_merged(east_model, east_tokenizer):
    """A template whose generation prompt ends in text (`ASSISTANT:`): a first unit `"Die`
    tokenizes `:"` as one token, so the sentence rewrote the prompt's last id. Rewinding to
    the prompt puts it back; before, the merged row was copied to every stream's home row
    as the prompt, and the next sentences were decoded after another prompt."""
    tokenizer = copy.deepcopy(east_tokenizer)
    tokenizer.chat_template = (
        "{{ bos_token }}{% for message in messages %}USER: {{ message['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )
    decoder = build("east", east_model, tokenizer, streams=2)
    trace = TracingLM(decoder.lm)
    decoder.wrap_lm(lambda lm: trace)
    prompt = decoder.prompt_ids
    merged = ['"Die', "Katze", "sitzt"]
    batched(decoder, [merged])
    assert decoder.streams[0].tokens.ids[: len(prompt)] != prompt  # the merge happened
    seen = len(trace.seen)
    sentences = [["der", "Hund", "läuft", "auf", "dem", "Tisch"], ["Der", "Mann", "sieht"]]
    outcomes = batched(decoder, sentences)  # first words that do not merge with `:`
    assert all(ids[: len(prompt)] == prompt for ids, _ in trace.seen[seen:])
    assert_trace_matches_full_recompute(east_model, trace)
    sequential = build("east", east_model, tokenizer, streams=1)
    for index, units in enumerate(sentences):
        assert record(outcomes[index].translation) == record(sequential.translate(units))


def test_a_decoder_runs_one_batch_at_a_time(east_model, east_tokenizer):
    """A second `translate_batch` on a decoder whose first is running, or the first
    stream driven by `push_unit` meanwhile, is refused (before: 6 of 10 outcomes carried
    another sentence's translation, without an error); once the first ends (or is
    closed) the decoder is free again, and gives the sequential decoder's translations."""
    sentences = toy_sentences(6, seed=11)
    decoder = build("east", east_model, east_tokenizer, 2)
    first = translate_batch(decoder, [Sentence(i, u) for i, u in enumerate(sentences[:3])])
    next(first)
    second = translate_batch(decoder, [Sentence(i, u) for i, u in enumerate(sentences[3:])])
    with pytest.raises(RuntimeError, match="translate_batch: a translate_batch of this decoder"):
        next(second)
    for call in (decoder.reset, lambda: decoder.push_unit("Hund"), decoder.finish):
        with pytest.raises(RuntimeError, match="a translate_batch of this decoder is running"):
            call()
    first.close()
    outcomes = batched(decoder, sentences[3:])
    sequential = build("east", east_model, east_tokenizer, 1)
    for index, units in enumerate(sentences[3:]):
        assert record(outcomes[index].translation) == record(sequential.translate(units))


def test_a_sentence_push_unit_began_is_not_dropped_by_a_batch(east_model, east_tokenizer):
    decoder = build("east", east_model, east_tokenizer, 2)
    decoder.reset()
    decoder.push_unit("Der")
    with pytest.raises(RuntimeError, match="a sentence push_unit began is not finished"):
        batched(decoder, toy_sentences(2, seed=12))
    decoder.push_unit("Hund", is_last=True)  # the sentence goes on, then the batch runs
    assert decoder.streams[0].finished
    batched(decoder, toy_sentences(2, seed=12))
    decoder.reset()  # a reset sentence with nothing pushed is no sentence to keep
    batched(decoder, toy_sentences(2, seed=12))
    for call in (lambda: decoder.push_unit("Hund"), decoder.finish):  # the batch's sentence
        with pytest.raises(RuntimeError, match="holds a translate_batch's sentence; call reset"):
            call()
    decoder.reset()
    assert decoder.push_unit("Der").decision is not None
