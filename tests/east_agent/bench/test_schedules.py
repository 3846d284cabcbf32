"""`--schedule` and `--save-schedule`: wait-k, a recorded file checked against its test set,
latency level and sentences before any model loads."""

import json
from pathlib import Path

import pytest
from commands import DEMO_MODEL

from east_agent.bench import cli, schedules
from east_agent.bench.cli import main
from east_agent.bench.schedules import waitk_schedule


def test_waitk_schedule():
    assert waitk_schedule([["a", "b", "c", "d"]], 2) == [[(2, 2), (3, 2), (4, 4)]]
    assert waitk_schedule([["a"]], 3) == [[(1, 2)]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[[1, 2]],\n [[1, 2]", "line 2: invalid JSON"),
        ("[]", "expected a non-empty JSON list of sentences"),
        ('[[[1, 2]], [[1, "2"]]]', "sentence 1: expected a list of [units read, chunk tokens]"),
        ('{"schedule": [[[1, 2]]]}', "expected the keys testset and schedule (and latency"),
        (
            '{"testset": "multi30k.de-en", "latency": null, "schedule": [[[1, 2]]]}',
            "latency None is no level (low, low-medium, medium, medium-high, high)",
        ),
        ('{"testset": "multi30k.de-en", "schedule": []}', "expected a non-empty JSON list"),
    ],
)
def test_a_bad_schedule_file_is_named_before_the_model_loads(
    tmp_path, monkeypatch, capsys, text, message
):
    monkeypatch.setattr(cli, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    path = tmp_path / "schedule.json"
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", str(path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"east-bench: --schedule {path}: {message}") and error.count("\n") == 1


@pytest.fixture(scope="module")
def recorded_schedule(tmp_path_factory) -> Path:
    """The demo model's own decisions on the first two Multi30k sentences, saved."""
    folder = tmp_path_factory.mktemp("recorded")
    main([
        "--model-path", str(DEMO_MODEL), "--limit", "2", "--num-beams", "1",
        "--kv-caches", "dynamic", "--copy-megabytes", "8",
        "--save-schedule", str(folder / "schedule.json"), "--output", str(folder / "r.md"),
    ])  # fmt: skip
    return folder / "schedule.json"


@pytest.mark.parametrize("kept", ["--schedule", "--save-schedule"])
def test_an_output_that_is_the_schedule_is_refused(recorded_schedule, monkeypatch, capsys, kept):
    """Before: the tables were appended to the schedule, which no run could read again."""
    monkeypatch.setattr(cli, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    before = recorded_schedule.read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["--model-path", "m", kept, str(recorded_schedule), "--output", str(recorded_schedule)]
        )
    assert exit_info.value.code == 2
    said = f"--output and {kept} name one file, {recorded_schedule}: name two"
    assert said in capsys.readouterr().err
    assert recorded_schedule.read_text() == before


def test_a_schedule_recorded_on_another_test_set_is_refused(recorded_schedule, monkeypatch, capsys):
    """Before: the file held no test set, and its decisions were imposed on other sentences."""
    assert json.loads(recorded_schedule.read_text())["testset"] == "multi30k.de-en"
    monkeypatch.setattr(cli, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", str(recorded_schedule),
              "--testset", "multi30k-val.de-en"])  # fmt: skip
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"east-bench: --schedule {recorded_schedule}: recorded on multi30k.de-en, "
        "not on --testset multi30k-val.de-en\n"
    )


def test_a_schedule_recorded_at_another_latency_is_refused(recorded_schedule, monkeypatch, capsys):
    """Before: the file held no latency level, and a schedule recorded at one level was
    followed under a header naming another."""
    assert json.loads(recorded_schedule.read_text())["latency"] == "low"
    monkeypatch.setattr(cli, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", str(recorded_schedule), "--latency", "high"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"east-bench: --schedule {recorded_schedule}: recorded at --latency low, "
        "not at --latency high\n"
    )


SHIPPED_SCHEDULES = sorted((Path(__file__).parents[3] / "benchmarks" / "schedules").glob("*.json"))


