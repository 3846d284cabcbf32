"""`east-eval`: a quality-latency grid of real SimulEval runs, resumed and sharded."""

import csv
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from commands import console_script, east_eval
from commands import write_grid_config as write_config


@pytest.fixture(scope="module")
def grid(east_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid")
    systems = {
        "east": {"agent": "east", "latency": ["low", "high"]},
        "waitk-offline": {"agent": "waitk", "prompt": "offline", "waitk": [2]},
    }
    config = write_config(folder / "grid.yaml", east_checkpoint, folder / "out", systems)
    result = east_eval(config, "--limit", "3")
    return config, folder / "out", result


def test_a_one_stream_grid_says_which_finished_runs_were_measured_batched(
    east_checkpoint, tmp_path
):
    """`--batch-size 1` is the way to measure one stream's computation-aware latency; a
    run a batched grid finished is kept, and said to be measured with its streams (before:
    "done already, skipped", its batched _CA columns tabled without a word)."""
    systems = {"east": {"agent": "east", "latency": ["low"]}}
    output = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", east_checkpoint, output, systems)
    assert east_eval(config, "--limit", "3").returncode == 0
    again = east_eval(config, "--limit", "3", "--batch-size", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    run_dir = output / "runs" / "east-low"
    assert (
        "east-low: done already, skipped (its computation-aware latency and time were "
        f"measured with 3 streams sharing the device; to measure one stream, delete {run_dir}"
    ) in again.stdout
    batched = east_eval(config, "--limit", "3")
    assert "east-low: done already, skipped\n" in batched.stdout


def test_runs_made_for_another_span_are_left_out_of_the_tables(grid, east_checkpoint, tmp_path):
    """A grid into an --output that holds an earlier grid's runs of another --limit: those
    are named and left out of its tables and tests, never shown as its own."""
    _, output, _ = grid
    shutil.copytree(output, tmp_path / "out")
    systems = {"east": {"agent": "east", "latency": ["low", "medium", "high"]}}
    config = write_config(tmp_path / "grid.yaml", east_checkpoint, tmp_path / "out", systems)
    result = east_eval(config, "--limit", "2", "--only", "east-medium")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("east-low", "east-high"):
        assert f"{name}: left out of the tables, made with sentences [0, 3]" in result.stderr
    with open(tmp_path / "out" / "results.csv") as handle:
        assert [(row["system"], row["setting"]) for row in csv.DictReader(handle)] == [
            ("east", "medium")
        ]
    assert not (tmp_path / "out" / "significance.csv").exists()  # the earlier grid's tests


def test_a_run_whose_log_is_gone_is_left_out_not_the_grids_tests(grid, tmp_path):
    """Before: its old scores were tabled, then the significance tests stopped the grid
    with a bare `[Errno 2] ... instances.log` (exit 2), no system's tests written. Now the
    others are tabled and tested, and the grid fails naming it."""
    config, output, _ = grid
    shutil.copytree(output, tmp_path / "out")
    (tmp_path / "out" / "runs" / "waitk-offline-k2" / "instances.log").unlink()
    (tmp_path / "out" / "significance.csv").unlink()
    result = east_eval(config, "--limit", "3", "--output", tmp_path / "out")
    assert result.returncode == 2, result.stderr[-3000:]
    said_last = "left out of the tables (why, and what to do, said above): waitk-offline-k2\n"
    assert result.stderr.endswith(said_last)
    gone = tmp_path / "out" / "runs" / "waitk-offline-k2" / "scores.tsv"
    said = f"east-eval: [3/3] waitk-offline-k2: {gone} without the instances.log it was made from"
    assert said in result.stderr and "Traceback" not in result.stderr
    assert [(row["system"], row["setting"]) for row in rows_of(tmp_path / "out")] == [
        ("east", "low"),
        ("east", "high"),
    ]
    with open(tmp_path / "out" / "significance.csv") as handle:
        assert [(row["from"], row["to"]) for row in csv.DictReader(handle)] == [("low", "high")]


def test_a_scored_run_whose_log_was_cut_short_is_translated_again(grid, tmp_path):
    """Before: its scores of all the sentences were tabled beside the log's fewer ones, and
    the significance tests compared the sentences left, exit 0. A run not picked is left
    out, naming the log; a picked one continues from its log, as the whole run scored."""
    config, output, _ = grid
    out = tmp_path / "out"
    shutil.copytree(output, out)
    log = out / "runs" / "east-high" / "instances.log"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:2]))
    result = east_eval(config, "--limit", "3", "--output", out, "--only", "east-low")
    assert result.returncode == 2, result.stderr[-3000:]
    said = f"east-eval: east-high (not in --only): {log}: 1 of the run's sentences 0 .. 2 are "
    said += "missing (2) since it was scored"
    assert said in result.stderr and "east-eval --only east-high translates them" in result.stderr
    assert ("east", "high") not in [(row["system"], row["setting"]) for row in rows_of(out)]
    again = east_eval(config, "--limit", "3", "--output", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"[2/3] east-high: {log}: 1 of the run's sentences" in again.stdout
    assert len(log.read_text().splitlines()) == 3
    unclocked = ("system", "setting", "BLEU", "AL", "LAAL", "YAAL")
    assert [[row[name] for name in unclocked] for row in rows_of(out)] == [
        [row[name] for name in unclocked] for row in rows_of(output)
    ]
    assert (out / "significance.csv").read_text() == (output / "significance.csv").read_text()


@pytest.mark.parametrize(
    "change, said",
    [
        ({"--end-index": "2"}, "sentences 0 .. 1 there, 0 .. 2 now"),
        ({"--latency": "medium"}, "latency: 'medium' there, 'low' now"),
    ],
    ids=["another-span", "another-latency"],
)
def test_a_run_folder_rewritten_by_hand_is_not_tabled_as_the_grids(grid, tmp_path, change, said):
    """The grid's command line of a run, given by hand with another span or latency into
    its folder: before, tabled as the grid's run (`done already, skipped`), exit 0. A
    picked run is refused, naming the difference; one outside --only left out."""
    from commands import run_simuleval

    config, output, result = grid
    out = tmp_path / "out"
    shutil.copytree(output, out)
    lines = result.stdout.splitlines()
    [line] = [line for line in lines if line.startswith("$ ") and "/east-low " in line]
    command = shlex.split(line[2:])[1:]
    for flag, value in change.items():
        command[command.index(flag) + 1] = value
    command[command.index("--output") + 1] = str(out / "runs" / "east-low")
    by_hand = run_simuleval(*command)
    assert by_hand.returncode == 0, by_hand.stderr[-3000:]
    picked = east_eval(config, "--limit", "3", "--output", out, "--only", "east-low")
    assert picked.returncode == 2, picked.stderr[-3000:]
    log = out / "runs" / "east-low" / "instances.log"
    assert picked.stderr == (
        f"east-eval: {log} was written by another command than this grid's run ({said}): give "
        "another --output, or delete that folder to run it again\n"
    )
    # a grid that scores otherwise (another CA clock) scores its runs again, not that one
    scored_by_hand = (log.parent / "scores.tsv").read_bytes()
    slower = tmp_path / "slower.yaml"
    slower.write_text(
        yaml.safe_dump({**yaml.safe_load(config.read_text()), "ca_unit_seconds": 0.8})
    )
    others = east_eval(slower, "--limit", "3", "--output", out, "--only", "east-high")
    assert others.returncode == 2, others.stderr[-3000:]
    assert "east-high: done already, scored again (ca_unit_seconds" in others.stdout
    assert (log.parent / "scores.tsv").read_bytes() == scored_by_hand  # before: scored again
    left_out = "east-eval: east-low (not in --only): left out of the tables, its log written "
    assert f"{left_out}by another command than this grid's run ({said})" in others.stderr
    assert ("east", "low") not in [(row["system"], row["setting"]) for row in rows_of(out)]


def test_a_run_folder_is_the_grids_whatever_dtype_auto_resolved_to_there(grid, tmp_path):
    """`--torch-dtype auto` resolves by device: a GPU grid's folder (bfloat16 weights)
    tabled by the same grid on a CPU is still its run; the flag itself must be the same."""
    from east_agent.evaluation.runs import made_otherwise
    from east_agent.simuleval_glue.run_folder import SETTINGS_RECORD, WEIGHTS_DTYPE

    _, output, result = grid
    run_dir = tmp_path / "east-low"
    shutil.copytree(output / "runs" / "east-low", run_dir)
    [line] = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("$ ") and "/east-low " in line
    ]
    command = shlex.split(line[2:])
    command[command.index("--output") + 1] = str(run_dir)
    assert made_otherwise(run_dir, command, (0, 3)) is None
    record = json.loads((run_dir / SETTINGS_RECORD).read_text())
    (run_dir / SETTINGS_RECORD).write_text(json.dumps({**record, WEIGHTS_DTYPE: "bfloat16"}))
    assert made_otherwise(run_dir, command, (0, 3)) is None
    (run_dir / SETTINGS_RECORD).write_text(json.dumps({**record, "torch_dtype": "bfloat16"}))
    assert (
        made_otherwise(run_dir, command, (0, 3)) == "torch_dtype: 'bfloat16' there, 'float32' now"
    )


def test_a_second_grid_on_a_held_output_is_refused_before_it_changes_anything(grid, tmp_path):
    """Before: a second `east-eval` (or `east-demo`) on a live grid's --output emptied,
    continued or tabled the first one's runs (a 20-sentence run tabled beside 400-sentence
    ones), both exit 0. Shards share the folder, and dry runs (which write the test set a
    grid reads) with them; a grid or a merge is refused beside either."""
    from east_agent.common.run_lock import hold_run_lock

    config, output, _ = grid
    out = tmp_path / "out"
    shutil.copytree(output, out)
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    grids = (["--limit", "3"], ["--limit", "2"], ["--limit", "3", "--merge-shards", "2"])
    grids += (["--limit", "3", "--dry-run"],)
    with hold_run_lock(out, "grid.lock"):  # a grid at work
        for extra in grids:
            result = east_eval(config, "--output", out, *extra)
            assert result.returncode == 2, result.stderr[-3000:]
            said = f"east-eval: {out} is being written by process {os.getpid()}"
            assert result.stderr.startswith(said) and "Traceback" not in result.stderr
    with hold_run_lock(out, "grid.lock", shared=True):  # a dry run (no shard lock of its own)
        for extra in grids[:3]:
            result = east_eval(config, "--output", out, *extra)
            assert result.returncode == 2, result.stderr[-3000:]
            said = f"east-eval: {out} is being read by a dry run (or a shard is starting on it);"
            assert result.stderr.startswith(said) and "Traceback" not in result.stderr
        dry = east_eval(config, "--limit", "3", "--output", out, "--dry-run")
        assert dry.returncode == 0 and dry.stdout.count("done already, skipped") == 3
        shard = east_eval(config, "--limit", "3", "--output", out, "--shard", "2/2")
        assert shard.returncode == 0, shard.stderr[-3000:]
    with hold_run_lock(out, "grid.lock", shared=True), hold_run_lock(out, "grid-shard-1-of-2.lock"):
        result = east_eval(config, "--output", out, "--limit", "3")  # a shard at work: named
        assert result.returncode == 2, result.stderr[-3000:]
        said = f"east-eval: {out} is being written by a shard of a grid (grid-shard-1-of-2: "
        assert result.stderr.startswith(said) and f"process {os.getpid()}" in result.stderr
    after = {path: path.read_bytes() for path in out.rglob("*") if path.is_file()}
    made_by_the_shard = {path for path in after if "shards" in path.parts} | {
        out / "grid-shard-2-of-2.lock",
        out / "grid-shard-1-of-2.lock",
    }
    assert {path: data for path, data in after.items() if path not in made_by_the_shard} == before
    again = east_eval(config, "--limit", "3", "--output", out)
    assert again.returncode == 0 and again.stdout.count("done already, skipped") == 3


def test_no_finished_run_to_table_removes_an_earlier_grids_tables(grid, tmp_path, capsys):
    """Before: a merge whose every run was left out (shards cut for another --limit) kept
    the earlier tables, significance and curves of those runs, exit 0."""
    from east_agent.evaluation.config import read_eval_config
    from east_agent.evaluation.reports import summarize

    config, output, _ = grid
    shutil.copytree(output, tmp_path / "out")
    tree = yaml.safe_load(config.read_text())
    tree.update(output=str(tmp_path / "out"))
    (tmp_path / "moved.yaml").write_text(yaml.safe_dump(tree))
    earlier = ["curves.png", "results.csv", "results.md", "significance.csv", "significance.md"]
    assert all((tmp_path / "out" / name).exists() for name in earlier)
    assert summarize(read_eval_config(tmp_path / "moved.yaml"), []) == []
    assert not any((tmp_path / "out" / name).exists() for name in earlier)
    said = capsys.readouterr().out
    assert said.startswith("no finished run to table (results.csv, results.md, ")


