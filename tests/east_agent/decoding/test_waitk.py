"""Wait-k baselines against cache-free references, their re-encoding cost, and SimulEval."""

import json
import random
import re

import pytest
import torch
from commands import WAITK_AGENT_FILE, run_simuleval
from lm_trace import TracingLM, assert_trace_matches_full_recompute

from east_agent.decoding import chunk_search
from east_agent.decoding.east import DecoderConfig
from east_agent.decoding.prompt import (
    END_OF_READ,
    END_OF_WRITE,
    render_user_turn,
    simt_instruction,
)
from east_agent.decoding.streaming import FORCED, READ, WRITE
from east_agent.decoding.units import unit_text
from east_agent.decoding.waitk import (
    EastWaitkDecoder,
    OfflineWaitkDecoder,
    WaitkConfig,
    split_prompt,
)
from east_agent.lm.checkpoint import end_of_turn_ids
from tiny_east import LEXICON, chain_model, cutting_model, synthetic_sentence

WAITK_AGENT = WAITK_AGENT_FILE


def toy_sentences(count, seed=0):
    rng = random.Random(seed)
    return [synthetic_sentence(rng)[0] for _ in range(count)]


class Recompute:
    """Greedy steps on the full id sequence, with no cache (the references below)."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.space_initial = {i for i, token in enumerate(tokens) if token.startswith("Ġ")}

    def ids(self, parts):
        ids, text = [], ""
        for part in parts:
            if isinstance(part, str):
                text += part
            else:
                ids += self.tokenizer(text, add_special_tokens=False).input_ids + part
                text = ""
        return ids + self.tokenizer(text, add_special_tokens=False).input_ids

    def next_token(self, ids, suppressed):
        with torch.no_grad():
            logits = self.model(torch.tensor([ids])).logits[0, -1].float()
        logits[list(suppressed)] = float("-inf")
        return int(logits.argmax())

    def word(self, prefix, suppressed, stops=(), first_suppressed=None):
        """Tokens up to the next one that starts with a space (or a stop token); the first
        under `first_suppressed`, if given."""
        word = []
        for _ in range(32):
            banned = suppressed if word or first_suppressed is None else first_suppressed
            token = self.next_token(prefix + word, banned)
            if token in stops or (word and token in self.space_initial):
                break
            word.append(token)
        return word

    def until_stop(self, prefix, suppressed, stops, cap):
        generated = []
        for _ in range(cap):
            token = self.next_token(prefix + generated, suppressed)
            if token in stops:
                break
            generated.append(token)
        return generated


def offline_reference(model, tokenizer, units, waitk):
    """Classic wait-k: re-render the offline prompt for every source prefix."""
    recompute = Recompute(model, tokenizer)
    head, tail = split_prompt(tokenizer, "German", "English")
    stops = end_of_turn_ids(tokenizer, model.generation_config.eos_token_id)
    # an EAST checkpoint's markers are no part of an offline translation
    suppressed = [
        tokenizer.bos_token_id,
        *tokenizer.convert_tokens_to_ids([END_OF_READ, END_OF_WRITE]),
    ]
    target, delays = [], []
    for read in range(1, len(units) + 1):
        source = "".join(unit_text(u, "de", first=i == 0) for i, u in enumerate(units[:read]))
        prefix = recompute.ids([head + source + tail, target])
        if read == len(units):
            target += recompute.until_stop(prefix, suppressed, stops, 128)
            delays.append(read)
        elif read >= waitk:
            word = recompute.word(prefix, suppressed, stops)
            if word:
                target += word
                delays.append(read)
    return tokenizer.decode(target, skip_special_tokens=True).rstrip(), delays


def east_waitk_reference(model, tokenizer, units, waitk):
    """An EAST stream on the wait-k schedule, recomputed from scratch at every token."""
    recompute = Recompute(model, tokenizer)
    eor, eow = tokenizer.convert_tokens_to_ids([END_OF_READ, END_OF_WRITE])
    stops = {*end_of_turn_ids(tokenizer, model.generation_config.eos_token_id), eow}
    parts = [render_user_turn(tokenizer, simt_instruction("de", "en", "low"))]
    chunks, delays = [], []
    for read, unit in enumerate(units, 1):
        parts.append(unit_text(unit, "de", first=read == 1))
        if read < waitk and read < len(units):
            continue
        parts.append(END_OF_READ)
        prefix = recompute.ids(parts)
        if read == len(units):
            suppressed = [eor, tokenizer.bos_token_id]
            cap = 2 * (read - (delays[-1] if delays else 0) + 25)
            chunk = recompute.until_stop(prefix, suppressed, stops, min(128, cap))
        else:
            suppressed = [eor, tokenizer.bos_token_id]
            chunk = recompute.word(prefix, suppressed, stops, [*stops, *suppressed])
        parts += [chunk, END_OF_WRITE]
        chunks.append(tokenizer.decode(chunk, skip_special_tokens=True).rstrip())
        delays.append(read)
    return chunks, delays


@pytest.mark.parametrize("waitk", [1, 3])
def test_offline_waitk_equals_full_recompute(east_model, east_tokenizer, waitk):
    decoder = OfflineWaitkDecoder(east_model, east_tokenizer, WaitkConfig("de", "en", waitk))
    for units in toy_sentences(4, seed=waitk):
        ours = decoder.translate(units)
        assert (ours.text, ours.delays) == offline_reference(
            east_model, east_tokenizer, units, waitk
        )
        assert ours.decisions[: waitk - 1] == [READ] * (waitk - 1)
        assert ours.decisions[-1] == FORCED
        assert ours.counters.tokens_reencoded > 0


def test_offline_waitk_reencodes_exactly_what_follows_the_source(east_model, east_tokenizer):
    decoder = OfflineWaitkDecoder(east_model, east_tokenizer, WaitkConfig("de", "en", 1))
    tail_length = len(east_tokenizer(decoder.tail, add_special_tokens=False).input_ids)
    first = decoder.push_unit("der")
    assert first.decision == WRITE and first.chunk_ids
    decoder.push_unit("alte")
    # The new unit lands before the end of the user turn: the assistant header and the
    # target prefix written so far (every token of the word was fed) are fed again.
    assert decoder.counters.tokens_reencoded == tail_length + len(first.chunk_ids)


def test_offline_waitk_serves_a_chat_model_without_east_tokens(east_model, tmp_path):
    from tiny_east import build_chat_llama3_tokenizer

    tokenizer = build_chat_llama3_tokenizer()  # no EAST tokens: any chat LLM will do
    decoder = OfflineWaitkDecoder(east_model, tokenizer, WaitkConfig("de", "en", 2))
    result = decoder.translate(["der", "Hund", "sitzt"])
    assert result.delays[0] >= 2 and result.text


@pytest.mark.parametrize("waitk", [1, 2, 4])
def test_east_waitk_equals_full_recompute_and_reencodes_nothing(east_model, east_tokenizer, waitk):
    config = DecoderConfig("de", "en", "low")
    decoder = EastWaitkDecoder(east_model, east_tokenizer, config, waitk)
    for units in toy_sentences(4, seed=10 + waitk):
        ours = decoder.translate(units)
        assert (ours.chunks, ours.delays) == east_waitk_reference(
            east_model, east_tokenizer, units, waitk
        )
        # The schedule: the first write after k units (or the end), then one per unit.
        first = min(waitk, len(units))
        assert ours.delays == list(range(first, len(units) + 1))
        assert ours.counters.tokens_reencoded == 0


@pytest.mark.parametrize("prompt", ["offline", "east"])
def test_waitk_finish_after_a_written_word(east_model, east_tokenizer, prompt):
    """The source's end arriving after a WRITE (nothing left to feed) writes the rest:
    the same target as flagging the last unit, in one more chunk. (Before, EAST's wait-k
    opened a new chunk after the word's end-of-write, and the model wrote the word again.)"""
    if prompt == "offline":
        decoder = OfflineWaitkDecoder(east_model, east_tokenizer, WaitkConfig("de", "en", 2))
    else:
        decoder = EastWaitkDecoder(east_model, east_tokenizer, DecoderConfig("de", "en"), 2)
    for units in toy_sentences(4, seed=3):
        flagged = decoder.translate(units)
        decoder.reset()
        for unit in units:
            last = decoder.push_unit(unit)
        assert last.decision == WRITE
        step = decoder.finish()
        late = decoder.streams[0]
        assert step.finished and late.decisions[-1] == FORCED
        assert late.decisions == flagged.decisions
        assert sum(late.chunk_ids, []) == sum(flagged.chunk_ids, [])
        assert "".join(late.chunks) == "".join(flagged.chunks)


def test_waitk_must_be_positive():
    with pytest.raises(ValueError, match="--waitk must be at least 1"):
        WaitkConfig("de", "en", 0)


@pytest.mark.parametrize("prompt", ["offline", "east"])
def test_waitk_agent_in_simuleval(east_checkpoint, tmp_path, prompt):
    sentences = toy_sentences(3, seed=20)
    (tmp_path / "src.txt").write_text("".join(" ".join(s) + "\n" for s in sentences))
    (tmp_path / "ref.txt").write_text(
        "".join(" ".join(LEXICON[w] for w in s) + "\n" for s in sentences)
    )
    result = run_simuleval(
        "--agent", WAITK_AGENT, "--waitk", "3", "--prompt", prompt,
        "--model-path", east_checkpoint, "--src-lang", "de", "--tgt-lang", "en",
        "--source", tmp_path / "src.txt", "--target", tmp_path / "ref.txt",
        "--output", tmp_path / "out",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    instances = [json.loads(line) for line in (tmp_path / "out" / "instances.log").open()]
    assert len(instances) == 3
    for instance in instances:
        assert instance["delays"] and instance["delays"][0] >= 3


def test_a_word_cut_inside_a_character_writes_it_once(east_tokenizer):
    """A word ends at its token cap (MAX_WORD_TOKENS) on the first byte of an emoji: the
    step after writes that emoji, and the steps join to the decoded target (before: the
    second step wrote the whole target again). The final write, cut the same way by
    `max_new_tokens`, ends before the emoji it cut (before: in U+FFFD)."""
    from transformers import LlamaForCausalLM

    from tiny_east import tiny_llama_config

    x, lead, tail, blank_line = 87, 76460, 222, 271  # "x", "😀" = [76460, 222], "\n\n"
    assert east_tokenizer.decode([lead, tail]) == "😀"
    follows = {blank_line: x, x: lead, lead: tail, tail: lead}

    def puppeteer(module, args, kwargs, out):
        """The model writes "x😀😀😀...", whatever it reads."""
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        for row, last in enumerate(input_ids[:, -1].tolist()):
            if last in follows:
                out.logits[row, -1, follows[last]] += 1000.0
        return out

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(east_tokenizer)).eval()
    model.register_forward_hook(puppeteer, with_kwargs=True)
    config = WaitkConfig("de", "en", 1, kv_cache="dynamic", max_new_tokens=4)
    decoder = OfflineWaitkDecoder(model, east_tokenizer, config)
    first = decoder.push_unit("Hallo")
    assert len(first.chunk_ids) == 32 and first.chunk_ids[-1] == lead  # cut inside "😀"
    assert first.chunk == "x" + "😀" * 15
    decoder.push_unit("Welt", is_last=True)
    translation = decoder.streams[0].translation()
    assert "".join(translation.chunks) == east_tokenizer.decode(sum(translation.chunk_ids, []))
    # the final write's cap cut the last "😀" too: its first byte left that write's ids
    assert translation.chunk_ids[-1] == [tail, lead, tail]
    assert translation.counters.characters_cut == 1


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_east_waitk_words_cut_inside_a_character_end_before_it(
    east_tokenizer, monkeypatch, kv_cache
):
    """Words of three tokens at most cut "𩸽" (four): each ends before it, its tokens out
    of the cache too (every forward sees exactly the stream's ids); the final chunk, cut
    by `max_new_tokens`, likewise."""
    monkeypatch.setattr(chunk_search, "MAX_WORD_TOKENS", 3)
    model = cutting_model(east_tokenizer)
    config = DecoderConfig("de", "en", max_new_tokens=8, kv_cache=kv_cache)
    decoder = EastWaitkDecoder(model, east_tokenizer, config, 2)
    trace = TracingLM(decoder.lm)
    decoder.wrap_lm(lambda lm: trace)
    translation = decoder.translate(["Ein", "Katze", "läuft", "schnell"])
    assert translation.chunks == [" a", " a", " a𩸽 a"]
    assert translation.counters.characters_cut == 3
    home = decoder.streams[0].home
    assert trace.ids[home] == decoder.stream.ids[: len(trace.ids[home])]
    assert_trace_matches_full_recompute(model, trace)


def test_offline_waitk_final_write_cut_inside_a_character_ends_before_it(east_tokenizer):
    model = cutting_model(east_tokenizer)
    config = WaitkConfig("de", "en", 9, max_new_tokens=8, kv_cache="static")
    translation = OfflineWaitkDecoder(model, east_tokenizer, config).translate(["Ein", "Hund"])
    assert translation.chunks == [" a𩸽 a"]
    assert translation.counters.characters_cut == 1


def test_offline_waitk_final_write_capped_after_the_model_s_own_u_fffd_keeps_it(
    east_tokenizer,
):
    model = cutting_model(east_tokenizer, character="\ufffd")
    config = WaitkConfig("de", "en", 9, max_new_tokens=4, kv_cache="static")
    translation = OfflineWaitkDecoder(model, east_tokenizer, config).translate(["Ein", "Hund"])
    assert translation.chunks == [" a\ufffd a\ufffd"]
    assert translation.counters.characters_cut == 0


def test_offline_waitk_final_write_inside_a_word_s_cut_character_writes_no_u_fffd(
    east_tokenizer, monkeypatch
):
    """A word cut "𩸽" after its first two tokens; the final write's one token does not
    complete it: the target ends before it (before: the final chunk was U+FFFD)."""
    monkeypatch.setattr(chunk_search, "MAX_WORD_TOKENS", 3)
    model = cutting_model(east_tokenizer)
    config = WaitkConfig("de", "en", 1, max_new_tokens=1, kv_cache="static")
    translation = OfflineWaitkDecoder(model, east_tokenizer, config).translate(["Ein", "Hund"])
    assert translation.chunks == [" a", ""]
    assert translation.counters.characters_cut == 1


def test_east_waitk_keeps_a_word_that_ends_in_u_fffd_before_its_cap(east_tokenizer):
    """Only a word its cap cut is checked for a cut character: a model's own U+FFFD at a
    word's end stays (whole_characters would take it for a cut)."""
    (article,) = east_tokenizer(" a", add_special_tokens=False).input_ids
    (lead,) = east_tokenizer.convert_tokens_to_ids(["ð"])  # a lone UTF-8 lead byte
    end_of_read = east_tokenizer.convert_tokens_to_ids("<|end-of-read|>")
    chain = {article: lead, lead: article, end_of_read: article}
    model = chain_model(east_tokenizer, chain, default=article)
    decoder = EastWaitkDecoder(model, east_tokenizer, DecoderConfig("de", "en"), 1)
    step = decoder.push_unit("Ein")
    assert step.chunk_ids == [article, lead] and step.chunk == " a\ufffd"
    assert decoder.counters.characters_cut == 0


def test_east_waitk_ends_a_word_at_the_models_end_of_write(east_tokenizer):
    """A model done with its sentence: its end-of-write after a word's first token ends
    the word (before: suppressed, the word ran on in `.` to its 32-token cap); as the
    word's first token it is refused, as the schedule asks for a word."""
    from transformers import LlamaForCausalLM

    from tiny_east import tiny_llama_config

    x, dot = east_tokenizer.convert_tokens_to_ids(["x", "."])
    eor, eow = east_tokenizer.convert_tokens_to_ids([END_OF_READ, END_OF_WRITE])
    # best first: end-of-write even as a word's first choice, which the schedule refuses
    choices = {eor: [eow, x], x: [eow, dot], dot: [eow, dot]}

    def puppeteer(module, args, kwargs, out):
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        for row, last in enumerate(input_ids[:, -1].tolist()):
            for rank, token in enumerate(choices.get(last, ())):
                out.logits[row, -1, token] += 1000.0 - 500.0 * rank
        return out

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(east_tokenizer)).eval()
    model.register_forward_hook(puppeteer, with_kwargs=True)
    config = DecoderConfig("de", "en", kv_cache="dynamic")
    decoder = EastWaitkDecoder(model, east_tokenizer, config, 1)
    assert decoder.push_unit("Ein").chunk_ids == [x]
    assert decoder.stream.ids[-2:] == [x, eow]  # the word closed as the model closed it


