"""Who writes a run folder and what a resumed run starts from (`run_folder`)."""

from __future__ import annotations

import argparse
import json

import pytest

from east_agent.simuleval_glue import run_folder
from east_agent.simuleval_glue.run_folder import resume_in_index_order, writing


def write_log(path, indices):
    records = [{"index": index, "prediction": f"s{index}"} for index in indices]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def logged(path):
    return [json.loads(line)["index"] for line in path.read_text().splitlines()]


def test_simulevals_resume_gets_a_log_in_index_order(tmp_path, capsys):
    log = tmp_path / "instances.log"
    write_log(log, [4, 1, 0])
    assert not resume_in_index_order(log, 0, 7)
    assert logged(log) == [0, 1] and "1 finished later than sentence 2" in capsys.readouterr().out
    write_log(log, [2, 0, 1])
    assert resume_in_index_order(log, 0, 3) and logged(log) == [0, 1, 2]
    write_log(log, [])
    assert not resume_in_index_order(log, 0, 0)  # an empty span is never "complete"


@pytest.mark.parametrize("start, end", [(3, 6), (0, 2)])
def test_a_log_reaching_outside_the_span_is_refused_untouched(tmp_path, start, end):
    log = tmp_path / "instances.log"
    write_log(log, range(4))
    before = log.read_text()
    with pytest.raises(ValueError, match="holds sentences outside --start-index"):
        resume_in_index_order(log, start, end)
    assert log.read_text() == before


class Agent:
    pass


def test_settings_are_recorded_with_a_fresh_log_and_checked_on_resume(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    write_log(output / "instances.log", [0, 1])
    flags = argparse.Namespace(latency="low", device="cpu", source=str(tmp_path), output="o")
    settings = run_folder.translation_settings(Agent, flags)
    # the class by its name: SimulEval imports an agent file as `agents`, a grid by package
    assert settings == {"agent_class": "Agent", "latency": "low", "source": str(tmp_path.resolve())}
    with writing(output, settings, resume=False, run=True):
        assert (output / "instances.log").read_text() == ""  # the old log goes with its settings
    write_log(output / "instances.log", [0])
    other = {**settings, "latency": "high"}
    with pytest.raises(ValueError, match="latency: 'low' there, 'high' now"):
        with writing(output, other, resume=True, run=True):
            pass
    with writing(output, None, resume=True, run=True):  # settings unknown here: no record
        pass
    assert not (output / run_folder.SETTINGS_RECORD).exists()
    with writing(output, other, resume=True, run=True):
        pass
    assert logged(output / "instances.log") == [0]


@pytest.mark.parametrize("dataloader", [[], ["--dataloader", "text-to-text"]])
def test_simulevals_text_reader_gets_its_files_checked_and_its_span(tmp_path, dataloader):
    from east_agent.simuleval_glue.cli import _check_data_files

    source = tmp_path / "src.txt"
    source.write_text("a\nb\nc\n")
    assert _check_data_files(["--source", str(source), "--end-index", "2", *dataloader]) == (0, 2)
    assert _check_data_files(["--source", str(source), "--dataloader", "speech-to-text"]) is None
