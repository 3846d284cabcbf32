"""Real `simuleval` command-line runs of the EAST agent on the tiny checkpoint."""

import json

import pytest
from commands import AGENT_FILE, agent_arguments, run_simuleval

from east_agent.decoding.east import DecoderConfig, EastStreamDecoder


def test_simuleval_run_writes_instances_and_scores(
    east_checkpoint, east_model, east_tokenizer, toy_test_set, tmp_path
):
    folder, sentences = toy_test_set
    result = run_simuleval(*agent_arguments(east_checkpoint, folder, tmp_path, "--latency", "low"))
    assert result.returncode == 0, result.stderr[-3000:]
    instances = [json.loads(line) for line in (tmp_path / "instances.log").read_text().splitlines()]
    assert len(instances) == 3
    header, values = (tmp_path / "scores.tsv").read_text().splitlines()
    assert {"BLEU", "AL", "LAAL"} <= set(header.split("\t"))
    assert len(values.split("\t")) == len(header.split("\t"))

    # The agent adds nothing: SimulEval saw exactly what the decoder writes, when it writes.
    decoder = EastStreamDecoder(east_model, east_tokenizer, DecoderConfig("de", "en", "low"))
    for instance, units in zip(instances, sentences):
        translation = decoder.translate(units)
        words = [w for chunk in translation.chunks for w in chunk.split()]
        assert instance["prediction"] == " ".join(words)
        expected_delays = [
            delay for chunk, delay in zip(translation.chunks, translation.delays)
            for _ in chunk.split()
        ]  # fmt: skip
        assert instance["delays"] == expected_delays
        assert instance["source_length"] == len(units)


def test_stock_simuleval_with_agent_class_and_beam_search(east_checkpoint, toy_test_set, tmp_path):
    folder, _ = toy_test_set
    arguments = agent_arguments(
        east_checkpoint, folder, tmp_path, "--latency-level", "medium", "--num-beams", "3"
    )
    arguments[0:2] = ["--agent-class", "east_agent.agent.EastAgent"]
    result = run_simuleval(*arguments, command="simuleval")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((tmp_path / "instances.log").read_text().splitlines()) == 3
    assert "Couldn't find ffmpeg" in result.stderr  # the stock command still warns


