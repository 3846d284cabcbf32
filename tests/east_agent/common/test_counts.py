from east_agent.common.counts import counted


def test_a_count_of_one_is_singular_and_any_other_plural():
    assert counted(1, "finished sentence") == "1 finished sentence"
    assert [counted(n, "chunk") for n in (0, 2)] == ["0 chunks", "2 chunks"]
