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
