"""One run of a grid: the flags of its SimulEval command, the record of its folder, the
time of its tries."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from east_agent.common.entry import CommandError
from east_agent.evaluation.config import EvalConfig, EvalConfigError, Run
from east_agent.evaluation.runs import (
    RUN_RECORD,
    claim_run_folder,
    command_flags,
    model_setting,
    record_differences,
    run_record,
    run_simuleval,
)
from east_agent.evaluation.shards import merged_run_record
from east_agent.evaluation.testsets import PreparedTestset


def test_command_flags_keep_zero_and_drop_only_false_and_none():
    flags = {"context_words": 0, "long_form": True, "document_level": False, "cache_budget": None}
    assert command_flags(flags) == ["--context-words", "0", "--long-form"]


def test_a_gold_sentence_run_is_recorded_apart_from_a_streaming_one():
    config = EvalConfig(Path("grid.yaml"), "multi30k.de-en.talks50", "m", Path("out"), {})
    testset = PreparedTestset("multi30k.de-en.talks50", Path("s"), Path("r"), "German",
                              "English", 20, "word", "13a")  # fmt: skip
    streaming = Run("east-low", "east", "low", "east", {"latency": "low", "long_form": True})
    gold = Run("east-gold-low", "east-gold", "low", "east", {"latency": "low"}, True)
    streaming_record = run_record(config, streaming, testset, (0, 20), "m")
    gold_record = run_record(config, gold, testset, (0, 1000), "m")
    assert "gold_sentences" not in streaming_record
    assert gold_record["gold_sentences"] is True
    assert gold_record["sentences"] == [0, 1000]


def test_a_num_beams_left_empty_is_the_default():
    config = EvalConfig(Path("grid.yaml"), "multi30k.de-en", "m", Path("out"), {})
    testset = PreparedTestset("multi30k.de-en", Path("s"), Path("r"), "German", "English",
                              20, "word", "13a")  # fmt: skip
    run = Run("east-low", "east", "low", "east", {"latency": "low", "num_beams": None})
    assert "beam_stop" not in run_record(config, run, testset, (0, 20), "m")["flags"]
    assert command_flags(run.flags) == ["--latency", "low"]  # the agent's default: 1 beam


def test_a_flag_written_at_its_default_is_the_same_run():
    """Before: a folder made with `num_beams: 1` (or `max_new_tokens: "128"`) written out
    was refused as another run once the config left it out; the beam search's rule is
    still told by its absence (runs of the older rule)."""
    plain = {"model_path": "m", "testset": "multi30k.de-en", "agent": "east",
             "flags": {"latency": "low"}, "sentences": [0, 3]}  # fmt: skip
    spelled = {**plain, "flags": {"latency": "low", "num_beams": 1, "kv_cache": "auto"}}
    assert record_differences(spelled, plain) == record_differences(plain, spelled) == []
    typed = {**plain, "flags": {"latency": "low", "max_new_tokens": "128"}}
    assert record_differences(typed, plain) == []
    other = {**plain, "flags": {"latency": "low", "num_beams": 2}}
    assert record_differences(other, plain) == ["flags {'latency': 'low', 'num_beams': 2} "
                                                "(now {'latency': 'low'})"]  # fmt: skip
    beams = {**plain, "flags": {"latency": "low", "num_beams": 5}}
    rule = {**plain, "flags": {"latency": "low", "num_beams": 5, "beam_stop": "reference"}}
    assert record_differences(beams, rule) != []


def model_folder(path: Path, config: str = '{"hidden_size": 8}') -> Path:
    """A stand-in checkpoint: the fingerprint reads files, never loads them."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(config)
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    return path


def grid_record(checkpoint, latency: str = "low") -> dict:
    return {"model_path": checkpoint, "testset": "multi30k.de-en", "agent": "east",
            "flags": {"latency": latency}, "sentences": [0, 3]}  # fmt: skip


