from east_agent.evaluation.reports import read_scores, score_cell, shown, write_tables


def test_simulevals_scores_get_the_tables_three_decimals():
    # scores.tsv drops trailing zeros ("1.87", "3.5"); OmniSTEval's cells keep three
    assert [score_cell(text) for text in ("1.87", "3.5", "32.581", "-37.6")] == [
        "1.870",
        "3.500",
        "32.581",
        "-37.600",
    ]
    assert score_cell("") == "" and score_cell("n/a") == "n/a"
    assert shown({"YAAL": 1.87, "EFSW": None}) == {"YAAL": "1.870", "EFSW": ""}


def test_curves_of_an_earlier_grid_go_when_nothing_is_left_to_draw(tmp_path):
    """Before: a grid whose table has one setting per system kept the last grid's curves
    beside it, drawn from runs the table no longer holds."""
    from east_agent.evaluation.reports import plot_curves

    def row(setting, laal, bleu):
        return {"system": "east", "setting": setting, "LAAL": laal, "BLEU": bleu}

    path = tmp_path / "curves.png"
    plot_curves([row("low", "1.5", "30.0"), row("high", "3.0", "35.0")], path, "set")
    assert path.read_bytes()[:4] == b"\x89PNG"
    plot_curves([row("high", "3.0", "35.0")], path, "set")
    assert not path.exists()


def test_long_form_curves_leave_out_a_run_omnisteval_could_not_score(tmp_path):
    """Such a run's row has no LongYAAL at all: the curves stopped the grid (KeyError)
    before its tables' significance tests."""
    from east_agent.evaluation.reports import plot_curves

    def row(setting, long_yaal, bleu):
        return {"system": "east", "setting": setting, "LongYAAL": long_yaal, "BLEU": bleu}

    unscored = {"system": "east", "setting": "medium", "BLEU": ""}
    path = tmp_path / "curves.png"
    rows = [row("low", "900.0", "30.0"), unscored, row("high", "1800.0", "35.0")]
    plot_curves(rows, path, "talks", long_form=True)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_a_grid_without_bleu_or_laal_writes_no_curves_and_says_so(tmp_path, capsys):
    """Before: `float(row["BLEU"])` of an empty cell stopped the grid after its runs; an
    earlier grid's curves, of other metrics, must not stay beside the new tables."""
    from pathlib import Path

    from east_agent.evaluation.config import EvalConfig
    from east_agent.evaluation.reports import write_curves

    def row(setting, laal):
        return {"system": "east", "setting": setting, "LAAL": laal, "BLEU": "", "COMET": "0.8"}

    rows = [row("low", "1.5"), row("high", "3.0")]
    path = tmp_path / "curves.png"
    path.write_bytes(b"\x89PNG earlier grid")
    config = EvalConfig(
        Path("grid.yaml"), "multi30k.de-en", "m", tmp_path, {}, quality_metrics=["COMET"]
    )
    write_curves(config, rows)
    assert not path.exists()
    printed = capsys.readouterr().out
    assert "no curves.png: BLEU against LAAL needs BLEU in the grid's metrics" in printed
    assert f"(the earlier {path}, of other metrics, removed)" in printed
    config.latency_metrics = ["AL"]
    write_curves(config, rows)
    assert "needs BLEU and LAAL in the grid's metrics\n" in capsys.readouterr().out


def test_a_run_without_a_timing_record_has_empty_time_cells(tmp_path, capsys):
    """A finished run's folder without `wall_seconds.json` (made by hand, or before runs
    were timed): before, the tables stopped the grid with FileNotFoundError."""
    import yaml

    from east_agent.evaluation.config import read_eval_config
    from east_agent.evaluation.grid import prepare
    from east_agent.evaluation.reports import collect

    tree = {
        "testset": "multi30k.de-en",
        "model_path": "m",
        "output": str(tmp_path / "out"),
        "systems": {"east": {"agent": "east", "latency": "low"}},
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(tree))
    config = read_eval_config(tmp_path / "grid.yaml")
    prepare(config)
    run = config.runs()[0]
    config.run_dir(run).mkdir(parents=True)
    (config.run_dir(run) / "scores.tsv").write_text("BLEU\tLAAL\n30.5\t2\n")
    [row] = collect(config, [run])
    assert (row["BLEU"], row["LAAL"], row["wall_seconds"], row["jobs"]) == (
        "30.500",
        "2.000",
        "",
        "",
    )


