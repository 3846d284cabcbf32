"""`east-simuleval --batch-size N`: SimulEval's output folder, N sentences at a time."""

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from commands import (
    WAITK_AGENT_FILE,
    agent_arguments,
    console_script,
    python_with_ctrl_c,
    run_simuleval,
    with_flags,
    write_toy_test_set,
)
from kill import sigkill_after_lines

from east_agent.simuleval_glue.instance_log import finished_records

WAITK_AGENT = WAITK_AGENT_FILE
SCORES = ("BLEU", "LAAL", "AL", "AP", "DAL", "ATD")


def write_test_set(folder, count, seed):
    write_toy_test_set(folder, count, seed)
    return folder


def instances(output):
    return [json.loads(line) for line in (output / "instances.log").read_text().splitlines()]


def without_timing(records):
    return [{key: value for key, value in r.items() if key != "elapsed"} for r in records]


def scores(output):
    header, values = (output / "scores.tsv").read_text().splitlines()[:2]
    return dict(zip(header.split("\t"), values.split("\t")))


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    return write_test_set(tmp_path_factory.mktemp("batch-set"), 7, seed=11)


@pytest.mark.parametrize(
    "agent_flags",
    [
        ["--latency", "low"],
        ["--latency", "medium", "--num-beams", "3"],
        ["--agent", WAITK_AGENT, "--waitk", "2", "--prompt", "offline"],
        ["--agent", WAITK_AGENT, "--waitk", "2", "--prompt", "east"],
    ],
    ids=["east", "east-beam3", "waitk-offline", "waitk-east"],
)
def test_batched_run_writes_what_simulevals_loop_writes(
    east_checkpoint, test_set, tmp_path, agent_flags
):
    outputs = {}
    for batch in (1, 3):
        output = tmp_path / f"batch-{batch}"
        arguments = agent_arguments(east_checkpoint, test_set, output, *agent_flags)
        result = run_simuleval(*arguments, "--batch-size", batch)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[batch] = output
    sequential, batched = instances(outputs[1]), instances(outputs[3])
    assert [r["index"] for r in batched] == list(range(7))  # in index order at the end
    assert list(batched[0]) == list(sequential[0])  # SimulEval's fields, in its order
    assert without_timing(batched) == without_timing(sequential)
    for record in batched:
        assert len(record["elapsed"]) == len(record["delays"])
        assert record["elapsed"] == sorted(record["elapsed"]) and record["elapsed"][-1] > 0
    assert {k: scores(outputs[3])[k] for k in SCORES} == {k: scores(outputs[1])[k] for k in SCORES}
    assert float(scores(outputs[3])["ATD"]) > 0  # a text log scored as text
    record = json.loads((outputs[3] / "batch.json").read_text())
    assert record["streams"] == 3 and "sharing the device" in record["computation_aware"]
    assert not (outputs[1] / "batch.json").exists()


def test_compiled_layers_run_under_simulevals_imports(east_checkpoint, test_set, tmp_path):
    """SimulEval imports yt-dlp, whose stand-in for a missing pycryptodomex failed
    torch.compile's cache keys (`east_agent.lm.module_scan`): a crash, before."""
    arguments = agent_arguments(east_checkpoint, test_set, tmp_path, "--latency", "low")
    compiled = ("--kv-cache", "compiled", "--end-index", 2)
    result = run_simuleval(*arguments, *compiled, in_process=False)  # SimulEval's imports first
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["index"] for r in instances(tmp_path)] == [0, 1]


@pytest.mark.parametrize("batch", [2, 1], ids=["batched", "simulevals-loop"])
def test_resume_keeps_finished_sentences_and_drops_a_torn_line(
    east_checkpoint, test_set, tmp_path, batch
):
    """Resumed batched or by SimulEval's loop, a batched run's log keeps every finished
    sentence (before: the loop kept only those before the first missing one, none here,
    and translated 1 and 4 again, though the note said it resumed after both)."""
    output = tmp_path / "out"
    arguments = agent_arguments(east_checkpoint, test_set, output, "--latency", "low")
    assert run_simuleval(*arguments, "--batch-size", 3).returncode == 0
    full = instances(output)
    # a run killed after sentences 4 and 1 (finished out of order) and halfway through a line
    kept = [dict(full[4], prediction="kept, not decoded again"), full[1]]
    torn = json.dumps(full[0])[:40]
    (output / "instances.log").write_text("".join(json.dumps(r) + "\n" for r in kept) + torn)
    (output / "scores.tsv").unlink()
    result = run_simuleval(*arguments, "--batch-size", batch, "--continue-unfinished")
    assert result.returncode == 0, result.stderr[-3000:]
    log = output / "instances.log"
    torn = " (a last line a kill cut off is dropped)"  # before: dropped without a word
    assert f"note: {log}: resumed after its 2 finished sentences{torn}\n" in result.stderr
    resumed = instances(output)
    assert [r["index"] for r in resumed] == list(range(7))
    assert resumed[4]["prediction"] == "kept, not decoded again"
    assert without_timing(resumed[:4]) == without_timing(full[:4])
    assert without_timing(resumed[5:]) == without_timing(full[5:])
    # sentences 4 and 1 were timed with 3 streams, the others with fewer: the most is kept
    assert json.loads((output / "batch.json").read_text())["streams"] == 3
    # a fresh run over them says what it replaces (before: a progress bar from 0, alone)
    result = run_simuleval(*arguments, "--batch-size", 2)
    assert result.returncode == 0, result.stderr[-3000:]
    said = f"note: {log}: its 7 finished sentences replaced by this fresh run (--continue-"
    assert said in result.stderr


