"""`east-eval`: quality–latency grids of SimulEval runs from one YAML config.

    east-eval eval_configs/wmt22-de-en.yaml [--model-path DIR] [--only east-low ...]

A config names a test set, a checkpoint and systems; one setting of each system may be a
list, and every value of it is one run (EAST at each latency level, wait-k at each k).
Each run is a real `east-simuleval` command line (printed before it starts) writing to
`<output>/runs/<run>/`. A run whose `scores.tsv` exists is not run again; one that was cut
off continues from its last finished sentence. Each run folder keeps `run.json`, what decides
its translations (checkpoint, test set, agent, flags, sentences); a folder made with other
values is never reused: the grid stops and says what differs. At the end the scores are
collected into `<output>/results.csv` and `results.md` (system, setting, BLEU, AL, LAAL,
AL_CA, LAAL_CA, wall seconds) and drawn as `<output>/curves.png` (BLEU against LAAL, a line
per system); `<output>/significance.{csv,md}` says whether BLEU really changes from each
setting of a system to the next (paired bootstrap resampling, `east_agent.significance`).

`--testset` and `--num-beams` (every EAST system) override the config without editing it.

Large runs split into shards: `--shard 2/4` runs the second quarter of the sentences of
every run into `runs/<run>/shards/2-of-4/`; once all shards are done, `--merge-shards 4`
joins their `instances.log` files and scores them with `simuleval --score-only`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from east_agent.arguments import positive_int
from east_agent.atomic import write_atomically
from east_agent.child_process import run_child
from east_agent.run_lock import hold_run_lock
from east_agent.significance import SIGNIFICANCE_COLUMNS, Comparison, compare_runs
from east_agent.testsets import PreparedTestset, prepare_testset
from east_agent.text_lines import read_lines

AGENT_FILES = {"east": "agent.py", "waitk": "waitk_agent.py"}
TOP_LEVEL_KEYS = {
    "testset",
    "model_path",
    "output",
    "device",
    "torch_dtype",
    "max_new_tokens",
    "quality_metrics",
    "latency_metrics",
    "ca_unit_seconds",
    "batch_size",
    "systems",
}
RUN_ARGUMENT_KEYS = ("torch_dtype", "max_new_tokens")
TABLE_COLUMNS = (
    "system", "setting", "BLEU", "AL", "LAAL", "AL_CA", "LAAL_CA", "wall_seconds", "streams",
)  # fmt: skip
SCORE_COLUMNS = TABLE_COLUMNS[2:-2]
DEFAULT_BATCH_SIZE = 64


class EvalConfigError(ValueError):
    """An evaluation config is malformed."""


@dataclass
class Run:
    name: str
    system: str
    setting: str
    agent: str
    flags: dict[str, Any]


@dataclass
class EvalConfig:
    source: Path
    testset: str
    model_path: str
    output: Path
    systems: dict[str, dict[str, Any]]
    device: str = "cpu"
    torch_dtype: str = "auto"
    max_new_tokens: int = 128
    quality_metrics: list[str] = field(default_factory=lambda: ["BLEU"])
    latency_metrics: list[str] = field(
        default_factory=lambda: ["LAAL", "AL", "AP", "DAL", "LAAL_CA", "AL_CA"]
    )
    ca_unit_seconds: float = 0.4
    batch_size: int = DEFAULT_BATCH_SIZE  # sentences decoded at once; 1: SimulEval's loop

    def runs(self) -> list[Run]:
        runs = []
        for system, settings in self.systems.items():
            settings = dict(settings)
            agent = settings.pop("agent", None)
            if agent not in AGENT_FILES:
                raise EvalConfigError(
                    f"{self.source}: systems.{system}.agent must be one of {sorted(AGENT_FILES)}"
                )
            check_system_keys(self.source, system, agent, settings)
            swept = [key for key, value in settings.items() if isinstance(value, list)]
            if len(swept) > 1:
                raise EvalConfigError(
                    f"{self.source}: systems.{system} sweeps {swept}; one list per system"
                )
            values = settings[swept[0]] if swept else [None]
            for value in values:
                flags = dict(settings)
                label = "default"
                if swept:
                    flags[swept[0]] = value
                    label = f"k{value}" if swept[0] == "waitk" else str(value)
                runs.append(Run(f"{system}-{label}", system, label, agent, flags))
        names = [run.name for run in runs]
        if len(set(names)) != len(names):
            raise EvalConfigError(f"{self.source}: two runs share a name")
        return runs


def agent_flags(agent: str) -> set[str]:
    """The settings a system of this agent may have: its agent's flags, as config keys."""
    agent_class = agent_class_of(AGENT_FILES[agent])
    parser = argparse.ArgumentParser(add_help=False)
    agent_class.add_args(parser)
    return {action.dest for action in parser._actions}


