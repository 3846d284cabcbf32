"""OmniSTEval scoring: a hand-made long-form run of two talks, and a short-form log."""

import json

import pytest

from east_agent.common.text_lines import read_lines
from east_agent.evaluation import longform, testsets
from east_agent.evaluation.omnisteval_scoring import (
    Chunk,
    TalkOutput,
    main,
    score_longform,
    shortform_latency,
    talk_outputs_from_log,
    talk_outputs_from_sentences,
)

# Two talks of two sentences; sources of 4+4 and 6+2 words, references of 4 words each.
PAIRS = [
    ("a1 a2 a3 a4", "the cat sat down"),
    ("b1 b2 b3 b4", "a dog ran away"),
    ("c1 c2 c3 c4 c5 c6", "she reads old books"),
    ("d1 d2", "he sings very loudly"),
]
# (text, units read) per chunk: talk0000 is wait-2, talk0001 writes in bursts.
WAIT_2 = [(word, min(2 + i, 8)) for i, word in enumerate("the cat sat down a dog ran away".split())]
SCHEDULES = {
    "talk0000": WAIT_2,
    "talk0001": [("she reads", 3), ("old books", 6), ("he sings very", 7), ("loudly", 8)],
}


@pytest.fixture
def talks_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(testsets, "read_pairs", lambda name: (PAIRS, "German", "English"))
    testsets.prepare_testset("multi30k.de-en.talks2", tmp_path / "talks")
    return tmp_path / "talks"


def outputs(step_seconds=0.0):
    """The schedules, each chunk `step_seconds` of computation after the previous one."""
    talks = []
    for talk, chunks in SCHEDULES.items():
        timed = enumerate(chunks, 1)
        talks.append(
            TalkOutput(talk, tuple(Chunk(t, read, step_seconds * n) for n, (t, read) in timed))
        )
    return talks


def test_perfect_output_resegments_to_the_references(talks_dir, tmp_path):
    result = score_longform(outputs(), talks_dir, tmp_path / "run")
    lines = (tmp_path / "run" / "omnisteval.resegmented.jsonl").read_text().splitlines()
    predictions = [json.loads(line)["prediction"] for line in lines]
    assert predictions == [reference for _, reference in PAIRS]
    assert result["scores"]["BLEU"] == pytest.approx(100)
    assert result["scores"]["chrF"] == pytest.approx(100)
    saved = json.loads((tmp_path / "run" / "longform_scores.json").read_text())
    assert saved == result
    assert "--fix_simuleval_emission_ca" in result["omnisteval"]["command"]


def test_long_yaal_and_stream_laal_match_a_hand_computation(talks_dir, tmp_path):
    # 0.5 s a word. talk0000 (wait-2): 1000 ms in both sentences. talk0001, sentence 1
    # (0-3000 ms, words at 1500 1500 3000 3000 ms, gamma = 4/3000): (1500 + 750 + 1500 +
    # 750) / 4 = 1125; sentence 2 (3000-4000, words at +500 500 500 1000; the word at the
    # talk's end is not counted): (500 + 250 + 0) / 3 = 250. LongYAAL = 3375 / 4.
    # StreamLAAL (LAAL: stops after the first word at or past the sentence's end):
    # 1000, 1000, (1500 + 750 + 1500) / 3, (500 + 250 + 0 + 250) / 4 -> 3500 / 4.
    scores = score_longform(outputs(), talks_dir, tmp_path / "run", unit_seconds=0.5)["scores"]
    assert scores["LongYAAL"] == 843.75
    assert scores["StreamLAAL"] == 875
    assert scores["LongYAAL_CA"] == 843.75  # no computation time


def test_words_at_sentence_ends_are_exactly_there_at_0_4_s_a_word(talks_dir, tmp_path):
    # 0.4 s is no binary fraction: rounded to 1/1024 s, the boundaries stay exact
    scores = score_longform(outputs(), talks_dir, tmp_path / "run")["scores"]
    assert scores["LongYAAL"] == pytest.approx(675, abs=0.5)
    assert scores["StreamLAAL"] == pytest.approx(700, abs=0.5)


