"""Who writes a run folder and what a resumed run starts from (`run_folder`)."""

from __future__ import annotations

import argparse
import json
import random

import pytest

from east_agent.common import fingerprint
from east_agent.simuleval_glue import run_folder
from east_agent.simuleval_glue.run_folder import resume_in_index_order, writing


def write_log(path, indices):
    records = [{"index": index, "prediction": f"s{index}"} for index in indices]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def logged(path):
    return [json.loads(line)["index"] for line in path.read_text().splitlines()]


def test_simulevals_resume_gets_a_log_in_index_order(tmp_path, capsys):
    """A batched run's log keeps every finished sentence (before: those after the first
    missing one were cut, and translated again)."""
    log = tmp_path / "instances.log"
    write_log(log, [4, 1, 0])
    assert not resume_in_index_order(log, 0, 7)
    assert logged(log) == [0, 1, 4] and not (tmp_path / run_folder.SET_ASIDE).exists()
    assert capsys.readouterr().out == ""
    write_log(log, [2, 0, 1])
    assert resume_in_index_order(log, 0, 3) and logged(log) == [0, 1, 2]
    write_log(log, [])
    assert not resume_in_index_order(log, 0, 0)  # an empty span is never "complete"
    write_log(log, [2, 1])
    assert not resume_in_index_order(log, 0, 3) and logged(log) == [1, 2]


def test_sentences_set_aside_come_back_unless_logged_again(tmp_path):
    """A loop killed (SIGKILL) before it translated them again: the next resume puts them
    back (before: lost); one it logged again keeps the new record. A fresh run drops them."""
    output = tmp_path / "out"
    output.mkdir()
    log, aside = output / "instances.log", output / run_folder.SET_ASIDE
    write_log(log, [0, 1, 3])
    aside.write_text('{"index": 3, "prediction": "old"}\n{"index": 5, "prediction": "s5"}\n')
    assert run_folder.finished_in(output) == 4  # a grid resumes such a folder
    log.write_text("")  # no sentence kept before the first missing one: resumed all the same
    assert run_folder.finished_in(output) == 2
    write_log(log, [0, 1, 3])
    with writing(output, None, resume=True, run=True):
        pass
    assert logged(log) == [0, 1, 3, 5] and not aside.exists()
    assert [json.loads(line)["prediction"] for line in log.read_text().splitlines()][2] == "s3"
    aside.write_text('{"index": 4, "prediction": "s4"}\n')
    with writing(output, None, resume=False, run=True):
        pass
    assert logged(log) == [] and not aside.exists()


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
    # settings unknown here (another agent's --system-dir): not into a recorded log
    with pytest.raises(ValueError, match="of a run that recorded its settings"):
        with writing(output, None, resume=True, run=True):
            pass
    (output / run_folder.SETTINGS_RECORD).unlink()
    # a log without a record (the stock `simuleval`'s) is not extended by a run that knows
    # its settings (before: taken, mixing two systems' sentences in one log)
    with pytest.raises(ValueError, match=r"holds sentences \(1 finished\) translated with"):
        with writing(output, other, resume=True, run=True):
            pass
    assert logged(output / "instances.log") == [0]
    write_log(output / "instances.log", [])
    with writing(output, other, resume=True, run=True):  # nothing finished: taken
        pass
    assert (output / run_folder.SETTINGS_RECORD).exists()


def test_a_record_from_before_the_log_units_were_kept_is_not_compared_for_them():
    """Records written before `eval_latency_unit` was a setting name none: a grid of a
    Chinese target logged `char`, so no default can stand for them."""
    old = {"agent_class": "Agent", "latency": "low"}
    for unit in ("word", "char"):
        now = {**old, "eval_latency_unit": unit, "eval_latency_spm_model": None}
        assert run_folder.settings_differ(old, now) == run_folder.settings_differ(now, old) == []
    word = {**old, "eval_latency_unit": "word", "eval_latency_spm_model": None}
    char = {**word, "eval_latency_unit": "char"}
    assert run_folder.settings_differ(word, char) == ["eval_latency_unit"]
    assert run_folder.settings_differ({**old, "latency": "high"}, word) == ["latency"]


