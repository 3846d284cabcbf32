from east_agent.evaluation.reports import score_cell, shown


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
