"""A run's output folder (`--output`): who writes it, and what a new writer starts from.

- One writer at a time. Every way of writing a folder (SimulEval's loop, a batched run,
  `--score-only`) holds its lock (`INSTANCES_LOCK`) from before its first write until its
  last, scores included: a second process aimed at the same folder is refused before it
  touches anything.
- A fresh run (no `--continue-unfinished`) empties the log as it takes the folder, and a
  run that will translate removes the scores of an earlier log (`scores.tsv`,
  `metrics.tsv`, `scoring.json`) and the record of how it was batched (`batch.json`): a
  folder has scores only when they were made from the log beside them, and a grid counts
  a folder with scores as finished.
- The settings that decide the translations (the agent and its flags, the model, the
  data files; not where it runs nor how it is scored; of a `--system-dir`, its
  `main.yaml`'s flags and its model) are recorded with the log
  (`run_settings.json`), and a resumed run that asks for other settings is refused, naming
  them. Data files are known by their content, so a folder moved with its test set (a
  grid's) resumes, and model folders by a fingerprint of theirs
  (`east_agent.common.fingerprint.folder_fingerprint`),
  so a moved or copied checkpoint resumes too. A run whose settings cannot be
  read here (another agent's `--system-dir`, `--remote-eval`) leaves no record, resumes a
  log without one as it is, and refuses one with a record; a run whose settings are known
  refuses to resume a log without one (either could hold another system's sentences);
  `east-remote-eval` records the language this package's server reads (and keeps the
  record of a log it resumes, refusing one of another source language).
- The sessions a killed `east-remote-eval` left open on its server are closed by whoever
  takes the folder next (`server_sessions`).
- A resumed log must lie within the run's `--start-index` .. `--end-index`: sentences
  outside it would be scored with it.
- SimulEval's own loop resumes a batched run's log (finished out of order) as a batched
  run does: every finished sentence kept, every missing one translated
  (`simuleval_fixes`), the log in index order before and after (`resume_in_index_order`,
  `loop_in`). Sentences an older version set aside (`SET_ASIDE`) while its loop
  translated them again go back in the log where it did not.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from east_agent.common.arguments import torch_dtype_of
from east_agent.common.atomic import check_folder_path, remove, write_atomically
from east_agent.common.counts import counted, instance_kind
from east_agent.common.fingerprint import path_setting, same_setting, shown_setting
from east_agent.common.records import read_json_object
from east_agent.common.run_lock import hold_run_lock
from east_agent.common.text_lines import check_path_given
from east_agent.simuleval_glue.instance_log import finished_records, record_lines, sort_log
from east_agent.simuleval_glue.scoring import SCORING_RECORD
from east_agent.simuleval_glue.server_sessions import SESSIONS_RECORD, close_stale_sessions

INSTANCES_LOCK = "instances.lock"  # held while a process writes the folder
BATCH_RECORD = "batch.json"
SCORES = ("scores.tsv", "metrics.tsv", SCORING_RECORD)
SETTINGS_RECORD = "run_settings.json"
# finished sentences an older version's resume of SimulEval's loop translated again, kept
# until it had: the next resume puts back those it did not
SET_ASIDE = "instances.set-aside.log"
# every file a run writes in its folder (SimulEval's log and config, and this package's)
RUN_FILES = (
    "instances.log", "config.yaml", INSTANCES_LOCK, BATCH_RECORD, *SCORES, SETTINGS_RECORD,
    SESSIONS_RECORD, SET_ASIDE,
)  # fmt: skip
# Flags that change where a run happens, how it is scored, shown or hosted, or which of
# its sentences it takes, never what it translates nor how its log records it (SimulEval
# logs `prediction`, `delays` and `prediction_length` in --eval-latency-unit's units).
NOT_SETTINGS = {
    "output", "continue_unfinished", "batch_size", "no_progress_bar", "log_level",
    "score_only", "no_scoring", "quality_metrics", "latency_metrics", "computation_aware",
    "no_use_ref_len", "sacrebleu_tokenizer",
    "ca_unit_seconds", "remote_eval", "remote_address", "remote_port", "standalone",
    "slurm", "slurm_partition", "slurm_job_name", "slurm_time", "start_index", "end_index",
    "session_timeout", "batch_wait_ms", "kv_cache", "device", "agent", "source_type", "target_type",
    # a system folder is known by what it holds (its agent, flags and model), not where it is
    "system_dir", "system_config",
    "source_segment_size",  # a text source is sent a unit at a time whatever it says
}  # fmt: skip
# how the log records the translations (not what they are), recorded since 2026-12-05: a
# record written before holds none and is not compared for them (an east-eval grid of a
# Chinese target logged `char`, others SimulEval's `word`)
LOG_UNIT_SETTINGS = frozenset({"eval_latency_unit", "eval_latency_spm_model"})
# the dtype the weights were loaded in (`--torch-dtype auto` on this device), recorded since
# 2026-12-05 (later): a CPU log (float32) resumed on a GPU (bfloat16) would mix the two
WEIGHTS_DTYPE = "weights_dtype"
# what this package's agents resolve their flags to (`StreamingAgent.resolved_settings`,
# recorded since 2026-12-05, later still): the languages their prompt names (`de` and
# `German` are one prompt), the context a decoder holds and, in long form, its cache budget
# (`--max-context 512` is the run of none on a checkpoint of 512 positions)
PROMPT_LANGUAGES = "prompt_languages"
EFFECTIVE_CONTEXT = "effective_context"
# settings a record written before named none of: compared only where both records do
RECORDED_LATER = LOG_UNIT_SETTINGS | {WEIGHTS_DTYPE, PROMPT_LANGUAGES, EFFECTIVE_CONTEXT}
# flags compared by what they resolve to where both records name that (records of this
# package's agents), by themselves otherwise (another agent's, or an older record)
RESOLVED_IN = {
    "torch_dtype": WEIGHTS_DTYPE,
    # SimulEval's half-precision flags: `--fp16` is `--torch-dtype float16` (`torch_dtype_of`)
    "fp16": WEIGHTS_DTYPE,
    "dtype": WEIGHTS_DTYPE,
    "src_lang": PROMPT_LANGUAGES,
    "tgt_lang": PROMPT_LANGUAGES,
    "max_context": EFFECTIVE_CONTEXT,
    "cache_budget": EFFECTIVE_CONTEXT,
}
# a flag no decoder reads where another setting has this value: wait-k's offline prompt
# asks for no latency level, and greedy decoding has no beams to stop
UNREAD_WHERE = {"latency": ("prompt", "offline"), "beam_stop": ("num_beams", 1)}
# the sentences the run that wrote the record covers ([start, end]), not a setting: a
# resumed run may cover more; `--score-only` refuses a log lacking some of them
SPAN = "span"
PATHS = {"user_dir", "system_dir", "source", "target", "model_path", "adapter_path"}
MODEL_FOLDERS = {"model_path", "adapter_path"}  # known by a fingerprint, other folders by path
PLAIN = (str, int, float, bool, type(None))


def computation_aware_note(streams: int, shared: Sequence[str]) -> str:
    """How `elapsed` was measured, for `batch.json`."""
    if streams == 1:
        return f"elapsed measured with one stream on {' or '.join(shared)} (single-stream)"
    return (
        f"elapsed measured with up to {streams} streams sharing {' or '.join(shared)} "
        "(single-stream: --batch-size 1)"
    )


def streams_of(output: Path) -> int:
    """How many streams shared the device in a run (its computation-aware latency's
    setting): 1 for SimulEval's own loop; a batched run says in `batch.json`."""
    record = output / BATCH_RECORD
    return read_json_object(record)["streams"] if record.exists() else 1


