"""SimulEval's writes made safe (`east_agent.simuleval_glue.simuleval_fixes`)."""

from __future__ import annotations

from types import SimpleNamespace

import pandas

from east_agent.simuleval_glue import simuleval_fixes


def test_simulevals_files_appear_whole_or_not_at_all(tmp_path):
    from simuleval.evaluator import SentenceLevelEvaluator, evaluator

    simuleval_fixes.apply()
    config = tmp_path / "config.yaml"
    with evaluator.open(config, "w") as handle:
        handle.write("source_type: text\n")
        assert not config.exists()  # nothing at the path until the file is whole
    assert config.read_text() == "source_type: text\n"

    log = tmp_path / "instances.log"
    handle = evaluator.open(log, "a")
    handle.write('{"index": 0}\n')
    assert log.read_text() == '{"index": 0}\n'  # on disk as soon as the line ends
    handle.close()

    (tmp_path / "scores.tsv").write_text("an earlier run's scores\n")
    scores = pandas.DataFrame({"BLEU": [12.5], "AL": [2.0]})
    fake = SimpleNamespace(output=tmp_path, results=scores, instances={})
    fake.instances = {0: SimpleNamespace(metrics={"BLEU": 12.5})}
    SentenceLevelEvaluator.dump_results(fake)
    SentenceLevelEvaluator.dump_metrics(fake)
    assert (tmp_path / "scores.tsv").read_text() == "BLEU\tAL\n12.5\t2.0\n"
    assert (tmp_path / "metrics.tsv").read_text() == "BLEU\n12.5\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "config.yaml", "instances.log", "metrics.tsv", "scores.tsv"
    ]  # fmt: skip
