"""When a beam search stops: transformers 4.44.2's rule ("reference") and 5.x's."""

import argparse
import copy
import random
from types import SimpleNamespace

import pytest
import torch
from lm_trace import generate_chunk
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from east_agent.decoding.batching import Sentence, translate_batch
from east_agent.decoding.chunk_search import ChunkLimits, beam_chunk
from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
from east_agent.decoding.streaming import Stream, run_feeds
from tiny_east import synthetic_sentence

STOP, A, C = 0, 1, 3
VOCAB = 10
PREFIX = [9, 9, 9]  # the home row's ids before the chunk (the last one pending)
# Next-token probabilities after each chunk prefix; the rest of the mass goes to the other
# ids, halving from one to the next (no ties), the stop id getting the least.
SCRIPT = {
    (): {A: 0.5, STOP: 0.45},
    (A,): {STOP: 0.449, C: 0.301},
    (A, C): {STOP: 0.99},
}


def distribution(given: dict[int, float]) -> torch.Tensor:
    probabilities = torch.zeros(VOCAB, dtype=torch.float64)
    others = [token for token in reversed(range(VOCAB)) if token not in given]
    weights = torch.tensor([0.5**rank for rank in range(len(others))], dtype=torch.float64)
    probabilities[others] = (1 - sum(given.values())) * weights / weights.sum()
    probabilities[list(given)] = torch.tensor(list(given.values()), dtype=torch.float64)
    return probabilities


class ScriptedLM:
    """An LM backend whose rows are plain id lists; the logits after a row depend on the ids
    it holds after the prefix (`SCRIPT`)."""

    def __init__(self, rows: int) -> None:
        self.rows = [list(PREFIX[:-1])] + [[] for _ in range(rows - 1)]

    def length(self, row: int) -> int:
        return len(self.rows[row])

    def forward(self, rows, tokens) -> torch.Tensor:
        logits = []
        for row, ids in zip(rows, tokens):
            self.rows[row] += ids
            chunk = tuple(self.rows[row][len(PREFIX) :])
            logits.append(distribution(SCRIPT.get(chunk, {})).log().float())
        return torch.stack(logits)

    def fork(self, source: int, targets) -> None:
        for target in targets:
            self.rows[target] = list(self.rows[source])

    def copy_rows(self, rows, sources, starts) -> None:
        copies = [list(self.rows[source]) for source in sources]
        for row, ids in zip(rows, copies):
            self.rows[row] = ids

    def save(self, row: int, start: int):
        return start, list(self.rows[row][start:])

    def load(self, row: int, saved) -> None:
        start, ids = saved
        self.rows[row] = self.rows[row][:start] + ids

    def release(self, rows) -> None:
        pass


class ScriptedModel(PreTrainedModel, GenerationMixin):
    """`SCRIPT` as a transformers model, for `generate` (no cache)."""

    config_class = PretrainedConfig

    def __init__(self) -> None:
        super().__init__(PretrainedConfig(vocab_size=VOCAB))
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, **kwargs) -> CausalLMOutputWithPast:
        chunks = [tuple(row[len(PREFIX) :].tolist()) for row in input_ids]
        last = torch.stack([distribution(SCRIPT.get(chunk, {})).log().float() for chunk in chunks])
        return CausalLMOutputWithPast(logits=last[:, None].expand(-1, input_ids.shape[1], -1))


def scripted_chunk(beam_stop: str) -> tuple[list[int], bool, list[int]]:
    """Beam-search one chunk (2 beams) on `SCRIPT`: (ids, stopped, the home row after)."""
    lm = ScriptedLM(rows=2)
    stream = Stream(lm, SimpleNamespace(added_tokens_decoder={}), (0, 1), max_context=64)
    limits = ChunkLimits(5, (STOP,), torch.zeros(VOCAB, dtype=torch.bool))
    program = beam_chunk(stream, PREFIX[-1:], limits, 2, beam_stop)
    feed = next(program)
    while True:
        (fed,) = run_feeds(lm, [feed])
        try:
            feed = program.send(fed)
        except StopIteration as stop:
            ids, stopped = stop.value
            return ids, stopped, lm.rows[0]


