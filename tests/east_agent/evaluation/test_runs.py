"""One run of a grid: the flags of its SimulEval command and the record of its folder."""

from pathlib import Path

from east_agent.evaluation.config import EvalConfig, Run
from east_agent.evaluation.runs import command_flags, run_record
from east_agent.evaluation.testsets import PreparedTestset


def test_command_flags_keep_zero_and_drop_only_false_and_none():
    flags = {"context_words": 0, "long_form": True, "document_level": False, "cache_budget": None}
    assert command_flags(flags) == ["--context-words", "0", "--long-form"]


def test_a_gold_sentence_run_is_recorded_apart_from_a_streaming_one():
    config = EvalConfig(Path("grid.yaml"), "multi30k.de-en.talks50", "m", Path("out"), {})
    testset = PreparedTestset("multi30k.de-en.talks50", Path("s"), Path("r"), "German",
                              "English", 20, "word", "13a")  # fmt: skip
    streaming = Run("east-low", "east", "low", "east", {"latency": "low", "long_form": True})
    gold = Run("east-gold-low", "east-gold", "low", "east", {"latency": "low"}, True)
    streaming_record = run_record(config, streaming, testset, (0, 20))
    gold_record = run_record(config, gold, testset, (0, 1000))
    assert "gold_sentences" not in streaming_record
    assert gold_record["gold_sentences"] is True
    assert gold_record["sentences"] == [0, 1000]