@pytest.mark.parametrize("batch", [1, 2], ids=["simulevals-loop", "batched"])
def test_sigkill_keeps_every_finished_sentence(east_checkpoint, tmp_path, batch):
    folder = write_test_set(tmp_path / "set", 150, seed=12)
    output = tmp_path / "out"
    command = [
        console_script("east-simuleval"),
        *map(str, agent_arguments(east_checkpoint, folder, output, "--latency", "low")),
        "--batch-size", str(batch), "--no-progress-bar",
    ]  # fmt: skip
    log = output / "instances.log"
    sigkill_after_lines(command, log, 5)
    text = log.read_text()
    complete = text[: text.rfind("\n") + 1].splitlines()
    assert len(complete) >= 5 and all(json.loads(line) for line in complete)
    survivors = finished_records(log)  # what a resumed run starts from
    assert len(survivors) == len(complete) < 150
    result = subprocess.run([*command, "--continue-unfinished"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = instances(output)
    assert [r["index"] for r in resumed] == list(range(150))
    for survivor in survivors:  # finished before the kill: kept as they were
        assert resumed[survivor["index"]] == survivor


def test_batch_json_counts_the_streams_a_run_can_fill(east_checkpoint, tmp_path, monkeypatch):
    """8 streams for 3 sentences: the decoder holds 3 (before: 8, each one's cache rows
    made and attended to), and at most 3 shared the device while `elapsed` was measured;
    a resume that translates one sentence keeps the record of the 3."""
    from east_agent.agent import EastAgent
    from east_agent.simuleval_glue.batch import parse_args, run_batched

    built = []
    build = EastAgent.build_decoder

    def counted(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(EastAgent, "build_decoder", counted)
    folder = write_test_set(tmp_path / "set", 3, seed=19)
    output = tmp_path / "out"
    arguments = [*map(str, agent_arguments(east_checkpoint, folder, output)), "--no-progress-bar"]
    run_batched(EastAgent, parse_args(EastAgent, [*arguments, "--batch-size", "8"]))
    assert [len(decoder.streams) for decoder in built] == [3]
    record = json.loads((output / "batch.json").read_text())
    assert (record["batch_size"], record["streams"]) == (8, 3)
    assert "up to 3 streams" in record["computation_aware"]
    lines = (output / "instances.log").read_text().splitlines(keepends=True)
    (output / "instances.log").write_text("".join(lines[:2]))
    (output / "scores.tsv").unlink()
    resumed = [*arguments, "--batch-size", "8", "--continue-unfinished"]
    run_batched(EastAgent, parse_args(EastAgent, resumed))
    assert json.loads((output / "batch.json").read_text())["streams"] == 3
    assert len(instances(output)) == 3


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_a_bad_batch_size_is_refused_before_loading(east_checkpoint, test_set, tmp_path, value):
    arguments = agent_arguments(east_checkpoint, test_set, tmp_path / "out")
    result = run_simuleval(*arguments, "--batch-size", value, timeout=120)
    assert result.returncode != 0
    assert "--batch-size" in result.stderr and "at least 1" in result.stderr
    assert not (tmp_path / "out").exists()


def test_failed_sentences_are_named_in_index_order(east_checkpoint, tmp_path):
    """Sentence 3 (long words) overflows before sentence 1 (short ones): named 1, then 3
    (before: in the order they failed)."""
    folder = write_test_set(tmp_path / "set", 3, seed=13)
    lines = (folder / "src.txt").read_text().splitlines()
    lines.insert(1, " ".join(["rote"] * 300))
    lines.insert(3, " ".join(["Donaudampfschifffahrtsgesellschaftskapitän"] * 100))
    (folder / "src.txt").write_text("\n".join(lines) + "\n")
    (folder / "ref.txt").write_text("red\n" * len(lines))
    arguments = agent_arguments(east_checkpoint, folder, tmp_path / "out", "--max-context", "200")
    result = run_simuleval(*arguments, "--batch-size", 4)
    said = "2 of the 5 sentences this run tried failed; 3 finished sentences are in"
    assert said in result.stderr, result.stderr[-2000:]
    named = [line.split()[1] for line in result.stderr.splitlines() if "  sentence " in line]
    assert named == ["1", "3"]


def test_a_run_whose_every_sentence_failed_says_the_log_holds_none(tmp_path):
    """Before: "5 of 5 sentences failed; the others are in ...", though none was."""
    from east_agent.simuleval_glue.batch import BatchedRunError, check_failures

    log = tmp_path / "instances.log"
    log.write_text("")
    with pytest.raises(
        BatchedRunError,
        match=f"^2 of the 2 sentences this run tried failed; {log} holds no sentence",
    ):
        check_failures(["sentence 0: ...", "sentence 1: ..."], 2, log)
    check_failures([], 2, log)  # nothing failed: nothing said
    many = [f"sentence {index}: over the context" for index in range(37)]  # before: 37 lines
    with pytest.raises(BatchedRunError) as refused:
        check_failures(many, 40, log)
    lines = str(refused.value).splitlines()
    assert len(lines) == 12 and lines[10] == "  sentence 9: over the context"
    assert lines[11] == "  ... and 27 more (not in the log: --continue-unfinished tries them)"


def test_an_overlong_sentence_fails_alone_and_is_named(east_checkpoint, tmp_path):
    folder = write_test_set(tmp_path / "set", 4, seed=13)
    lines = (folder / "src.txt").read_text().splitlines()
    lines.insert(2, " ".join(["rote"] * 300))
    (folder / "src.txt").write_text("\n".join(lines) + "\n")
    references = (folder / "ref.txt").read_text().splitlines()
    references.insert(2, "red")
    (folder / "ref.txt").write_text("\n".join(references) + "\n")
    output = tmp_path / "out"
    arguments = agent_arguments(east_checkpoint, folder, output, "--max-context", "200")
    result = run_simuleval(*arguments, "--batch-size", 2)
    assert result.returncode != 0
    assert (
        "1 of the 5 sentences this run tried failed; 4 finished sentences are in" in result.stderr
    )
    assert "sentence 2 (300 units)" in result.stderr and "more than 200 tokens" in result.stderr
    assert [r["index"] for r in instances(output)] == [0, 1, 3, 4]  # in index order
    assert not (output / "scores.tsv").exists()
    scored = run_simuleval("--score-only", "--output", output, timeout=120)
    assert scored.returncode == 2 and "sentences 2 missing between 0 and 4" in scored.stderr
    assert not (output / "scores.tsv").exists()
    # the last ones missing too (a run stopped there; before: scored, exit 0): the run's
    # span is recorded with its settings
    log = output / "instances.log"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:2]))
    scored = run_simuleval("--score-only", "--output", output, timeout=120)
    assert scored.returncode == 2, scored.stderr[-2000:]
    assert "3 of the run's sentences 0 .. 4 are missing (2, 3, 4): failed" in scored.stderr
    assert not (output / "scores.tsv").exists()


def test_a_cache_that_outgrows_the_device_keeps_the_finished_sentences(
    east_checkpoint, tmp_path, monkeypatch
):
    """The KV cache's growth fails (a CUDA out-of-memory error, faked) when a long
    sentence needs more positions: the run ends naming the sizes and the kept sentences."""
    import torch

    from east_agent.agent import EastAgent
    from east_agent.lm import static
    from east_agent.simuleval_glue.batch import BatchedRunError, parse_args, run_batched

    folder = write_test_set(tmp_path / "set", 4, seed=17)
    with open(folder / "src.txt", "a") as source, open(folder / "ref.txt", "a") as reference:
        source.write(" ".join(["rote"] * 150) + "\n")
        reference.write("red\n")
    make = static._zeros

    def zeros(shape, dtype, device):
        if shape[2] > static.MIN_CAPACITY + static.TOKEN_BUCKETS[-1]:
            raise torch.OutOfMemoryError("CUDA out of memory (faked)")
        return make(shape, dtype, device)

    monkeypatch.setattr(static, "_zeros", zeros)
    output = tmp_path / "out"
    arguments = agent_arguments(east_checkpoint, folder, output, "--batch-size", 2)
    args = parse_args(EastAgent, [*map(str, arguments), "--no-progress-bar"])
    with pytest.raises(BatchedRunError) as raised:
        run_batched(EastAgent, args)
    assert "the KV cache does not fit on cpu: 2 rows (streams x beams)" in str(raised.value)
    assert "--continue-unfinished resumes after them" in str(raised.value)
    kept = sorted(record["index"] for record in finished_records(output / "instances.log"))
    assert kept and 4 not in kept and not (output / "scores.tsv").exists()
    assert json.loads((output / "batch.json").read_text())["streams"] == 2
    # resumed with more streams, it fails again before writing a sentence: the record
    # still names the streams its sentences were timed with
    more = parse_args(
        EastAgent, with_flags(map(str, arguments), "--batch-size", "5", "--continue-unfinished")
    )
    with pytest.raises(BatchedRunError, match="5 rows"):
        run_batched(EastAgent, more)
    assert json.loads((output / "batch.json").read_text())["streams"] == 2


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--start-index", "-2"], "--start-index -2: must be at least 0"),
        (["--start-index", "10"], "--start-index 10: must be at most the number of lines 7"),
        (["--end-index", "9"], "--end-index 9: must be at most 7"),
        (["--latency", "instant"], "invalid choice: 'instant'"),
        (["--max-context", "0"], "must be at least 1, got 0"),
    ],
    ids=["negative-start", "start-past-the-end", "end-past-the-end", "latency", "max-context"],
)
def test_bad_flags_of_a_batched_run_are_refused_before_loading(test_set, tmp_path, flags, message):
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, tmp_path / "out", *flags)
    result = run_simuleval(*arguments, "--batch-size", 3, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("batch", [1, 3], ids=["simulevals-loop", "batched"])
@pytest.mark.parametrize(
    "device, message",
    [("cuda", "'cuda': this machine has no CUDA device"), ("gpu", "'gpu' is not a device")],
)
def test_a_device_this_machine_lacks_is_refused_before_the_folder_changes(
    test_set, tmp_path, batch, device, message
):
    """Before: a traceback from the model load, after the finished run there was emptied."""
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    output = tmp_path / "out"
    output.mkdir()
    earlier = {"scores.tsv": "BLEU\n1.0\n", "instances.log": '{"index": 0}\n'}
    for name, text in earlier.items():
        (output / name).write_text(text)
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, output, "--device", device)
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"--device: {message}" in result.stderr and "Traceback" not in result.stderr
    assert {path.name: path.read_text() for path in output.iterdir()} == earlier


@pytest.mark.parametrize("batch", [1, 3], ids=["simulevals-loop", "batched"])
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cache-budget", "10"], "--cache-budget) 10 leaves too little room after the"),
        (["--cache-budget", "600"], "--cache-budget) 600 is above the context of 512"),
        (["--max-context", "100"], "--cache-budget) 50, half the context of 100 by default,"),
    ],
    ids=["too-small", "above-context", "default-too-small"],
)
def test_a_cache_budget_no_segment_fits_is_refused_before_the_folder_changes(
    east_checkpoint, test_set, tmp_path, batch, flags, message
):
    """Before: refused as the decoder was built, after the finished run there had been
    emptied (its log, its scores) and its settings recorded with the refused budget."""
    output = tmp_path / "out"
    output.mkdir()
    earlier = {"scores.tsv": "BLEU\n1.0\n", "instances.log": '{"index": 0}\n'}
    for name, text in earlier.items():
        (output / name).write_text(text)
    arguments = agent_arguments(east_checkpoint, test_set, output, "--long-form", *flags)
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    kept = {path.name: path.read_text() for path in output.iterdir() if path.suffix != ".lock"}
    assert kept == earlier  # the lock a run takes before it looks in the folder aside