def test_grid_runs_every_setting_and_tabulates(grid):
    _, output, result = grid
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[1/3] east-low" in result.stdout and "[3/3] waitk-offline-k2" in result.stdout
    assert "east-simuleval --agent" in result.stdout  # the exact command is shown
    with open(output / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["system"], row["setting"]) for row in rows] == [
        ("east", "low"),
        ("east", "high"),
        ("waitk-offline", "k2"),
    ]
    assert list(rows[0]) == [
        "system",
        "setting",
        "BLEU",
        "AL",
        "LAAL",
        "AL_CA",
        "LAAL_CA",
        "YAAL",
        "YAAL_CA",
        "SWF",
        "EFSW",
        "DSPTV",
        "degenerate",
        "wall_seconds",
        "streams",
        "jobs",
    ]
    for row in rows:
        assert float(row["wall_seconds"]) > 0
        assert float(row["AL_CA"]) > float(row["AL"])  # computation took some time
        assert float(row["YAAL_CA"]) > float(row["YAAL"]) > 0  # OmniSTEval's, same convention
        assert 0 <= float(row["SWF"]) <= 100 and row["degenerate"] in ("0", "1")
        # one number of decimals a column, SimulEval's scores ("1.87") as OmniSTEval's
        scores = [column for column in list(row)[2:-3] if column != "degenerate"]
        assert all(re.fullmatch(r"-?\d+\.\d{3}", row[c]) for c in scores)
        assert re.fullmatch(r"\d+\.\d{2}", row["wall_seconds"])
    kept = json.loads((output / "runs" / "east-low" / "omnisteval_scores.json").read_text())
    assert kept["scores"]["YAAL"] == pytest.approx(float(rows[0]["YAAL"]), abs=5e-4)
    assert "| east | low |" in (output / "results.md").read_text()
    assert (output / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("east-low", "east-high", "waitk-offline-k2"):
        log = (output / "runs" / name / "instances.log").read_text().splitlines()
        assert len(log) == 3
    # east has two settings, so its curve is tested; waitk-offline has one, so it is not
    with open(output / "significance.csv") as handle:
        (comparison,) = list(csv.DictReader(handle))
    assert (comparison["system"], comparison["from"], comparison["to"]) == ("east", "low", "high")
    bleu = {row["setting"]: float(row["BLEU"]) for row in rows if row["system"] == "east"}
    # recomputed from instances.log, the scores are SimulEval's own
    assert float(comparison["BLEU_from"]) == pytest.approx(bleu["low"], abs=0.01)
    assert float(comparison["BLEU_to"]) == pytest.approx(bleu["high"], abs=0.01)
    # three sentences: too few for the bootstrap (tested from 7, test_significance)
    assert comparison["p_value"] == "" and comparison["verdict"] == "untested (under 7 sentences)"
    assert "Paired bootstrap" in result.stdout
    # what CI95_to is, under the table (before: a half-width of 17.7 beside a BLEU of 33.3
    # read as the interval's upper end)
    said = (
        "CI95_to: half-width of the 95% bootstrap interval of BLEU_to, centred on the "
        "resamples' mean BLEU (sacrebleu's), not on BLEU_to itself"
    )
    assert said in (output / "significance.md").read_text().splitlines()[-1]


def test_batched_grid_scores_equal_simulevals_own_loop(grid, tmp_path):
    """The grid runs batched by default (one process, the checkpoint loaded once);
    --batch-size 1 runs each setting through SimulEval's own loop in a child process."""
    config, output, result = grid
    assert result.stdout.count("--batch-size 64") == 3
    sequential = east_eval(config, "--limit", "3", "--batch-size", "1", "--output", tmp_path)
    assert sequential.returncode == 0, sequential.stderr[-3000:]
    assert "--batch-size" not in sequential.stdout

    def rows(folder):
        with open(folder / "results.csv") as handle:
            return list(csv.DictReader(handle))

    columns = ("system", "setting", "BLEU", "AL", "LAAL")
    batched_rows, sequential_rows = rows(output), rows(tmp_path)
    assert [[r[c] for c in columns] for r in batched_rows] == [
        [r[c] for c in columns] for r in sequential_rows
    ]
    # what the CA columns measured: 64 streams, of which 3 had a sentence
    assert {r["streams"] for r in batched_rows} == {"3"}
    assert {r["streams"] for r in sequential_rows} == {"1"}
    # scored with the same settings, recorded beside the scores either way
    for name in ("east-low", "waitk-offline-k2"):
        batched_scoring = (output / "runs" / name / "scoring.json").read_text()
        assert batched_scoring == (tmp_path / "runs" / name / "scoring.json").read_text()


def test_a_grid_loads_its_checkpoint_once(east_checkpoint, tmp_path, monkeypatch):
    """Five runs of three agents and prompts, one process (`jobs: 1`): one load."""
    from east_agent.agent import EastAgent
    from east_agent.evaluation import cli
    from east_agent.waitk_agent import WaitkAgent

    loads = []
    for agent_class in (EastAgent, WaitkAgent):

        def counted(cls, args, config, load=agent_class.load):
            loads.append(cls.__name__)
            return load(args, config)

        monkeypatch.setattr(agent_class, "load", classmethod(counted))
    systems = {
        "east": {"agent": "east", "latency": ["low", "high"]},
        "waitk-offline": {"agent": "waitk", "prompt": "offline", "waitk": [2]},
        "waitk-east": {"agent": "waitk", "prompt": "east", "waitk": [1, 3]},
    }
    config = write_config(tmp_path / "grid.yaml", east_checkpoint, tmp_path / "out", systems)
    cli.main([str(config), "--limit", "2"])
    assert len(rows_of(tmp_path / "out")) == 5
    assert loads == ["EastAgent"]


def test_a_runs_tokenizer_checks_come_before_the_weights_load(
    east_checkpoint, tmp_path, monkeypatch, capsys
):
    """A context too small for the prompt: refused from the tokenizer (before: only once
    the grid had loaded the weights for the run)."""
    from east_agent.agent import EastAgent
    from east_agent.evaluation import cli

    loads = []
    monkeypatch.setattr(EastAgent, "load", classmethod(lambda cls, *_: loads.append(cls)))
    systems = {"east": {"agent": "east", "latency": ["low"], "max_context": 10}}
    config = write_config(tmp_path / "grid.yaml", east_checkpoint, tmp_path / "out", systems)
    with pytest.raises(SystemExit) as ended:
        cli.main([str(config), "--limit", "2"])
    assert ended.value.code == 2 and loads == []
    assert "--max-context 10 leaves no room for a sentence after the" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--dry-run"]])
def test_sentence_files_of_the_users_in_the_grids_test_set_folder_stay(
    east_checkpoint, tmp_path, capsys, extra
):
    """Before: a hand-made `OUTPUT/testset/source.txt` replaced by the grid's, a dry run's
    too (east-prepare refused it)."""
    systems = {"east": {"agent": "east", "latency": ["low"]}}
    config = write_config(tmp_path / "grid.yaml", east_checkpoint, tmp_path / "out", systems)
    mine = tmp_path / "out" / "testset" / "source.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my own sentences\n")
    said = east_eval_fails(capsys, config, "--limit", "2", *extra)
    assert said.startswith(
        f"east-eval: the grid's test set folder {mine.parent}: source.txt there was not written"
    )
    assert mine.read_text() == "my own sentences\n"


def test_a_mistyped_checkpoint_beside_finished_runs_is_named_as_missing(grid, tmp_path, capsys):
    """Before: "... holds a run made with model_path ... delete that folder to run it
    again", advice to delete finished runs for a typo."""
    config, output, _ = grid
    shutil.copytree(output, tmp_path / "out")
    typo = tmp_path / "east-dem"
    said = east_eval_fails(
        capsys, config, "--limit", "3", "--output", tmp_path / "out", "--model-path", typo
    )
    assert said == (
        f"east-eval: model path {str(typo)!r} does not exist ({tmp_path / 'out' / 'runs'}"
        "/east-low holds a run made with another checkpoint: a typo?)\n"
    )


def test_a_file_where_a_run_folder_goes_is_named(grid, tmp_path, capsys):
    """Before: a bare "[Errno 17] File exists"."""
    config, output, _ = grid
    shutil.copytree(output, tmp_path / "out")
    shutil.rmtree(tmp_path / "out" / "runs" / "east-high")
    (tmp_path / "out" / "runs" / "east-high").write_text("mine")
    said = east_eval_fails(capsys, config, "--limit", "3", "--output", tmp_path / "out")
    folder = tmp_path / "out" / "runs" / "east-high"
    assert said == f"east-eval: east-high's run folder {folder}: a file, not a folder\n"


def rows_of(output: Path) -> list[dict[str, str]]:
    with open(output / "results.csv") as handle:
        return list(csv.DictReader(handle))