def check_system_keys(source: Path, system: str, agent: str, settings: dict) -> None:
    """A key no flag of the agent takes is a typo: named before anything loads or runs."""
    import difflib

    known = agent_flags(agent) | set(RUN_ARGUMENT_KEYS)
    for key in settings:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise EvalConfigError(
                f"{source}: systems.{system}.{key}: the {agent} agent has no such flag{hint}"
            )


def load_eval_config(path: str | Path, num_beams: int | None = None, **overrides) -> EvalConfig:
    """Read a config; `overrides` replace top-level keys, `num_beams` every EAST system's."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalConfigError(f"{path}: no such config") from None
    if not isinstance(tree, dict):
        raise EvalConfigError(f"{path}: a config is a YAML mapping")
    unknown = sorted(set(tree) - TOP_LEVEL_KEYS)
    if unknown:
        raise EvalConfigError(f"{path}: unknown key {unknown[0]!r}")
    for key in ("testset", "model_path", "output", "systems"):
        if key not in tree and overrides.get(key) is None:
            raise EvalConfigError(f"{path}: {key} is required")
    tree.update({key: value for key, value in overrides.items() if value is not None})
    if not isinstance(tree["systems"], dict) or not tree["systems"]:
        raise EvalConfigError(f"{path}: systems must map names to settings")
    if num_beams is not None:
        tree["systems"] = with_num_beams(path, tree["systems"], num_beams)
    config = EvalConfig(source=path, **{**tree, "output": Path(tree["output"])})
    if not isinstance(config.batch_size, int) or config.batch_size < 1:
        raise EvalConfigError(f"{path}: batch_size must be a whole number of at least 1")
    config.runs()  # validates the systems
    return config


def with_num_beams(path: Path, systems: dict, num_beams: int) -> dict:
    east = [
        name
        for name, settings in systems.items()
        if isinstance(settings, dict) and settings.get("agent") == "east"
    ]
    if not east:
        raise EvalConfigError(f"{path}: num_beams {num_beams}: no system uses the east agent")
    return {
        name: {**settings, "num_beams": num_beams} if name in east else settings
        for name, settings in systems.items()
    }


# -- one SimulEval run -------------------------------------------------------------------------


def command_flags(flags: dict[str, Any]) -> list[str]:
    arguments = []
    for key, value in flags.items():
        option = "--" + key.replace("_", "-")
        if value is True:
            arguments.append(option)
        elif value not in (False, None):
            arguments += [option, str(value)]
    return arguments


def simuleval_command(
    config: EvalConfig, run: Run, testset: PreparedTestset, output: Path, indices=None
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
        *scoring_arguments(config),
        "--device", config.device,
        "--output", str(output),
    ]  # fmt: skip
    if config.batch_size > 1:
        command += ["--batch-size", str(config.batch_size)]
    if indices is not None:
        command += ["--start-index", str(indices[0]), "--end-index", str(indices[1])]
    return command


def scoring_arguments(config: EvalConfig) -> list[str]:
    return [
        "--quality-metrics", *config.quality_metrics,
        "--latency-metrics", *config.latency_metrics,
        "--ca-unit-seconds", str(config.ca_unit_seconds),
    ]  # fmt: skip


RUN_RECORD = "run.json"
RESULT_FILES = ("instances.log", "scores.tsv")


def run_record(
    config: EvalConfig, run: Run, testset: PreparedTestset, sentences: tuple[int, int]
) -> dict[str, Any]:
    """What decides a run's translations (not where it runs or how it is scored)."""
    return {
        "model_path": config.model_path,
        "testset": testset.name,
        "agent": run.agent,
        "flags": {**{key: getattr(config, key) for key in RUN_ARGUMENT_KEYS}, **run.flags},
        "sentences": list(sentences),
    }