def test_east_simuleval_does_not_warn_about_ffmpeg(east_checkpoint, toy_test_set, tmp_path):
    folder, _ = toy_test_set
    # a process of its own: SimulEval warns as it is first imported
    result = run_simuleval(*agent_arguments(east_checkpoint, folder, tmp_path), in_process=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ffmpeg" not in result.stderr


def test_east_simuleval_leaves_a_callers_parsers_as_they_were(toy_test_set, tmp_path):
    """Flags are matched whole in the parsers the command makes (SimulEval's: `--latency`
    is the agent's, not `--latency-metrics`), not in a caller's after it (before: argparse's
    abbreviations off for good in the process that called `main`)."""
    import argparse

    folder, _ = toy_test_set
    arguments = agent_arguments(tmp_path / "no-model", folder, tmp_path / "out")
    result = run_simuleval(*arguments, "--latency", "low")
    assert result.returncode == 2 and "no-model" in result.stderr, result.stderr[-3000:]
    assert "no such metric" not in result.stderr  # --latency-metrics low
    assert argparse.ArgumentParser().allow_abbrev


@pytest.mark.parametrize(
    "flags, messages",
    [
        (["--latency", "instant"], ["invalid choice: 'instant'", "low-medium"]),
        (["--src-lang", "xx"], ["unknown language 'xx': use an ISO 639-1 code"]),
    ],
)
def test_unknown_latency_or_language_is_a_clear_error(
    east_checkpoint, toy_test_set, tmp_path, flags, messages
):
    folder, _ = toy_test_set
    result = run_simuleval(*agent_arguments(east_checkpoint, folder, tmp_path, *flags), timeout=120)
    assert result.returncode != 0
    assert all(message in result.stderr for message in messages)


@pytest.mark.parametrize(
    "value, message",
    [("0", "at least 1"), ("-3", "at least 1"), ("4096", "above the 512 positions")],
)
def test_a_bad_max_context_is_refused_before_loading(
    east_checkpoint, toy_test_set, tmp_path, value, message
):
    folder, _ = toy_test_set
    arguments = agent_arguments(east_checkpoint, folder, tmp_path / "out", "--max-context", value)
    result = run_simuleval(*arguments, timeout=120)
    assert result.returncode != 0
    assert "context" in result.stderr and message in result.stderr
    assert not (tmp_path / "out" / "instances.log").exists()


@pytest.mark.parametrize("flags", [(), ("--long-form",)])
def test_empty_source_line_is_named_before_loading(east_checkpoint, tmp_path, flags):
    """A sentence file with a blank line, or a talk written as paragraphs with blank lines
    between them (in long form a line is a whole talk)."""
    (tmp_path / "src.txt").write_text("Die Katze\n\nDer Hund\n")
    (tmp_path / "ref.txt").write_text("The cat\n\nThe dog\n")
    arguments = agent_arguments(east_checkpoint, tmp_path, tmp_path / "out", *flags)
    result = run_simuleval(*arguments, timeout=120)
    assert result.returncode != 0
    assert "src.txt: line 2: empty source sentence" in result.stderr
    assert "join the paragraphs of a talk into one line" in result.stderr
    assert not (tmp_path / "out" / "instances.log").exists()


@pytest.mark.parametrize(
    "source, message",
    [
        ("Die Katze\nDer Hund\xe9\n".encode("latin-1"), "src.txt: line 2: not UTF-8 (byte 0xe9"),
        (b"Die Katze\nDer\rHund\n", "src.txt: line 2"),
    ],
)
def test_a_source_simuleval_would_misread_is_named_before_loading(
    east_checkpoint, tmp_path, source, message
):
    (tmp_path / "src.txt").write_bytes(source)
    (tmp_path / "ref.txt").write_text("The cat\nThe dog\n")
    result = run_simuleval(
        *agent_arguments(east_checkpoint, tmp_path, tmp_path / "out"), timeout=120
    )
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_missing_checkpoint_is_a_clear_error(toy_test_set, tmp_path):
    folder, _ = toy_test_set
    result = run_simuleval(
        *agent_arguments(tmp_path / "no-such-model", folder, tmp_path / "out"), timeout=120
    )
    assert result.returncode != 0
    assert "no-such-model' does not exist" in result.stderr


def test_latency_of_a_run_without_words_is_nan_not_a_crash():
    """SimulEval's scorers took the mean of nothing (fixed for every path that scores)."""
    import math
    from types import SimpleNamespace

    from simuleval.evaluator.scorers.latency_scorer import ALScorer

    from east_agent.simuleval_glue import simuleval_fixes

    silent = {0: SimpleNamespace(delays=[], metrics={}), 1: SimpleNamespace(delays=[], metrics={})}
    simuleval_fixes.apply()
    assert math.isnan(ALScorer()(silent))


def test_a_long_form_run_reads_each_talk_as_one_instance(east_checkpoint, tmp_path):
    """Two talks of many sentences each, with a cache budget far below a talk's length."""
    import random

    from tiny_east import LEXICON, synthetic_sentence

    rng = random.Random(21)
    talks, references = [], []
    for _ in range(2):
        sentences = [synthetic_sentence(rng)[0] for _ in range(25)]
        talks.append(" ".join(" ".join(s[:-1] + [s[-1] + "."]) for s in sentences))
        references.append(" ".join(" ".join(LEXICON[w] for w in s) for s in sentences))
    (tmp_path / "src.txt").write_text("".join(talk + "\n" for talk in talks))
    (tmp_path / "ref.txt").write_text("".join(line + "\n" for line in references))
    arguments = agent_arguments(east_checkpoint, tmp_path, tmp_path / "out")
    result = run_simuleval(*arguments, "--long-form", "--cache-budget", "150")
    assert result.returncode == 0, result.stderr[-3000:]
    records = [
        json.loads(line) for line in (tmp_path / "out" / "instances.log").read_text().splitlines()
    ]
    assert len(records) == 2
    for record, talk in zip(records, talks):
        assert record["source_length"] == len(talk.split()) > 150
        assert record["delays"] == sorted(record["delays"])
        assert len(record["prediction"].split()) > len(talk.split()) / 2  # every segment wrote


def test_help_shows_this_commands_flags_with_or_without_an_agent():
    alone = run_simuleval("--help", timeout=120)
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert "--batch-size N" in alone.stdout and "--source SOURCE" in alone.stdout
    assert "--comet-checkpoint" in alone.stdout  # added by SimulEval only when asked for
    with_agent = run_simuleval("--agent", AGENT_FILE, "--standalone", "--help", timeout=120)
    assert with_agent.returncode == 0, with_agent.stderr[-2000:]
    assert "--batch-size N" in with_agent.stdout and "--latency" in with_agent.stdout
    # SimulEval's Slurm flags are refused, so not offered (before: --slurm-partition etc.)
    for shown in (alone.stdout, with_agent.stdout):
        assert shown.count("--slurm") == 1 and "--slurm are refused" in shown


@pytest.mark.parametrize("flags", [(), ("--batch-size", "2")])
def test_more_beams_than_the_vocabulary_holds_are_refused_before_loading(
    east_checkpoint, east_model, east_tokenizer, toy_test_set, tmp_path, flags
):
    """The bound is the beam search's own (its first step takes `max(2, 1 + stops) x beams`
    tokens), read from the checkpoint's files: before, refused by east-bench alone, and a
    run failed at its first beam search after the model loaded."""
    import argparse

    from east_agent.lm.checkpoint import east_token_ids
    from east_agent.simuleval_glue.adapter import check_beams_in_vocabulary

    vocab = east_model.get_output_embeddings().weight.shape[0]
    stops = east_token_ids(east_tokenizer, east_model.generation_config.eos_token_id).write_stops
    most = vocab // max(2, 1 + len(stops))
    args = argparse.Namespace(model_path=str(east_checkpoint), trust_remote_code=False)
    check_beams_in_vocabulary(args, most)
    with pytest.raises(ValueError, match=f"vocabulary of {vocab}; at most {most} beams here$"):
        check_beams_in_vocabulary(args, most + 1)

    folder, _ = toy_test_set
    arguments = agent_arguments(
        east_checkpoint, folder, tmp_path / "out", "--num-beams", most + 1, *flags
    )
    result = run_simuleval(*arguments, timeout=120)
    assert result.returncode != 0
    assert f"--num-beams {most + 1}: a beam search step takes" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "instances.log").exists()
