import json

import pytest

from east_agent.simuleval_glue.instance_log import check_log


def write_log(path, indices):
    path.write_text("".join(json.dumps({"index": i, "prediction": "a"}) + "\n" for i in indices))
    return path


def test_a_log_of_consecutive_sentences_in_any_order_passes(tmp_path):
    check_log(write_log(tmp_path / "instances.log", [3, 5, 4]))  # a span from 3, batched
    check_log(write_log(tmp_path / "instances.log", []))


def test_sentences_missing_inside_a_log_are_named(tmp_path):
    log = write_log(tmp_path / "instances.log", [0, 1, 3, 4])
    with pytest.raises(ValueError, match="sentences 2 missing between 0 and 4 .*not scored"):
        check_log(log)
    log = write_log(tmp_path / "instances.log", [0, 30])
    with pytest.raises(ValueError, match="sentences 1, 2, .*, 10 and 19 more missing between"):
        check_log(log)


def test_a_sentence_twice_is_named(tmp_path):
    log = write_log(tmp_path / "instances.log", [0, 1, 0])
    with pytest.raises(ValueError, match=r"instances.log: line 3: sentence 0 again \(line 1\)"):
        check_log(log)
    log.write_text('{"index": "0"}\n')
    with pytest.raises(ValueError, match="line 1: not an instance record"):
        check_log(log)