def test_the_stop_rules_pick_different_chunks():
    # Step 1: [A] runs (-0.69), [STOP] finishes at -0.80. Step 2: [A, STOP] finishes at
    # -1.49 / 2 = -0.75, the step's best candidate; the best beam still running, [A, C], has
    # -1.89 / 2 = -0.95, below the worst finished (-0.80): 5.x stops with [A]. 4.44.2 compares
    # the best candidate (-0.75) instead and goes on: [A, C, STOP] finishes at -1.90 / 3 = -0.63.
    assert scripted_chunk("reference") == ([A, C], True, PREFIX + [A, C])
    assert scripted_chunk("transformers") == ([A], True, PREFIX + [A])
    assert beam_search_4442(ScriptedModel(), PREFIX, 2, 5, (STOP,), []) == [A, C]


def test_the_transformers_rule_is_the_installed_generate():
    generated = ScriptedModel().generate(
        torch.tensor([PREFIX]),
        num_beams=2,
        do_sample=False,
        max_new_tokens=5,
        eos_token_id=[STOP],
        pad_token_id=STOP,
        length_penalty=1.0,
        early_stopping=False,
        use_cache=False,
    )
    output = generated[0, len(PREFIX) :].tolist()
    assert output == [A, STOP]
    assert scripted_chunk("transformers")[0] == output[:-1]


def test_an_unknown_stop_rule_is_refused():
    with pytest.raises(ValueError, match="beam_stop must be one of reference, transformers"):
        scripted_chunk("canonical")


class Hypotheses4442:
    """transformers 4.44.2's `BeamHypotheses` (length penalty 1): the best finished ones."""

    def __init__(self, num_beams: int) -> None:
        self.num_beams, self.beams, self.worst = num_beams, [], 1e9

    def add(self, ids: list[int], score: float) -> None:
        if len(self.beams) < self.num_beams or score > self.worst:
            self.beams.append((score, ids))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, index) for index, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def best(self) -> list[int]:
        return sorted(self.beams, key=lambda beam: beam[0])[-1][1]


def beam_search_4442(model, prefix, num_beams, max_new_tokens, stops, suppressed) -> list[int]:
    """transformers 4.44.2's `generate(num_beams=...)` for one sequence (`_beam_search` with
    `BeamSearchScorer`, `early_stopping=False`), recomputing every step: the new ids of the
    best hypothesis, stop token excluded."""
    hypotheses = Hypotheses4442(num_beams)
    beams, scores = [list(prefix)], torch.zeros(1)
    keep = max(2, 1 + len(stops)) * num_beams
    for generated in range(1, max_new_tokens + 1):
        with torch.no_grad():
            log_probs = torch.log_softmax(model(torch.tensor(beams)).logits[:, -1].float(), -1)
        log_probs[:, suppressed] = float("-inf")
        top, flat = torch.topk((log_probs + scores[:, None]).view(-1), keep)
        running = []
        for rank, (score, index) in enumerate(zip(top.tolist(), flat.tolist())):
            row, token = divmod(index, log_probs.shape[-1])
            if token not in stops:
                running.append((beams[row] + [token], score))
            elif rank < num_beams:
                hypotheses.add(beams[row][len(prefix) :], score / generated)
            if len(running) == num_beams:
                break
        beams, scores = [ids for ids, _ in running], torch.tensor([s for _, s in running])
        # BeamHypotheses.is_done(next_scores.max(), cur_len, decoder_prompt_len)
        full = len(hypotheses.beams) >= num_beams
        if full and hypotheses.worst >= top[0].item() / generated:
            return hypotheses.best()
    for ids, score in zip(beams, scores.tolist()):  # `finalize`: the running beams too
        hypotheses.add(ids[len(prefix) :], score / max_new_tokens)
    return hypotheses.best()


