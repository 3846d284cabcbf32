"""A run folder's scores and the record of how they were made
(`east_agent.simuleval_glue.scoring`)."""

from __future__ import annotations

import argparse
import json

import pytest
from commands import agent_arguments, run_simuleval, write_toy_test_set

from east_agent.simuleval_glue import scoring
from east_agent.simuleval_glue.batch import score_folder


def write_finished_run(folder) -> None:
    """A text run's folder: three sentences of a toy log."""
    folder.mkdir()
    (folder / "config.yaml").write_text("source_type: text\ntarget_type: text\n")
    records = []
    for index, (delays, source_length) in enumerate([([1, 2, 3], 3), ([2, 2, 4, 4], 4)]):
        words = [f"w{position}" for position in range(len(delays))]
        records.append({
            "index": index, "prediction": " ".join(words), "delays": delays,
            "elapsed": [0.3 * (position + 1) for position in range(len(delays))],
            "prediction_length": len(delays), "reference": " ".join(words),
            "source": [" ".join(["s"] * source_length)], "source_length": source_length,
        })  # fmt: skip
    (folder / "instances.log").write_text("".join(json.dumps(r) + "\n" for r in records))


def score_only(folder, *flags) -> list[str]:
    return ["--score-only", "--output", str(folder), *flags]


def test_every_score_only_records_what_its_scores_were_made_with(tmp_path, capsys):
    run = tmp_path / "run"
    write_finished_run(run)
    flags = ["--latency-metrics", "AL", "LAAL_CA", "--ca-unit-seconds", "0.8"]
    result = run_simuleval(*score_only(run, *flags))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run / scoring.SCORING_RECORD).read_text())
    assert record == scoring.scoring_settings(scoring.scoring_args(score_only(run, *flags)))
    assert record["latency_metrics"] == ["AL", "LAAL_CA"] and record["ca_unit_seconds"] == 0.8
    assert record["sacrebleu_tokenizer"] == "13a"  # BLEU's own flag, at its default
    assert scoring.scoring_differences(run, record) == []

    # scored again otherwise (in this process): the record follows the scores, and the
    # metrics no longer there are said (before: dropped without a word)
    score_folder(scoring.scoring_args(score_only(run, "--latency-metrics", "AL")))
    assert (run / "scores.tsv").read_text().splitlines()[0].split("\t") == ["BLEU", "AL"]
    said = f"note: {run / 'scores.tsv'} held BLEU, AL, LAAL_CA; now BLEU, AL\n"
    assert said in capsys.readouterr().out
    score_folder(scoring.scoring_args(score_only(run, "--latency-metrics", "AL")))
    assert "note:" not in capsys.readouterr().out  # the same metrics: nothing to say
    assert scoring.scoring_differences(run, record) == [
        "ca_unit_seconds None (now 0.8)",  # no clock without a computation-aware metric
        "latency_metrics ['AL'] (now ['AL', 'LAAL_CA'])",
    ]


def test_scores_without_a_record_are_named_as_such(tmp_path):
    (tmp_path / "scores.tsv").write_text("BLEU\n1.0\n")
    settings = scoring.scoring_settings(scoring.scoring_args(score_only(tmp_path)))
    assert scoring.scoring_differences(tmp_path, settings) == ["scoring settings not recorded"]


def test_a_comet_checkpoint_recorded_by_its_path_alone_is_not_taken_as_the_same(tmp_path):
    """A record that names the checkpoint by its path (no content known) cannot say the
    file there now is the one it scored with: scored again."""
    (tmp_path / "scores.tsv").write_text("BLEU\tCOMET\n1.0\t50.0\n")
    checkpoint = {"file": "/models/comet/checkpoints/model.ckpt", "sha256": "ab" * 32}
    record = tmp_path / scoring.SCORING_RECORD
    record.write_text(json.dumps({"comet_checkpoint": checkpoint["file"]}))
    differences = scoring.scoring_differences(tmp_path, {"comet_checkpoint": checkpoint})
    assert differences == [
        "comet_checkpoint '/models/comet/checkpoints/model.ckpt' (now "
        "'/models/comet/checkpoints/model.ckpt' (sha256 abababababab...))"
    ]
    record.write_text(json.dumps({"comet_checkpoint": checkpoint}))
    moved = {**checkpoint, "file": "/elsewhere/model.ckpt"}  # the same content
    assert scoring.scoring_differences(tmp_path, {"comet_checkpoint": moved}) == []


@pytest.mark.parametrize("killed_at", ["scores.tsv", "metrics.tsv"])
def test_a_record_never_outlives_the_scores_it_names(tmp_path, monkeypatch, killed_at):
    """Killed while the new scores or metrics are written: no record (so they are scored
    again), never the old settings' record beside new scores, nor the new one beside old
    metrics."""
    from east_agent.simuleval_glue import simuleval_fixes

    run = tmp_path / "run"
    write_finished_run(run)
    score_folder(scoring.scoring_args(score_only(run, "--latency-metrics", "AL")))
    old_scores = (run / "scores.tsv").read_text()

    def killed(path, text):
        if path.name == killed_at:
            raise KeyboardInterrupt
        path.write_text(text)

    monkeypatch.setattr(simuleval_fixes, "write_atomically", killed)
    with pytest.raises(KeyboardInterrupt):
        score_folder(scoring.scoring_args(score_only(run, "--latency-metrics", "LAAL")))
    scores_now = (run / "scores.tsv").read_text()
    assert (scores_now == old_scores) == (killed_at == "scores.tsv")
    assert not (run / scoring.SCORING_RECORD).exists()