def test_a_grid_run_knows_its_checkpoint_by_fingerprint_wherever_it_is(tmp_path):
    first = model_folder(tmp_path / "first")
    run_dir = tmp_path / "runs" / "east-low"
    claim_run_folder(run_dir, grid_record(model_setting(str(first))))
    saved = json.loads((run_dir / RUN_RECORD).read_text())
    assert saved["model_path"]["folder"] == str(first.resolve())
    # the checkpoint moved: the run is the same one, and its record says where it is now
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    shutil.rmtree(first)
    claim_run_folder(run_dir, grid_record(model_setting(str(moved))))
    saved_after_move = json.loads((run_dir / RUN_RECORD).read_text())
    assert saved_after_move["model_path"] == {**saved["model_path"], "folder": str(moved)}
    # another checkpoint at the same place: refused (the folder holds a sentence of the
    # first), both fingerprints named
    (run_dir / "instances.log").write_text('{"index": 0}\n')
    (moved / "config.json").write_text('{"hidden_size": 9}')
    other = model_setting(str(moved))
    with pytest.raises(EvalConfigError) as refused:
        claim_run_folder(run_dir, grid_record(other))
    message = str(refused.value)
    assert f"{run_dir} holds a run made with model_path" in message
    assert saved["model_path"]["sha256"][:12] in message and other["sha256"][:12] in message
    assert json.loads((run_dir / RUN_RECORD).read_text()) == saved_after_move


def test_a_grid_record_naming_its_checkpoint_by_path_is_taken_from_where_it_was_run(
    tmp_path, monkeypatch
):
    """Records written before checkpoints had fingerprints name the --model-path given."""
    monkeypatch.chdir(tmp_path)
    model_folder(tmp_path / "models" / "demo")
    model_folder(tmp_path / "models" / "other", '{"hidden_size": 9}')
    run_dir = tmp_path / "runs" / "east-low"
    run_dir.mkdir(parents=True)
    (run_dir / RUN_RECORD).write_text(json.dumps(grid_record("models/demo")))
    (run_dir / "instances.log").write_text('{"index": 0}\n')  # a sentence of that run
    with pytest.raises(EvalConfigError, match="model_path 'models/demo'"):
        claim_run_folder(run_dir, grid_record(model_setting("models/other")))
    with pytest.raises(EvalConfigError, match="flags"):
        claim_run_folder(run_dir, grid_record(model_setting("models/demo"), "high"))
    claim_run_folder(run_dir, grid_record(model_setting("models/demo")))
    upgraded = json.loads((run_dir / RUN_RECORD).read_text())["model_path"]
    assert upgraded == model_setting(str(tmp_path / "models" / "demo"))


def test_a_grid_run_knows_its_adapter_by_content(tmp_path, monkeypatch):
    """Before: by its path, so a finished run was skipped and tabled after the adapter in
    that folder was replaced (BLEU 38.2 shown for an adapter that scores 0.3)."""
    monkeypatch.chdir(tmp_path)
    config = EvalConfig(Path("grid.yaml"), "multi30k.de-en", "m", Path("out"), {})
    testset = PreparedTestset("multi30k.de-en", Path("s"), Path("r"), "German", "English",
                              20, "word", "13a")  # fmt: skip
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"A" * 64)
    run = Run("east-low", "east", "low", "east", {"latency": "low", "adapter_path": "adapter"})
    first = run_record(config, run, testset, (0, 20), "m")
    assert first["flags"]["adapter_path"]["folder"] == str(adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"B" * 64)  # another adapter there
    differences = record_differences(first, run_record(config, run, testset, (0, 20), "m"))
    assert len(differences) == 1 and differences[0].startswith("flags ")
    # a record written before adapters had fingerprints names it by path: compared from here
    old = {**first, "flags": {**first["flags"], "adapter_path": "adapter"}}
    now = run_record(config, run, testset, (0, 20), "m")
    assert record_differences(old, now) == []
    # moved (the project re-mounted elsewhere), the same adapter: the same run
    shutil.move(adapter, tmp_path / "moved")
    moved = Run("east-low", "east", "low", "east", {"latency": "low", "adapter_path": "moved"})
    assert record_differences(now, run_record(config, moved, testset, (0, 20), "m")) == []


