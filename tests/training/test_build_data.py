"""The SiMT data builder: alignment symmetrisation, segmentation, levels, the CLI."""

import gzip
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from commands import python_with_ctrl_c

from east_agent.decoding.prompt import LATENCY_LEVELS
from training.build_data import (
    average_lagging,
    base_segmentation,
    build,
    grow_diag_final_and,
    main,
    merge_to_min_source,
    read_parallel,
    save_links,
    segmentation_delays,
    target_needs,
)
from training.data import build_samples

MULTI30K = Path(__file__).resolve().parents[2] / "east_agent" / "data" / "multi30k"


def test_grow_diag_final_and():
    # The intersection grows through union neighbours with an unaligned word: (1, 2), then
    # diagonally (2, 3), then (3, 3).
    forward = {(0, 0), (1, 1), (2, 3)}
    reverse = {(0, 0), (1, 1), (1, 2), (3, 3)}
    assert grow_diag_final_and(forward, reverse) == {(0, 0), (1, 1), (1, 2), (2, 3), (3, 3)}
    # final-and: a far union link joins only if both its words are still unaligned.
    forward = {(0, 0), (2, 2), (3, 0)}
    assert grow_diag_final_and(forward, {(0, 0)}) == {(0, 0), (2, 2)}


def test_needs_are_running_maxima_and_unaligned_words_borrow():
    # target 0 unaligned (borrows the first known need), target 2 unaligned (keeps 3),
    # target 3 aligned to source 0 but comes after target 1 (needs 3 words read).
    links = {(2, 1), (0, 3), (4, 4)}
    assert target_needs(links, 5) == [3, 3, 3, 3, 5]


def test_monotone_alignment_gives_one_chunk_per_word():
    source, target = "a b c".split(), "A B C".split()
    chunks = base_segmentation(source, target, {(0, 0), (1, 1), (2, 2)})
    assert chunks == [(["a"], ["A"]), (["b"], ["B"]), (["c"], ["C"])]
    assert segmentation_delays(chunks) == [1, 2, 3]


def test_reordering_waits_for_the_aligned_source():
    # German verb-final: "er hat das Buch gelesen" / "he has read the book"
    source = "er hat das Buch gelesen".split()
    target = "he has read the book".split()
    links = {(0, 0), (1, 1), (4, 2), (2, 3), (3, 4)}
    chunks = base_segmentation(source, target, links)
    assert chunks == [
        (["er"], ["he"]),
        (["hat"], ["has"]),
        (["das", "Buch", "gelesen"], ["read", "the", "book"]),
    ]
    # Every target word of chunk j is aligned only to source words of chunks <= j.
    ends = [sum(len(s) for s, _ in chunks[: j + 1]) for j in range(len(chunks))]
    position = 0
    for j, (_, chunk_target) in enumerate(chunks):
        for _ in chunk_target:
            assert all(i < ends[j] for i, t in links if t == position)
            position += 1


def test_source_after_the_last_need_joins_the_last_chunk():
    chunks = base_segmentation("a b c d".split(), "A B".split(), {(0, 0), (1, 1)})
    assert chunks == [(["a"], ["A"]), (["b", "c", "d"], ["B"])]


def test_levels_merge_to_minimum_source_chunks():
    chunks = [(["a"], ["A"]), (["b"], ["B"]), (["c"], ["C"]), (["d"], ["D"]), (["e"], ["E"])]
    assert merge_to_min_source(chunks, 2) == [
        (["a", "b"], ["A", "B"]),
        (["c", "d", "e"], ["C", "D", "E"]),
    ]
    assert merge_to_min_source(chunks, 6) == [(list("abcde"), list("ABCDE"))]


