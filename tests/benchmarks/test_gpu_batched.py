"""The batched-streams device script (`benchmarks/gpu_batched.sh`), run small on a CPU:
the one GPU call it is written for must not be spent on a wrong flag or path."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMALL = {"DEVICE": "cpu", "RANDOM_MODEL": "llama3-tiny", "SENTENCES": "2",
         "EQUIVALENCE_SENTENCES": "2", "STREAMS": "2 4"}  # fmt: skip


def run_script(out: Path, **settings: str) -> subprocess.CompletedProcess:
    """The script as the device runs it (`python3` this interpreter), results in `out`."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, **SMALL, **settings, "OUT": str(out), "PATH": path,
           "SITE": str(out / "site")}  # fmt: skip
    return subprocess.run(
        ["bash", "benchmarks/gpu_batched.sh"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_the_device_script_runs_small_on_a_cpu(tmp_path):
    result = run_script(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "equivalence exit status 0" in result.stdout
    assert "east-bench exit status 0" in result.stdout
    tables = (tmp_path / "results.md").read_text()
    # the demo model in bfloat16, batched against sequential: each level and beam count
    assert "models/east-demo, bfloat16 on cpu, 2 Multi30k test sentences" in tables
    for level in ("low", "high"):
        for beams in (1, 5):
            assert f"\n| {level} | {beams} | " in tables
    # the streams benchmark on the random Llama-3 shape: sequential and 2 streams, both ways
    assert "random llama3-tiny, seed 0 (bfloat16" in tables and "wmt22.de-en" in tables
    for beams in (1, 5):
        assert f"\n| 1 (sequential) | {beams} | " in tables
        assert f"\n| 2 | {beams} | " in tables
    assert "\n| 4 | " not in tables  # more streams than SENTENCES: left out, not refused


def test_a_failing_part_fails_the_device_script(tmp_path):
    """Both parts run whatever the first did; the script's status is the first failure's."""
    result = run_script(tmp_path, EQUIVALENCE_SENTENCES="none")  # argparse: exit 2
    assert "equivalence exit status 2" in result.stdout
    assert "east-bench exit status 0" in result.stdout, result.stderr[-3000:]
    assert result.returncode == 2
    result = run_script(tmp_path, DEVICE="no-such-device", RANDOM_MODEL="no-such-shape")
    assert "equivalence exit status 2" in result.stdout  # before: 1, torch's traceback
    assert "batched_equivalence: --device: 'no-such-device' is not a device" in result.stderr
    assert "east-bench exit status 2" in result.stdout and result.returncode == 2
