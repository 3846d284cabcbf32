"""The equivalence benchmark's report of a difference (`benchmarks/batched_equivalence.py`):
in bfloat16 batched translations do differ, and the first difference must be found."""

import importlib.util
from dataclasses import replace
from pathlib import Path

from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
from east_agent.decoding.streaming import FORCED, WRITE
from tiny_east import synthetic_sentence

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "batched_equivalence.py"


def load_script():
    spec = importlib.util.spec_from_file_location("batched_equivalence", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_batched_translation_with_more_chunks_is_compared(east_model, east_tokenizer):
    """Before: the sequential translation's chunk caps were used for both, an IndexError
    where the batched one had more chunks (200 bfloat16 sentences on a CPU)."""
    import random

    script = load_script()
    decoder = EastStreamDecoder(east_model, east_tokenizer, DecoderConfig("de", "en", "low"))
    units = synthetic_sentence(random.Random(4))[0]
    sequential = decoder.translate(units)
    # the batched run wrote after every unit: one chunk (of one token) each
    batched = replace(
        sequential,
        decisions=[WRITE] * (len(units) - 1) + [FORCED],
        chunk_ids=[[east_tokenizer.eos_token_id]] * len(units),
        delays=list(range(1, len(units) + 1)),
    )
    assert len(batched.chunk_ids) > len(sequential.chunk_ids)
    at, margin, median = script.first_margin(decoder, units, batched)
    mine = script.outcomes(sequential, decoder.config.max_new_tokens)
    theirs = script.outcomes(batched, decoder.config.max_new_tokens)
    assert at == script.first_difference(mine, theirs) and mine[:at] == theirs[:at]
    assert margin >= 0 and median >= 0
