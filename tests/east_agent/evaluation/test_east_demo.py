"""`east-demo`, the README's main job: real SimulEval runs of the shipped demo model."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from east_agent.evaluation.config import DEFAULT_BATCH_SIZE
from east_agent.evaluation.demo import DEFAULT_MODEL

EAST_DEMO = [sys.executable, "-m", "east_agent.evaluation.demo"]  # the `east-demo` console script


@pytest.fixture(scope="module")
def all_levels(tmp_path_factory):
    output = tmp_path_factory.mktemp("east-demo")
    # From another directory: the shipped model is found through the package.
    # 7 sentences: the fewest a significance test takes (`significance.MIN_SENTENCES`)
    command = [*EAST_DEMO, "--all-levels", "--limit", "7", "--output", str(output)]
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
    monkeypatch.setattr(demo, "run_grid", lambda config, **_: grids.append(config))
    demo.main(["--output", str(tmp_path)])
    demo.main(["--output", str(tmp_path), "--batch-size", "1"])
    assert [config.batch_size for config in grids] == [DEFAULT_BATCH_SIZE, 1]
    assert DEFAULT_BATCH_SIZE > 1


def test_each_test_set_has_a_default_output_of_its_own(tmp_path, monkeypatch):
    """Before: one `outputs/east-demo` for all, and the README's demo of WMT22 after its
    demo of Multi30k was refused (the folder held another test set's runs)."""
    from east_agent.evaluation import demo

    grids = []
    monkeypatch.setattr(demo, "run_grid", lambda config, **_: grids.append(config))
    monkeypatch.chdir(tmp_path)
    demo.main([])
    demo.main(["--testset", "wmt22.de-en"])
    demo.main(["--testset", "wmt22.de-en", "--output", "mine"])
    assert [config.output for config in grids] == [
        Path("outputs/east-demo/multi30k.de-en"), Path("outputs/east-demo/wmt22.de-en"),
        Path("mine"),
    ]  # fmt: skip


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
    assert "untested" not in stdout  # tested: a p-value and a verdict for each step


def test_each_demo_starts_afresh_but_never_under_a_live_run(tmp_path):
    """An earlier run's records go; a run that another process is writing is refused
    before anything is deleted (before, its folder was deleted under it)."""
    from east_agent.common.run_lock import hold_run_lock

    run_folder = tmp_path / "runs" / "east-low"
    run_folder.mkdir(parents=True)
    (run_folder / "instances.log").write_text('{"index": 7}\n')
    (run_folder / "made_afresh.json").write_text('{"made_afresh": true}\n')  # a demo's
    command = [*EAST_DEMO, "--output", str(tmp_path), "--limit", "2"]
    with hold_run_lock(run_folder):  # a live run of another process
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 2 and "is being written by" in result.stderr
        assert (run_folder / "instances.log").read_text() == '{"index": 7}\n'
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (run_folder / "instances.log").read_text().splitlines()
    assert [json.loads(line)["index"] for line in log] == [0, 1]


def test_a_model_folder_without_weights_is_refused_before_a_run_is_emptied(tmp_path):
    """Before: the earlier demo's run was emptied, then the weights were found missing (its
    table still showing the scores of the run no longer there)."""
    model = tmp_path / "no-weights"
    shutil.copytree(DEFAULT_MODEL, model)
    (model / "model.safetensors").unlink()
    output = tmp_path / "out"
    earlier = output / "runs" / "east-low"
    earlier.mkdir(parents=True)
    (earlier / "instances.log").write_text('{"index": 0}\n')
    (earlier / "made_afresh.json").write_text('{"made_afresh": true}\n')
    command = [*EAST_DEMO, "--output", str(output), "--model-path", str(model)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"east-demo: the checkpoint {model}: no weights file" in result.stderr
    assert (earlier / "instances.log").read_text() == '{"index": 0}\n'


@pytest.mark.parametrize("name", ["east-low", "waitk-k3"])
def test_a_demo_leaves_the_runs_of_a_grid_it_did_not_make(tmp_path, name):
    """Before: `east-demo --output` an east-eval grid's folder emptied its `east-low` run,
    shards too, or (another run's name) rewrote the grid's tables with the demo's one row,
    exit 0."""
    shard = tmp_path / "runs" / name / "shards" / "1-of-2"
    shard.mkdir(parents=True)
    (shard / "instances.log").write_text('{"index": 0}\n')
    command = [*EAST_DEMO, "--output", str(tmp_path), "--limit", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    said = f"east-demo: {tmp_path / 'runs' / name}: a run east-demo did not make"
    assert result.stderr.startswith(said) and "Traceback" not in result.stderr
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == [
        "grid.lock", "runs", f"runs/{name}", f"runs/{name}/shards",
        f"runs/{name}/shards/1-of-2", f"runs/{name}/shards/1-of-2/instances.log",
    ]  # fmt: skip


def test_a_demos_run_a_grid_takes_is_the_grids(tmp_path):
    """A run east-demo made, then tabled by an east-eval grid of the same settings, is the
    grid's: a later demo leaves it (before: emptied under the grid's tables, exit 0)."""
    from commands import write_grid_config

    command = [*EAST_DEMO, "--output", str(tmp_path / "out"), "--limit", "2"]
    assert subprocess.run(command, capture_output=True, text=True, timeout=600).returncode == 0
    run = tmp_path / "out" / "runs" / "east-low"
    assert (run / "made_afresh.json").exists()
    systems = {"east": {"agent": "east", "num_beams": 1, "latency": ["low"]}}
    config = write_grid_config(tmp_path / "g.yaml", DEFAULT_MODEL, tmp_path / "out", systems)
    config.write_text(config.read_text().replace("torch_dtype: float32", "torch_dtype: auto"))
    grid = subprocess.run(
        [sys.executable, "-m", "east_agent.evaluation.cli", str(config), "--limit", "2"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert grid.returncode == 0, grid.stderr[-3000:]
    assert "[1/1] east-low: done already" in grid.stdout  # the demo's run, taken
    assert not (run / "made_afresh.json").exists()
    log = (run / "instances.log").read_bytes()
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and f"{run}: a run east-demo did not make" in again.stderr
    assert (run / "instances.log").read_bytes() == log


def test_a_demo_refused_for_another_test_set_leaves_the_runs_there(all_levels, tmp_path):
    """Before: every run folder of the demo was emptied, then the grid refused the other
    test set (their tables still listing the scores of runs no longer there)."""
    output = tmp_path / "out"
    shutil.copytree(all_levels[0], output)
    before = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}
    command = [*EAST_DEMO, "--output", str(output), "--testset", "multi30k-val.de-en"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert "holds multi30k.de-en, the test set of the runs in" in result.stderr
    after = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}
    assert after == before


def test_a_missing_model_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [*EAST_DEMO, "--model-path", str(tmp_path / "nowhere")], capture_output=True, text=True
    )
    assert result.returncode == 2, result.stderr[-3000:]
    # before: the advice for the shipped model's absence, "or pass --model-path"
    assert result.stderr == f"east-demo: --model-path {tmp_path / 'nowhere'}: no such folder\n"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--device", "gpu"], "--device: 'gpu' is not a device"),
        (["--testset", "bogus"], "--testset: unknown test set 'bogus'"),
        (["--output", "{file}"], "--output {file}: a file, not a folder"),
        (
            ["--output", "{file}/runs"],
            "--output {file}/runs: inside a file ({file} is a file, not a folder)",
        ),
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


def test_help_shows_each_default_but_none(capsys):
    """Before: `--limit` read "(default: None)"."""
    from east_agent.evaluation import demo

    with pytest.raises(SystemExit):
        demo.main(["--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in usage
    assert (
        "--limit LIMIT only the first N sentences, or talks of a long-form set (default: all)"
        in usage
    )
    assert "--latency {low,low-medium,medium,medium-high,high} the level (default: low)" in usage


@pytest.mark.parametrize("command", ["east-demo", "east-prepare", "east-eval"])
def test_an_empty_output_is_refused_not_the_current_directory(
    tmp_path, monkeypatch, capsys, command
):
    """Before: `east-demo --output ''` (an unset variable in a script) wrote its runs and
    tables into the current directory."""
    from east_agent.evaluation import cli, demo, prepare

    main, first = {
        "east-demo": (demo.main, []),
        "east-prepare": (prepare.main, ["multi30k.de-en"]),
        "east-eval": (cli.main, ["grid.yaml"]),
    }[command]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_code:
        main([*first, "--output", ""])
    assert exit_code.value.code == 2
    assert "argument --output: an empty path: name a folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_demo_stopped_part_way_leaves_no_tables_of_the_runs_it_emptied(all_levels, tmp_path):
    """Before: a demo interrupted (Ctrl-C, SIGTERM, SIGKILL) after emptying the earlier
    demo's runs left that demo's tables and curves, every row a run no longer there."""
    from kill import sigkill_after_lines

    output = tmp_path / "out"
    shutil.copytree(all_levels[0], output)
    assert (output / "results.md").exists() and (output / "curves.png").exists()
    command = [*EAST_DEMO, "--output", str(output), "--all-levels", "--limit", "300"]
    # killed once the new run of the first level holds more than the earlier one (7)
    sigkill_after_lines(command, output / "runs" / "east-low" / "instances.log", 8)
    left = sorted(path.name for path in output.iterdir())
    assert not {"results.csv", "results.md", "significance.md", "curves.png"} & set(left)


@pytest.mark.parametrize("fault", ["config.json", "weights cut short"])
def test_a_broken_checkpoint_is_refused_before_the_earlier_demo_is_emptied(
    all_levels, tmp_path, fault
):
    """Before: its config.json or weights were found broken by the load, after the
    earlier demo's tables and runs were gone."""
    output = tmp_path / "out"
    shutil.copytree(all_levels[0], output)
    before = sorted(path.relative_to(output) for path in output.rglob("*"))
    broken = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL, broken)
    if fault == "config.json":
        (broken / "config.json").write_text("{garbage")
    else:
        weights = broken / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: 5 * 2**20])
    command = [*EAST_DEMO, "--limit", "3", "--model-path", str(broken), "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"east-demo: the checkpoint {broken}: " in result.stderr
    assert sorted(path.relative_to(output) for path in output.rglob("*")) == before


def test_a_prepared_sentence_edited_by_hand_is_refused_before_a_run_is_emptied(
    all_levels, tmp_path
):
    """Before: the edited sentence was translated and scored as the test set's, exit 0."""
    output = tmp_path / "out"
    shutil.copytree(all_levels[0], output)
    source = output / "testset" / "source.txt"
    lines = source.read_text().splitlines(keepends=True)
    source.write_text("".join(lines[:2] + ["Ein anderer Satz .\n"] + lines[3:]))
    before = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}
    command = [*EAST_DEMO, "--output", str(output), "--limit", "6"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"east-demo: {source}: changed since multi30k.de-en was prepared" in result.stderr
    after = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}
    assert after == before


@pytest.mark.parametrize("inside", ["runs/east-low/mine", "testset"])
def test_an_output_inside_another_grids_runs_or_test_set_is_refused(
    all_levels, tmp_path, capsys, inside
):
    """Before: a demo into another demo's run folder was taken (and emptied with that run
    by the other demo's next start)."""
    from east_agent.evaluation import demo

    output = tmp_path / "out"
    shutil.copytree(all_levels[0], output)
    before = {path: path.read_bytes() for path in output.rglob("*") if path.is_file()}
    with pytest.raises(SystemExit) as exit_code:
        demo.main(["--output", str(output / inside), "--limit", "2"])
    assert exit_code.value.code == 2
    part = inside.split("/")[0]
    where = "is" if inside == part else "is inside"  # before: "testset is inside testset"
    assert capsys.readouterr().err == (
        f"east-demo: output {output / inside} {where} {output / part}, the {part} of the "
        f"grid in {output}; another --output\n"
    )
    assert {path: path.read_bytes() for path in output.rglob("*") if path.is_file()} == before