def test_average_lagging_is_simulevals():
    # delays 1, 2, 3 on 3 source / 3 target words: AL = mean(1 - 0, 2 - 1, 3 - 2) = 1.
    assert average_lagging([1, 2, 3], 3) == pytest.approx(1.0)
    assert average_lagging([3, 3, 3], 3) == pytest.approx(3.0)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("build")
    source, target = folder / "src.txt", folder / "tgt.txt"
    with (
        gzip.open(MULTI30K / "train.de.gz", "rt") as de,
        gzip.open(MULTI30K / "train.en.gz", "rt") as en,
    ):
        pairs = [(next(de), next(en)) for _ in range(400)]
    pairs += [("Hallo\n", "\n"), ("ein zwei drei vier fünf sechs sieben\n", "one\n")]
    source.write_text("".join(s for s, _ in pairs))
    target.write_text("".join(t for _, t in pairs))
    output = folder / "simt.jsonl.gz"
    command = [sys.executable, "-m", "training.build_data", "--source", str(source),
               "--target", str(target), "--src-lang", "de", "--tgt-lang", "en",
               "--output", str(output), "--seed", "3"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, command, output, result.stdout


SWALLOWED_WHILE_SEGMENTING = """
import os, signal, sys
from training import build_data

class Swallows:  # Python does not raise what a __del__ raises (a library import's lock)
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)

segmented = build_data.base_segmentation
def base_segmentation(*arguments):
    Swallows()
    return segmented(*arguments)
build_data.base_segmentation = base_segmentation
sys.argv[0] = "build_data"
build_data.main()
"""


def test_a_ctrl_c_a_library_swallowed_writes_no_data(tmp_path):
    """Before: every pair segmented and the data written, then the command ended by the
    Ctrl-C (exit by SIGINT beside a finished output). Now the next pair ends it."""
    source, target, output = tmp_path / "src.txt", tmp_path / "tgt.txt", tmp_path / "out.jsonl"
    source.write_text("ein Hund läuft\nzwei Katzen schlafen\n")
    target.write_text("a dog runs\ntwo cats sleep\n")
    flags = ["--source", source, "--target", target, "--src-lang", "de", "--tgt-lang", "en",
             "--output", output, "--levels", "low", "high"]  # fmt: skip
    result = python_with_ctrl_c(SWALLOWED_WHILE_SEGMENTING, *flags)
    assert result.returncode == -signal.SIGINT, result.stderr[-3000:]
    assert result.stderr.endswith("\npython -m training.build_data: interrupted\n")
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["src.txt", "tgt.txt"]


def read(path):
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle]


def test_records_cover_every_kept_pair_and_level(built):
    _, _, output, report = built
    records = read(output)
    assert len(records) == 400 * 5
    assert {r["latency"] for r in records} == set(LATENCY_LEVELS)
    assert "402 sentence pairs read, 400 kept" in report
    assert "1 dropped: an empty side" in report and "1 dropped: length ratio" in report


def test_mean_al_rises_strictly_from_low_to_high(built):
    _, _, _, report = built
    values = [
        float(line.rsplit(":", 1)[1])
        for line in report.splitlines()
        if line.startswith("mean AL of the")
    ]
    assert len(values) == 5
    assert all(later > earlier for earlier, later in zip(values, values[1:]))


def test_data_whose_levels_lag_alike_is_refused_and_not_written(tmp_path):
    """One-word pairs: every level lags the same, so the check fails, and before the data
    is written (it used to be written first)."""
    links = tmp_path / "links.gz"
    save_links(links, [{(0, 0)}, {(0, 0)}])
    output = tmp_path / "simt.jsonl.gz"
    with pytest.raises(ValueError, match="mean AL does not rise strictly"):
        build([("Hund", "dog"), ("Katze", "cat")], "de", "en", output, alignments=links,
              progress=False)  # fmt: skip
    assert not output.exists()


def test_records_are_ready_for_training(built, east_tokenizer):
    _, _, output, _ = built
    samples, report = build_samples(east_tokenizer, [output], progress=False)
    assert len(samples) == report.records == 2000


