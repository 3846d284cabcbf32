"""The static KV cache and lean forward: exact against transformers, rows independent,
same translations."""

import copy
import random
import weakref

import pytest
import torch
from lm_trace import TracingLM, assert_trace_matches_full_recompute, full_logits

from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
from east_agent.decoding.waitk import EastWaitkDecoder, OfflineWaitkDecoder, WaitkConfig
from east_agent.lm import CachedLM, StaticLM, build_lm, check_static, static
from east_agent.lm.build import logits_agree
from east_agent.lm.row_ops import PendingRowOps
from east_agent.lm.static import MIN_CAPACITY, RECOMPILE_LIMIT, WideRow, wide_groups
from tiny_east import synthetic_sentence

PROMPT = [128000, 128006, 882, 128007, 271, 35, 648, 5222, 374, 13]


def close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("graph_buckets", [False, True], ids=["eager", "padded-buckets"])
def test_static_steps_equal_full_recompute(east_model, graph_buckets):
    # padded-buckets: the padded, bucketed step that CUDA graphs capture, run eagerly here.
    lm = StaticLM(east_model, max_length=64, cuda_graphs=graph_buckets)
    assert (lm.graphs is not None) == graph_buckets
    ids = list(PROMPT)
    close(lm.feed(ids), full_logits(east_model, ids))
    for step in ([13], [2001, 3002, 4003], [77]):
        ids += step
        close(lm.feed(step), full_logits(east_model, ids))
    assert lm.crop(0, len(PROMPT) + 1) == 4  # roll back: only a counter moves
    ids = ids[: len(PROMPT) + 1] + [999, 998]
    close(lm.feed([999, 998]), full_logits(east_model, ids))
    assert (lm.forward_passes, lm.tokens_fed, lm.length(0)) == (5, 17, len(ids))


@pytest.mark.parametrize("group_cost", [static.GROUP_COST, 0], ids=["one-wide-group", "cut"])
def test_ragged_rows_each_at_their_own_positions(east_model, monkeypatch, group_cost):
    """One forward over rows of other lengths and token counts, in any order, some rows
    idle: every row's logits are those of its own sequence alone (CPUs: with the rows of
    several new tokens attended in one group, or cut into groups of their own lengths)."""
    monkeypatch.setattr(static, "GROUP_COST", group_cost)
    lm = StaticLM(east_model, max_length=64, max_rows=5)
    sequences = {0: list(PROMPT), 2: PROMPT[:3], 4: PROMPT[:7] + [55, 66], 3: PROMPT[:2]}
    for row, ids in sequences.items():
        lm.feed(ids, row=row)
    steps = {4: [1, 2, 3], 0: [13], 2: [20, 21], 3: [5, 6, 7, 8]}
    logits = lm.forward(list(steps), list(steps.values()))
    for (row, new), row_logits in zip(steps.items(), logits):
        sequences[row] += new
        close(row_logits, full_logits(east_model, sequences[row]))
        assert lm.length(row) == len(sequences[row])
    assert lm.length(1) == 0  # an untouched row stays empty
    # a second ragged step sees what the first one wrote
    logits = lm.forward([2, 4], [[9], [8, 7]])
    close(logits[0], full_logits(east_model, sequences[2] + [9]))
    close(logits[1], full_logits(east_model, sequences[4] + [8, 7]))


def test_wide_rows_are_cut_where_a_group_saves_more_than_it_costs():
    """Rows sorted by end, cut into runs: each row once, in order; long rows with many
    tokens apart from short rows with few; no cut that saves less than a group costs."""
    short = [WideRow(end=40 + i, row=i, token=3 * i, count=2) for i in range(30)]
    long = [WideRow(end=400 + i, row=30 + i, token=100 + 40 * i, count=30) for i in range(30)]
    parts = wide_groups(short + long, start=30)
    assert [row for part in parts for row in part] == short + long
    assert 2 <= len(parts) <= static.MAX_WIDE_GROUPS
    assert all(row in short for row in parts[0]) and all(row in long for row in parts[-1])
    alike = [WideRow(end=100, row=i, token=5 * i, count=4) for i in range(60)]
    assert wide_groups(alike, start=30) == [alike]  # cutting saves nothing
    assert wide_groups([], start=0) == []