@pytest.mark.parametrize("batch", [1, 3], ids=["simulevals-loop", "batched"])
@pytest.mark.parametrize("agent", ["east", "waitk"])
def test_a_max_context_no_sentence_fits_in_is_refused_before_the_model_loads(
    east_checkpoint, test_set, tmp_path, batch, agent
):
    """Before: the model loaded (its static cache falling back to the dynamic one), then
    every sentence failed as too long for the context: below the prompt and a word, and
    (the second run) where the prompt and the shortest sentence's source do not fit (of
    those it translates: sentence 1, four tokens, would fit)."""
    arguments = agent_arguments(east_checkpoint, test_set, tmp_path / "out", "--max-context", 10)
    if agent == "waitk":
        arguments[1] = WAITK_AGENT_FILE
        arguments += ["--waitk", 2]
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--max-context 10 leaves no room for a sentence after the" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
    floor = int(re.search(r"\(at least (\d+)\)", result.stderr).group(1))
    arguments[arguments.index("--max-context") + 1] = floor
    span = ["--start-index", 2, "--end-index", 4]
    result = run_simuleval(*arguments, *span, "--batch-size", batch, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    said = (
        f"none of the 2 sentences to translate fits in --max-context {floor}: the shortest, line 4"
    )
    assert said in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_a_device_this_machine_lacks_is_refused_without_an_output_folder(test_set, tmp_path):
    """SimulEval's loop printing its scores (no --output) builds the agent directly:
    refused there too (before: the weights loaded, then a traceback)."""
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, None, "--device", "gpu")
    del arguments[arguments.index("--output") : arguments.index("--output") + 2]
    result = run_simuleval(*arguments, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--device: 'gpu' is not a device" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("batch", [1, 3], ids=["simulevals-loop", "batched"])
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--quality-metrics", "BLEU", "CHRF"], "--quality-metrics CHRF: no such metric"),
        (["--latency-metrics", "AL", "YAAL"], "--latency-metrics YAAL: no such metric"),
        (["--computation-aware"], "--computation-aware: SimulEval's computation-aware"),
        (["--ca-unit-seconds", "0.3"], "--ca-unit-seconds sets the clock of the computation"),
        # before: argparse's usage, "unrecognized arguments"
        (
            ["--comet-checkpoint", "m.ckpt", "--comet-gpus=1"],
            "--comet-checkpoint, --comet-gpus: flags of the COMET scorer, and "
            "--quality-metrics asks for no COMET: add COMET to it, or leave them out",
        ),
    ],
    ids=[
        "quality-metric",
        "latency-metric",
        "computation-aware",
        "ca-unit-without-ca-metric",
        "comet-flags-without-comet",
    ],  # fmt: skip
)
def test_scoring_flags_simuleval_would_fail_on_are_refused_before_loading(
    test_set, tmp_path, batch, flags, message
):
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, tmp_path / "out", *flags)
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("batch", [1, 3], ids=["simulevals-loop", "batched"])
def test_an_output_that_is_a_file_is_refused_before_loading(test_set, tmp_path, batch):
    output = tmp_path / "afile"
    output.write_text("mine\n")
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, output)
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"east-simuleval: --output {output}: a file, not a folder" in result.stderr
    assert output.read_text() == "mine\n"
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, output / "run")
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]  # a traceback, before
    assert (
        f"--output {output / 'run'}: inside a file ({output} is a file, not a folder)"
        in result.stderr
    )


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("flag", ["--output", "--source", "--target"])
def test_an_empty_path_is_refused_before_loading(test_set, tmp_path, batch, flag):
    """Before: `--output ""` ran SimulEval's loop into the current folder (its log, lock
    and record left there), exit 0."""
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, tmp_path / "out")
    arguments[arguments.index(flag) + 1] = ""
    result = subprocess.run(
        [console_script("east-simuleval"), *map(str, arguments), "--batch-size", str(batch)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    kind = "folder" if flag == "--output" else "file"
    said = f"east-simuleval: {flag} is empty: name a {kind}\n"
    assert (result.returncode, result.stderr) == (2, said)
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_simulevals_remote_evaluation_is_refused_for_east_remote_eval(test_set, tmp_path):
    arguments = ["--remote-eval", "--remote-port", "1", "--source", test_set / "src.txt"]
    result = run_simuleval(*arguments, "--target", test_set / "ref.txt", "--output", tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "evaluate a served system with east-remote-eval" in result.stderr


def test_simulevals_slurm_submission_is_refused(east_checkpoint, test_set, tmp_path):
    output = tmp_path / "out"
    result = run_simuleval(*agent_arguments(east_checkpoint, test_set, output), "--slurm")
    assert result.returncode == 2, result.stderr[-3000:]  # an AttributeError, before
    assert "--slurm: SimulEval's Slurm submission fails" in result.stderr
    assert not output.exists()


@pytest.mark.parametrize("batch", [1, 3], ids=["simulevals-loop", "batched"])
@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--dataloader", "text-to-txt"], "--dataloader text-to-txt: no such dataloader"),
        (["--user-dir", "nowhere"], "--user-dir nowhere: no such folder"),
        (
            ["--dataloader-class", "nowhere.Mine", "--dataloader", "mine"],
            "--dataloader-class nowhere.Mine: module nowhere",
        ),
    ],
)
def test_a_dataloader_simuleval_cannot_build_is_refused_before_the_folder_changes(
    east_checkpoint, test_set, tmp_path, flags, said, batch
):
    """Before: SimulEval's AssertionError or ModuleNotFoundError traceback once the model
    had loaded, the folder's finished log emptied."""
    output = tmp_path / "out"
    output.mkdir()
    (output / "instances.log").write_text('{"index": 0}\n')
    arguments = agent_arguments(east_checkpoint, test_set, output)
    result = run_simuleval(*arguments, *flags, "--batch-size", str(batch))
    assert result.returncode == 2 and f"east-simuleval: {said}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "Loading weights" not in result.stderr
    assert (output / "instances.log").read_text() == '{"index": 0}\n'


def test_a_run_that_names_no_system_is_refused_before_the_folder_changes(test_set, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "instances.log").write_text('{"index": 0}\n')
    arguments = ["--source", test_set / "src.txt", "--target", test_set / "ref.txt"]
    result = run_simuleval(*arguments, "--output", output)
    assert result.returncode == 2, result.stderr[-3000:]  # before: a traceback, exit 1
    assert "east-simuleval: name the system: --agent FILE" in result.stderr
    assert (output / "instances.log").read_text() == '{"index": 0}\n'  # before: emptied


@pytest.mark.parametrize("batch", [1, 2], ids=["simulevals-loop", "batched"])
def test_a_folder_named_as_a_score_file_is_refused_not_deleted(
    east_checkpoint, test_set, tmp_path, batch
):
    """Before: `scores.tsv/` (a folder of the user's) deleted with all it held, exit 0."""
    output = tmp_path / "out"
    (output / "scores.tsv").mkdir(parents=True)
    (output / "scores.tsv" / "notes.txt").write_text("mine\n")
    arguments = agent_arguments(east_checkpoint, test_set, output, "--batch-size", batch)
    result = run_simuleval(*arguments, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    said = f"east-simuleval: {output / 'scores.tsv'}: a folder where this command keeps a file"
    assert said in result.stderr and "Traceback" not in result.stderr
    assert (output / "scores.tsv" / "notes.txt").read_text() == "mine\n"


def test_an_agent_file_and_an_agent_class_together_are_refused(test_set, tmp_path):
    """Before: the file's agent ran, the class given beside it unread."""
    arguments = ["--source", test_set / "src.txt", "--target", test_set / "ref.txt"]
    result = run_simuleval(
        *arguments, "--agent", WAITK_AGENT_FILE, "--agent-class", "east_agent.agent.EastAgent",
        "--output", tmp_path / "out",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.endswith(
        "east-simuleval: --agent and --agent-class: name one system, the file's or the class\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, name", [("--source", "instances.log"), ("--target", "scores.tsv")])
@pytest.mark.parametrize("batch", [1, 3], ids=["simulevals-loop", "batched"])
def test_a_data_file_the_run_would_write_over_is_refused(
    east_checkpoint, test_set, tmp_path, batch, flag, name
):
    """Before: the source emptied, then named as empty; or replaced by the log or scores."""
    output = tmp_path / "out"
    output.mkdir()
    kind = "src.txt" if flag == "--source" else "ref.txt"
    shutil.copy(test_set / kind, output / name)
    arguments = agent_arguments(east_checkpoint, test_set, output, flag, output / name)
    result = run_simuleval(*arguments, "--batch-size", batch)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{flag} {output / name} is the {name} this run writes in --output" in result.stderr
    assert (output / name).read_text() == (test_set / kind).read_text()


def test_both_spellings_of_the_latency_flag_are_refused(east_checkpoint, test_set, tmp_path):
    output = tmp_path / "out"
    arguments = agent_arguments(east_checkpoint, test_set, output)
    result = run_simuleval(*arguments, "--latency-level", "high", "--latency", "low")
    assert result.returncode == 2, result.stderr[-3000:]  # before: ran at low, exit 0
    assert "--latency-level and --latency: spellings of one flag; give one" in result.stderr
    assert not output.exists()


@pytest.mark.parametrize("batch", ["1", "2"])
def test_a_misspelt_flag_is_named_with_the_flag_it_may_be(test_set, tmp_path, batch):
    """Before: `unrecognized arguments: --long-from`, no hint, where every other command
    of this package gives one."""
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, tmp_path / "out")
    result = run_simuleval(*arguments, "--batch-size", batch, "--latncy", "low", "--long-from")
    assert result.returncode == 2, result.stderr[-3000:]
    said = (
        "error: unrecognized arguments: --latncy low --long-from (--latncy: did you mean "
        "--latency?) (--long-from: did you mean --long-form?)\n"
    )
    assert result.stderr.endswith(said) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("batch", ["1", "2"])
def test_a_flag_given_twice_is_refused(east_checkpoint, test_set, tmp_path, batch):
    """Before: the last one won, without a word (`--latency high --latency low` ran at
    low, exit 0), in SimulEval's loop and in the batched one."""
    output = tmp_path / "out"
    arguments = agent_arguments(east_checkpoint, test_set, output)
    flags = ["--latency", "high", "--batch-size", batch, "--latency=low"]
    result = run_simuleval(*arguments, *flags)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "east-simuleval: --latency given 2 times; give it once" in result.stderr
    assert not output.exists()
    result = run_simuleval(*arguments, "--batch-size", "2", "--batch-size", batch)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "--batch-size given 2 times; give it once" in result.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--torch-dtype", "bfloat16", "--fp16"], "--fp16 with --torch-dtype bfloat16: two"),
        (
            ["--torch-dtype", "float32", "--dtype", "fp16"],
            "--dtype fp16 with --torch-dtype float32",
        ),
        (
            ["--torch-dtype", "float16", "--dtype", "fp32"],
            "--dtype fp32 with --torch-dtype float16",
        ),
    ],
)
@pytest.mark.parametrize("batch", [1, 3], ids=["simulevals-loop", "batched"])
def test_simulevals_precision_flags_against_torch_dtype_are_refused(
    east_checkpoint, test_set, tmp_path, batch, flags, message
):
    """Before: the model ran in float16 recorded as bfloat16, or --dtype fp32 did nothing."""
    output = tmp_path / "out"
    arguments = agent_arguments(east_checkpoint, test_set, output, *flags)
    result = run_simuleval(*arguments, "--batch-size", batch)
    assert result.returncode == 2, result.stderr[-3000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not output.exists()


@pytest.mark.parametrize("batch", [1, 3], ids=["simulevals-loop", "batched"])
def test_an_empty_span_is_scored_as_empty(east_checkpoint, test_set, tmp_path, batch, monkeypatch):
    """An empty --start-index/--end-index span (a shard past a short test set's end) loads
    no model (before, SimulEval's loop loaded it for no sentence: minutes for 8B)."""
    from east_agent.simuleval_glue import adapter

    def no_loading(*args, **kwargs):
        raise AssertionError("an empty span needs no model")

    monkeypatch.setattr(adapter, "load_east_checkpoint", no_loading)
    output = tmp_path / "out"
    arguments = agent_arguments(east_checkpoint, test_set, output)
    result = run_simuleval(*arguments, "--batch-size", batch, "--start-index", 4, "--end-index", 4)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output / "instances.log").read_text() == ""
    assert (output / "config.yaml").read_text() == "source_type: text\ntarget_type: text\n"
    assert {k: scores(output)[k] for k in SCORES} == dict.fromkeys(SCORES, "")  # NaN
    assert "ERROR" not in result.stderr  # sacrebleu's error on no sentences, before
    said = "note: --start-index 4 --end-index 4 holds no sentence of"  # before: nothing said
    assert result.stderr.count(said) == 1 and "the log stays empty, its scores NaN" in result.stderr