@pytest.mark.parametrize("shipped", SHIPPED_SCHEDULES, ids=lambda path: path.name)
def test_a_shipped_schedule_names_its_test_set_and_latency_level(shipped, monkeypatch, capsys):
    """Before: the shipped files named no level, so another --latency followed them under
    a header naming that level (recorded at `low`: the demo model of 4b1ad30 makes them
    again there, decision for decision)."""
    recorded = json.loads(shipped.read_text())
    assert recorded["testset"] == shipped.name.split(".")[0].replace("-", ".", 1)
    assert recorded["latency"] == "low"
    monkeypatch.setattr(cli, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", str(shipped), "--latency", "high",
              "--testset", recorded["testset"]])  # fmt: skip
    assert exit_info.value.code == 2
    assert "recorded at --latency low, not at --latency high" in capsys.readouterr().err


def test_a_header_says_a_schedules_sentences_were_taken_again(recorded_schedule, tmp_path, capsys):
    """Before: "3 sentences of multi30k.de-en", of which the third was the first again."""
    main([
        "--model-path", str(DEMO_MODEL), "--schedule", str(recorded_schedule),
        "--limit", "3", "--num-beams", "1", "--streams", "1",
    ])  # fmt: skip
    header = (
        "3 sentences of multi30k.de-en (its first 2, taken again in turn), latency low, schedule:"
    )
    assert header in capsys.readouterr().out


def test_a_recorded_schedule_is_taken_again_in_turn(tmp_path):
    path = tmp_path / "schedule.json"
    path.write_text("[[[1, 2], [2, 3]], [[2, 4]], [[1, 1]]]")
    args = cli.bench_parser().parse_args(
        ["--model-path", "m", "--schedule", str(path), "--limit", "5"]
    )
    sentences, schedule = schedules.load_schedule(args, [["a"], ["b", "c"]])
    assert sentences == [["a"], ["b", "c"], ["a"], ["b", "c"], ["a"]]
    assert schedule == [[(1, 2), (2, 3)], [(2, 4)]] * 2 + [[(1, 2), (2, 3)]]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--model-path", "nowhere", "--schedule", "waitk:2"],
            "--save-schedule: not with --schedule, whose waitk:2 is followed",
        ),
        (
            ["--model-path", "nowhere", "--streams", "2"],
            "--save-schedule: not with --streams, which records no schedule",
        ),
        (
            ["--random-model", "llama3-tiny", "--tokenizer", "t.json", "--schedule", "waitk:2"],
            "--save-schedule: not with --random-model, which follows --schedule",
        ),
    ],
)
def test_a_schedule_save_that_would_record_nothing_is_refused(
    tmp_path, monkeypatch, capsys, flags, message
):
    """Before: the run went on and no schedule was written."""
    monkeypatch.setattr(cli, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    saved = tmp_path / "schedule.json"
    with pytest.raises(SystemExit) as exit_info:
        main([*flags, "--save-schedule", str(saved)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"east-bench: {message}\n"
    assert not saved.exists()


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ([[[50, 2]]], "sentence 0: a write after 50 units, and it has 9"),
        ([[[1, 2]], [[3, 1], [2, 1]]], "sentence 1: units read [3, 2]: not increasing"),
        ([[[2, 1], [2, 1]]], "sentence 0: units read [2, 2]: not increasing"),
        ([[[0, 2]]], "sentence 0: a write after 0 units (a unit is read first)"),
        ([[[1, 2]], []], "sentence 1: no write (a sentence writes at least once)"),
    ],
)
def test_a_schedule_its_sentences_cannot_follow_is_refused_before_the_model_loads(
    tmp_path, monkeypatch, capsys, schedule, message
):
    """Before: followed as far as it could be, (c) counting tokens (a) and (b) never wrote."""
    monkeypatch.setattr(cli, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({"testset": "multi30k.de-en", "schedule": schedule}))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", str(path), "--limit", "2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"east-bench: --schedule {path}: {message}\n"
