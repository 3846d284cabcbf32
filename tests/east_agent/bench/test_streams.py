"""`east-bench --streams`: each count against the sequential decoder, its own rows and
tokens, the rows kept when a run is cut short."""

import pytest
from commands import DEMO_MODEL

from east_agent.bench import cli, streams
from east_agent.bench.cli import main


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

    monkeypatch.setattr(streams, "progress", cut_at_three_streams)
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


def test_streams_are_counted_against_the_sentences_decoded():
    """A recorded schedule takes its sentences again in turn up to --limit; otherwise
    the test set's sentences are what there is."""
    args = cli.bench_parser().parse_args(["--model-path", "m", "--limit", "1200"])
    assert cli.sentences_decoded(args, 1000, None) == 1000
    assert cli.sentences_decoded(args, 1000, 2) == 1000  # waitk:2
    assert cli.sentences_decoded(args, 1000, [[(1, 2)]]) == 1200
    args.streams = [1, 1000]
    cli.check_stream_counts(args, 1000)
    with pytest.raises(ValueError, match="--streams 1000: more streams than the 999 "):
        cli.check_stream_counts(args, 999)