def claim_run_folder(run_dir: Path, record: dict[str, Any]) -> None:
    """Record what a run is made of; refuse a folder that holds a run made of something else.

    A folder with results but no record (made before records were kept) is left as it is."""
    path = run_dir / RUN_RECORD
    if not path.exists() and any((run_dir / name).exists() for name in RESULT_FILES):
        return
    if path.exists():
        saved = json.loads(path.read_text())
        differences = [
            f"{key} {saved.get(key)!r} (now {value!r})"
            for key, value in record.items()
            if saved.get(key) != value
        ]
        if differences:
            raise EvalConfigError(
                f"{run_dir} holds a run made with {'; '.join(differences)}: "
                "give another --output, or delete that folder to run it again"
            )
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(record, indent=2) + "\n")


def finished_lines(log: Path) -> int:
    """Complete lines of an instances.log; a line cut off by a crash is removed."""
    from east_agent.instance_log import finished_records

    return len(finished_records(log))


def run_simuleval(command: list[str], output: Path, models: LoadedModels | None = None) -> float:
    """Run (or continue) one SimulEval command; return its wall seconds, all tries summed.

    A batched command (`--batch-size` above 1) runs in this process on `models` (a grid
    loads its checkpoint once); SimulEval's own loop runs as a child process, which dies
    with this one. Every try is recorded when it starts, so one killed outright still
    counts (up to its last sentence). The folder is locked while the run writes to it."""
    with hold_run_lock(output):
        return _run_simuleval(command, output, models)


def _run_simuleval(command: list[str], output: Path, models: LoadedModels | None) -> float:
    timing = output / "wall_seconds.json"
    tries = read_tries(timing, output / "instances.log")
    if finished_lines(output / "instances.log"):
        command = [*command, "--continue-unfinished"]
    print("$ " + " ".join(command), flush=True)
    started = time.time()
    output.mkdir(parents=True, exist_ok=True)
    write_tries(timing, [*tries, {"started": started, "seconds": None}])
    try:
        if "--batch-size" in command:
            _run_in_process(command, models or LoadedModels())
        else:
            returncode = run_child(command)
            if returncode != 0:
                raise RuntimeError(f"the run in {output} failed (exit {returncode})")
    finally:
        tries.append({"started": started, "seconds": round(time.time() - started, 2)})
        write_tries(timing, tries)
    return sum(attempt["seconds"] for attempt in tries)


def read_tries(timing: Path, log: Path) -> list[dict]:
    """The tries recorded so far; one that never recorded its end (killed) lasted until its
    log was last written."""
    if not timing.exists():
        return []
    saved = json.loads(timing.read_text())
    tries = saved.get("tries", [{"started": None, "seconds": saved["seconds"]}])
    for attempt in tries:
        if attempt["seconds"] is None:
            ended = log.stat().st_mtime if log.exists() else attempt["started"]
            attempt["seconds"] = round(max(0.0, ended - attempt["started"]), 2)
    return tries


def write_tries(timing: Path, tries: list[dict]) -> None:
    seconds = sum(attempt["seconds"] or 0.0 for attempt in tries)
    write_atomically(timing, json.dumps({"seconds": round(seconds, 2), "tries": tries}) + "\n")


