"""A run's output folder (`--output`): who writes it, and what a new writer starts from.

Every way of writing a folder (SimulEval's loop, a batched run, `--score-only`) holds the
folder's lock from before its first write until its last (`INSTANCES_LOCK`): a second
process aimed at the same folder is refused before it touches anything. A run that will
write `instances.log` first removes the scores of an earlier log (`scores.tsv`,
`metrics.tsv`) and the record of how it was batched (`batch.json`): a folder has scores
only when they were made from the log beside them, and a grid counts a folder with
scores as finished. It records the settings that decide its translations
(`run_settings.json`: the agent and its flags, the model, the data files), and a resumed
run whose settings differ from those of the log it would extend is refused, naming them.

SimulEval's own loop resumes after the last line of the log, so before it resumes, the
log is made what it expects (`resume_in_index_order`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from east_agent.common.atomic import remove, write_atomically
from east_agent.common.run_lock import hold_run_lock
from east_agent.simuleval_glue.instance_log import finished_records, record_lines

INSTANCES_LOCK = "instances.lock"  # held while a process writes the folder
BATCH_RECORD = "batch.json"
SCORES = ("scores.tsv", "metrics.tsv")


def output_of(argv: list[str]) -> Path | None:
    """The `--output` folder of a command line, read as SimulEval's parser reads it (either
    spelling, the last one given); a flag without its value exits like argparse."""
    parser = argparse.ArgumentParser(prog="east-simuleval", add_help=False, allow_abbrev=False)
    parser.add_argument("--output", type=Path)
    known, _ = parser.parse_known_args(argv)
    return known.output


SETTINGS_RECORD = "run_settings.json"
# Flags that change how a run is scored, shown or hosted, never what it translates.
NOT_SETTINGS = {
    "output", "continue_unfinished", "batch_size", "no_progress_bar", "log_level",
    "score_only", "no_scoring", "quality_metrics", "latency_metrics", "computation_aware",
    "no_use_ref_len", "eval_latency_unit", "eval_latency_spm_model", "sacrebleu_tokenizer",
    "ca_unit_seconds", "remote_eval", "remote_address", "remote_port", "standalone",
    "slurm", "slurm_partition", "slurm_job_name", "slurm_time", "start_index", "end_index",
    "session_timeout", "kv_cache",
}  # fmt: skip
PATHS = {"agent", "user_dir", "system_dir", "source", "target", "model_path", "adapter_path"}


def translation_settings(args: argparse.Namespace) -> dict:
    """What decides a run's translations, from its parsed flags (paths made absolute)."""
    settings = {}
    for name, value in sorted(vars(args).items()):
        if name in NOT_SETTINGS or name.startswith("comet"):
            continue
        if name in PATHS and value is not None and Path(value).exists():
            value = str(Path(value).resolve())
        settings[name] = value
    return json.loads(json.dumps(settings, default=str))  # as it reads back from the record


@contextmanager
def writing(output: Path, settings: dict | None = None, resume: bool = False) -> Iterator[None]:
    """Hold `output` for this process. A run (`settings`: what decides its translations)
    clears what an earlier log left and records its settings, refusing to resume a log made
    with others; `--score-only` passes no settings and changes nothing."""
    with hold_run_lock(output, INSTANCES_LOCK):
        if settings is not None:
            if resume:
                check_same_settings(output, settings)
            write_atomically(output / SETTINGS_RECORD, json.dumps(settings, indent=2) + "\n")
            for name in (*SCORES, BATCH_RECORD):
                remove(output / name)
        yield


def check_same_settings(output: Path, settings: dict) -> None:
    """Refuse to extend a log written with other settings (a folder that never recorded
    them, or has no finished sentence, is taken as it is)."""
    record, log = output / SETTINGS_RECORD, output / "instances.log"
    if not record.exists() or not finished_records(log):
        return
    saved = json.loads(record.read_text(encoding="utf-8"))
    names = sorted(set(saved) | set(settings))
    differ = [name for name in names if saved.get(name) != settings.get(name)]
    if differ:
        shown = "; ".join(
            f"{name}: {saved.get(name)!r} there, {settings.get(name)!r} now" for name in differ
        )
        raise ValueError(
            f"{log} was written with other settings ({shown}); resume with the same flags, "
            "or write to another --output"
        )


def resume_in_index_order(log: Path, start: int, end: int) -> bool:
    """Make `log` the records of sentences `start`, `start + 1`, ... in index order, for
    SimulEval's loop to resume after the last one; return whether every sentence before
    `end` is there. A batched run finishes sentences out of order: the records after the
    first missing sentence are dropped (printed), to be translated again."""
    by_index = {record["index"]: record for record in finished_records(log)}
    kept, index = [], start
    while index < end and index in by_index:
        kept.append(by_index[index])
        index += 1
    dropped = len(by_index) - len(kept)
    if dropped:
        print(
            f"{log}: sentences {start}..{index - 1} are kept; {dropped} finished later "
            f"than sentence {index} (a batched run's order) are translated again",
            flush=True,
        )
    write_atomically(log, record_lines(kept))
    return index >= end