def test_the_beam_stop_of_a_greedy_run_is_no_setting():
    """Greedy decoding has no beams to stop: before, a greedy log's resume with the other
    --beam-stop was refused, though it translates the same."""
    greedy = {"agent_class": "Agent", "num_beams": 1, "beam_stop": "reference"}
    other = {**greedy, "beam_stop": "transformers"}
    assert run_folder.settings_differ(greedy, other) == []
    beams = {**greedy, "num_beams": 5}
    assert run_folder.settings_differ(beams, {**beams, "beam_stop": "transformers"}) == [
        "beam_stop"
    ]
    assert run_folder.settings_differ(greedy, {**other, "num_beams": 5}) == [
        "beam_stop",
        "num_beams",
    ]


def test_the_span_of_a_run_is_recorded_and_not_a_setting(tmp_path):
    """`--score-only` refuses a log lacking sentences of its run's span; a resumed run may
    cover more sentences than the record's (the span is never compared)."""
    output = tmp_path / "out"
    settings = {"agent_class": "Agent", "latency": "low"}
    with writing(output, settings, resume=False, run=True, span=(0, 3)):
        pass
    record = json.loads((output / run_folder.SETTINGS_RECORD).read_text())
    assert record == {**settings, "span": [0, 3]}
    write_log(output / "instances.log", [0, 1])
    with pytest.raises(
        ValueError, match=r"1 of the run's sentences 0 \.\. 2 are missing \(2\): failed"
    ):
        run_folder.check_recorded_span(output)
    with writing(output, settings, resume=True, run=True, span=(0, 5)):
        pass
    with pytest.raises(ValueError, match=r"3 of the run's sentences 0 \.\. 4 are missing"):
        run_folder.check_recorded_span(output)
    write_log(output / "instances.log", range(5))
    run_folder.check_recorded_span(output)
    (output / run_folder.SETTINGS_RECORD).write_text(json.dumps(settings))  # from before
    write_log(output / "instances.log", [0])
    run_folder.check_recorded_span(output)
    (output / run_folder.SETTINGS_RECORD).write_text(json.dumps({**settings, "span": [0]}))
    with pytest.raises(ValueError, match="run_settings.json: field 'span' is not \\[first, end\\]"):
        run_folder.check_recorded_span(output)


def test_the_weights_dtype_of_the_device_is_a_setting(tmp_path):
    """`--torch-dtype auto` loads float32 on a CPU and the checkpoint's own dtype
    (bfloat16) on a GPU: a CPU log resumed on a GPU is refused (before: taken, two dtypes'
    sentences in one log). Records from before name none and are not compared for it."""

    def settings(torch_dtype: str, device: str) -> dict:
        flags = argparse.Namespace(torch_dtype=torch_dtype, device=device, latency="low")
        return run_folder.translation_settings(Agent, flags)

    on_cpu, on_gpu = settings("auto", "cpu"), settings("auto", "cuda:1")
    assert on_cpu["weights_dtype"] == "float32"
    assert on_gpu["weights_dtype"] == "the checkpoint's"
    assert settings("bfloat16", "cpu")["weights_dtype"] == "bfloat16"
    # the same weights: `auto` on a CPU is float32 (before: refused, "torch_dtype: 'auto'
    # there, 'float32' now"); by the flag alone where a record names no weights dtype
    assert run_folder.settings_differ(on_cpu, settings("float32", "cpu")) == []
    assert run_folder.settings_differ(on_cpu, settings("bfloat16", "cpu")) == ["weights_dtype"]
    older = {key: value for key, value in on_cpu.items() if key != "weights_dtype"}
    assert run_folder.settings_differ(older, settings("float32", "cpu")) == ["torch_dtype"]
    assert run_folder.settings_differ(settings("auto", "cuda"), on_gpu) == []
    output = tmp_path / "out"
    with writing(output, on_cpu, resume=False, run=True):
        pass
    write_log(output / "instances.log", [0])
    with pytest.raises(
        ValueError, match="weights_dtype: 'float32' there, \"the checkpoint's\" now"
    ):
        with writing(output, on_gpu, resume=True, run=True):
            pass
    older = {key: value for key, value in on_cpu.items() if key != "weights_dtype"}
    (output / run_folder.SETTINGS_RECORD).write_text(json.dumps(older))
    with writing(output, on_gpu, resume=True, run=True):
        pass