def test_a_bar_in_a_name_stays_in_its_markdown_cell(tmp_path):
    """Before: a system named `a|b` split its row of results.md into one column more."""
    write_tables([{"system": "a|b", "setting": "low"}], tmp_path, ("system", "setting"))
    assert (tmp_path / "results.md").read_text().splitlines()[2] == "| a\\|b | low |"
    assert (tmp_path / "results.csv").read_text().splitlines()[1] == "a|b,low"


def test_scores_of_no_sentence_are_read_as_empty_cells(tmp_path):
    """SimulEval writes NaN as an empty field: a run of no sentence (an empty shard) has a
    line of tabs, which stripping the file's text took away (a ValueError before)."""
    (tmp_path / "scores.tsv").write_text("BLEU\tLAAL\tAL\n\t\t\n")
    assert read_scores(tmp_path) == {"BLEU": "", "LAAL": "", "AL": ""}
    (tmp_path / "scores.tsv").write_text("BLEU\tLAAL\n30.5\t2.25\n")
    assert read_scores(tmp_path) == {"BLEU": "30.5", "LAAL": "2.25"}


def test_a_system_named_with_an_underscore_is_in_the_legend(tmp_path, monkeypatch):
    """matplotlib leaves out a `label` starting with `_`: such a system's line was drawn
    without a name."""
    import matplotlib.axes

    from east_agent.evaluation.reports import plot_curves

    shown = []
    original = matplotlib.axes.Axes.legend
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "legend",
        lambda self, *a, **k: shown.append(original(self, *a, **k)) or shown[-1],
    )
    rows = [
        {"system": system, "setting": setting, "LAAL": laal, "BLEU": "30.0"}
        for system in ("east", "_base")
        for setting, laal in (("low", "1.5"), ("high", "3.0"))
    ]
    plot_curves(rows, tmp_path / "curves.png", "set")
    assert [text.get_text() for text in shown[0].get_texts()] == ["east", "_base"]


def test_latency_metrics_asked_for_beyond_the_tables_are_shown(tmp_path):
    """Before: AP, DAL (the shipped configs ask for both) and ATD were scored and shown
    nowhere."""
    from pathlib import Path

    from east_agent.evaluation.config import EvalConfig
    from east_agent.evaluation.reports import TABLE_COLUMNS, table_columns

    config = EvalConfig(Path("grid.yaml"), "multi30k.de-en", "m", tmp_path, {})
    config.latency_metrics = ["LAAL", "AL", "LAAL_CA", "AL_CA"]
    assert table_columns(config) == TABLE_COLUMNS
    config.latency_metrics = ["LAAL", "AL", "AP", "DAL", "LAAL_CA", "AL_CA", "DAL_CA"]
    columns = table_columns(config)
    at = columns.index("LAAL_CA")
    assert columns[at + 1 : at + 4] == ("AP", "DAL", "DAL_CA")
    assert columns[: at + 1] + columns[at + 4 :] == TABLE_COLUMNS


def test_the_note_names_the_runs_asked_for_that_the_table_lacks():
    """With `--only`, runs not asked for are not named (before: every run of the config
    not run yet, said to have failed); one left out as made otherwise is."""
    from east_agent.evaluation.config import Run
    from east_agent.evaluation.reports import untabled_note

    runs = [Run(f"east-{level}", "east", level, "east", {}) for level in ("low", "high")]
    rows = [{"system": "east", "setting": "low"}]
    assert untabled_note(runs, rows, None).startswith("Not in this table: east-high (failed")
    assert untabled_note(runs, rows, ["east-low"]) == ""
    made_otherwise = ["east-low", "east-medium"]  # east-medium: not among the tabled runs
    assert untabled_note(runs, rows, made_otherwise).startswith("Not in this table: east-medium")