def test_offline_waitk_suppresses_bos_of_id_0_and_the_east_markers(east_model, east_tokenizer):
    """The demo model's tokenizer has its BOS at id 0: before, `if bos_token_id` took it
    for none, and offline wait-k could write it. An EAST checkpoint's markers: before,
    written, dropped from the text, and what the model wrote after them kept (the demo
    model: 43 of the first 200 Multi30k test sentences at k 3)."""
    import copy

    tokenizer = copy.deepcopy(east_tokenizer)
    tokenizer.bos_token = tokenizer.convert_ids_to_tokens(0)
    assert tokenizer.bos_token_id == 0
    decoder = OfflineWaitkDecoder(east_model, tokenizer, WaitkConfig("de", "en", 2))
    markers = tokenizer.convert_tokens_to_ids([END_OF_READ, END_OF_WRITE])
    assert decoder.suppress.nonzero()[:, 0].tolist() == sorted([0, *markers])
    from east_agent.decoding.waitk import offline_suppressed_ids

    assert offline_suppressed_ids(tokenizer, [0]) == markers  # a BOS that ends the turn


def test_a_latency_level_with_the_offline_prompt_is_refused():
    """The offline prompt asks for none (before: recorded in the run's settings, unused)."""
    with pytest.raises(ValueError, match="latency 'high' \\(--latency\\): the offline prompt"):
        WaitkConfig("de", "en", 2, prompt="offline", latency="high")
    assert WaitkConfig("de", "en", 2, prompt="east", latency="high").latency == "high"


