"""Computation-aware latency for text, checked against a hand computation."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from east_agent.simuleval_glue.ca_latency import computation_aware_delays

SLEEPY_AGENT = Path(__file__).with_name("sleepy_agent.py")
PLUGIN = Path(__file__).resolve().parents[3] / "east_agent" / "simuleval_plugin"


def simuleval(command, *arguments):
    script = str(Path(sys.executable).with_name(command))
    result = subprocess.run(
        [script, *map(str, arguments)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def scores(folder):
    header, values = (folder / "scores.tsv").read_text().splitlines()
    return {key: float(value) for key, value in zip(header.split("\t"), values.split("\t"))}


@pytest.fixture(scope="module")
def sleepy_run(tmp_path_factory):
    """Wait-1 copy of "a b c d", sleeping 0.1 s per step, CA unit 0.2 s per source word."""
    folder = tmp_path_factory.mktemp("ca")
    (folder / "src.txt").write_text("a b c d\n")
    (folder / "ref.txt").write_text("a b c d\n")
    simuleval(
        "east-simuleval", "--agent", SLEEPY_AGENT, "--sleep", "0.1",
        "--source", folder / "src.txt", "--target", folder / "ref.txt",
        "--output", folder / "out", "--ca-unit-seconds", "0.2",
        "--latency-metrics", "AL", "LAAL", "AL_CA", "LAAL_CA", "AP_CA", "DAL_CA",
    )  # fmt: skip
    return folder


def test_elapsed_is_the_time_since_the_first_source_unit(sleepy_run):
    instance = json.loads((sleepy_run / "out" / "instances.log").read_text())
    assert instance["delays"] == [1, 2, 3, 4]
    # Word j comes back after j steps of 0.1 s each.
    for j, seconds in enumerate(instance["elapsed"], 1):
        assert seconds == pytest.approx(0.1 * j, abs=0.03)


def test_ca_scores_match_a_hand_computation(sleepy_run):
    result = scores(sleepy_run / "out")
    # CA delays d_j + elapsed_j / u = j + 0.1 j / 0.2 = 1.5, 3, 4.5, 6 (|X| = |Y| = 4).
    # AL: tau = 3 (4.5 >= 4): ((1.5 - 0) + (3 - 1) + (4.5 - 2)) / 3 = 2.0; LAAL the same.
    assert result["AL"] == pytest.approx(1.0)
    assert result["AL_CA"] == pytest.approx(2.0, abs=0.1)
    assert result["LAAL_CA"] == pytest.approx(2.0, abs=0.1)
    # AP: sum(delays) / (|X| |Y|) = 15 / 16; DAL: delays already 1.5 apart, (1.5+2+2.5+3)/4.
    assert result["AP_CA"] == pytest.approx(15 / 16, abs=0.05)
    assert result["DAL_CA"] == pytest.approx(2.25, abs=0.1)


def test_rescoring_with_another_unit_needs_no_decoding(sleepy_run):
    simuleval(
        "east-simuleval", "--score-only", "--output", sleepy_run / "out",
        "--ca-unit-seconds", "0.1", "--latency-metrics", "AL", "AL_CA",
    )  # fmt: skip
    # CA delays j + j = 2, 4, 6, 8: tau = 2, ((2 - 0) + (4 - 1)) / 2 = 2.5.
    assert scores(sleepy_run / "out")["AL_CA"] == pytest.approx(2.5, abs=0.15)


def test_stock_simuleval_with_the_user_dir_plugin(tmp_path):
    (tmp_path / "src.txt").write_text("a b c\n")
    (tmp_path / "ref.txt").write_text("a b c\n")
    simuleval(
        "simuleval", "--user-dir", PLUGIN, "--agent", SLEEPY_AGENT, "--sleep", "0.05",
        "--source", tmp_path / "src.txt", "--target", tmp_path / "ref.txt",
        "--output", tmp_path / "out", "--latency-metrics", "AL", "AL_CA",
    )  # fmt: skip
    result = scores(tmp_path / "out")
    assert result["AL_CA"] > result["AL"] == pytest.approx(1.0)


def test_computation_aware_delays_formula():
    assert computation_aware_delays([1, 2], [0.4, 1.2], 0.4) == [2.0, 5.0]