def test_buffers_grow_past_their_first_capacity_and_keep_what_they_hold(east_model):
    lm = StaticLM(east_model, max_length=512, max_rows=2)
    assert lm.capacity == MIN_CAPACITY
    long = (PROMPT * 40)[:300]
    lm.feed(PROMPT, row=1)
    lm.feed(long, row=0)
    assert lm.capacity == 512
    close(lm.forward([1], [[5]])[0], full_logits(east_model, PROMPT + [5]))
    with pytest.raises(ValueError, match="exceed the 512"):
        lm.feed(PROMPT * 30, row=0)


def test_growing_buffers_let_each_old_one_go_before_the_next_is_made(east_model, monkeypatch):
    """Growing holds the new buffers and one old one, never both sets whole (on a device the
    new size nearly fills, both would not fit)."""
    lm = StaticLM(east_model, max_length=512, max_rows=2)
    lm.feed(PROMPT, row=1)
    old_buffers = [weakref.ref(buffer) for buffer in lm.keys + lm.values]
    alive_when_made, make = [], torch.zeros

    def zeros(*args, **kwargs):
        if len(args) == 1 and isinstance(args[0], tuple) and len(args[0]) == 4:
            alive_when_made.append(sum(ref() is not None for ref in old_buffers))
        return make(*args, **kwargs)

    monkeypatch.setattr(torch, "zeros", zeros)
    lm.feed((PROMPT * 40)[:300], row=0)
    monkeypatch.undo()
    assert lm.capacity == 512
    buffers = len(old_buffers)  # keys and values of each layer
    assert alive_when_made == list(range(buffers, 0, -1))
    close(lm.forward([1], [[5]])[0], full_logits(east_model, PROMPT + [5]))


OUT_OF_MEMORY = {
    "cuda": lambda: torch.cuda.OutOfMemoryError("CUDA out of memory (faked)"),
    # the CPU allocator's own words (before: taken for a failed fast path, and a batched
    # run went on with the dynamic cache, one stream)
    "cpu": lambda: RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 42949672960 bytes. Error code 12 (faked)"
    ),
}


@pytest.mark.parametrize("allocator", ["cuda", "cpu"])
def test_buffers_that_outgrow_the_device_name_their_size_and_stay_refused(
    east_model, monkeypatch, allocator
):
    """A growth the device cannot hold (an out-of-memory error, faked) says what the rows
    needed; the half-grown buffers are let go and never used."""
    lm = StaticLM(east_model, max_length=1024, max_rows=3)
    lm.feed(PROMPT, row=0)
    old_buffers = [weakref.ref(buffer) for buffer in lm.keys + lm.values]
    make, made = static._zeros, []

    def zeros(shape, dtype, device):
        if shape[2] > MIN_CAPACITY + static.TOKEN_BUCKETS[-1] and len(made) == 3:
            raise OUT_OF_MEMORY[allocator]()
        made.append(make(shape, dtype, device))
        return made[-1]

    monkeypatch.setattr(static, "_zeros", zeros)
    with pytest.raises(static.KVCacheMemoryError) as raised:
        lm.feed((PROMPT * 40)[:300], row=1)
    monkeypatch.undo()
    assert len(made) == 3  # the fourth of the grown buffers did not fit
    message = str(raised.value)
    assert "3 rows (streams x beams) of 512 positions need" in message and "--batch-size" in message
    assert raised.value.__suppress_context__  # the out-of-memory error's frames are not kept
    new_buffers = [weakref.ref(buffer) for buffer in made]
    made.clear()
    # gone, old and new, even while the error is held (a server keeps it for its sessions)
    assert all(ref() is None for ref in old_buffers + new_buffers)
    for operation in (
        lambda: lm.feed([5], row=0),  # row 0 lost its keys with the growth
        lambda: lm.fork(0, [2]),
        lambda: lm.save(0, 0),
        lambda: lm.share_prefix(0, 1),
    ):
        with pytest.raises(static.KVCacheMemoryError, match="does not fit"):
            operation()


