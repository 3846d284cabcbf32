"""An `east-eval` grid config: its test set, checkpoint and systems, checked before
anything loads or runs.

A config names a test set, a checkpoint and systems; one setting of each system may be a
list, and every value of it is one run (EAST at each latency level, wait-k at each k).
A system key no flag of its agent takes is a typo, named with the closest flag. Each run
writes to `<output>/runs/<run>/` (`EvalConfig.run_dir`, the one place that builds it).

A long-form test set (`<set>.talksN`, `east_agent.evaluation.longform`) makes a long-form
grid: every run reads each talk as one stream (`--long-form`), except the runs of a system
with `gold_sentences: true`, which translate the talks' gold sentences one by one (today's
setting) and are scored as talks all the same, so both sit on one curve. `word_times`
names a word-timestamp file (one line per talk) for the long-form latencies.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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
    "jobs",
    "word_times",
    "systems",
}


RUN_ARGUMENT_KEYS = ("torch_dtype", "max_new_tokens")
GOLD_SENTENCES = "gold_sentences"  # a system key of long-form grids, not an agent flag


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
    gold_sentences: bool = False  # long-form grids: the talks' gold sentences, one by one


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
    jobs: int = 1  # runs at once, each in its own worker process
    word_times: str | None = None  # long-form grids: one line of unit times (s) per talk

    def run_dir(self, run: Run, shard: tuple[int, int] | None = None) -> Path:
        """Where a run (or one shard of it: `(index, count)`) writes."""
        folder = self.output / "runs" / run.name
        return folder / "shards" / f"{shard[0]}-of-{shard[1]}" if shard else folder

    @property
    def testset_dir(self) -> Path:
        return self.output / "testset"

    @property
    def long_form(self) -> bool:
        """A grid over talks (`<set>.talksN`) rather than sentences."""
        from east_agent.evaluation.longform import is_longform

        return is_longform(self.testset)

    def runs(self) -> list[Run]:
        runs = []
        for system, settings in self.systems.items():
            settings = dict(settings)
            agent = settings.pop("agent", None)
            if agent not in AGENT_FILES:
                raise EvalConfigError(
                    f"{self.source}: systems.{system}.agent must be one of {sorted(AGENT_FILES)}"
                )
            gold = self.gold_sentences(system, settings.pop(GOLD_SENTENCES, False))
            check_system_keys(self.source, system, agent, settings)
            if self.long_form:
                settings = self.long_form_settings(system, settings, gold)
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
                runs.append(Run(f"{system}-{label}", system, label, agent, flags, gold))
        names = [run.name for run in runs]
        if len(set(names)) != len(names):
            raise EvalConfigError(f"{self.source}: two runs share a name")
        return runs

    def long_form_settings(self, system: str, settings: dict, gold: bool) -> dict:
        """A long-form grid's run reads talks (`--long-form`), a gold-sentence one sentences;
        settings that contradict that are refused here, not halfway through the grid."""
        where = f"{self.source}: systems.{system}"
        if gold:
            for key in ("long_form", "cache_budget", "context_words", "segment_units"):
                if key in settings:
                    raise EvalConfigError(f"{where}.{key}: a gold-sentence system reads no talks")
            return settings
        if settings.get("document_level"):
            raise EvalConfigError(f"{where}.document_level: long-form runs exclude it")
        if settings.get("long_form") is False:
            raise EvalConfigError(f"{where}.long_form: a long-form grid's runs read talks")
        return {**settings, "long_form": True}

    def gold_sentences(self, system: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise EvalConfigError(
                f"{self.source}: systems.{system}.{GOLD_SENTENCES} is true or false"
            )
        if value and not self.long_form:
            raise EvalConfigError(
                f"{self.source}: systems.{system}.{GOLD_SENTENCES} needs a long-form test set "
                f"(NAME.talksN), not {self.testset!r}"
            )
        return value


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
    """Read a config and check its systems against their agents' flags; `overrides` replace
    top-level keys, `num_beams` every EAST system's."""
    config = read_eval_config(path, num_beams, **overrides)
    config.runs()  # validates the systems (imports their agents: torch, SimulEval)
    return config


def read_eval_config(path: str | Path, num_beams: int | None = None, **overrides) -> EvalConfig:
    """Read a config and check its top level, not yet its systems (`load_eval_config` does
    both): quick, nothing heavy imported."""
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
    for key in ("batch_size", "jobs"):
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise EvalConfigError(f"{path}: {key} must be a whole number of at least 1")
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


def agent_class_of(agent_file: str):
    """The agent class an agent file of this package registers."""
    if Path(agent_file).name == AGENT_FILES["waitk"]:
        from east_agent.waitk_agent import WaitkAgent

        return WaitkAgent
    from east_agent.agent import EastAgent

    return EastAgent