def test_an_empty_batched_span_loads_no_model(east_checkpoint, test_set, tmp_path):
    """Before: the checkpoint loaded for no sentence (minutes for an 8B model)."""
    from east_agent.agent import EastAgent
    from east_agent.simuleval_glue import batch

    def no_loading(args, config):
        raise AssertionError("an empty span needs no model")

    output = tmp_path / "out"
    arguments = agent_arguments(east_checkpoint, test_set, output, "--batch-size", "3")
    span = ["--start-index", "4", "--end-index", "4"]
    args = batch.parse_args(EastAgent, [*map(str, arguments), *span])
    batch.run_batched(EastAgent, args, load=no_loading)
    assert (output / "instances.log").read_text() == ""
    assert {k: scores(output)[k] for k in SCORES} == dict.fromkeys(SCORES, "")  # NaN


def test_a_resume_of_an_agent_class_run_with_other_settings_is_refused(
    east_checkpoint, test_set, tmp_path
):
    output = tmp_path / "out"
    arguments = agent_arguments(east_checkpoint, test_set, output, "--end-index", 2)
    arguments[:2] = ["--agent-class", "east_agent.agent.EastAgent"]
    first = run_simuleval(*arguments, "--batch-size", 2)
    assert first.returncode == 0, first.stderr[-3000:]
    log = (output / "instances.log").read_text()
    refused = run_simuleval(*arguments, "--latency", "high", "--continue-unfinished", timeout=120)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "written with other settings (latency: 'low' there, 'high' now)" in refused.stderr
    # SimulEval logs predictions and delays in --eval-latency-unit's units (before: a resume
    # in words appended word-level records to a character-level log, and scored them); an
    # English target is not scored in characters, so the record says the log is
    record_path = output / "run_settings.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "eval_latency_unit": "char"}))
    refused = run_simuleval(*arguments, "--continue-unfinished", timeout=120)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "(eval_latency_unit: 'char' there, 'word' now)" in refused.stderr
    assert (output / "instances.log").read_text() == log


def test_an_agent_class_named_through_a_reexport_runs_and_records_its_settings(test_set, tmp_path):
    """SimulEval finds an --agent-class by the name given; this command's own look at the
    class beforehand must not leave it registered twice (then only its module's name
    would be found)."""
    package = tmp_path / "path" / "reexported"
    package.mkdir(parents=True)
    agent = Path(__file__).with_name("sleepy_agent.py").read_text()
    (package / "impl.py").write_text(agent.replace("@entrypoint\n", ""))  # found by name only
    (package / "__init__.py").write_text("from reexported.impl import SleepyWaitOne\n")
    output = tmp_path / "out"
    command = [
        console_script("east-simuleval"), "--agent-class", "reexported.SleepyWaitOne",
        "--sleep", "0", "--source", test_set / "src.txt", "--target", test_set / "ref.txt",
        "--output", output, "--end-index", 2,
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(tmp_path / "path")}
    result = subprocess.run(
        [*map(str, command)], capture_output=True, text=True, timeout=120, env=environment
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["index"] for r in instances(output)] == [0, 1]
    assert (output / "run_settings.json").exists() and (output / "scores.tsv").exists()
    again = subprocess.run(
        with_flags(map(str, command), "--sleep", "1", "--continue-unfinished"),
        capture_output=True, text=True, timeout=120, env=environment,
    )  # fmt: skip
    assert again.returncode == 2 and "written with other settings" in again.stderr


def test_an_empty_source_line_is_refused_before_loading_a_batched_run(tmp_path):
    folder = write_test_set(tmp_path / "set", 3, seed=16)
    lines = (folder / "src.txt").read_text().splitlines()
    (folder / "src.txt").write_text(f"{lines[0]}\n \n{lines[2]}\n")
    arguments = agent_arguments(tmp_path / "never-loaded", folder, tmp_path / "out")
    result = run_simuleval(*arguments, "--batch-size", 3, timeout=120)
    assert result.returncode == 2
    assert "src.txt: line 2: empty source sentence" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("batch", [1, 3])
def test_a_source_holding_a_control_token_is_refused_before_the_model_loads(
    east_checkpoint, tmp_path, batch
):
    folder = write_test_set(tmp_path / "set", 3, seed=17)
    lines = (folder / "src.txt").read_text().splitlines()
    (folder / "src.txt").write_text(f"{lines[0]}\n{lines[1]} <|eot_id|>\n{lines[2]}\n")
    arguments = agent_arguments(east_checkpoint, folder, tmp_path / "out")
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "src.txt: line 2: holds '<|eot_id|>', one of the checkpoint's control" in (result.stderr)
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("batch", [1, 3])
def test_a_gzipped_source_is_refused_before_loading(tmp_path, batch):
    """Before: at --batch-size 1, SimulEval's reader failed on it after the model loaded
    and the output folder was taken, naming no file."""
    folder = write_test_set(tmp_path / "set", 3, seed=15)
    packed = folder / "src.txt.gz"
    packed.write_bytes(gzip.compress((folder / "src.txt").read_bytes()))
    arguments = agent_arguments(tmp_path / "never-loaded", folder, tmp_path / "out")
    arguments[arguments.index(folder / "src.txt")] = packed
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{packed}: gzip-compressed" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("batch", [1, 3])
def test_unequal_line_counts_are_refused_before_loading(tmp_path, batch):
    folder = write_test_set(tmp_path / "set", 3, seed=14)
    (folder / "ref.txt").write_text("the cat\n")
    missing_model = tmp_path / "never-loaded"
    arguments = agent_arguments(missing_model, folder, tmp_path / "out")
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode != 0
    assert "src.txt has 3 lines but" in result.stderr and "ref.txt has 1" in result.stderr


