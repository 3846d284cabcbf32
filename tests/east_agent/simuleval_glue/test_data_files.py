"""A run's source and reference files, checked before anything loads (`data_files`)."""

from __future__ import annotations

import gzip
import re
from dataclasses import replace
from functools import partial

import pytest
from commands import REPO

from east_agent.agent import EastAgent
from east_agent.decoding.east import DecoderConfig
from east_agent.decoding.long_form import prompt_tokens
from east_agent.decoding.streaming import ContextOverflowError
from east_agent.decoding.waitk import WaitkConfig
from east_agent.simuleval_glue import data_files
from east_agent.waitk_agent import WaitkAgent


@pytest.fixture
def counted_reads(monkeypatch):
    """How many times each file was read by the source check."""
    reads: list[str] = []
    read = data_files.read_simuleval_lines

    def counting(path):
        reads.append(str(path))
        return read(path)

    monkeypatch.setattr(data_files, "read_simuleval_lines", counting)
    return reads


def test_good_files_are_read_once_until_they_change(tmp_path, counted_reads):
    """`east-simuleval` checks the files before SimulEval builds the agent, and the agent
    checks them again: the second check reads nothing, unless a file changed in between."""
    source, target = tmp_path / "src.txt", tmp_path / "ref.txt"
    source.write_text("Die Katze\nDer Hund\n")
    target.write_text("The cat\nThe dog\n")
    data_files.check_source_file(str(source), str(target))
    data_files.check_source_file(str(source), str(target))
    assert counted_reads == [str(source), str(target)]

    target.write_text("The cat\nThe dog\nThe bird\n")
    with pytest.raises(ValueError, match="has 2 lines but .*ref.txt has 3"):
        data_files.check_source_file(str(source), str(target))
    source.write_text("Die Katze\n\nDer Vogel\n")
    with pytest.raises(ValueError, match="src.txt: line 2: empty source sentence"):
        data_files.check_source_file(str(source), str(target))


def test_a_bad_file_is_refused_every_time(tmp_path, counted_reads):
    source = tmp_path / "src.txt"
    source.write_text("Die Katze\n\nDer Hund\n")
    for _ in range(2):
        with pytest.raises(ValueError, match="line 2: empty source sentence"):
            data_files.check_source_file(str(source))
    assert counted_reads == [str(source)] * 2


@pytest.mark.parametrize(
    "start, end, message",
    [
        (-1, -1, "--start-index -1: must be at least 0 \\(.*src.txt has 3 lines\\)"),
        (-2, 2, "--start-index -2: must be at least 0"),
        (4, -1, "--start-index 4: must be at most the number of lines 3 \\(.*src.txt has 3"),
        (2, 1, "--start-index 2: must be at most --end-index 1"),
        (0, 4, "--end-index 4: must be at most 3 \\(.*src.txt has 3 lines\\)"),
    ],
)
def test_sentence_indices_outside_the_source_file_are_refused(tmp_path, start, end, message):
    source = tmp_path / "src.txt"
    source.write_text("Die Katze\nDer Hund\nDer Vogel\n")
    arguments = ["--source", str(source), "--start-index", str(start), "--end-index", str(end)]
    with pytest.raises(ValueError, match=message):
        data_files.check_data_files(arguments)


@pytest.mark.parametrize(
    "arguments, span",
    [
        ([], (0, 3)),
        (["--start-index", "2"], (2, 3)),
        (["--start-index", "1", "--end-index", "3"], (1, 3)),
        (["--start-index", "3", "--end-index", "3"], (3, 3)),  # an empty shard's
    ],
)
def test_sentence_indices_within_the_source_file_give_their_span(tmp_path, arguments, span):
    source = tmp_path / "src.txt"
    source.write_text("Die Katze\nDer Hund\nDer Vogel\n")
    flags = ["--source", str(source), "--no-scoring", *arguments]
    assert data_files.check_data_files(flags) == span


def test_a_scored_run_needs_its_references(tmp_path):
    source = tmp_path / "src.txt"
    source.write_text("Die Katze\n")
    with pytest.raises(ValueError, match="--target: no reference file; the scores need one"):
        data_files.check_data_files(["--source", str(source)])
    target = tmp_path / "ref.txt"
    target.write_text("The cat\n")
    assert data_files.check_data_files(["--source", str(source), "--target", str(target)])