def test_jobs_give_the_scores_of_one_run_at_a_time(grid, tmp_path):
    config, one_at_a_time, first = grid
    assert first.returncode == 0, first.stderr[-3000:]
    result = east_eval(config, "--limit", "3", "--jobs", "2", "--output", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    side_by_side = rows_of(tmp_path)
    assert [
        [row[c] for c in ("system", "setting", "BLEU", "AL", "LAAL", "YAAL", "SWF")]
        for row in side_by_side
    ] == [
        [row[c] for c in ("system", "setting", "BLEU", "AL", "LAAL", "YAAL", "SWF")]
        for row in rows_of(one_at_a_time)
    ]
    assert {row["jobs"] for row in side_by_side} == {"2"}
    assert {row["jobs"] for row in rows_of(one_at_a_time)} == {"1"}
    # east's comparison made in a worker as soon as its runs were done, the same as at the end
    significance = (tmp_path / "significance.csv").read_text()
    assert significance == (one_at_a_time / "significance.csv").read_text()
    assert significance.count("\neast,") == 1
    for number, name in enumerate(("east-low", "east-high", "waitk-offline-k2"), 1):
        assert f"[{number}/3] {name}: started" in result.stdout
        run = tmp_path / "runs" / name
        console = (run / "console.log").read_text()
        assert "east-simuleval --agent" in console and "BLEU" in console  # not on the terminal
        tries = json.loads((run / "wall_seconds.json").read_text())["tries"]
        assert [attempt["jobs"] for attempt in tries] == [2]
    assert "east-simuleval --agent" not in result.stdout


def test_finished_runs_are_not_run_again(grid):
    config, _, _ = grid
    result = east_eval(config, "--limit", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("done already, skipped") == 3
    assert "east-simuleval --agent" not in result.stdout


def test_finished_runs_scored_otherwise_are_scored_again_from_their_logs(grid, tmp_path):
    """Other metrics or another computation-aware clock: each finished run's SimulEval
    scores are made again from its log (nothing decoded), and then kept."""
    config, output, _ = grid
    shutil.copytree(output, tmp_path / "out")
    tree = yaml.safe_load(config.read_text())
    tree.update(output=str(tmp_path / "out"), latency_metrics=["AL", "AL_CA", "ATD"])
    tree["ca_unit_seconds"] = 0.8
    slower = tmp_path / "slower.yaml"
    slower.write_text(yaml.safe_dump(tree))
    logs = {
        path: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in (tmp_path / "out").glob("runs/*/instances.log")
    }
    dry = east_eval(slower, "--limit", "3", "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    changed = "(ca_unit_seconds 0.4 (now 0.8)"
    assert dry.stdout.count(f"done already, would be scored again {changed}") == 3

    result = east_eval(slower, "--limit", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(f"done already, scored again {changed}") == 3
    assert "latency_metrics ['LAAL', 'AL', 'LAAL_CA', 'AL_CA'] (now ['AL', 'AL_CA', 'ATD'])" in (
        result.stdout
    )
    assert "east-simuleval --agent" not in result.stdout  # scored, not run
    assert "$ east-simuleval --score-only" in result.stdout
    assert logs == {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in logs}
    before, after = rows_of(output), rows_of(tmp_path / "out")
    for old, new in zip(before, after, strict=True):
        assert (new["BLEU"], new["AL"]) == (old["BLEU"], old["AL"])
        assert new["LAAL"] == new["LAAL_CA"] == ""  # no longer asked for
        assert float(new["AL_CA"]) < float(old["AL_CA"])  # the same delays, a slower clock
    # YAAL_CA of the slower clock (not always lower: a word the faster clock put past the
    # source's end is left out of YAAL, so it can rise)
    from east_agent.evaluation.config import read_eval_config
    from east_agent.evaluation.reports import omnisteval_cells

    clocks = {name: read_eval_config(path) for name, path in (("fast", config), ("slow", slower))}
    cells = {
        name: [
            omnisteval_cells(read, run, output / "runs" / run.name, "word")["YAAL_CA"]
            for run in read.runs()
        ]
        for name, read in clocks.items()
    }
    assert [row["YAAL_CA"] for row in after] == cells["slow"] != cells["fast"]
    assert [row["YAAL_CA"] for row in before] == cells["fast"]
    scores = (tmp_path / "out" / "runs" / "east-low" / "scores.tsv").read_text()
    assert scores.splitlines()[0].split("\t") == ["BLEU", "AL", "AL_CA", "ATD"]

    again = east_eval(slower, "--limit", "3")
    assert again.returncode == 0 and again.stdout.count("done already, skipped") == 3
    # scores from before the scorers' settings were recorded: scored again once
    (tmp_path / "out" / "runs" / "east-low" / "scoring.json").unlink()
    again = east_eval(slower, "--limit", "3", "--only", "east-low")
    assert "east-low: done already, scored again (scoring settings not recorded)" in again.stdout
    assert (tmp_path / "out" / "runs" / "east-low" / "scores.tsv").read_text() == scores
    # damaged scores beside their record: scored again (before: "done already, skipped",
    # the run's table cells empty)
    for damage in ("garbage\n", scores.replace("\t", "\tx", 1), scores.splitlines()[0] + "\n1\n"):
        (tmp_path / "out" / "runs" / "east-low" / "scores.tsv").write_text(damage)
        again = east_eval(slower, "--limit", "3", "--only", "east-low")
        assert again.returncode == 0, again.stderr[-3000:]
        assert "east-low: done already, scored again (" in again.stdout
        assert "(damaged?)" in again.stdout
        assert (tmp_path / "out" / "runs" / "east-low" / "scores.tsv").read_text() == scores

    # back to the first clock, one run named: the others are tabled too, so they are
    # scored again before the table is written, never shown on the other clock; one held
    # by another process is left out of the table, named
    from east_agent.common.run_lock import hold_run_lock
    from east_agent.simuleval_glue.run_folder import INSTANCES_LOCK

    first = ("--limit", "3", "--only", "east-low", "--output", tmp_path / "out")
    dry = east_eval(config, *first, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    for name in ("[1/1] east-low", "east-high (not in --only)"):
        assert f"{name}: done already, would be scored again (ca_unit_seconds 0.8" in dry.stdout
    with hold_run_lock(tmp_path / "out" / "runs" / "waitk-offline-k2", INSTANCES_LOCK):
        result = east_eval(config, *first)
    # the tables of the others written, then a failure naming it (before: exit 0)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.endswith(
        "east-eval: not scored, left out of the tables (why, and what to do, said above): "
        "waitk-offline-k2\n"
    )
    assert "[1/1] east-low: done already, scored again (ca_unit_seconds 0.8 (now 0.4)" in (
        result.stdout
    )
    assert "east-high (not in --only): done already, scored again (ca_unit_seconds 0.8" in (
        result.stdout
    )
    held = "east-eval: waitk-offline-k2 (not in --only): not scored again, left out of the tables:"
    assert held in result.stderr and "is being written by process" in result.stderr
    columns = ("system", "setting", "BLEU", "AL", "LAAL", "AL_CA", "LAAL_CA", "YAAL_CA")
    assert [[row[c] for c in columns] for row in rows_of(tmp_path / "out")] == [
        [row[c] for c in columns] for row in before[:2]
    ]
    result = east_eval(config, *first)  # free again: scored, and back in the table
    assert "waitk-offline-k2 (not in --only): done already, scored again" in result.stdout
    assert [[row[c] for c in columns] for row in rows_of(tmp_path / "out")] == [
        [row[c] for c in columns] for row in before
    ]


def test_the_tables_after_a_merge_score_the_other_runs_as_the_grid(grid, tmp_path, capsys):
    """`--merge-shards` scores the merged runs; the other finished runs its table shows
    are scored again first when the grid scores otherwise."""
    from east_agent.common.entry import CommandError
    from east_agent.evaluation.config import read_eval_config
    from east_agent.evaluation.grid import summarize_merged

    config, output, _ = grid
    shutil.copytree(output, tmp_path / "out")
    tree = yaml.safe_load(config.read_text())
    tree.update(output=str(tmp_path / "out"), ca_unit_seconds=0.8)
    (tmp_path / "slower.yaml").write_text(yaml.safe_dump(tree))
    slower = read_eval_config(tmp_path / "slower.yaml")
    summarize_merged(slower, slower.runs(), merged={"east-low"})
    printed = capsys.readouterr().out
    assert "east-high: done already, scored again (ca_unit_seconds 0.4 (now 0.8))" in printed
    assert "east-low:" not in printed  # the merge's own
    before, after = rows_of(output), rows_of(tmp_path / "out")
    assert after[0]["AL_CA"] == before[0]["AL_CA"]
    for new, old in zip(after[1:], before[1:], strict=True):
        assert float(new["AL_CA"]) < float(old["AL_CA"])  # the other clock

    # a run of another span (an earlier grid's --limit) is named and left out, as the grid
    # does (before: tabled beside the merged runs, its significance on other sentences)
    other = tmp_path / "out" / "runs" / "waitk-offline-k2" / "run.json"
    record = json.loads(other.read_text())
    other.write_text(json.dumps({**record, "sentences": [0, 2]}))
    summarize_merged(slower, slower.runs(), merged={"east-low"})
    assert "east-eval: waitk-offline-k2: left out of the tables, made with sentences" in (
        capsys.readouterr().err
    )
    shown = [(row["system"], row["setting"]) for row in rows_of(tmp_path / "out")]
    assert shown == [("east", "low"), ("east", "high")]

    # so is a run made with other flags, merged or not (before: only the test set, span
    # and checkpoint were compared, and a greedy run was tabled beside merged beam shards)
    high = tmp_path / "out" / "runs" / "east-high" / "run.json"
    record = json.loads(high.read_text())
    high.write_text(json.dumps({**record, "flags": {**record["flags"], "num_beams": 3}}))
    with pytest.raises(CommandError, match="merged, but left out of the tables .*: east-high$"):
        summarize_merged(slower, slower.runs(), merged={"east-low", "east-high"})
    assert "east-eval: east-high: left out of the tables, made with flags" in (
        capsys.readouterr().err
    )
    assert [row["setting"] for row in rows_of(tmp_path / "out")] == ["low"]
    # `--limit` at the merge is the grid's: runs of another span are left out, merged too
    # (the run above whose run.json was made to say [0, 2] as it was: its log holds 3
    # sentences, and would be left out for them, `made_otherwise`)
    other.write_text(json.dumps(json.loads(other.read_text()) | {"sentences": [0, 3]}))
    # a run whose log another command wrote (its run_settings.json), merged or not
    settings = other.with_name("run_settings.json")
    kept = settings.read_text()
    settings.write_text(json.dumps(json.loads(kept) | {"waitk": 3}))
    with pytest.raises(CommandError, match="left out of the tables .*: waitk-offline-k2$"):
        summarize_merged(slower, slower.runs(), merged={"east-low"})
    assert (
        "east-eval: waitk-offline-k2: left out of the tables, its log written by another "
        "command than this grid's run (waitk: 3 there, 2 now)"
    ) in capsys.readouterr().err
    settings.write_text(kept)
    sentences = record["sentences"][1]
    with pytest.raises(CommandError, match="merged, but left out of the tables .*: east-low$"):
        summarize_merged(slower, slower.runs(), merged={"east-low"}, limit=sentences - 1)
    assert f"east-low: left out of the tables, made with sentences [0, {sentences}]" in (
        capsys.readouterr().err
    )


def test_a_merge_names_unknown_runs_and_unfinished_shards_before_merging_any(grid, tmp_path):
    config, output, _ = grid
    shutil.copytree(output, tmp_path / "out")
    tree = yaml.safe_load(config.read_text())
    tree.update(output=str(tmp_path / "out"))
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(tree))
    typo = east_eval(tmp_path / "grid.yaml", "--merge-shards", "2", "--only", "east-lwo")
    assert typo.returncode == 2
    said = "--only 'east-lwo': no such run in the config (did you mean 'east-low'?) (runs: east-"
    assert said in typo.stderr
    none = east_eval(tmp_path / "grid.yaml", "--merge-shards", "2")
    assert none.returncode == 2, none.stderr[-2000:]  # before: all 6 shard paths listed
    runs = f"east-low, east-high, waitk-offline-k2 in {tmp_path / 'out' / 'runs'}: no shards"
    assert f"no shard of 2 here (nothing merged): {runs}" in none.stderr
    only = east_eval(tmp_path / "grid.yaml", "--merge-shards", "2", "--only", "east-high")
    said = f"no shard of 2 here (nothing merged): east-high in {tmp_path / 'out' / 'runs'}: no"
    assert only.returncode == 2 and said in only.stderr  # the picked run's, not the grid's
    (tmp_path / "out" / "runs" / "east-high" / "shards" / "1-of-3").mkdir(parents=True)
    other = east_eval(tmp_path / "grid.yaml", "--merge-shards", "2")
    assert "the shards here were cut otherwise (east-high: --merge-shards 3)" in other.stderr
    (tmp_path / "out" / "runs" / "east-low" / "shards" / "1-of-2").mkdir(parents=True)
    unfinished = east_eval(tmp_path / "grid.yaml", "--merge-shards", "2")
    assert unfinished.returncode == 2, unfinished.stderr[-2000:]
    assert "6 shards not finished (nothing merged): " in unfinished.stderr
    assert "runs/east-low/shards/1-of-2" in unfinished.stderr and "and 3 more" in unfinished.stderr
    nowhere = east_eval(tmp_path / "grid.yaml", "--merge-shards", "2", "--output", tmp_path / "no")
    assert "no such folder, so no shards to merge" in nowhere.stderr
    assert not (tmp_path / "no").exists()  # before: made, with a grid.lock


def test_a_merge_a_run_folder_refuses_merges_nothing(grid, tmp_path):
    """Before: the runs before the refused one were merged and scored, the tables not,
    exit 2 ("a merge is all or nothing")."""
    config, output, _ = grid
    out = tmp_path / "out"
    shutil.copytree(output, out)
    for name in ("east-low", "east-high"):  # waitk-offline-k2 keeps its run of 3 sentences
        shutil.rmtree(out / "runs" / name)
    for shard in ("1/2", "2/2"):
        result = east_eval(config, "--output", out, "--limit", "4", "--shard", shard)
        assert result.returncode == 0, result.stderr[-3000:]
    merged = east_eval(config, "--output", out, "--merge-shards", "2")
    assert merged.returncode == 2, merged.stderr[-3000:]
    said = (
        f"{out / 'runs' / 'waitk-offline-k2'} holds a run made with sentences [0, 3] (now [0, 4])"
    )
    assert said in merged.stderr
    for name in ("east-low", "east-high"):
        assert not (out / "runs" / name / "instances.log").exists()


def test_a_shard_whose_log_was_cut_short_is_refused_before_any_merge(grid, tmp_path):
    """Before: the runs before it were merged, then its merged log refused, naming
    east-simuleval's --continue-unfinished; the shard's own rerun translates it again."""
    config, output, _ = grid
    out = tmp_path / "out"
    shutil.copytree(output, out)
    shutil.rmtree(out / "runs" / "east-low")
    for shard in ("1/2", "2/2"):
        result = east_eval(
            config, "--output", out, "--limit", "4", "--shard", shard, "--only", "east-low"
        )
        assert result.returncode == 0, result.stderr[-3000:]
    log = out / "runs" / "east-low" / "shards" / "2-of-2" / "instances.log"
    log.write_text(log.read_text().splitlines(keepends=True)[0])
    merged = east_eval(config, "--output", out, "--merge-shards", "2", "--only", "east-low")
    assert merged.returncode == 2, merged.stderr[-3000:]
    said = f"{log}: 1 of the run's sentences 2 .. 3 are missing (3) since it was scored (nothing "
    said += "merged): east-eval CONFIG --shard 2/2 --only east-low translates them"
    assert said in merged.stderr and "Traceback" not in merged.stderr
    assert not (out / "runs" / "east-low" / "instances.log").exists()
    again = east_eval(
        config, "--output", out, "--limit", "4", "--shard", "2/2", "--only", "east-low"
    )
    assert again.returncode == 0 and "translated and scored again" in again.stdout
    merged = east_eval(config, "--output", out, "--merge-shards", "2", "--only", "east-low")
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert len((out / "runs" / "east-low" / "instances.log").read_text().splitlines()) == 4


def with_comet(config: Path, output: Path, settings, path: Path) -> Path:
    """`config` writing to `output`, COMET asked of the tiny checkpoint too."""
    tree = yaml.safe_load(config.read_text())
    tree.update(output=str(output), quality_metrics=["BLEU", "COMET"])
    tree.update(comet_checkpoint=settings.checkpoint, comet_python=settings.python)
    path.write_text(yaml.safe_dump(tree))
    return path


def counting_comet(settings, folder: Path):
    """`settings` with an interpreter that notes each start in a file: (settings, file)."""
    starts = folder / "comet-starts.txt"
    counting = folder / "counting-python"
    counting.write_text(f'#!/bin/sh\necho "$@" >> {starts}\nexec {settings.python} "$@"\n')
    counting.chmod(0o755)
    return dataclasses.replace(settings, python=str(counting)), starts


def comet_children(starts: Path) -> list[str]:
    """The COMET children `counting_comet`'s interpreter started."""
    return [line for line in starts.read_text().splitlines() if "comet_child.py" in line]


def comet_of_log(settings, log: Path) -> float:
    """COMET (times 100) of a sentence-level run's log, scored here."""
    from east_agent.common.comet_process import comet_scores
    from east_agent.simuleval_glue.instance_log import finished_records

    records = finished_records(log)
    # as `comet-score` reads a file's lines (before: the log's references, line ends kept)
    keys = ("source", "prediction", "reference")
    fields = ([record[key].strip() for record in records] for key in keys)
    return 100 * comet_scores(settings, *fields).system


def test_comet_scores_a_finished_grid_again_and_a_new_run_alike(grid, tiny_comet, tmp_path):
    """COMET asked of a finished grid: every run's log is scored again (nothing decoded)
    and the table shows each run's COMET; a run decoded with COMET asked scores the same;
    another checkpoint scores again."""
    config, output, _ = grid
    shutil.copytree(output, tmp_path / "out")
    comet_config = with_comet(config, tmp_path / "out", tiny_comet, tmp_path / "comet.yaml")
    result = east_eval(comet_config, "--limit", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("done already, scored again (comet_checkpoint None (now ") == 3
    assert "east-simuleval --agent" not in result.stdout  # scored, not run
    rows = rows_of(tmp_path / "out")
    assert list(rows[0])[:4] == ["system", "setting", "BLEU", "COMET"]
    for row, name in zip(rows, ("east-low", "east-high", "waitk-offline-k2"), strict=True):
        expected = comet_of_log(tiny_comet, tmp_path / "out" / "runs" / name / "instances.log")
        assert float(row["COMET"]) == pytest.approx(expected, abs=1e-3)
    assert [row["BLEU"] for row in rows] == [row["BLEU"] for row in rows_of(output)]
    assert len({row["COMET"] for row in rows}) > 1

    # decoded with COMET asked, two runs at once in worker processes: east-eval adds COMET
    # to each with its one COMET child (counted: its interpreter notes each start)
    counted, starts = counting_comet(tiny_comet, tmp_path)
    counted_config = with_comet(config, tmp_path / "new", counted, tmp_path / "counted.yaml")
    new = ("--limit", "3", "--only", "east-low", "east-high", "--jobs", "2")
    fresh = east_eval(counted_config, *new)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    command = (tmp_path / "new" / "runs" / "east-low" / "console.log").read_text()
    assert "east-simuleval --agent" in command and "--comet-checkpoint" not in command
    assert "[1/2] east-low: COMET" in fresh.stdout and "[2/2] east-high: COMET" in fresh.stdout
    assert len(comet_children(starts)) == 1, comet_children(starts)
    assert [row["COMET"] for row in rows_of(tmp_path / "new")] == [r["COMET"] for r in rows[:2]]
    # SimulEval's own loop, a process a run, alike
    loop = (
        "--limit",
        "3",
        "--only",
        "east-low",
        "--batch-size",
        "1",
        "--output",
        tmp_path / "loop",
    )
    looped = east_eval(counted_config, *loop, in_process=False)  # its own COMET child
    assert looped.returncode == 0, looped.stderr[-3000:]
    [ran] = [line for line in looped.stdout.splitlines() if "east-simuleval --agent" in line]
    assert "--comet-checkpoint" not in ran
    assert "[1/1] east-low: COMET" in looped.stdout
    assert rows_of(tmp_path / "loop")[0]["COMET"] == rows[0]["COMET"]
    assert len(comet_children(starts)) == 2  # one more: this east-eval's

    # the checkpoint is known by its content: moved, the same; changed in place, not
    moved = tmp_path / "moved-comet"
    shutil.copytree(Path(tiny_comet.checkpoint).parents[1], moved)
    tree = yaml.safe_load(comet_config.read_text())
    tree["comet_checkpoint"] = str(moved / "checkpoints" / "model.ckpt")
    comet_config.write_text(yaml.safe_dump(tree))
    again = east_eval(comet_config, "--limit", "3", "--only", "east-low")
    assert "east-low: done already, skipped" in again.stdout
    with open(moved / "hparams.yaml", "a") as hparams:
        hparams.write("# changed\n")
    again = east_eval(comet_config, "--limit", "3", "--only", "east-low")
    assert "east-low: done already, scored again (comet_checkpoint " in again.stdout
    assert rows_of(tmp_path / "out")[0]["COMET"] == rows[0]["COMET"]  # the same weights


def test_a_run_folder_made_with_other_settings_is_never_reused(grid):
    config, output, _ = grid
    run = output / "runs" / "east-low"
    assert json.loads((run / "run.json").read_text())["flags"]["latency"] == "low"
    log_before = (run / "instances.log").read_text()
    # Same output, other beams: the greedy results must not be passed off as beam search.
    result = east_eval(config, "--limit", "3", "--only", "east-low", "--num-beams", "2")
    assert result.returncode != 0
    assert f"{run} holds a run made with flags" in result.stderr
    assert "'num_beams': 2" in result.stderr and "another --output" in result.stderr
    # other sentences: refused too
    result = east_eval(config, "--limit", "2", "--only", "east-low")
    assert result.returncode != 0 and "sentences [0, 3] (now [0, 2])" in result.stderr
    assert (run / "instances.log").read_text() == log_before


def test_a_grid_of_another_testset_leaves_the_runs_testset_alone(grid):
    """Refused (a run folder of the other set) or a dry run: before, either rewrote
    `testset/` first, so that a grid running there, and a later merge or table, read
    another test set's sentences and references, with exit 0."""
    config, output, _ = grid
    prepared = (output / "testset" / "testset.json").read_text()
    for extra in ((), ("--dry-run",)):
        result = east_eval(config, "--limit", "3", "--testset", "multi30k-val.de-en", *extra)
        assert result.returncode == 2
        assert f"{output / 'testset'} holds multi30k.de-en, the test set of the runs in" in (
            result.stderr
        )
        assert (output / "testset" / "testset.json").read_text() == prepared


def test_runs_that_failed_before_their_first_sentence_do_not_hold_the_testset(grid, tmp_path):
    """Before: any run.json in runs/ held `testset/`, so a grid of another test set was
    refused after a run had failed on a bad flag, until runs/ was removed by hand. A run
    a process may be writing (its lock names a holder) still holds it."""
    config, _, _ = grid
    output = tmp_path / "out"
    assert east_eval(config, "--dry-run", "--output", output).returncode == 0
    failed = output / "runs" / "east-low"
    failed.mkdir(parents=True)
    (failed / "run.json").write_text('{"testset": "multi30k.de-en"}\n')
    (failed / "run.lock").write_text("")  # its holder ended: the lock cleared
    other = ("--dry-run", "--output", output, "--testset", "multi30k-val.de-en")
    result = east_eval(config, *other)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((output / "testset" / "testset.json").read_text())["name"] == (
        "multi30k-val.de-en"
    )
    (failed / "run.lock").write_text('{"pid": 1, "command": "east-eval", "started": 0}\n')
    result = east_eval(config, "--dry-run", "--output", output)
    assert result.returncode == 2
    assert "holds multi30k-val.de-en, the test set of the runs in" in result.stderr


def test_num_beams_and_testset_override_the_config(grid, tmp_path):
    config, _, _ = grid
    result = east_eval(
        config, "--dry-run", "--output", tmp_path, "--testset", "multi30k-val.de-en",
        "--num-beams", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    commands = [line for line in result.stdout.splitlines() if line.startswith("$ ")]
    assert len(commands) == 3
    east, waitk = commands[:2], commands[2]
    assert all("--num-beams 3" in command for command in east)
    assert "--num-beams" not in waitk  # wait-k has no beams
    assert all(f"{tmp_path / 'testset'}" in command for command in commands)
    assert len((tmp_path / "testset" / "source.txt").read_text().splitlines()) == 1014  # val
    assert not (tmp_path / "runs").exists()  # a dry run claims no folder
    # each printed command pastes back into a shell, a folder with a space included
    spaced = tmp_path / "with space"
    result = east_eval(config, "--dry-run", "--output", spaced, "--only", "east-low")
    (command,) = [line for line in result.stdout.splitlines() if line.startswith("$ ")]
    words = shlex.split(command[2:])
    assert words[words.index("--source") + 1] == str(spaced / "testset" / "source.txt")
    for bad, message in (("0", "at least 1"), ("two", "at least 1")):
        result = east_eval(config, "--dry-run", "--num-beams", bad)
        assert result.returncode != 0 and message in result.stderr
    for flag, bad in (("--limit", "0"), ("--limit", "-5"), ("--batch-size", "0")):
        result = east_eval(config, "--dry-run", flag, bad)
        assert result.returncode != 0 and "at least 1" in result.stderr, (flag, bad)


def test_num_beams_needs_an_east_system(east_checkpoint, tmp_path):
    systems = {"offline": {"agent": "waitk", "prompt": "offline", "waitk": [100]}}
    config = write_config(tmp_path / "c.yaml", east_checkpoint, tmp_path / "out", systems)
    result = east_eval(config, "--dry-run", "--num-beams", "5")
    assert result.returncode != 0
    assert "num_beams 5: no system uses the east agent" in result.stderr


def test_num_beams_beside_a_system_sweeping_beams_is_refused(tmp_path, capsys):
    """Before: the sweep's runs became one, named `beam-default`."""
    beam = {"agent": "east", "latency": "low", "num_beams": [1, 2]}
    config = quick_config(tmp_path / "grid.yaml", systems={"beam": beam})
    error = east_eval_fails(capsys, config, "--dry-run", "--num-beams", "3")
    assert "num_beams 3 (--num-beams) for every EAST system, and beam sweeps num_beams" in error


def test_a_cut_off_run_continues_where_it_stopped(grid):
    config, output, _ = grid
    run = output / "runs" / "east-high"
    lines = (run / "instances.log").read_text().splitlines()
    (run / "scores.tsv").unlink()
    (run / "instances.log").write_text(lines[0] + "\n" + lines[1][:20])  # a killed writer
    result = east_eval(config, "--limit", "3", "--only", "east-high")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--continue-unfinished" in result.stdout
    # said as it starts, once (before: `[1/1] east-high`, as a fresh run; then twice)
    said = (
        f"note: {run / 'instances.log'}: resumed after its 1 finished sentence (a last line "
        "a kill cut off is dropped)\n"
    )
    assert (result.stdout + result.stderr).count("resumed after its") == 1
    assert said in result.stderr and "[1/1] east-high\n" in result.stdout
    resumed = (run / "instances.log").read_text().splitlines()
    assert resumed[0] == lines[0] and len(resumed) == 3
    assert [json.loads(line)["index"] for line in resumed] == [0, 1, 2]
    assert (run / "scores.tsv").exists()
    # The table still lists every run of the grid, not just the one run again.
    assert len(list(csv.DictReader(open(output / "results.csv")))) == 3


def test_shards_merge_to_the_scores_of_one_run(east_checkpoint, tmp_path):
    systems = {"east": {"agent": "east", "latency": ["medium"]}}
    whole = write_config(tmp_path / "whole.yaml", east_checkpoint, tmp_path / "whole", systems)
    sharded = write_config(tmp_path / "shards.yaml", east_checkpoint, tmp_path / "sharded", systems)
    assert east_eval(whole, "--limit", "4").returncode == 0
    for shard in ("1/2", "2/2"):
        result = east_eval(sharded, "--limit", "4", "--shard", shard)
        assert result.returncode == 0, result.stderr[-3000:]
    result = east_eval(sharded, "--merge-shards", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    merged_log = (tmp_path / "sharded" / "runs" / "east-medium" / "instances.log").read_text()
    assert [json.loads(line)["index"] for line in merged_log.splitlines()] == [0, 1, 2, 3]

    def scores(folder):
        rows = list(csv.DictReader(open(folder / "results.csv")))
        return {key: rows[0][key] for key in ("BLEU", "AL", "LAAL", "streams")}

    # the same scores; the streams that shared the device (the _CA columns' setting): the
    # whole run's 4 sentences at once, each shard's 2
    whole_scores, sharded_scores = scores(tmp_path / "whole"), scores(tmp_path / "sharded")
    assert whole_scores.pop("streams") == "4" and sharded_scores.pop("streams") == "2"
    assert sharded_scores == whole_scores
    shard_record = json.loads(
        (
            tmp_path / "sharded" / "runs" / "east-medium" / "shards" / "2-of-2" / "run.json"
        ).read_text()
    )
    assert shard_record["sentences"] == [2, 4]
    merged_record = json.loads(
        (tmp_path / "sharded" / "runs" / "east-medium" / "run.json").read_text()
    )
    whole_record = json.loads(
        (tmp_path / "whole" / "runs" / "east-medium" / "run.json").read_text()
    )
    assert merged_record == whole_record  # the merged run is the whole run
    merged_scoring, whole_scoring = (
        (folder / "runs" / "east-medium" / "scoring.json").read_text()
        for folder in (tmp_path / "sharded", tmp_path / "whole")
    )
    assert merged_scoring == whole_scoring  # scored in this process as the runs are


def test_shards_leave_comet_to_their_merge(east_checkpoint, tiny_comet, tmp_path):
    """A shard neither checks nor scores COMET (its environment may be where the shards are
    merged); the merge scores every sentence with it, once."""
    systems = {"east": {"agent": "east", "latency": ["medium"]}}
    plain = write_config(tmp_path / "plain.yaml", east_checkpoint, tmp_path / "out", systems)
    elsewhere = dataclasses.replace(tiny_comet, python=str(tmp_path / "elsewhere" / "python"))
    shard_config = with_comet(plain, tmp_path / "out", elsewhere, tmp_path / "shards.yaml")
    run_dir = tmp_path / "out" / "runs" / "east-medium"
    for shard in ("1/2", "2/2"):
        result = east_eval(shard_config, "--limit", "4", "--shard", shard)
        assert result.returncode == 0, result.stderr[-3000:]
        header = (run_dir / "shards" / f"{shard[0]}-of-2" / "scores.tsv").read_text()
        assert "BLEU" in header and "COMET" not in header
    refused = east_eval(shard_config, "--merge-shards", "2")
    assert refused.returncode != 0 and "comet_python" in refused.stderr
    assert "elsewhere/python cannot run" in refused.stderr
    merge_config = with_comet(plain, tmp_path / "out", tiny_comet, tmp_path / "merge.yaml")
    merged = east_eval(merge_config, "--merge-shards", "2")
    assert merged.returncode == 0, merged.stderr[-3000:]
    [row] = rows_of(tmp_path / "out")
    expected = comet_of_log(tiny_comet, run_dir / "instances.log")
    assert float(row["COMET"]) == pytest.approx(expected, abs=1e-3)


def test_config_errors_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "testset": "multi30k.de-en",
                "model_path": "m",
                "output": "o",
                "systems": {"x": {"agent": "east", "latency": ["low"], "num_beams": [1, 2]}},
            }
        )
    )
    result = east_eval(bad, "--dry-run")
    assert result.returncode != 0 and "sweeps ['latency', 'num_beams']" in result.stderr
    bad.write_text(
        yaml.safe_dump(
            {"testset": "multi30k.de-en", "model_path": "m", "output": "o", "sytems": {}}
        )
    )
    result = east_eval(bad, "--dry-run")
    assert result.returncode != 0
    assert "unknown key 'sytems' (did you mean 'systems'?)" in result.stderr


def test_a_typo_in_a_system_key_is_named_before_anything_runs(east_checkpoint, tmp_path):
    systems = {"east": {"agent": "east", "num_beam": 5, "latency": ["low"]}}
    config = write_config(tmp_path / "c.yaml", east_checkpoint, tmp_path / "out", systems)
    result = east_eval(config, "--limit", "2")
    assert result.returncode != 0
    assert "systems.east.num_beam: the east agent has no such flag" in result.stderr
    assert "did you mean 'num_beams'" in result.stderr
    assert not (tmp_path / "out" / "runs").exists()  # no run.json blocks the corrected rerun


def test_a_grid_killed_outright_keeps_its_sentences_and_its_time(east_checkpoint, tmp_path):
    from kill import sigkill_after_lines

    systems = {"east": {"agent": "east", "latency": ["low"]}}
    config = write_config(tmp_path / "c.yaml", east_checkpoint, tmp_path / "out", systems)
    command = [console_script("east-eval"), str(config)]
    command += ["--limit", "40", "--batch-size", "2"]
    log = tmp_path / "out" / "runs" / "east-low" / "instances.log"
    sigkill_after_lines(command, log, 3)
    kept = log.read_text().split("\n")[:-1]
    assert len(kept) >= 3 and all(json.loads(line) for line in kept)
    result = east_eval(config, "--limit", "40", "--batch-size", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = {json.loads(line)["index"]: line for line in log.read_text().splitlines()}
    assert sorted(resumed) == list(range(40))
    assert all(resumed[json.loads(line)["index"]] == line for line in kept)  # not redone
    timing = json.loads((log.parent / "wall_seconds.json").read_text())
    killed, finished = timing["tries"]
    assert killed["seconds"] > 0 and finished["seconds"] > 0  # the killed try counts too
    assert timing["seconds"] == pytest.approx(killed["seconds"] + finished["seconds"], abs=0.02)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_east_eval_kills_its_simuleval_child(east_checkpoint, tmp_path):
    """SimulEval's own loop runs as a child: SIGKILL of the parent alone ends it too, and
    the rerun writes every sentence once."""
    import time

    from kill import processes_mentioning, sigkill_after_lines

    systems = {"east": {"agent": "east", "latency": ["low"]}}
    output = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", east_checkpoint, output, systems)
    command = [console_script("east-eval"), str(config)]
    command += ["--limit", "20", "--batch-size", "1"]
    log = output / "runs" / "east-low" / "instances.log"
    sigkill_after_lines(command, log, 2)
    deadline = time.time() + 30
    while processes_mentioning(str(output)):
        assert time.time() < deadline, "the east-simuleval child outlived east-eval"
        time.sleep(0.1)
    result = east_eval(config, "--limit", "20", "--batch-size", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    indices = [json.loads(line)["index"] for line in log.read_text().splitlines()]
    assert sorted(indices) == list(range(20))  # each once


def test_a_second_run_on_a_busy_run_folder_is_refused(east_checkpoint, tmp_path):
    import os
    import signal
    import time

    from east_agent.common.run_lock import hold_run_lock

    systems = {"east": {"agent": "east", "latency": ["low"]}}
    config = write_config(tmp_path / "c.yaml", east_checkpoint, tmp_path / "out", systems)
    # every test sentence: the first run must still be at work when the second starts
    # (at 300 it once finished within the second's start-up, which then ran, exit 0)
    command = [console_script("east-eval"), str(config), "--limit", "1000"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "out" / "runs" / "east-low" / "instances.log"
    try:
        deadline = time.time() + 300
        while not (log.exists() and log.read_text().count("\n") >= 1):
            assert first.poll() is None and time.time() < deadline, "the first run ended"
            time.sleep(0.05)
        second = east_eval(config, "--limit", "1000")
        assert second.returncode != 0
        assert f"is being written by process {first.pid}" in second.stderr, second.stderr
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    with hold_run_lock(log.parent):  # the killed run's lock went with it
        pass


@pytest.fixture(scope="module")
def longform_grid(east_checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("longform-grid")
    systems = {
        "east": {"agent": "east", "latency": ["low", "high"]},
        "east-gold": {"agent": "east", "gold_sentences": True, "latency": ["low"]},
        "waitk-offline": {"agent": "waitk", "prompt": "offline", "waitk": [2]},
    }
    config = write_config(folder / "grid.yaml", east_checkpoint, folder / "out", systems)
    tree = yaml.safe_load(config.read_text())
    # as the shipped long-form configs: no computation-aware SimulEval scorer, no flag of it
    tree.update(testset="multi30k.de-en.talks3", latency_metrics=["LAAL", "AL"])
    config.write_text(yaml.safe_dump(tree))
    result = east_eval(config, "--limit", "2")
    return config, folder / "out", result


def test_a_longform_grid_reads_talks_and_scores_them_with_omnisteval(longform_grid):
    _, output, result = longform_grid
    assert result.returncode == 0, result.stderr[-3000:]
    with open(output / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "system", "setting", "BLEU", "chrF", "LongYAAL", "StreamLAAL", "LongYAAL_CA",
        "StreamLAAL_CA", "wall_seconds", "streams", "jobs",
    ]  # fmt: skip
    assert [row["system"] for row in rows] == ["east", "east", "east-gold", "waitk-offline"]
    for row in rows:
        assert float(row["LongYAAL_CA"]) > float(row["LongYAAL"]) > 0  # in ms
        assert 0 <= float(row["BLEU"]) <= 100
    runs = output / "runs"
    for name in ("east-low", "east-high", "waitk-offline-k2"):  # one line per talk
        assert len((runs / name / "instances.log").read_text().splitlines()) == 2
        assert json.loads((runs / name / "run.json").read_text())["flags"]["long_form"] is True
    gold = runs / "east-gold-low"
    assert len((gold / "instances.log").read_text().splitlines()) == 6  # the talks' sentences
    record = json.loads((gold / "run.json").read_text())
    assert record["gold_sentences"] is True and "long_form" not in record["flags"]
    assert record["sentences"] == [0, 6]
    scores = json.loads((gold / "longform_scores.json").read_text())
    assert (scores["talks"], scores["reference_sentences"]) == (2, 6)
    resegmented = (gold / "omnisteval.resegmented.jsonl").read_text().splitlines()
    assert len(resegmented) == 6
    assert (output / "curves.png").exists()  # BLEU against LongYAAL
    with open(output / "significance.csv") as handle:
        (comparison,) = list(csv.DictReader(handle))
    assert (comparison["from"], comparison["to"]) == ("low", "high")
    assert float(comparison["BLEU_to"]) == pytest.approx(float(rows[1]["BLEU"]), abs=0.01)


def test_a_longform_grid_scores_comet_over_the_resegmented_sentences(
    longform_grid, tiny_comet, tmp_path
):
    from east_agent.common.comet_process import COMET_INPUTS, comet_scores
    from east_agent.common.text_lines import read_lines

    config, output, _ = longform_grid
    shutil.copytree(output, tmp_path / "out")
    resegmented = sorted((tmp_path / "out" / "runs").glob("*/omnisteval.resegmented.jsonl"))
    made = [path.stat().st_mtime_ns for path in resegmented]
    comet_config = with_comet(config, tmp_path / "out", tiny_comet, tmp_path / "comet.yaml")
    dry = east_eval(comet_config, "--limit", "2", "--dry-run")
    assert dry.stdout.count("done already, would be scored again (COMET not scored (now ") == 4
    result = east_eval(comet_config, "--limit", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("done already, scored again (COMET not scored (now asked))") == 4
    assert [path.stat().st_mtime_ns for path in resegmented] == made  # COMET alone added
    rows = rows_of(tmp_path / "out")
    assert list(rows[0])[:5] == ["system", "setting", "BLEU", "COMET", "chrF"]
    for row in rows:
        run = tmp_path / "out" / "runs" / f"{row['system']}-{row['setting']}"
        saved = json.loads((run / "longform_scores.json").read_text())
        assert saved["comet"] == {
            "checkpoint": tiny_comet.checkpoint,
            "scale": "COMET x 100",
            "inputs": COMET_INPUTS,
        }
        lines = (run / "omnisteval.resegmented.jsonl").read_text().splitlines()
        sentences = [json.loads(line) for line in lines]
        expected = comet_scores(
            tiny_comet,
            read_lines(run / "omnisteval.source.txt"),
            [sentence["prediction"] for sentence in sentences],
            [sentence["reference"] for sentence in sentences],
        )
        assert float(row["COMET"]) == pytest.approx(100 * expected.system, abs=1e-3)
        assert saved["scores"]["COMET"] == pytest.approx(float(row["COMET"]), abs=1e-3)
        # SimulEval's scores of whole talks have no COMET (COMET reads 512 tokens)
        assert "COMET" not in (run / "scores.tsv").read_text().splitlines()[0].split("\t")
    assert [row["BLEU"] for row in rows] == [row["BLEU"] for row in rows_of(output)]

    # COMET made before its texts were stripped (its record the checkpoint alone): again
    low = tmp_path / "out" / "runs" / "east-low" / "longform_scores.json"
    saved = json.loads(low.read_text())
    saved["made_from"]["comet"] = saved["made_from"]["comet"]["checkpoint"]
    low.write_text(json.dumps(saved))
    again = east_eval(comet_config, "--limit", "2", "--only", "east-low")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "east-low: done already, scored again (COMET of texts not stripped (made " in (
        again.stdout
    )
    assert json.loads(low.read_text())["made_from"]["comet"]["inputs"] == COMET_INPUTS
    assert rows_of(tmp_path / "out") == rows

    # decoded with COMET asked, two runs at once: the workers re-segment and score without
    # COMET, east-eval adds it to each with its one COMET child
    counted, starts = counting_comet(tiny_comet, tmp_path)
    counted_config = with_comet(config, tmp_path / "new", counted, tmp_path / "counted.yaml")
    fresh = east_eval(
        counted_config, "--limit", "2", "--only", "east-low", "east-high", "--jobs", "2"
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert "[1/2] east-low: COMET" in fresh.stdout and "[2/2] east-high: COMET" in fresh.stdout
    assert len(comet_children(starts)) == 1, comet_children(starts)
    assert [row["COMET"] for row in rows_of(tmp_path / "new")] == [r["COMET"] for r in rows[:2]]
    for name in ("east-low", "east-high"):
        saved = json.loads((tmp_path / "new" / "runs" / name / "longform_scores.json").read_text())
        assert saved["comet"]["checkpoint"] == counted.checkpoint
        assert saved["made_from"]["comet"] is not None

    # COMET no longer asked: dropped from the saved scores, nothing re-segmented
    again = east_eval(config, "--limit", "2", "--output", tmp_path / "new", "--only", "east-low")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "east-low: done already, scored again (COMET of another checkpoint (now none))" in (
        again.stdout
    )
    saved = json.loads(
        (tmp_path / "new" / "runs" / "east-low" / "longform_scores.json").read_text()
    )
    assert "COMET" not in saved["scores"] and saved["comet"] is None
    # COMET asked again of a run whose re-segmented sentences are gone: they are made again
    high = tmp_path / "new" / "runs" / "east-high"
    (high / "omnisteval.resegmented.jsonl").unlink()
    again = east_eval(counted_config, "--limit", "2", "--only", "east-high")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "not scored" not in again.stderr, again.stderr
    saved = json.loads((high / "longform_scores.json").read_text())
    assert saved["scores"]["COMET"] == pytest.approx(float(rows[1]["COMET"]), abs=1e-3)


@pytest.mark.parametrize(
    "testset, system, message",
    [
        ("multi30k.de-en", {"gold_sentences": True}, "gold_sentences needs a long-form test set"),
        ("multi30k.de-en.talks3", {"gold_sentences": True, "context_words": 0}, "reads no talks"),
        ("multi30k.de-en.talks3", {"document_level": True}, "long-form runs exclude it"),
        (  # before: passed to the gold runs, whose decoder refuses it, halfway through
            "multi30k.de-en.talks3",
            {"gold_sentences": True, "context_across_sentences": True},
            "systems.east.context_across_sentences: a gold-sentence system reads no talks",
        ),
        (  # before: a run's refusal, after the runs before it
            "multi30k.de-en",
            {"cache_budget": 300},
            "systems.east.cache_budget: a setting of long-form input, and this system reads",
        ),
    ],
)
def test_long_form_settings_that_contradict_are_refused(
    east_checkpoint, tmp_path, testset, system, message
):
    systems = {"east": {"agent": "east", **system}}
    config = write_config(tmp_path / "grid.yaml", east_checkpoint, tmp_path / "out", systems)
    tree = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**tree, "testset": testset}))
    result = east_eval(config, "--dry-run")
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_word_times_file_that_does_not_fit_is_refused_before_any_run(longform_grid, tmp_path):
    config, _, _ = longform_grid
    times = tmp_path / "times.txt"
    times.write_text("0.5 1.0\n")
    tree = yaml.safe_load(config.read_text())
    tree.update(word_times=str(times), output=str(tmp_path / "out"))
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(tree))
    result = east_eval(tmp_path / "grid.yaml")
    assert result.returncode == 2
    assert f"{times}: 1 lines of word times for" in result.stderr
    assert not (tmp_path / "out" / "runs").exists()
    # one not there: named with the config's line (before: "[Errno 2] No such file ...")
    times.unlink()
    result = east_eval(tmp_path / "grid.yaml")
    assert result.returncode == 2
    assert f"{tmp_path / 'grid.yaml'}: line " in result.stderr
    assert result.stderr.endswith(f": word_times {times}: no such file\n")
    assert not (tmp_path / "out" / "runs").exists()


def test_longform_shards_count_talks_and_merge_to_the_whole_grid(longform_grid, tmp_path):
    """Shards of a long-form grid split the talks (a gold-sentence run takes their
    sentences); merged, they score as the unsharded grid."""
    config, whole, _ = longform_grid
    tree = yaml.safe_load(config.read_text())
    systems = {name: tree["systems"][name] for name in ("east", "east-gold")}
    tree.update(output=str(tmp_path / "sharded"), systems=systems)
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(tree))
    for shard in ("1/2", "2/2"):
        result = east_eval(tmp_path / "grid.yaml", "--limit", "2", "--shard", shard)
        assert result.returncode == 0, result.stderr[-3000:]

    def second_shard(run):
        path = tmp_path / "sharded" / "runs" / run / "shards" / "2-of-2" / "run.json"
        return json.loads(path.read_text())["sentences"]

    assert second_shard("east-low") == [1, 2]  # talk 1
    assert second_shard("east-gold-low") == [3, 6]  # talk 1's sentences
    result = east_eval(tmp_path / "grid.yaml", "--merge-shards", "2")
    assert result.returncode == 0, result.stderr[-3000:]

    def rows(folder):
        with open(folder / "results.csv") as handle:
            return {
                (row["system"], row["setting"]): [row[c] for c in ("BLEU", "chrF", "LongYAAL")]
                for row in csv.DictReader(handle)
            }

    merged, unsharded = rows(tmp_path / "sharded"), rows(whole)
    assert len(merged) == 3 and all(merged[key] == unsharded[key] for key in merged)
    # a merge of one run tables the others of the span its shards were cut for, the
    # gold sentences' run by the sentences of those talks (before: of the whole set, and
    # it was named and left out)
    result = east_eval(tmp_path / "grid.yaml", "--merge-shards", "2", "--only", "east-low")
    assert result.returncode == 0 and "left out" not in result.stderr, result.stderr[-3000:]
    assert rows(tmp_path / "sharded") == merged
    # a merge asked for another --limit than the shards': refused before anything changes
    # (before: merged, then tabled nowhere, the tables removed, exit 2)
    tables = {path: path.read_bytes() for path in (tmp_path / "sharded").glob("results.*")}
    for limit, run in (("3", "east-low"), ("1", "east-gold-low")):
        other = east_eval(
            tmp_path / "grid.yaml", "--merge-shards", "2", "--only", run, "--limit", limit
        )
        assert other.returncode == 2, other.stderr[-3000:]
        assert other.stderr.endswith(
            f"east-eval: --limit {limit}: the shards of {run} were cut for --limit 2 (nothing "
            "merged); merge them with --limit 2, or without --limit\n"
        )
    assert tables and all(path.read_bytes() == held for path, held in tables.items())
    again = east_eval(
        tmp_path / "grid.yaml", "--merge-shards", "2", "--only", "east-low", "--limit", "2"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert rows(tmp_path / "sharded") == merged


def quick_config(path: Path, **changes) -> Path:
    """A config that needs no checkpoint: its errors are found before anything loads."""
    tree = {
        "testset": "multi30k.de-en",
        "model_path": "m",
        "output": str(path.parent / "out"),
        "systems": {"east": {"agent": "east", "latency": ["low"]}},
    }
    path.write_text(yaml.safe_dump({**tree, **changes}))
    return path


def east_eval_fails(capsys, *arguments) -> str:
    """`east-eval` in this process, refused as a user error: its one line on stderr."""
    from east_agent.evaluation.cli import main

    with pytest.raises(SystemExit) as ended:
        main([str(argument) for argument in arguments])
    assert ended.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith("east-eval: ") and message.count("\n") == 1, message
    return message


@pytest.mark.parametrize(
    "text, message",
    [
        ("testset: multi30k.de-en\nsystems:\n  east: {agent: east\n", "line 4, column 1"),
        ("testset: multi30k.de-en\nmodel_path: m: n\n", "line 2, column 14"),
        ("output: 'out\n", "line 2, column 1"),
        (
            "systems:\n  east:\n    agent: east\n    latency: [low]\n    latency: [high]\n",
            "line 5, column 5: the key 'latency' is given twice",
        ),
    ],
)
def test_invalid_yaml_is_named_by_file_and_line(tmp_path, capsys, text, message):
    config = tmp_path / "grid.yaml"
    config.write_text(text)
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: invalid YAML: {message}" in error


def test_yaml_merge_keys_share_settings_between_systems(tmp_path):
    """`<<: *anchor` (before: "could not determine a constructor" for the merge key)."""
    from east_agent.evaluation.config import read_eval_config

    config = tmp_path / "grid.yaml"
    config.write_text(
        "testset: multi30k.de-en\nmodel_path: m\noutput: out\nsystems:\n"
        "  waitk-offline: &wk {agent: waitk, prompt: offline, waitk: [1, 3]}\n"
        "  waitk-east: {<<: *wk, prompt: east}\n"
    )
    runs = {run.name: run.flags for run in read_eval_config(config).runs()}
    assert runs == {
        "waitk-offline-k1": {"prompt": "offline", "waitk": 1},
        "waitk-offline-k3": {"prompt": "offline", "waitk": 3},
        "waitk-east-k1": {"prompt": "east", "waitk": 1},
        "waitk-east-k3": {"prompt": "east", "waitk": 3},
    }
    # a block for merge keys alone, under an `x-` key (before: "unknown key")
    config.write_text(
        "x-waitk: &wk {agent: waitk, waitk: [1, 3]}\ntestset: multi30k.de-en\nmodel_path: m\n"
        "output: out\nsystems:\n  waitk-offline: {<<: *wk, prompt: offline}\n"
        "  waitk-east: {<<: *wk, prompt: east}\n"
    )
    assert {run.name: run.flags for run in read_eval_config(config).runs()} == runs


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"systems": {"east": None}}, "systems.east must map settings to values (agent: "),
        ({"systems": {"east": None}}, "latency: [low, high]), got None"),
        ({"systems": {"east": "low"}}, "latency: [low, high]), got 'low'"),
        ({"systems": {"east": ["low"]}}, "systems.east must map settings"),
        ({"systems": "east"}, "systems must map names to settings"),
        ({"output": None}, "output must be a path, got None"),
        ({"model_path": 3}, "model_path must be text, got 3"),
        ({"device": None}, "device must be text, got None"),
        ({"model_path": " "}, "model_path is empty (must be text)"),  # before: "got ' '"
        ({"word_times": 5}, "word_times must be a path, got 5"),
        ({"testset": "multi30k"}, "testset: unknown test set 'multi30k'"),
        ({"testset": "multi30k.xx-en"}, "testset: unknown test set 'multi30k.xx-en'"),
        ({"testset": "multi30k.de-en.talksX"}, "testset: 'multi30k.de-en.talksX': a long-form"),
        ({"testset": ["multi30k.de-en"]}, "testset must be a test set name"),
        ({"quality_metrics": "BLEU"}, "quality_metrics must be a list of names"),
        ({"latency_metrics": []}, "latency_metrics must be a list of names"),
        ({"latency_metrics": ["AL", None]}, "latency_metrics must be a list of names"),
        ({"quality_metrics": ["BLEU", "CHRF"]}, "quality_metrics: no metric 'CHRF'; SimulEval"),
        ({"latency_metrics": ["AL", "YAAL"]}, "latency_metrics: no metric 'YAAL'; SimulEval"),
        ({"ca_unit_seconds": "fast"}, "ca_unit_seconds must be a number of seconds above 0"),
        ({"ca_unit_seconds": 0}, "ca_unit_seconds must be a number of seconds above 0"),
        ({"ca_unit_seconds": True}, "ca_unit_seconds must be a number of seconds above 0"),
        # before: dropped without a word, AL_CA and LAAL_CA left empty in results.md
        (
            {"latency_metrics": ["LAAL", "AL"], "ca_unit_seconds": 0.4},
            "ca_unit_seconds sets the clock of the computation-aware metrics; "
            "latency_metrics asks for none",
        ),
        # before: "asks for none", the misspelt name unnamed
        (
            {"latency_metrics": ["LAAL", "al_ca"], "ca_unit_seconds": 0.4},
            "latency_metrics: no metric 'al_ca'; SimulEval knows",
        ),
        (
            {"latency_metrics": ["LAAL", "FOO"], "ca_unit_seconds": 0.4},
            "latency_metrics: no metric 'FOO'; SimulEval knows",
        ),
        # before: ignored without a word, the talks' clock the word times
        (
            {
                "testset": "multi30k.de-en.talks5",
                "word_times": "times.txt",
                "latency_metrics": ["LAAL", "AL"],
                "ca_unit_seconds": 0.3,
            },
            "ca_unit_seconds: the talks' clock is ",
        ),
        (  # a name SimulEval lacks is named first, as on sentence-level grids (a review)
            {
                "testset": "multi30k.de-en.talks5",
                "word_times": "times.txt",
                "latency_metrics": ["LAAL", "al_ca"],
                "ca_unit_seconds": 0.3,
            },
            "latency_metrics: no metric 'al_ca'; SimulEval knows",
        ),
        # before: every talk decoded, then nothing scored (the scorer's clock ticks 1/1024 s)
        (
            {"testset": "multi30k.de-en.talks5", "ca_unit_seconds": 0.0001},
            "ca_unit_seconds: 0.0001 s a unit; long-form scoring needs at least 1/1024 s",
        ),
        ({"max_new_tokens": "many"}, "max_new_tokens must be a whole number of at least 1"),
        ({"batch_size": 0}, "batch_size must be a whole number of at least 1"),
        ({"jobs": 1.5}, "jobs must be a whole number of at least 1"),
        ({"device": "gpu"}, "device: 'gpu' is not a device: "),
        ({"comet_gpus": -1}, "comet_gpus must be 0 or 1, got -1"),
        ({"comet_gpus": 2}, "comet_gpus must be 0 or 1, got 2"),
        ({"comet_gpus": 1.0}, "comet_gpus must be 0 or 1, got 1.0"),
        ({"comet_gpus": True}, "comet_gpus must be 0 or 1, got True"),
        ({"comet_batch_size": 0}, "comet_batch_size must be a whole number of at least 1"),
        ({"comet_checkpoint": 3}, "comet_checkpoint must be a path, got 3"),
        ({"quality_metrics": ["BLEU", "COMET"]}, "quality_metrics: COMET needs comet_checkpoint"),
        (
            {"quality_metrics": ["COMET"], "comet_checkpoint": "/nowhere/model.ckpt"},
            "comet_checkpoint: COMET checkpoint /nowhere/model.ckpt does not exist",
        ),
        ({"systems": {"east": {"agent": "east", "latency": []}}}, "latency is an empty list"),
        ({"systems": {"east": {"agent": "eats"}}}, "systems.east.agent must be one of"),
        (
            {"systems": {"east": {"agent": ["east", "waitk"]}}},
            "got ['east', 'waitk'] (one agent a system: a system each)",
        ),
        # the grid's own agent flags, read as each run's agent reads them (before: passed,
        # then every run failed with SimulEval's usage and no file or line)
        ({"torch_dtype": "float64"}, "torch_dtype: invalid choice: 'float64'"),
    ],
)
def test_a_config_value_of_the_wrong_kind_is_named_before_anything_runs(
    tmp_path, capsys, changes, message
):
    config = quick_config(tmp_path / "grid.yaml", **changes)
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: line " in error and message in error, error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "system, message",
    [
        ({"agent": "east", "latency": ["low", "meduim"]}, "systems.east.latency: invalid choice"),
        ({"agent": "waitk", "waitk": [1, "three"]}, "systems.east.waitk: takes a whole number"),
        ({"agent": "waitk", "waitk": [0]}, "systems.east.waitk: takes a whole number"),
        ({"agent": "waitk", "prompt": "ofline"}, "systems.east.prompt: invalid choice: 'ofline'"),
        ({"agent": "east", "num_beams": 0}, "systems.east.num_beams: "),
        # the decoder's bounds and the adapter's folder (before: found when the run's turn
        # came, after the runs before it, with no file or line)
        ({"agent": "east", "max_new_tokens": 0}, "systems.east.max_new_tokens: max_new_tok"),
        ({"agent": "waitk", "waitk": 2, "max_context": 0}, "systems.east.max_context: max_"),
        ({"agent": "east", "adapter_path": "/nowhere"}, "h: adapter_path /nowhere: no such"),
        # named with their lines too (before: the file only; a boolean a bare flag)
        ({"agent": "east", "latency": ["low", True]}, "systems.east.latency: True is YAML's"),
        ({"agent": "east", "latency": ["low"], "num_beams": [1, 2]}, "num_beams: the system sw"),
        ({"agent": "east", "devic": "cpu"}, "systems.east.devic: the east agent has no such"),
        ({"agent": "waitk"}, "systems.east: waitk: the waitk agent needs it"),  # a traceback
    ],
    ids=[
        "latency", "waitk-text", "waitk-zero", "prompt", "num-beams", "max-new-tokens",
        "max-context", "adapter", "boolean-in-sweep", "two-sweeps", "unknown-key", "no-waitk",
    ],
)  # fmt: skip
def test_a_system_value_its_agent_refuses_is_named_before_any_run(
    tmp_path, capsys, system, message
):
    config = quick_config(tmp_path / "grid.yaml", systems={"east": system})
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: line " in error and message in error, error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("testset", "system", "message"),
    [
        ("multi30k.de-en", {"max_context": [256, 600]},
         "systems.east.max_context: --max-context 600 is above the 512 positions"),
        ("multi30k.de-en", {"max_context": [256, 20]},
         "systems.east.max_context: --max-context 20 leaves no room for a sentence after the"),
        ("multi30k.de-en.talks5", {"cache_budget": [200, 600]},
         "systems.east.cache_budget: cache_budget (--cache-budget) 600 is above the context"),
    ],
    ids=["above-positions", "no-room", "cache-budget"],
)  # fmt: skip
def test_a_value_the_checkpoint_cannot_take_is_named_before_any_run(
    east_checkpoint, tmp_path, capsys, testset, system, message
):
    """Before: `--dry-run` passed, and the grid ran the runs before it, then stopped at its
    turn with no file, line or key (the runs after it never ran)."""
    systems = {"east": {"agent": "east", "latency": "low", **system}}
    config = quick_config(
        tmp_path / "grid.yaml", testset=testset, model_path=str(east_checkpoint), systems=systems
    )
    error = east_eval_fails(capsys, config, "--dry-run", "--limit", "1")
    assert f"{config}: line " in error and message in error, error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_a_max_context_none_of_the_sentences_fits_in_is_named_before_any_run(
    east_checkpoint, tmp_path, capsys, dry_run
):
    """Checked once the grid has its test set, against the sentences each run translates
    (before: the other runs went on, and this one was refused at its turn)."""
    systems = {"east": {"agent": "east", "latency": "low", "max_context": [512, 36]}}
    config = quick_config(tmp_path / "grid.yaml", model_path=str(east_checkpoint), systems=systems)
    error = east_eval_fails(capsys, config, *(["--dry-run"] if dry_run else []), "--limit", "2")
    assert f"{config}: line " in error and "systems.east.max_context: " in error, error
    assert "none of the 2 sentences to translate fits in --max-context 36" in error, error
    assert not list((tmp_path / "out").glob("runs/*/instances.log"))