def test_the_kv_cache_advice_sizes_an_8b_model():
    """Llama-3-8B in bfloat16 (32 layers, 8 kv heads of 128), 256 streams x 5 beams."""
    shape = (1280, 8, 512 + static.TOKEN_BUCKETS[-1], 128)
    advice = static.kv_cache_advice(32, shape, torch.bfloat16, torch.device("cpu"))
    assert "1280 rows (streams x beams) of 512 positions need 85.0 GiB (68.0 MiB a row)" in advice
    tiny = static.kv_cache_advice(2, (3, 2, 544, 16), torch.float32, torch.device("cpu"))
    assert "need 0.8 MiB" in tiny


def test_compiled_layers_equal_transformers_and_compile_a_few_times(east_model):
    """The CUDA default (compiled layers in padded buckets), run here on the CPU backend of
    torch.compile: the same logits, one compiled function for every layer, and a handful of
    compilations for all step sizes, cache lengths, rows and backends of a process."""
    from torch._dynamo.utils import counters

    graphs_before = counters["stats"]["unique_graphs"]
    lm = StaticLM(east_model, max_length=64, cuda_graphs=True, compile_layers=True)
    assert lm.compiled and all(plain is not None for plain in lm.plain)
    ids = list(PROMPT)
    close(lm.feed(ids), full_logits(east_model, ids))
    for step in ([13], [2001, 3002, 4003], [77], [5, 6], [7] * 9):
        ids += step
        close(lm.feed(step), full_logits(east_model, ids))
    # buckets 16, 1, 4 in two graphs (one token, or more): one per layer would make 4
    assert len(east_model.model.layers) == 2
    assert counters["stats"]["unique_graphs"] - graphs_before == 2
    # another backend: other capacity, beam rows, a prefill past the largest bucket
    other = StaticLM(east_model, max_length=100, max_rows=3, compile_layers=True)
    long_prompt = PROMPT * 4
    close(other.feed(long_prompt), full_logits(east_model, long_prompt))
    other.feed([9])
    other.fork(0, [1, 2])
    logits = other.forward([0, 1, 2], [[10, 20], [11, 21], [12, 22]])
    close(logits[2], full_logits(east_model, long_prompt + [9, 12, 22]))
    other.forward([0, 1, 2], [[1], [2], [3]])
    # one token or more x one row or more x buffers of one row or more (6 possible)
    assert counters["stats"]["unique_graphs"] - graphs_before <= 6 < RECOMPILE_LIMIT
    # the ragged step compiles too, and stays exact
    ragged = other.forward([2, 0], [[4, 5, 6], [7]])
    close(ragged[0], full_logits(east_model, long_prompt + [9, 12, 22, 3, 4, 5, 6]))
    close(ragged[1], full_logits(east_model, long_prompt + [9, 10, 20, 1, 7]))
    assert not counters["graph_break"]  # each layer is one graph
    assert not build_lm(east_model, "auto", probe_ids=PROMPT).compiled  # not on CPUs


@pytest.mark.parametrize("backend", ["static", "dynamic"])
def test_a_crop_outside_the_row_is_refused_on_both_backends(east_model, backend):
    """Before: a negative length was taken (the static row's length went to -1, and its
    next forward failed with an IndexError)."""
    lm = build_lm(east_model, backend)
    lm.forward([0], [PROMPT[:3]])
    for length in (-1, 4):
        with pytest.raises(ValueError, match=f"cannot crop a row of 3 positions to {length}"):
            lm.crop(0, length)
    assert lm.length(0) == 3 and lm.crop(0, 1) == 2 and lm.length(0) == 1


