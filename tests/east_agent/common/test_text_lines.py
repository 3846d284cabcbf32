"""Line-aligned text files: lines end at \\n or \\r\\n only, bad bytes are named."""

import gzip
import json
import os
import subprocess

import pytest

from east_agent.common.records import load_records
from east_agent.common.text_lines import (
    TextFileError,
    iter_lines,
    read_lines,
    read_simuleval_lines,
    read_text,
)
from east_agent.simuleval_glue.instance_log import check_log, finished_records

# every character but \n and \r at which str.splitlines() also ends a line
INNER_BREAKS = "\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def test_lines_end_at_newlines_only(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes(f"one{INNER_BREAKS}line\r\ntwo\n\nfour".encode())
    assert read_lines(path) == [f"one{INNER_BREAKS}line", "two", "", "four"]
    assert list(iter_lines(path)) == read_lines(path)


def test_no_empty_last_line_and_an_empty_file_has_none(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes(b"a\nb\n")
    assert read_lines(path) == ["a", "b"]
    path.write_bytes(b"")
    assert read_lines(path) == []


def test_gzip_is_read_through(tmp_path):
    path = tmp_path / "text.txt.gz"
    with gzip.open(path, "wb") as handle:
        handle.write("a\u2028b\nc\n".encode())
    assert read_lines(path) == ["a\u2028b", "c"]
    assert read_text(path) == "a\u2028b\nc\n"


@pytest.mark.parametrize("name", ["latin1.txt", "latin1.txt.gz"])
def test_a_file_that_is_not_utf8_is_named_with_line_and_column(tmp_path, name):
    path = tmp_path / name
    data = "fine\nein Café\nmore\n".encode("latin-1")
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    expected = rf"{name}: line 2: not UTF-8 \(byte 0xe9 at column 8\)$"
    with pytest.raises(TextFileError, match=expected):
        read_lines(path)
    with pytest.raises(TextFileError, match=expected):
        read_text(path)


def test_the_column_counts_characters(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes("née ".encode() + b"\xff\n")
    with pytest.raises(ValueError, match=r"line 1: not UTF-8 \(byte 0xff at column 5\)"):
        read_lines(path)


def test_a_carriage_return_inside_a_simuleval_line_is_refused(tmp_path):
    path = tmp_path / "source.txt"
    path.write_bytes(b"one\r\ntwo\rhalf\nthree\r\r\n")
    assert len(read_lines(path)) == 3
    with pytest.raises(TextFileError, match=r"source.txt: line 2, 3: a carriage return"):
        read_simuleval_lines(path)


def test_a_gzip_or_byte_order_marked_simuleval_file_is_refused(tmp_path):
    """SimulEval opens them as they are: before, a .gz passed this check (read through)
    and failed in SimulEval unnamed; a BOM became part of the first sentence's first word."""
    packed = tmp_path / "source.txt.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as handle:
        handle.write("ein Hund\n")
    assert read_lines(packed) == ["ein Hund"]
    with pytest.raises(TextFileError, match=r"source.txt.gz: gzip-compressed; SimulEval reads"):
        read_simuleval_lines(packed)
    marked = tmp_path / "source.txt"
    marked.write_bytes("\ufeffHund\nKatze\n".encode())
    with pytest.raises(TextFileError, match=r"source.txt: line 1: starts with a UTF-8 byte-"):
        read_simuleval_lines(marked)
    # a later line's: a file's first bytes (files joined with cat), taken before as text
    marked.write_bytes("Hund\n\ufeffKatze\n".encode())
    with pytest.raises(TextFileError, match=r"source.txt: line 2: starts with a byte-order"):
        read_simuleval_lines(marked)
    marked.write_bytes("Hund\nKat\ufeffze\n".encode())  # inside a line: a character
    assert read_simuleval_lines(marked) == ["Hund", "Kat\ufeffze"]


def test_gzip_is_known_by_its_bytes_and_a_cut_off_one_named(tmp_path):
    """Before: a plain file named .gz, or a gzip file cut off (a download), ended in
    gzip's BadGzipFile or EOFError traceback."""
    plain = tmp_path / "corpus.de.gz"
    plain.write_text("ein Hund\nzwei Katzen\n")
    assert read_lines(plain) == ["ein Hund", "zwei Katzen"]
    packed = gzip.compress(("ein Hund\n" * 2000).encode())
    cut = tmp_path / "cut.de.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    for read in (read_lines, read_text):
        with pytest.raises(TextFileError, match=r"cut.de.gz: line \d+: the gzip stream is cut off"):
            read(cut)
    fifo = tmp_path / "fifo"  # a pipe is read once: its first bytes are not lost
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"printf 'a b\\nc\\n' > {fifo}"])
    assert read_lines(fifo) == ["a b", "c"]
    writer.wait(timeout=30)