class LoadedModels:
    """The checkpoint a grid's runs share, loaded once (one at a time is kept)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.loaded = None

    def get(self, agent_class, args: argparse.Namespace):
        key = (
            args.model_path, args.adapter_path, args.torch_dtype, args.device,
            args.trust_remote_code,
        )  # fmt: skip
        if key != self.key:
            self.key, self.loaded = None, None  # the old one goes before the new one loads
            self.loaded, self.key = agent_class.load(args), key
        return self.loaded


def _run_in_process(command: list[str], models: LoadedModels) -> None:
    from east_agent.simuleval_batch import parse_args, run_batched

    agent_class = agent_class_of(command[command.index("--agent") + 1])
    args = parse_args(agent_class, command[1:])
    run_batched(agent_class, args, loaded=models.get(agent_class, args))


def agent_class_of(agent_file: str):
    """The agent class an agent file of this package registers."""
    import warnings

    warnings.filterwarnings(
        "ignore", message="Couldn't find ffmpeg or avconv", category=RuntimeWarning
    )
    if Path(agent_file).name == AGENT_FILES["waitk"]:
        from east_agent.waitk_agent import WaitkAgent

        return WaitkAgent
    from east_agent.agent import EastAgent

    return EastAgent


def shard_range(shard: tuple[int, int], sentences: int) -> tuple[int, int]:
    index, count = shard
    if not 1 <= index <= count:
        raise ValueError(f"--shard {index}/{count}: the shard number must be 1..{count}")
    size = math.ceil(sentences / count)
    return (index - 1) * size, min(index * size, sentences)


def merged_run_record(shard_dirs: list[Path]) -> dict[str, Any] | None:
    """The record of the whole run, from its shards' records (which must agree)."""
    paths = [folder / RUN_RECORD for folder in shard_dirs]
    if not all(path.exists() for path in paths):
        return None
    records = [json.loads(path.read_text()) for path in paths]
    for folder, record in zip(shard_dirs[1:], records[1:]):
        if {**record, "sentences": None} != {**records[0], "sentences": None}:
            raise RuntimeError(f"{folder} was run with other settings than {shard_dirs[0]}")
    return {**records[0], "sentences": [records[0]["sentences"][0], records[-1]["sentences"][1]]}


def merge_shards(config: EvalConfig, run: Run, count: int) -> None:
    """Join the shards' logs into the run's folder and score them with --score-only."""
    run_dir = config.output / "runs" / run.name
    shard_dirs = [run_dir / "shards" / f"{index}-of-{count}" for index in range(1, count + 1)]
    missing = [str(folder) for folder in shard_dirs if not (folder / "scores.tsv").exists()]
    if missing:
        raise RuntimeError(f"{run.name}: shards not finished: {', '.join(missing)}")
    lines = []
    for folder in shard_dirs:
        lines += read_lines(folder / "instances.log")
    lines.sort(key=lambda line: json.loads(line)["index"])
    merged_record = merged_run_record(shard_dirs)
    if merged_record is not None:
        claim_run_folder(run_dir, merged_record)
    write_atomically(run_dir / "instances.log", "\n".join(lines) + "\n")
    write_atomically(run_dir / "config.yaml", "source_type: text\ntarget_type: text\n")
    seconds = sum(json.loads((f / "wall_seconds.json").read_text())["seconds"] for f in shard_dirs)
    write_atomically(run_dir / "wall_seconds.json", json.dumps({"seconds": round(seconds, 2)}))
    testset = prepared(config)
    command = [
        str(Path(sys.executable).with_name("east-simuleval")),
        "--score-only", "--output", str(run_dir),
        "--eval-latency-unit", testset.eval_latency_unit,
        "--sacrebleu-tokenizer", testset.sacrebleu_tokenizer,
        *scoring_arguments(config),
    ]  # fmt: skip
    print("$ " + " ".join(command), flush=True)
    result = subprocess.run(command)
    if result.returncode != 0:
        raise RuntimeError(f"{run.name}: scoring the merged shards failed")


# -- the grid ---------------------------------------------------------------------------------