@pytest.mark.parametrize(
    "waitk, error",
    [("3", "waitk: a whole number, got str '3'"), (2.5, "waitk: a whole number, got float 2.5"),
     (True, "waitk: a whole number, got bool True"), (0, "--waitk must be at least 1, got 0")],
)  # fmt: skip
def test_the_python_apis_waitk_is_a_whole_number(east_model, east_tokenizer, waitk, error):
    """As `WaitkConfig` takes it (before: `"3"` a comparison of str and int, 2.5 and True
    taken, their delays [3, 4] and [1, 2, 3, 4])."""
    kind = ValueError if waitk == 0 else TypeError
    with pytest.raises(kind, match=re.escape(error)):
        EastWaitkDecoder(east_model, east_tokenizer, DecoderConfig("de", "en"), waitk)
    with pytest.raises(kind):  # named as a field: "WaitkConfig.waitk must be int, got ..."
        WaitkConfig("de", "en", waitk)


def test_a_decoder_given_another_decoders_config_is_refused(east_model, east_tokenizer):
    """Before: the offline wait-k decoder ran on a DecoderConfig until its first WRITE
    asked for `waitk` (an AttributeError); the EAST decoder failed on a WaitkConfig's
    missing `num_beams`."""
    with pytest.raises(TypeError, match="OfflineWaitkDecoder takes a WaitkConfig, got Decoder"):
        OfflineWaitkDecoder(east_model, east_tokenizer, DecoderConfig("de", "en"))
    with pytest.raises(TypeError, match="EastWaitkDecoder takes a DecoderConfig, got WaitkConf"):
        EastWaitkDecoder(east_model, east_tokenizer, WaitkConfig("de", "en", 3), 3)


