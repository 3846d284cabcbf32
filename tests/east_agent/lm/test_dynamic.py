"""The dynamic backend: the transformers-version shims (cache argument name, crop) and the
row protocol on one stream."""

import pytest
import torch
import transformers
from lm_trace import full_logits

from east_agent.lm import CachedLM, cache_argument_name

PROMPT = [128000, 128006, 882, 128007]


def test_cache_argument_is_the_one_this_transformers_reads(east_model):
    name = cache_argument_name(east_model)
    expected = "past_key_values" if transformers.__version__.startswith("5.17.") else "cache"
    assert name == expected


def test_feeding_fills_the_cache(east_model):
    # With the wrong keyword transformers 5.17 silently ignores the cache: this would fail.
    lm = CachedLM(east_model)
    lm.feed(PROMPT)
    assert lm.length(0) == 4
    lm.feed([271])
    assert lm.length(0) == 5
    assert (lm.forward_passes, lm.tokens_fed) == (2, 5)


def test_crop_keeps_a_prefix_and_refeeding_matches_a_fresh_run(east_model):
    ids = [*PROMPT, 271, 13347, 1070]
    lm = CachedLM(east_model)
    lm.feed(ids)
    assert lm.crop(0, 4) == 3
    assert lm.length(0) == 4
    torch.testing.assert_close(lm.feed(ids[4:]), full_logits(east_model, ids), atol=1e-5, rtol=1e-5)
    assert lm.crop(0, lm.length(0)) == 0


def test_beam_rows_fork_reorder_save_and_load(east_model):
    lm = CachedLM(east_model, max_rows=3)
    lm.feed(PROMPT[:3])
    lm.fork(0, [1, 2])
    assert lm.rows == 3
    lm.forward([0, 1, 2], [[10], [11], [12]])
    lm.copy_rows([0, 1, 2], [2, 2, 0], [3] * 3)
    saved = lm.save(0, 3)  # row 0 now holds token 12
    lm.load(0, saved)
    lm.release([1, 2])
    assert (lm.rows, lm.length(0)) == (1, 4)
    expected = full_logits(east_model, [*PROMPT[:3], 12, 13])
    torch.testing.assert_close(lm.feed([13]), expected, atol=1e-5, rtol=1e-5)


def test_copies_are_a_fork_of_row_0_or_a_reranking_of_the_rows_held(east_model):
    lm = CachedLM(east_model, max_rows=3)
    lm.feed(PROMPT[:3])
    lm.copy_rows([1, 2], [0, 0], [0, 0])  # a beam search's first copies: a fork
    assert lm.rows == 3
    lm.forward([0, 1, 2], [[10], [11], [12]])
    lm.copy_rows([1], [2], [3])  # only row 1 changes
    logits = lm.forward([0, 1, 2], [[20], [21], [22]])
    expected = full_logits(east_model, [*PROMPT[:3], 12, 21])
    torch.testing.assert_close(logits[1], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(NotImplementedError, match="between the rows it holds"):
        lm.copy_rows([3], [0], [0])


def test_beam_rows_cut_short_are_released_to_row_0(east_model):
    """A beam search that an error ended leaves its rows forked; `release` keeps row 0."""
    lm = CachedLM(east_model, max_rows=3)
    lm.feed(PROMPT[:3])
    lm.fork(0, [1, 2])
    lm.forward([0, 1, 2], [[10], [11], [12]])
    lm.release([1, 2])
    assert (lm.rows, lm.length(0)) == (1, 4)
    lm.crop(0, 3)
    expected = full_logits(east_model, [*PROMPT[:3], 13])
    torch.testing.assert_close(lm.feed([13]), expected, atol=1e-5, rtol=1e-5)


def test_rows_of_several_streams_are_refused_with_a_reason(east_model):
    lm = CachedLM(east_model, max_rows=4)
    lm.feed(PROMPT)
    with pytest.raises(NotImplementedError, match="one stream at a time"):
        lm.forward([1], [[5]])
    with pytest.raises(ValueError, match="row 7 out of range"):
        lm.forward([7], [[5]])
    assert not CachedLM.ragged


def test_beams_on_a_sliding_window_cache_are_refused_before_decoding():
    """A sliding window's layer keeps its length apart from its keys, so the rows that
    `save` and `load` cut and join by hand would be read at the wrong positions (a crash,
    or a hypothesis one position long); one beam runs it."""
    config = transformers.MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=64,
    )  # fmt: skip
    model = transformers.MistralForCausalLM(config).eval()
    with pytest.raises(ValueError, match="uses DynamicSlidingWindowLayer: decode it with one"):
        CachedLM(model, max_rows=3)
    assert CachedLM(model).feed([1, 2, 3]).shape == (64,)


def test_a_row_past_its_sliding_window_is_cut_back_by_feeding_what_it_keeps():
    """A sliding window's layer keeps its last positions only: once a row filled the
    window, transformers cannot crop it (before: a RuntimeError at the next sentence's
    rewind to the prompt). The row is built anew from the tokens it keeps, one forward."""
    config = transformers.MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=8,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.MistralForCausalLM(config).eval()
    ids = [(7 * index) % 60 + 2 for index in range(20)]
    lm = CachedLM(model)
    assert lm.window == 8
    lm.feed(ids[:5])
    assert lm.crop(0, 3) == 2 and lm.forward_passes == 1  # within the window: a plain crop
    torch.testing.assert_close(lm.feed(ids[3:12]), full_logits(model, ids[:12]))
    assert lm.crop(0, 4) == 8  # past the window: the 4 kept tokens fed again
    assert (lm.length(0), lm.forward_passes, lm.tokens_fed) == (4, 3, 5 + 9 + 4)
    torch.testing.assert_close(lm.feed(ids[4:20]), full_logits(model, ids[:20]))
    assert lm.crop(0, 10) == 10  # kept tokens past the window themselves
    torch.testing.assert_close(lm.feed(ids[10:13]), full_logits(model, ids[:13]))
    assert lm.crop(0, 0) == 13 and lm.length(0) == 0
    torch.testing.assert_close(lm.feed(ids[:2]), full_logits(model, ids[:2]))
    lm.reset()
    torch.testing.assert_close(lm.feed(ids[5:9]), full_logits(model, ids[5:9]))
