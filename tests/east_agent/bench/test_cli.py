"""`east-bench`'s command line: a whole run, its flags refused before the model loads,
Ctrl-C, help."""

import signal

import pytest
import torch
from commands import DEMO_MODEL, python_with_ctrl_c

from east_agent.bench import cli
from east_agent.bench.cli import main


def test_benchmark_command_runs_and_reports(tmp_path, capsys, llama3_tokenizer):
    output = tmp_path / "results.md"
    main([
        "--random-model", "llama3-tiny", "--tokenizer", llama3_tokenizer,
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


SWALLOWED_IN_A_STAGE = """
import os, signal, sys
from east_agent.decoding.east import EastStreamDecoder
from east_agent.bench.cli import main

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

    monkeypatch.setattr(cli, "load_bench_model", load_bench_model)
    # a schedule to save is the model's own: not with --schedule
    followed = [] if {"--save-schedule", "--schedule"} & set(flags) else ["--schedule", "waitk:2"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", *followed, *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert loaded == []


def test_a_broken_model_folder_is_one_line(tmp_path, capsys):
    """Before: tracebacks (a config that does not parse), or a reshape error after the
    first method ran (a generation config that is no JSON)."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(DEMO_MODEL, broken, ignore=shutil.ignore_patterns("alignments"))
    (broken / "generation_config.json").write_text("{nope")
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", str(broken), "--limit", "3", "--kv-caches", "dynamic"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"east-bench: --model-path {broken}: generation_config.json cannot ")
    assert "Traceback" not in error


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
    args = cli.bench_parser().parse_args(["--model-path", "m", "--num-beams", str(most)])
    cli.check_num_beams(args, model, tokenizer, scripted)
    mask = torch.zeros(vocab, dtype=torch.bool)
    step = BeamStep((0.0,), factor * most, most, mask, stops, at_max_length=False)
    (choices,) = beam_choices(torch.randn(1, vocab), [step])
    assert len(choices.keep) == most
    more = BeamStep((0.0,), factor * (most + 1), most + 1, mask, stops, at_max_length=False)
    with pytest.raises(RuntimeError, match="selected index k out of range"):
        beam_choices(torch.randn(1, vocab), [more])
    args.num_beams = most + 1
    with pytest.raises(ValueError, match=f"at most {most} beams here"):
        cli.check_num_beams(args, model, tokenizer, scripted)


def test_too_many_beams_are_refused_before_any_decoding(monkeypatch, capsys):
    """Before: "selected index k out of range" from the first beam search."""
    monkeypatch.setattr(cli, "decoder_runs", lambda *a: pytest.fail("decoded"))
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
    parser = cli.bench_parser()
    assert parser.parse_args(["--random-model", "llama3-tiny"]).limit == 100
    assert parser.parse_args(["--random-model", "llama3-tiny", "--sentences", "7"]).limit == 7
    assert parser.parse_args(["--random-model", "llama3-tiny", "--limit", "9"]).limit == 9