def test_computation_aware_adds_the_computation_time(talks_dir, tmp_path):
    # 0.125 s of computation per chunk: made incremental, every word comes 125 ms later.
    scores = score_longform(outputs(0.125), talks_dir, tmp_path / "fixed", unit_seconds=0.5)
    assert scores["scores"]["LongYAAL_CA"] == 843.75 + 125
    assert scores["scores"]["StreamLAAL_CA"] == 875 + 125
    cumulative = score_longform(outputs(0.125), talks_dir, tmp_path / "raw", fix_ca=False)
    assert cumulative["scores"]["LongYAAL_CA"] > scores["scores"]["LongYAAL_CA"]


def test_word_times_set_the_clock(talks_dir, tmp_path):
    times = tmp_path / "times.txt"
    # twice as slow as 0.5 s a word: every latency doubles
    line = " ".join(str(1.0 * j) for j in range(1, 9))
    times.write_text(f"{line}\n{line}\n")
    result = score_longform(outputs(), talks_dir, tmp_path / "run", word_times=times)
    assert result["scores"]["LongYAAL"] == 2 * 843.75
    assert result["clock"] == {"word_times": str(times), "unit_seconds": None}


def write_log(path):
    """The schedules as a long-form SimulEval log (one line per talk)."""
    records = []
    for index, chunks in enumerate(SCHEDULES.values()):
        words = [(word, read) for text, read in chunks for word in text.split()]
        records.append(
            {
                "index": index,
                "prediction": " ".join(word for word, _ in words),
                "delays": [read for _, read in words],
                "elapsed": [0.0] * len(words),
                "source_length": 8,  # each talk: 4 + 4 and 6 + 2 words
            }
        )
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_a_long_form_simuleval_log_is_scored_from_the_command_line(talks_dir, tmp_path, capsys):
    log = write_log(tmp_path / "instances.log")
    folders = ["--testset", str(talks_dir), "--log", str(log), "--output", str(tmp_path)]
    main(["longform", *folders, "--ca-unit-seconds", "0.5"])
    assert json.loads(capsys.readouterr().out)["LongYAAL"] == 843.75


