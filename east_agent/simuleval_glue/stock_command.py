"""What SimulEval's own `simuleval` command skips that `east-simuleval` checks.

Evaluators of shared tasks run a submission with the stock command (`simuleval
--system-dir DIR`, or `--agent FILE`), which reads the data files and scores only after the
agent's model has loaded, and fails then on what `east-simuleval` refuses before: a
reference file of another length (SimulEval's AssertionError), a `--start-index` past the
source (a StatisticsError), a run without `--target` (BLEU 0, exit 0), a Chinese target
scored in words (a negative AL, exit 0). The agent, built by SimulEval, checks the command
line as SimulEval reads it (its own parser: its abbreviations too) before its model loads.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def checked_stock_command(args: argparse.Namespace) -> argparse.Namespace:
    """The agent's flags `args` once the stock command line's data files and scoring flags
    passed `east-simuleval`'s checks; under `--system-dir`, with the data files joined
    (SimulEval builds the folder's agent from its `main.yaml` and the general flags alone,
    inside the folder). Other runs (`east-simuleval`, which checked them itself; a
    `--standalone` server, which reads no file) are left as they are."""
    from simuleval.utils.arguments import check_argument

    from east_agent.common.entry import stock_simuleval_runs
    from east_agent.simuleval_glue.data_files import reads_text_files

    if not stock_simuleval_runs() or check_argument("standalone"):
        return args
    flags = _simuleval_reading(sys.argv[1:])
    system_dir = check_argument("system_dir")
    folder = command_folder(system_dir) if system_dir else Path.cwd()
    if flags is None or folder is None:
        return args  # SimulEval refuses its own flags; or where it started is not known
    _check_flags(flags, folder, getattr(args, "tgt_lang", None))
    if not system_dir or not flags.source or not reads_text_files(flags):
        return args
    files = {name: path and str(folder / path) for name, path in _data_files(flags).items()}
    return argparse.Namespace(**{
        **vars(args), **files, "eval_latency_unit": flags.eval_latency_unit
    })  # fmt: skip


def _simuleval_reading(argv: list[str]) -> argparse.Namespace | None:
    """The command line as SimulEval's parser reads it (None where it does not read: an
    unknown metric, a bad value, which SimulEval refuses itself)."""
    from east_agent.simuleval_glue.scoring import scoring_parser

    try:
        parser = scoring_parser(argv)
        # as the stock command reads them (east-simuleval turns abbreviations off in its
        # own command, `cli._flags_matched_whole`)
        parser.allow_abbrev = True
        return parser.parse_known_args(argv)[0]
    except (Exception, SystemExit):  # SimulEval's, or a plugin's, to say
        return None


def _data_files(flags: argparse.Namespace) -> dict[str, str | None]:
    return {"source": flags.source, "target": flags.target}


def _check_flags(flags: argparse.Namespace, folder: Path, tgt_lang: str | None) -> None:
    from east_agent.common.text_lines import check_path_given
    from east_agent.simuleval_glue.data_files import check_data_file_flags
    from east_agent.simuleval_glue.scoring import check_scoring_flags

    for name, path in _data_files(flags).items():
        check_path_given(path, f"--{name}")
    building_in = os.getcwd()
    os.chdir(folder)  # the files named as on the command line (SimulEval goes back after)
    try:
        check_data_file_flags(flags)
    finally:
        os.chdir(building_in)
    check_scoring_flags(flags, tgt_lang)


def command_folder(system_dir: str) -> Path | None:
    """The folder `simuleval --system-dir` was started in, while it builds the agent inside
    `system_dir` (None where that cannot be told: `east_agent` imported there first)."""
    from east_agent.common.entry import started_in

    started = started_in()
    if started is None or Path(started, system_dir).resolve() != Path.cwd().resolve():
        return None
    return Path(started)