def test_simulevals_half_precision_flags_are_the_torch_dtype_they_load():
    """`--fp16` and `--dtype fp16` beside `auto` load float16 as `--torch-dtype float16`
    does: a log begun with one spelling resumes with another (before: refused, "fp16:
    True there, False now"); float32 weights are still not float16 ones."""

    def settings(torch_dtype: str = "auto", fp16: bool = False, dtype=None) -> dict:
        flags = argparse.Namespace(
            torch_dtype=torch_dtype, fp16=fp16, dtype=dtype, device="cpu", latency="low"
        )
        return run_folder.translation_settings(Agent, flags)

    half = settings("float16")
    for spelling in (settings(fp16=True), settings(dtype="fp16"), settings("float16", True)):
        assert spelling["weights_dtype"] == "float16"
        assert run_folder.settings_differ(half, spelling) == []
        assert run_folder.settings_differ(spelling, half) == []
    assert run_folder.settings_differ(settings(fp16=True), settings()) == ["weights_dtype"]
    # a record without the weights dtype (written before it was) compares the flags
    older = {key: value for key, value in half.items() if key != "weights_dtype"}
    assert run_folder.settings_differ(older, settings(fp16=True)) == ["fp16", "torch_dtype"]


@pytest.mark.parametrize("key", ["dtype", "torch_dtype"])
def test_auto_on_a_gpu_is_the_dtype_the_checkpoint_config_names(tmp_path, key):
    """`--torch-dtype auto` on a GPU loads the dtype the checkpoint's config names (read
    first by transformers): a GPU log of `auto` resumes with `--torch-dtype bfloat16` (before:
    refused, "the checkpoint's" against 'bfloat16'); a config naming none (or no config, a
    hub id) keeps "the checkpoint's"."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({key: "bfloat16"}))

    def settings(torch_dtype: str, device: str, model_path=model) -> dict:
        flags = argparse.Namespace(
            torch_dtype=torch_dtype, device=device, latency="low", model_path=str(model_path)
        )
        return run_folder.translation_settings(Agent, flags)

    auto_on_gpu = settings("auto", "cuda")
    assert auto_on_gpu["weights_dtype"] == "bfloat16"
    assert run_folder.settings_differ(auto_on_gpu, settings("bfloat16", "cuda:0")) == []
    assert run_folder.settings_differ(auto_on_gpu, settings("float16", "cuda")) == ["weights_dtype"]
    assert run_folder.settings_differ(auto_on_gpu, settings("auto", "cpu")) == ["weights_dtype"]
    # a GPU log of `auto` written before the dtype was named resumes (a CPU's float32 not)
    earlier = {**auto_on_gpu, "weights_dtype": "the checkpoint's"}
    assert run_folder.settings_differ(earlier, auto_on_gpu) == []
    assert run_folder.settings_differ(auto_on_gpu, earlier) == []
    assert run_folder.settings_differ(earlier, settings("auto", "cpu")) == ["weights_dtype"]
    assert run_folder.settings_differ(earlier, settings("bfloat16", "cuda")) == ["weights_dtype"]
    for config in ({key: None}, {key: "int8"}, {key: "nonsense"}, ["bfloat16"], "{"):
        (model / "config.json").write_text(json.dumps(config) if config != "{" else config)
        assert settings("auto", "cuda")["weights_dtype"] == "the checkpoint's"
    assert settings("auto", "cuda", "org/hub-model")["weights_dtype"] == "the checkpoint's"


def test_flags_that_resolve_to_the_same_decoder_are_the_same_settings(east_checkpoint):
    """Before: a resume was refused for `de` against `German`, and for a default spelled
    out (`--max-context 512` on a checkpoint of 512 positions, `--cache-budget 256`, half
    of it, in long form). Only this package's agents say what their flags resolve to."""
    from east_agent.agent import EastAgent

    def settings(agent_class=EastAgent, **flags) -> dict:
        given = {"model_path": str(east_checkpoint), "trust_remote_code": False,
                 "src_lang": "de", "tgt_lang": "en", "max_context": None, "long_form": True,
                 "cache_budget": None, **flags}  # fmt: skip
        return run_folder.translation_settings(agent_class, argparse.Namespace(**given))

    default = settings()
    assert default["prompt_languages"] == ["German", "English"]
    assert default["effective_context"] == {"max_context": 512, "cache_budget": 256}
    for same in ({"src_lang": "German"}, {"max_context": 512}, {"cache_budget": 256}):
        assert run_folder.settings_differ(default, settings(**same)) == [], same
    assert run_folder.settings_differ(default, settings(src_lang="fr")) == ["prompt_languages"]
    assert run_folder.settings_differ(default, settings(cache_budget=128)) == ["effective_context"]
    assert run_folder.settings_differ(default, settings(max_context=400)) == ["effective_context"]
    short = settings(long_form=False)
    assert short["effective_context"] == {"max_context": 512, "cache_budget": None}
    # a record from before names neither: the flags themselves are compared
    older = {k: v for k, v in default.items() if k not in ("effective_context", "prompt_languages")}
    assert run_folder.settings_differ(older, settings(max_context=512)) == ["max_context"]
    assert run_folder.settings_differ(older, settings(src_lang="German")) == ["src_lang"]
    assert run_folder.settings_differ(older, default) == []
    # a checkpoint not here (a hub name) resolves no context; another agent nothing at all
    assert "effective_context" not in settings(model_path="org/model")
    other = settings(agent_class=Agent)
    assert not {"effective_context", "prompt_languages"} & set(other)
    assert run_folder.settings_differ(other, settings(Agent, src_lang="German")) == ["src_lang"]
    # wait-k's offline prompt reads no latency level (before: refused for another one)
    offline = {"prompt": "offline", "latency": "low", "waitk": 3}
    assert run_folder.settings_differ(offline, {**offline, "latency": "high"}) == []
    east = {**offline, "prompt": "east"}
    assert run_folder.settings_differ(east, {**east, "latency": "high"}) == ["latency"]