def test_reusing_the_links_reproduces_the_output(built, tmp_path):
    folder, command, output, _ = built
    again = tmp_path / "again.jsonl.gz"
    links = Path(f"{output}.links.gz")
    command = [*command[:-4], "--output", str(again), "--seed", "3", "--alignments", str(links)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read(again) == read(output)
    assert again.read_bytes() == output.read_bytes()  # no time or name in the gzip header


@pytest.mark.parametrize(
    "record, message",
    [
        ({"src": "Hund", "reference": "dog"}, "missing field 'source'"),
        ({"source": "Hund", "ref": "dog"}, "missing field 'target' \\(or 'reference'\\)"),
        ({"source": 5, "target": "dog"}, "field 'source' must be a string"),
        (
            {"source": "Hund", "reference": "a \ud83d dog"},
            "field 'reference': holds a lone surrogate '\\\\ud83d' at character 2",
        ),
    ],
)
def test_a_pairs_record_without_its_text_is_named(tmp_path, record, message):
    """By its line in a JSON Lines file (before: `record 1` for line 3), by its number in a
    JSON list. A lone surrogate (JSON's `\\ud83d` without its pair) is no text (before: an
    encoding error naming no record, after the alignment)."""
    good = {"source": "Katze", "reference": "cat"}
    lines = tmp_path / "pairs.jsonl"
    lines.write_text(json.dumps(good) + "\n\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=f"pairs.jsonl: line 3: {message}"):
        read_parallel(None, None, lines)
    listed = tmp_path / "pairs.json"
    listed.write_text(json.dumps([good, record]))
    with pytest.raises(ValueError, match=f"pairs.json: record 2: {message}"):
        read_parallel(None, None, listed)


def test_sentences_with_line_separators_stay_paired(tmp_path):
    # str.splitlines() ends lines at these too: the counts matched, the pairs shifted
    source, target = tmp_path / "src.txt", tmp_path / "tgt.txt"
    source.write_text("ein\u2028Hund\nzwei\x0cKatzen\ndrei\x1cVögel\n", encoding="utf-8")
    target.write_text("a\x85dog\ntwo cats\nthree\x1ebirds\n", encoding="utf-8")
    pairs = read_parallel(source, target, None)
    assert [(s.split()[0], t.split()[0]) for s, t in pairs] == [
        ("ein", "a"),
        ("zwei", "two"),
        ("drei", "three"),
    ]


def test_a_latin1_training_file_is_named_with_its_line(tmp_path, capsys):
    source, target = tmp_path / "src.txt", tmp_path / "tgt.txt"
    source.write_bytes("ein Hund\nein Café\n".encode("latin-1"))
    target.write_text("a dog\na café\n", encoding="utf-8")
    command = ["--source", str(source), "--target", str(target), "--src-lang", "de",
               "--tgt-lang", "en", "--output", str(tmp_path / "out.jsonl")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(command)
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert (
        error
        == f"python -m training.build_data: {source}: line 2: not UTF-8 (byte 0xe9 at column 8)\n"
    )


def test_an_output_folder_nothing_kept_and_foreign_links_are_refused(tmp_path, capsys):
    """Before: a folder named as --output was replaced by the records (and what it held
    lost); no pair kept crashed in eflomal; links of another corpus of as many pairs were
    used (or crashed later)."""
    (tmp_path / "mine").mkdir()
    source, target = tmp_path / "mine" / "de.txt", tmp_path / "mine" / "en.txt"
    source.write_text("ein Hund\nzwei Katzen\n")
    target.write_text("a dog\ntwo cats\n")
    flags = ["--source", str(source), "--target", str(target), "--src-lang", "de",
             "--tgt-lang", "en"]  # fmt: skip
    for output, extra in ((tmp_path / "mine", []), (tmp_path / "o.jsonl", ["--max-words", "1"])):
        with pytest.raises(SystemExit) as exit_:
            main([*flags, "--output", str(output), *extra])
        assert exit_.value.code == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors[0].startswith(
        f"python -m training.build_data: {tmp_path / 'mine'} is a folder, not a JSON Lines"
    )
    assert errors[1].startswith(
        "python -m training.build_data: no sentence pair is left to align: 2 sentence pairs"
    )
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["de.txt", "en.txt"]
    links = tmp_path / "links.gz"
    save_links(links, [{(0, 0), (1, 1)}, {(0, 0), (2, 1)}])
    with pytest.raises(ValueError, match="links.gz: line 2: link 2-1 is outside its pair"):
        build([("ein Hund", "a dog"), ("zwei Katzen", "two cats")], "de", "en",
              tmp_path / "o.jsonl", alignments=links, progress=False)  # fmt: skip
    said = "links.gz: 2 alignment lines for 1 kept pairs: links of another corpus, or of this "
    with pytest.raises(ValueError, match=said + "one kept with another --max-words or"):
        build([("ein Hund", "a dog")], "de", "en", tmp_path / "o.jsonl", alignments=links,
              progress=False)  # fmt: skip


@pytest.mark.parametrize("line", ["0-0 1", "0-0-1", "+1-0", "1_0-0", "0-٣"])
def test_a_malformed_link_is_named_with_its_file_and_line(tmp_path, line):
    """Before: `0-0 1` and `0-0-1` failed unpacking, with no file or line; `+1-0`, `1_0-0`
    and other digits were read as links."""
    links = tmp_path / "links.txt"
    links.write_text(f"0-0 1-1\n{line}\n")
    named = re.escape(f"links.txt: line 2: not links (i-j ...): '{line}'")
    with pytest.raises(ValueError, match=named):
        build([("ein Hund", "a dog"), ("zwei Katzen", "two cats")], "de", "en",
              tmp_path / "o.jsonl", alignments=links, progress=False)  # fmt: skip


def test_a_level_given_twice_is_written_once(tmp_path):
    links = tmp_path / "links.gz"
    pairs = [("ein großer Hund läuft", "a big dog runs")] * 2
    save_links(links, [{(0, 0), (1, 1), (2, 2), (3, 3)}] * 2)
    build(pairs, "de", "en", tmp_path / "o.jsonl", ["low", "high", "low"], links, progress=False)
    records = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert sorted(record["latency"] for record in records) == ["high", "high", "low", "low"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--source", "{folder}", "--target", "{en}"],
            "python -m training.build_data: --source {folder}: a folder",
        ),
        (["--pairs", "{pairs}", "--source", "{de}"], "give --source and --target, or --pairs "),
        (
            ["--source", "{de}", "--target", "{en}", "--max-ratio", "nan"],
            "finite number of at least 1 (the longer side's words over the shorter's), got 'nan'",
        ),
        (
            ["--source", "{de}", "--target", "{en}", "--max-ratio", "0"],
            "finite number of at least 1 (the longer side's words over the shorter's), got '0'",
        ),
        (["--source", "{de}", "--target", "{en}", "--max-ratio", "inf"], "got 'inf'"),
        (["--source", "{de}", "--target", "{en}", "--max-ratio", "0.5"], "at least 1 (the "),
        (["--source", "{de}", "--target", "{en}", "--max-words", "0"], "at least 1, got '0'"),
        (
            ["--source", "{de}", "--target", "{en}", "--max-words", "1024"],
            "--max-words: takes at most 1023: eflomal leaves a sentence of more words unaligned"
            " (one chunk at every latency level), got '1024'",
        ),
    ],
)
def test_inputs_that_crash_or_are_ignored_are_refused_in_one_line(tmp_path, capsys, extra, message):
    """Before: a folder as --source was a traceback (IsADirectoryError); --source beside
    --pairs was ignored; --max-ratio nan turned the ratio filter off; --max-words 0 or a
    --max-ratio below 1 failed once the corpus was read (no pair left), and --max-words
    5000 let a pair of 1144 words through, which eflomal does not align: one chunk at
    every level. (The trailing `--max-words 1` makes a run that got past the flags end at
    once, in another message.)"""
    names = {"folder": tmp_path / "folder", "de": tmp_path / "de.txt", "en": tmp_path / "en.txt"}
    names["pairs"] = tmp_path / "pairs.jsonl"
    names["folder"].mkdir()
    names["de"].write_text("ein Hund\n")
    names["en"].write_text("a dog\n")
    names["pairs"].write_text(json.dumps({"source": "ein Hund", "reference": "a dog"}) + "\n")
    flags = [flag.format(**names) for flag in extra]
    with pytest.raises(SystemExit) as exit_:
        main([*flags, "--src-lang", "de", "--tgt-lang", "en", "--max-words", "1",
              "--output", str(tmp_path / "o.jsonl")])  # fmt: skip
    assert exit_.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.format(**names) in error


def test_the_flags_take_eflomals_longest_sentence_and_a_ratio_of_one(tmp_path):
    source, target = tmp_path / "de.txt", tmp_path / "en.txt"
    source.write_text("ein Hund\n")
    target.write_text("a dog\n")
    links = tmp_path / "links.txt"
    links.write_text("0-0 1-1\n")
    main(["--source", str(source), "--target", str(target), "--src-lang", "de", "--tgt-lang",
          "en", "--output", str(tmp_path / "o.jsonl"), "--levels", "low", "--alignments",
          str(links), "--max-words", "1023", "--max-ratio", "1"])  # fmt: skip
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 1
    with pytest.raises(ValueError, match="max_words 1024: at most 1023: eflomal leaves"):
        build([("ein Hund", "a dog")], "de", "en", tmp_path / "o.jsonl", max_words=1024)


def test_eflomal_aligns_no_sentence_of_1024_words(tmp_path):
    """Why --max-words stops at 1023 (eflomal 2.0 writes an empty links line; 1023 words
    align, but take minutes on a tiny corpus)."""
    from training.build_data import align

    words = " ".join(f"w{number % 7}" for number in range(1024))
    all_links = align([words, "ein Hund"], [words.upper(), "a dog"], tmp_path)
    assert all_links[0] == set() and all_links[1]


def test_a_pair_with_no_link_is_dropped_and_counted(tmp_path):
    """Before: a pair with an empty links line (eflomal's for a side of 1024 words or
    more) became one chunk at every level, raising the mean AL of `low` from 1.0 to 12.25.
    Its links are saved all the same: --alignments drops it again."""
    pairs = [("ein großer Hund läuft", "a big dog runs")] * 2 + [("zwei Katzen", "two cats")]
    links = tmp_path / "links.gz"
    save_links(links, [{(0, 0), (1, 1), (2, 2), (3, 3)}, set(), {(0, 0), (1, 1)}])
    output = tmp_path / "o.jsonl"
    report = build(pairs, "de", "en", output, ["low", "high"], links, progress=False)
    assert (report.pairs, report.kept, report.unaligned) == (3, 2, 1)
    assert "3 sentence pairs read, 2 kept" in report.lines()
    assert "1 dropped: no alignment link" in report.lines()
    assert report.mean_al["low"] == pytest.approx(1.0)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(len(record["source_chunks"]) for record in records) == [1, 1, 2, 4]
    again = build(pairs, "de", "en", tmp_path / "again.jsonl", ["low", "high"],
                  Path(f"{output}.links.gz"), progress=False)  # fmt: skip
    assert (again.unaligned, (tmp_path / "again.jsonl").read_text()) == (1, output.read_text())
    save_links(links, [set()] * 3)
    with pytest.raises(ValueError, match="no sentence pair has an alignment link: 3 sentence"):
        build(pairs, "de", "en", tmp_path / "none.jsonl", ["low", "high"], links, progress=False)
    assert not (tmp_path / "none.jsonl").exists()


@pytest.mark.parametrize(
    "fault, message",
    [
        ("output inside a file", "--output folder {file}: a file, not a folder"),
        ("links a folder", "{links} is a folder, not a links file"),
        ("byte-order mark", "{de}: line 1: starts with a UTF-8 byte-order mark"),
        ("control token", "{en}: line 2: holds '<|end-of-write|>', a control token, not text"),
    ],
)
def test_outputs_and_corpus_lines_no_run_can_use_are_refused_first(
    tmp_path, capsys, monkeypatch, fault, message
):
    """Before: an output inside a file, or links that are a folder, failed after the
    alignment (a traceback); a byte-order mark went into the records as text, and so did
    an EAST token, to be trained as a READ or WRITE."""
    import training.build_data as build_data

    monkeypatch.setattr(build_data, "align", lambda *a: pytest.fail("aligned"))
    names = {"de": tmp_path / "de.txt", "en": tmp_path / "en.txt", "file": tmp_path / "file"}
    names["de"].write_text("ein Hund\nzwei Katzen\n")
    names["en"].write_text("a dog\ntwo cats\n")
    names["file"].write_text("mine")
    output = tmp_path / "o.jsonl"
    names["links"] = tmp_path / "o.jsonl.links.gz"
    if fault == "output inside a file":
        output = names["file"] / "o.jsonl"
    elif fault == "links a folder":
        names["links"].mkdir()
    elif fault == "byte-order mark":
        names["de"].write_text("\ufeffein Hund\nzwei Katzen\n")
    else:
        names["en"].write_text("a dog\ntwo<|end-of-write|> cats\n")
    flags = ["--source", str(names["de"]), "--target", str(names["en"]), "--src-lang", "de",
             "--tgt-lang", "en", "--output", str(output)]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(flags)
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"python -m training.build_data: {message.format(**names)}"), error
    assert error.count("\n") == 1 and not output.exists()


