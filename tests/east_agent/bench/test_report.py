"""The tables appended to `--output`, and output files checked before any model loads."""

import os
import shutil
import stat
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from commands import DEMO_MODEL

from east_agent.bench import cli
from east_agent.bench.cli import main


def test_a_report_to_a_device_leaves_the_device(tmp_path, capsys):
    """`--output /dev/null` (before: the device replaced by a file holding the tables)."""
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("no permission to make a device node")
    main([
        "--model-path", str(DEMO_MODEL), "--limit", "1", "--num-beams", "1",
        "--kv-caches", "dynamic", "--copy-megabytes", "8", "--schedule", "waitk:2",
        "--output", str(tmp_path / "null"),
    ])  # fmt: skip
    assert stat.S_ISCHR((tmp_path / "null").stat().st_mode)
    assert os.listdir(tmp_path) == ["null"] and "| method |" in capsys.readouterr().out


def test_a_report_is_appended_to_its_markdown_file(tmp_path, capsys):
    from east_agent.bench.report import publish

    output = tmp_path / "RESULTS.md"
    output.write_text("# Results\n")
    publish("| a |\n", str(output))
    publish("| b |\n", str(output))
    assert output.read_text() == "# Results\n\n| a |\n\n| b |\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["RESULTS.md"]


@pytest.mark.parametrize("kind", ["not UTF-8", "gzip"])
def test_an_output_file_that_is_not_utf8_is_refused_before_the_model_loads(
    tmp_path, monkeypatch, capsys, kind
):
    """Before: refused by the append, after the whole benchmark (a gzip file too, once
    the text readers read gzip by its bytes)."""
    import gzip

    monkeypatch.setattr(cli, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    output = tmp_path / "results.md"
    content = b"# R\xe9sultats\n" if kind == "not UTF-8" else gzip.compress(b"# Results\n")
    output.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", "waitk:2", "--output", str(output)])
    assert exit_info.value.code == 2
    said = {
        "not UTF-8": f"{output}: line 1: not UTF-8 (byte 0xe9 at column 4)",
        "gzip": f"--output {output}: gzip-compressed; name a Markdown file",
    }[kind]
    assert capsys.readouterr().err == f"east-bench: {said}\n"
    assert output.read_bytes() == content


@contextmanager
def unwritable(path: Path):
    """`path` (a folder or a file) that takes no write: read-only, or immutable for root,
    whom permission bits do not stop (skipped where `chattr +i` cannot be set)."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o500 if path.is_dir() else 0o400)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode:
        pytest.skip("root, and no immutable file here (chattr +i)")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)


@pytest.mark.parametrize("flag", ["--output", "--save-schedule"])
def test_an_output_folder_that_takes_no_file_is_refused_before_the_model_loads(
    tmp_path, monkeypatch, capsys, flag
):
    """Before: the folder was made, not tried, and the write failed after the whole run."""
    monkeypatch.setattr(cli, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    folder = tmp_path / "read-only"
    folder.mkdir()
    followed = [] if flag == "--save-schedule" else ["--schedule", "waitk:2"]
    with unwritable(folder), pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", *followed, flag, str(folder / "x.md")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    said = f"east-bench: {flag} {folder / 'x.md'}: cannot write in its folder {folder}: "
    assert error.startswith(said) and error.count("\n") == 1
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("flag", ["--output", "--save-schedule"])
def test_an_empty_output_path_is_refused(monkeypatch, capsys, flag):
    """Before: taken as no --output, the tables written nowhere, exit 0."""
    monkeypatch.setattr(cli, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", flag, ""])
    assert exit_info.value.code == 2
    assert f"argument {flag}: an empty path: name a file" in capsys.readouterr().err


def test_an_output_file_that_takes_no_append_is_refused_before_the_model_loads(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(cli, "load_bench_model", lambda *a: pytest.fail("model loaded"))
    output = tmp_path / "results.md"
    output.write_text("# Results\n")
    with unwritable(output), pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "nowhere", "--schedule", "waitk:2", "--output", str(output)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"east-bench: --output {output}: cannot append to it: ")
    assert error.count("\n") == 1
    assert output.read_text() == "# Results\n"
