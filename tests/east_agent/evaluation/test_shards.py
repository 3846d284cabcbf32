"""Joining a run's shards (`east_agent.evaluation.shards`); whole sharded grids are run in
`test_grid.py`."""

import json

from east_agent.evaluation.shards import merge_settings_records
from east_agent.simuleval_glue.run_folder import SETTINGS_RECORD


def write_records(tmp_path, *records):
    folders = []
    for number, record in enumerate(records, 1):
        folder = tmp_path / f"{number}-of-{len(records)}"
        folder.mkdir()
        (folder / SETTINGS_RECORD).write_text(json.dumps(record))
        folders.append(folder)
    return folders


def test_shards_whose_settings_agree_give_the_run_their_record(tmp_path):
    """A shard resumed since data files are known by content, one written before (its
    source by path) and one run from a copy of the test set elsewhere all agree."""
    source = {"file": "/grid/testset/source.txt", "sha256": "ab" * 32}
    moved = {"file": "/elsewhere/testset/source.txt", "sha256": "ab" * 32}
    shards = write_records(
        tmp_path,
        {"latency": "low", "source": "/grid/testset/source.txt"},
        {"latency": "low", "source": moved},
        {"latency": "low", "source": source},
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    merge_settings_records(shards, run_dir)
    assert json.loads((run_dir / SETTINGS_RECORD).read_text())["source"] == source


def test_shards_whose_settings_differ_leave_the_run_without_a_record(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / SETTINGS_RECORD).write_text("{}")  # an earlier merge's
    changed = {"file": "/grid/testset/source.txt", "sha256": "cd" * 32}
    source = {"file": "/grid/testset/source.txt", "sha256": "ab" * 32}
    shards = write_records(tmp_path, {"source": source}, {"source": changed})
    merge_settings_records(shards, run_dir)
    assert not (run_dir / SETTINGS_RECORD).exists()