def toy_sentences(count: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [synthetic_sentence(rng)[0] for _ in range(count)]


@pytest.fixture(scope="module")
def eager_model(east_model, east_tokenizer):
    """The tiny model with its logits halved and end-of-write raised by 6: chunks end where
    they could, so that the two stop rules disagree on some of them."""
    model = copy.deepcopy(east_model)
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight * 0.5)
        head.bias.zero_()
        head.bias[east_tokenizer.convert_tokens_to_ids("<|end-of-write|>")] = 6.0
    model.lm_head = head
    return model


def decoder(model, tokenizer, beam_stop: str, streams: int = 1) -> EastStreamDecoder:
    config = DecoderConfig("de", "en", "low", num_beams=3, beam_stop=beam_stop)
    return EastStreamDecoder(model, tokenizer, config, streams=streams)


def chunk_searches(east, units):
    """(prefix up to end-of-read, the chunk's token cap, its ids) of each chunk of `units`."""
    translation = east.translate(units)
    stream = east.stream.ids
    ends_of_read = [i for i, token in enumerate(stream) if token == east.token_ids.end_of_read]
    delays = translation.delays
    caps = [2 * (delay - previous + 25) for previous, delay in zip([0, *delays], delays)]
    return [
        (stream[: end + 1], min(east.config.max_new_tokens, cap), ids)
        for end, cap, ids in zip(ends_of_read, caps, translation.chunk_ids)
    ]


def test_each_rule_picks_its_transformers_chunk(eager_model, east_tokenizer):
    """4.44.2's rule gives 4.44.2's chunks, 5.x's the installed `generate`'s, and the two
    differ on some chunks."""
    ids = decoder(eager_model, east_tokenizer, "reference").token_ids
    disagreements = 0
    for beam_stop in ("reference", "transformers"):
        ours = decoder(eager_model, east_tokenizer, beam_stop)
        for units in toy_sentences(10, seed=4):
            for prefix, cap, chunk_ids in chunk_searches(ours, units):
                old = beam_search_4442(
                    eager_model, prefix, 3, cap, ids.write_stops, list(ids.write_suppressed)
                )
                new = generate_chunk(eager_model, prefix, 3, cap, ids)
                assert chunk_ids == (old if beam_stop == "reference" else new)
                disagreements += old != new
    assert disagreements >= 3


def test_batched_reference_rule_equals_sequential(eager_model, east_tokenizer):
    sentences = toy_sentences(12, seed=4)
    expected = [decoder(eager_model, east_tokenizer, "reference").translate(u) for u in sentences]
    batched = decoder(eager_model, east_tokenizer, "reference", streams=4)
    jobs = [Sentence(index, units) for index, units in enumerate(sentences)]
    got = {outcome.key: outcome.translation for outcome in translate_batch(batched, jobs)}
    for index, translation in enumerate(expected):
        assert (got[index].chunk_ids, got[index].delays) == (
            translation.chunk_ids,
            translation.delays,
        )
        assert got[index].counters.forward_passes == translation.counters.forward_passes
    other = decoder(eager_model, east_tokenizer, "transformers")
    assert any(other.translate(u).chunk_ids != t.chunk_ids for u, t in zip(sentences, expected))


def test_the_agent_takes_beam_stop():
    from east_agent.agent import EastAgent

    parser = argparse.ArgumentParser()
    EastAgent.add_args(parser)
    required = ["--model-path", "m", "--src-lang", "de", "--tgt-lang", "en"]
    assert parser.parse_args(required).beam_stop == "reference"
    chosen = parser.parse_args([*required, "--beam-stop", "transformers"])
    assert EastAgent.decoding_config(chosen).beam_stop == "transformers"
    with pytest.raises(SystemExit):
        parser.parse_args([*required, "--beam-stop", "never"])
