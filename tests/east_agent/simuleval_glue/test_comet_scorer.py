"""COMET as a SimulEval metric: real `east-simuleval` runs scored by the real unbabel-comet
in its own environment (`tiny_comet`), batched and in SimulEval's loop, and the bad COMET
flags refused before anything is written."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from commands import agent_arguments, run_simuleval

from east_agent.common.comet_process import CometError, checkpoint_identity, comet_scores
from east_agent.simuleval_glue.comet_scorer import CometScorer, source_text
from east_agent.simuleval_glue.instance_log import finished_records
from tiny_comet import fake_checkpoint, fake_comet_python


def comet_flags(settings) -> list[str]:
    return [
        "--quality-metrics", "BLEU", "COMET",
        "--comet-checkpoint", settings.checkpoint,
        "--comet-python", settings.python,
        "--comet-batch-size", "2",
    ]  # fmt: skip


def scores_of(folder) -> dict[str, str]:
    header, values = (folder / "scores.tsv").read_text().splitlines()
    return dict(zip(header.split("\t"), values.split("\t")))


def test_comet_flags_are_checked_when_the_scorer_is_built(tmp_path):
    flags = {"comet_python": "python3", "comet_batch_size": 16, "comet_gpus": 0}
    flags["comet_source_lang"] = None
    with pytest.raises(ValueError, match="needs --comet-checkpoint"):
        CometScorer.from_args(argparse.Namespace(comet_checkpoint=None, **flags))
    missing = str(tmp_path / "model.ckpt")
    with pytest.raises(CometError, match="^--comet-checkpoint: COMET checkpoint .* not exist"):
        CometScorer.from_args(argparse.Namespace(comet_checkpoint=missing, **flags))


@pytest.mark.parametrize(
    "source, language, text",
    [
        ("Ein Mann fährt .", "de", "Ein Mann fährt ."),
        (["Ein", "Mann"], None, "Ein Mann"),  # a live instance's units
        ("我 们 在 ▁A p ple 公 司 。", "zh", "我们在 Apple公司。"),
        ("我 们 在 ▁A p ple 公 司 。", "Chinese", "我们在 Apple公司。"),
    ],
)
def test_comet_reads_the_source_as_the_decoder_did(source, language, text):
    instance = argparse.Namespace(source=source)
    assert source_text(instance, language) == text


def test_a_run_is_scored_by_comet_alike_batched_and_in_simulevals_loop(
    tiny_comet, east_checkpoint, toy_test_set, tmp_path
):
    folder, _ = toy_test_set
    outputs = {}
    for name, extra in (("batched", ["--batch-size", "3"]), ("loop", [])):
        outputs[name] = tmp_path / name
        arguments = agent_arguments(east_checkpoint, folder, outputs[name], *extra)
        result = run_simuleval(*arguments, *comet_flags(tiny_comet))
        assert result.returncode == 0, result.stderr[-3000:]
    batched, loop = (scores_of(outputs[name]) for name in ("batched", "loop"))
    assert batched == loop
    # COMET of the files' lines as comet-score reads them, not of the log's texts (whose
    # references keep their line end)
    predictions = tmp_path / "predictions.txt"
    predictions.write_text("".join(p + "\n" for p in fields_of(outputs["batched"])[1]))
    texts = [folder / "src.txt", predictions, folder / "ref.txt"]
    expected = comet_of_files(tiny_comet, *texts)
    assert float(batched["COMET"]) == pytest.approx(100 * expected, abs=1e-3)
    # how COMET runs is not part of the record; what it scores with is
    record = json.loads((outputs["batched"] / "scoring.json").read_text())
    assert record["comet_checkpoint"] == checkpoint_identity(tiny_comet.checkpoint)
    assert record["comet_checkpoint"]["file"] == tiny_comet.checkpoint  # and its sha256
    assert not {"comet_python", "comet_batch_size", "comet_gpus"} & set(record)
    assert json.loads((outputs["loop"] / "scoring.json").read_text()) == record

    # the finished log scored again: the same COMET
    again = tmp_path / "again"
    shutil.copytree(outputs["loop"], again)
    (again / "scores.tsv").unlink()
    result = run_simuleval("--score-only", "--output", again, *comet_flags(tiny_comet))
    assert result.returncode == 0, result.stderr[-3000:]
    assert scores_of(again) == loop


@pytest.mark.parametrize("extra", [["--batch-size", "3"], []], ids=["batched", "loop"])
@pytest.mark.parametrize("comet", ["absent", "broken"])
def test_an_interpreter_without_a_working_comet_is_refused_before_the_run(
    comet, extra, east_checkpoint, toy_test_set, tmp_path
):
    folder, _ = toy_test_set
    checkpoint = fake_checkpoint(tmp_path / "model", b"\x80\x02 a pickle")
    python, message = sys.executable, "has no unbabel-comet"
    if comet == "broken":  # found, but it does not import
        body = "raise ModuleNotFoundError(\"No module named 'pkg_resources'\")\n"
        python, message = fake_comet_python(tmp_path / "env", body), "pkg_resources"
    output = tmp_path / "run"
    flags = ["--quality-metrics", "BLEU", "COMET", "--comet-checkpoint", checkpoint]
    arguments = agent_arguments(east_checkpoint, folder, output, *extra)
    result = run_simuleval(*arguments, *flags, "--comet-python", python)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "--comet-python: " in result.stderr and message in result.stderr
    assert "Loading weights" not in result.stderr
    assert not output.exists()


def test_a_comet_that_fails_while_scoring_keeps_the_decoded_log(
    tiny_comet, east_checkpoint, toy_test_set, tmp_path
):
    folder, units = toy_test_set
    broken = fake_comet_python(
        tmp_path / "broken",
        """
        def load_from_checkpoint(path):
            raise RuntimeError(f"cannot unpickle {path}")
        """,
    )
    output = tmp_path / "run"
    flags = comet_flags(dataclasses.replace(tiny_comet, python=broken))
    arguments = agent_arguments(east_checkpoint, folder, output, "--batch-size", "3")
    result = run_simuleval(*arguments, *flags)
    assert result.returncode == 2 and "cannot unpickle" in result.stderr
    assert len(finished_records(output / "instances.log")) == len(units)
    assert not (output / "scores.tsv").exists()
    result = run_simuleval("--score-only", "--output", output, *comet_flags(tiny_comet))
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(scores_of(output)["COMET"]) == pytest.approx(
        100 * comet_scores(tiny_comet, *fields_of(output)).system, abs=1e-3
    )


def fields_of(output) -> tuple[list[str], ...]:
    """A run's sources, translations and references, stripped as COMET reads them."""
    records = finished_records(output / "instances.log")
    keys = ("source", "prediction", "reference")
    return tuple([record[key].strip() for record in records] for key in keys)


