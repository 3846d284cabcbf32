"""The equivalence benchmark's report of a difference (`benchmarks/batched_equivalence.py`):
in bfloat16 batched translations do differ, and the first difference must be found."""

import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from east_agent.decoding.batching import Outcome, StepFailed
from east_agent.decoding.chunk_search import REFERENCE
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


def test_a_sentence_the_batched_run_lost_raises_its_error(east_model, east_tokenizer):
    """Before: its outcome's translation, None, was compared, an AttributeError that hid
    why the sentence was lost."""
    import random

    script = load_script()
    units = [synthetic_sentence(random.Random(4))[0]]
    lost = StepFailed("the stream's program failed")

    def translate_batch(decoder, jobs):
        yield from (Outcome(job.key, len(job.units), error=lost) for job in jobs)

    script.translate_batch = translate_batch
    args = SimpleNamespace(beam_stop=REFERENCE, streams=1)
    with pytest.raises(StepFailed) as raised:
        script.compare(east_model, east_tokenizer, units, ["a reference"], "low", 1, args)
    assert raised.value is lost


@pytest.mark.parametrize(
    ("script", "flags", "said"),
    [
        ("batched_equivalence.py", ["--limit", "-998"], "argument --limit: takes a whole"),
        ("batched_equivalence.py", ["--streams", "0"], "argument --streams: takes a whole"),
        ("batched_equivalence.py", ["--levels", "fast"], "argument --levels: invalid choice"),
        ("long_form.py", ["--latency", "fast"], "argument --latency: invalid choice"),
        ("long_form.py", ["--context-words", "-5"], "argument --context-words: takes a whole"),
    ],
)
def test_the_scripts_refuse_bad_flags_before_loading(script, flags, said):
    """Before: `--limit -998` ran 2 sentences, exit 0; the others, tracebacks once the model
    had loaded."""
    ran = subprocess.run(
        [sys.executable, SCRIPT.parent / script, *flags, "--model-path", "/not/there"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 2 and said in ran.stderr and "Traceback" not in ran.stderr


@pytest.mark.parametrize("script", ["batched_equivalence.py", "long_form.py"])
def test_the_scripts_check_their_output_before_loading(script, tmp_path):
    """Before: the whole run, then an IsADirectoryError traceback."""
    ran = subprocess.run(
        [sys.executable, SCRIPT.parent / script, "--output", tmp_path, "--model-path", "/nope"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    name = script.removesuffix(".py")
    assert ran.returncode == 2
    assert ran.stderr.splitlines()[-1] == f"{name}: --output {tmp_path}: a folder; name a file"