def test_a_run_with_nothing_of_the_checkpoints_to_check_reads_none_of_it(
    east_checkpoint, tmp_path, monkeypatch
):
    """Without max_context or long form the config checks load neither the checkpoint's
    config nor its tokenizer (they did for every run: a dry run of the Multi30k grid took
    3.48 s against 1.65 s)."""
    from east_agent.evaluation.config import read_eval_config

    def refused(*args):
        raise AssertionError("the checkpoint was read")

    monkeypatch.setattr("east_agent.simuleval_glue.adapter.model_positions", refused)
    monkeypatch.setattr("east_agent.simuleval_glue.adapter.checkpoint_tokenizer", refused)
    systems = {"east": {"agent": "east", "latency": ["low", "high"]},
               "waitk": {"agent": "waitk", "waitk": [1, 3]}}  # fmt: skip
    config = quick_config(tmp_path / "grid.yaml", model_path=str(east_checkpoint), systems=systems)
    assert len(read_eval_config(config).runs()) == 4
    systems["east"]["max_context"] = 256  # now read
    config = quick_config(tmp_path / "grid.yaml", model_path=str(east_checkpoint), systems=systems)
    with pytest.raises(AssertionError, match="the checkpoint was read"):
        read_eval_config(config).runs()


@pytest.mark.parametrize("config_json", ["whole", "cut"])
def test_a_checkpoint_that_does_not_load_is_left_to_its_runs(
    east_checkpoint, tmp_path, capsys, config_json
):
    """The checks that read the checkpoint skip one that does not load (no tokenizer, a
    config cut off): a dry run lists its runs, as before those checks."""
    from east_agent.evaluation.cli import main

    broken = tmp_path / "broken"
    broken.mkdir()
    text = (east_checkpoint / "config.json").read_text()
    (broken / "config.json").write_text(text if config_json == "whole" else text[:20])
    systems = {"east": {"agent": "east", "latency": "low", "max_context": [256]}}
    config = quick_config(tmp_path / "grid.yaml", model_path=str(broken), systems=systems)
    main([str(config), "--dry-run", "--limit", "1"])
    assert "[1/1] east-256" in capsys.readouterr().out


