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
import functools
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from east_agent.common.arguments import checked_device
from east_agent.common.comet_process import CometError, CometSettings, check_comet
from east_agent.common.yaml_files import (
    YamlFileError,
    close_hint,
    load_yaml,
    read_yaml_text,
    without_anchor_blocks,
)

if TYPE_CHECKING:
    from east_agent.simuleval_glue.adapter import StreamingAgent

AGENT_FILES = {"east": "agent.py", "waitk": "waitk_agent.py"}
# the settings of long-form input (decoding.long_form.LONG_FORM_FIELDS less long_form;
# not imported from there, which imports torch)
LONG_FORM_KEYS = ("cache_budget", "context_words", "segment_units", "context_across_sentences")


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
    "comet_checkpoint",
    "comet_python",
    "comet_batch_size",
    "comet_gpus",
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
    comet_checkpoint: str | None = None  # COMET in quality_metrics: a local model.ckpt
    comet_python: str | None = None  # COMET's own environment's interpreter (default: ours)
    comet_batch_size: int = 16
    comet_gpus: int = 0
    overridden: frozenset[str] = frozenset()  # keys given by a flag (`--model-path`)

    def run_dir(self, run: Run, shard: tuple[int, int] | None = None) -> Path:
        """Where a run (or one shard of it: `(index, count)`) writes."""
        folder = self.output / "runs" / run.name
        return folder / "shards" / f"{shard[0]}-of-{shard[1]}" if shard else folder

    def place(self) -> KeyPlace:
        """How messages name this config's keys (file and line; a grid made in code, as
        `east-demo`'s, has no file: its keys are named without lines)."""
        text = read_config_text(self.source) if Path(self.source).is_file() else ""
        return KeyPlace(self.source, text, set(self.overridden))

    def comet(self) -> CometSettings | None:
        """How COMET scores this grid's runs; None if `quality_metrics` has no COMET, refused
        without a checkpoint."""
        if "COMET" not in self.quality_metrics:
            return None
        if self.comet_checkpoint is None:
            raise EvalConfigError(
                f"{self.place().of('quality_metrics')}: COMET needs comet_checkpoint, the path "
                "of a local COMET model.ckpt (nothing is downloaded)"
            )
        python = {"python": self.comet_python} if self.comet_python else {}
        return CometSettings(
            self.comet_checkpoint, **python, batch_size=self.comet_batch_size, gpus=self.comet_gpus
        )

    def comet_after_runs(self) -> bool:
        """COMET left to `east-eval` after each run: the runs are scored in processes of
        their own (`jobs` above 1; a sentence-level run also in SimulEval's loop, while a
        long-form run's COMET, over its re-segmented sentences, is made with its OmniSTEval
        columns, in a worker or in `east-eval`), which would each start a COMET child and
        load its checkpoint; `east-eval` adds COMET to each finished run with its one child
        instead."""
        scored_elsewhere = self.jobs > 1 or (self.batch_size == 1 and not self.long_form)
        return self.comet() is not None and scored_elsewhere

    def without_comet(self) -> EvalConfig:
        """The grid scored without COMET: a shard's runs, whose merge scores every sentence
        with it once (rather than each shard and then the whole run again), and runs that
        leave it to `east-eval` (`comet_after_runs`)."""
        kept = [name for name in self.quality_metrics if name != "COMET"] or ["BLEU"]
        return replace(self, quality_metrics=kept)

    @property
    def testset_dir(self) -> Path:
        return self.output / "testset"

    @property
    def long_form(self) -> bool:
        """A grid over talks (`<set>.talksN`) rather than sentences."""
        from east_agent.evaluation.longform import is_longform

        return is_longform(self.testset)

    def runs(self) -> list[Run]:
        place = self.place()  # the config read once for every message below
        if self.word_times is not None and not self.long_form:
            raise EvalConfigError(
                f"{place.of('word_times')}: word times are read by long-form grids (a "
                f"test set NAME.talksN); {self.testset!r} is sentence-level and would ignore them"
            )
        runs = []
        for system, settings in self.systems.items():
            check_system_settings(place.of("systems", system), settings)
            settings = dict(settings)
            missing = "agent" not in settings  # before: "got None", as for `agent: null`
            agent = settings.pop("agent", None)
            if not isinstance(agent, str) or agent not in AGENT_FILES:  # a list: unhashable
                where = place.of("systems", system, "agent")
                got = "is missing" if missing else f"got {agent!r}"
                if isinstance(agent, list):  # before: "one of ['east', 'waitk'], got ['east', ...
                    got += " (one agent a system: a system each)"
                raise EvalConfigError(f"{where} must be one of {sorted(AGENT_FILES)}, {got}")
            gold = self.gold_sentences(place, system, settings.pop(GOLD_SENTENCES, False))
            check_system_keys(place, system, agent, settings)
            check_switch_values(place, system, agent, settings)
            if self.long_form:
                settings = self.long_form_settings(place, system, settings, gold)
            elif settings.get("long_form") is not True:  # a sweep of it too: its false runs
                self.refuse_long_form_keys(place, system, settings)
            swept = [key for key, value in settings.items() if isinstance(value, list)]
            if len(swept) > 1:
                where = place.of("systems", system, swept[1])
                raise EvalConfigError(f"{where}: the system sweeps {swept}; one list per system")
            values = settings[swept[0]] if swept else [None]
            if not values:
                where = place.of("systems", system, swept[0])
                raise EvalConfigError(f"{where} is an empty list: the system would have no run")
            if swept:
                check_swept_values(place, system, agent, swept[0], values)
            for value in values:
                flags = dict(settings)
                label = "default"
                if swept:
                    flags[swept[0]] = value
                    if value is not None:  # null: the agent's default
                        label = f"k{value}" if swept[0] == "waitk" else str(value)
                if ".." in Path(f"{system}-{label}").parts:  # a swept path: its run's folder
                    where = place.of("systems", system, swept[0])
                    raise EvalConfigError(
                        f"{where}: {value!r} in the run's folder name would put it outside "
                        "<output>/runs"
                    )
                check_folder_name(place, system, swept[0] if swept else None, f"{system}-{label}")
                runs.append(Run(f"{system}-{label}", system, label, agent, flags, gold))
        for run in runs:
            check_run_values(self, run)
        names = [run.name for run in runs]
        twice = [name for name in dict.fromkeys(names) if names.count(name) > 1]
        if twice:
            raise EvalConfigError(
                f"{place.of('systems')}: two runs are named {twice[0]!r} (a system's "
                "name and sweep value make another's); rename a system"
            )
        check_folders_apart(place, runs)
        return runs

    def long_form_settings(self, place: KeyPlace, system: str, settings: dict, gold: bool) -> dict:
        """A long-form grid's run reads talks (`--long-form`), a gold-sentence one sentences;
        settings that contradict that are refused here, not halfway through the grid."""
        if gold:
            for key in ("long_form", *LONG_FORM_KEYS):
                if key in settings:
                    where = place.of("systems", system, key)
                    raise EvalConfigError(f"{where}: a gold-sentence system reads no talks")
            return settings
        if settings.get("document_level"):
            where = place.of("systems", system, "document_level")
            raise EvalConfigError(f"{where}: long-form runs exclude it")
        if settings.get("long_form") is False:
            where = place.of("systems", system, "long_form")
            raise EvalConfigError(f"{where}: a long-form grid's runs read talks")
        return {**settings, "long_form": True}

    def refuse_long_form_keys(self, place: KeyPlace, system: str, settings: dict) -> None:
        """Settings of long-form input in a system of sentences: refused before any run
        (a run would refuse them, halfway through the grid)."""
        given = [key for key in LONG_FORM_KEYS if key in settings]
        if given:
            where = place.of("systems", system, given[0])
            raise EvalConfigError(
                f"{where}: a setting of long-form input, and this system reads sentences "
                "(long-form test sets are NAME.talksN; or set long_form: true)"
            )

    def gold_sentences(self, place: KeyPlace, system: str, value: Any) -> bool:
        where = place.of("systems", system, GOLD_SENTENCES)
        if not isinstance(value, bool):
            raise EvalConfigError(f"{where} is true or false")
        if value and not self.long_form:
            raise EvalConfigError(
                f"{where} needs a long-form test set (NAME.talksN), not {self.testset!r}"
            )
        return value


