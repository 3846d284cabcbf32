"""SimulEval's writes made safe (`east_agent.simuleval_glue.simuleval_fixes`)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas
import pytest
from commands import run_simuleval

from east_agent.simuleval_glue import simuleval_fixes


def test_simulevals_files_appear_whole_or_not_at_all(tmp_path):
    from simuleval.evaluator import SentenceLevelEvaluator, evaluator

    simuleval_fixes.apply()
    config = tmp_path / "config.yaml"
    with evaluator.open(config, "w") as handle:
        handle.write("source_type: text\n")
        assert not config.exists()  # nothing at the path until the file is whole
    assert config.read_text() == "source_type: text\n"

    log = tmp_path / "instances.log"
    handle = evaluator.open(log, "a")
    handle.write('{"index": 0}\n')
    assert log.read_text() == '{"index": 0}\n'  # on disk as soon as the line ends
    handle.close()

    (tmp_path / "scores.tsv").write_text("an earlier run's scores\n")
    scores = pandas.DataFrame({"BLEU": [12.5], "AL": [2.0]})
    args = SimpleNamespace(quality_metrics=["BLEU"], latency_metrics=["AL"])
    fake = SimpleNamespace(output=tmp_path, results=scores, instances={}, args=args)
    fake.instances = {0: SimpleNamespace(metrics={"BLEU": 12.5})}
    SentenceLevelEvaluator.dump_results(fake)
    SentenceLevelEvaluator.dump_metrics(fake)
    assert (tmp_path / "scores.tsv").read_text() == "BLEU\tAL\n12.5\t2.0\n"
    assert (tmp_path / "metrics.tsv").read_text() == "BLEU\n12.5\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "config.yaml", "instances.log", "metrics.tsv", "scores.tsv", "scoring.json"
    ]  # fmt: skip
    assert json.loads((tmp_path / "scoring.json").read_text())["latency_metrics"] == ["AL"]


def text_record(index: int, delays: list[int], source_length: int) -> dict:
    words = [f"w{position}" for position in range(len(delays))]
    return {
        "index": index, "prediction": " ".join(words), "delays": delays,
        "elapsed": [0.1 * (position + 1) for position in range(len(delays))],
        "prediction_length": len(delays), "reference": " ".join(words),
        "source": [" ".join(["s"] * source_length)], "source_length": source_length,
    }  # fmt: skip


def write_text_run(folder, records) -> None:
    folder.mkdir()
    (folder / "config.yaml").write_text("source_type: text\ntarget_type: text\n")
    (folder / "instances.log").write_text("".join(json.dumps(r) + "\n" for r in records))


def scored(folder, *metrics) -> dict[str, str]:
    result = run_simuleval("--score-only", "--output", folder, "--latency-metrics", *metrics)
    assert result.returncode == 0, result.stderr[-3000:]
    header, values = (folder / "scores.tsv").read_text().splitlines()[:2]
    return dict(zip(header.split("\t"), values.split("\t")))


def test_a_text_runs_log_is_scored_by_simulevals_text_rules(tmp_path):
    """ATD of a logged text run: what SimulEval computes for the live text instances (its
    speech rule, 300 ms a source word and target words of no length, gave 0); a log whose
    indices do not start at 0 too."""
    from simuleval.evaluator.instance import TextToTextInstance
    from simuleval.evaluator.scorers.latency_scorer import ATDScorer

    records = [
        text_record(5, [1, 2, 3, 4, 4], 4),
        text_record(6, [3, 3, 5, 6, 7, 7], 7),
        text_record(7, [2, 2, 2], 2),
    ]
    write_text_run(tmp_path / "run", records)

    def live(record):
        instance = object.__new__(TextToTextInstance)
        instance.delays, instance.elapsed = record["delays"], record["elapsed"]
        return instance

    expected = ATDScorer()({i: live(record) for i, record in enumerate(records)})
    assert expected > 0.5
    scores = scored(tmp_path / "run", "AL", "ATD")
    assert float(scores["ATD"]) == pytest.approx(expected, abs=1e-3)
    assert float(scores["AL"]) > 0


def test_a_run_with_no_sentence_is_scored_as_nan(tmp_path):
    write_text_run(tmp_path / "run", [])
    scores = scored(tmp_path / "run", "AL", "LAAL", "ATD")
    assert [scores[name] for name in ("AL", "LAAL", "ATD")] == ["", "", ""]  # NaN


def test_computation_aware_is_refused_for_text_runs_only(tmp_path):
    write_text_run(tmp_path / "run", [text_record(0, [1, 2], 2)])
    logged = simuleval_fixes.logged_source_type(tmp_path / "run")
    assert logged == "text" and simuleval_fixes.logged_source_type(tmp_path) is None
    (tmp_path / "config.yaml").write_text("x\n")  # not SimulEval's: no type to read
    assert simuleval_fixes.logged_source_type(tmp_path) is None
    with pytest.raises(ValueError, match="--computation-aware: SimulEval's computation-aware"):
        simuleval_fixes.refuse_computation_aware_for_text(True, logged)
    for computation_aware, source_type in ((True, "speech"), (True, None), (False, "text")):
        simuleval_fixes.refuse_computation_aware_for_text(computation_aware, source_type)


READ_UNDER_ASCII = """
import locale, sys
from simuleval.data.dataloader.t2t_dataloader import TextToTextDataloader
from east_agent.simuleval_glue import simuleval_fixes
assert locale.getpreferredencoding(False).lower() in ("ascii", "ansi_x3.4-1968")
if sys.argv[3] == "fixed":
    simuleval_fixes.apply()