def test_a_log_begun_through_a_server_resumes_locally_with_the_same_settings(tmp_path):
    """east-remote-eval records its served system's settings under `served` (before: a
    local resume read none of them, and refused with every setting 'None there')."""
    output = tmp_path / "out"
    output.mkdir()
    write_log(output / "instances.log", [0, 1])
    local = {
        "agent_class": "EastAgent", "latency": "low", "src_lang": "de", "source": "s",
        "target": "r", "eval_latency_unit": "word", "eval_latency_spm_model": None,
    }  # fmt: skip
    served = {name: value for name, value in local.items() if name in ("agent_class", "latency")}
    remote = {
        "source": "s", "target": "r", "src_lang": "German", "eval_latency_unit": "word",
        "eval_latency_spm_model": None, "served": {**served, "src_lang": "de"},
    }  # fmt: skip
    (output / run_folder.SETTINGS_RECORD).write_text(json.dumps(remote))
    with writing(output, local, resume=True, run=True):
        pass
    assert json.loads((output / run_folder.SETTINGS_RECORD).read_text()) == local
    # a record of a server that said its own log units (before 5d06730): not the client's
    older = {**remote, "served": {**remote["served"], "eval_latency_unit": "char"}}
    del older["eval_latency_unit"]
    (output / run_folder.SETTINGS_RECORD).write_text(json.dumps(older))
    with writing(output, local, resume=True, run=True):
        pass
    (output / run_folder.SETTINGS_RECORD).write_text(json.dumps(remote))
    with pytest.raises(ValueError, match="latency: 'low' there, 'high' now"):
        with writing(output, {**local, "latency": "high"}, resume=True, run=True):
            pass