def test_comet_from_the_command_line_scores_the_resegmented_sentences(
    talks_dir, tmp_path, capsys, tiny_comet
):
    from east_agent.common.comet_process import comet_scores

    log = write_log(tmp_path / "instances.log")
    folders = ["--testset", str(talks_dir), "--log", str(log), "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as ended:  # refused before anything is written
        main(["longform", *folders, "--comet-checkpoint", str(tmp_path / "model.ckpt")])
    assert ended.value.code == 2 and "model.ckpt does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    comet = ["--comet-checkpoint", tiny_comet.checkpoint, "--comet-python", tiny_comet.python]
    main(["longform", *folders, *comet])
    scores = json.loads(capsys.readouterr().out)
    # the output is the references, re-segmented to them exactly
    sources, references = zip(*PAIRS)
    expected = comet_scores(tiny_comet, sources, references, references).system
    assert scores["COMET"] == pytest.approx(100 * expected, abs=1e-4)
    assert scores["BLEU"] == pytest.approx(100)


def test_a_log_line_with_too_few_delays_is_named(talks_dir, tmp_path):
    log = tmp_path / "instances.log"
    line = {"index": 0, "prediction": "a b c", "delays": [1, 2], "elapsed": [0, 0, 0]}
    second = {**line, "index": 1, "delays": [1, 2, 3]}
    log.write_text(json.dumps(line) + "\n" + json.dumps(second) + "\n")
    talks = longform.read_longform(talks_dir).talks
    with pytest.raises(ValueError, match=r"instances.log: line 1: field 'delays' has 2 values"):
        talk_outputs_from_log(log, talks)


def test_a_log_with_a_talk_twice_or_none_is_named(talks_dir, tmp_path):
    """Before: "<test set folder>: outputs must be for distinct talks ..., got [...]",
    naming neither the log nor its lines."""
    talks = longform.read_longform(talks_dir).talks
    log = write_log(tmp_path / "instances.log")
    first = log.read_text().splitlines()[0]
    log.write_text(f"{first}\n{first}\n")
    with pytest.raises(ValueError, match=r"instances.log: line 2: talk 0 again \(line 1\)"):
        talk_outputs_from_log(log, talks)
    log.write_text("")
    with pytest.raises(ValueError, match=r"instances.log: no talk in the log \(none finished\)"):
        talk_outputs_from_log(log, talks)
    with pytest.raises(ValueError, match="instances.log: no talk has all its sentences in the"):
        talk_outputs_from_sentences(log, talks)


def test_shortform_yaal_matches_a_hand_computation(tmp_path):
    log = tmp_path / "instances.log"
    records = [
        # gamma 4/4: (2 - 0) + (3 - 1), stop at the source end -> 2; CA delays
        # 2.1 3.2 4.3 4.3 (elapsed / 0.4 s) -> (2.1 + 2.2) / 2
        {"index": 0, "prediction": "a b c d", "reference": "a b c d\n", "source_length": 4,
         "delays": [2, 3, 4, 4], "elapsed": [0.04, 0.08, 0.12, 0.12]},
        # gamma 3/6: (1 - 0) + (4 - 2) -> 1.5; CA 1.5 4.5 6.5 -> (1.5 + 2.5) / 2
        {"index": 1, "prediction": "x y z", "reference": "x y z\n", "source_length": 6,
         "delays": [1, 4, 6], "elapsed": [0.2, 0.2, 0.2]},
    ]  # fmt: skip
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    scores = shortform_latency(log, unit_seconds=0.4)
    assert scores["YAAL"] == pytest.approx((2 + 1.5) / 2)
    assert scores["YAAL_CA"] == pytest.approx((2.15 + 2.0) / 2)
    # SWF: 4 of 7 words before their source end; EFSW: ((4 - 2) + (6 - 1.5)) / (4 + 6)
    assert scores["SWF"] == pytest.approx(400 / 7)
    assert scores["EFSW"] == pytest.approx(65)
    assert scores["DSPTV"] == pytest.approx(65 - 400 / 7)
    assert scores["degenerate"] == 0


def test_shortform_scores_a_runs_log_as_its_run_recorded_it(tmp_path, capsys):
    """Before: a word-level log scored with `--eval-latency-unit char` (called degenerate),
    and a long-form run's talks scored as sentences, both exit 0."""
    log = tmp_path / "instances.log"
    record = {"index": 0, "prediction": "a b", "reference": "a b\n", "source_length": 2,
              "delays": [1, 2], "elapsed": [0.0, 0.0]}  # fmt: skip
    log.write_text(json.dumps(record) + "\n")
    main(["shortform", "--log", str(log), "--eval-latency-unit", "char"])  # no record: as given
    assert json.loads(capsys.readouterr().out)["YAAL"] is not None
    settings = tmp_path / "run_settings.json"
    settings.write_text(json.dumps({"eval_latency_unit": "word", "long_form": False}))
    main(["shortform", "--log", str(log)])
    assert json.loads(capsys.readouterr().out)["YAAL"] is not None
    with pytest.raises(SystemExit):
        main(["shortform", "--log", str(log), "--eval-latency-unit", "char"])
    assert f"{log} was written with --eval-latency-unit word, not char" in capsys.readouterr().err
    settings.write_text(json.dumps({"eval_latency_unit": "spm", "long_form": False}))
    with pytest.raises(SystemExit):  # no flag of shortform gives it (a review)
        main(["shortform", "--log", str(log)])
    assert capsys.readouterr().err.endswith(
        f"{log} was written with --eval-latency-unit spm: shortform scores logs in words or "
        "characters\n"
    )
    settings.write_text(json.dumps({"eval_latency_unit": "word", "long_form": True}))
    with pytest.raises(SystemExit):
        main(["shortform", "--log", str(log)])
    assert capsys.readouterr().err.endswith(
        f"{log}: a long-form run's log (one line per talk): score it with `longform --testset "
        "DIR --log ...`, re-segmented to the reference sentences\n"
    )


def test_shortform_log_missing_a_field_is_named(tmp_path):
    log = tmp_path / "instances.log"
    log.write_text(json.dumps({"prediction": "a", "delays": [1], "elapsed": [0]}) + "\n")
    with pytest.raises(ValueError, match="line 1: field 'reference' missing"):
        shortform_latency(log)


def test_a_log_cut_off_by_a_kill_is_named_so(tmp_path):
    """Before: "invalid JSON: Unterminated string starting at", without a word of a kill."""
    record = {"prediction": "a", "delays": [1], "elapsed": [0], "reference": "a"}
    record["source_length"] = 1
    log = tmp_path / "instances.log"
    log.write_text(json.dumps(record) + "\n" + '{"prediction": "the c')
    with pytest.raises(ValueError) as raised:
        shortform_latency(log)
    assert str(raised.value) == (
        f"{log}: line 2: invalid JSON: Unterminated string starting at column 16; a run "
        "cut off while writing? --continue-unfinished drops such a line"
    )


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--comet-batch-size", "4"], "--comet-batch-size without --comet-checkpoint"),
        (
            ["--comet-gpus=0", "--comet-python", "py"],
            "--comet-gpus --comet-python without --comet-checkpoint",
        ),
        (["--comet-checkpoint="], "--comet-checkpoint is empty"),
        (  # before: taken, unread, recorded as null
            ["--word-times", "times.txt", "--ca-unit-seconds=2"],
            "--ca-unit-seconds: not with --word-times",
        ),
    ],
)
def test_flags_the_scorer_would_not_read_are_refused(talks_dir, tmp_path, capsys, flags, said):
    """COMET's without a checkpoint, as east-simuleval refuses them (before: taken, no COMET
    scored, exit 0); the uniform clock's with word times."""
    log = write_log(tmp_path / "instances.log")
    folders = ["--testset", str(talks_dir), "--log", str(log), "--output", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as ended:
        main(["longform", *folders, *flags])
    assert ended.value.code == 2 and said in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):  # an abbreviation is no flag (before: --comet-batch-size)
        main(["longform", *folders, "--comet-b", "4"])
    assert "unrecognized arguments: --comet-b 4" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["shortform", "longform"])