def test_a_nul_byte_is_named_a_utf16_file_refused(tmp_path):
    """Before: an ASCII file in UTF-16 read as UTF-8 with a NUL after every character,
    translated into garbage, exit 0."""
    wide = tmp_path / "source.txt"
    wide.write_bytes("ein Hund\nzwei\n".encode("utf-16-le"))
    for read in (read_lines, read_text):
        with pytest.raises(TextFileError, match=r"source.txt: line 1: a NUL byte at column 2"):
            read(wide)


def test_simuleval_reads_the_same_sentences(tmp_path):
    from simuleval.data.dataloader.t2t_dataloader import TextToTextDataloader

    source, target = tmp_path / "source.txt", tmp_path / "target.txt"
    source.write_bytes(f"ein{INNER_BREAKS}Hund\r\nzwei Hunde\n".encode())
    target.write_bytes(f"a{INNER_BREAKS}dog\ntwo dogs".encode())
    loader = TextToTextDataloader.from_files(source, target)
    assert [line.rstrip("\n") for line in loader.source_list] == read_simuleval_lines(source)
    assert [line.rstrip("\n") for line in loader.target_list] == read_simuleval_lines(target)


# -- the readers built on it -------------------------------------------------------------------


def test_json_lines_keep_a_line_separator_inside_a_string(tmp_path):
    path = tmp_path / "records.jsonl"
    records = [{"source": "a\u2028b\x85c", "reference": "x"}, {"source": "d", "reference": "y"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    assert load_records(path) == records


def test_a_record_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"source": "a"}\n{"source": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"records.jsonl: line 2: not UTF-8 \(byte 0xe9"):
        load_records(path)


def test_an_instance_log_that_is_not_utf8_is_named(tmp_path):
    log = tmp_path / "instances.log"
    log.write_bytes(
        b'{"index": 0, "prediction": "a", "delays": [1]}\n'
        b'{"index": 1, "prediction": "\xff", "delays": [1]}\n'
    )
    for read in (check_log, finished_records):
        with pytest.raises(ValueError, match=r"instances.log: line 2: not UTF-8 \(byte 0xff"):
            read(log)


def test_an_instance_log_with_crlf_lines_is_read(tmp_path):
    log = tmp_path / "instances.log"
    whole = b'"prediction": "a", "delays": [1]}'
    log.write_bytes(b'{"index": 0, ' + whole + b'\r\n{"index": 1, ' + whole + b'\r\n{"ind')
    original = log.read_bytes()
    assert [record["index"] for record in finished_records(log, trim=True)] == [0, 1]
    assert log.read_bytes() == original[: original.rindex(b"\n") + 1]
    check_log(log)


def test_an_input_file_may_be_a_pipe_but_not_a_folder_or_nothing(tmp_path):
    """A pipe is taken where a file is read once (training data, a log to score), and
    refused where it is read more than once (a SimulEval source: checked, then read)."""
    import os

    from east_agent.common.text_lines import check_input_file, check_regular_file

    reading, writing = os.pipe()
    try:
        check_input_file(f"/dev/fd/{reading}", "--source")  # as `<(...)` gives it
        with pytest.raises(ValueError, match=r"not a regular file \(a pipe\?\); it is read more"):
            check_regular_file(f"/dev/fd/{reading}", "--source")
    finally:
        os.close(reading)
        os.close(writing)
    with pytest.raises(ValueError, match=f"--source {tmp_path}: a folder, not a file"):
        check_input_file(tmp_path, "--source")
    with pytest.raises(ValueError, match="--source .*nothing: no such file"):
        check_input_file(tmp_path / "nothing", "--source")
