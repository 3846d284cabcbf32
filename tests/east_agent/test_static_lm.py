"""The static KV cache and lean forward: exact against transformers, same translations."""

import copy
import random

import pytest
import torch

from east_agent.decoder import DecoderConfig, EastStreamDecoder
from east_agent.kv_cache import CachedLM, build_lm, check_static
from east_agent.static_lm import RECOMPILE_LIMIT, StaticLM
from east_agent.waitk import EastWaitkDecoder, OfflineWaitkDecoder, WaitkConfig
from tiny_east import synthetic_sentence

PROMPT = [128000, 128006, 882, 128007, 271, 35, 648, 5222, 374, 13]


def full_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].float()


@pytest.mark.parametrize("graph_buckets", [False, True], ids=["eager", "padded-buckets"])
def test_static_steps_equal_full_recompute(east_model, graph_buckets):
    # padded-buckets: the padded, bucketed step that CUDA graphs capture, run eagerly here.
    lm = StaticLM(east_model, max_length=64, cuda_graphs=graph_buckets)
    assert (lm.graphs is not None) == graph_buckets
    ids = list(PROMPT)
    torch.testing.assert_close(lm.feed(ids), full_logits(east_model, ids), atol=1e-5, rtol=1e-5)
    for step in ([13], [2001, 3002, 4003], [77]):
        ids += step
        torch.testing.assert_close(
            lm.feed(step), full_logits(east_model, ids), atol=1e-5, rtol=1e-5
        )
    assert lm.crop(len(PROMPT) + 1) == 4  # roll back: only a counter moves
    ids = ids[: len(PROMPT) + 1] + [999, 998]
    torch.testing.assert_close(
        lm.feed([999, 998]), full_logits(east_model, ids), atol=1e-5, rtol=1e-5
    )
    assert (lm.forward_passes, lm.tokens_fed, lm.length) == (5, 17, len(ids))


def test_compiled_layers_equal_transformers_and_compile_a_few_times(east_model):
    """The CUDA default (compiled layers in padded buckets), run here on the CPU backend of
    torch.compile: the same logits, one compiled function for every layer, and a handful of
    compilations for all step sizes, cache lengths, rows and backends of a process."""
    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]
    lm = StaticLM(east_model, max_length=64, cuda_graphs=True, compile_layers=True)
    assert lm.compiled and all(plain is not None for plain in lm.plain)
    ids = list(PROMPT)
    torch.testing.assert_close(lm.feed(ids), full_logits(east_model, ids), atol=1e-5, rtol=1e-5)
    for step in ([13], [2001, 3002, 4003], [77], [5, 6], [7] * 9):
        ids += step
        torch.testing.assert_close(
            lm.feed(step), full_logits(east_model, ids), atol=1e-5, rtol=1e-5
        )
    # buckets 16, 1, 4 in two graphs (one token, or more): one per layer would make 4
    assert len(east_model.model.layers) == 2
    assert counters["stats"]["unique_graphs"] - graphs_before == 2
    # another backend: other capacity, beam rows, a prefill past the largest bucket
    other = StaticLM(east_model, max_length=100, max_rows=3, compile_layers=True)
    long_prompt = PROMPT * 4
    torch.testing.assert_close(
        other.feed(long_prompt), full_logits(east_model, long_prompt), atol=1e-5, rtol=1e-5
    )
    other.feed([9])
    other.expand(3)
    logits = other.forward(torch.tensor([[10, 20], [11, 21], [12, 22]]))
    torch.testing.assert_close(
        logits[2], full_logits(east_model, long_prompt + [9, 12, 22]), atol=1e-5, rtol=1e-5
    )
    other.forward(torch.tensor([[1], [2], [3]]))
    # one token or more x one row or more x buffers of one row or more (6 possible)
    assert counters["stats"]["unique_graphs"] - graphs_before <= 6 < RECOMPILE_LIMIT
    assert not counters["graph_break"]  # each layer is one graph
    assert not build_lm(east_model, "auto", probe_ids=PROMPT).compiled  # not on CPUs


def test_static_beam_rows(east_model):
    lm = StaticLM(east_model, max_length=64, max_rows=3)
    lm.feed(PROMPT)
    prefix = lm.snapshot()
    lm.expand(3)
    lm.forward(torch.tensor([[10], [11], [12]]))
    lm.reorder(torch.tensor([2, 2, 0]))
    lm.forward(torch.tensor([[20], [21], [22]]))
    lm.restore(prefix, lm.row_suffix(1, len(PROMPT)))  # row 1: tokens 12 then 21
    assert (lm.rows, lm.length) == (1, len(PROMPT) + 2)
    expected = full_logits(east_model, PROMPT + [12, 21, 5])
    torch.testing.assert_close(lm.feed([5]), expected, atol=1e-5, rtol=1e-5)


def toy(count, seed):
    rng = random.Random(seed)
    return [synthetic_sentence(rng)[0] for _ in range(count)]


@pytest.mark.parametrize("beams", [1, 4])
def test_decoder_translations_are_the_same_on_both_caches(east_model, east_tokenizer, beams):
    results = {}
    for kind in ("dynamic", "static"):
        config = DecoderConfig("de", "en", "low", num_beams=beams, kv_cache=kind)
        decoder = EastStreamDecoder(east_model, east_tokenizer, config)
        assert isinstance(decoder.lm, StaticLM if kind == "static" else CachedLM)
        translations = [decoder.translate(units) for units in toy(5, seed=40 + beams)]
        results[kind] = [(t.chunks, t.delays, t.decisions) for t in translations]
        counters = [t.counters for t in translations]
    assert results["static"] == results["dynamic"]
    assert all(c.tokens_reencoded == 0 for c in counters)