def test_static_beam_rows(east_model):
    lm = StaticLM(east_model, max_length=64, max_rows=3)
    lm.feed(PROMPT)
    lm.fork(0, [1, 2])
    lm.forward([0, 1, 2], [[10], [11], [12]])
    lm.copy_rows([0, 1, 2], [2, 2, 0], [len(PROMPT)] * 3)
    lm.forward([0, 1, 2], [[20], [21], [22]])
    lm.load(0, lm.save(1, len(PROMPT)))  # row 1: tokens 12 then 21
    lm.release([1, 2])
    assert (lm.length(0), lm.length(1)) == (len(PROMPT) + 2, 0)
    close(lm.feed([5]), full_logits(east_model, PROMPT + [12, 21, 5]))


def test_beams_of_one_stream_leave_other_streams_alone(east_model):
    lm = StaticLM(east_model, max_length=64, max_rows=6)
    lm.feed(PROMPT, row=0)
    lm.feed(PROMPT[:4], row=3)
    lm.fork(3, [4, 5])  # the second stream's beams: rows 3, 4, 5
    lm.forward([3, 4, 5, 0], [[10], [11], [12], [13, 14]])
    lm.copy_rows([3, 4, 5], [5, 3, 3], [4] * 3)
    lm.load(3, lm.save(4, 4))
    close(lm.feed([7], row=3), full_logits(east_model, PROMPT[:4] + [10, 7]))
    close(lm.feed([8], row=0), full_logits(east_model, PROMPT + [13, 14, 8]))


def test_one_copy_serves_the_beams_of_several_streams(east_model):
    """Two streams' re-rankings and a third's fork in one `copy_rows` (different lengths
    and starts, a swap whose rows are each other's source, a row copied onto itself): each
    row then holds what its source held, and its next logits are those of its ids."""
    lm = TracingLM(StaticLM(east_model, max_length=64, max_rows=9))
    lm.feed(PROMPT, row=0)
    lm.fork(0, [1, 2])
    lm.forward([0, 1, 2], [[10], [11], [12]])
    lm.feed(PROMPT[:4], row=3)
    lm.fork(3, [4, 5])
    lm.forward([3, 4, 5], [[20, 21], [22, 23], [24, 25]])
    lm.feed(PROMPT[:6] + [30], row=6)
    lm.copy_rows(
        [0, 1, 2, 3, 4, 5, 7, 8],
        [2, 0, 2, 5, 3, 3, 6, 6],
        [len(PROMPT)] * 3 + [4] * 3 + [0] * 2,
    )
    assert [lm.ids[row][-1] for row in range(9)] == [12, 10, 12, 25, 21, 21, 30, 30, 30]
    assert [lm.length(row) for row in (0, 4, 8)] == [len(PROMPT) + 1, 6, 7]
    lm.forward(list(range(9)), [[40 + row] for row in range(9)])
    assert_trace_matches_full_recompute(east_model, lm)


def test_copies_keep_the_shared_prompt_right(east_model, monkeypatch):
    """Rows that share the prompt (steps of such rows alone read it once for all) and rows
    that do not, copied onto each other from before the prompt's end and after it."""
    lm = TracingLM(StaticLM(east_model, max_length=64, max_rows=4))
    shared_steps, geometry = [], lm.inner._ragged_geometry

    def spy(rows, tokens):
        result = geometry(rows, tokens)
        shared_steps.append(result[0].shared)
        return result

    monkeypatch.setattr(lm.inner, "_ragged_geometry", spy)
    lm.feed(PROMPT, row=0)
    lm.share_prefix(0, len(PROMPT))
    lm.fork(0, [1])
    lm.feed(PROMPT[:3] + [50, 51, 52, 53, 54, 55, 56], row=2)  # as long, another prefix
    lm.copy_rows([3, 1], [2, 2], [0, 0])
    assert lm.sharing == {0}
    lm.forward([0, 1, 2, 3], [[60], [61], [62], [63]])
    lm.copy_rows([2], [0], [0])
    assert lm.sharing == {0, 2}
    lm.forward([2, 0], [[72], [70]])
    lm.forward([0, 1, 2, 3], [[80], [81], [82], [83]])
    lm.copy_rows([0], [2], [len(PROMPT) + 1])  # after the prompt: rows keep what they share
    assert lm.sharing == {0, 2}
    lm.forward([2, 0], [[92], [90, 91]])
    assert shared_steps == [False, True, False, True]
    assert_trace_matches_full_recompute(east_model, lm)