def test_a_log_that_is_not_there_is_named_with_its_flag(talks_dir, tmp_path, capsys, command):
    """Before: a bare errno message."""
    folders = [] if command == "shortform" else ["--testset", str(talks_dir), "--output", "o"]
    with pytest.raises(SystemExit) as ended:
        main([command, "--log", str(tmp_path / "nosuch.log"), *folders])
    assert ended.value.code == 2
    assert f"--log {tmp_path / 'nosuch.log'}: no such file" in capsys.readouterr().err


def test_an_output_that_is_a_file_is_named_before_scoring(talks_dir, tmp_path, capsys):
    """Before: a bare `[Errno 17] File exists` once the talks had been read."""
    log, taken = tmp_path / "instances.log", tmp_path / "taken"
    log.write_text("")
    taken.write_text("a file")
    with pytest.raises(SystemExit) as ended:
        main(["longform", "--log", str(log), "--testset", str(talks_dir), "--output", str(taken)])
    assert ended.value.code == 2
    assert f"--output {taken}: " in capsys.readouterr().err
    assert taken.read_text() == "a file"
    # the set's testset.json given for its folder (before: ".../testset.json/testset.json:
    # no such file")
    meta = talks_dir / "testset.json"
    with pytest.raises(SystemExit):
        main(["longform", "--log", str(log), "--testset", str(meta), "--output", str(tmp_path)])
    assert capsys.readouterr().err.endswith(
        f"{meta}: a file, not a test set's folder (give the folder east-prepare wrote)\n"
    )


@pytest.mark.parametrize("command", ["shortform", "longform"])
@pytest.mark.parametrize("seconds", ["inf", "nan"])
def test_a_unit_time_that_is_no_time_is_refused_naming_the_flag(
    talks_dir, tmp_path, capsys, command, seconds
):
    """Before: an OverflowError traceback (inf), or "cannot convert float NaN to integer"."""
    folders = [] if command == "shortform" else ["--testset", str(talks_dir), "--output", "o"]
    log = tmp_path / "instances.log"
    log.write_text("")
    with pytest.raises(SystemExit) as ended:
        main([command, "--log", str(log), *folders, "--ca-unit-seconds", seconds])
    assert ended.value.code == 2
    error = capsys.readouterr().err
    assert f"--ca-unit-seconds: takes a number of seconds above 0, got '{seconds}'" in error