def linked_without(checkpoint: Path, folder: Path, left_out) -> Path:
    """`folder`: links to `checkpoint`'s files but those `left_out(path)` names."""
    folder.mkdir()
    for path in checkpoint.iterdir():
        if not left_out(path):
            (folder / path.name).symlink_to(path)
    return folder


def refused_over_a_kept_log(checkpoint: Path, test_set, tmp_path, batch) -> str:
    """A run of `checkpoint` into a folder holding a finished sentence: refused (exit 2, no
    traceback), the sentence kept; its standard error."""
    output = tmp_path / "out"
    output.mkdir()
    (output / "instances.log").write_text('{"index": 0}\n')
    arguments = agent_arguments(checkpoint, test_set, output)
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert (output / "instances.log").read_text() == '{"index": 0}\n'
    return result.stderr


@pytest.mark.parametrize("batch", [1, 3])
def test_a_checkpoint_without_weights_is_refused_before_the_folder_changes(
    east_checkpoint, test_set, tmp_path, batch
):
    """A training run killed before its save leaves config and tokenizer alone (before: an
    OSError traceback once the folder was taken over and emptied)."""
    unfinished = linked_without(
        east_checkpoint, tmp_path / "unfinished", lambda path: path.suffix == ".safetensors"
    )
    stderr = refused_over_a_kept_log(unfinished, test_set, tmp_path, batch)
    assert f"--model-path {unfinished}: no weights file" in stderr


@pytest.mark.parametrize("batch", ["1", "3"], ids=["loop", "batched"])
@pytest.mark.parametrize("broken", ["config.json", "tokenizer.json", "chat_template.jinja"])
def test_a_checkpoint_that_does_not_load_is_refused_before_the_folder_changes(
    east_checkpoint, test_set, tmp_path, batch, broken
):
    """Its config, tokenizer or chat template (before: a transformers traceback, in the
    batched run once --max-context read the config, or the template found missing once
    the weights had loaded)."""
    checkpoint = linked_without(
        east_checkpoint, tmp_path / "checkpoint", lambda path: path.name == broken
    )
    if broken == "config.json":
        (checkpoint / broken).write_text("{not json")
    stderr = refused_over_a_kept_log(checkpoint, test_set, tmp_path, batch)
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"east-simuleval: --model-path {checkpoint}")