@pytest.mark.parametrize(
    "target, tgt_lang, message",
    [
        ("en", "de", "--src-lang de and --tgt-lang de are both German: SiMT data translates"),
        ("en", "German", "--src-lang de and --tgt-lang German are both German"),
        ("de", "en", "--source {de} and --target {de} are one file: every pair would be"),
    ],
)
def test_a_copy_task_is_refused_first(tmp_path, capsys, monkeypatch, target, tgt_lang, message):
    """Before: one language on both sides, or one file as both sides, built records of a
    sentence and itself."""
    import training.build_data as build_data

    monkeypatch.setattr(build_data, "align", lambda *a: pytest.fail("aligned"))
    names = {"de": tmp_path / "de.txt", "en": tmp_path / "en.txt"}
    names["de"].write_text("ein Hund\n")
    names["en"].write_text("a dog\n")
    output = tmp_path / "o.jsonl"
    flags = ["--source", str(names["de"]), "--target", str(names[target]), "--src-lang", "de",
             "--tgt-lang", tgt_lang, "--output", str(output)]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(flags)
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"python -m training.build_data: {message.format(**names)}"), error
    assert not output.exists()


def test_an_output_that_is_a_pipe_or_device_is_refused_first(tmp_path, capsys):
    """Before: the device (`--output /dev/null`) deleted, a file of records put there."""
    import os
    import stat

    (tmp_path / "de.txt").write_text("ein Hund\n")
    (tmp_path / "en.txt").write_text("a dog\n")
    output = tmp_path / "pipe"
    os.mkfifo(output)
    flags = ["--source", str(tmp_path / "de.txt"), "--target", str(tmp_path / "en.txt"),
             "--src-lang", "de", "--tgt-lang", "en", "--output", str(output)]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        main(flags)
    assert exit_.value.code == 2
    assert f"--output {output}: a device or a pipe" in capsys.readouterr().err
    assert stat.S_ISFIFO(output.stat().st_mode)


