"""The three methods east-bench compares count what they claim to count (a benchmark: no
timing is asserted)."""

import pytest

from east_agent.bench.methods import run_offline, run_reference_loop, run_streaming
from east_agent.bench.report import compile_note
from east_agent.bench.schedules import waitk_schedule
from east_agent.bench.timing import ForwardCounter
from east_agent.decoding.east import DecoderConfig, EastStreamDecoder


@pytest.mark.parametrize("kv_cache", ["static", "dynamic", "compiled"])
def test_all_methods_follow_one_schedule(east_model, east_tokenizer, sentences, kv_cache):
    config = DecoderConfig("de", "en", "low", kv_cache=kv_cache)
    schedule = waitk_schedule(sentences, 2)
    counter = ForwardCounter().attach(east_model)
    try:
        decoder = EastStreamDecoder(east_model, east_tokenizer, config)
        seen_by_the_model = ForwardCounter().attach(east_model)
        streaming, recorded = run_streaming(decoder, sentences, schedule, counter, "cpu")
        seen_by_the_model.handle.remove()
        reference = run_reference_loop(
            east_model, east_tokenizer, config, sentences, schedule, counter, "cpu"
        )
        offline = run_offline(
            east_model, east_tokenizer, config, sentences, schedule, counter, "cpu"
        )
    finally:
        counter.handle.remove()
    assert recorded == schedule  # the decisions and chunk lengths were imposed
    units = sum(len(s) for s in sentences)
    chunks = sum(len(w) for w in schedule)
    tokens = sum(n for w in schedule for _, n in w)
    # (a): one forward per unit but the last, one per chunk, one per chunk token.
    assert streaming.forward_passes == units - len(sentences) + chunks + tokens
    assert streaming.tokens_reencoded == 0
    if kv_cache == "dynamic":  # the backend's own count agrees with the model's forward hook
        assert seen_by_the_model.take() == (streaming.forward_passes, streaming.tokens_fed)
    # (b): a READ generate() per unit, and per chunk a generate() of chunk + 1 tokens.
    assert reference.forward_passes == units + chunks + tokens
    # (c): the prefill and one forward per target token but the last.
    assert offline.forward_passes == len(sentences) + tokens
    if kv_cache == "compiled":  # (a) ran the compiled layer step, well under the limit
        assert "compiled layer step:" in compile_note()
        assert "REACHED" not in compile_note()