@pytest.mark.parametrize(
    "reference, said",
    [
        ("The\tcat", "line 2: a tab, or spaces doubled or at either end"),
        ("The  cat", "line 2: a tab, or spaces doubled or at either end"),
        ("The cat ", "line 2: a tab, or spaces doubled or at either end"),
        ("", "line 2: empty reference sentence"),
        (" \u200b ", "line 2: empty reference sentence"),
    ],
)
def test_references_simuleval_would_count_wrong_are_refused(tmp_path, reference, said):
    """Before, exit 0: tabs scored AL -32, doubled spaces LAAL 2.8 for 1.3, an empty
    reference AP 1.93 (SimulEval counts a reference's words between single spaces)."""
    source, target = tmp_path / "src.txt", tmp_path / "ref.txt"
    source.write_text("Ein Hund\nDie Katze\n")
    target.write_text(f"A dog\n{reference}\n")
    flags = ["--source", str(source), "--target", str(target)]
    with pytest.raises(ValueError, match=f"ref.txt: {said}"):
        data_files.check_data_files(flags)
    in_characters = [*flags, "--eval-latency-unit", "char"]  # counted otherwise: spacing is not
    if "empty" not in said:
        assert data_files.check_data_files(in_characters) == (0, 2)
    else:
        with pytest.raises(ValueError, match=f"ref.txt: {said}"):
            data_files.check_data_files(in_characters)


def test_a_source_line_of_invisible_characters_is_empty(tmp_path):
    """Before: a line of U+200B was "translated", exit 0."""
    source = tmp_path / "src.txt"
    source.write_text("Ein Hund\n\u200b\u2060\n")
    with pytest.raises(ValueError, match=r"src.txt: line 2: empty source sentence"):
        data_files.check_data_files(["--source", str(source), "--no-scoring"])


def test_an_empty_source_file_is_refused(tmp_path):
    """Before: scored as NaN, exit 0."""
    source = tmp_path / "src.txt"
    source.write_text("")
    with pytest.raises(ValueError, match=r"src.txt: no source sentence \(an empty file\)"):
        data_files.check_data_files(["--source", str(source), "--no-scoring"])


def test_a_chinese_source_of_raw_text_is_refused(tmp_path, east_tokenizer):
    """Before: each raw sentence read as one unit, AL 1.0, exit 0."""
    from east_agent.decoding.units import source_units

    text = "是否有途径处罚他，以免再次发生这样的事情"
    source = tmp_path / "src.txt"
    source.write_text(text + "\n")
    with pytest.raises(ValueError, match=r"line 1: '是否有途径.*' is one unit of 20 characters"):
        data_files.check_units_split(str(source), "zh")
    data_files.check_units_split(str(source), "de")  # a spaced language: words are units
    units = source_units(text + " ▁Übersetzungsprogramme", "zh", east_tokenizer)
    source.write_text(" ".join(units) + "\n")
    data_files.check_units_split(str(source), "Chinese")  # split: taken, a long Latin word too


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--dataloader", "text-to-txt"], "--dataloader text-to-txt: no such dataloader"),
        (["--user-dir", "nowhere"], "--user-dir nowhere: no such folder"),
        (["--dataloader-class", "Mine", "--dataloader", "d"], "--dataloader-class Mine: a dot"),
        (["--dataloader-class", "nomodule.Mine", "--dataloader", "d"], "module nomodule does no"),
        (["--dataloader-class", "json.Mine", "--dataloader", "d"], "json has no class Mine"),
        (["--dataloader-class", "json.JSONDecoder"], "json.JSONDecoder without --dataloader"),
        (["--user-dir", "{broken}"], "does not import (ZeroDivisionError: division by zero)"),
    ],
)
def test_dataloader_flags_simuleval_would_fail_on_are_refused(tmp_path, flags, said):
    """Before: SimulEval's AssertionError or ModuleNotFoundError traceback, once the model
    had loaded and the output folder's log had been emptied."""
    broken = tmp_path / "broken_agents"
    broken.mkdir()
    (broken / "__init__.py").write_text("1 / 0\n")
    flags = [flag.format(broken=broken) for flag in flags]
    with pytest.raises(ValueError, match=re.escape(said)):
        data_files.check_dataloader_flags(flags)


