"""`east-prepare`: a test set's files written, and a grid's test set held while it is."""

import json
import shutil
from pathlib import Path

import pytest

from east_agent.evaluation.prepare import main
from east_agent.evaluation.testsets import read_prepared


@pytest.mark.parametrize("name", ["wmt22.zh-en", "wmt22.zh-en.talks50"])
def test_east_prepare_of_a_chinese_source_names_the_tokenizer_flag(tmp_path, capsys, name):
    with pytest.raises(SystemExit) as ended:
        main([name, "--output", str(tmp_path / "out")])
    assert ended.value.code == 2
    assert capsys.readouterr().err == (
        f"east-prepare: --tokenizer: {name}'s source is split into the checkpoint's token "
        "groups; name the checkpoint (--tokenizer models/EAST-8B)\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("inside", [False, True], ids=["a-file", "inside-a-file"])
def test_east_prepare_into_a_file_is_one_line(tmp_path, capsys, inside):
    (tmp_path / "afile").write_text("mine")
    output = tmp_path / "afile" / "sub" if inside else tmp_path / "afile"
    with pytest.raises(SystemExit) as ended:
        main(["multi30k.de-en", "--output", str(output)])
    assert ended.value.code == 2
    said = f"inside a file ({tmp_path / 'afile'} is a file, not a folder)"
    said = said if inside else "a file, not a folder"
    assert capsys.readouterr().err == f"east-prepare: --output {output}: {said}\n"


def test_east_prepare_names_a_bad_test_set_before_loading_a_tokenizer(tmp_path, capsys):
    """Before: the tokenizer was looked for first (a hub id: 50 s of retries offline), and
    the typo in the set's name never named."""
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(SystemExit) as ended:
        main(["wmt22.zh-em", "--output", str(tmp_path / "out"), "--tokenizer", str(missing)])
    assert ended.value.code == 2
    assert "east-prepare: unknown test set 'wmt22.zh-em'" in capsys.readouterr().err


def test_east_prepare_names_its_tokenizer_flag_for_a_checkpoint_that_is_not_there(tmp_path, capsys):
    """Before: "model path '...' does not exist", a flag east-prepare does not have."""
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(SystemExit) as ended:
        main(["wmt22.zh-en", "--output", str(tmp_path / "out"), "--tokenizer", str(missing)])
    assert ended.value.code == 2
    said = f"east-prepare: --tokenizer: model path {str(missing)!r} does not exist\n"
    assert capsys.readouterr().err == said
    assert not (tmp_path / "out").exists()


def test_east_prepare_leaves_a_folder_of_a_file_name_it_writes(tmp_path, capsys):
    """Before: a folder of the user's named `talks.json` (or `testset.json`) in --output
    was deleted with whatever it held, exit 0."""
    kept = tmp_path / "out" / "talks.json"
    kept.mkdir(parents=True)
    (kept / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit) as ended:
        main(["multi30k.de-en", "--output", str(tmp_path / "out")])
    assert ended.value.code == 2
    said = f"east-prepare: {kept} is a folder, not a file east-prepare writes"
    assert capsys.readouterr().err.startswith(said)
    assert (kept / "mine.txt").read_text() == "keep me"
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["talks.json"]


@pytest.mark.parametrize("fault", ["no record", "edited"])
def test_east_prepare_keeps_sentence_files_it_did_not_write(tmp_path, capsys, fault):
    """Before: a user's own source.txt, or one edited since it was prepared, was replaced
    with the test set's, exit 0. The files it wrote itself it prepares again."""
    output = tmp_path / "out"
    main(["multi30k.de-en", "--output", str(output)])
    main(["multi30k.de-fr", "--output", str(output)])  # its own files: replaced
    assert read_prepared(output).name == "multi30k.de-fr"
    if fault == "no record":
        (output / "testset.json").unlink()
        said = "source.txt there was not written by east-prepare (no testset.json beside it"
    else:
        said = "source.txt changed since east-prepare wrote it (testset.json holds"
    mine = (output / "source.txt").read_text() + "Ein eigener Satz .\n"
    (output / "source.txt").write_text(mine)
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        main(["multi30k.de-en", "--output", str(output)])
    assert ended.value.code == 2
    assert capsys.readouterr().err.startswith(f"east-prepare: --output {output}: {said}")
    assert (output / "source.txt").read_text() == mine


def test_east_prepare_into_a_link_to_nothing_is_one_line(tmp_path, capsys):
    """Before: a bare "[Errno 17] File exists"."""
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(SystemExit) as ended:
        main(["multi30k.de-en", "--output", str(tmp_path / "link" / "sub")])
    assert ended.value.code == 2
    assert capsys.readouterr().err == (
        f"east-prepare: --output {tmp_path / 'link' / 'sub'}: {tmp_path / 'link'} is a broken "
        f"link, to {tmp_path / 'gone'}, which is not there\n"
    )


def test_east_prepare_records_the_checkpoint_that_split_the_units(east_checkpoint, tmp_path):
    """A Chinese set prepared by hand is the grid's of that checkpoint (before: recorded
    by none, so a grid prepared it again, or, with runs there, refused it)."""
    import json

    from east_agent.evaluation.config import EvalConfig
    from east_agent.evaluation.grid import prepare
    from east_agent.evaluation.runs import model_setting

    folder = tmp_path / "out" / "testset"
    main(["wmt22.zh-en", "--output", str(folder), "--tokenizer", str(east_checkpoint)])
    recorded = json.loads((folder / "testset.json").read_text())
    assert recorded["units_split_by"] == model_setting(str(east_checkpoint))
    written = (folder / "source.txt").stat().st_mtime_ns
    config = EvalConfig(Path("g.yaml"), "wmt22.zh-en", str(east_checkpoint), tmp_path / "out", {})
    prepare(config)
    assert (folder / "source.txt").stat().st_mtime_ns == written  # taken as it is
    main(["wmt22.de-en", "--output", str(folder)])
    assert "units_split_by" not in json.loads((folder / "testset.json").read_text())
    # a set split at its spaces takes no tokenizer (before: loaded, 2.5 s, and unused)
    with pytest.raises(SystemExit) as refused:
        main(["wmt22.de-en", "--output", str(folder), "--tokenizer", str(east_checkpoint)])
    assert refused.value.code == 2


def test_east_prepare_into_a_running_grids_testset_is_refused(tmp_path, capsys):
    """A grid's `testset/` is held with the grid's folder (before: replaced under a running
    grid, found by its checks only at the grid's next run); an idle grid's is prepared."""
    from east_agent.common.run_lock import GRID_LOCK, hold_run_lock

    grid = tmp_path / "grid"
    with hold_run_lock(grid, GRID_LOCK):  # a grid running there
        with pytest.raises(SystemExit) as ended:
            main(["multi30k.de-en", "--output", str(grid / "testset")])
        assert ended.value.code == 2
        assert capsys.readouterr().err.startswith(f"east-prepare: {grid} is being written by ")
        assert not (grid / "testset").exists()
        main(["multi30k.de-en", "--output", str(tmp_path / "elsewhere")])  # not the grid's
    main(["multi30k.de-en", "--output", str(grid / "testset")])
    assert (grid / "testset" / "testset.json").is_file()
    with hold_run_lock(grid, GRID_LOCK):  # the grid's lock came back whole
        pass


def test_east_prepare_of_another_set_under_a_grids_runs_is_refused(tmp_path, capsys):
    """Before: multi30k.fr-en replaced the de-en set of a grid's finished runs, and the
    grid's next run was refused naming fr-en as the set its runs were made on."""
    from east_agent.common.run_lock import GRID_LOCK, hold_run_lock

    grid, testset = tmp_path / "grid", tmp_path / "grid" / "testset"
    main(["multi30k.de-en", "--output", str(testset)])
    with hold_run_lock(grid, GRID_LOCK):  # the lock file a grid leaves
        pass
    run = grid / "runs" / "east-low"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "scores.tsv").write_text("BLEU\n30.0\n")  # a finished run
    before = (testset / "source.txt").read_bytes()
    with pytest.raises(SystemExit) as ended:
        main(["multi30k.fr-en", "--output", str(testset)])
    assert ended.value.code == 2
    assert capsys.readouterr().err == (
        f"east-prepare: --output {testset}: the test set of the grid in {grid}, whose runs "
        "(east-low, ...) were made on multi30k.de-en: preparing multi30k.fr-en there would "
        "change what they read; prepare it into another folder\n"
    )
    assert read_prepared(testset).name == "multi30k.de-en"
    assert (testset / "source.txt").read_bytes() == before
    main(["multi30k.de-en", "--output", str(testset)])  # the runs' own set: prepared again
    (run / "scores.tsv").unlink()  # no run holds work: another set is the grid's to take
    main(["multi30k.fr-en", "--output", str(testset)])
    assert read_prepared(testset).name == "multi30k.fr-en"