loader = TextToTextDataloader.from_files(sys.argv[1], sys.argv[2])
print(ascii([loader.source_list[0], loader.target_list[0]]))  # stdout is ASCII here
"""


@pytest.mark.parametrize("applied", ["fixed", "stock"])
def test_simulevals_text_files_are_read_as_utf8_whatever_the_locale(tmp_path, applied):
    """Before: read in the locale's encoding, which this package checks as UTF-8 (under
    a C locale, SimulEval's loop failed on `ü` after the model loaded)."""
    import os
    import subprocess
    import sys

    source, target = tmp_path / "src.txt", tmp_path / "ref.txt"
    source.write_text("Grüße\n", encoding="utf-8")
    target.write_text("Greetings\n", encoding="utf-8")
    ascii_locale = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    result = subprocess.run(
        [sys.executable, "-c", READ_UNDER_ASCII, str(source), str(target), applied],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, **ascii_locale},
        timeout=120,
    )
    if applied == "fixed":
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout == ascii(["Grüße\n", "Greetings\n"]) + "\n"
    else:  # what the fix is for: the stock reader fails here
        assert "UnicodeDecodeError" in result.stderr


def test_a_bleu_that_cannot_be_computed_raises_instead_of_scoring_0(monkeypatch):
    """SimulEval's scorer logs any error and returns BLEU 0 (a tokenizer missing its
    package scored 0, exit 0); it is a failure now, and BLEU is sacrebleu's otherwise."""
    import sacrebleu
    from sacrebleu.tokenizers import tokenizer_ja_mecab
    from simuleval.evaluator.scorers.quality_scorer import SacreBLEUScorer

    simuleval_fixes.apply()
    instances = {
        0: SimpleNamespace(prediction="a cat sat", reference="a cat sat down"),
        1: SimpleNamespace(prediction="the dog", reference="a dog"),
    }
    expected = sacrebleu.corpus_bleu(["a cat sat", "the dog"], [["a cat sat down", "a dog"]])
    assert SacreBLEUScorer("13a")(instances) == pytest.approx(expected.score)
    monkeypatch.setattr(tokenizer_ja_mecab, "MeCab", None)  # as without sacrebleu[ja]
    with pytest.raises(RuntimeError, match="Japanese tokenization requires"):
        SacreBLEUScorer("ja-mecab")(instances)