@pytest.mark.parametrize("dataloader", [[], ["--dataloader", "text-to-text"]])
def test_simulevals_text_reader_gets_its_files_checked_and_its_span(tmp_path, dataloader):
    from east_agent.simuleval_glue.data_files import check_data_files

    source = tmp_path / "src.txt"
    source.write_text("a\nb\nc\n")
    flags = ["--source", str(source), "--end-index", "2", "--no-scoring", *dataloader]
    assert check_data_files(flags) == (0, 2)
    assert check_data_files(["--source", str(source), "--dataloader", "speech-to-text"]) is None


def test_data_files_are_known_by_their_content(tmp_path):
    """A folder moved with its test set (a grid's) resumes; a changed file does not."""
    first = tmp_path / "first"
    first.mkdir()
    (first / "src.txt").write_text("ein Haus\n")
    output = first / "out"
    settings = run_folder.translation_settings(
        Agent, argparse.Namespace(source=str(first / "src.txt"), latency="low")
    )
    with writing(output, settings, resume=False, run=True):
        write_log(output / "instances.log", [0])
    moved = tmp_path / "moved"
    first.rename(moved)
    output = moved / "out"

    def resume(source):
        flags = argparse.Namespace(source=str(source), latency="low")
        with writing(output, run_folder.translation_settings(Agent, flags), run=True):
            pass

    resume(moved / "src.txt")
    (moved / "src.txt").write_text("ein Baum\n")
    with pytest.raises(ValueError, match=r"source: '.*moved/src.txt' \(sha256 [0-9a-f]{12}"):
        resume(moved / "src.txt")
    (output / run_folder.SETTINGS_RECORD).write_text(  # as recorded before 2026-12-02
        json.dumps({"agent_class": "Agent", "latency": "low", "source": str(moved / "src.txt")})
    )
    resume(moved / "src.txt")


