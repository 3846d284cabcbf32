import json
import os

import pytest

from east_agent.simuleval_glue.instance_log import (
    check_log,
    finished_records,
    record_lines,
    sort_log,
)


def write_log(path, indices):
    records = [{"index": i, "prediction": "a", "delays": [1]} for i in indices]
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_a_log_of_consecutive_sentences_in_any_order_passes(tmp_path):
    check_log(write_log(tmp_path / "instances.log", [3, 5, 4]))  # a span from 3, batched
    log = tmp_path / "instances.log"
    record = {"index": 0, "prediction": "a b", "delays": [1, 2], "prediction_length": 2}
    log.write_text(json.dumps({**record, "elapsed": [0.1, 0.3]}) + "\n")
    check_log(log)
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


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        ({"delays": "abc"}, "line 2: field 'delays' missing or not a list"),
        ({"delays": [1, "2"]}, "line 2: field 'delays': value 2 is '2'; they must be whole"),
        ({"delays": [2, 1]}, "line 2: field 'delays': value 2 (1) is below value 1 (2)"),
        ({"prediction": None}, "line 2: field 'prediction' missing or not a str"),
        ({"delays": None}, "line 2: field 'delays' missing or not a list"),
        # before: scored, the latency of a sentence a delay short (a log mended by hand)
        ({"prediction_length": 2}, "line 2: 1 delays for prediction_length 2: one delay an"),
        ({"elapsed": [0.1, 0.2]}, "line 2: 2 elapsed times for 1 delays: one each"),
        ({"source_length": 0}, "line 2: a delay of 1 units, past its source_length 0"),
    ],
)
def test_a_field_the_scorers_read_is_checked(tmp_path, edit, said):
    """Before: a traceback of SimulEval's scorers (a string among the delays, a null
    prediction), or (delays removed) the sentence left out of latency, exit 0."""
    log = write_log(tmp_path / "instances.log", [0, 1, 2])
    lines = log.read_text().splitlines()
    record = {**json.loads(lines[1]), **edit}
    log.write_text("\n".join([lines[0], json.dumps(record), lines[2]]) + "\n")
    with pytest.raises(ValueError) as raised:
        check_log(log)
    assert str(raised.value).startswith(f"{log}: {said}")


def test_a_torn_last_line_is_left_out_and_cut_only_by_the_writer(tmp_path):
    log = write_log(tmp_path / "instances.log", [0, 1])
    with open(log, "a") as handle:
        handle.write('{"index": 2, "predic')  # a run killed while writing it
    torn = log.read_text()
    inode = log.stat().st_ino
    assert [r["index"] for r in finished_records(log)] == [0, 1]
    assert log.read_text() == torn and log.stat().st_ino == inode  # a reader changes nothing
    assert [r["index"] for r in finished_records(log, trim=True)] == [0, 1]
    assert log.read_text() == torn[: torn.rindex("\n") + 1]


def test_an_unreadable_line_before_the_last_is_named_not_cut(tmp_path):
    log = tmp_path / "instances.log"
    log.write_text('{"index": 0}\ngarbage\n{"index": 2}\n{"index": 3}\n')
    text = log.read_text()
    for trim in (False, True):
        with pytest.raises(ValueError, match="instances.log: line 2: not an instance record"):
            finished_records(log, trim=trim)
    assert log.read_text() == text
    log.write_text('{"index": 0}\ngarbage\n')  # the last line: a torn write, left out
    assert [r["index"] for r in finished_records(log)] == [0]


def test_a_line_that_is_no_record_gets_the_advice_that_fits_it(tmp_path):
    """A resume drops a torn last line only (before: advised for a torn middle line too,
    which the resume then refused)."""
    log = tmp_path / "instances.log"
    whole = json.dumps({"index": 0, "prediction": "a", "delays": [1]})
    log.write_text(whole + '\n{"index": 1\n' + whole.replace("0", "2") + "\n")
    with pytest.raises(ValueError, match="line 2: .*lines follow it .*: remove or mend it$"):
        check_log(log)
    log.write_text(whole + '\n{"index": 1\n')
    with pytest.raises(ValueError, match="line 2: .*--continue-unfinished drops such a line$"):
        check_log(log)


def test_a_write_the_file_system_refuses_names_the_log(tmp_path):
    """A full disk or a size limit: `write()` names no file (before: `east-simuleval: File
    too large`, which file unsaid). A limit of 1 KiB stands in for a full disk."""
    import subprocess
    import sys

    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from east_agent.simuleval_glue.instance_log import InstanceLog\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))\n"
        "log = InstanceLog(Path(sys.argv[1]), resume=False)\n"
        "try:\n"
        "    log.append({'index': 0, 'prediction': 'x' * 4096})\n"
        "except OSError as error:\n"
        "    print(error.filename, error.strerror)\n"
    )
    log = tmp_path / "instances.log"
    done = subprocess.run(
        [sys.executable, "-c", script, str(log)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{log} File too large\n"
    # SimulEval's own loop's handle on the log (`simuleval_fixes`), the same
    script = (
        "import resource, sys\n"
        "from east_agent.simuleval_glue import simuleval_fixes\n"
        "from simuleval.evaluator import evaluator\n"
        "simuleval_fixes.apply()\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))\n"
        "try:\n"
        "    with evaluator.open(sys.argv[1], 'a') as handle:\n"
        "        handle.write('x' * 4096 + '\\n')\n"
        "except OSError as error:\n"
        "    print(error.filename, error.strerror)\n"
    )
    log.unlink()
    done = subprocess.run(
        [sys.executable, "-c", script, str(log)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{log} File too large\n"


def test_sorting_a_log_rewrites_it_only_out_of_order(tmp_path):
    """Its time is when its last sentence finished: a killed try's end (before: every
    resume of SimulEval's loop rewrote it, twice)."""
    log = tmp_path / "instances.log"
    log.write_text(record_lines([{"index": 0, "prediction": "a"}, {"index": 1, "prediction": "b"}]))
    os.utime(log, (1_000_000, 1_000_000))
    sort_log(log)
    assert log.stat().st_mtime == 1_000_000
    log.write_text(record_lines([{"index": 1, "prediction": "b"}, {"index": 0, "prediction": "a"}]))
    sort_log(log)
    assert [json.loads(line)["index"] for line in log.read_text().splitlines()] == [0, 1]
