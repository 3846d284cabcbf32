"""The demo model's card: what it says of the runs it tables."""

import argparse
import json
import os
import time

from training.demo_card import _table


def test_a_tables_minutes_count_a_killed_last_try_until_its_last_sentence(tmp_path):
    """As the grid's own `wall_seconds` column (before: the killed try's seconds, never
    written, read as 0: 1.0 min here for 6.0)."""
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.md").write_text("| system | BLEU |\n")
    run = tmp_path / "eval" / "runs" / "east-low"
    run.mkdir(parents=True)
    log = run / "instances.log"
    log.write_text("".join(json.dumps({"index": i, "prediction": "x"}) + "\n" for i in (0, 1)))
    killed = time.time() - 3600
    os.utime(log, (killed + 300, killed + 300))  # its last sentence, 300 s after it started
    tries = [
        {"started": killed - 100, "seconds": 60.0, "jobs": 1, "from_sentence": 0, "sentences": 1},
        {"started": killed, "seconds": None, "jobs": 1, "from_sentence": 1},
    ]
    (run / "wall_seconds.json").write_text(json.dumps({"seconds": 60.0, "tries": tries}))
    table = _table(argparse.Namespace(workdir=tmp_path), "eval")
    assert table.endswith("(6.0 min of SimulEval runs.)\n")