def test_a_dataloader_a_user_dir_registers_is_known(tmp_path):
    package = tmp_path / "my_loaders"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from simuleval.data.dataloader import register_dataloader\n"
        "from simuleval.data.dataloader.t2t_dataloader import TextToTextDataloader\n"
        "@register_dataloader('my-text-lines')\n"
        "class MyLines(TextToTextDataloader):\n"
        "    pass\n"
    )
    with pytest.raises(ValueError, match="--dataloader my-text-lines: no such dataloader"):
        data_files.check_dataloader_flags(["--dataloader", "my-text-lines"])
    data_files.check_dataloader_flags(["--user-dir", str(package), "--dataloader", "my-text-lines"])
    data_files.check_dataloader_flags(
        ["--dataloader-class", "json.JSONDecoder", "--dataloader", "j"]
    )


MULTI30K_DE = REPO / "east_agent" / "data" / "multi30k" / "test_2016_flickr.de.gz"


@pytest.mark.parametrize(
    "agent, config",
    [
        (EastAgent, DecoderConfig("de", "en")),
        (WaitkAgent, WaitkConfig("de", "en", 3)),
        (WaitkAgent, WaitkConfig("de", "en", 3, prompt="east")),
    ],
    ids=["east", "waitk-offline", "waitk-east"],
)
def test_a_context_below_a_sentences_fewest_tokens_overflows(demo_model, agent, config):
    """`source_tokens` is a lower bound: one token less than the prompt and a sentence's
    source, and the decoder overflows, whatever it reads and writes (so a --max-context
    `check_sentences_fit` refuses would have failed every sentence)."""
    model, tokenizer = demo_model
    lines = gzip.open(MULTI30K_DE, "rt").read().splitlines()[:8]
    fixed = prompt_tokens(tokenizer, *agent.fixed_prompt(tokenizer, config))
    for line, tokens in zip(lines, data_files.source_tokens(lines, tokenizer, "de")):
        limited = replace(config, max_context=fixed + tokens - 1)
        decoder = agent.build_decoder(model, tokenizer, limited)
        with pytest.raises(ContextOverflowError):
            decoder.translate(line.split())


def test_the_fewest_tokens_are_the_source_ids_an_east_stream_holds(demo_model):
    """Tight too: what an EAST stream holds of a sentence, less its prompt, chunks and
    EAST tokens, is its source's ids, `source_tokens` of them, however its writes cut it."""
    model, tokenizer = demo_model
    lines = gzip.open(MULTI30K_DE, "rt").read().splitlines()[:8]
    decoder = EastAgent.build_decoder(model, tokenizer, DecoderConfig("de", "en"))
    for line, tokens in zip(lines, data_files.source_tokens(lines, tokenizer, "de")):
        translation = decoder.translate(line.split())
        stream = decoder.streams[0]
        written = sum(map(len, stream.chunk_ids)) + 2 * len(stream.chunk_ids)  # EOR, EOW
        assert len(stream.tokens.ids) - stream.tokens.prompt_length - written == tokens
        assert len(translation.chunks) > 1  # writes cut its source


def test_a_max_context_is_refused_where_no_sentence_fits(demo_model, tmp_path):
    """Refused where the shortest sentence of those to translate does not fit; where one
    fits, the run goes on (the others fail alone, as any sentence too long)."""
    _, tokenizer = demo_model
    source = tmp_path / "src.txt"
    source.write_text("Ein Mann sitzt auf einer Bank .\nZwei Hunde .\nEine Frau liest ein Buch .\n")
    lines = source.read_text().splitlines()
    needs = [30 + tokens for tokens in data_files.source_tokens(lines, tokenizer, "de")]
    assert needs[1] == min(needs) < needs[0]
    check = partial(data_files.check_sentences_fit, str(source), tokenizer=tokenizer)
    check((0, -1), language="de", fixed_tokens=30, max_context=needs[1])
    with pytest.raises(ValueError) as refused:
        check((0, -1), language="de", fixed_tokens=30, max_context=needs[1] - 1)
    assert str(refused.value) == (
        f"{source}: none of the 3 sentences to translate fits in --max-context "
        f"{needs[1] - 1}: the shortest, line 2, needs at least {needs[1]} tokens (30 of the "
        f"prompt, {needs[1] - 30} of its source) and room for its translation; raise "
        "--max-context, or leave it out (the model's positions)"
    )
    # the sentences the run translates: line 2 left out by --start-index 2
    with pytest.raises(ValueError, match="none of the 1 sentence to translate .* line 3"):
        check((2, -1), language="de", fixed_tokens=30, max_context=needs[2] - 1)
    check((2, 2), language="de", fixed_tokens=30, max_context=10)  # none to translate