def test_two_runs_of_one_name_are_named(tmp_path, capsys):
    systems = {
        "east": {"agent": "east", "latency": ["low-medium"]},
        "east-low": {"agent": "east", "latency": ["medium"]},
    }
    config = quick_config(tmp_path / "grid.yaml", systems=systems)
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: line " in error and "two runs are named 'east-low-medium'" in error


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"word_times": "times.txt"}, "word_times: word times are read by long-form grids"),
        (
            {"systems": {"east": {"agent": "east", "latency": ["low"], "model_path": "/x"}}},
            "systems.east.model_path: the grid's checkpoint is model_path (or --model-path)",
        ),
        (
            {"systems": {"east": {"agent": "east", "latency": ["low"], "src_lang": "fr"}}},
            "systems.east.src_lang: the source language is the test set's, for every run",
        ),
    ],
)
def test_a_key_the_grid_would_ignore_or_be_overruled_by_is_refused(
    tmp_path, capsys, changes, message
):
    """Before: word times silently unused by a sentence-level grid (or, with a missing
    file, its YAAL columns left empty); a system's checkpoint or language silently won over
    the grid's, its checkpoint recorded as the grid's."""
    error = east_eval_fails(capsys, quick_config(tmp_path / "grid.yaml", **changes), "--dry-run")
    assert message in error, error
    assert not (tmp_path / "out").exists()