def test_row_copies_that_cannot_be_made_leave_the_cache_refused(east_model, monkeypatch):
    """Lengths move when a copy is asked for: if the copies then fail (here a faked CUDA
    out-of-memory error), no later step may run on rows that lack them."""
    lm = StaticLM(east_model, max_length=64, max_rows=3)
    lm.feed(PROMPT)
    with pytest.raises(ValueError, match="cannot save row 0 of 10 positions from 11"):
        lm.save(0, 11)
    lm.fork(0, [1, 2])

    def fail(self, buffers):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (faked)")

    monkeypatch.setattr(PendingRowOps, "make", fail)
    for _ in range(2):
        with pytest.raises(static.KVCacheMemoryError, match="copies did not fit") as raised:
            lm.forward([0, 1, 2], [[1], [2], [3]])
        assert raised.value.__suppress_context__ or raised.value.__context__ is None
    assert not lm.row_ops


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

    monkeypatch.setattr("east_agent.lm.build.check_static", fails)
    unprobed = copy.deepcopy(east_model)  # `east_model` passed its probe above
    assert isinstance(build_lm(unprobed, "auto", probe_ids=PROMPT), CachedLM)  # falls back
    with pytest.raises(ValueError, match="unknown kv cache"):
        build_lm(east_model, "paged")


def test_a_model_is_probed_once_per_static_path(east_model, monkeypatch):
    """A grid's worker builds a backend per run over one model: the probe runs for the first
    one-row and the first many-row backend only; another model, or the same one in another
    dtype, is probed again."""
    import east_agent.lm.build as build

    model, real_check, probed = copy.deepcopy(east_model), build.check_static, []

    def counted(model, static, probe_ids):
        probed.append(static.max_rows)
        real_check(model, static, probe_ids)

    monkeypatch.setattr(build, "check_static", counted)
    for rows in (1, 4, 1, 4, 8):
        assert isinstance(build_lm(model, "auto", max_rows=rows, probe_ids=PROMPT), StaticLM)
    assert probed == [1, 4]
    build_lm(copy.deepcopy(east_model), "auto", max_rows=4, probe_ids=PROMPT)
    assert probed == [1, 4, 4]
    build_lm(model.to(torch.float64), "auto", max_rows=4, probe_ids=PROMPT)  # `--fp16`'s way
    assert probed == [1, 4, 4, 4]


def test_auto_falls_back_from_compiled_to_plain_layers(east_model, monkeypatch):
    """The CUDA order of `auto` (compiled layers first), on the CPU: a compiled backend that
    fails its probe gives way to plain layers, which pass theirs."""
    import east_agent.lm.build as build

    real_check = build.check_static

    def compiled_ones_fail(model, static, probe_ids):
        if static.compiled:
            raise RuntimeError("its logits differ from the dynamic cache's on a probe")
        real_check(model, static, probe_ids)

    assert build.static_attempts(east_model) == (False,)  # a CPU model
    monkeypatch.setattr(build, "static_attempts", lambda model: (True, False))
    monkeypatch.setattr(build, "check_static", compiled_ones_fail)
    lm = build_lm(east_model, "auto", probe_ids=PROMPT)
    assert isinstance(lm, StaticLM) and not lm.compiled


@pytest.mark.parametrize("allocator", ["cuda", "cpu"])
def test_auto_does_not_fall_back_from_a_cache_the_device_cannot_hold(
    east_model, monkeypatch, allocator
):
    """Memory is no defect of the fast path: the dynamic cache would need as much, and
    could not batch the streams (its refusal would hide the reason)."""

    def no_memory(shape, dtype, device):
        raise OUT_OF_MEMORY[allocator]()

    monkeypatch.setattr(static, "_zeros", no_memory)
    with pytest.raises(static.KVCacheMemoryError, match="4 rows .* of 256 positions"):
        build_lm(east_model, "auto", max_length=1024, max_rows=4, probe_ids=PROMPT)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3])
