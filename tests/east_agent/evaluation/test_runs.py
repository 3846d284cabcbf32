"""One run of a grid: the flags of its SimulEval command."""

from east_agent.evaluation.runs import command_flags


def test_command_flags_keep_zero_and_drop_only_false_and_none():
    flags = {"context_words": 0, "long_form": True, "document_level": False, "cache_budget": None}
    assert command_flags(flags) == ["--context-words", "0", "--long-form"]