def test_an_output_or_config_that_is_not_a_folder_or_file_is_one_line(tmp_path, capsys):
    """Before: NotADirectoryError and IsADirectoryError tracebacks."""
    (tmp_path / "afile").write_text("mine")
    config = quick_config(tmp_path / "grid.yaml")
    error = east_eval_fails(capsys, config, "--output", tmp_path / "afile", "--dry-run")
    assert f"--output {tmp_path / 'afile'}: a file, not a folder" in error
    config = quick_config(tmp_path / "grid.yaml", output=str(tmp_path / "afile" / "out"))
    error = east_eval_fails(capsys, config, "--dry-run")
    assert (
        f"{config}: line " in error
        and f"inside a file ({tmp_path / 'afile'} is a file, not a folder)" in error
    )
    error = east_eval_fails(capsys, tmp_path)
    assert error == f"east-eval: {tmp_path}: a folder, not a config file\n"
    assert (tmp_path / "afile").read_text() == "mine"


def test_table_files_a_grid_did_not_write_are_refused_before_any_run(tmp_path, capsys):
    """Before: a model card's results.md and curves.png replaced, exit 0; a folder named
    results.md deleted whole."""
    card = tmp_path / "card"
    card.mkdir()
    (card / "results.md").write_text("mine")
    config = quick_config(tmp_path / "grid.yaml")
    error = east_eval_fails(capsys, config, "--output", card, "--limit", "1")
    said = f"output {card} holds results.md but no grid (grid.lock, or runs/ beside testset/"
    assert said in error
    assert (card / "results.md").read_text() == "mine" and not (card / "runs").exists()
    (card / "runs").mkdir()  # a user's folder of that name: still no grid's (before: taken)
    error = east_eval_fails(capsys, config, "--output", card, "--limit", "1")
    assert said in error and (card / "results.md").read_text() == "mine"
    (card / "testset").mkdir()  # a grid's output, written before grid.lock was
    (card / "testset" / "testset.json").write_text("{}")
    (card / "results.md").unlink()
    (card / "curves.png").mkdir()
    (card / "curves.png" / "notes.txt").write_text("mine")
    error = east_eval_fails(capsys, config, "--output", card, "--limit", "1")
    assert f"{card / 'curves.png'} is a folder, not a table file" in error
    assert (card / "curves.png" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["runs", "testset"])