def test_east_prepare_of_a_source_split_by_another_checkpoint_under_runs_is_refused(
    east_checkpoint, tmp_path, capsys
):
    """The same Chinese set split by another checkpoint's tokenizer is another set to the
    grid's runs (a copy of the checkpoint with another tokenizer file stands for one)."""
    from east_agent.common.run_lock import GRID_LOCK, hold_run_lock

    grid, testset = tmp_path / "grid", tmp_path / "grid" / "testset"
    main(["wmt22.zh-en", "--output", str(testset), "--tokenizer", str(east_checkpoint)])
    with hold_run_lock(grid, GRID_LOCK):
        pass
    run = grid / "runs" / "east-low"
    run.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "scores.tsv").write_text("BLEU\n30.0\n")
    other = tmp_path / "other"
    shutil.copytree(east_checkpoint, other)
    config = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 77}))
    with pytest.raises(SystemExit):
        main(["wmt22.zh-en", "--output", str(testset), "--tokenizer", str(other)])
    said = "preparing wmt22.zh-en split by another checkpoint there would change what they read"
    assert said in capsys.readouterr().err
    main(["wmt22.zh-en", "--output", str(testset), "--tokenizer", str(east_checkpoint)])


def test_east_prepare_names_a_misspelt_output_flag(tmp_path, capsys):
    """Before: `the following arguments are required: --output`, the flag the user gave
    (argparse checks the required flags first)."""
    with pytest.raises(SystemExit) as ended:
        main(["multi30k.de-en", "--outptu", str(tmp_path / "out")])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert f"error: unrecognized arguments: --outptu {tmp_path / 'out'} (--outptu: did you " in err
    assert "mean --output?)" in err and "required" not in err