@functools.cache
def agent_parser(agent: str) -> argparse.ArgumentParser:
    """The agent's own flags, for checking a system's settings: none required (the model,
    languages and files come from the grid), a bad value raised rather than exiting."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    agent_class_of(AGENT_FILES[agent]).add_args(parser)
    for action in parser._actions:
        action.required = False
    return parser


@functools.cache
def system_required_flags(agent: str) -> tuple[str, ...]:
    """The agent's required flags a system must set (`waitk`): the grid sets the others."""
    parser = argparse.ArgumentParser(add_help=False)
    agent_class_of(AGENT_FILES[agent]).add_args(parser)
    required = (action.dest for action in parser._actions if action.required)
    return tuple(dest for dest in required if dest not in GRID_OWN_FLAGS)


def agent_flags(agent: str) -> set[str]:
    """The settings a system of this agent may have: its agent's flags, as config keys."""
    return {action.dest for action in agent_parser(agent)._actions}


# Agent flags the grid gives every run itself: a system's would silently win over them (its
# checkpoint unfingerprinted, its prompt in another language than the test set's).
GRID_OWN_FLAGS = {
    "model_path": "the grid's checkpoint is model_path (or --model-path)",
    "src_lang": "the source language is the test set's",
    "tgt_lang": "the target language is the test set's",
}