def test_a_hub_name_is_recorded_as_given():
    assert model_setting("someone/EAST-8B") == "someone/EAST-8B"
    assert record_differences(grid_record("someone/EAST-8B"), grid_record("someone/EAST-8B")) == []


def test_shards_run_from_copies_of_one_checkpoint_merge_and_other_flags_do_not(tmp_path):
    one = model_setting(str(model_folder(tmp_path / "one")))
    copy = model_setting(str(model_folder(tmp_path / "copy")))
    assert one["sha256"] == copy["sha256"] and one["folder"] != copy["folder"]
    shards = []
    for number, (checkpoint, span) in enumerate([(one, [0, 2]), (copy, [2, 3])], 1):
        shard = tmp_path / "shards" / f"{number}-of-2"
        claim_run_folder(shard, {**grid_record(checkpoint), "sentences": span})
        shards.append(shard)
    assert merged_run_record(shards)["sentences"] == [0, 3]
    claim_run_folder(shards[1], {**grid_record(copy), "sentences": [2, 3]})
    (shards[1] / RUN_RECORD).write_text(json.dumps(grid_record(copy, "high")))
    with pytest.raises(RuntimeError, match="other settings than .*flags"):
        merged_run_record(shards)


@pytest.mark.parametrize("spans", [([0, 4], [20, 40]), ([0, 4], [3, 6])], ids=["gap", "overlap"])
def test_shards_cut_from_different_spans_are_refused(tmp_path, spans):
    """Shards of one run cut for different --limit values would merge into a run with a
    hole (or sentences twice), scored as whole."""
    shards = []
    for number, span in enumerate(spans, 1):
        shard = tmp_path / "shards" / f"{number}-of-2"
        claim_run_folder(shard, {**grid_record("someone/EAST-8B"), "sentences": span})
        shards.append(shard)
    with pytest.raises(RuntimeError, match="1-of-2 holds sentences 0..3 but .*2-of-2 starts"):
        merged_run_record(shards)


def test_a_checkpoint_gone_since_its_runs_finished_keeps_its_fingerprint(tmp_path):
    """The grid is summed up again without the checkpoint: its runs are taken as they are,
    and a record is never rewritten to lose the fingerprint, so another checkpoint put at
    the same place later is still refused."""
    folder = model_folder(tmp_path / "demo")
    run_dir = tmp_path / "runs" / "east-low"
    claim_run_folder(run_dir, grid_record(model_setting(str(folder))))
    (run_dir / "scores.tsv").write_text("BLEU\n1.0\n")  # the run finished
    saved = json.loads((run_dir / RUN_RECORD).read_text())
    shutil.rmtree(folder)
    assert model_setting(str(folder)) == str(folder.resolve())
    claim_run_folder(run_dir, grid_record(model_setting(str(folder))))
    assert json.loads((run_dir / RUN_RECORD).read_text()) == saved
    model_folder(folder, '{"hidden_size": 9}')
    with pytest.raises(EvalConfigError, match="model_path"):
        claim_run_folder(run_dir, grid_record(model_setting(str(folder))))