def test_check_static_catches_a_wrong_fast_path(east_model, rows, dtype):
    model = east_model if dtype == torch.float32 else copy.deepcopy(east_model).to(dtype)
    lm = StaticLM(model, max_length=64, max_rows=rows)
    check_static(model, lm, PROMPT)  # the real one passes
    assert (lm.length(0), lm.forward_passes) == (0, 0)  # and leaves nothing behind
    broken = StaticLM(model, max_length=64, max_rows=rows)
    broken.cos = broken.cos.flip(0)  # wrong rotary positions
    with pytest.raises(RuntimeError, match="differ from the dynamic cache"):
        check_static(model, broken, PROMPT)


def test_check_static_catches_a_wrong_ragged_step(east_model, monkeypatch):
    lm = StaticLM(east_model, max_length=64, max_rows=2)
    real = lm._ragged_geometry

    def rows_swapped(rows, tokens):  # the ragged step writes and reads the wrong rows
        return real(list(reversed(rows)), tokens)

    monkeypatch.setattr(lm, "_ragged_geometry", rows_swapped)
    with pytest.raises(RuntimeError, match="differ from the dynamic cache"):
        check_static(east_model, lm, PROMPT)


def test_logits_agree_up_to_rounding_and_a_swapped_near_tie():
    want, tie = torch.tensor([4.0, 3.99, -2.0, 1.0]), 2 * torch.finfo(torch.bfloat16).eps
    assert logits_agree(want, want + 0.01, 1e-2, tie)
    assert logits_agree(want, torch.tensor([3.99, 4.0, -2.0, 1.0]), 5e-2, tie)  # a tie swapped
    assert not logits_agree(want, torch.tensor([4.0, 3.99, -2.0, 4.1]), 5e-2, tie)  # far off
    assert not logits_agree(want, torch.tensor([3.0, 2.99, -2.0, 1.0]), 5e-2, tie)  # all moved
    assert not logits_agree(want, torch.tensor([4.0, float("nan"), -2.0, 1.0]), 5e-2, tie)
    # within the tolerance everywhere, but first a token the dynamic path rates 3% lower
    want = torch.tensor([4.0, 3.88, -2.0, 1.0])
    assert not logits_agree(want, torch.tensor([3.9, 3.95, -2.0, 1.0]), 5e-2, tie)


def test_a_bfloat16_near_tie_keeps_the_static_cache(east_tokenizer):
    """Seed 36's random llama3-tiny ranks two tokens 0.6% of the largest logit apart on a
    ragged probe step, and bfloat16 swapped them on a CPU: the exact test sent the batched
    decoder to one dynamic stream (east-bench then failed in CI)."""
    from east_agent.bench.models import random_model

    model = random_model("llama3-tiny", east_tokenizer, torch.bfloat16, "cpu", seed=36)
    decoder = EastStreamDecoder(model, east_tokenizer, DecoderConfig("de", "en", "low"), 2)
    assert isinstance(decoder.lm, StaticLM) and decoder.max_streams == 2


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
    close(fused.feed(ids), separate_logits)
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
    lm = StaticLM(model, max_length=64, max_rows=2)
    qkv, gate_up = lm.fused[0]
    assert qkv is None and gate_up is not None  # LoRA layers stay as they are
    assert lm.plain[0] is None  # and run through their modules, not the tensor-only step
    close(lm.feed(PROMPT), full_logits(model, PROMPT))
    ragged = lm.forward([1, 0], [PROMPT[:3], [5, 6]])  # and batch like the others
    close(ragged[0], full_logits(model, PROMPT[:3]))
    close(ragged[1], full_logits(model, PROMPT + [5, 6]))