def test_chinese_output_is_scored_by_character(tmp_path, monkeypatch):
    pairs = [
        ("a b c d", "我们今天去北京"),
        ("e f", "他很高兴"),
        ("g h i", "天气很好"),
        ("j", "明天见"),
    ]
    monkeypatch.setattr(testsets, "read_pairs", lambda name: (pairs, "English", "Chinese"))
    testsets.prepare_testset("wmt22.en-zh.talks2", tmp_path / "zh")
    chunks = {
        "talk0000": [Chunk("我们今天", 2, 0), Chunk("去北京", 4, 0), Chunk("他很 高兴", 6, 0)],
        "talk0001": [Chunk("天气很好", 3, 0), Chunk("明天见", 4, 0)],
    }
    talks = [TalkOutput(talk, tuple(talk_chunks)) for talk, talk_chunks in chunks.items()]
    result = score_longform(talks, tmp_path / "zh", tmp_path / "run", unit_seconds=0.5)
    lines = (tmp_path / "run" / "omnisteval.resegmented.jsonl").read_text().splitlines()
    assert [json.loads(line)["prediction"] for line in lines] == [r for _, r in pairs]
    assert result["scores"]["BLEU"] == pytest.approx(100)
    assert "--char_level --bleu_tokenizer zh" in result["omnisteval"]["command"]


def test_a_chunk_reading_past_the_talk_is_named(talks_dir, tmp_path):
    talks = outputs()
    talks[1] = TalkOutput("talk0001", (Chunk("she", 9, 0.0),))
    with pytest.raises(ValueError, match=r"talk0001: chunk 1: units_read 9 \(the talk has 8\)"):
        score_longform(talks, talks_dir, tmp_path / "run")


def test_a_run_of_some_talks_is_scored_on_their_sentences(talks_dir, tmp_path):
    # talk0001 alone: sentences 1125 and 250 (0.5 s a word; see the hand computation above)
    result = score_longform(outputs()[1:], talks_dir, tmp_path / "run", unit_seconds=0.5)
    assert (result["talks"], result["testset_talks"], result["reference_sentences"]) == (1, 2, 2)
    assert result["scores"]["LongYAAL"] == (1125 + 250) / 2
    written = (tmp_path / "run" / "omnisteval.reference.txt").read_text().splitlines()
    assert written == [reference for _, reference in PAIRS[2:]]
    with pytest.raises(ValueError, match="distinct talks in the test set's order"):
        score_longform(outputs()[::-1], talks_dir, tmp_path / "run")


def test_gold_sentence_logs_join_into_talks(talks_dir, tmp_path):
    """Sentence i of a talk: delays shifted by the units before it, computation summed."""
    records = [  # index: the line of source_sentences.txt; elapsed: seconds in the sentence
        {"index": 0, "prediction": "the cat", "delays": [2, 4], "elapsed": [0.1, 0.3]},
        {"index": 1, "prediction": "a dog", "delays": [1, 4], "elapsed": [0.2, 0.5]},
        {"index": 2, "prediction": "she", "delays": [6], "elapsed": [1.0]},
    ]  # sentence 3 is missing: its talk is left out
    for record, words in zip(records, (4, 4, 6)):
        record["source_length"] = words
    log = tmp_path / "instances.log"
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    talks = longform.read_longform(talks_dir).talks
    (talk,) = talk_outputs_from_sentences(log, talks)
    assert talk.talk_id == "talk0000"
    assert [(c.text, c.units_read, c.elapsed) for c in talk.chunks] == [
        ("the", 2, 0.1),
        ("cat", 4, 0.3),
        ("a", 5, pytest.approx(0.5)),
        ("dog", 8, pytest.approx(0.8)),
    ]