def prepared(config: EvalConfig) -> PreparedTestset | None:
    """The test set this grid prepared before (`<output>/testset/testset.json`), if any;
    its files are found next to it, wherever the grid is run from."""
    folder = config.output / "testset"
    meta = folder / "testset.json"
    if not meta.exists():
        return None
    saved = json.loads(meta.read_text())
    return PreparedTestset(
        name=saved["name"],
        source=folder / Path(saved["source"]).name,
        reference=folder / Path(saved["reference"]).name,
        src_lang=saved["src_lang"],
        tgt_lang=saved["tgt_lang"],
        sentences=int(saved["sentences"]),
        eval_latency_unit=saved["eval_latency_unit"],
        sacrebleu_tokenizer=saved["sacrebleu_tokenizer"],
    )


def prepare(config: EvalConfig) -> PreparedTestset:
    saved = prepared(config)
    if saved is not None and saved.name == config.testset:
        return saved
    folder = config.output / "testset"
    tokenizer = None
    if config.testset.split(".")[1].split("-")[0] in ("zh", "ja"):
        from east_agent.model import load_tokenizer

        tokenizer = load_tokenizer(config.model_path)
    return prepare_testset(config.testset, folder, tokenizer)


def read_scores(run_dir: Path) -> dict[str, str]:
    header, values = (run_dir / "scores.tsv").read_text().strip().splitlines()[:2]
    return dict(zip(header.split("\t"), values.split("\t")))


def collect(config: EvalConfig, runs: list[Run]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        run_dir = config.output / "runs" / run.name
        if not (run_dir / "scores.tsv").exists():
            continue
        scores = read_scores(run_dir)
        seconds = json.loads((run_dir / "wall_seconds.json").read_text())["seconds"]
        row = {"system": run.system, "setting": run.setting, "wall_seconds": seconds}
        row.update({column: scores.get(column, "") for column in SCORE_COLUMNS})
        row["streams"] = streams_of(run_dir)
        rows.append(row)
    return rows


def streams_of(run_dir: Path) -> int:
    """How many streams shared the device in a run (its computation-aware latency's
    setting): 1 for SimulEval's own loop; a batched run says in `batch.json`."""
    from east_agent.simuleval_batch import BATCH_RECORD

    record = run_dir / BATCH_RECORD
    return json.loads(record.read_text())["streams"] if record.exists() else 1


def write_tables(
    rows: list[dict[str, Any]],
    output: Path,
    columns: tuple[str, ...] = TABLE_COLUMNS,
    name: str = "results",
) -> None:
    """Write `<output>/<name>.csv` and `<name>.md`, each atomically."""
    temporary = output / f".{name}.csv.tmp"
    with open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, output / f"{name}.csv")
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows),
    ]
    write_atomically(output / f"{name}.md", "\n".join(lines) + "\n")


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """BLEU against LAAL, a line per system; nothing to draw (and no file) while no system
    has two settings."""
    systems = [row["system"] for row in rows if row["LAAL"] not in ("", "nan")]
    if all(systems.count(system) < 2 for system in systems):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    for system in dict.fromkeys(row["system"] for row in rows):
        points = sorted(
            (float(row["LAAL"]), float(row["BLEU"]), row["setting"])
            for row in rows
            if row["system"] == system and row["LAAL"] not in ("", "nan")
        )
        if not points:
            continue
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=system)
        for laal, bleu, setting in points:
            axes.annotate(
                setting, (laal, bleu), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    axes.set_xlabel("LAAL (source words)")
    axes.set_ylabel("BLEU")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)