def test_a_file_where_a_grid_keeps_its_folder_is_named(tmp_path, capsys, name):
    """Before: a bare errno (`[Errno 20] Not a directory: '.../runs/east-low'`)."""
    output = tmp_path / "out"
    output.mkdir()
    (output / name).write_text("mine")
    config = quick_config(tmp_path / "grid.yaml")
    error = east_eval_fails(capsys, config, "--output", output, "--limit", "1")
    assert f"output {output}: its {name} is a file, not the grid's folder" in error
    assert (output / name).read_text() == "mine"


def test_a_cuda_device_this_machine_lacks_is_refused_before_any_run(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    config = quick_config(tmp_path / "grid.yaml", device="cuda")
    error = east_eval_fails(capsys, config, "--limit", "1")
    assert f"{config}: line " in error and "'cuda': this machine has no CUDA device" in error
    error = east_eval_fails(capsys, quick_config(tmp_path / "grid.yaml"), "--device", "cuda:1")
    assert "--device: 'cuda:1': this machine has no CUDA device" in error
    assert not (tmp_path / "out").exists()


def test_ca_unit_seconds_of_a_long_form_config_on_a_sentence_level_testset_names_the_flag(
    tmp_path, capsys
):
    """A long-form config keeps ca_unit_seconds for OmniSTEval's clock with no *_CA metric;
    run on a sentence-level set by --testset, the refusal says the flag changed it."""
    changes = {"latency_metrics": ["LAAL", "AL"], "ca_unit_seconds": 0.4}
    config = quick_config(tmp_path / "grid.yaml", testset="multi30k.de-en.talks5", **changes)
    error = east_eval_fails(capsys, config, "--testset", "multi30k.de-en", "--dry-run")
    assert f"{config}: line " in error and "latency_metrics asks for none on --testset " in error
    assert "multi30k.de-en, a sentence-level set: add one (AL_CA" in error


def test_a_dry_run_notes_a_device_this_machine_lacks(tmp_path, capsys):
    """Its commands may be for another machine: printed all the same, with a note, as for a
    checkpoint that is not there (before: nothing said)."""
    import torch

    from east_agent.evaluation.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    main([str(quick_config(tmp_path / "grid.yaml", device="cuda")), "--dry-run"])
    printed = capsys.readouterr().out
    note = "'cuda': this machine has no CUDA device (it has cpu): the runs would be refused on"
    assert note in printed and "east-simuleval --agent" in printed
    main([str(quick_config(tmp_path / "grid.yaml")), "--dry-run"])  # cpu: nothing to note
    assert "this machine has no" not in capsys.readouterr().out


def test_a_comet_interpreter_without_comet_is_named_before_any_run(tmp_path, capsys):
    from tiny_comet import fake_checkpoint

    checkpoint = fake_checkpoint(tmp_path / "model", b"\x80\x02 a pickle")  # a torch start
    changes = {"quality_metrics": ["BLEU", "COMET"], "comet_checkpoint": str(checkpoint)}
    config = quick_config(tmp_path / "grid.yaml", **changes, comet_python=sys.executable)
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: line " in error and "comet_python: " in error, error
    assert "has no unbabel-comet" in error and "pip install unbabel-comet" in error
    assert not (tmp_path / "out").exists()


def test_a_relative_path_found_only_beside_the_config_is_named(tmp_path, capsys, monkeypatch):
    """Relative paths are read from the current directory: a shipped config run from
    elsewhere names where its checkpoint lies, instead of asking the hub for it."""
    (tmp_path / "repo" / "models" / "demo").mkdir(parents=True)
    (tmp_path / "repo" / "configs").mkdir()
    config = quick_config(tmp_path / "repo" / "configs" / "grid.yaml", model_path="models/demo")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for flags, where in (
        ((), f"{config}: line "),
        (("--model-path", "models/demo"), "--model-path"),
    ):
        error = east_eval_fails(capsys, config, "--dry-run", *flags)
        assert error.startswith(f"east-eval: {where}"), error
        assert f"'models/demo' is not in the current directory ({tmp_path / 'elsewhere'})" in error
        assert f"it lies in {tmp_path / 'repo'}: run east-eval there, or give " in error
    monkeypatch.chdir(tmp_path / "repo")  # where it is read from: no complaint
    from east_agent.evaluation.config import check_relative_paths, read_eval_config

    check_relative_paths(read_eval_config(config), model_needed=True)
    monkeypatch.chdir(tmp_path / "elsewhere")  # merging shards loads no checkpoint
    check_relative_paths(read_eval_config(config), model_needed=False)


def test_a_relative_checkpoint_found_nowhere_is_asked_of_the_hub_first(
    tmp_path, capsys, monkeypatch
):
    """A config copied away from its repository: `models/demo` reads as a hub id (before:
    the run folders claimed, then 49 s of the loader's retries, no config line named)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    config = quick_config(tmp_path / "grid.yaml", model_path="models/demo")
    monkeypatch.chdir(tmp_path)
    error = east_eval_fails(capsys, config, "--limit", "2")
    assert error == (
        f"east-eval: {config}: line 1: model_path 'models/demo': no such folder here "
        f"({tmp_path}), and the hub is offline (HF_HUB_OFFLINE) and has no copy in its cache\n"
    )
    assert not (tmp_path / "out").exists()


def test_a_shard_does_not_look_for_comets_paths(tmp_path, capsys, monkeypatch):
    """COMET waits for the merge: a shard started where COMET's relative paths are not
    found runs; the grid itself is refused there, naming where they lie."""
    from east_agent.evaluation.cli import main

    (tmp_path / "repo" / "comet" / "checkpoints").mkdir(parents=True)
    (tmp_path / "repo" / "comet" / "checkpoints" / "model.ckpt").write_bytes(b"weights")
    checkpoint = "comet/checkpoints/model.ckpt"
    changes = {"quality_metrics": ["BLEU", "COMET"], "comet_checkpoint": checkpoint}
    config = quick_config(tmp_path / "repo" / "grid.yaml", **changes)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    error = east_eval_fails(capsys, config, "--dry-run", "--limit", "2")
    assert f"{config}: line " in error and "comet_checkpoint: 'comet/checkpoints" in error
    main([str(config), "--dry-run", "--limit", "2", "--shard", "1/2"])
    printed = capsys.readouterr().out
    assert "east-simuleval --agent" in printed and "COMET" not in printed


def test_a_config_error_names_the_line_of_its_key(tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text(
        "testset: multi30k.de-en\nmodel_path: m\noutput: out\n"
        "systems:\n  east:\n    agent: east\n  waitk: k3\n"
    )
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: line 7: systems.waitk must map settings to values" in error


def test_a_bad_testset_flag_is_named_as_the_flag(tmp_path, capsys):
    config = quick_config(tmp_path / "grid.yaml")
    error = east_eval_fails(capsys, config, "--dry-run", "--testset", "multi30k")
    assert "--testset: unknown test set 'multi30k'" in error


def test_numbers_yaml_reads_as_text_are_read_as_numbers(tmp_path):
    from east_agent.evaluation.config import read_eval_config

    config = read_eval_config(quick_config(tmp_path / "grid.yaml", ca_unit_seconds="1e-1"))
    assert config.ca_unit_seconds == 0.1
    assert config.testset == "multi30k.de-en"


def test_the_grids_long_form_keys_are_the_decoders():
    from east_agent.decoding.long_form import LONG_FORM_FIELDS
    from east_agent.evaluation.config import LONG_FORM_KEYS

    assert ("long_form", *LONG_FORM_KEYS) == LONG_FORM_FIELDS


@pytest.mark.parametrize(
    "line, said",
    [
        ("    kv_cache: off\n", "systems.east.kv_cache: False is YAML's reading of an unquoted"),
        # a number: quoting is no cure (before: "quote it")
        (
            "    num_beams: false\n",
            "num_beams: False is YAML's reading of an unquoted yes/no/"
            "on/off/true/false, not a value this setting takes",
        ),
        (
            "    torch_dtype: no\n",
            "torch_dtype: False is YAML's reading of an unquoted yes/"
            "no/on/off/true/false: quote it",
        ),
        ("    latency: [low, on]\n", "systems.east.latency: True is YAML's reading"),
    ],
)
def test_an_unquoted_yes_or_no_of_a_flag_that_takes_a_value_is_refused(
    tmp_path, capsys, line, said
):
    """Before, outside a sweep: the flag left off the run's command line, its default run
    (`torch_dtype: off` dropped the grid's own torch_dtype too), exit 0."""
    config = tmp_path / "grid.yaml"
    config.write_text(
        f"testset: multi30k.de-en\nmodel_path: m\noutput: {tmp_path / 'out'}\n"
        "systems:\n  east:\n    agent: east\n" + line
    )
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: line 7" in error and said in error, error
    assert not (tmp_path / "out").exists()


def test_a_system_named_by_an_unquoted_yes_or_no_is_refused(tmp_path, capsys):
    """Before: `off:` a system named False (runs `False-default`, `--only off` none),
    `on:` and `yes:` "the key True is given twice"."""
    config = tmp_path / "grid.yaml"
    config.write_text(
        f"testset: multi30k.de-en\nmodel_path: m\noutput: {tmp_path / 'out'}\n"
        "systems:\n  off:\n    agent: east\n"
    )
    error = east_eval_fails(capsys, config, "--dry-run")
    assert "line 5, column 3: the key off is read by YAML as false: quote it" in error, error


@pytest.mark.parametrize(
    "key, value",
    [
        ("document_level", "no"),
        ("document_level", 0),
        ("trust_remote_code", "false"),
        ("long_form", 1),
        ("context_across_sentences", "yes"),
        ("document_level", [True, "no"]),
    ],
)
def test_a_yes_no_flag_of_another_value_is_named_before_any_run(tmp_path, capsys, key, value):
    """Before: every check passed, then the run stopped the grid at its turn with
    SimulEval's usage ("unrecognized arguments: no")."""
    system = {"agent": "east", "latency": "low", key: value}
    config = quick_config(tmp_path / "grid.yaml", systems={"east": system})
    error = east_eval_fails(capsys, config, "--dry-run")
    wrong = value[-1] if isinstance(value, list) else value
    assert f"{config}: line " in error and f"systems.east.{key} is true or false, got " in error
    assert error.rstrip().endswith(repr(wrong)), error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"quality_metrics": ["ASR_BLEU"]}, "quality_metrics: ASR_BLEU scores speech output"),
        ({"quality_metrics": ["WHISPER_ASR_BLEU"]}, "WHISPER_ASR_BLEU scores speech output"),
        ({"quality_metrics": ["BLEU", "WER"]}, "quality_metrics: WER takes no --sacrebleu-tok"),
        (
            {"latency_metrics": ["LAAL", "AL_SpeechAlign_BOW"]},
            "latency_metrics: AL_SpeechAlign_BOW scores speech output",
        ),
        ({"latency_metrics": ["DiscontinuitySum"]}, "DiscontinuitySum scores speech output"),
    ],
)
def test_a_metric_that_cannot_score_text_is_named_before_any_run(
    tmp_path, capsys, changes, message
):
    """Before: accepted, then the grid failed after decoding (a crash on the missing BLEU
    column, an aligner not installed) or with SimulEval's usage (WER)."""
    config = quick_config(tmp_path / "grid.yaml", **changes)
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: line " in error and message in error, error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("agent", [["east", "waitk"], {"east": 1}, None])
def test_an_agent_that_is_not_one_name_is_named(tmp_path, capsys, agent):
    """Before: TypeError: unhashable type: 'list'."""
    system = {"agent": agent, "latency": "low"}
    config = quick_config(tmp_path / "grid.yaml", systems={"east": system})
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: line " in error, error
    assert f"systems.east.agent must be one of ['east', 'waitk'], got {agent!r}" in error
    del system["agent"]  # before: "got None", as for `agent: null`
    config = quick_config(tmp_path / "grid.yaml", systems={"east": system})
    error = east_eval_fails(capsys, config, "--dry-run")
    assert "systems.east.agent must be one of ['east', 'waitk'], is missing" in error