@pytest.mark.parametrize(
    "unit, tokenizer, language, refused",
    [
        ("char", "13a", "English", "char: for a Chinese or Japanese target"),
        ("char", "13a", "en", "char: .* a target in English writes words"),  # before: "a en"
        ("char", "zh", "Chinese", None),
        ("char", "ja-mecab", "ja", None),
        ("char", "char", "ja", None),
        ("char", "13a", "zh-CN", None),  # a third-party agent's name: not judged (before: refused)
        ("char", "13a", None, None),
        ("word", "13a", "en", None),
        # before: accepted, and a perfect Chinese translation scored BLEU 0, AL -20
        ("word", "zh", "Chinese", "word .given, or SimulEval's default. for a Chinese target"),
        ("word", "ja-mecab", "ja", "give --eval-latency-unit char .and --sacrebleu-tokenizer ja-m"),
        ("char", "13a", "zh", "13a .given, or SimulEval's default. for a zh target splits it"),
        ("char", "none", "Japanese", "none for a Japanese target .* ja-mecab"),
    ],
)
def test_the_latency_unit_and_bleu_tokenizer_fit_the_target(unit, tokenizer, language, refused):
    from east_agent.simuleval_glue.scoring import check_latency_unit

    args = argparse.Namespace(
        eval_latency_unit=unit,
        eval_latency_spm_model=None,
        sacrebleu_tokenizer=tokenizer,
        quality_metrics=["BLEU"],
        no_scoring=False,
    )
    if refused:
        with pytest.raises(ValueError, match=refused):
            check_latency_unit(args, language)
    else:
        check_latency_unit(args, language)


@pytest.mark.parametrize("output", ["with --output", "without"])
def test_a_chinese_target_in_words_is_refused_with_or_without_an_output(
    east_checkpoint, tmp_path, output
):
    """Before: refused only with --output (the run's settings were read for its folder);
    without, SimulEval's loop ran and scored the Chinese target in words."""
    write_toy_test_set(tmp_path, 2, seed=3)
    arguments = agent_arguments(east_checkpoint, tmp_path, tmp_path / "out", "--tgt-lang", "zh")
    if output == "without":
        at = arguments.index("--output")
        del arguments[at : at + 2]
    result = run_simuleval(*arguments)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "east-simuleval: --eval-latency-unit word (given, or SimulEval's default) for a zh" in (
        result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_bleus_tokenizer_is_not_judged_where_bleu_is_not_scored():
    from east_agent.simuleval_glue.scoring import check_latency_unit

    for metrics, no_scoring in [(["COMET"], False), (["BLEU"], True)]:
        args = argparse.Namespace(
            eval_latency_unit="char",
            sacrebleu_tokenizer="13a",
            quality_metrics=metrics,
            no_scoring=no_scoring,
        )
        check_latency_unit(args, "zh")


def test_comet_scores_made_before_its_texts_were_stripped_are_made_again(tmp_path):
    """A COMET run's record without `comet_inputs` holds COMET of references with their
    line end: it differs; a record of scores without COMET is as valid as before."""
    from east_agent.common.comet_process import COMET_INPUTS

    comet = ["--quality-metrics", "BLEU", "COMET", "--comet-checkpoint", "model.ckpt"]
    settings = scoring.scoring_settings(scoring.scoring_args(score_only(tmp_path, *comet)))
    assert settings["comet_inputs"] == COMET_INPUTS
    old = {name: value for name, value in settings.items() if name != "comet_inputs"}
    (tmp_path / scoring.SCORING_RECORD).write_text(json.dumps(old))
    assert scoring.scoring_differences(tmp_path, settings) == [
        f"comet_inputs None (now {COMET_INPUTS!r})"
    ]
    without = scoring.scoring_settings(scoring.scoring_args(score_only(tmp_path)))
    assert "comet_inputs" not in without
    (tmp_path / scoring.SCORING_RECORD).write_text(json.dumps(without))
    assert scoring.scoring_differences(tmp_path, without) == []


def test_scores_of_a_metric_listed_twice_are_not_taken_for_damaged(tmp_path):
    """SimulEval keeps its scorers in a dict: a metric asked twice is one column."""
    (tmp_path / "scores.tsv").write_text("BLEU\tAL\n30.1\t2.5\n")
    record = {"quality_metrics": ["BLEU"], "latency_metrics": ["AL", "AL"]}
    assert scoring.damaged_scores(tmp_path, record) is None
    (tmp_path / "scores.tsv").write_text("BLEU\tAL\n30.1\tabc\n")
    assert scoring.damaged_scores(tmp_path, record) == (
        f"{tmp_path / 'scores.tsv'}: 'abc' is no score (damaged?)"
    )