def test_records_by_path_compare_from_here_checkpoint_there_or_not(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "east-low"
    run_dir.mkdir(parents=True)
    (run_dir / RUN_RECORD).write_text(json.dumps(grid_record("models/demo")))
    claim_run_folder(run_dir, grid_record(model_setting("models/demo")))  # not there
    # shards written before fingerprints, one resumed since: they merge
    model_folder(tmp_path / "models" / "demo")
    shards = [tmp_path / "shards" / "1-of-2", tmp_path / "shards" / "2-of-2"]
    old = {**grid_record("models/demo"), "sentences": [0, 2]}
    for shard, record in zip(shards, [old, {**old, "sentences": [2, 3]}]):
        shard.mkdir(parents=True)
        (shard / RUN_RECORD).write_text(json.dumps(record))
    assert merged_run_record(shards)["sentences"] == [0, 3]
    resumed = {**grid_record(model_setting("models/demo")), "sentences": [2, 3]}
    (shards[1] / RUN_RECORD).write_text(json.dumps(resumed))
    assert merged_run_record(shards)["sentences"] == [0, 3]


def test_a_key_only_the_folder_has_is_a_difference(tmp_path):
    """A folder of the talks' gold sentences is not a streaming run's."""
    run_dir = tmp_path / "runs" / "east-low"
    claim_run_folder(run_dir, {**grid_record("someone/EAST-8B"), "gold_sentences": True})
    (run_dir / "instances.log").write_text('{"index": 0}\n')  # a sentence of that run
    with pytest.raises(EvalConfigError, match="gold_sentences True"):
        claim_run_folder(run_dir, grid_record("someone/EAST-8B"))


def test_a_folder_whose_run_translated_nothing_is_taken_by_the_corrected_run(tmp_path):
    """A run that failed before its first sentence (a bad flag, a missing checkpoint) left
    its record and its try; the corrected grid was refused the folder until it was deleted."""
    run_dir = tmp_path / "runs" / "east-low"
    bad = {**grid_record("someone/EAST-8B"), "flags": {"torch_dtype": "float64"}}
    claim_run_folder(run_dir, bad)
    (run_dir / "wall_seconds.json").write_text('{"seconds": 1.0, "tries": []}')
    (run_dir / "instances.log").write_text("")
    claim_run_folder(run_dir, grid_record("someone/EAST-8B"))
    assert json.loads((run_dir / RUN_RECORD).read_text()) == grid_record("someone/EAST-8B")
    assert not (run_dir / "wall_seconds.json").exists()
    (run_dir / "scores.tsv").write_text("BLEU\n1.0\n")  # scores: a run made of the record
    with pytest.raises(EvalConfigError, match="holds a run made with"):
        claim_run_folder(run_dir, bad)


def test_a_try_that_fails_counts_up_to_its_last_finished_sentence(tmp_path):
    """What a failed (or interrupted) try had not finished is translated again, and timed,
    by the next try: the failed one counts until it last wrote its log, as a killed one."""
    log = tmp_path / "instances.log"
    writes_then_fails = (
        "import sys, time; "
        f"open({str(log)!r}, 'a').write('{{}}\\n'); "  # a sentence finished
        "time.sleep(1); sys.exit(3)"  # work after it, lost
    )
    with pytest.raises(CommandError, match="failed \\(exit 3\\)"):
        run_simuleval([sys.executable, "-c", writes_then_fails], tmp_path)
    [failed] = json.loads((tmp_path / "wall_seconds.json").read_text())["tries"]
    # the second after the last sentence is not counted
    assert failed["seconds"] == round(log.stat().st_mtime - failed["started"], 2)


def test_the_jobs_column_leaves_out_a_try_that_translated_nothing(tmp_path):
    """Before: a try that failed before its first sentence, beside another run, made the
    table say the run shared the machine (`jobs` 2) though it ran alone."""
    from east_agent.evaluation.reports import timing_cells

    log = tmp_path / "instances.log"
    with pytest.raises(CommandError, match="failed \\(exit 3\\)"):
        run_simuleval([sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path, jobs=2)
    writes = f"open({str(log)!r}, 'a').write({json.dumps({'index': 0}) + chr(10)!r})"
    run_simuleval([sys.executable, "-c", writes], tmp_path, jobs=1)
    tries = json.loads((tmp_path / "wall_seconds.json").read_text())["tries"]
    assert [(t["jobs"], t["from_sentence"], t["sentences"]) for t in tries] == [
        (2, 0, 0),
        (1, 0, 1),
    ]
    assert timing_cells(tmp_path)["jobs"] == 1


def test_a_runs_seconds_settle_a_killed_try_and_leave_out_one_that_translated_nothing(
    tmp_path,
):
    """Before: a run killed once its scores were written was tabled at 0.00 s (its try's
    end never settled, as it was not run again); a try that only scored a finished log
    added its start-up and scoring."""
    import os

    from east_agent.evaluation.reports import timing_cells
    from east_agent.evaluation.runs import write_tries

    log = tmp_path / "instances.log"
    log.write_text('{"index": 0}\n{"index": 1}\n')
    os.utime(log, (1000.0, 1000.0))  # the killed try last wrote its log 7.5 s in
    killed = {"started": 992.5, "seconds": None, "jobs": 1, "from_sentence": 0}
    write_tries(tmp_path / "wall_seconds.json", [killed])
    assert json.loads((tmp_path / "wall_seconds.json").read_text())["seconds"] == 0.0
    assert timing_cells(tmp_path)["wall_seconds"] == "7.50"
    scored = {"started": 2000.0, "seconds": 4.2, "jobs": 1, "from_sentence": 2, "sentences": 0}
    write_tries(tmp_path / "wall_seconds.json", [killed, scored])
    assert timing_cells(tmp_path)["wall_seconds"] == "7.50"


def test_a_batched_runs_time_leaves_out_the_checkpoint_load(east_checkpoint, tmp_path, monkeypatch):
    """Before: the first run of each process counted the checkpoint's load (minutes for an
    8B model) in its `wall_seconds`; the others, that share the load, did not."""
    import time

    from commands import AGENT_FILE, write_toy_test_set

    import east_agent.agent
    from east_agent.evaluation.runs import LoadedModels

    load, loaded_at = east_agent.agent.load_east, []

    def timed_load(*args):
        loaded = load(*args)
        loaded_at.append(time.time())
        return loaded

    monkeypatch.setattr(east_agent.agent, "load_east", timed_load)
    write_toy_test_set(tmp_path, 2, seed=5)
    models = LoadedModels()
    for name in ("first", "second"):
        command = [
            "simuleval", "--agent", str(AGENT_FILE), "--model-path", str(east_checkpoint),
            "--src-lang", "de", "--tgt-lang", "en", "--latency", "low",
            "--source", str(tmp_path / "src.txt"), "--target", str(tmp_path / "ref.txt"),
            "--latency-metrics", "AL", "--output", str(tmp_path / name), "--batch-size", "2",
        ]  # fmt: skip
        run_simuleval(command, tmp_path / name, models)
    assert len(loaded_at) == 1  # once for both runs
    first_try = json.loads((tmp_path / "first" / "wall_seconds.json").read_text())["tries"][0]
    assert first_try["started"] >= loaded_at[0]  # the clock started after the load


def test_sentences_set_aside_for_simulevals_loop_are_work_a_grid_resumes(tmp_path):
    """A `--batch-size 1` resume that kept no sentence before the first missing one has
    them all set aside; SIGKILLed there, its folder still holds work (before: taken as
    empty, run afresh, and the sentences deleted with the set-aside file)."""
    from east_agent.evaluation.runs import finished_lines, holds_work
    from east_agent.simuleval_glue.run_folder import SET_ASIDE

    log = tmp_path / "instances.log"
    log.write_text("")
    assert not holds_work(tmp_path)
    (tmp_path / SET_ASIDE).write_text('{"index": 3, "prediction": "s3"}\n')
    assert holds_work(tmp_path) and finished_lines(log) == 1
    # a try that translated sentence 3 again counts it once (its timing's sentence count)
    log.write_text('{"index": 3, "prediction": "s3 again"}\n{"index": 4, "prediction": "s4"}\n')
    assert finished_lines(log) == 2