@pytest.mark.parametrize("name", ["../escaped", "a/b", "a\\b", "", " ", ".hidden"])
def test_a_system_name_that_is_not_one_folder_name_is_refused(tmp_path, capsys, name):
    """Before: `<output>/runs/<name>-<setting>` was written wherever the name led."""
    (tmp_path / "grid").mkdir()
    config = quick_config(tmp_path / "grid" / "grid.yaml", systems={name: {"agent": "east"}})
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: line " in error and f"systems.{name}: {name!r} names its runs'" in error
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["grid", "grid.yaml"]


def test_a_run_folder_name_too_long_for_a_file_name_is_refused(tmp_path, capsys):
    """Before: a traceback (OSError, errno 36) once the run's turn came."""
    config = quick_config(tmp_path / "grid.yaml", systems={"e" * 260: {"agent": "east"}})
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: line " in error and "is 268 bytes, above the 255 a file name" in error


def test_a_value_swept_twice_is_named_and_null_runs_the_default(tmp_path, capsys):
    """Before: "two runs are named 'east-low' ...; rename a system" for `[low, medium,
    low]`, and a null made a run named `east-None`."""
    twice = {"east": {"agent": "east", "latency": ["low", "medium", "low"]}}
    config = quick_config(tmp_path / "grid.yaml", systems=twice)
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: line " in error and "systems.east.latency: 'low' is listed twice" in error
    from east_agent.evaluation.config import read_eval_config

    default = {"east": {"agent": "east", "max_context": [None, 256]}}
    config = quick_config(tmp_path / "grid.yaml", systems=default)
    runs = read_eval_config(config).runs()
    assert [(run.name, run.flags["max_context"]) for run in runs] == [
        ("east-default", None),
        ("east-256", 256),
    ]
    # before: two runs of one translation each (null is the default `low`; "128" is 128)
    for sweep, said in (
        ({"latency": ["low", None]}, "'low' and null (the default, 'low') are one setting"),
        ({"max_new_tokens": ["128", 128]}, "'128' and 128 are one setting"),
        ({"document_level": [None, False]}, "null (the default, False) and False are one"),
    ):
        config = quick_config(tmp_path / "grid.yaml", systems={"east": {"agent": "east", **sweep}})
        error = east_eval_fails(capsys, config, "--dry-run")
        key = next(iter(sweep))
        assert f"{config}: line " in error and f"systems.east.{key}: {said}" in error


def test_a_swept_value_that_would_lead_a_run_folder_out_is_refused(tmp_path, capsys):
    system = {"agent": "east", "adapter_path": ["x/../..", "../../y"]}
    config = quick_config(tmp_path / "grid.yaml", systems={"east": system})
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: line " in error and "systems.east.adapter_path: 'x/../..' in " in error


def test_a_dry_run_says_the_checkpoint_would_be_refused(tmp_path, capsys):
    """Before: a dry run printed the commands of runs that would all be refused."""
    from east_agent.evaluation.cli import main

    config = quick_config(tmp_path / "grid.yaml", model_path=str(tmp_path / "nowhere"))
    main([str(config), "--dry-run", "--limit", "2"])
    printed = capsys.readouterr().out
    note = (  # named where it was given (before: the path alone)
        f"note: {config}: line 1: model_path: model path '{tmp_path / 'nowhere'}' does not "
        "exist: the runs would be refused"
    )
    assert printed.startswith(note + "\n") and "east-simuleval --agent" in printed
    main([str(config), "--dry-run", "--limit", "2", "--model-path", str(tmp_path / "gone")])
    said = f"note: --model-path: model path '{tmp_path / 'gone'}' does not exist: the runs would"
    assert capsys.readouterr().out.startswith(said)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    config = quick_config(tmp_path / "grid.yaml", model_path=str(tmp_path / "model"))
    main([str(config), "--dry-run", "--limit", "2"])
    assert "no weights file" in capsys.readouterr().out
    # a Chinese source is split by the checkpoint's tokenizer as it is prepared (before:
    # the checkpoint's error alone, after the note that the runs would be refused)
    nowhere = tmp_path / "nowhere"
    config = quick_config(tmp_path / "zh.yaml", model_path=str(nowhere), testset="wmt22.zh-en")
    assert east_eval_fails(capsys, config, "--dry-run", "--limit", "2") == (
        "east-eval: wmt22.zh-en: its source is split into units by the checkpoint's tokenizer as "
        f"the test set is prepared, a dry run's too: model path '{nowhere}' does not exist\n"
    )


def test_a_swept_path_below_another_is_refused(tmp_path, capsys):
    """Its run's folder was made inside the other run's (and emptied with it)."""
    from safetensors.torch import save_file

    for adapter in ("ad/a", "ad/a/b"):
        (tmp_path / adapter).mkdir(parents=True)
        (tmp_path / adapter / "adapter_config.json").write_text("{}")
        save_file({}, tmp_path / adapter / "adapter_model.safetensors")
    paths = [str(tmp_path / "ad" / "a"), str(tmp_path / "ad" / "a" / "b")]
    system = {"agent": "east", "adapter_path": paths}
    config = quick_config(tmp_path / "grid.yaml", systems={"east": system})
    error = east_eval_fails(capsys, config, "--dry-run")
    assert error.endswith(
        f"systems.east: run east-{paths[1]}'s folder would be inside run east-{paths[0]}'s "
        "(a swept path below another); sweep paths of which none is inside another\n"
    )
    assert not (tmp_path / "out").exists()


def test_a_dry_run_gives_the_refusal_of_a_run_folder_made_otherwise(tmp_path, capsys):
    """Before: "done already, skipped" for a run the grid itself then refused (made with
    --limit 2, the dry run without)."""
    from east_agent.evaluation.cli import main
    from east_agent.evaluation.config import load_eval_config
    from east_agent.evaluation.runs import claim_run_folder, model_setting, run_record
    from east_agent.evaluation.testsets import read_prepared

    config_path = quick_config(tmp_path / "grid.yaml")
    main([str(config_path), "--dry-run", "--limit", "2"])  # prepares the test set
    config = load_eval_config(config_path)
    run = config.runs()[0]
    testset = read_prepared(config.testset_dir)
    record = run_record(config, run, testset, (0, 2), model_setting(config.model_path))
    claim_run_folder(config.run_dir(run), record)
    (config.run_dir(run) / "scores.tsv").write_text("BLEU\tLAAL\n30.0\t2.0\n")
    (config.run_dir(run) / "instances.log").write_text("")  # the scores' log
    capsys.readouterr()
    error = east_eval_fails(capsys, config_path, "--dry-run")
    assert f"{config.run_dir(run)} holds a run made with sentences [0, 2] (now [0, " in error
    main([str(config_path), "--dry-run", "--limit", "2"])  # the run's own span: no refusal
    assert "[1/1] east-low: done already" in capsys.readouterr().out


def test_a_path_from_the_home_folder_is_expanded(tmp_path, capsys, monkeypatch):
    """Before: `output: ~/grids/out` made a folder named `~` in the current directory."""
    from east_agent.evaluation.cli import main
    from east_agent.evaluation.config import read_eval_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    changes = {"output": "~/grids/out", "model_path": "~/models/m", "comet_python": "~/py"}
    config = read_eval_config(quick_config(tmp_path / "grid.yaml", **changes))
    assert config.output == tmp_path / "home" / "grids" / "out"
    assert config.model_path == str(tmp_path / "home" / "models" / "m")
    assert config.comet_python == str(tmp_path / "home" / "py")
    main([str(tmp_path / "grid.yaml"), "--dry-run", "--limit", "1"])
    assert (tmp_path / "home" / "grids" / "out" / "testset").is_dir()
    assert not (tmp_path / "~").exists()
    config = quick_config(tmp_path / "grid.yaml", output="~no-such-user-here/out")
    error = east_eval_fails(capsys, config, "--dry-run")
    assert f"{config}: line " in error and "output: '~no-such-user-here/out': no such user" in error


def test_a_shard_past_the_end_of_a_short_set_says_it_is_empty(tmp_path, capsys):
    """A job array's shard that no sentence falls in says so (before: a run of no
    sentence, NaN scores, without a word)."""
    from east_agent.evaluation.cli import main

    config = quick_config(tmp_path / "grid.yaml")
    main([str(config), "--dry-run", "--limit", "2", "--shard", "2/3"])
    assert "no sentence" not in capsys.readouterr().err
    main([str(config), "--dry-run", "--limit", "2", "--shard", "3/3"])
    assert capsys.readouterr().err == (
        "--shard 3/3: no sentence (talk, in a long-form grid) of the 2 falls in this shard: "
        "its runs hold none, for --merge-shards 3\n"
    )