def test_roll_back_and_waitk_on_the_static_cache(east_model, east_tokenizer):
    characters = list("中国人民银行今天发布了新的规定。")
    for kind in ("dynamic", "static"):
        config = DecoderConfig("zh", "en", "low", kv_cache=kind)
        zh = EastStreamDecoder(east_model, east_tokenizer, config).translate(characters)
        offline = OfflineWaitkDecoder(
            east_model, east_tokenizer, WaitkConfig("de", "en", 2, kv_cache=kind)
        ).translate(toy(1, seed=3)[0])
        east = EastWaitkDecoder(
            east_model, east_tokenizer, DecoderConfig("de", "en", kv_cache=kind), 2
        ).translate(toy(1, seed=4)[0])
        outcome = [(r.chunks, r.delays, r.counters.tokens_reencoded) for r in (zh, offline, east)]
        if kind == "dynamic":
            expected = outcome
    assert outcome == expected
    assert expected[0][2] > 0 and expected[1][2] > 0  # roll-backs really happened


def test_auto_is_static_where_supported_and_checked(east_model, monkeypatch):
    assert isinstance(build_lm(east_model, "auto", probe_ids=PROMPT), StaticLM)
    model = copy.deepcopy(east_model)
    model.config.model_type = "gpt2"
    assert isinstance(build_lm(model, "auto", probe_ids=PROMPT), CachedLM)
    with pytest.raises(ValueError, match="does not run model type 'gpt2'"):
        build_lm(model, "static")

    def fails(*args):
        raise RuntimeError("its logits differ")

    monkeypatch.setattr("east_agent.kv_cache.check_static", fails)
    assert isinstance(build_lm(east_model, "auto", probe_ids=PROMPT), CachedLM)  # falls back
    with pytest.raises(ValueError, match="unknown kv cache"):
        build_lm(east_model, "paged")


def test_auto_falls_back_from_compiled_to_plain_layers(east_model, monkeypatch):
    """The CUDA order of `auto` (compiled layers first), on the CPU: a compiled backend that
    fails its probe gives way to plain layers, which pass theirs."""
    import east_agent.kv_cache as kv_cache

    real_check = kv_cache.check_static

    def compiled_ones_fail(model, static, probe_ids):
        if static.compiled:
            raise RuntimeError("its logits differ from the dynamic cache's on a probe")
        real_check(model, static, probe_ids)

    assert kv_cache.static_attempts(east_model) == (False,)  # a CPU model
    monkeypatch.setattr(kv_cache, "static_attempts", lambda model: (True, False))
    monkeypatch.setattr(kv_cache, "check_static", compiled_ones_fail)
    lm = build_lm(east_model, "auto", probe_ids=PROMPT)
    assert isinstance(lm, StaticLM) and not lm.compiled


def test_check_static_catches_a_wrong_fast_path(east_model):
    lm = StaticLM(east_model, max_length=64)
    check_static(east_model, lm, PROMPT)  # the real one passes
    broken = StaticLM(east_model, max_length=64)
    broken.cos = broken.cos.flip(0)  # wrong rotary positions
    with pytest.raises(RuntimeError, match="differ from the dynamic cache"):
        check_static(east_model, broken, PROMPT)


def test_fused_projections_change_no_logits_and_no_memory(east_model, tmp_path):
    model = copy.deepcopy(east_model)
    ids = PROMPT + [13, 2001]
    before = full_logits(model, ids)
    separate = StaticLM(model, max_length=64, fuse_projections=False)
    separate_logits = separate.feed(ids)
    fused = StaticLM(model, max_length=64)
    attention = model.model.layers[0].self_attn
    weight, _ = fused.fused[0][0]
    # q, k and v are views into one tensor: the model holds no second copy of them
    assert attention.q_proj.weight.data_ptr() == weight.data_ptr()
    assert attention.k_proj.weight.untyped_storage().data_ptr() == weight.data_ptr()
    assert weight.shape[0] == sum(
        projection.weight.shape[0]
        for projection in (attention.q_proj, attention.k_proj, attention.v_proj)
    )
    torch.testing.assert_close(full_logits(model, ids), before, atol=0, rtol=0)
    torch.testing.assert_close(fused.feed(ids), separate_logits, atol=1e-5, rtol=1e-5)
    again = StaticLM(model, max_length=64)  # a second backend reuses the fused weights
    assert again.fused[0][0][0] is weight
    model.save_pretrained(tmp_path)  # the views save and load like any checkpoint
    reloaded = type(model).from_pretrained(tmp_path)
    torch.testing.assert_close(full_logits(reloaded, ids), before, atol=0, rtol=0)


def test_lora_wrapped_projections_run_unfused(east_model):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        copy.deepcopy(east_model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    for name, parameter in peft_model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make the adapter change something
            torch.nn.init.normal_(parameter, std=0.02)
    model = peft_model.base_model.model
    lm = StaticLM(model, max_length=64)
    qkv, gate_up = lm.fused[0]
    assert qkv is None and gate_up is not None  # LoRA layers stay as they are
    assert lm.plain[0] is None  # and run through their modules, not the tensor-only step
    torch.testing.assert_close(lm.feed(PROMPT), full_logits(model, PROMPT), atol=1e-5, rtol=1e-5)