def combined_batch_record(records: Sequence[dict]) -> dict:
    """One `batch.json` for sentences timed by several runs (a resumed log, merged shards):
    the most streams any of them had, and everything they shared (the device, a server)."""
    most = max(records, key=lambda record: record["streams"])
    shared = sorted({what for record in records for what in _shared(record)})
    return {
        "batch_size": most["batch_size"],
        "streams": most["streams"],
        "sharing": shared,
        "computation_aware": computation_aware_note(most["streams"], shared),
    }


def _shared(record: dict) -> list[str]:
    if "sharing" in record:
        return record["sharing"]
    # records written before 2026-12-03 say it only in their text
    return ["the server" if "sharing the server" in record["computation_aware"] else "the device"]


def output_of(argv: list[str]) -> Path | None:
    """The `--output` folder of a command line, read as SimulEval's parser reads it (either
    spelling, the last one given); a flag without its value exits like argparse."""
    return _paths_of(argv).output


def _paths_of(argv: list[str]) -> argparse.Namespace:
    """The path flags as given (`""` too: `Path` would make it the current folder)."""
    parser = argparse.ArgumentParser(prog="east-simuleval", add_help=False, allow_abbrev=False)
    for flag in ("--output", "--source", "--target"):
        parser.add_argument(flag)
    paths = parser.parse_known_args(argv)[0]
    for flag, kind in (("output", "folder"), ("source", "file"), ("target", "file")):
        value = getattr(paths, flag)
        # before: `--output ""` wrote the log, its lock and record into `.`, exit 0
        check_path_given(value, f"--{flag}", kind)
        setattr(paths, flag, None if value is None else Path(value))
    return paths