def check_system_keys(place: KeyPlace, system: str, agent: str, settings: dict) -> None:
    """A key no flag of the agent takes is a typo: named before anything loads or runs."""
    known = agent_flags(agent) | set(RUN_ARGUMENT_KEYS)
    for key in settings:
        where = place.of("systems", system, key)
        if key in GRID_OWN_FLAGS:  # set by the grid for every run, after nothing else
            raise EvalConfigError(
                f"{where}: {GRID_OWN_FLAGS[key]}, for every run; a system with another needs "
                "a grid of its own"
            )
        if key not in known:
            raise EvalConfigError(
                f"{where}: the {agent} agent has no such flag{close_hint(key, known)}"
            )


def check_swept_values(place: KeyPlace, system: str, agent: str, key: str, values: list) -> None:
    """A value swept twice (two runs of one name)."""
    action = agent_parser(agent)._option_string_actions.get("--" + key.replace("_", "-"))
    settings = [swept_setting(action, value) for value in values]
    for position, setting in enumerate(settings):
        if setting not in settings[:position]:
            continue
        first, value = values[settings.index(setting)], values[position]
        where = place.of("systems", system, key)
        if first == value and type(first) is type(value):
            raise EvalConfigError(f"{where}: {value!r} is listed twice")
        raise EvalConfigError(
            f"{where}: {shown_swept(first, action)} and {shown_swept(value, action)} are one "
            "setting: two runs of the same translations"
        )


def flags_as_read(agent: Any, flags: dict, kept_as_given: tuple[str, ...] = ()) -> dict:
    """A run's flags as its agent reads them: each typed as its flag types it, one not
    given or null its default (before: a folder made with `num_beams: 1` written out was
    another run than the same system without it); `kept_as_given`: flags whose absence is
    itself recorded."""
    if not isinstance(agent, str) or agent not in AGENT_FILES:
        return dict(flags)
    read = dict(flags)
    for action in agent_parser(agent)._actions:
        if action.dest not in kept_as_given:
            read[action.dest] = swept_setting(action, flags.get(action.dest))
    return read