def test_a_gold_sentence_log_is_scored_from_the_command_line(talks_dir, tmp_path, capsys):
    """`--gold-sentences` joins the sentences into talks as a grid does (before: refused,
    its sentences' lengths not the talks'; only a grid could score such a run)."""
    sentences = [("the cat", [2, 4], 4), ("a dog", [1, 4], 4), ("she", [6], 6), ("ran", [2], 2)]
    references = (talks_dir / "reference_sentences.txt").read_text().splitlines()
    records = [
        {"index": index, "prediction": text, "delays": delays, "elapsed": [0.0] * len(delays),
         "source_length": length, "reference": reference + "\n"}
        for index, ((text, delays, length), reference) in enumerate(zip(sentences, references))
    ]  # fmt: skip
    log = tmp_path / "instances.log"
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    folders = ["--testset", str(talks_dir), "--log", str(log), "--output", str(tmp_path / "o")]
    with pytest.raises(SystemExit):
        main(["longform", *folders])  # read as talks: refused, naming the flag
    assert "(or of its gold sentences, not talks: give --gold-sentences)" in (
        capsys.readouterr().err
    )
    log.write_text("".join(json.dumps(record) + "\n" for record in records[:2]))
    with pytest.raises(SystemExit):  # as many sentences as talks: by its sources' lengths
        main(["longform", *folders])  # (before: its references, another language's)
    assert "(or of its gold sentences, not talks: give --gold-sentences)" in (
        capsys.readouterr().err
    )
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    main(["longform", *folders, "--gold-sentences"])
    said = capsys.readouterr()
    scores = json.loads(said.out)
    joined = talk_outputs_from_sentences(log, longform.read_longform(talks_dir).talks)
    expected = score_longform(joined, talks_dir, tmp_path / "by-function")["scores"]
    assert scores == expected and scores["LongYAAL"] is not None
    assert said.err == ""  # both talks whole
    log.write_text("".join(json.dumps(record) + "\n" for record in records[:3]))
    main(["longform", *folders, "--gold-sentences"])  # a run cut mid-talk
    assert capsys.readouterr().err == (
        f"{log}: talks scored: 1 of 2 (2 sentences); sentences left out, of talks it does "
        "not hold whole: 1\n"
    )
    log.write_text("".join(json.dumps(record) + "\n" for record in records[:2]))
    main(["longform", *folders, "--gold-sentences"])  # the first talk whole (before: unsaid)
    assert capsys.readouterr().err == f"{log}: talks scored: 1 of 2\n"
    write_log(log)  # a talks' log read as gold sentences
    with pytest.raises(SystemExit):
        main(["longform", *folders, "--gold-sentences"])
    assert "leave out --gold-sentences" in capsys.readouterr().err


def test_a_log_of_another_test_set_is_refused(talks_dir, tmp_path):
    """Before: scored, LongYAAL of -103,551 ms and exit 0 (a talks5 log against talks50)."""
    talks = longform.read_longform(talks_dir).talks
    log = write_log(tmp_path / "instances.log")
    lines = log.read_text().splitlines()
    other = {**json.loads(lines[1]), "source_length": 5}
    log.write_text(lines[0] + "\n" + json.dumps(other) + "\n")
    with pytest.raises(ValueError, match="line 2: field 'source_length' is 5, but talk0001's"):
        talk_outputs_from_log(log, talks)
    # a gold-sentence log read as talks: its sentences' lengths are not the talks'
    sentence = {"index": 0, "prediction": "the cat", "delays": [2, 4], "elapsed": [0, 0]}
    log.write_text(json.dumps({**sentence, "source_length": 4}) + "\n")
    with pytest.raises(ValueError, match="talk0000's source there has 8 units"):
        talk_outputs_from_log(log, talks)
    # a talk's log read as gold sentences: sentence 0 has 4 units, not 8
    records = [{**sentence, "index": index, "source_length": 8} for index in (0, 1)]
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    with pytest.raises(ValueError, match="line 1: .* talk0000's source there has 4 units"):
        talk_outputs_from_sentences(log, talks)
    # the same with no talk whole, its reference a talk's: named so (before: "field
    # 'reference' is not the test set's reference of sentence 1 ... another target language?")
    talk_line = {**records[1], "reference": "she reads old books he sings very loudly"}
    log.write_text(json.dumps(talk_line) + "\n")
    references = read_lines(talks_dir / "reference_sentences.txt")
    with pytest.raises(ValueError, match="no talk has all its sentences in the log"):
        talk_outputs_from_sentences(log, talks, references=references)


@pytest.mark.parametrize(
    ("field", "values", "wrong"),
    [
        ("delays", [2, None, 4, 5, 6, 7, 8, 8], "value 2 is None; they must be whole numbers"),
        ("elapsed", [0.1, None] + [0.2] * 6, "value 2 is None; they must be numbers of seconds"),
        ("delays", [2, "3", 4, 5, 6, 7, 8, 8], "value 2 is '3'; they must be whole numbers"),
        ("delays", [True, 3, 4, 5, 6, 7, 8, 8], "value 1 is True; they must be whole numbers"),
        ("elapsed", [0.1, -0.5] + [0.2] * 6, "value 2 is -0.5; they must be numbers of"),
        ("elapsed", [0.1, float("nan")] + [0.2] * 6, "value 2 is nan; they must be numbers"),
        ("delays", [8, 7, 6, 5, 4, 3, 2, 2], r"value 2 \(7\) is below value 1 \(8\)"),
    ],
)
def test_a_bad_value_of_delays_or_elapsed_is_named_with_its_line(
    talks_dir, tmp_path, field, values, wrong
):
    """Before: a `null` was a TypeError from int() (an `east-eval` grid aborted by it), and
    delays going backwards, strings and booleans were scored."""
    talks = longform.read_longform(talks_dir).talks
    log = write_log(tmp_path / "instances.log")
    first, second = log.read_text().splitlines()
    log.write_text(first + "\n" + json.dumps({**json.loads(second), field: values}) + "\n")
    with pytest.raises(ValueError, match=rf"instances.log: line 2: field '{field}': {wrong}"):
        talk_outputs_from_log(log, talks)