def test_a_corpus_read_from_a_pipe_keeps_its_first_lines(tmp_path):
    """`--source <(zcat corpus.de.gz)`: a pipe is read once (before: the plain-text check
    read its first chunk away, and the builder found 0 sentence pairs, or fewer)."""
    import os
    import threading

    lines = {"de": ["ein Hund", "eine Katze"], "en": ["a dog", "a cat"]}
    pipes = {}
    for side in lines:
        pipes[side] = tmp_path / f"pipe.{side}"
        os.mkfifo(pipes[side])

    def write(side: str) -> None:
        with open(pipes[side], "w", encoding="utf-8") as pipe:
            pipe.write("\n".join(lines[side]) + "\n")

    writers = [threading.Thread(target=write, args=(side,), daemon=True) for side in lines]
    for writer in writers:
        writer.start()
    assert read_parallel(pipes["de"], pipes["en"], None) == list(zip(*lines.values()))
    for writer in writers:
        writer.join(5)


TEXTS = ["--source", "{de}", "--target", "{en}"]


@pytest.mark.parametrize(
    "inputs, output, message",
    [
        (TEXTS, "{de}", "--output {de} is the --source file {de}"),
        (TEXTS, "{link}", "--output {link} is the --target file {en}"),  # a symbolic link
        (["--pairs", "{pairs}"], "{hard}", "--output {hard} is the --pairs file {pairs}"),
        (
            ["--source", "{links}", "--target", "{en}"],
            "{out}",
            "--output {out} writes its links to {links}, which is the --source file {links}",
        ),
        (
            [*TEXTS, "--alignments", "{aligned}"],
            "{aligned}",
            "--output {aligned} is the --alignments file {aligned}",
        ),
    ],
)
def test_an_output_that_is_an_input_is_refused_first(
    tmp_path, capsys, monkeypatch, inputs, output, message
):
    """Before: `--source victim.de --output victim.de` ran, exit 0, and overwrote its
    input with the records (so did an output linked to an input, and one whose links file
    is an input)."""
    import os

    import training.build_data as build_data

    monkeypatch.setattr(build_data, "align", lambda *a: pytest.fail("aligned"))
    names = {name: tmp_path / name for name in ("de", "en", "pairs", "aligned", "link", "hard")}
    names["out"], names["links"] = tmp_path / "out", tmp_path / "out.links.gz"
    for german in (names["de"], names["links"]):
        german.write_text("ein großer Hund läuft\n")
    names["en"].write_text("a big dog runs\n")
    names["pairs"].write_text(json.dumps({"source": "ein Hund", "reference": "a dog"}) + "\n")
    save_links(names["aligned"], [{(0, 0), (1, 1), (2, 2), (3, 3)}])
    names["link"].symlink_to(names["en"])
    os.link(names["pairs"], names["hard"])
    before = {name: path.read_bytes() for name, path in names.items() if path.exists()}
    flags = [flag.format(**names) for flag in [*inputs, "--output", output]]
    with pytest.raises(SystemExit) as exit_:
        main([*flags, "--src-lang", "de", "--tgt-lang", "en", "--levels", "low", "high"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"python -m training.build_data: {message.format(**names)}:"), error
    assert error.count("\n") == 1
    assert before == {name: path.read_bytes() for name, path in names.items() if path.exists()}


def test_an_outputs_own_links_rebuild_it_in_place(tmp_path):
    """`--alignments <output>.links.gz` with that output: read whole before the output is
    written, they are written again the same (not refused as an input overwritten)."""
    source, target = tmp_path / "de.txt", tmp_path / "en.txt"
    source.write_text("ein großer Hund läuft\nzwei kleine Katzen schlafen\n")
    target.write_text("a big dog runs\ntwo small cats sleep\n")
    output, links = tmp_path / "o.jsonl", tmp_path / "o.jsonl.links.gz"
    save_links(links, [{(0, 0), (1, 1), (2, 2), (3, 3)}] * 2)
    saved = links.read_bytes()
    flags = ["--source", str(source), "--target", str(target), "--src-lang", "de",
             "--tgt-lang", "en", "--levels", "low", "high", "--output", str(output),
             "--alignments", str(links)]  # fmt: skip
    main(flags)
    first = output.read_bytes()
    main(flags)
    assert output.read_bytes() == first and links.read_bytes() == saved


def four_word_pairs(tmp_path, name, words, links):
    """Two pairs of four words and their saved links."""
    path = tmp_path / name
    save_links(path, links)
    return [(" ".join(words[0]), " ".join(words[1]))] * 2, path


def test_a_failed_rebuild_keeps_the_old_records_beside_their_links(tmp_path):
    """Before: the new links were saved before the mean AL check (and before the records
    were written), so a rebuild that failed left them beside the old records, which
    `--alignments <output>.links.gz` then no longer rebuilt."""
    output = tmp_path / "o.jsonl"
    words = ("ein großer Hund läuft".split(), "a big dog runs".split())
    pairs, links = four_word_pairs(tmp_path, "a.gz", words, [{(i, i) for i in range(4)}] * 2)
    build(pairs, "de", "en", output, ["low", "high"], links, progress=False)
    old = output.read_bytes(), Path(f"{output}.links.gz").read_bytes()
    pairs, links = four_word_pairs(tmp_path, "b.gz", words, [{(3, 0)}] * 2)  # levels lag alike
    with pytest.raises(ValueError, match="mean AL does not rise strictly"):
        build(pairs, "de", "en", output, ["low", "high"], links, progress=False)
    assert (output.read_bytes(), Path(f"{output}.links.gz").read_bytes()) == old
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "a.gz",
        "b.gz",
        "o.jsonl",
        "o.jsonl.links.gz",
    ]


