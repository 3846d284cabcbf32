"""The dynamic backend: the transformers-version shims (cache argument name, crop) and the
row protocol on one stream."""

import pytest
import torch
import transformers
from lm_trace import full_logits
from packaging.version import Version

from east_agent.lm import CachedLM, cache_argument_name

PROMPT = [128000, 128006, 882, 128007]


def test_cache_argument_is_the_one_this_transformers_reads(east_model):
    """transformers 5.24 renamed it (before: 5.18 to 5.23 were expected to read `cache`,
    as no test ran them; 5.22 is the last Python 3.10 installs)."""
    name = cache_argument_name(east_model)
    renamed = Version(transformers.__version__) >= Version("5.24")
    assert name == ("cache" if renamed else "past_key_values")


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


def test_beams_on_a_cache_of_other_layers_are_refused_before_decoding(east_model, monkeypatch):
    """A layer that keeps its length apart from its keys would be read at the wrong
    positions once `save` and `load` cut and join its rows by hand; one beam runs it."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicSlidingWindowLayer

    def other_layers(model):
        cache = DynamicCache()
        cache.layers = [DynamicSlidingWindowLayer(sliding_window=64)]
        return cache

    monkeypatch.setattr("east_agent.lm.dynamic.new_dynamic_cache", other_layers)
    with pytest.raises(ValueError, match="uses DynamicSlidingWindowLayer: decode it with one"):
        CachedLM(east_model, max_rows=3)


def test_a_sliding_window_model_crops_and_runs_beams_past_its_window():
    """transformers' sliding-window layer keeps a row's last positions only: once a row
    filled the window it could not be cut back (before: a RuntimeError at the next
    sentence's rewind to the prompt) nor run beams or streams (refused, "decode it with
    one beam", even for streams). Plain layers keep every position; the window still
    masks (a model without it gives other logits)."""
    config = transformers.MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=8,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.MistralForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0, 0.3)
    ids = [(7 * index) % 60 + 2 for index in range(24)]
    lm = CachedLM(model, max_rows=3)
    lm.feed(ids[:5])
    for token in ids[5:20]:
        lm.feed([token])
    assert lm.crop(0, 4) == 16 and lm.length(0) == 4
    torch.testing.assert_close(lm.feed(ids[4:20]), full_logits(model, ids[:20]))
    lm.fork(0, [1, 2])
    logits = lm.forward([0, 1, 2], [[10], [11], [12]])
    for row, token in enumerate((10, 11, 12)):
        torch.testing.assert_close(logits[row], full_logits(model, [*ids[:20], token]))
    lm.release([1, 2])
    unwindowed = transformers.MistralForCausalLM(
        transformers.MistralConfig(**{**config.to_dict(), "sliding_window": None})
    ).eval()
    unwindowed.load_state_dict(model.state_dict())
    assert not torch.allclose(full_logits(unwindowed, ids[:20]), full_logits(model, ids[:20]))