@pytest.mark.parametrize("prompt", ["offline", "east"])
def test_the_end_of_source_after_a_word_keeps_the_final_writes_cap(demo_model, prompt):
    """`finish()` after a word written at the last unit: the final write's cap counts that
    word, as the flag's forced write holds it (before, max_new_tokens 4, first 30 Multi30k
    sentences: the offline prompt's target differed in 21 at k 3, EAST's in 2: the word
    and a whole cap more). EAST's may differ only where that word alone is longer than
    the cap (it was written before the source's end was known)."""
    import gzip

    model, tokenizer = demo_model
    path = "east_agent/data/multi30k/test_2016_flickr.de.gz"
    sentences = [line.split() for line in gzip.open(path, "rt").read().splitlines()[:30]]
    config = WaitkConfig("de", "en", 3, prompt=prompt, max_new_tokens=4)
    if prompt == "east":
        decoder = EastWaitkDecoder(model, tokenizer, config.east_config(), 3)
    else:
        decoder = OfflineWaitkDecoder(model, tokenizer, config)
    longer_words = 0
    for units in sentences:
        flagged = decoder.translate(units)
        decoder.reset()
        for unit in units:
            decoder.push_unit(unit)
        decoder.finish()
        ended = decoder.streams[0].translation()
        if ended.text != flagged.text:
            assert prompt == "east" and len(ended.chunk_ids[-2]) > 4, (units, ended.text)
            longer_words += 1
    assert longer_words <= 1