def test_eflomals_links_of_a_build_that_fails_its_checks_are_kept(tmp_path):
    """Before: thrown away with the work folder, so the retry (other --levels) aligned the
    corpus again, with other links (eflomal cannot be seeded)."""
    output = tmp_path / "o.jsonl"
    pairs = [("Hund", "dog"), ("Katze", "cat"), ("Maus", "mouse")]  # levels lag alike
    with pytest.raises(ValueError, match="mean AL does not rise strictly") as error:
        build(pairs, "de", "en", output, progress=False)
    kept = tmp_path / "o.jsonl.unused.links.gz"
    assert str(error.value).endswith(
        f"eflomal's links are kept in {kept}: --alignments {kept} reuses them (other --levels)"
    )
    assert not output.exists()
    links = kept.read_bytes()
    build(pairs, "de", "en", output, ["low"], kept, progress=False)
    assert Path(f"{output}.links.gz").read_bytes() == links
    assert not kept.exists()  # in o.jsonl.links.gz now (before: left over beside it)


@pytest.mark.parametrize("killed_at", ["links", "records"])
def test_a_rebuild_killed_while_installing_leaves_no_mismatched_pair(
    tmp_path, monkeypatch, killed_at
):
    """Killed between the renames that put the new records and links in place: the old
    records are gone already, so no links stand beside records they did not make."""
    import training.build_data as build_data

    output = tmp_path / "o.jsonl"
    words = ("ein großer Hund läuft".split(), "a big dog runs".split())
    pairs, links = four_word_pairs(tmp_path, "a.gz", words, [{(i, i) for i in range(4)}] * 2)
    build(pairs, "de", "en", output, ["low", "high"], links, progress=False)
    old_links = Path(f"{output}.links.gz").read_bytes()
    install = build_data.install

    def killed(temporary, path):
        if path == {"links": Path(f"{output}.links.gz"), "records": output}[killed_at]:
            raise KeyboardInterrupt
        install(temporary, path)

    monkeypatch.setattr(build_data, "install", killed)
    pairs, links = four_word_pairs(tmp_path, "b.gz", words, [{(0, 0), (3, 1), (3, 2), (3, 3)}] * 2)
    with pytest.raises(KeyboardInterrupt):
        build(pairs, "de", "en", output, ["low", "high"], links, progress=False)
    assert not output.exists()
    new_links = Path(f"{output}.links.gz").read_bytes()
    assert (new_links == old_links) == (killed_at == "links")


