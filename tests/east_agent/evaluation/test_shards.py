"""Joining a run's shards (`east_agent.evaluation.shards`); whole sharded grids are run in
`test_grid.py`."""

import json

import pytest

from east_agent.common.entry import CommandError
from east_agent.evaluation.shards import (
    check_shards_agree,
    merge_batch_records,
    merge_settings_records,
    shard_range,
)
from east_agent.simuleval_glue.run_folder import BATCH_RECORD, SETTINGS_RECORD


def write_records(tmp_path, *records):
    folders = []
    for number, record in enumerate(records, 1):
        folder = tmp_path / f"{number}-of-{len(records)}"
        folder.mkdir()
        (folder / SETTINGS_RECORD).write_text(json.dumps(record))
        folders.append(folder)
    return folders


SOURCE = {"file": "/grid/testset/source.txt", "sha256": "ab" * 32}


@pytest.mark.parametrize(
    "old",
    [{"source": "/grid/testset/source.txt"}, {"source": {**SOURCE, "file": "/copy/source.txt"}}],
    ids=["recorded-by-path", "moved"],
)
def test_shards_whose_settings_agree_give_the_run_the_record_by_content(tmp_path, old):
    """A shard written before data files were known by content (its source by path), or
    run from a copy of the test set elsewhere, agrees with one resumed since."""
    shards = write_records(
        tmp_path, {"latency": "low", **old}, {"latency": "low", "source": SOURCE}
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    merge_settings_records(shards, run_dir)
    assert json.loads((run_dir / SETTINGS_RECORD).read_text())["source"]["sha256"] == "ab" * 32


def test_merged_shards_record_the_span_of_them_all(tmp_path):
    """Each shard records its own sentences; the merged run covers all of them (so that
    `--score-only` of the merged log asks for every shard's), or none where a shard's
    record is from before spans were kept."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    spans = ([0, 34], [34, 67], [67, 100])
    shards = write_records(tmp_path, *({"latency": "low", "span": span} for span in spans))
    merge_settings_records(shards, run_dir)
    assert json.loads((run_dir / SETTINGS_RECORD).read_text()) == {
        "latency": "low",
        "span": [0, 100],
    }
    (tmp_path / "older").mkdir()
    older = write_records(
        tmp_path / "older", {"latency": "low", "span": [0, 50]}, {"latency": "low"}
    )
    merge_settings_records(older, run_dir)
    assert json.loads((run_dir / SETTINGS_RECORD).read_text()) == {"latency": "low"}


@pytest.mark.parametrize(
    "records",
    [
        [{"source": SOURCE}, {"source": {**SOURCE, "sha256": "cd" * 32}}],
        # a path cannot vouch for two contents, wherever it stands
        [{"source": SOURCE}, {"source": {**SOURCE, "sha256": "cd" * 32}},
         {"source": "/grid/testset/source.txt"}],
        [{"source": "/grid/testset/source.txt"}, {"source": {**SOURCE, "file": "/copy/x"}}],
    ],
    ids=["changed-file", "changed-file-behind-a-path", "path-against-a-copy"],
)  # fmt: skip
def test_shards_whose_settings_differ_leave_the_run_without_a_record(tmp_path, records):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / SETTINGS_RECORD).write_text("{}")  # an earlier merge's
    merge_settings_records(write_records(tmp_path, *records), run_dir)
    assert not (run_dir / SETTINGS_RECORD).exists()


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--merge-shards", "0"], "--merge-shards: takes a whole number of at least 1, got '0'"),
        (["--merge-shards", "-1"], "--merge-shards: takes a whole number of at least 1"),
        (["--merge-shards", "2", "--dry-run"], "use it without --dry-run or --shard"),
        (["--merge-shards", "2", "--shard", "1/2"], "use it without --dry-run or --shard"),
        (["--shard", "3/2"], "--shard 3/2: the shard number must be 1..2"),
        (["--shard", "0/2"], "--shard 0/2: the shard number must be 1..2"),
        (["--shard", "1/0"], "--shard 1/0: N must be at least 1"),
    ],
)
def test_shard_flags_that_cannot_work_are_refused_before_the_config_is_read(
    tmp_path, capsys, arguments, message
):
    from east_agent.evaluation.cli import main

    with pytest.raises(SystemExit) as ended:
        main([str(tmp_path / "missing.yaml"), *arguments])
    assert ended.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("sentences", [1, 2, 5, 7, 10, 1000])
@pytest.mark.parametrize("count", [1, 3, 4, 8])
def test_shards_cover_the_sentences_once_in_spans_within_them(sentences, count):
    """Spans a data file takes (0 <= start <= end <= sentences), empty for a shard past
    the end of a short test set (5 sentences in 4 shards gave (6, 5) before)."""
    spans = [shard_range((index, count), sentences) for index in range(1, count + 1)]
    assert all(0 <= start <= end <= sentences for start, end in spans)
    assert [i for start, end in spans for i in range(start, end)] == list(range(sentences))


def test_merged_shards_say_the_most_streams_and_all_that_the_shards_shared(tmp_path):
    folders = []
    for number, record in enumerate(
        [
            {"batch_size": 64, "streams": 40, "sharing": ["the device"]},
            None,  # SimulEval's own loop: no record
            {"batch_size": 8, "streams": 8, "sharing": ["the server"]},
        ]
    ):
        folders.append(tmp_path / f"shard-{number}")
        folders[-1].mkdir()
        if record is not None:
            (folders[-1] / BATCH_RECORD).write_text(json.dumps(record))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    merge_batch_records(folders, run_dir)
    merged = json.loads((run_dir / BATCH_RECORD).read_text())
    assert (merged["streams"], merged["sharing"]) == (40, ["the device", "the server"])
    merge_batch_records(folders[1:2], run_dir)
    assert not (run_dir / BATCH_RECORD).exists()


def test_a_shard_translated_with_other_settings_is_refused_before_any_merge(tmp_path):
    """A shard's line run again by hand with another latency into its folder: before,
    merged into the grid's run (the merged record dropped for the disagreement), exit 0."""
    shards = write_records(
        tmp_path, {"latency": "low", "source": SOURCE}, {"latency": "medium", "source": SOURCE}
    )
    with pytest.raises(CommandError) as refused:
        check_shards_agree(shards)
    assert str(refused.value) == (
        f"{shards[1] / 'instances.log'} was written with other settings than "
        f"{shards[0] / 'instances.log'} (latency: 'medium' against 'low'; nothing merged): "
        "delete the shard made otherwise, and `east-eval CONFIG --shard I/N --only RUN` "
        "makes it again"
    )
    # an older shard's data file by path, against one by content: not comparable, merged
    (tmp_path / "older").mkdir()
    older = [{"source": "/grid/testset/source.txt"}, {"source": {**SOURCE, "file": "/copy/x"}}]
    check_shards_agree(write_records(tmp_path / "older", *older))