def check_output_folder(argv: list[str]) -> None:
    """An `--output` that is a file, or inside one, is refused saying so (a bare errno or a
    traceback before); so is a `--source` or `--target` that is one of the files the run
    writes there (before: emptied or replaced by the log or the scores)."""
    paths = _paths_of(argv)
    if paths.output is None:
        return
    check_folder_path(paths.output, "--output")
    written = {paths.output.resolve() / name: name for name in RUN_FILES}
    for flag, path in (("--source", paths.source), ("--target", paths.target)):
        if path is not None and path.resolve() in written:
            raise ValueError(
                f"{flag} {path} is the {written[path.resolve()]} this run writes in --output "
                f"{paths.output}: it would be written over; move it out of the folder"
            )


def translation_settings(agent_class: type, args: argparse.Namespace) -> dict:
    """What decides a run's translations: the agent class and its parsed flags (data and
    model paths made absolute; values that are not plain data left out)."""
    # the class's name: SimulEval imports an agent file as module `agents`, a grid by its
    # package name
    settings = {"agent_class": agent_class.__qualname__}
    for name, value in sorted(vars(args).items()):
        if name in NOT_SETTINGS or name.startswith("comet") or name == "agent_class":
            continue
        if isinstance(value, (list, tuple)) and all(isinstance(item, PLAIN) for item in value):
            value = list(value)
        elif not isinstance(value, PLAIN):
            continue
        if name in PATHS and value is not None:
            value = path_setting(Path(value), name in MODEL_FOLDERS)
        settings[name] = value
    if isinstance(getattr(args, "torch_dtype", None), str):
        from east_agent.lm.checkpoint import weights_dtype

        device, model_path = getattr(args, "device", "cpu"), getattr(args, "model_path", None)
        settings[WEIGHTS_DTYPE] = weights_dtype(torch_dtype_of(args), device, model_path)
    resolved = getattr(agent_class, "resolved_settings", None)
    if resolved is not None:  # this package's agents (`StreamingAgent`)
        settings.update(resolved(args))
    return settings