@pytest.mark.parametrize("spelling", ["apart", "joined"])
def test_batch_size_with_a_system_dir_is_refused_in_one_line(test_set, tmp_path, spelling):
    """Before, `--system-dir=DIR`: SimulEval's "--agent-class must be specified" traceback."""
    folder = str(tmp_path / "submission")
    given = ["--system-dir", folder] if spelling == "apart" else [f"--system-dir={folder}"]
    result = run_simuleval(
        *given, "--source", test_set / "src.txt", "--target", test_set / "ref.txt",
        "--output", tmp_path / "out", "--batch-size", 4, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert (
        "--batch-size above 1 with --system-dir: a batched run builds the agent of --agent"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "flags, said",
    [
        (["--eval-latency-unit", "spm"], "spm: give the model with --eval-latency-spm-model"),
        (
            ["--eval-latency-unit", "spm", "--eval-latency-spm-model", "/nowhere.model"],
            "--eval-latency-spm-model /nowhere.model: no such file",
        ),
        (["--eval-latency-unit", "char"], "char: for a Chinese or Japanese target"),
    ],
)
def test_latency_units_simuleval_fails_on_are_refused_before_loading(
    test_set, tmp_path, batch, flags, said
):
    """Before: SimulEval's assertion traceback (spm) once every sentence was translated,
    or an English target scored in characters, its spaces taken out of the translations
    only (BLEU 0.03, exit 0)."""
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, tmp_path / "out", *flags)
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert said in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("batch", [1, 3, "score-only"])
def test_a_bleu_tokenizer_that_does_not_load_is_refused_before_loading(test_set, tmp_path, batch):
    """Before: `--sacrebleu-tokenizer ja-mecab` without MeCab scored BLEU 0 (SimulEval's
    scorer logs the error and returns 0), exit 0, a `scores.tsv` a grid takes as finished.
    MeCab is hidden from the command (a module of that name that fails to import)."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "MeCab.py").write_text('raise ImportError("hidden by the test")\n')
    output, tokenizer = tmp_path / "out", ["--sacrebleu-tokenizer", "ja-mecab"]
    if batch == "score-only":
        output.mkdir()
        record = {"index": 0, "prediction": "a", "delays": [1], "elapsed": [0.1], "reference": "a"}
        (output / "instances.log").write_text(json.dumps(record) + "\n")
        arguments = ["--score-only", "--output", output, *tokenizer]
    else:
        arguments = [*agent_arguments(tmp_path / "never-loaded", test_set, output, *tokenizer)]
        arguments += ["--batch-size", batch]
    result = run_simuleval(*arguments, timeout=120, env={"PYTHONPATH": str(hidden)})
    assert result.returncode == 2, result.stderr[-3000:]
    said = "--sacrebleu-tokenizer ja-mecab: cannot score with it (Japanese tokenization requires"
    assert said in result.stderr and "pip install sacrebleu[ja]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (output / "scores.tsv").exists()
    assert batch == "score-only" or not output.exists()


def test_score_only_names_the_line_of_a_truncated_log(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    record = {"index": 0, "prediction": "a cat", "delays": [1, 2], "elapsed": [0.1, 0.2]}
    (output / "instances.log").write_text(json.dumps(record) + "\n" + json.dumps(record)[:25])
    (output / "config.yaml").write_text("source_type: text\ntarget_type: text\n")
    result = run_simuleval("--score-only", "--output", output, timeout=120)
    assert result.returncode != 0
    said = f"{output / 'instances.log'}: line 2: invalid JSON at column 26: Expecting ':'"
    assert said in result.stderr and "--continue-unfinished drops such a line" in result.stderr
    assert "Traceback" not in result.stderr


def test_score_only_refuses_a_scoring_flag_given_twice(tmp_path):
    """Before: `--latency-metrics AL --latency-metrics LAAL` scored LAAL alone, exit 0."""
    output = tmp_path / "out"
    output.mkdir()
    (output / "instances.log").write_text("")
    twice = ["--latency-metrics", "AL", "--latency-metrics", "LAAL"]
    given = run_simuleval("--score-only", "--output", output, *twice)
    assert given.returncode == 2, given.stderr[-3000:]
    assert given.stderr == "east-simuleval: --latency-metrics given 2 times; give it once\n"


def test_score_only_refuses_data_files_it_would_ignore_and_names_a_missing_output(tmp_path):
    """Before: --target and --source taken and ignored (the log's references scored, exit
    0: a rescoring against corrected references gave the old scores); and without
    --output, "instances.log: no such file"."""
    output = tmp_path / "out"
    output.mkdir()
    (output / "instances.log").write_text("")
    (tmp_path / "ref.txt").write_text("a cat\n")
    for flag in ("--target", "--source"):
        given = run_simuleval("--score-only", "--output", output, flag, tmp_path / "ref.txt")
        assert given.returncode == 2
        assert given.stderr.startswith(f"east-simuleval: {flag} with --score-only: a log is ")
    # a run's span or batch (before: taken, every sentence scored, exit 0)
    for flag in ("--start-index", "--batch-size"):
        given = run_simuleval("--score-only", "--output", output, flag, "3")
        assert given.returncode == 2 and given.stderr == (
            "east-simuleval: --score-only scores the log in --output with the scoring flags "
            f"alone; {flag}: a run's, not read (drop it)\n"
        )
    elsewhere = subprocess.run(
        [console_script("east-simuleval"), "--score-only"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert elsewhere.returncode == 2
    assert "give the folder with --output (there is no instances.log here)" in elsewhere.stderr
    # --score-only added to a whole run command (before: argparse's "unrecognized
    # arguments" listing the run's flags and values)
    run_flags = ["--model-path", "m", "--src-lang", "de", "--latency=medium"]
    added = run_simuleval("--score-only", "--output", output, *run_flags)
    assert added.returncode == 2
    assert added.stderr == (
        "east-simuleval: --score-only scores the log in --output with the scoring flags alone; "
        "--model-path, --src-lang, --latency: not scoring flags (drop the run's flags)\n"
    )


@pytest.mark.parametrize("batch", [1, 2])
def test_score_only_refuses_a_log_without_references_or_in_other_units(
    east_checkpoint, test_set, tmp_path, batch
):
    """Before: a `--no-scoring` log without `--target` scored BLEU 0 (latency against the
    translations' own lengths), and a log in words scored as characters (or the reverse),
    both exit 0 with a `scores.tsv` a grid takes as finished."""
    output = tmp_path / "out"
    arguments = agent_arguments(east_checkpoint, test_set, output, "--latency", "low")
    at = arguments.index("--target")
    del arguments[at : at + 2]
    result = run_simuleval(*arguments, "--no-scoring", "--batch-size", batch)
    assert result.returncode == 0, result.stderr[-3000:]
    scored = run_simuleval("--score-only", "--output", output, timeout=120)
    assert scored.returncode == 2, scored.stderr[-3000:]
    assert "instances.log: line 1: sentence 0 holds no reference" in scored.stderr
    assert not (output / "scores.tsv").exists()
    with_target = agent_arguments(east_checkpoint, test_set, tmp_path / "words")
    assert run_simuleval(*with_target, "--batch-size", batch).returncode == 0
    (tmp_path / "words" / "scores.tsv").unlink()
    scored = run_simuleval(
        "--score-only", "--output", tmp_path / "words", "--eval-latency-unit", "char"
    )
    assert scored.returncode == 2, scored.stderr[-3000:]
    assert "char: for a Chinese or Japanese target" in scored.stderr  # an English one
    record_path = tmp_path / "words" / "run_settings.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "eval_latency_unit": "char"}))  # a char log
    scored = run_simuleval("--score-only", "--output", tmp_path / "words")
    assert scored.returncode == 2, scored.stderr[-3000:]
    assert "was written with --eval-latency-unit char, not word" in scored.stderr
    assert not (tmp_path / "words" / "scores.tsv").exists()
    record_path.write_text(json.dumps(record))
    scored = run_simuleval("--score-only", "--output", tmp_path / "words")
    assert scored.returncode == 0, scored.stderr[-3000:]


def test_simulevals_loop_resumes_a_batched_log_and_scores_a_complete_one(
    east_checkpoint, test_set, tmp_path
):
    """A complete log (a run killed while scoring) is scored by SimulEval's loop, which
    would fail on it, keeping the record of how it was batched; `--no-scoring` is obeyed,
    and leaves a complete log's scores as they are (before: removed, none written).
    A batched run killed with sentences 4, 1 and 0 finished (its order) is resumed by
    SimulEval's loop: all three kept, 2, 3, 5 and 6 translated (before: the loop resumed
    after the log's last line, and 4, after the first missing one, was translated again)."""
    output = tmp_path / "out"
    arguments = agent_arguments(east_checkpoint, test_set, output, "--latency", "low")
    assert run_simuleval(*arguments, "--batch-size", 3).returncode == 0
    full, full_scores = instances(output), scores(output)
    full_metrics = (output / "metrics.tsv").read_text()
    kept = {name: (output / name).read_bytes() for name in ("scores.tsv", "batch.json")}
    for batch_size in (1, 3):  # a complete log: --no-scoring leaves it and its scores
        result = run_simuleval(
            *arguments, "--batch-size", batch_size, "--continue-unfinished", "--no-scoring"
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert "is complete: nothing translated, nothing scored" in result.stderr
        assert {name: (output / name).read_bytes() for name in kept} == kept
    (output / "scores.tsv").unlink()
    result = run_simuleval(*arguments, "--continue-unfinished", "--no-scoring")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (output / "scores.tsv").exists()
    result = run_simuleval(*arguments, "--batch-size", 1, "--continue-unfinished")
    assert result.returncode == 0, result.stderr[-3000:]
    assert instances(output) == full and scores(output) == full_scores
    assert json.loads((output / "batch.json").read_text())["streams"] == 3

    not_again = "kept, not decoded again"
    kept = [dict(full[4], prediction=not_again), dict(full[1], prediction=not_again), full[0]]
    (output / "instances.log").write_text("".join(json.dumps(r) + "\n" for r in kept))
    result = run_simuleval(*arguments, "--batch-size", 1, "--continue-unfinished")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed after its 3 finished sentences" in result.stderr
    resumed = instances(output)
    assert [r["index"] for r in resumed] == list(range(7))
    assert [r["prediction"] == not_again for r in resumed] == [i in (1, 4) for i in range(7)]
    assert without_timing(resumed[5:]) == without_timing(full[5:])
    # in index order: the sentences the loop translated were logged after 4, then sorted
    assert (output / "metrics.tsv").read_text() == full_metrics
    # sentences 0, 1 and 4 were timed with 3 streams (the others by SimulEval's loop)
    assert json.loads((output / "batch.json").read_text())["streams"] == 3

    (output / "instances.log").write_text("")  # nothing it keeps
    result = run_simuleval(*arguments, "--batch-size", 1, "--continue-unfinished")
    assert result.returncode == 0, result.stderr[-3000:]
    assert without_timing(instances(output)) == without_timing(full)
    assert not (output / "batch.json").exists()  # every timing is SimulEval's loop's now


@pytest.mark.parametrize("mode", ["simulevals-loop", "batched", "score-only"])
def test_a_folder_being_written_is_refused_before_anything_is_written(
    east_checkpoint, test_set, tmp_path, mode
):
    """Whatever the spelling of --output: nothing loaded, written or removed."""
    from east_agent.common.run_lock import hold_run_lock
    from east_agent.simuleval_glue.run_folder import INSTANCES_LOCK

    output = tmp_path / "out"
    output.mkdir()
    # a log with a gap, as one being written out of order: the lock is named, not the gap
    gappy = '{"index": 0}\n{"index": 2}\n'
    earlier = {"scores.tsv": "BLEU\n1.0\n", "instances.log": gappy, "config.yaml": "x\n"}
    for name, text in earlier.items():
        (output / name).write_text(text)
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, output)
    at = arguments.index("--output")
    arguments[at : at + 2] = [f"--output={output}"]
    if mode != "score-only":
        arguments += ["--batch-size", 2 if mode == "batched" else 1]
    else:  # no run's flag: --score-only refuses them
        arguments = ["--score-only", f"--output={output}"]
    with hold_run_lock(output, INSTANCES_LOCK):
        result = run_simuleval(*arguments, timeout=120)
    assert result.returncode != 0
    assert f"{output} is being written by process" in result.stderr, result.stderr[-2000:]
    assert "never-loaded" not in result.stderr
    assert sorted(path.name for path in output.iterdir()) == sorted([*earlier, INSTANCES_LOCK])
    assert all((output / name).read_text() == text for name, text in earlier.items())


@pytest.mark.parametrize("ended_by", [KeyboardInterrupt, RuntimeError])
def test_a_batched_run_ended_midway_leaves_its_log_in_index_order(tmp_path, ended_by):
    """Sentences finish in any order; a run ended by a Ctrl-C or an error leaves them in
    index order, as one whose sentences failed does (before: a Ctrl-C left them in the
    order they finished)."""
    import argparse

    from east_agent.simuleval_glue.batch import run_out_of_order

    output = tmp_path / "out"
    args = argparse.Namespace(
        output=str(output), continue_unfinished=False, no_scoring=True,
        source_type="text", target_type="text",
    )  # fmt: skip

    def translate(indices):
        with open(output / "instances.log", "a") as log:
            for index in (3, 0, 2):
                log.write(json.dumps({"index": index, "prediction": f"s{index}"}) + "\n")
        raise ended_by()

    with pytest.raises(ended_by):
        run_out_of_order(args, range(5), None, translate)
    assert [record["index"] for record in instances(output)] == [0, 2, 3]


def test_a_batched_run_holds_its_folder_until_its_scores_are_written(
    east_checkpoint, test_set, tmp_path, monkeypatch
):
    from east_agent.agent import EastAgent
    from east_agent.common.run_lock import RunFolderBusyError, hold_run_lock
    from east_agent.simuleval_glue import batch
    from east_agent.simuleval_glue.run_folder import INSTANCES_LOCK

    output = tmp_path / "out"
    scored = []

    def score_while_held(args):
        with pytest.raises(RunFolderBusyError):
            with hold_run_lock(output, INSTANCES_LOCK):
                pass
        scored.append(args.output)

    monkeypatch.setattr(batch, "score", score_while_held)
    arguments = agent_arguments(east_checkpoint, test_set, output, "--batch-size", "2")
    batch.run_batched(EastAgent, batch.parse_args(EastAgent, [*map(str, arguments)]))
    assert scored == [str(output)] and len(instances(output)) == 7

    # killed while scoring, resumed with another batch size: scored, nothing loaded, and
    # the record of the batching its timings were measured with kept
    def no_loading(args, config):
        raise AssertionError("a complete log needs no model")

    record = (output / "batch.json").read_text()
    resumed = [*map(str, arguments[:-1]), "5", "--continue-unfinished"]
    batch.run_batched(EastAgent, batch.parse_args(EastAgent, resumed), load=no_loading)
    assert scored == [str(output)] * 2 and (output / "batch.json").read_text() == record


def test_an_overlong_sentence_in_simulevals_loop_is_named_and_old_scores_go(
    east_checkpoint, tmp_path
):
    """SimulEval's loop stops at the sentence; the scores and batching record of an
    earlier run in the folder do not stay beside the new log."""
    folder = write_test_set(tmp_path / "set", 4, seed=13)
    output = tmp_path / "out"
    output.mkdir()
    for name in ("scores.tsv", "metrics.tsv", "batch.json"):  # an earlier run's
        (output / name).write_text("{}\n")
    arguments = agent_arguments(east_checkpoint, folder, output, "--max-context", "200")
    lines = (folder / "src.txt").read_text().splitlines()
    lines[2] = " ".join(["rote"] * 300)
    (folder / "src.txt").write_text("\n".join(lines) + "\n")
    result = run_simuleval(*arguments, "--batch-size", 1)
    assert result.returncode != 0
    assert "sentence 2: the sentence needs more than 200 tokens" in result.stderr
    assert "the finished sentences (2) are in" in result.stderr
    assert [r["index"] for r in instances(output)] == [0, 1]
    assert not (output / "scores.tsv").exists() and not (output / "metrics.tsv").exists()
    assert not (output / "batch.json").exists()
    resumed = [*arguments, "--continue-unfinished"]
    result = run_simuleval(*resumed, "--batch-size", 2)  # finishes sentence 3, after 2
    assert result.returncode != 0 and [r["index"] for r in instances(output)] == [0, 1, 3]
    kept = instances(output)[2]
    result = run_simuleval(*resumed, "--batch-size", 1)  # tries sentence 2 alone
    assert "translated again" not in result.stdout, result.stdout[-2000:]
    assert "sentence 2: the sentence needs more than 200 tokens" in result.stderr
    assert "the finished sentences (3) are in" in result.stderr
    assert instances(output)[2] == kept and [r["index"] for r in instances(output)] == [0, 1, 3]
    assert not (output / "instances.set-aside.log").exists()


def test_a_long_form_runs_messages_count_talks(east_checkpoint, tmp_path):
    """In long form an instance is a talk, and what overflows the context is a segment
    (before: "sentence 1: the sentence needs more than 512 tokens", "1 of the 3 sentences
    this run tried failed", "resumed after its 2 finished sentences")."""
    talks = ["der Hund sitzt. die Katze läuft.", "die Frau sieht " + "Haus" * 400, "der Ball."]
    (tmp_path / "src.txt").write_text("".join(talk + "\n" for talk in talks))
    (tmp_path / "ref.txt").write_text("".join(talk + "\n" for talk in talks))
    output = tmp_path / "out"
    arguments = agent_arguments(east_checkpoint, tmp_path, output, "--long-form")
    result = run_simuleval(*arguments, "--batch-size", 3)
    assert result.returncode != 0 and [r["index"] for r in instances(output)] == [0, 2]
    assert "1 of the 3 talks this run tried failed; 2 finished talks are in" in result.stderr
    overflow = "talk 1 (4 units): the segment needs more than 512 tokens, its context limit"
    assert overflow in result.stderr, result.stderr[-2000:]
    resumed = run_simuleval(*arguments, "--batch-size", 1, "--continue-unfinished")
    assert resumed.returncode != 0
    assert "resumed after its 2 finished talks\n" in resumed.stderr
    assert "talk 1: the segment needs more than 512 tokens" in resumed.stderr
    assert "the finished talks (2) are in" in resumed.stderr
    fresh = run_simuleval(*arguments, "--batch-size", 1)
    assert "its 2 finished talks replaced by this fresh run" in fresh.stderr


@pytest.mark.parametrize("batch", [1, 2])
def test_a_missing_reference_file_is_refused_before_loading(test_set, tmp_path, batch):
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, tmp_path / "out")
    arguments[arguments.index("--target") + 1] = tmp_path / "no-such-ref.txt"
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode != 0
    assert f"--target {tmp_path / 'no-such-ref.txt'}: no such file" in result.stderr
    assert "never-loaded" not in result.stderr


