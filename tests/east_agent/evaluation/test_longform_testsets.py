"""Long-form test sets: talks of consecutive sentences, their files and word times."""

import json

import pytest

from east_agent.evaluation import prepare
from east_agent.evaluation.longform import (
    read_longform,
    read_word_times,
    uniform_unit_times,
    unit_times,
)
from east_agent.evaluation.omnisteval_scoring import Chunk, TalkOutput, write_omnisteval_inputs
from east_agent.evaluation.testsets import prepare_testset, read_pairs, read_prepared


def lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_multi30k_talks_line_up_with_the_sentences(tmp_path):
    prepared = prepare_testset("multi30k.de-en.talks100", tmp_path)
    pairs, _, _ = read_pairs("multi30k.de-en")
    talks = read_longform(tmp_path).talks
    assert prepared.sentences == len(talks) == 10
    assert read_prepared(tmp_path).sentences == 10  # the grid runs one instance per talk
    sources, references = lines(prepared.source), lines(prepared.reference)
    assert lines(tmp_path / "reference_sentences.txt") == [r for _, r in pairs]
    assert lines(tmp_path / "source_sentences.txt") == [s for s, _ in pairs]
    segmentation = lines(tmp_path / "segmentation.txt")
    assert len(segmentation) == 1000
    for doc, talk in enumerate(talks):
        span = pairs[talk.first_sentence : talk.first_sentence + talk.sentences]
        lengths = [len(source.split()) for source, _ in span]
        assert list(talk.sentence_ends) == [sum(lengths[: k + 1]) for k in range(len(span))]
        assert sources[doc].split() == [word for source, _ in span for word in source.split()]
        assert references[doc] == " ".join(reference for _, reference in span)
        assert segmentation[talk.first_sentence] == f"docid={doc},segid=0"
    meta = json.loads((tmp_path / "testset.json").read_text())["longform"]
    assert (meta["talk_size"], meta["talks"], meta["reference_sentences"]) == (100, 10, 1000)
    assert "consecutive sentences" in meta["made_of"]


def test_the_last_talk_takes_the_rest(tmp_path):
    prepare_testset("wmt22.de-en.talks500", tmp_path)
    talks = read_longform(tmp_path).talks
    assert [talk.sentences for talk in talks] == [500, 500, 500, 484]  # 1,984 sentences
    assert [talk.talk_id for talk in talks] == ["talk0000", "talk0001", "talk0002", "talk0003"]


def test_east_prepare_writes_a_long_form_set(tmp_path, capsys):
    prepare.main(["multi30k.de-en.talks300", "--output", str(tmp_path)])
    assert capsys.readouterr().out.startswith("4 talks:")
    assert len(lines(tmp_path / "source.txt")) == 4
    prepare.main(["multi30k.de-en.talks2000", "--output", str(tmp_path / "one")])
    assert capsys.readouterr().out.startswith("1 talk:")  # before: "1 talks:"