@contextmanager
def writing(
    output: Path,
    settings: dict | None = None,
    resume: bool = True,
    run: bool = False,
    span: tuple[int, int] | None = None,
    check: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Hold `output` for this process. A run (`run`) that is not resumed empties the log;
    a resumed one is checked against the log: its `settings` (None: not known here, no
    record kept) and its `span` of sentences (`start`, `end`; None: not known). `check`
    (the checks that read the checkpoint) runs then, before the folder changes, and the
    settings are recorded (a folder not there yet is made only once `check` passed).
    `--score-only` only holds the folder."""
    if check is not None and not output.exists():  # nothing to hold or resume yet
        check()
        check = None
    with hold_run_lock(output, INSTANCES_LOCK):
        close_stale_sessions(output)  # a killed client's, holding a server's streams
        if run and resume:
            restore_set_aside(output)
            if span is not None:
                check_within_span(output / "instances.log", *span)
            if settings is not None:
                check_same_settings(output, settings)
            else:
                check_unrecorded_resume(output)
        if check is not None:
            check()
        if run:
            log = output / "instances.log"
            said_of_earlier_work(output, resume, long_form_run(settings))
            if not resume:  # the old scores go first: never beside an emptied log
                clear_scores(output)
                remove(output / SET_ASIDE)  # first: never put back into a fresh log
                write_atomically(log, "")
            record = output / SETTINGS_RECORD
            if settings is None:
                remove(record)
            else:
                covered = {} if span is None else {SPAN: list(span)}
                write_atomically(record, json.dumps({**settings, **covered}, indent=2) + "\n")
        yield


def says_long_form(settings: object) -> bool:
    """Whether settings (a run's record, or what a server says of its system) read each
    source line as a talk."""
    return isinstance(settings, dict) and settings.get("long_form") is True


def long_form_run(settings: dict | None) -> bool:
    """Whether a run of these settings (a local run's, or `east-remote-eval`'s, whose
    `served` are its server's) reads each source line as a talk."""
    return says_long_form(settings) or says_long_form((settings or {}).get("served"))


def said_of_earlier_work(output: Path, resume: bool, long_form: bool = False) -> None:
    """A run over a log with finished sentences (talks, `long_form`) says what becomes of
    them: resumed after, or replaced by a fresh run (before: a progress bar at 177/1000, or
    at 0, alone)."""
    try:
        finished = finished_in(output) if (output / "instances.log").exists() else 0
    except ValueError:  # a log a fresh run replaces whatever it holds (resumes check it)
        return
    if not finished:
        return
    log = output / "instances.log"
    finished_ones = counted(finished, f"finished {instance_kind(long_form)}")
    if resume:
        torn = " (a last line a kill cut off is dropped)" if has_torn_tail(log) else ""
        said = f"note: {log}: resumed after its {finished_ones}{torn}"
        print(said, file=sys.stderr)
        return
    print(
        f"note: {log}: its {finished_ones} replaced by this fresh run "
        "(--continue-unfinished goes on after them)",
        file=sys.stderr,
    )


def has_torn_tail(log: Path) -> bool:
    """Whether the log ends in part of a line (a write a kill cut off), which a resume drops."""
    with open(log, "rb") as handle:
        if handle.seek(0, os.SEEK_END) == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


def clear_scores(output: Path, batching: bool = True) -> None:
    """Remove the scores of an earlier log (and, with `batching`, how it was batched)."""
    for name in (*SCORES, BATCH_RECORD) if batching else SCORES:
        remove(output / name)


def score_complete_log(output: Path, score: Callable[[], None] | None) -> None:
    """A resumed log with nothing left to translate (a run killed while scoring): scored
    again, its old scores gone first; with no scoring (`score` None), left as it is with
    any scores made from it (before: `--no-scoring` removed them and wrote none)."""
    if score is None:
        print(
            f"note: {output / 'instances.log'} is complete: nothing translated, nothing "
            "scored (--no-scoring), its scores kept if it has any",
            file=sys.stderr,
        )
        return
    clear_scores(output, batching=False)
    score()


def settings_differ(saved: dict, settings: dict) -> list[str]:
    """The names of the settings in which two records differ (data files by content; a
    flag by what it resolves to where both records name that, `RESOLVED_IN`; not a flag
    no decoder reads there, `UNREAD_WHERE`)."""
    recorded_by_both = set(saved) & set(settings)
    names = sorted((set(saved) | set(settings)) - {SPAN})
    return [
        name
        for name in names
        if (name not in RECORDED_LATER or name in recorded_by_both)
        and RESOLVED_IN.get(name) not in recorded_by_both
        and not _unread(name, saved, settings)
        and not same_setting(saved.get(name), settings.get(name))
        and not (name == WEIGHTS_DTYPE and _same_checkpoint_dtype(saved, settings))
    ]


def _same_checkpoint_dtype(one: dict, other: dict) -> bool:
    """A record written before the checkpoint's own dtype was named (`--torch-dtype auto`
    on a GPU: "the checkpoint's") and one that names it: the same weights where both ask
    `auto` and the named one is not float32, which a CPU's `auto` names too (a GPU's
    float32 checkpoint is refused with it, to be safe; the checkpoints themselves are
    compared apart)."""
    if not one.get("torch_dtype") == other.get("torch_dtype") == "auto":
        return False
    from east_agent.lm.checkpoint import CHECKPOINT_DTYPE

    values = {one.get(WEIGHTS_DTYPE), other.get(WEIGHTS_DTYPE)}
    return CHECKPOINT_DTYPE in values and not values & {"float32", None}


def _unread(name: str, saved: dict, settings: dict) -> bool:
    other = UNREAD_WHERE.get(name)
    return other is not None and saved.get(other[0]) == settings.get(other[0]) == other[1]


def recorded_settings(record: dict) -> dict:
    """A `run_settings.json`'s translation settings: those of the system an
    `east-remote-eval` run asked (`served`, as its server said them) with its data files and
    log units, or, written by a local run, the record itself; names that are no settings
    now (an older record's `source_segment_size`) left out."""
    record = {name: value for name, value in record.items() if name not in NOT_SETTINGS}
    served = record.get("served")
    if not isinstance(served, dict):
        return record
    own = ("source", "target", *sorted(LOG_UNIT_SETTINGS))
    system = {name: value for name, value in served.items() if name not in LOG_UNIT_SETTINGS}
    return {**system, **{name: record[name] for name in own if name in record}}


def check_same_settings(output: Path, settings: dict) -> None:
    """Refuse to extend a log written with other settings, or with settings it never
    recorded (a folder with no finished sentence is taken as it is)."""
    record, log = output / SETTINGS_RECORD, output / "instances.log"
    finished = finished_records(log)
    if not finished:
        return
    if not record.exists():
        raise ValueError(
            f"{log} holds sentences ({len(finished)} finished) translated with settings it "
            f"does not record (no {SETTINGS_RECORD}: written by another command, the stock "
            "`simuleval` or a `--system-dir` run); resume it with that command, or write "
            "to another --output"
        )
    saved, settings = recorded_settings(read_json_object(record)), recorded_settings(settings)
    differ = settings_differ(saved, settings)
    if differ:
        shown = differences_shown(differ, saved, settings)
        raise ValueError(
            f"{log} was written with other settings ({shown}); resume with the same flags, "
            "or write to another --output"
        )


def differences_shown(names: Sequence[str], there: dict, now: dict) -> str:
    """The settings `names`, as the log's record has them and as asked now, for a message."""
    return "; ".join(
        f"{name}: {shown_setting(there.get(name))} there, {shown_setting(now.get(name))} now"
        for name in names
    )


def check_unrecorded_resume(output: Path) -> None:
    """Refuse to extend a log whose run recorded its settings with a run whose settings are
    not known here (another agent's `--system-dir`, SimulEval's `--remote-eval`): it
    could be another system's, and its record would go."""
    record, log = output / SETTINGS_RECORD, output / "instances.log"
    finished = finished_records(log)
    if finished and record.exists():
        raise ValueError(
            f"{log} holds sentences ({len(finished)} finished) of a run that recorded its "
            f"settings ({SETTINGS_RECORD}), and this run's cannot be read here (another "
            "agent's --system-dir, or --remote-eval): resume it with the command that "
            "wrote it, or write to another --output"
        )


def resume_in_index_order(log: Path, start: int, end: int) -> bool:
    """Put `log` in index order (a batched run finishes sentences out of order; SimulEval's
    loop then translates the ones it lacks, `simuleval_fixes`) and return whether every
    sentence of `start` .. `end - 1` is there. A log holding sentences outside the span is
    refused (they would be scored with it)."""
    records = finished_records(log, trim=True)
    indices = [record["index"] for record in records]
    _refuse_outside(log, indices, start, end)
    if indices != sorted(indices):
        write_atomically(log, record_lines(sorted(records, key=lambda record: record["index"])))
    return start < end and set(range(start, end)) <= set(indices)


def logged_and_set_aside(output: Path, trim: bool = False) -> tuple[list[dict], list[dict]]:
    """A run folder's finished sentences: its log's records, and those set aside for
    SimulEval's loop that it has not logged again (`trim`: its writer's torn last line cut
    off the log, as `finished_records` does; otherwise read only)."""
    logged = finished_records(output / "instances.log", trim=trim)
    again = {record["index"] for record in logged}
    aside = finished_records(output / SET_ASIDE)
    return logged, [record for record in aside if record["index"] not in again]


def kept_records(output: Path) -> list[dict]:
    logged, aside = logged_and_set_aside(output)
    return logged + aside


def finished_in(output: Path) -> int:
    return len(kept_records(output))


def restore_set_aside(output: Path) -> None:
    """Put the sentences set aside for SimulEval's loop back in the log where the loop has
    not logged them again (it stopped before them: an overflowing sentence, a kill), in
    index order, and remove the file (before: such sentences were lost)."""
    if not (output / SET_ASIDE).exists():
        return
    logged, back = logged_and_set_aside(output, trim=True)
    if back:
        merged = sorted(logged + back, key=lambda record: record["index"])
        write_atomically(output / "instances.log", record_lines(merged))
    remove(output / SET_ASIDE)


def check_recorded_span(output: Path) -> None:
    """Refuse a log lacking sentences of the span its run covered (recorded with its
    settings): the run stopped, or some sentences failed, and scores of the rest would
    not be the run's. A record from before names no span: the log is taken as it is."""
    missing = missing_from_span(output)
    if missing:
        raise ValueError(
            f"{output / 'instances.log'}: {missing}: failed, or not reached when the run "
            "stopped; not scored: --continue-unfinished translates them"
        )


def missing_from_span(output: Path) -> str | None:
    """The sentences of the span a run recorded (its first and end) that its log lacks,
    said (`3 of the run's sentences 0 .. 4 are missing (2, 3, 4)`), or None: none, or a
    record from before, which names no span."""
    record, log = output / SETTINGS_RECORD, output / "instances.log"
    span = read_json_object(record).get(SPAN) if record.exists() else None
    if span is None:
        return None
    if not (isinstance(span, list) and len(span) == 2 and all(type(i) is int for i in span)):
        raise ValueError(f"{record}: field {SPAN!r} is not [first, end] sentence numbers")
    done = {entry["index"] for entry in finished_records(log)}
    missing = [index for index in range(*span) if index not in done]
    if not missing:
        return None
    return (
        f"{len(missing)} of the run's sentences {span[0]} .. {span[1] - 1} are missing "
        f"({first_ten(missing)})"
    )


def check_log_units(output: Path, args: argparse.Namespace) -> None:
    """Refuse to score a log in other units than its run recorded it in (its record's
    `--eval-latency-unit`, `--eval-latency-spm-model`; a record from before names none):
    its delays and lengths are counted in those."""
    record = output / SETTINGS_RECORD
    saved = recorded_settings(read_json_object(record)) if record.exists() else {}
    refuse_other_units(output, saved, vars(args))


def refuse_other_units(output: Path, saved: dict, asked: dict) -> None:
    """`check_log_units` of the settings `saved` in the folder's record, against `asked`."""
    for name in sorted(LOG_UNIT_SETTINGS & set(saved)):
        if not same_setting(saved[name], asked.get(name)):
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"{output / 'instances.log'} was written with {flag} {saved[name]}, not "
                f"{asked.get(name)}: its delays are counted in those units; score "
                f"it with {flag} {saved[name]}"
            )


def first_ten(indices: Sequence[int]) -> str:
    """Sentence numbers for a message: the first ten, and "..." if there are more."""
    return ", ".join(map(str, indices[:10])) + (" ..." if len(indices) > 10 else "")


def check_within_span(log: Path, start: int, end: int) -> None:
    """Refuse a log holding sentences outside `start` .. `end - 1`."""
    _refuse_outside(log, [record["index"] for record in finished_records(log)], start, end)


def _refuse_outside(log: Path, indices, start: int, end: int) -> None:
    outside = sorted(index for index in indices if not start <= index < end)
    if outside:
        raise ValueError(
            f"{log} holds sentences outside --start-index {start} .. --end-index {end} "
            f"({first_ten(outside)}); resume with the span it was written with, or write to "
            "another --output"
        )


def record_types(output: Path, source_type: str, target_type: str) -> None:
    """`config.yaml` as SimulEval's scorers read it: the run's source and target types."""
    write_atomically(
        output / "config.yaml", f"source_type: {source_type}\ntarget_type: {target_type}\n"
    )


def loop_in(
    output: Path,
    settings: dict | None,
    resume: bool,
    span: tuple[int, int] | None,
    loop: Callable[[], None],
    score: Callable[[], None] | None,
    check: Callable[[], None] | None = None,
    types: tuple[str, str] | None = None,
) -> None:
    """Run SimulEval's loop (`loop`: one sentence after another into `output`, a resumed
    one each sentence the log lacks) with the folder held. A resumed log is first put in
    index order; one already complete is scored (`score`; None: no scoring), as the loop
    would fail on it. An empty span of an agent whose source and
    target `types` are known is scored as an empty log, the loop not run."""
    log = output / "instances.log"
    with writing(output, settings, resume, run=True, span=span, check=check):
        if resume and span is not None and resume_in_index_order(log, *span):
            score_complete_log(output, score)
            return
        if types is not None and span is not None and span[0] >= span[1]:
            # no sentence (a shard past a short test set's end): the loop would build the
            # agent, loading its model (minutes for 8B), for none
            clear_scores(output, batching=False)
            record_types(output, *types)
            if score is not None:
                score()
            return
        # a batched run's kept sentences keep the record of how they were measured
        clear_scores(output, batching=not (resume and finished_records(log)))
        try:
            loop()
        finally:  # stopped (an overflowing sentence, Ctrl-C): what it translated comes last
            if resume:
                with suppress(Exception):  # the loop's own error is the one to show
                    sort_log(output / "instances.log")