def swept_setting(action: argparse.Action | None, value: Any) -> Any:
    """What the agent makes of a swept value: null is its default; text as its flag types
    it (`"128"` is 128)."""
    if action is None:
        return value
    if value is None:
        return action.default
    if isinstance(value, str) and callable(action.type):  # a registered name: value kept
        try:
            return action.type(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            return value  # refused by the run's checks, naming the value
    return value


def shown_swept(value: Any, action: argparse.Action | None) -> str:
    if value is None and action is not None:
        return f"null (the default, {action.default!r})"
    return repr(value)


def check_switch_values(place: KeyPlace, system: str, agent: str, settings: dict) -> None:
    """A yes/no flag (`document_level`) is true or false: another value (`"no"`, `0`) would
    follow its bare flag on the run's command line, which SimulEval refuses at its turn.
    A flag that takes a value takes no true or false, swept or not: YAML's reading of an
    unquoted yes/no/on/off (`latency: [low, on]`, `kv_cache: off`) would be left off the
    command line, or given bare (before, outside a sweep: the default ran, exit 0)."""
    for key, value in settings.items():
        action = agent_parser(agent)._option_string_actions.get("--" + key.replace("_", "-"))
        switch = action is not None and action.nargs == 0
        for item in value if isinstance(value, list) else [value]:
            if switch and not isinstance(item, bool) and item is not None:
                raise EvalConfigError(
                    f"{place.of('systems', system, key)} is true or false, got {item!r}"
                )
            if not switch and isinstance(item, bool):
                text = action is None or action.type in (None, str)  # else quoting is no cure
                raise EvalConfigError(
                    f"{place.of('systems', system, key)}: {item} is YAML's reading of an "
                    "unquoted yes/no/on/off/true/false"
                    + (": quote it" if text else ", not a value this setting takes")
                )


def command_flags(flags: dict[str, Any]) -> list[str]:
    """A run's settings as its command's flags (`num_beams: 5` → `--num-beams 5`)."""
    arguments = []
    for key, value in flags.items():
        option = "--" + key.replace("_", "-")
        if value is True:
            arguments.append(option)
        elif value is not False and value is not None:  # 0 is a value (`in` takes 0 for False)
            arguments += [option, str(value)]
    return arguments


def check_run_values(
    config: EvalConfig, run: Run, source: tuple[Path, tuple[int, int]] | None = None
) -> None:
    """A run's settings as its agent reads them (a choice, a number, the decoder's bounds,
    an adapter folder): a bad value named by file, line and key before any run starts, not
    when its turn comes. With `source` (the prepared test set's source and the run's span
    of it, once the grid has it), a --max-context none of its sentences fits in too."""
    shared = {key: getattr(config, key) for key in RUN_ARGUMENT_KEYS}
    try:
        args, _ = agent_parser(run.agent).parse_known_args(command_flags({**shared, **run.flags}))
    except argparse.ArgumentError as error:
        key = (error.argument_name or "").split("/")[0].lstrip("-").replace("-", "_")
        raise _run_value_error(config, run, shared, key, error.message) from None
    if source is not None:
        args.source, (args.start_index, args.end_index) = str(source[0]), source[1]
    try:
        check_decoding(config, run, args)
    except ValueError as error:
        text = str(error)
        named = [
            key
            for key in {**shared, **run.flags}
            if any(spelling in text for spelling in (key, *(key.replace("_", c) for c in " -")))
        ]
        key = max(named, key=len, default="")
        raise _run_value_error(config, run, shared, key, str(error)) from None


def check_decoding(config: EvalConfig, run: Run, args: argparse.Namespace) -> None:
    """What the run's agent checks of its flags before it loads the weights: the decoder's
    settings, the adapter's folder, and where the checkpoint is here, what its config and
    tokenizer allow (a --max-context above its positions or leaving no room after the
    prompt, a long-form cache budget no segment fits in)."""
    from east_agent.lm.checkpoint import check_adapter_path
    from east_agent.simuleval_glue.adapter import (
        check_max_context,
        check_prompt_room,
        checkpoint_tokenizer,
        model_positions,
        prompt_room_checked,
    )

    for name in system_required_flags(run.agent):
        if getattr(args, name, None) is None:
            raise ValueError(f"{name}: the {run.agent} agent needs it")
    args.src_lang, args.tgt_lang = config.testset.split(".")[1].split("-")
    agent = agent_class_of(AGENT_FILES[run.agent])
    decoding = agent.decoding_config(args)
    check_adapter_path(getattr(args, "adapter_path", None), "adapter_path")  # the key given
    if not prompt_room_checked(decoding):
        return  # nothing of the checkpoint's to check (its tokenizer not loaded for nothing)
    if not (Path(config.model_path) / "config.json").is_file():
        return  # a hub name, or a folder elsewhere (at a merge): checked by each run
    args.model_path = config.model_path
    tokenizer = checkpoint_tokenizer(args)
    try:  # loaded once here (cached), then checked
        model_positions(args)
        tokenizer()
    except Exception:  # a checkpoint that does not load: refused as such by the grid's runs
        return
    check_max_context(args, decoding.max_context)
    check_prompt_room(tokenizer, decoding, agent.fixed_prompt, args)


def _run_value_error(
    config: EvalConfig, run: Run, shared: dict[str, Any], key: str, message: str
) -> EvalConfigError:
    keys: tuple[str, ...]
    if key in shared and key not in run.flags:  # the grid's own value
        keys = (key,)
    else:
        keys = ("systems", run.system, key) if key else ("systems", run.system)
    return EvalConfigError(f"{config.place().of(*keys)}: {message} (run {run.name})")


def load_eval_config(
    path: str | Path, num_beams: int | None = None, **overrides: object
) -> EvalConfig:
    """Read a config and check its systems against their agents' flags; `overrides` replace
    top-level keys, `num_beams` every EAST system's."""
    config = read_eval_config(path, num_beams, **overrides)
    config.runs()  # validates the systems (imports their agents: torch, SimulEval)
    check_metric_names(config)
    return config


def check_metric_names(config: EvalConfig) -> None:
    """Each metric one that SimulEval scores (with this package's plugin: the `*_CA`
    metrics, COMET), named with its key and line, before any run starts (imports
    SimulEval)."""
    from simuleval.evaluator.scorers import LATENCY_SCORERS_DICT, QUALITY_SCORERS_DICT

    import east_agent.simuleval_plugin  # noqa: F401

    for key, known in (
        ("quality_metrics", QUALITY_SCORERS_DICT),
        ("latency_metrics", LATENCY_SCORERS_DICT),
    ):
        for name in getattr(config, key):
            if name not in known:
                raise EvalConfigError(
                    f"{config.place().of(key)}: no metric {name!r}; SimulEval knows "
                    + ", ".join(sorted(known))
                )
            reason = not_for_text(name)
            if reason:
                raise EvalConfigError(f"{config.place().of(key)}: {name} {reason}")


SPEECH_OUTPUT = "scores speech output, and a grid's runs write text"
NOT_FOR_TEXT = {
    "ASR_BLEU": SPEECH_OUTPUT,
    "WHISPER_ASR_BLEU": SPEECH_OUTPUT,
    "WER": "takes no --sacrebleu-tokenizer, which SimulEval gives every grid run (use BLEU)",
}


def not_for_text(metric: str) -> str | None:
    """Why a scorer SimulEval knows cannot score a grid's text runs (None: it can); before,
    found after decoding, or with SimulEval's usage."""
    if "_SpeechAlign_" in metric or metric.startswith("Discontinuity"):
        return SPEECH_OUTPUT
    return NOT_FOR_TEXT.get(metric)


def check_comet_settings(config: EvalConfig) -> None:
    """With COMET in `quality_metrics`: a checkpoint given, and COMET able to score with it
    (`check_comet`: about 7 s), named by the key to change and its line, before any run."""
    settings = config.comet()
    if settings is None:
        return
    place = config.place()
    try:
        check_comet(settings)
    except CometError as error:
        key = f"comet_{error.setting}" if error.setting else "quality_metrics"
        raise EvalConfigError(f"{place.of(key)}: {error}") from None


def check_device(config: EvalConfig, needed_here: bool, dry_run: bool = False) -> None:
    """A device torch knows (`cpu`, `cuda`, `cuda:1`); with `needed_here`, one this machine
    has. Named by the flag, or the config's file and line, before any run (imports torch).
    A dry run notes a device this machine lacks, as it notes a missing checkpoint (before:
    nothing said; its commands may be for another machine)."""
    where = config.place().of("device")  # `--device`, where the flag gave it
    checked_device(config.device, where, needed_here)
    if dry_run and not needed_here:
        try:
            checked_device(config.device, where, needed_here=True)
        except ValueError as error:
            print(f"note: {error}: the runs would be refused on this machine", flush=True)


def check_relative_paths(config: EvalConfig, model_needed: bool) -> None:
    """Relative paths (`model_path`, `word_times`, COMET's) are read from the current
    directory. One that is not there but lies beside the config, or in a folder above it
    (the repository of a shipped config), is named with where it lies, before anything
    runs: a checkpoint `models/east-demo` would otherwise be asked of the hub, after
    minutes of retries (one that lies nowhere is asked of the hub once: `check_hub_checkpoint`).
    Without `model_needed` (merging shards) the checkpoint is not looked at; without COMET
    asked (a shard's runs), COMET's paths are not."""
    config_folder = config.source.resolve().parent
    comet_keys = ("comet_checkpoint", "comet_python") if "COMET" in config.quality_metrics else ()
    keys = ("word_times", *comet_keys)
    for key in ("model_path", *keys) if model_needed else keys:
        value = getattr(config, key)
        if value is None or Path(value).is_absolute() or Path(value).exists():
            continue
        for folder in (config_folder, *config_folder.parents):
            if (folder / value).exists():
                where = config.place().of(key)  # `--model-path`, where the flag gave it
                raise EvalConfigError(
                    f"{where}: {value!r} is not in the current directory ({Path.cwd()}), "
                    f"which relative paths are read from; it lies in {folder}: run east-eval "
                    f"there, or give {folder / value}"
                )
    if model_needed:
        check_hub_checkpoint(config)


def check_hub_checkpoint(config: EvalConfig) -> None:
    """A `model_path` that is no folder here but reads as a hub id (`models/east-demo` of a
    config copied elsewhere) is asked of the hub once, before any run folder is claimed
    (before: the folders claimed, then 49 s of the loader's retries and its error, naming
    no config line)."""
    from east_agent.lm.checkpoint import check_hub_model, is_hub_id

    if is_hub_id(config.model_path):
        where = config.place().of("model_path")
        try:
            check_hub_model(config.model_path, where)
        except ValueError as error:
            raise EvalConfigError(str(error)) from None


def read_eval_config(
    path: str | Path, num_beams: int | None = None, **overrides: object
) -> EvalConfig:
    """Read a config and check its top level, not yet its systems (`load_eval_config` does
    both): quick, nothing heavy imported."""
    path = Path(path)
    text = read_config_text(path)
    tree = without_anchor_blocks(parse_yaml(path, text))  # `x-defaults: &d {...}` aside
    if not isinstance(tree, dict):
        raise EvalConfigError(f"{path}: a config is a YAML mapping")
    place = KeyPlace(path, text, {key for key, value in overrides.items() if value is not None})
    unknown = sorted((key for key in tree if key not in TOP_LEVEL_KEYS), key=str)
    if unknown:  # a close key suggested (before: none, as for a system's keys)
        hint = close_hint(str(unknown[0]), TOP_LEVEL_KEYS)
        raise EvalConfigError(f"{place.of(unknown[0])}: unknown key {unknown[0]!r}{hint}")
    for key in ("testset", "model_path", "output", "systems"):
        if key not in tree and overrides.get(key) is None:
            raise EvalConfigError(f"{path}: {key} is required")
    tree.update({key: value for key, value in overrides.items() if value is not None})
    check_top_level(tree, place)
    expand_home(tree, place)
    if num_beams is not None:
        tree["systems"] = with_num_beams(path, tree["systems"], num_beams)
    overridden = frozenset(place.overridden)
    return EvalConfig(
        source=path, **{**tree, "output": Path(tree["output"])}, overridden=overridden
    )


def expand_home(tree: dict, place: KeyPlace) -> None:
    """`~` and `~user` at the start of a path key, as a shell would expand them (before: a
    folder named `~`, in the current directory)."""
    for key in ("output", "model_path", *OPTIONAL_PATH_KEYS):
        value = tree.get(key)
        if isinstance(value, (str, Path)) and str(value).startswith("~"):
            tree[key] = os.path.expanduser(str(value))
            if tree[key].startswith("~"):
                raise EvalConfigError(f"{place.of(key)}: {str(value)!r}: no such user's home")


def read_config_text(path: Path) -> str:
    try:
        return read_yaml_text(path, "config")
    except YamlFileError as error:
        raise EvalConfigError(str(error)) from None


def parse_yaml(path: Path, text: str) -> Any:
    """The YAML of a config; invalid YAML (a key given twice too) named by the line and
    column YAML reports."""
    try:
        return load_yaml(text, str(path))
    except YamlFileError as error:
        raise EvalConfigError(str(error)) from None


def check_folders_apart(place: KeyPlace, runs: list[Run]) -> None:
    """No run's folder inside another's: a swept path names its run's folder, so a path
    below another swept one put that run inside the other's folder (emptied with it)."""
    folders = {run.name: Path(run.name) for run in runs}
    for run in runs:
        for other in runs:
            if folders[run.name] in folders[other.name].parents:
                where = place.of("systems", other.system)
                raise EvalConfigError(
                    f"{where}: run {other.name}'s folder would be inside run {run.name}'s "
                    "(a swept path below another); sweep paths of which none is inside another"
                )


class KeyPlace:
    """How a message names a key: `grid.yaml: line 7: systems.east`, or the flag
    (`--testset`) whose value replaced the config's."""

    def __init__(self, path: Path, text: str, overridden: set[str]) -> None:
        self.path, self.text, self.overridden = path, text, overridden

    def of(self, *keys: Any) -> str:
        dotted = ".".join(str(key) for key in keys)
        if keys[0] in self.overridden:
            return f"--{str(keys[0]).replace('_', '-')}" + dotted[len(str(keys[0])) :]
        line = self.line(keys)
        return f"{self.path}: line {line}: {dotted}" if line else f"{self.path}: {dotted}"

    def line(self, keys: tuple) -> int | None:
        """The line of `keys` (a path into nested mappings) in the config, if found."""
        try:
            node = yaml.compose(self.text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            return None
        found = None
        for key in keys:
            if not isinstance(node, yaml.MappingNode):
                return found
            for key_node, value_node in node.value:
                if key_node.value == str(key):
                    found, node = key_node.start_mark.line + 1, value_node
                    break
            else:
                return found
        return found


STRING_KEYS = ("model_path", "device", "torch_dtype")
WHOLE_NUMBER_KEYS = ("max_new_tokens", "batch_size", "jobs", "comet_batch_size")
OPTIONAL_PATH_KEYS = ("word_times", "comet_checkpoint", "comet_python")
LIST_KEYS = ("quality_metrics", "latency_metrics")


def must_be(kind: str, value: object) -> str:
    """A refusal's words: `must be text, got 5`, or for blank text (an unset variable in a
    script, `--model-path ''`) `is empty (must be text)` (before: "got ''")."""
    if isinstance(value, str) and not value.strip():
        return f"is empty (must be {kind})"
    return f"must be {kind}, got {value!r}"


def check_top_level(tree: dict, place: KeyPlace) -> None:
    """Each top-level value of the type the grid uses, named with its key if not."""
    for key in STRING_KEYS:
        if key in tree and (not isinstance(tree[key], str) or not tree[key].strip()):
            raise EvalConfigError(f"{place.of(key)} {must_be('text', tree[key])}")
    for key in ("output", *OPTIONAL_PATH_KEYS):
        value = tree.get(key)
        if key in tree and not (value is None and key in OPTIONAL_PATH_KEYS):
            if not isinstance(value, (str, Path)) or not str(value).strip():
                raise EvalConfigError(f"{place.of(key)} {must_be('a path', value)}")
    for key in WHOLE_NUMBER_KEYS:
        value = tree.get(key)
        if key in tree and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise EvalConfigError(
                f"{place.of(key)} must be a whole number of at least 1, got {value!r}"
            )
    for key in LIST_KEYS:
        value = tree.get(key)
        if key in tree and (
            not isinstance(value, list)
            or not value
            or not all(isinstance(item, str) and item.strip() for item in value)
        ):
            raise EvalConfigError(
                f"{place.of(key)} must be a list of names, such as [BLEU] or [LAAL, AL], "
                f"got {value!r}"
            )
    gpus = tree.get("comet_gpus")
    if "comet_gpus" in tree and (type(gpus) is not int or gpus not in (0, 1)):
        raise EvalConfigError(f"{place.of('comet_gpus')} must be 0 or 1, got {gpus!r}")
    if "ca_unit_seconds" in tree:
        tree["ca_unit_seconds"] = seconds(tree["ca_unit_seconds"], place.of("ca_unit_seconds"))
    check_testset(tree["testset"], place.of("testset"))
    from east_agent.evaluation.longform import TICK, is_longform

    if "ca_unit_seconds" in tree and not is_longform(tree["testset"]):  # else OmniSTEval's too
        if asks_no_ca_metric(tree.get("latency_metrics")):
            # as east-simuleval refuses --ca-unit-seconds (before: dropped without a word)
            on = (
                f" on --testset {tree['testset']}, a sentence-level set"
                if "testset" in place.overridden
                else ""
            )
            raise EvalConfigError(
                f"{place.of('ca_unit_seconds')} sets the clock of the computation-aware "
                f"metrics; latency_metrics asks for none{on}: add one (AL_CA, LAAL_CA, "
                "AP_CA, DAL_CA) or leave ca_unit_seconds out"
            )
    if is_longform(tree["testset"]) and "ca_unit_seconds" in tree and tree.get("word_times"):
        if asks_no_ca_metric(tree.get("latency_metrics")):
            raise EvalConfigError(  # as the scorer refuses --ca-unit-seconds with --word-times
                f"{place.of('ca_unit_seconds')}: the talks' clock is {place.of('word_times')}, "
                "and latency_metrics asks for no SimulEval _CA metric, which alone would "
                "read ca_unit_seconds: leave it out (before: ignored without a word)"
            )
    if is_longform(tree["testset"]) and tree.get("ca_unit_seconds", TICK) < TICK:
        raise EvalConfigError(
            f"{place.of('ca_unit_seconds')}: {tree['ca_unit_seconds']:g} s a unit; long-form "
            "scoring needs at least 1/1024 s (its clock's tick)"
        )
    systems = tree["systems"]
    if not isinstance(systems, dict) or not systems:
        raise EvalConfigError(f"{place.of('systems')} must map names to settings")
    for name, settings in systems.items():
        check_system_name(place, name)
        check_system_settings(place.of("systems", name), settings)


def asks_no_ca_metric(metrics: list | None) -> bool:
    """Whether a config's `latency_metrics` name no computation-aware metric, which alone
    reads `ca_unit_seconds` (None: the default's, AL_CA among them). Any case counts:
    `al_ca` is named as a metric SimulEval lacks, as is any other name it lacks, by
    `check_metric_names` (before: "asks for none", the misspelt name unsaid)."""
    if metrics is None or unknown_latency_metrics(metrics):
        return False
    return not any(str(metric).upper().endswith("_CA") for metric in metrics)


def unknown_latency_metrics(names: list[str]) -> list[str]:
    """The names SimulEval's latency scorers (and this package's plugin) lack."""
    from simuleval.evaluator.scorers import LATENCY_SCORERS_DICT

    import east_agent.simuleval_plugin  # noqa: F401

    return [name for name in names if name not in LATENCY_SCORERS_DICT]


def check_system_name(place: KeyPlace, name: Any) -> None:
    """A system's name begins its runs' folder names (`<output>/runs/<name>-<setting>`):
    one that is not a plain folder name would write elsewhere."""
    text = str(name)
    if not text.strip() or text.startswith(".") or any(part in text for part in ("/", "\\")):
        raise EvalConfigError(
            f"{place.of('systems', name)}: {text!r} names its runs' folders in "
            "<output>/runs: a name without '/', '\\' or a leading '.'"
        )


NAME_BYTES = 255  # the longest file name most file systems take


def check_folder_name(place: KeyPlace, system: str, key: str | None, name: str) -> None:
    """A run's folder name (`<system>-<setting>`) a file system takes: refused here, not as
    an errno when its turn comes."""
    if len(os.fsencode(name)) > NAME_BYTES:
        where = place.of("systems", system, *([key] if key else []))
        raise EvalConfigError(
            f"{where}: the run's folder name {name[:40]!r}... is {len(os.fsencode(name))} "
            f"bytes, above the {NAME_BYTES} a file name may have: a shorter name"
        )


def seconds(value: Any, where: str) -> float:
    """A number of seconds above 0 (YAML reads `1e-1`, with no dot, as text)."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None or not math.isfinite(number) or number <= 0:
        raise EvalConfigError(f"{where} must be a number of seconds above 0, got {value!r}")
    return number


def check_testset(name: Any, where: str) -> None:
    """A test set `east-prepare` knows (`wmt22.de-en`, `multi30k.de-en.talks50`)."""
    from east_agent.evaluation.longform import parse_name
    from east_agent.evaluation.testsets import available_testsets

    if not isinstance(name, str):
        raise EvalConfigError(f"{where} must be a test set name such as multi30k.de-en")
    try:
        base, _ = parse_name(name)
    except ValueError as error:
        raise EvalConfigError(f"{where}: {error}") from None
    known = available_testsets()
    if base not in known:
        raise EvalConfigError(
            f"{where}: unknown test set {base!r} (NAME.SRC-TGT, optionally .talksN); "
            f"choose one of {', '.join(known)}"
        )


def check_system_settings(where: str, settings: Any) -> None:
    if not isinstance(settings, dict):
        raise EvalConfigError(
            f"{where} must map settings to values (agent: east, latency: [low, high]), "
            f"got {settings!r}"
        )


def with_num_beams(path: Path, systems: dict, num_beams: int) -> dict:
    east = [
        name
        for name, settings in systems.items()
        if isinstance(settings, dict) and settings.get("agent") == "east"
    ]
    if not east:
        raise EvalConfigError(f"{path}: num_beams {num_beams}: no system uses the east agent")
    sweeping = [name for name in east if isinstance(systems[name].get("num_beams"), list)]
    if sweeping:  # before: its runs became one, named `default`
        raise EvalConfigError(
            f"{path}: num_beams {num_beams} (--num-beams) for every EAST system, and "
            f"{sweeping[0]} sweeps num_beams: its runs would be one; drop one of the two"
        )
    return {
        name: {**settings, "num_beams": num_beams} if name in east else settings
        for name, settings in systems.items()
    }


def agent_class_of(agent_file: str) -> type[StreamingAgent]:
    """The agent class an agent file of this package registers."""
    if Path(agent_file).name == AGENT_FILES["waitk"]:
        from east_agent.waitk_agent import WaitkAgent

        return WaitkAgent
    from east_agent.agent import EastAgent

    return EastAgent
