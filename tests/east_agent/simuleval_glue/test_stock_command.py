"""What SimulEval's own `simuleval` command skips, checked by the agent it builds
(`stock_command`)."""

from __future__ import annotations

import argparse
import re
import sys

import pytest

from east_agent.common import entry
from east_agent.simuleval_glue.stock_command import checked_stock_command

AGENT_FLAGS = {"model_path": "model", "tgt_lang": "en"}


@pytest.fixture
def stock_run(tmp_path, monkeypatch):
    """`simuleval --system-dir submission --source src.txt --target ref.txt EXTRA` (or
    `--agent agent.py` in place of the folder) as SimulEval builds the agent: started in
    `tmp_path`, inside `submission` for the folder; the reference one line short. Call it
    with EXTRA's flags: the agent's flags it gives."""
    (tmp_path / "submission").mkdir()
    (tmp_path / "src.txt").write_text("Die Katze\nDer Hund\n")
    (tmp_path / "ref.txt").write_text("The cat\n")
    monkeypatch.setattr(entry, "_STARTED_IN", str(tmp_path))

    def run(*extra: str, system: list[str] | None = None, tgt_lang: str = "en"):
        system = system or ["--system-dir", "submission"]
        monkeypatch.chdir(tmp_path / "submission" if "--system-dir" in system else tmp_path)
        files = ["--source", "src.txt", "--target", "ref.txt"]
        monkeypatch.setattr(sys, "argv", ["simuleval", *system, *files, *extra])
        return checked_stock_command(argparse.Namespace(**{**AGENT_FLAGS, "tgt_lang": tgt_lang}))

    return run


def test_a_system_dirs_files_are_checked_as_named_where_it_started(stock_run, tmp_path):
    with pytest.raises(ValueError, match=r"^src.txt has 2 lines but ref.txt has 1: "):
        stock_run()
    (tmp_path / "ref.txt").write_text("The cat\nThe dog\n")
    args = stock_run("--eval-latency-unit", "char", "--sacrebleu-tokenizer", "zh", tgt_lang="zh")
    assert (args.source, args.target) == (str(tmp_path / "src.txt"), str(tmp_path / "ref.txt"))
    assert args.eval_latency_unit == "char" and args.model_path == "model"


@pytest.mark.parametrize(
    "extra, said",
    [
        # SimulEval's abbreviations, read as it reads them (before: not read, refused)
        (["--start-ind", "7"], "--start-index 7: must be at most the number of lines 2"),
        (["--target", ""], "--target is empty: name a file"),  # before: BLEU 0, exit 0
    ],
)
def test_the_command_line_is_read_as_simuleval_reads_it(stock_run, tmp_path, extra, said):
    (tmp_path / "ref.txt").write_text("The cat\nThe dog\n")
    with pytest.raises(ValueError, match=re.escape(said)):
        stock_run(*extra)


def test_an_agent_files_run_is_checked_too(stock_run, tmp_path):
    """`simuleval --agent FILE`: its files are the agent's flags already, checked the same
    (before: a reference one line short was SimulEval's AssertionError after the load)."""
    agent = ["--agent", "agent.py"]
    with pytest.raises(ValueError, match=r"^src.txt has 2 lines but ref.txt has 1: "):
        stock_run(system=agent)
    (tmp_path / "ref.txt").write_text("The cat\nThe dog\n")
    assert vars(stock_run(system=agent)) == AGENT_FLAGS  # nothing joined: SimulEval's own


@pytest.mark.parametrize(
    "extra",
    [
        ["--standalone"],  # a server, which reads no file (before: refused, no --target)
        ["--dataloader-class", "my.Loader"],  # not text files of lines
    ],
)
def test_runs_that_read_no_text_files_are_left_alone(stock_run, extra):
    assert vars(stock_run(*extra)) == AGENT_FLAGS


def test_a_system_dir_started_elsewhere_is_left_alone(stock_run, monkeypatch):
    """`east_agent` first imported inside the folder: where it started cannot be told."""
    monkeypatch.setattr(entry, "_STARTED_IN", "/")
    assert vars(stock_run()) == AGENT_FLAGS


def test_a_chinese_target_scored_in_words_is_refused(stock_run, tmp_path):
    """Before: scored, a negative AL, exit 0 (`east-simuleval` refused it)."""
    (tmp_path / "ref.txt").write_text("一只猫\n一只狗\n")
    with pytest.raises(ValueError, match="--eval-latency-unit word"):
        stock_run(tgt_lang="zh")