def run_grid(
    config: EvalConfig,
    only: list[str] | None = None,
    shard: tuple[int, int] | None = None,
    limit: int | None = None,
    dry_run: bool = False,
) -> list[dict[str, Any]]:
    runs = [run for run in config.runs() if not only or run.name in only]
    if only and len(runs) != len(set(only)):
        known = ", ".join(run.name for run in config.runs())
        raise EvalConfigError(f"--only names a run the config lacks (runs: {known})")
    testset = prepare(config)
    sentences = min(limit or testset.sentences, testset.sentences)
    indices = shard_range(shard, sentences) if shard else ((0, sentences) if limit else None)
    models = LoadedModels()
    for number, run in enumerate(runs, 1):
        run_dir = config.output / "runs" / run.name
        if shard:
            run_dir = run_dir / "shards" / f"{shard[0]}-of-{shard[1]}"
        command = simuleval_command(config, run, testset, run_dir, indices)
        if not dry_run:
            claim_run_folder(run_dir, run_record(config, run, testset, indices or (0, sentences)))
        if (run_dir / "scores.tsv").exists():
            print(f"[{number}/{len(runs)}] {run.name}: done already, skipped", flush=True)
            continue
        print(f"[{number}/{len(runs)}] {run.name}", flush=True)
        if dry_run:
            print("$ " + " ".join(command))
            continue
        run_simuleval(command, run_dir, models)
    if shard or dry_run:
        return []
    return summarize(config, config.runs())


def summarize(config: EvalConfig, runs: list[Run]) -> list[dict[str, Any]]:
    rows = collect(config, runs)
    if rows:
        write_tables(rows, config.output)
        plot_curves(rows, config.output / "curves.png", config.testset)
        print((config.output / "results.md").read_text(), flush=True)
        comparisons = compare_settings(config, runs)
        if comparisons:
            rows_of_tests = [comparison.row() for comparison in comparisons]
            write_tables(rows_of_tests, config.output, SIGNIFICANCE_COLUMNS, "significance")
            print("Paired bootstrap, each setting against the one before it:", flush=True)
            print((config.output / "significance.md").read_text(), flush=True)
    return rows


def compare_settings(config: EvalConfig, runs: list[Run]) -> list[Comparison]:
    """Significance of the BLEU differences along each system's settings (its curve)."""
    testset = prepared(config)
    references = read_lines(testset.reference)
    comparisons = []
    for system in dict.fromkeys(run.system for run in runs):
        finished = [
            (run.setting, config.output / "runs" / run.name)
            for run in runs
            if run.system == system and (config.output / "runs" / run.name / "scores.tsv").exists()
        ]
        if len(finished) > 1:
            comparisons += compare_runs(system, finished, references, testset.sacrebleu_tokenizer)
    return comparisons


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard takes I/N, got {text!r}") from None
    return index, count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="run a quality-latency grid with SimulEval")
    parser.add_argument("config", help="an eval_configs/*.yaml file")
    parser.add_argument("--model-path", help="override the config's checkpoint")
    parser.add_argument("--output", help="override the config's output folder")
    parser.add_argument("--device", help="override the config's device")
    parser.add_argument("--testset", help="override the config's test set: multi30k-val.de-en")
    parser.add_argument(
        "--num-beams", type=positive_int, help="beams per WRITE chunk for every EAST system"
    )
    parser.add_argument("--only", nargs="+", help="run only these runs (names as in results)")
    parser.add_argument(
        "--limit", type=positive_int, help="only the first N sentences (smoke tests)"
    )
    parser.add_argument("--shard", type=parse_shard, help="run shard I of N: --shard 2/4")
    parser.add_argument("--merge-shards", type=int, metavar="N", help="join N finished shards")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"sentences decoded at once (default {DEFAULT_BATCH_SIZE}, or the config's "
        "batch_size); 1 runs SimulEval's own loop, one sentence at a time, as a child process",
    )
    args = parser.parse_args(argv)
    try:
        config = load_eval_config(
            args.config,
            num_beams=args.num_beams,
            model_path=args.model_path,
            output=args.output,
            device=args.device,
            testset=args.testset,
            batch_size=args.batch_size,
        )
        if args.merge_shards:
            runs = [run for run in config.runs() if not args.only or run.name in args.only]
            for run in runs:
                merge_shards(config, run, args.merge_shards)
            summarize(config, config.runs())
        else:
            run_grid(config, args.only, args.shard, args.limit, args.dry_run)
    except (EvalConfigError, RuntimeError, ValueError) as error:
        sys.exit(f"east-eval: {error}")


if __name__ == "__main__":
    main()