COMET_OF_FILES = """
    import json, sys
    from comet import load_from_checkpoint
    def lines(path):  # as comet-score (comet/cli/score.py) reads its files
        with open(path, encoding="utf-8") as fp:
            return [line.strip() for line in fp.readlines()]
    checkpoint, sources, translations, references = sys.argv[1:]
    samples = [
        {"src": src, "mt": mt, "ref": ref}
        for src, mt, ref in zip(lines(sources), lines(translations), lines(references))
    ]
    model = load_from_checkpoint(checkpoint)
    output = model.predict(samples, batch_size=2, gpus=0, progress_bar=False)
    print(json.dumps(float(output.system_score)))
"""


def comet_of_files(settings, sources, translations, references) -> float:
    """COMET's own system score of three files' lines, in its environment."""
    files = [str(path) for path in (sources, translations, references)]
    script = textwrap.dedent(COMET_OF_FILES)
    command = [settings.python, "-c", script, settings.checkpoint, *files]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_scoring_comet_is_not_asked_for_anything(east_checkpoint, toy_test_set, tmp_path):
    folder, units = toy_test_set
    output = tmp_path / "run"
    flags = ["--quality-metrics", "BLEU", "COMET", "--comet-checkpoint", tmp_path / "none.ckpt"]
    arguments = agent_arguments(east_checkpoint, folder, output, "--no-scoring")  # the loop
    result = run_simuleval(*arguments, *flags, "--comet-python", tmp_path / "no-python")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(finished_records(output / "instances.log")) == len(units)
    assert not (output / "scores.tsv").exists()


def test_a_chinese_source_reaches_comet_as_the_decoder_read_it(
    tiny_comet, east_checkpoint, toy_test_set, tmp_path
):
    """Units of an unspaced source join without spaces, in the run (from --src-lang) and
    when its log is scored on its own (from the folder's record), and the record says so."""
    folder, _ = toy_test_set
    output = tmp_path / "run"
    arguments = agent_arguments(east_checkpoint, folder, output, "--batch-size", "3")
    arguments[arguments.index("--src-lang") + 1] = "zh"
    result = run_simuleval(*arguments, *comet_flags(tiny_comet))
    assert result.returncode == 0, result.stderr[-3000:]
    sources, translations, references = fields_of(output)
    joined = ["".join(source.split()) for source in sources]
    expected = comet_scores(tiny_comet, joined, translations, references).system
    assert float(scores_of(output)["COMET"]) == pytest.approx(100 * expected, abs=1e-3)
    spaced = comet_scores(tiny_comet, sources, translations, references).system
    assert abs(expected - spaced) > 1e-4  # the test tells them apart
    record = json.loads((output / "scoring.json").read_text())
    assert record["comet_source_units"] == "joined without spaces"

    again = tmp_path / "again"
    shutil.copytree(output, again)
    (again / "scores.tsv").unlink()
    result = run_simuleval("--score-only", "--output", again, *comet_flags(tiny_comet))
    assert result.returncode == 0, result.stderr[-3000:]
    assert scores_of(again) == scores_of(output)
    assert json.loads((again / "scoring.json").read_text()) == record