@pytest.mark.parametrize("batch", [1, 3], ids=["simulevals-loop", "batched"])
@pytest.mark.parametrize(
    "flag, path, message",
    [
        ("--agent", "east_agent/nosuch.py", "--agent east_agent/nosuch.py: no such file"),
        ("--agent", "{folder}", "--agent {folder}: a folder, not a file"),
        ("--source", "{folder}", "--source {folder}: a folder, not a file"),
    ],
    ids=["agent-missing", "agent-folder", "source-folder"],
)
def test_an_agent_or_data_path_that_is_no_file_is_one_line(
    test_set, tmp_path, batch, flag, path, message
):
    """Before: an errno message naming no flag (--agent), "no such file" for a folder."""
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, tmp_path / "out")
    arguments[arguments.index(flag) + 1] = path.format(folder=tmp_path)
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert message.format(folder=tmp_path) in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name, problem",
    [
        ("east_agent.agent.WaitkAgent", "module 'east_agent.agent' has no attribute 'WaitkAg"),
        ("nosuch.Agent", "No module named 'nosuch'"),
    ],
)
def test_an_agent_class_that_does_not_import_is_one_line(test_set, tmp_path, name, problem):
    """Before: SimulEval's "Not able to load" log line and a traceback."""
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, tmp_path / "out")
    arguments[arguments.index("--agent") : arguments.index("--agent") + 2] = ["--agent-class", name]
    result = run_simuleval(*arguments, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith(f"east-simuleval: --agent-class {name}: {problem}")
    assert result.stderr.count("\n") == 1 and "--user-dir" in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_agent_modules_own_import_error_is_not_taken_for_a_wrong_class_name():
    """A review: a missing dependency inside the agent's module is the module's fault, kept
    with its traceback, not a one-line "--agent-class ... add --user-dir"."""
    from east_agent.simuleval_glue.cli import names_no_class

    missing = ModuleNotFoundError("No module named 'nosuch'", name="nosuch")
    assert names_no_class(missing, "nosuch.Agent")
    assert names_no_class(ModuleNotFoundError("x", name="my"), "my.agents.Agent")
    inside = ModuleNotFoundError("No module named 'torchx'", name="torchx")
    assert not names_no_class(inside, "my.agents.Agent")
    assert not names_no_class(ModuleNotFoundError("x", name="my.age"), "my.agents.Agent")
    assert names_no_class(AttributeError("no", name="Agent"), "my.agents.Agent")
    assert not names_no_class(AttributeError("no", name="config"), "my.agents.Agent")
    assert names_no_class(ValueError("Empty module name"), "Agent")
    assert not names_no_class(ValueError("its own"), "my.agents.Agent")


@pytest.mark.parametrize("batch", [1, 3], ids=["simulevals-loop", "batched"])
def test_a_scored_run_without_references_is_refused_before_loading(
    east_checkpoint, test_set, tmp_path, batch
):
    """Before: SimulEval scored BLEU 0, and the latency against the translations, exit 0."""
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, tmp_path / "out")
    del arguments[arguments.index("--target") : arguments.index("--target") + 2]
    result = run_simuleval(*arguments, "--batch-size", batch, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--target: no reference file; the scores need one" in result.stderr
    assert "never-loaded" not in result.stderr and not (tmp_path / "out").exists()
    arguments[arguments.index(tmp_path / "never-loaded")] = east_checkpoint
    result = run_simuleval(*arguments, "--batch-size", batch, "--no-scoring", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(finished_records(tmp_path / "out" / "instances.log")) == 7
    assert not (tmp_path / "out" / "scores.tsv").exists()


def test_batching_another_agent_is_refused_plainly(test_set, tmp_path):
    from pathlib import Path

    sleepy = Path(__file__).with_name("sleepy_agent.py")
    arguments = agent_arguments(tmp_path / "unused", test_set, tmp_path / "out")
    arguments[arguments.index("--agent") + 1] = sleepy
    result = run_simuleval(*arguments, "--batch-size", 2, timeout=120)
    assert result.returncode != 0
    assert "SleepyWaitOne is not one: drop --batch-size" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("batch", [1, 3], ids=["simulevals-loop", "batched"])
def test_a_resume_with_other_settings_is_refused(east_checkpoint, test_set, tmp_path, batch):
    """Flags that change translations must match the log's; scoring and batching may not."""
    output = tmp_path / "out"
    arguments = agent_arguments(east_checkpoint, test_set, output, "--latency", "low")
    first = run_simuleval(*arguments, "--batch-size", 3, "--end-index", 2)
    assert first.returncode == 0, first.stderr[-3000:]
    log = (output / "instances.log").read_text()
    other = [*arguments[:-2], "--latency", "medium", "--continue-unfinished"]
    refused = run_simuleval(*other, "--batch-size", batch, timeout=120)
    assert refused.returncode != 0
    assert "written with other settings (latency: 'low' there, 'medium' now)" in refused.stderr
    assert (output / "instances.log").read_text() == log
    changed = ["--latency-metrics", "AL", "--end-index", 3]  # scoring, and one more sentence
    resumed = run_simuleval(*arguments, "--continue-unfinished", "--batch-size", batch, *changed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["index"] for r in instances(output)] == [0, 1, 2]


def test_an_agent_file_that_imports_its_agent_runs_with_an_output(east_checkpoint, tmp_path):
    """SimulEval runs the agent file again after this command has read its flags; a file
    that imports its class from a package registers nothing the second time."""
    folder = write_test_set(tmp_path / "set", 2, seed=15)
    agent_file = tmp_path / "my_agent.py"
    agent_file.write_text("from east_agent.agent import EastAgent  # noqa: F401\n")
    arguments = agent_arguments(east_checkpoint, folder, tmp_path / "out")
    arguments[arguments.index("--agent") + 1] = agent_file
    result = run_simuleval(*arguments, in_process=False)  # east_agent.agent not imported yet
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(instances(tmp_path / "out")) == 2


@pytest.mark.parametrize("batch", [1, 3], ids=["simulevals-loop", "batched"])
def test_a_log_outside_the_resumed_span_is_refused_before_loading(test_set, tmp_path, batch):
    """Its sentences would be scored with the span's: nothing loaded, written or recorded."""
    output = tmp_path / "out"
    output.mkdir()
    write_log = "".join(json.dumps({"index": index, "prediction": "x"}) + "\n" for index in (0, 1))
    (output / "instances.log").write_text(write_log)
    arguments = agent_arguments(tmp_path / "never-loaded", test_set, output, "--start-index", 1)
    result = run_simuleval(*arguments, "--continue-unfinished", "--batch-size", batch, timeout=120)
    assert result.returncode != 0
    assert "holds sentences outside --start-index 1 .. --end-index 7 (0)" in result.stderr
    assert "Traceback" not in result.stderr and "never-loaded" not in result.stderr
    assert (output / "instances.log").read_text() == write_log
    assert sorted(path.name for path in output.iterdir()) == ["instances.lock", "instances.log"]


def test_a_run_moved_with_its_test_set_and_model_resumes(east_checkpoint, tmp_path):
    """A grid keeps its test set in its output folder: moving the folder changes the data
    files' paths, not their content; nor does moving the checkpoint change its fingerprint."""
    folder = write_test_set(tmp_path / "grid", 3, seed=17)
    shutil.copytree(east_checkpoint, folder / "model")
    arguments = agent_arguments(folder / "model", folder, folder / "out", "--batch-size", 3)
    first = run_simuleval(*arguments, "--end-index", 2)
    assert first.returncode == 0, first.stderr[-3000:]
    moved = tmp_path / "moved"
    folder.rename(moved)
    arguments = agent_arguments(moved / "model", moved, moved / "out", "--batch-size", 3)
    resumed = run_simuleval(*arguments, "--continue-unfinished")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["index"] for r in instances(moved / "out")] == [0, 1, 2]


@pytest.mark.parametrize("batch", [1, 2], ids=["simulevals-loop", "batched"])
def test_chunks_the_cache_budget_cut_short_are_said(tmp_path, batch):
    """wait-10 under a 100-token budget, on the demo model (the tiny one's writes stop
    before any cap), one unpunctuated talk: before, chunks cut short by the budget were
    counted and never shown (110 tokens cut one before the offline prompt suppressed the
    EAST markers, none since)."""
    from east_agent.evaluation.demo import DEFAULT_MODEL
    from east_agent.evaluation.testsets import read_pairs

    pairs, _, _ = read_pairs("multi30k.de-en")
    words = [word.rstrip(".!?") for source, _ in pairs[:30] for word in source.split()]
    (tmp_path / "src.txt").write_text(" ".join(word for word in words[:200] if word) + "\n")
    (tmp_path / "ref.txt").write_text(" ".join(reference for _, reference in pairs[:30]) + "\n")
    arguments = agent_arguments(DEFAULT_MODEL, tmp_path, tmp_path / "out", "--long-form")
    arguments[1] = WAITK_AGENT_FILE
    arguments += ["--waitk", 10, "--prompt", "offline", "--cache-budget", 100]
    arguments += ["--segment-units", 1000, "--batch-size", batch]
    result = run_simuleval(*arguments, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    said = "long form: the cache budget (--cache-budget) cut 1 chunk of "
    assert said + ("this talk" if batch == 1 else "the 1 talk translated") in (result.stderr)


SWALLOWED = """
import os, signal, sys
from east_agent.decoding import batching, streaming
from east_agent.lm import checkpoint
from east_agent.simuleval_glue.cli import main

class Swallows:  # Python does not raise what a __del__ raises (a library import's lock)
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)

if sys.argv[1] == "one at a time, mid-run":  # SimulEval's own loop
    push_unit, last_units = streaming.StreamingDecoder.push_unit, []
    def counted_push_unit(self, unit, is_last=False):
        step = push_unit(self, unit, is_last)
        last_units.append(is_last)
        if sum(last_units) == 2 and is_last:  # as the second sentence finishes
            Swallows()
        return step
    streaming.StreamingDecoder.push_unit = counted_push_unit
elif sys.argv[1].startswith("as the model loads"):
    loaded = checkpoint.from_pretrained_here_or_hub
    def from_pretrained_here_or_hub(*arguments, **settings):
        Swallows()
        return loaded(*arguments, **settings)
    checkpoint.from_pretrained_here_or_hub = from_pretrained_here_or_hub
else:
    translate = batching.translate_batch
    def translate_batch(*arguments):
        for number, outcome in enumerate(translate(*arguments), 1):
            if number == 2:  # as the second sentence finishes
                Swallows()
            yield outcome
    batching.translate_batch = translate_batch
sys.argv[0:2] = ["east-simuleval"]
main()
"""


@pytest.mark.parametrize(
    ("when", "kept"),
    [
        ("as the model loads", 0),
        ("mid-run", 2),
        ("as the model loads, one at a time", 0),
        ("one at a time, mid-run", 2),
    ],
)
def test_a_ctrl_c_a_library_swallowed_ends_the_run(east_checkpoint, test_set, tmp_path, when, kept):
    """Before: every sentence translated and scored, exit 0 (one at a time, SimulEval's own
    loop: then "interrupted"). The sentences finished before the check are in the log, for
    a resume."""
    output = tmp_path / "out"
    batch = "1" if "one at a time" in when else "2"
    arguments = agent_arguments(east_checkpoint, test_set, output, "--batch-size", batch)
    result = python_with_ctrl_c(SWALLOWED, when, *arguments)
    assert result.returncode == -signal.SIGINT, result.stderr[-3000:]
    assert result.stderr.endswith("\neast-simuleval: interrupted\n")
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert len(instances(output) if (output / "instances.log").exists() else []) == kept
    assert not (output / "scores.tsv").exists()


def test_simulevals_half_precision_beside_auto_loads_and_records_float16(
    east_checkpoint, test_set, tmp_path
):
    """`--dtype fp16` with the default `--torch-dtype auto`: before, the weights loaded in
    the checkpoint's float32 and were cast by `.half()` after (buffers too), the run
    recorded as float32. Now loaded and recorded as float16, as `--torch-dtype float16`
    loads them: the same translations and delays."""
    runs = {}
    for name, flags in (("fp16", ["--dtype", "fp16"]), ("float16", ["--torch-dtype", "float16"])):
        output = tmp_path / name
        arguments = agent_arguments(east_checkpoint, test_set, output, "--end-index", "3")
        result = run_simuleval(*arguments, *flags, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads((output / "run_settings.json").read_text())["weights_dtype"] == "float16"
        runs[name] = without_timing(instances(output))
    assert runs["fp16"] == runs["float16"]
    # a log begun with one spelling resumes with the other (before: refused, "fp16")
    arguments = agent_arguments(east_checkpoint, test_set, tmp_path / "fp16", "--end-index", "4")
    resumed = run_simuleval(*arguments, "--torch-dtype", "float16", "--continue-unfinished")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(instances(tmp_path / "fp16")) == 4