def test_a_model_folder_is_known_by_its_fingerprint(tmp_path):
    """A moved checkpoint resumes, and so does one with a model card or tables written
    beside it; other weights, another configuration or another model file do not; a
    record naming the folder by path (before 2026-12-02) still resumes there."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    weights = bytearray(random.Random(0).randbytes(20 << 20))  # read in samples
    (model / "model.safetensors").write_bytes(weights)
    (model / "checkpoint-100").mkdir()  # subfolders are not the model's
    output = tmp_path / "out"
    settings = run_folder.translation_settings(Agent, argparse.Namespace(model_path=str(model)))
    with writing(output, settings, resume=False, run=True):
        write_log(output / "instances.log", [0])

    def resume(model_path):
        flags = argparse.Namespace(model_path=str(model_path))
        with writing(output, run_folder.translation_settings(Agent, flags), run=True):
            pass

    moved = tmp_path / "moved"
    model.rename(moved)
    (moved / "checkpoint-100" / "optimizer.pt").write_bytes(b"state")
    (moved / "README.md").write_text("results of the evaluation")  # not what loads
    resume(moved)
    last_block = len(weights) - fingerprint.SAMPLE_BYTES
    sampled = last_block * 300 // (fingerprint.SAMPLES - 1) + 10  # another fine-tune
    for flip in (1, 0):
        weights[sampled] ^= 1
        (moved / "model.safetensors").write_bytes(weights)
        if flip:
            with pytest.raises(
                ValueError, match=r"model_path: '.*moved' \(sha256 [0-9a-f]{12}\.\.\.\) there"
            ):
                resume(moved)
    resume(moved)
    (moved / "config.json").write_text('{"hidden_size": 9}')  # the same size
    with pytest.raises(ValueError, match="model_path"):
        resume(moved)
    (moved / "config.json").write_text('{"hidden_size": 8}')
    (moved / "adapter_config.json").write_text("{}")  # a file more
    with pytest.raises(ValueError, match="model_path"):
        resume(moved)
    (moved / "adapter_config.json").unlink()
    (output / run_folder.SETTINGS_RECORD).write_text(  # as recorded before 2026-12-02
        json.dumps({"agent_class": "Agent", "model_path": str(moved.resolve())})
    )
    resume(moved)


def test_a_log_outside_the_span_is_refused_before_the_settings_are_recorded(tmp_path):
    write_log(tmp_path / "instances.log", [0, 1, 2])
    record = tmp_path / run_folder.SETTINGS_RECORD
    record.write_text('{"agent_class": "Agent"}')
    written = record.stat().st_mtime_ns
    with pytest.raises(ValueError, match=r"outside --start-index 1 .. --end-index 3 \(0\)"):
        with writing(tmp_path, {"agent_class": "Agent"}, resume=True, run=True, span=(1, 3)):
            pass
    assert record.stat().st_mtime_ns == written
    with writing(tmp_path, {"agent_class": "Agent"}, resume=True, run=True, span=(0, 5)):
        pass
    assert logged(tmp_path / "instances.log") == [0, 1, 2]


def test_batch_json_names_the_most_streams_and_all_that_they_shared(tmp_path):
    """A log resumed by runs of other batch sizes, on the device or through a server:
    `batch.json` keeps the most streams any of them had and names what each shared."""
    from east_agent.simuleval_glue.batch import record_batching

    path = tmp_path / "batch.json"
    record_batching(tmp_path, 64, 1)  # one sentence left: one stream, said so
    assert json.loads(path.read_text())["computation_aware"] == (
        "elapsed measured with one stream on the device (single-stream)"
    )
    path.unlink()
    record_batching(tmp_path, 64, 8)
    assert json.loads(path.read_text())["computation_aware"] == (
        "elapsed measured with up to 8 streams sharing the device (single-stream: --batch-size 1)"
    )
    written = (path.stat().st_ino, path.stat().st_mtime_ns)
    record_batching(tmp_path, 3, 3)  # fewer streams, the same device: nothing new to say
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == written
    record_batching(tmp_path, 4, 4, sharing="the server")
    record = json.loads(path.read_text())
    assert (record["batch_size"], record["streams"]) == (64, 8)
    assert record["sharing"] == ["the device", "the server"]
    assert "up to 8 streams sharing the device or the server" in record["computation_aware"]
    # a record written before `sharing` was a field says it in its text
    older = {"batch_size": 16, "streams": 16, "computation_aware": "… sharing the server (…)"}
    path.write_text(json.dumps(older))
    record_batching(tmp_path, 2, 2)
    record = json.loads(path.read_text())
    assert (record["streams"], record["sharing"]) == (16, ["the device", "the server"])


def test_a_fresh_run_removes_the_old_scores_before_it_empties_the_log(tmp_path, monkeypatch):
    """A kill between the two must not leave scores beside an emptied log (a grid takes a
    folder with scores for a finished run)."""
    output = tmp_path / "out"
    output.mkdir()
    write_log(output / "instances.log", [0, 1])
    for name in ("scores.tsv", "scoring.json", "batch.json"):
        (output / name).write_text("old\n")
    emptied = []
    real = run_folder.write_atomically

    def write(path, text):
        if path == output / "instances.log":
            emptied.append(sorted(p.name for p in output.iterdir()))
        real(path, text)

    monkeypatch.setattr(run_folder, "write_atomically", write)
    with writing(output, {"latency": "low"}, resume=False, run=True):
        pass
    assert emptied == [["instances.lock", "instances.log"]]


def test_a_broken_settings_record_is_named(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    write_log(output / "instances.log", [0])
    (output / run_folder.SETTINGS_RECORD).write_text('{"latency": "low",\n')
    with pytest.raises(ValueError, match=r"run_settings.json: line 2: invalid JSON"):
        with writing(output, {"latency": "low"}, resume=True, run=True):
            pass


@pytest.mark.parametrize("run", [True, False], ids=["run", "score-only"])
def test_whoever_takes_the_folder_closes_a_killed_clients_sessions(tmp_path, run):
    """A local resume (or `--score-only`) of a log an `east-remote-eval` killed outright
    began: the sessions its `sessions.json` names are closed on their server (before: only
    by another `east-remote-eval`; they held the server's streams for --session-timeout)."""
    import requests
    from fake_session_server import FakeSessionServer

    output = tmp_path / "out"
    output.mkdir()
    (output / "instances.log").write_text("")
    with FakeSessionServer(streams=3) as server:
        url = f"http://127.0.0.1:{server.port}"
        for name in ("s1", "s2"):
            requests.post(f"{url}/reset", headers={"X-Session-Id": name}, timeout=10)
        assert sorted(server.sessions) == ["s1", "s2"]
        record = {"server": url, "sessions": ["s1", "s2"]}
        (output / "sessions.json").write_text(json.dumps(record))
        with writing(output, None, resume=True, run=run):
            assert not server.sessions
    assert not (output / "sessions.json").exists()


def test_a_recorded_log_is_not_resumed_by_a_run_of_unknown_settings(tmp_path):
    """Another agent's `--system-dir` (or `--remote-eval`): its settings are not known here;
    before, it went on into the log and its record was removed."""
    output = tmp_path / "out"
    output.mkdir()
    (output / "instances.log").write_text(json.dumps({"index": 0, "prediction": "a"}) + "\n")
    (output / "run_settings.json").write_text(json.dumps({"latency": "low"}))
    with pytest.raises(ValueError, match="of a run that recorded its settings"):
        with writing(output, None, resume=True, run=True):
            pass
    assert (output / "run_settings.json").exists()
    (output / "run_settings.json").unlink()
    with writing(output, None, resume=True, run=True):  # a log without one: as it is
        pass


@pytest.mark.parametrize(
    "text",
    ['{"sessions": ["s1"', '{"sessions": ["s1"]}', '["s1"]', '{"sessions": 1, "server": ""}'],
)
def test_a_sessions_record_that_cannot_be_read_is_said_and_removed(tmp_path, capsys, text):
    """It frees nothing: the run goes on (before: refused, and a record of the day before,
    naming no server, too)."""
    output = tmp_path / "out"
    output.mkdir()
    (output / "sessions.json").write_text(text)
    with writing(output, None, resume=True, run=True):
        pass
    assert not (output / "sessions.json").exists()
    assert "sessions.json: not a record of sessions and their server; removed" in (
        capsys.readouterr().err
    )


def test_what_a_record_names_that_is_no_setting_now_is_not_compared():
    """`source_segment_size` changes nothing for a text source (SimulEval sends a unit at a
    time): records that hold it resume whatever it says now (before: refused)."""
    saved = run_folder.recorded_settings(
        {"latency": "low", "source_segment_size": 1, "system_dir": None}
    )
    assert run_folder.settings_differ(saved, {"latency": "low"}) == []
    assert run_folder.settings_differ(saved, {"latency": "high"}) == ["latency"]
    # a grid's run records compare every name they hold (its `agent` too)
    assert run_folder.settings_differ({"agent": "waitk"}, {"agent": "east"}) == ["agent"]
    flags = argparse.Namespace(latency="low", source_segment_size=2, system_dir="sub")
    assert run_folder.translation_settings(Agent, flags) == {
        "agent_class": "Agent",
        "latency": "low",
    }