def tiny_llama_family(model_type: str, seed: int = 0, **config):
    """A random model of `model_type` (llama, mistral), weights large enough that a wrong
    position or frequency moves the logits by far more than rounding."""
    import transformers

    torch.manual_seed(seed)
    config_class = transformers.AutoConfig.for_model(
        model_type, vocab_size=101, hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=64, **config,
    )  # fmt: skip
    model = transformers.AutoModelForCausalLM.from_config(config_class).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0, 0.2)
    return model


LENGTH_DEPENDENT_ROPE = {
    "dynamic": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
    "longrope": {
        "rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0] * 8,
        "long_factor": [4.0] * 8, "original_max_position_embeddings": 32,
    },
}  # fmt: skip


@pytest.mark.parametrize("rope_type", LENGTH_DEPENDENT_ROPE)
def test_rotary_scaling_that_changes_with_the_length_stays_on_the_dynamic_cache(rope_type):
    """The static backend computes its rotary tables once: with `dynamic` or `longrope`
    scaling every position's rotation was wrong (before: `--kv-cache static` decoded with
    logits 0.5-6 off, its first token changed)."""
    import transformers

    rope = LENGTH_DEPENDENT_ROPE[rope_type]
    key = "rope_parameters" if "rope_parameters" in transformers.LlamaConfig().to_dict() else None
    model = tiny_llama_family("llama", **{key or "rope_scaling": rope})
    assert static.supports(model) == (
        f"{rope_type!r} rotary scaling (its frequencies change with the length seen)"
    )
    with pytest.raises(ValueError, match=f"does not run {rope_type!r} rotary scaling"):
        build_lm(model, "static")
    ids = [5, 17, 33, 2, 9, 41, 7, 8, 60, 3]
    lm = build_lm(model, "auto", probe_ids=ids)
    assert isinstance(lm, CachedLM)
    close(lm.feed(ids), full_logits(model, ids))
    yarn = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0}
    scaled = tiny_llama_family("llama", **{key or "rope_scaling": yarn})
    assert static.supports(scaled) is None  # the same frequencies at every length
    close(StaticLM(scaled, max_length=32).feed(ids), full_logits(scaled, ids))


def test_a_sliding_window_model_runs_static_within_its_window():
    """Mistral with a window of 16: rows of 16 positions or fewer attend to every position
    (before: refused whatever the length, a Mistral with its 4096 window always ran one
    stream); longer rows are refused."""
    model = tiny_llama_family("mistral", sliding_window=16)
    ids = list(range(3, 19))  # 16 positions
    assert static.supports(model, 16) is None
    lm = build_lm(model, "static", max_length=16, max_rows=2)
    close(lm.forward([0], [ids[:10]])[0], full_logits(model, ids[:10]))
    ragged = lm.forward([1, 0], [ids[:4], ids[10:]])
    close(ragged[0], full_logits(model, ids[:4]))
    close(ragged[1], full_logits(model, ids))
    assert "sliding-window attention beyond its window (16 positions" in static.supports(model, 17)
    assert static.supports(model) is not None
    with pytest.raises(ValueError, match="a --max-context of 16 or less runs it"):
        build_lm(model, "static", max_length=17)
    assert isinstance(build_lm(model, "auto", max_length=17, probe_ids=ids[:8]), CachedLM)


def test_auto_probes_within_the_smallest_context_a_decoder_accepts(east_model):
    """`--max-context` may leave the prompt 4 positions (`check_sentence_room`); the probe
    of a many-row backend fed 5 more (before: it overflowed its own backend and `auto`
    fell back to the dynamic cache, one stream, with a warning)."""
    model = copy.deepcopy(east_model)  # not probed yet in this process
    lm = build_lm(model, "auto", max_length=len(PROMPT) + 4, max_rows=2, probe_ids=PROMPT)
    assert isinstance(lm, StaticLM) and lm.max_rows == 2
    assert (lm.forward_passes, lm.lengths) == (0, [0, 0])  # the probe leaves nothing
