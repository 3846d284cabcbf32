"""A run's OmniSTEval columns: computed once, made again when what they depend on changed,
and a long-form run OmniSTEval cannot score is left out of the table, named."""

import json
import os
from pathlib import Path

import pytest

from east_agent.common.entry import CommandError
from east_agent.evaluation import testsets
from east_agent.evaluation.config import EvalConfig, Run
from east_agent.evaluation.reports import check_tabled, omnisteval_cells, summarize
from east_agent.evaluation.run_scores import LONGFORM_FILE, longform_columns, rescore_if_changed

PAIRS = [("a1 a2 a3.", "the cat sat"), ("b1 b2.", "a dog ran")]


@pytest.fixture
def grid(tmp_path, monkeypatch):
    """A long-form grid folder with one finished run (a talk of two sentences, wait-1)."""
    monkeypatch.setattr(testsets, "read_pairs", lambda name: (PAIRS, "German", "English"))
    config = EvalConfig(tmp_path / "grid.yaml", "multi30k.de-en.talks2", "m", tmp_path, {})
    testsets.prepare_testset(config.testset, config.testset_dir)
    run = Run("east-low", "east", "low", "east", {"long_form": True})
    run_dir = config.run_dir(run)
    run_dir.mkdir(parents=True)
    record = {
        "index": 0,
        "prediction": "the cat sat a dog ran",
        "delays": [1, 2, 3, 4, 5, 5],
        "elapsed": [0.1] * 6,
        "source_length": 5,
    }
    (run_dir / "instances.log").write_text(json.dumps(record) + "\n")
    return config, run, run_dir


def test_scores_are_kept_and_made_again_when_the_clock_changes(grid):
    config, run, run_dir = grid
    first = longform_columns(config, run, run_dir)
    saved = run_dir / LONGFORM_FILE
    modified = saved.stat().st_mtime_ns
    assert longform_columns(config, run, run_dir) == first
    assert saved.stat().st_mtime_ns == modified  # read back, not scored again
    config.ca_unit_seconds = 0.8
    slower = longform_columns(config, run, run_dir)
    assert slower["LongYAAL"] == pytest.approx(2 * first["LongYAAL"], rel=0.02)
    assert slower["chrF"] == first["chrF"] == pytest.approx(100)  # same words


def test_scores_are_made_again_when_the_log_changes(grid):
    config, run, run_dir = grid
    first = longform_columns(config, run, run_dir)
    log = run_dir / "instances.log"
    record = json.loads(log.read_text())
    record["delays"] = [3, 3, 3, 5, 5, 5]
    log.write_text(json.dumps(record) + "\n")
    os.utime(log, ns=(log.stat().st_atime_ns, log.stat().st_mtime_ns + 10**9))
    assert longform_columns(config, run, run_dir)["LongYAAL"] > first["LongYAAL"]


def test_a_long_form_run_omnisteval_cannot_score_is_left_out_and_named(grid, capsys):
    """Every score of a long-form run is OmniSTEval's: before, such a run was tabled with
    empty cells, exit 0 (a COMET that failed after the run, say)."""
    config, run, run_dir = grid
    (run_dir / "scores.tsv").write_text("BLEU\n1.0\n")
    (run_dir / "instances.log").write_text('{"index": 0, "prediction": "x"}\n')
    assert omnisteval_cells(config, run, Path(run_dir), "word") is None
    assert "east-low: not scored by OmniSTEval" in capsys.readouterr().err
    left_out = set()
    assert summarize(config, [run], left_out=left_out) == []
    assert left_out == {"east-low"}
    with pytest.raises(CommandError, match="left out of the tables .*: east-low"):
        check_tabled(left_out)


def test_scores_are_made_again_when_a_talk_file_is_mended(grid):
    """Before: scores made from a reference sentence edited by hand stayed after it was
    mended (only the log and the clock were in the record)."""
    config, run, run_dir = grid
    folder = Path(config.testset_dir)

    def references(*sentences):  # the sentences, and their talk as SimulEval's reference
        (folder / "reference_sentences.txt").write_text("\n".join(sentences) + "\n")
        (folder / "reference.txt").write_text(" ".join(sentences) + "\n")

    references("the cat sat", "no dog here")
    wrong = longform_columns(config, run, run_dir)
    references("the cat sat", "a dog ran")
    mended = longform_columns(config, run, run_dir)
    assert wrong["chrF"] < 90
    assert mended["chrF"] == pytest.approx(100)


def test_a_long_form_run_with_a_null_delay_is_named_and_the_grid_goes_on(grid, capsys):
    """Before: a TypeError from int(None) escaped the rescoring: the grid aborted with a
    traceback and no tables."""
    config, run, run_dir = grid
    record = json.loads((run_dir / "instances.log").read_text())
    record["delays"][2] = None
    (run_dir / "instances.log").write_text(json.dumps(record) + "\n")
    (run_dir / "scoring.json").write_text('{"latency_metrics": ["LAAL"]}\n')  # SimulEval's own
    wanted = {"latency_metrics": ["LAAL"]}
    assert not rescore_if_changed(config, None, wanted, run, run_dir, "east-low")
    error = capsys.readouterr().err
    assert "east-low: not scored again, left out of the tables: " in error
    assert "instances.log: line 1: field 'delays': value 3 is None" in error
