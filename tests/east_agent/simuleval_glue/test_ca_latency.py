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


def logged_instance(run):
    return json.loads((run / "out" / "instances.log").read_text())


def hand_scores(instance, unit_seconds):
    """AL, LAAL, AP and DAL over CA delays d_j + elapsed_j / u, by their definitions, on
    the log's own timings (|X| = |Y| = 4: gamma = 1, and LAAL is AL)."""
    ca = [d + e / unit_seconds for d, e in zip(instance["delays"], instance["elapsed"])]
    tau = next((j for j, d in enumerate(ca, 1) if d >= 4), len(ca))
    al = sum(d - (j - 1) for j, d in enumerate(ca[:tau], 1)) / tau
    dal_delays = [ca[0]]
    for d in ca[1:]:
        dal_delays.append(max(d, dal_delays[-1] + 1))
    dal = sum(d - j for j, d in enumerate(dal_delays)) / len(ca)
    return {"AL_CA": al, "LAAL_CA": al, "AP_CA": sum(ca) / 16, "DAL_CA": dal}


def test_elapsed_is_the_time_since_the_first_source_unit(sleepy_run):
    instance = logged_instance(sleepy_run)
    assert instance["delays"] == [1, 2, 3, 4]
    # Word j comes back after j steps of 0.1 s each, and whatever else the machine did.
    for j, seconds in enumerate(instance["elapsed"], 1):
        assert 0.1 * j - 0.005 <= seconds < 0.1 * j + 0.3


def test_ca_scores_match_a_hand_computation(sleepy_run):
    """With steps of exactly 0.1 s: CA delays j + 0.1 j / 0.2 = 1.5, 3, 4.5, 6; AL's tau is
    3 (4.5 >= 4), AL = ((1.5 - 0) + (3 - 1) + (4.5 - 2)) / 3 = 2.0, AP = 15 / 16, DAL =
    (1.5 + 2 + 2.5 + 3) / 4 = 2.25; the machine's own delays are added from the log."""
    result = scores(sleepy_run / "out")
    assert result["AL"] == pytest.approx(1.0)
    expected = hand_scores(logged_instance(sleepy_run), 0.2)
    for metric, value in expected.items():
        assert result[metric] == pytest.approx(value, abs=0.01), metric
    assert expected["AL_CA"] >= 2.0 - 0.025  # the nominal at least: the timings count


def test_rescoring_with_another_unit_needs_no_decoding(sleepy_run):
    simuleval(
        "east-simuleval", "--score-only", "--output", sleepy_run / "out",
        "--ca-unit-seconds", "0.1", "--latency-metrics", "AL", "AL_CA",
    )  # fmt: skip
    # nominally CA delays j + j = 2, 4, 6, 8: tau = 2, ((2 - 0) + (4 - 1)) / 2 = 2.5
    expected = hand_scores(logged_instance(sleepy_run), 0.1)["AL_CA"]
    assert scores(sleepy_run / "out")["AL_CA"] == pytest.approx(expected, abs=0.01)


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
