"""The transformers-version shims: cache argument name and crop semantics."""

import torch
import transformers

from east_agent.kv_cache import CachedLM, cache_argument_name


def test_cache_argument_is_the_one_this_transformers_reads(east_model):
    name = cache_argument_name(east_model)
    expected = "past_key_values" if transformers.__version__.startswith("5.17.") else "cache"
    assert name == expected


def test_feeding_fills_the_cache(east_model):
    # With the wrong keyword transformers 5.17 silently ignores the cache: this would fail.
    lm = CachedLM(east_model)
    lm.feed([128000, 128006, 882, 128007])
    assert lm.length == 4
    lm.feed([271])
    assert lm.length == 5
    assert (lm.forward_passes, lm.tokens_fed) == (2, 5)


def test_crop_keeps_a_prefix_and_refeeding_matches_a_fresh_run(east_model):
    ids = [128000, 128006, 882, 128007, 271, 13347, 1070]
    lm = CachedLM(east_model)
    lm.feed(ids)
    assert lm.crop(4) == 3
    assert lm.length == 4
    logits = lm.feed(ids[4:])
    with torch.no_grad():
        fresh = east_model(torch.tensor([ids])).logits[0, -1]
    torch.testing.assert_close(logits, fresh, atol=1e-5, rtol=1e-5)
    assert lm.crop(lm.length) == 0


def test_beam_rows_expand_reorder_and_restore(east_model):
    lm = CachedLM(east_model)
    lm.feed([128000, 128006, 882])
    prefix = lm.snapshot()
    lm.expand(3)
    assert lm.rows == 3
    lm.forward(torch.tensor([[10], [11], [12]]))
    lm.reorder(torch.tensor([2, 2, 0]))
    suffix = lm.row_suffix(0, 3)
    lm.restore(prefix, suffix)
    assert (lm.rows, lm.length) == (1, 4)
    logits = lm.feed([13])
    with torch.no_grad():
        fresh = east_model(torch.tensor([[128000, 128006, 882, 12, 13]])).logits[0, -1]
    torch.testing.assert_close(logits, fresh, atol=1e-5, rtol=1e-5)