def test_elapsed_times_set_back_by_the_clock_are_scored(talks_dir, tmp_path):
    """SimulEval's loop reads a wall clock, which may be set back during a run: its log is
    scored as SimulEval scores it."""
    talks = longform.read_longform(talks_dir).talks
    log = write_log(tmp_path / "instances.log")
    first, second = log.read_text().splitlines()
    record = json.loads(second)
    record["elapsed"] = [0.2, 0.1] + [0.3] * (len(record["elapsed"]) - 2)
    log.write_text(first + "\n" + json.dumps(record) + "\n")
    assert len(talk_outputs_from_log(log, talks)) == 2


def test_a_bad_value_in_a_gold_sentence_or_short_form_log_is_named(talks_dir, tmp_path):
    """The values are checked as the log is read, whatever reads it."""
    talks = longform.read_longform(talks_dir).talks
    log = tmp_path / "instances.log"
    record = {"index": 0, "prediction": "the cat", "delays": [2, None], "elapsed": [0, 0]}
    log.write_text(json.dumps({**record, "source_length": 4, "reference": "the cat"}) + "\n")
    match = "instances.log: line 1: field 'delays': value 2 is None"
    with pytest.raises(ValueError, match=match):
        talk_outputs_from_sentences(log, talks)
    with pytest.raises(ValueError, match=match):
        shortform_latency(log)


def test_a_delay_past_the_source_is_named_with_the_log_and_its_line(talks_dir, tmp_path):
    """Before: "talk0001: chunk 8: units_read 9 (the talk has 8), elapsed 0.0 s (must be
    >= 0)", naming neither the log nor its line, and elapsed though it was right."""
    talks = longform.read_longform(talks_dir).talks
    log = write_log(tmp_path / "instances.log")
    first, second = log.read_text().splitlines()
    record = json.loads(second)
    record["delays"][-1] = 9
    log.write_text(first + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=r"instances.log: line 2: field 'delays' reaches 9 units"):
        talk_outputs_from_log(log, talks)
    # a gold sentence's delays: past its own units (sentence 1 has 4), not the talk's
    sentences = [
        {"index": 0, "prediction": "the cat", "delays": [2, 4], "elapsed": [0, 0]},
        {"index": 1, "prediction": "a dog", "delays": [1, 5], "elapsed": [0, 0]},
    ]
    log.write_text("".join(json.dumps({**r, "source_length": 4}) + "\n" for r in sentences))
    with pytest.raises(ValueError, match="line 2: field 'delays' reaches 5 units read, past"):
        talk_outputs_from_sentences(log, talks)


def test_a_chunk_with_negative_elapsed_is_named_alone(talks_dir, tmp_path):
    """Before: its units_read (right) was named too."""
    talks = outputs()
    talks[1] = TalkOutput("talk0001", (Chunk("she", 3, -1.0),))
    with pytest.raises(ValueError, match=r"talk0001: chunk 1: elapsed -1.0 s \(must be >= 0\)$"):
        score_longform(talks, talks_dir, tmp_path / "run")


@pytest.mark.parametrize(
    ("indexes", "wrong"),
    [
        ((0, 1, 0), r"line 3: sentence 0 again \(line 1\)"),
        ((0, 1, 4), "line 3: field 'index' must be a sentence number 0..3, got 4"),
        ((0, 1, True), "line 3: field 'index' must be a sentence number 0..3, got True"),
        ((0, 1, None), "line 3: field 'index' must be a sentence number 0..3, got None"),
    ],
)
def test_a_gold_sentence_twice_or_none_of_the_set_is_named(talks_dir, tmp_path, indexes, wrong):
    """Before: the later line of a sentence twice was taken, one outside the set ignored."""
    talks = longform.read_longform(talks_dir).talks
    record = {"prediction": "the cat", "delays": [2, 4], "elapsed": [0, 0], "source_length": 4}
    log = tmp_path / "instances.log"
    log.write_text("".join(json.dumps({**record, "index": i}) + "\n" for i in indexes))
    with pytest.raises(ValueError, match=f"instances.log: {wrong}"):
        talk_outputs_from_sentences(log, talks)