@pytest.mark.parametrize(
    "name, message",
    [
        ("wmt99.de-en.talks50", "unknown test set 'wmt99.de-en'"),
        ("wmt22.de-en.talks0", "ends in .talksN, N >= 1"),
        ("wmt22.de-en.talks\u0663", "ends in .talksN, N >= 1"),  # before: taken as talks3
        # before: taken, another name of talks50's set
        ("wmt22.de-en.talks050", "ends in .talksN, N >= 1 sentences a talk \\(no leading 0"),
    ],
)
def test_bad_long_form_names_are_refused(name, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        prepare_testset(name, tmp_path)


def test_word_times_with_the_wrong_count_name_file_line_and_counts(tmp_path):
    prepare_testset("multi30k.de-en.talks500", tmp_path / "set")
    talks = read_longform(tmp_path / "set").talks
    times = tmp_path / "times.txt"
    good = " ".join(str(0.5 * j) for j in range(1, talks[0].units + 1))
    short = " ".join(str(0.5 * j) for j in range(1, talks[1].units))
    times.write_text(f"{good}\n{short}\n")
    expected = f"times.txt: line 2 \\(talk0001\\): {talks[1].units - 1} word times, but the talk has {talks[1].units} source units"  # noqa: E501
    with pytest.raises(ValueError, match=expected):
        read_word_times(times, talks)
    times.write_text(f"{good}\n")
    with pytest.raises(ValueError, match="times.txt: 1 lines of word times for 2 talks"):
        read_word_times(times, talks)


def test_word_times_must_not_go_back(tmp_path):
    prepare_testset("multi30k.de-en.talks1000", tmp_path / "set")
    testset = read_longform(tmp_path / "set")
    units = testset.talks[0].units
    times = tmp_path / "times.txt"
    times.write_text(" ".join(["1.0", "0.5"] + ["2"] * (units - 2)) + "\n")
    with pytest.raises(ValueError, match="line 1: word 2: '0.5' is not a time"):
        unit_times(testset, times)
    later = [f"{20 + j}" for j in range(units - 2)]
    for written in ("\uff12", "1_0", "0x10", "nan", "-1"):  # before: fullwidth ２ read as 2
        times.write_text(" ".join(["1.0", written, *later]) + "\n")
        with pytest.raises(ValueError, match=f"line 1: word 2: '{written}' is not a time"):
            unit_times(testset, times)
    times.write_text(" ".join(["+1.0", "1e1", *later]) + "\n")
    assert unit_times(testset, times)[0] == [1.0, 10.0] + [20.0 + j for j in range(units - 2)]
    assert unit_times(testset)[0] == uniform_unit_times(units, 0.4)
    assert uniform_unit_times(3, 0.5) == [0.5, 1.0, 1.5]


def test_word_times_giving_a_sentence_no_duration_are_refused_when_read(tmp_path):
    """Before: accepted here, and refused by the segmentation only after the grid had
    decoded every talk (the run left unscored)."""
    prepare_testset("multi30k.de-en.talks1000", tmp_path / "set")
    testset = read_longform(tmp_path / "set")
    talk = testset.talks[0]
    first_end, second_end = talk.sentence_ends[:2]
    times = [0.5 * (j + 1) for j in range(talk.units)]
    times[first_end:second_end] = [times[first_end - 1]] * (second_end - first_end)
    path = tmp_path / "times.txt"
    path.write_text(" ".join(f"{t:g}" for t in times) + "\n")
    expected = (
        f"times.txt: line 1 \\(talk0000\\): sentence 2 ends at {times[first_end - 1]:g} s, "
        f"not 1/1024 s or more after the previous sentence's end \\({times[first_end - 1]:g} s\\)"
    )
    with pytest.raises(ValueError, match=expected):
        unit_times(testset, path)
    path.write_text(" ".join(["0"] * talk.units) + "\n")
    with pytest.raises(ValueError, match="sentence 1 ends at 0 s, not 1/1024 s or more after"):
        unit_times(testset, path)
    # within one tick of the scorer's clock (1/1024 s): the same time once scored (before:
    # accepted here, refused by the scorer after the grid had decoded every talk)
    times[first_end:second_end] = [times[first_end - 1] + (j + 1) * 1e-5 for j in range(
        second_end - first_end)]  # fmt: skip
    path.write_text(" ".join(f"{t:.5f}" for t in times) + "\n")
    with pytest.raises(ValueError, match="sentence 2 ends at .* not 1/1024 s or more after"):
        unit_times(testset, path)
    times[first_end:second_end] = [times[first_end - 1] + 0.002] * (second_end - first_end)
    path.write_text(" ".join(f"{t:.5f}" for t in times) + "\n")
    assert unit_times(testset, path)[0][second_end - 1] == pytest.approx(
        times[first_end - 1] + 0.002
    )


def test_unit_seconds_below_the_scorers_tick_are_refused(tmp_path):
    """A uniform clock of 1e-9 s a unit put every sentence's end at 0 once scored: the
    grid decoded, then nothing was scored."""
    prepare_testset("multi30k.de-en.talks1000", tmp_path / "set")
    testset = read_longform(tmp_path / "set")
    for unit_seconds in (1e-9, 1 / 2048, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="needs at least 1/1024 s a unit"):
            unit_times(testset, unit_seconds=unit_seconds)
    assert unit_times(testset, unit_seconds=1 / 1024)[0][:2] == [1 / 1024, 2 / 1024]


def test_chinese_targets_join_a_talk_without_spaces(tmp_path):
    prepared = prepare_testset("wmt22.en-zh.talks1000", tmp_path)
    pairs, _, _ = read_pairs("wmt22.en-zh")
    assert lines(prepared.reference)[0] == "".join(r for _, r in pairs[:1000])
    assert read_longform(tmp_path).char_level


def test_chinese_gold_sentences_are_written_in_the_talks_units(tmp_path, east_tokenizer):
    """The gold-sentence runs read `source_sentences.txt`: in units, as the talks are
    (before: raw text, which SimulEval read as one unit a sentence, and their latency with
    it); COMET's sources are those units joined back into the text."""
    from east_agent.decoding.units import join_source_units, source_units

    prepare_testset("wmt22.zh-en.talks2", tmp_path, east_tokenizer, split_by="tiny")
    pairs, _, _ = read_pairs("wmt22.zh-en")
    talk = read_longform(tmp_path).talks[0]
    gold = [line.split() for line in lines(tmp_path / "source_sentences.txt")[:2]]
    assert gold == [source_units(source, "zh", east_tokenizer) for source, _ in pairs[:2]]
    assert list(talk.sentence_ends) == [len(gold[0]), len(gold[0]) + len(gold[1])]
    raw = [" ".join(source.split()) for source, _ in pairs[:2]]
    assert [join_source_units(units, "zh") for units in gold] == raw
    testset = read_longform(tmp_path)
    outputs = [TalkOutput(talk.talk_id, (Chunk("x", talk.units, 0.0),))]
    times = [uniform_unit_times(other.units, 0.4) for other in testset.talks]
    (tmp_path / "run").mkdir()
    inputs = write_omnisteval_inputs(tmp_path / "run", testset, outputs, times)
    assert lines(inputs.source)[:2] == raw


def _edit_talks(folder, edit):
    path = folder / "talks.json"
    talks = json.loads(path.read_text())
    edit(talks)
    path.write_text(json.dumps(talks))


def _edit_line(path, number, new=None):
    """Line `number` of `path` replaced by `new`, or removed (None)."""
    kept = lines(path)
    kept[number - 1 : number] = [] if new is None else [new]
    path.write_text("\n".join(kept) + "\n")


@pytest.mark.parametrize(
    "edit, message",
    [
        # before: every later reference moved up a sentence, BLEU 37.2 -> 30.2, exit 0
        (
            lambda f: _edit_line(f / "reference_sentences.txt", 3),
            "reference_sentences.txt: 999 lines, but talks.json has 1000 sentences",
        ),
        (
            lambda f: _edit_line(f / "reference_sentences.txt", 5, " "),
            "reference_sentences.txt: line 5: empty",
        ),
        # before: LongYAAL -1123, exit 0
        (
            lambda f: _edit_talks(f, lambda t: t[1].update(first_sentence=2)),
            "talks.json: record 2: field 'first_sentence' is 2, but the talks before it "
            "end at sentence 5",
        ),
        (
            lambda f: _edit_talks(f, lambda t: t[1]["sentence_ends"].__setitem__(0, 1)),
            "source_sentences.txt: line 6: ",
        ),
        (
            lambda f: _edit_talks(f, lambda t: t[0].update(sentence_ends=[])),
            "talks.json: record 1: field 'sentence_ends' must be a non-empty list",
        ),
        (
            lambda f: _edit_talks(f, lambda t: t[0].pop("sentence_ends")),
            "talks.json: record 1: missing field 'sentence_ends'",
        ),
        (
            lambda f: _edit_talks(f, lambda t: t.pop()),
            "reference_sentences.txt: 1000 lines, but talks.json has 995 sentences",
        ),
        (
            lambda f: _edit_talks(f, lambda t: t[1].update(talk=t[0]["talk"])),
            "talks.json: record 2: 'talk0000' named twice",
        ),
        (
            lambda f: (f / "talks.json").write_text('[{"talk": "talk0000",\n'),
            "talks.json: line 2: invalid JSON",
        ),
        (
            lambda f: _edit_line(f / "segmentation.txt", 10),
            "segmentation.txt: 999 lines, but talks.json has 1000 sentences",
        ),
        (
            lambda f: _edit_line(f / "reference.txt", 2, lines(f / "reference.txt")[1] + " x"),
            "reference.txt: line 2: not what talks.json makes it",
        ),
        (
            lambda f: _edit_line(f / "source.txt", 1, lines(f / "source.txt")[0] + " x"),
            "source.txt: line 1: ",
        ),
        # before: translated by the gold-sentence systems as it was, exit 0
        (
            lambda f: _edit_line(
                f / "source_sentences.txt", 1, "Kein" + lines(f / "source_sentences.txt")[0][3:]
            ),
            "source.txt: line 1: not what talks.json makes it (its talk's lines of source_sen",
        ),
    ],
)
def test_talk_files_edited_by_hand_are_named_with_file_and_line(tmp_path, edit, message):
    """A long-form set's files must agree with each other: before, one edited by hand was
    read as it was, and every later reference sentence scored against another talk's
    output (wrong BLEU, a negative LongYAAL), exit 0; a talks.json cut off or missing a
    field was a traceback."""
    prepare_testset("multi30k.de-en.talks5", tmp_path)
    read_longform(tmp_path)  # as prepared
    edit(tmp_path)
    with pytest.raises(ValueError) as refused:
        read_longform(tmp_path)
    assert message in str(refused.value)


def _edit_meta(folder, change) -> None:
    meta = json.loads((folder / "testset.json").read_text())
    change(meta)
    (folder / "testset.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "change, message",
    [
        # before: KeyError 'talk_size', a traceback in east-eval and the scorer alike
        (lambda m: m["longform"].pop("talk_size"), "'longform.talk_size' is no count of sen"),
        # before: "invalid literal for int() with base 10: 'fifty'", naming no file
        (lambda m: m["longform"].update(talk_size="fifty"), "no count of sentences: 'fifty'"),
        (lambda m: m.update(longform="yes"), "'longform' is no mapping: 'yes'"),  # a TypeError
        # before: accepted, scored as words
        (lambda m: m.update(eval_latency_unit="spm"), "'eval_latency_unit' 'spm': word or char"),
        (lambda m: m.pop("src_lang"), "'src_lang' missing (edited by hand"),
        (lambda m: m["longform"].update(tgt_code=3), "'longform.tgt_code' is no text: 3"),
    ],
)
def test_a_damaged_testset_json_is_named_with_its_field(tmp_path, change, message):
    prepare_testset("multi30k.de-en.talks5", tmp_path)
    _edit_meta(tmp_path, change)
    with pytest.raises(ValueError) as refused:
        read_longform(tmp_path)
    assert str(refused.value).startswith(f"{tmp_path / 'testset.json'}: ")
    assert message in str(refused.value)


@pytest.mark.parametrize(
    "first_line, after, message",
    [
        # before: Python's float read `1_5` as 15 s, taken as it was where times still grew
        ("1 1_5", "", "line 1: word 2: '1_5' is not a time"),
        ("\ufeff1 2", "", "line 1: starts with a byte-order mark"),
        ("1 2", "\n", "line 2: empty"),  # before: "2 lines of word times for 1 talks"
        ("0x1 2", "", "line 1: word 1: '0x1' is not a time"),
    ],
)
def test_word_times_are_plain_decimal_seconds(tmp_path, first_line, after, message):
    prepare_testset("multi30k.de-en.talks1000", tmp_path / "set")
    testset = read_longform(tmp_path / "set")
    rest = [str(3 + number) for number in range(testset.talks[0].units - 2)]
    times = tmp_path / "times.txt"
    times.write_text(" ".join([first_line, *rest]) + "\n" + after, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        unit_times(testset, times)
    times.write_text(" ".join(["1", "1.5e0", *rest]) + "\n")
    assert unit_times(testset, times)[0][:2] == [1.0, 1.5]