@pytest.mark.parametrize("sentences", [2, 256])
def test_eflomal_runs_as_a_child_that_dies_with_the_builder_and_as_eflomal_runs_it(
    tmp_path, monkeypatch, sentences
):
    """The same command `eflomal.Aligner().align` runs (256 sentences: 312.5 iterations,
    rounded half to even), but started by the project's helper, which makes it die with
    the builder (before: eflomal started it, and outlived a killed builder); its inputs
    in the work folder (before: in /tmp, left there by a kill)."""
    import subprocess

    import eflomal

    import training.build_data as build_data

    sources, targets = ["ein Hund"] * sentences, ["a dog"] * sentences
    theirs = []
    monkeypatch.setattr(subprocess, "run", lambda command, **_: theirs.append(command))
    eflomal.Aligner().align(sources, targets, links_filename_fwd="F", links_filename_rev="R")
    ours = []

    def run_child(command):
        ours.append(command)
        for flag in ("-f", "-r"):
            Path(command[command.index(flag) + 1]).write_text("0-0 1-1\n" * sentences)
        return 0

    monkeypatch.setattr(build_data, "run_child", run_child)
    assert build_data.align(sources, targets, tmp_path) == [{(0, 0), (1, 1)}] * sentences
    named = {"-s": "source.eflomal", "-t": "target.eflomal", "-f": "F", "-r": "R"}
    for flag, name in named.items():
        position = ours[0].index(flag) + 1
        assert Path(ours[0][position]).parent == tmp_path
        ours[0][position] = theirs[0][position] if flag in "-s-t" else name
    assert ours == theirs


