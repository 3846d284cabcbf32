"""Paired bootstrap between the settings of a curve (sacrebleu's test, real BLEU)."""

import json

import pytest

from east_agent.evaluation.reports import write_tables
from east_agent.evaluation.significance import (
    SIGNIFICANCE_COLUMNS,
    compare,
    compare_runs,
    read_predictions,
)

REFERENCES = [
    f"a {colour} dog runs across the {place} with a {thing} in its mouth ."
    for colour in ("black", "brown", "white", "grey", "small")
    for place in ("grass", "beach", "snow", "street")
    for thing in ("ball", "stick", "toy")
]  # 60 sentences


def degrade(sentence: str, every: int) -> str:
    words = sentence.split()
    return " ".join(word for position, word in enumerate(words) if position % every)


def test_a_clearly_better_setting_is_higher_and_an_equal_one_a_tie():
    worse = [degrade(sentence, 2) for sentence in REFERENCES]
    settings = [("low", worse), ("high", list(REFERENCES)), ("higher", list(REFERENCES))]
    up, flat = compare("east", settings, REFERENCES, samples=200)
    assert (up.from_setting, up.to_setting, up.verdict) == ("low", "high", "higher")
    assert up.bleu_to == pytest.approx(100.0) and up.bleu_from < 60
    assert up.p_value < 0.05 and up.ci95_to >= 0
    assert flat.verdict == "tie" and flat.bleu_to == flat.bleu_from
    assert flat.p_value == 1.0  # the same translations (before: sacrebleu's 1/(samples+1))


def test_other_translations_of_the_same_bleu_are_a_tie_of_p_1():
    """Before: both BLEU 0 in every resample gave p 0.0010 beside "tie" (sacrebleu's
    1/(samples+1) where no resample differs)."""
    settings = [("k1", ["x y", "z", "w"] * 3), ("k3", ["q r", "s", "t"] * 3)]
    references = ["a b c d e", "f g h i j", "k l m n o"] * 3
    (zero,) = compare("waitk", settings, references, samples=200)
    assert zero.bleu_from == zero.bleu_to == 0.0 and zero.p_value == 1.0
    assert zero.verdict == "tie" and zero.row()["p_value"] == "1.0000"


def test_under_seven_sentences_nothing_is_tested():
    """Before: one sentence resampled is always itself, and any difference came out
    "higher, p 0.001", CI 0; two sentences have 3 distinct resamples, and came out
    "higher, p 0.0010" too. From 7 on (1,716 distinct resamples) they are tested."""
    for count in (1, 2, 6):
        (few,) = compare(
            "east", [("low", ["a dog"] * count), ("high", REFERENCES[:count])], REFERENCES[:count]
        )
        assert few.p_value is None and few.ci95_to is None
        assert few.verdict == "untested (under 7 sentences)" and few.bleu_to > few.bleu_from
        row = few.row()
        assert (row["p_value"], row["CI95_to"], row["BLEU_to"]) == ("", "", f"{few.bleu_to:.3f}")
    (seven,) = compare(
        "east", [("low", ["a dog"] * 7), ("high", REFERENCES[:7])], REFERENCES[:7], samples=200
    )
    assert seven.p_value is not None and seven.verdict == "higher"


def test_a_worse_setting_is_lower():
    (down,) = compare(
        "waitk", [("k3", list(REFERENCES)), ("k5", [degrade(s, 3) for s in REFERENCES])],
        REFERENCES, samples=200,
    )  # fmt: skip
    assert down.verdict == "lower" and float(down.row()["delta"]) < 0


def test_an_unfinished_run_is_named():
    with pytest.raises(ValueError, match="east-high: 2 translations for 60 references"):
        compare("east", [("low", REFERENCES), ("high", REFERENCES[:2])], REFERENCES)


def write_log(folder, predictions):
    folder.mkdir(parents=True)
    lines = [json.dumps({"index": index, "prediction": text}) for index, text in predictions]
    (folder / "instances.log").write_text("\n".join(lines) + "\n")
    return folder


def test_runs_are_read_by_index_and_only_shared_sentences_count(tmp_path):
    # a run's log may be out of order (merged shards); --limit runs cover the first sentences
    rest = [(index, REFERENCES[index]) for index in range(2, 8)]  # 8 shared: tested
    low = write_log(tmp_path / "low", [(1, REFERENCES[1]), (0, "a dog"), *rest])
    high = write_log(tmp_path / "high", [(0, REFERENCES[0]), (1, REFERENCES[1]), *rest, (8, "x")])
    assert read_predictions(low) == {0: "a dog", 1: REFERENCES[1], **dict(rest)}
    (comparison,) = compare_runs("east", [("low", low), ("high", high)], REFERENCES, samples=50)
    assert comparison.bleu_to == pytest.approx(100.0)  # sentence 8 is not in both runs
    write_tables([comparison.row()], tmp_path, SIGNIFICANCE_COLUMNS, "significance")
    assert "| east | low | high |" in (tmp_path / "significance.md").read_text()
    row = comparison.row()  # one number of decimals a column, its trailing zeros kept
    assert row["BLEU_to"] == "100.000" and len(row["p_value"].split(".")[1]) == 4
    assert (tmp_path / "significance.csv").read_text().startswith("system,from,to,")


def test_a_broken_log_line_is_named(tmp_path):
    folder = write_log(tmp_path / "run", [(0, "a dog")])
    with open(folder / "instances.log", "a") as handle:
        handle.write('{"index": 1}\n')
    with pytest.raises(ValueError, match=r"instances.log, line 2: not a SimulEval instance"):
        read_predictions(folder)
    (folder / "instances.log").write_text('{"index": 0, "prediction": "a d')  # a kill's
    said = r"line 1: invalid JSON: Unterminated string starting at column 28; .*cut off"
    with pytest.raises(ValueError, match=said):
        read_predictions(folder)


def test_a_prediction_holding_a_line_separator_is_one_line(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    records = [{"index": 0, "prediction": "a\u2028dog"}, {"index": 1, "prediction": "a\x85cat"}]
    lines = [json.dumps(record, ensure_ascii=False) for record in records]
    (folder / "instances.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert read_predictions(folder) == {0: "a\u2028dog", 1: "a\x85cat"}


def test_a_log_that_is_not_utf8_is_named(tmp_path):
    folder = write_log(tmp_path / "run", [(0, "a dog")])
    with open(folder / "instances.log", "ab") as handle:
        handle.write(b'{"index": 1, "prediction": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"instances.log: line 2: not UTF-8 \(byte 0xe9 at"):
        read_predictions(folder)


def test_delta_is_the_difference_of_the_scores_shown():
    """Before: rounded from the unrounded scores, 0.001 off the row's own columns
    (28.411 -> 30.150 shown with delta 1.738)."""
    from east_agent.evaluation.significance import Comparison

    row = Comparison("east", "low", "high", 28.4114, 30.1496, None, None).row()
    assert (row["BLEU_from"], row["BLEU_to"], row["delta"]) == ("28.411", "30.150", "1.739")
    same = Comparison("east", "low", "high", 30.0004, 29.9996, None, None).row()
    assert same["delta"] == "0.000"
