"""One run of a grid: its SimulEval command, its folder's record, and running it.

Each run is a real `east-simuleval` command line (printed before it starts). Its folder
keeps `run.json`, what decides its translations (checkpoint, test set, agent, flags,
sentences); a folder made with other values is never reused. A batched run goes in this
process on the grid's loaded checkpoint; SimulEval's own loop (`--batch-size 1`) runs as a
child that dies with this process. The folder is locked while a run writes to it, and
`wall_seconds.json` records every try, a killed one included.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from east_agent.common.atomic import remove, remove_tree, write_atomically
from east_agent.common.child_process import run_child
from east_agent.common.entry import CommandError
from east_agent.common.fingerprint import (
    content_of,
    is_content_setting,
    is_hub_id,
    model_setting,
    shown_setting,
)
from east_agent.common.records import read_json_object
from east_agent.common.run_lock import RUN_LOCK, hold_run_lock, may_be_held
from east_agent.evaluation.config import (
    AGENT_FILES,
    RUN_ARGUMENT_KEYS,
    EvalConfig,
    EvalConfigError,
    Run,
    agent_class_of,
    command_flags,
    flags_as_read,
)
from east_agent.evaluation.testsets import PreparedTestset
from east_agent.simuleval_glue.run_folder import INSTANCES_LOCK, finished_in, settings_differ

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from east_agent.decoding.east import DecoderConfig
    from east_agent.decoding.waitk import WaitkConfig
    from east_agent.simuleval_glue.adapter import StreamingAgent

RUN_RECORD = "run.json"


RESULT_FILES = ("instances.log", "scores.tsv")


def simuleval_command(
    config: EvalConfig,
    run: Run,
    testset: PreparedTestset,
    output: Path,
    indices: tuple[int, int] | None = None,
) -> list[str]:
    import east_agent

    agent_file = Path(east_agent.__file__).parent / AGENT_FILES[run.agent]
    shared = {key: getattr(config, key) for key in RUN_ARGUMENT_KEYS}
    command = [
        str(Path(sys.executable).with_name("east-simuleval")),
        "--agent", str(agent_file),
        "--model-path", config.model_path,
        "--src-lang", testset.src_lang,
        "--tgt-lang", testset.tgt_lang,
        *command_flags({**shared, **run.flags}),
        *testset.simuleval_args(),
        *scoring_arguments(config, testset),
        "--device", config.device,
        "--output", str(output),
    ]  # fmt: skip
    if config.batch_size > 1:
        command += ["--batch-size", str(config.batch_size)]
    if indices is not None:
        command += ["--start-index", str(indices[0]), "--end-index", str(indices[1])]
    return command


def scoring_arguments(config: EvalConfig, testset: PreparedTestset) -> list[str]:
    """SimulEval's scoring flags of the grid's runs. A long-form run's COMET is
    OmniSTEval's re-segmented sentences' (`run_scores`), not SimulEval's over whole talks
    (past COMET's 512 tokens): its `scores.tsv` has none. COMET is told the source
    language, which says how the units of a source line join (Chinese: without spaces)."""
    comet = None if config.long_form else config.comet()
    quality = [name for name in config.quality_metrics if name != "COMET" or comet] or ["BLEU"]
    arguments = [
        "--quality-metrics", *quality,
        "--latency-metrics", *config.latency_metrics,
    ]  # fmt: skip
    # SimulEval takes a scorer's flags only when that scorer is asked for
    if any(metric.endswith("_CA") for metric in config.latency_metrics):
        arguments += ["--ca-unit-seconds", str(config.ca_unit_seconds)]
    if comet is not None:
        arguments += [
            "--comet-checkpoint", comet.checkpoint, "--comet-python", comet.python,
            "--comet-batch-size", str(comet.batch_size), "--comet-gpus", str(comet.gpus),
            "--comet-source-lang", testset.src_lang,
        ]  # fmt: skip
    return arguments


def score_only_arguments(config: EvalConfig, testset: PreparedTestset, output: Path) -> list[str]:
    """`east-simuleval`'s flags that score the finished log in `output` as the grid's runs
    are scored."""
    return [
        "--score-only", "--output", str(output), *testset.scoring_args(),
        *scoring_arguments(config, testset),
    ]  # fmt: skip


def run_record(
    config: EvalConfig,
    run: Run,
    testset: PreparedTestset,
    sentences: tuple[int, int],
    checkpoint: str | dict,
) -> dict[str, Any]:
    """What decides a run's translations (not where it runs or how it is scored);
    `checkpoint` is `model_setting(config.model_path)`, taken once per grid.

    A beam search's stopping rule is recorded even when it is the default: runs made before
    the rule became transformers 4.44.2's (`beam_stop` absent) are not reused for it."""
    from east_agent.decoding.chunk_search import REFERENCE  # loads torch: not at start-up

    flags = {**{key: getattr(config, key) for key in RUN_ARGUMENT_KEYS}, **run.flags}
    if run.agent == "east" and int(flags.get("num_beams") or 1) > 1:  # null: the default
        flags.setdefault("beam_stop", REFERENCE)
    if flags.get("adapter_path"):  # by its content, as the checkpoint (before: its path)
        flags["adapter_path"] = model_setting(str(flags["adapter_path"]))
    record: dict[str, Any] = {
        "model_path": checkpoint,
        "testset": testset.name,
        "agent": run.agent,
        "flags": flags,
        "sentences": list(sentences),  # SimulEval instances: talks, in a long-form run
    }
    if run.gold_sentences:
        record["gold_sentences"] = True  # the talks' sentences, one instance each
    return record


# a flag recorded at its default too: its absence tells a run of an older rule (`run_record`).
# A flag missing from a record is compared as today's default: should an agent's default
# ever change, record that flag as `beam_stop` is and name it here.
RECORDED_AS_GIVEN = ("beam_stop",)


def _comparable(key: str, value: Any) -> Any:
    """A record's value as records are compared: a checkpoint named by a path (records
    written before fingerprints, relative to where the grid ran) as `model_setting` names
    it from here; an adapter by its content alone (wherever it lies now), or where it is
    when it is no longer there."""
    if key == "model_path" and isinstance(value, str):
        return model_setting(value)
    if key == "flags" and isinstance(value, dict) and value.get("adapter_path"):
        adapter = value["adapter_path"]
        adapter = model_setting(adapter) if isinstance(adapter, str) else adapter
        return {**value, "adapter_path": content_of(adapter)}
    return value


def record_differences(saved: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """How a run folder's record differs from a run's, key by key (the checkpoint by its
    fingerprint, or by where it was when one of them has none)."""
    differences = []
    for key in [*record, *(key for key in saved if key not in record)]:
        before, now = _comparable(key, saved.get(key)), _comparable(key, record.get(key))
        if key == "flags" and isinstance(before, dict) and isinstance(now, dict):
            before = flags_as_read(saved.get("agent"), before, RECORDED_AS_GIVEN)
            now = flags_as_read(record.get("agent"), now, RECORDED_AS_GIVEN)
        if settings_differ({key: before}, {key: now}):
            differences.append(
                f"{key} {shown_setting(saved.get(key))} (now {shown_setting(record.get(key))})"
            )
    return differences


def tabled_runs(
    config: EvalConfig, every_run: list[Run], expected: Callable[[Run], dict[str, Any] | None]
) -> list[Run]:
    """The runs whose folders hold what `expected(run)` says they should (None: not
    compared): a folder made with other flags, another agent, test set, span (--limit) or
    checkpoint (an earlier grid into the same --output, or shards run so and merged) is
    named and left out of the tables and significance tests, never shown as this grid's."""
    tabled = []
    for run in every_run:
        path, wanted = config.run_dir(run) / RUN_RECORD, expected(run)
        if path.exists() and wanted is not None:
            differences = record_differences(read_json_object(path), wanted)
            if differences:
                print(
                    f"east-eval: {run.name}: left out of the tables, made with "
                    + "; ".join(differences),
                    file=sys.stderr,
                    flush=True,
                )
                continue
        tabled.append(run)
    return tabled


def claim_run_folder(run_dir: Path, record: dict[str, Any]) -> None:
    """Record what a run is made of; refuse a folder that holds a run made of something else.

    A folder with results but no record (made before records were kept) is left as it is;
    one whose record differs but that holds no finished sentence nor scores (its run
    failed before translating) is taken for this run; an accepted record is rewritten as
    now (a checkpoint found where it was moved), unless that would lose the checkpoint's
    fingerprint (a checkpoint gone since)."""
    path = run_dir / RUN_RECORD
    if not path.exists() and any((run_dir / name).exists() for name in RESULT_FILES):
        return
    if path.exists():
        saved = read_json_object(path)
        differences = record_differences(saved, record)
        if differences and not holds_work(run_dir):
            # a run that failed before its first sentence (a bad flag, a missing
            # checkpoint): nothing made of the old settings is there to keep apart
            with hold_run_lock(run_dir):  # not while a process writes there
                remove(run_dir / "wall_seconds.json")
                write_atomically(path, json.dumps(record, indent=2) + "\n")
            return
        if differences:
            raise held_otherwise(run_dir, differences, record)
        if saved == record or (
            is_content_setting(saved.get("model_path"))
            and not is_content_setting(record.get("model_path"))
        ):
            return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(record, indent=2) + "\n")


def check_run_folder(run_dir: Path, record: dict[str, Any]) -> None:
    """`claim_run_folder`'s refusal, nothing written: a dry run's."""
    path = run_dir / RUN_RECORD
    if path.exists() and holds_work(run_dir):
        differences = record_differences(read_json_object(path), record)
        if differences:
            raise held_otherwise(run_dir, differences, record)


def held_otherwise(
    run_dir: Path, differences: list[str], record: dict[str, Any]
) -> EvalConfigError:
    """The refusal of a run folder made otherwise; a checkpoint given that is no folder
    here is named as such (before: only as another checkpoint's runs, with advice to
    delete them, for a typo)."""
    model = record.get("model_path")
    other_model = any(difference.startswith("model_path") for difference in differences)
    if other_model and isinstance(model, str) and not Path(model).exists() and not is_hub_id(model):
        return EvalConfigError(
            f"model path {model!r} does not exist ({run_dir} holds a run made with another "
            "checkpoint: a typo?)"
        )
    return EvalConfigError(
        f"{run_dir} holds a run made with {'; '.join(differences)}: "
        "give another --output, or delete that folder to run it again"
    )


# in a run folder: made by a command that runs afresh (east-demo), which may empty it again
AFRESH_MARK = "made_afresh.json"


def check_afresh(runs_folder: Path) -> None:
    """Before any is emptied (`start_afresh`): every run folder in `runs_folder` that holds
    anything was made afresh (not an `east-eval` grid's run, nor its shards: before,
    east-demo emptied them, or rewrote the grid's tables with its own rows, exit 0), and
    no process writes there (before: refused at its turn, the ones before it emptied)."""
    for run_dir in sorted(runs_folder.iterdir()) if runs_folder.is_dir() else []:
        if not run_dir.is_dir():
            continue
        kept = {RUN_LOCK, INSTANCES_LOCK, RUN_RECORD}
        made = any(entry.name not in kept for entry in run_dir.iterdir())
        if made and not (run_dir / AFRESH_MARK).exists():
            raise EvalConfigError(
                f"{run_dir}: a run east-demo did not make (no {AFRESH_MARK}: an east-eval "
                "grid's, or one made by an east-demo older than this version, which marked "
                "none), and east-demo runs afresh in a folder of its own runs: give another "
                "--output, or delete that run folder"
            )
        with hold_run_lock(run_dir), hold_run_lock(run_dir, INSTANCES_LOCK):
            pass  # refused (RunFolderBusyError) where another process holds either


def start_afresh(run_dir: Path) -> None:
    """Empty the folder of an earlier run, holding its locks: a run that another process
    is writing there is refused (RunFolderBusyError), never deleted under it. The folder is
    marked as made afresh (`check_afresh`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with hold_run_lock(run_dir), hold_run_lock(run_dir, INSTANCES_LOCK):
        for entry in run_dir.iterdir():
            if entry.name not in (RUN_LOCK, INSTANCES_LOCK):
                remove_tree(entry)
        write_atomically(run_dir / AFRESH_MARK, json.dumps({"made_afresh": True}) + "\n")


def parsed_command(command: list[str]) -> tuple[type[StreamingAgent], argparse.Namespace]:
    """The agent class and parsed flags of a run's `east-simuleval` command line."""
    from east_agent.simuleval_glue.batch import parse_args

    agent_class = agent_class_of(command[command.index("--agent") + 1])
    return agent_class, parse_args(agent_class, command[1:])


def made_otherwise(run_dir: Path, command: list[str], span: tuple[int, int]) -> str | None:
    """How the log in `run_dir` was made otherwise than the grid's `command` over the
    sentences `span` makes it, said; None where the same, or where the folder records no
    settings (made before they were recorded). A run by hand into a grid's run folder
    rewrites its `run_settings.json` and leaves the grid's `run.json` as it was (before:
    tabled as the grid's run, other latency or sentences and all, exit 0)."""
    from east_agent.simuleval_glue.run_folder import (
        MODEL_FOLDERS,
        SETTINGS_RECORD,
        SPAN,
        WEIGHTS_DTYPE,
        differences_shown,
        recorded_settings,
        translation_settings,
    )

    path = run_dir / SETTINGS_RECORD
    if not path.exists():
        return None
    record = read_json_object(path)
    agent_class, args = parsed_command(command)
    saved, wanted = recorded_settings(record), translation_settings(agent_class, args)
    # the dtype `--torch-dtype auto` resolved to depends on the device the grid runs on now
    # (a GPU grid's folder tabled on a CPU): the flag itself is compared. A checkpoint or
    # adapter not here now (a hub id, or gone since) is `run.json`'s to compare, as the
    # grid resolves it (`claim_run_folder`)
    gone = [name for name in MODEL_FOLDERS if isinstance(wanted.get(name), str)]
    for settings in (saved, wanted):
        for name in (WEIGHTS_DTYPE, *gone):
            settings.pop(name, None)
    differ = settings_differ(saved, wanted)
    said = [differences_shown(differ, saved, wanted)] if differ else []
    there = record.get(SPAN)
    if isinstance(there, list) and there != list(span):
        said.append(f"sentences {there[0]} .. {there[1] - 1} there, {span[0]} .. {span[1] - 1} now")
    return "; ".join(said) or None


def holds_work(run_dir: Path) -> bool:
    """Whether a run folder holds a finished sentence or scores."""
    scored = any((run_dir / name).exists() for name in ("scores.tsv", "metrics.tsv"))
    return scored or finished_lines(run_dir / "instances.log") > 0


def runs_holding_work(output: Path) -> list[Path]:
    """The run folders of the grid in `output` that hold work made on its test set."""
    records = (output / "runs").glob(f"**/{RUN_RECORD}")
    return sorted(path.parent for path in records if may_hold_work(path.parent))


def may_hold_work(run_dir: Path) -> bool:
    """A run folder with a finished sentence or scores, or one a process may be writing
    (not one whose run failed before its first sentence: a bad flag, a missing file)."""
    return holds_work(run_dir) or may_be_held(run_dir)


def finished_lines(log: Path) -> int:
    """The finished sentences of an instances.log's run folder: its complete lines, and those
    set aside for SimulEval's loop (read only: its writer may be at work)."""
    return finished_in(log.parent)


def run_simuleval(
    command: list[str], output: Path, models: LoadedModels | None = None, jobs: int = 1
) -> float:
    """Run (or continue) one SimulEval command; return its wall seconds, all tries summed.

    A batched command (`--batch-size` above 1) runs in this process on `models` (a grid
    loads its checkpoint once, before the clock of the run that first needs it starts: a
    run's time is its own); SimulEval's own loop runs as a child process, which dies
    with this one. Every try is recorded when it starts, with the number of runs that
    shared the machine (`jobs`), so one killed outright still counts (up to its last
    sentence), and so does one that failed or was interrupted: what it had not finished is
    translated again by the next try, which counts it. The folder is locked while the run
    writes to it."""
    with hold_run_lock(output):
        return _run_simuleval(command, output, models, jobs)


def _run_simuleval(
    command: list[str], output: Path, models: LoadedModels | None, jobs: int
) -> float:
    timing = output / "wall_seconds.json"
    tries = read_tries(timing, output / "instances.log")
    before = finished_lines(output / "instances.log")  # set aside ones too (a SIGKILL's)
    if before:
        command = [*command, "--continue-unfinished"]
    print("$ " + shlex.join(command), flush=True)
    in_process = "--batch-size" in command
    if in_process:  # the checkpoint loads before the clock starts: a run's time is its own
        models = models or LoadedModels()
        _load_model_of(command, models)
    started = time.time()
    output.mkdir(parents=True, exist_ok=True)
    attempt = {"started": started, "seconds": None, "jobs": jobs, "from_sentence": before}
    write_tries(timing, [*tries, attempt])
    finished = False
    try:
        if in_process:
            assert models is not None  # made above for a run in this process
            _run_in_process(command, models)
        else:
            returncode = run_child(command)
            if returncode != 0:
                raise CommandError(f"the run in {output} failed (exit {returncode})")
        finished = True
    finally:
        ended = time.time() if finished else last_written(output / "instances.log", started)
        attempt["seconds"] = round(ended - started, 2)
        with suppress(ValueError):  # a log the try left unreadable: its own error is said
            attempt["sentences"] = finished_lines(output / "instances.log") - before
        write_tries(timing, [*tries, attempt])
        tries.append(attempt)
    return counted_seconds(tries)


def last_written(log: Path, started: float) -> float:
    """When a try that did not finish last wrote a sentence to `log` (not before it
    started): the end of the work it kept."""
    return max(started, log.stat().st_mtime if log.exists() else started)


def read_tries(timing: Path, log: Path) -> list[dict]:
    """The tries recorded so far; one that never recorded its end (killed) lasted until its
    log was last written."""
    if not timing.exists():
        return []
    saved = read_json_object(timing)
    tries = saved.get("tries", [{"started": None, "seconds": saved["seconds"]}])
    for attempt in tries:
        if attempt["seconds"] is None:
            ended = last_written(log, attempt["started"])
            attempt["seconds"] = round(ended - attempt["started"], 2)
            if "from_sentence" in attempt:  # a killed try: the last one, what it kept
                attempt["sentences"] = finished_lines(log) - attempt["from_sentence"]
    return tries


def settled_tries(run_dir: Path) -> list[dict] | None:
    """The tries a run folder's `wall_seconds.json` records, a killed one's end taken from
    its log (`read_tries`); None without the record. Read so by the tables and a merge of
    shards too (before: a run killed once its scores were written showed 0.00 s)."""
    timing = run_dir / "wall_seconds.json"
    return read_tries(timing, run_dir / "instances.log") if timing.exists() else None


def translated_tries(tries: list[dict]) -> list[dict]:
    """The tries that translated: not one that only scored a finished log, or failed
    before its first sentence (a try recorded before sentences were counted did)."""
    return [attempt for attempt in tries if attempt.get("sentences") != 0]


def counted_seconds(tries: list[dict]) -> float:
    """A run's wall seconds: those of its tries that translated (before: a resume after
    the last sentence added its start-up and scoring)."""
    return round(sum(attempt["seconds"] or 0.0 for attempt in translated_tries(tries)), 2)


def write_tries(timing: Path, tries: list[dict]) -> None:
    seconds = counted_seconds(tries)
    write_atomically(timing, json.dumps({"seconds": seconds, "tries": tries}) + "\n")


class LoadedModels:
    """The checkpoint a grid's runs share, loaded once (one at a time is kept)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.loaded: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None

    def get(
        self,
        agent_class: type[StreamingAgent],
        args: argparse.Namespace,
        config: DecoderConfig | WaitkConfig,
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        key = (
            args.model_path, args.adapter_path, args.torch_dtype, args.device,
            args.trust_remote_code,
        )  # fmt: skip
        if key != self.key:
            self.key, self.loaded = None, None  # the old one goes before the new one loads
            self.loaded, self.key = agent_class.load(args, config), key
        assert self.loaded is not None  # the key's: loaded above or by an earlier call
        return self.loaded


def _load_model_of(command: list[str], models: LoadedModels) -> None:
    agent_class, args = parsed_command(command)
    config = agent_class.checked_config(args)
    agent_class.check_with_tokenizer(args, config)  # before the weights load (the run: again)
    models.get(agent_class, args, config)


def _run_in_process(command: list[str], models: LoadedModels) -> None:
    from east_agent.simuleval_glue.batch import run_batched

    agent_class, args = parsed_command(command)
    run_batched(agent_class, args, load=lambda args, config: models.get(agent_class, args, config))