def test_a_failed_eflomal_ends_in_one_line(tmp_path, monkeypatch):
    """Before: a traceback (eflomal's CalledProcessError)."""
    import training.build_data as build_data
    from east_agent.common.entry import CommandError

    monkeypatch.setattr(build_data, "run_child", lambda command: -9)
    with pytest.raises(CommandError, match=r"^eflomal failed \(killed by signal 9\) aligning 1 "):
        build_data.align(["ein Hund"], ["a dog"], tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_the_builder_kills_eflomal_and_leaves_nothing_in_tmp(tmp_path):
    """SIGKILL of the builder while it aligns: eflomal dies too, and its inputs were in the
    builder's own work folder beside the output (before: eflomal went on writing links
    into the output folder, and its inputs stayed in /tmp)."""
    import os
    import signal
    import time

    from kill import descendants, live_processes

    with (
        gzip.open(MULTI30K / "train.de.gz", "rt") as de,
        gzip.open(MULTI30K / "train.en.gz", "rt") as en,
    ):
        pairs = [(next(de), next(en)) for _ in range(2000)]  # eflomal runs for seconds
    source, target = tmp_path / "src.txt", tmp_path / "tgt.txt"
    source.write_text("".join(s for s, _ in pairs))
    target.write_text("".join(t for _, t in pairs))
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    command = [sys.executable, "-m", "training.build_data", "--source", str(source),
               "--target", str(target), "--src-lang", "de", "--tgt-lang", "en",
               "--output", str(tmp_path / "out" / "simt.jsonl.gz")]  # fmt: skip
    environment = {**os.environ, "TMPDIR": str(temporary)}
    process = subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline, aligner = time.time() + 120, []
    while not aligner:
        assert process.poll() is None and time.time() < deadline, "the builder ended first"
        found = descendants(process.pid).items()
        aligner = [pid for pid, line in found if "eflomal/bin/eflomal" in line]
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.time() + 3  # killed with the builder, not when it is done
    while aligner[0] in live_processes():
        assert time.time() < deadline, "eflomal outlived the builder"
        time.sleep(0.05)
    assert list(temporary.iterdir()) == []


@pytest.mark.parametrize(
    "languages, refused",
    [
        (("English", "German"), "line 2: field 'src_lang' is 'English', but --src-lang is 'de'"),
        (("de", "French"), "line 2: field 'tgt_lang' is 'French', but --tgt-lang is 'en'"),
        (("German", "english"), None),
    ],
)
def test_pairs_that_name_other_languages_are_refused(tmp_path, capsys, languages, refused):
    """Before: `--pairs` records of an en-de test set were built as German to English,
    their own `src_lang` and `tgt_lang` ignored; as codes or names alike, they agree."""
    pairs = tmp_path / "pairs.jsonl"
    record = {"source": "ein großer Hund läuft", "reference": "a big dog runs"}
    named = {**record, "src_lang": languages[0], "tgt_lang": languages[1]}
    pairs.write_text(json.dumps(record) + "\n" + json.dumps(named) + "\n")
    links = tmp_path / "links.gz"
    save_links(links, [{(i, i) for i in range(4)}] * 2)
    flags = ["--pairs", str(pairs), "--src-lang", "de", "--tgt-lang", "en", "--levels", "low",
             "high", "--alignments", str(links), "--output", str(tmp_path / "o.jsonl")]  # fmt: skip
    if refused is None:
        main(flags)
        assert (tmp_path / "o.jsonl").exists()
        return
    with pytest.raises(SystemExit) as exit_:
        main(flags)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"python -m training.build_data: {pairs}: {refused}\n"
    assert not (tmp_path / "o.jsonl").exists()


def test_gzip_data_is_read_through_whatever_its_name(tmp_path):
    """Known by its first bytes (before: refused unless named .gz; earlier still, read as
    text into the records)."""
    packed = tmp_path / "de.txt"
    packed.write_bytes(gzip.compress(b"ein Hund\nzwei Katzen\n"))
    plain = tmp_path / "en.txt.gz"  # a plain file named .gz: its text
    plain.write_text("a dog\ntwo cats\n")
    assert read_parallel(packed, plain, None) == [
        ("ein Hund", "a dog"),
        ("zwei Katzen", "two cats"),
    ]


@pytest.mark.parametrize(
    "languages, said",
    [
        (["zh", "en"], "Chinese: the builder splits words on whitespace only"),
        (["xx", "en"], "unknown language 'xx'"),
    ],
)
def test_a_language_the_builder_cannot_take_is_refused_before_the_corpus_is_read(
    tmp_path, monkeypatch, capsys, languages, said
):
    """Before: refused once the whole corpus was read."""
    import training.build_data as build_data

    monkeypatch.setattr(build_data, "read_parallel", lambda *a: pytest.fail("corpus read"))
    (tmp_path / "src.txt").write_text("x\n")
    (tmp_path / "tgt.txt").write_text("y\n")
    with pytest.raises(SystemExit) as ended:
        main(["--source", str(tmp_path / "src.txt"), "--target", str(tmp_path / "tgt.txt"),
              "--src-lang", languages[0], "--tgt-lang", languages[1],
              "--output", str(tmp_path / "out.jsonl")])  # fmt: skip
    assert ended.value.code == 2
    assert said in capsys.readouterr().err
