"""`east-demo`, the README's main job: real SimulEval runs of the shipped demo model."""

import csv
import subprocess
import sys

import pytest

from east_agent.evaluation.config import DEFAULT_BATCH_SIZE
from east_agent.evaluation.demo import DEFAULT_MODEL

EAST_DEMO = [sys.executable, "-m", "east_agent.evaluation.demo"]  # the `east-demo` console script


@pytest.fixture(scope="module")
def all_levels(tmp_path_factory):
    output = tmp_path_factory.mktemp("east-demo")
    # From another directory: the shipped model is found through the package.
    command = [*EAST_DEMO, "--all-levels", "--limit", "6", "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=output)
    assert result.returncode == 0, result.stderr[-3000:]
    return output, result.stdout


def test_the_shipped_model_is_the_default(all_levels):
    _, stdout = all_levels  # run without --model-path, from another directory
    assert f"--model-path {DEFAULT_MODEL}" in stdout
    assert stdout.count(f"--batch-size {DEFAULT_BATCH_SIZE}") == 5  # batched by default


def test_the_batch_size_reaches_the_grid(tmp_path, monkeypatch):
    from east_agent.evaluation import demo

    grids = []
    monkeypatch.setattr(demo, "run_grid", lambda config, limit: grids.append(config))
    demo.main(["--output", str(tmp_path)])
    demo.main(["--output", str(tmp_path), "--batch-size", "1"])
    assert [config.batch_size for config in grids] == [DEFAULT_BATCH_SIZE, 1]
    assert DEFAULT_BATCH_SIZE > 1


def test_all_levels_print_the_table(all_levels):
    output, stdout = all_levels
    for level in ("low", "low-medium", "medium", "medium-high", "high"):
        assert f"--latency {level}" in stdout  # each level is a printed SimulEval command
    with open(output / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    levels = ["low", "low-medium", "medium", "medium-high", "high"]
    assert [row["setting"] for row in rows] == levels
    for row in rows:
        assert float(row["BLEU"]) > 0  # the demo model translates
        assert float(row["LAAL"]) > 0
    assert "| system | setting | BLEU | AL | LAAL |" in stdout  # the table is printed
    assert "| east | medium-high | high |" in stdout  # and the significance of each step


def test_each_demo_starts_afresh_but_never_under_a_live_run(tmp_path, monkeypatch, capsys):
    """An earlier run's records go; a run that another process is writing is refused
    before anything is deleted (before, its folder was deleted under it)."""
    from east_agent.common.run_lock import hold_run_lock
    from east_agent.evaluation import demo

    grids = []
    monkeypatch.setattr(demo, "run_grid", lambda config, limit: grids.append(config))
    run_folder = tmp_path / "runs" / "east-low"
    run_folder.mkdir(parents=True)
    (run_folder / "instances.log").write_text('{"index": 0}\n')
    with hold_run_lock(run_folder):  # a live run of another process
        with pytest.raises(SystemExit) as exit_code:
            demo.main(["--output", str(tmp_path)])
        assert exit_code.value.code == 2 and not grids
        assert "is being written by" in capsys.readouterr().err
        assert (run_folder / "instances.log").exists()
    demo.main(["--output", str(tmp_path)])
    assert len(grids) == 1 and {p.name for p in run_folder.iterdir()} <= {
        "run.lock",
        "instances.lock",
    }


def test_a_missing_model_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [*EAST_DEMO, "--model-path", str(tmp_path / "nowhere")], capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "no model at" in result.stderr and "nowhere" in result.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--device", "gpu"], "--device: 'gpu' is not a device"),
        (["--testset", "bogus"], "--testset: unknown test set 'bogus'"),
        (["--output", "{file}"], "--output {file}: a file, not a folder"),
        (["--output", "{file}/runs"], "--output {file}/runs: a file, not a folder ({file} is)"),
    ],
)
def test_a_flag_no_run_can_use_is_one_line_before_anything(tmp_path, capsys, flags, message):
    """Before: tracebacks (an IndexError, torch's RuntimeError, NotADirectoryError)."""
    from east_agent.evaluation import demo

    (tmp_path / "afile").write_text("mine")
    named = str(tmp_path / "afile")
    with pytest.raises(SystemExit) as exit_code:
        demo.main([flag.format(file=named) for flag in flags])
    assert exit_code.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"east-demo: {message.format(file=named)}") and error.count("\n") == 1
    assert (tmp_path / "afile").read_text() == "mine"