def test_a_word_times_file_that_is_not_there_is_named_with_its_flag(talks_dir, tmp_path, capsys):
    """Before: a bare `[Errno 2] No such file or directory: 'nothere.txt'`."""
    log = write_log(tmp_path / "instances.log")
    folders = ["--testset", str(talks_dir), "--log", str(log), "--output", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as ended:
        main(["longform", *folders, "--word-times", str(tmp_path / "nothere.txt")])
    assert ended.value.code == 2
    assert f"--word-times {tmp_path / 'nothere.txt'}: no such file" in capsys.readouterr().err


@pytest.mark.parametrize("gold", [False, True], ids=["talks", "gold-sentences"])
def test_a_log_of_another_target_language_is_refused(talks_dir, tmp_path, capsys, gold):
    """The log's references must be the set's: before, a de-en run scored against a
    de-fr set of the same source was scored against French references, exit 0."""
    if gold:
        lines = [(text, [1], len(src.split()), ref) for (src, ref), text in zip(PAIRS, "wxyz")]
    else:
        talk_references = [f"{PAIRS[0][1]} {PAIRS[1][1]}", f"{PAIRS[2][1]} {PAIRS[3][1]}"]
        lines = [("w", [8], 8, talk_references[0]), ("x", [8], 8, talk_references[1])]
    records = [
        {"index": index, "prediction": text, "delays": delays, "elapsed": [0.0],
         "source_length": length, "reference": reference + "\n"}
        for index, (text, delays, length, reference) in enumerate(lines)
    ]  # fmt: skip
    log = tmp_path / "instances.log"
    flags = ["--testset", str(talks_dir), "--log", str(log), "--output", str(tmp_path / "o")]
    flags += ["--gold-sentences"] if gold else []
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    main(["longform", *flags])  # its own references: scored
    assert json.loads(capsys.readouterr().out)["BLEU"] is not None
    scores = (tmp_path / "o" / "longform_scores.json").read_text()
    records[1]["reference"] = "le chat est assis\n"
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    with pytest.raises(SystemExit):
        main(["longform", *flags])
    what = "sentence 1" if gold else "talk0001"
    assert capsys.readouterr().err.endswith(
        f"{log}: line 2: field 'reference' is not the test set's reference of {what}: a log "
        "of another test set (the same source in another target language?)\n"
    )
    assert (tmp_path / "o" / "longform_scores.json").read_text() == scores  # kept as it was
    del records[1]["reference"]  # a run without --target holds none: not compared
    log.write_text("".join(json.dumps(record) + "\n" for record in records))
    main(["longform", *flags])
    assert json.loads(capsys.readouterr().out)["BLEU"] is not None
    if not gold:  # a log of some talks says how many (before: longform_scores.json alone)
        log.write_text(json.dumps(records[0]) + "\n")
        main(["longform", *flags])
        assert capsys.readouterr().err == f"{log}: talks scored: 1 of 2\n"


def test_omnistevals_hint_names_this_commands_flag(caplog):
    """Under `--no-fix-ca` OmniSTEval advises its own `--fix_simuleval_emission_ca`, which
    this command does not take: said as the flag to leave out."""
    import logging

    from east_agent.evaluation.omnisteval_scoring import hint_in_our_flags

    omnisteval_logger = logging.getLogger("omnisteval.scoring")
    advice = "CA-YAAL (%.1f) is much higher. Consider using --fix_simuleval_emission_ca."
    with hint_in_our_flags():
        omnisteval_logger.warning(advice, 5000.0)
    assert caplog.messages == [
        "CA-YAAL (5000.0) is much higher. Leave out --no-fix-ca (OmniSTEval's "
        "--fix_simuleval_emission_ca)."
    ]
    omnisteval_logger.warning(advice, 1.0)  # outside the scoring: as OmniSTEval says it
    assert caplog.messages[-1].endswith("Consider using --fix_simuleval_emission_ca.")
