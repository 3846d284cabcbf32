"""SFT recipes: a YAML file plus `section.key=value` overrides, parsed once and checked.

    stage: full | lora
    model:  name_or_path, torch_dtype, attn_implementation, trust_remote_code, chat_template
    data:   files, eval_files, cutoff_len, skip_malformed, max_samples, system_prompt, cache_dir
    lora:   r, alpha, dropout, target_modules          (stage: lora)
    train:  transformers.TrainingArguments keyword arguments, passed through
    resume_from_checkpoint: auto | <path> | null

Unknown keys are errors that name the file and the key (a typo must not silently fall
back to a default), and so are TrainingArguments keywords this transformers lacks. A
renamed keyword (RENAMED_TRAINING_ARGUMENTS: `gradient_checkpointing`, now
`activation_checkpointing`) may be given under either name and reaches the Trainer under
the one the installed transformers takes.

`data.system_prompt` (default null: no system turn) puts a system turn before every user
turn of the training samples, masked out of the loss. Our inference renders none, and
neither does the default; the paper trained with LLaMA-Factory's `llama3` template, which
adds "You are a helpful assistant.", so set that to continue from the released Stage I
checkpoint in the format it saw. `east_agent` has no setting for a system turn: a model
trained with one is decoded without it (as the paper's was), and `training.sft` warns.

`train.max_steps` is at least 1, or -1 (transformers' default) to train
`train.num_train_epochs` (above 0) epochs. `train.save_only_model: true` checkpoints hold
the weights alone: a killed run cannot resume from them (its optimizer and learning-rate
schedule would restart), so `training.sft` refuses to, and warns when the run starts.

`data.cache_dir` is where the tokenized samples are cached (default: `east-sft/` in the
`datasets` cache, HF_DATASETS_CACHE). The first process of each node tokenizes; the node's
other ranks, and any later run on the same data, tokenizer and settings, load the result.

Values are typed by the field they set (the dataclasses below; TrainingArguments' own
annotations for `train`), in the file and in overrides alike: a field that takes a string
keeps the text as written (`train.eval_strategy=no` is "no", not YAML's False;
`model.name_or_path=007` is "007"; an override's text YAML cannot read, such as
`model.chat_template=[x].jinja`, is kept too), a float field reads `1e-4` as a number, and a value
that fits no type of its field is an error naming the key and the value.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from east_agent.common.arguments import TORCH_DTYPES
from east_agent.common.yaml_files import (
    ANCHORS_ONLY,
    UniqueKeyLoader,
    YamlFileError,
    close_hint,
    load_yaml,
    read_yaml_text,
    without_anchor_blocks,
)
from east_agent.decoding import units
from training.data import EAST_TOKENS, lone_surrogate, repeated_file

STAGES = ("full", "lora")
REMOVED_TRAINING_ARGUMENTS = {
    "warmup_ratio": "transformers 5 removed it: write `warmup_steps: 0.1` (a float < 1 is a ratio)",
    "overwrite_output_dir": "transformers 5 removed it",
    "logging_dir": "transformers 5 removed it",
}

# Training arguments the Trainer takes but `training.sft` never reads: named with where
# the recipe says it (before: accepted, no effect, and recorded in recipe.json as if used).
UNREAD_TRAINING_ARGUMENTS = {
    "resume_from_checkpoint": "the Trainer never reads it; the recipe's top-level "
    "resume_from_checkpoint (auto, a checkpoint's path, or null) is the one that resumes",
}

# Training arguments transformers renamed (old name: new name). A recipe may use either;
# the Trainer gets the one the installed transformers takes, without 5.25's FutureWarning
# for the old name, and 5.17 (no new name yet) runs a recipe written with the new one.
RENAMED_TRAINING_ARGUMENTS = {
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}


class ConfigError(ValueError):
    """A recipe or an override is malformed."""


@dataclass
class ModelSettings:
    name_or_path: str
    torch_dtype: str = "bfloat16"  # bfloat16 | float16 | float32 | auto
    attn_implementation: str = "auto"  # auto: flash_attention_2 where installed, else sdpa
    trust_remote_code: bool = False
    chat_template: str | None = None  # a .jinja file, for base models that have none


@dataclass
class DataSettings:
    files: list[str] = field(default_factory=list)
    eval_files: list[str] = field(default_factory=list)  # held-out loss (train.eval_strategy)
    cutoff_len: int = 1024
    skip_malformed: bool = False  # also skips lines that are not UTF-8, JSON or an object
    max_samples: int | None = None
    system_prompt: str | None = None  # a system turn before each user turn; none by default
    cache_dir: str | None = None  # tokenized samples; default: the HF datasets cache


@dataclass
class LoraSettings:
    r: int = 64
    alpha: int = 128
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


@dataclass
class SFTConfig:
    stage: str
    model: ModelSettings
    data: DataSettings
    train: dict[str, Any]
    lora: LoraSettings = field(default_factory=LoraSettings)
    resume_from_checkpoint: str | bool | None = "auto"
    source: str = "<config>"
    # where each key was given (the recipe's line, or an override), for checks made later
    places: dict = field(default_factory=dict, repr=False, compare=False)

    def place(self, *keys: str) -> str:
        """Where `keys` were given: `recipe.yaml, line 7` or `override 'data.files=...'`."""
        return _place(self.places, self.source, *keys)

    @property
    def output_dir(self) -> Path:
        return Path(self.train["output_dir"])

    @property
    def seed(self) -> int:
        """`train.seed`, or the Trainer's default where the recipe gives none."""
        from transformers import TrainingArguments

        default = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}["seed"]
        return self.train.get("seed", default)


SECTIONS = {"model": ModelSettings, "data": DataSettings, "lora": LoraSettings}
TOP_LEVEL_TYPES = {"stage": str, "resume_from_checkpoint": str | bool | None}


@functools.cache
def _field_types(section: str) -> dict[str, Any]:
    if section != "train":
        return typing.get_type_hints(SECTIONS[section])
    from transformers import TrainingArguments

    try:
        return typing.get_type_hints(TrainingArguments)
    except NameError:  # an annotation this Python cannot resolve: values stay as YAML reads them
        return {}


def field_type(keys: list[str]) -> Any | None:
    """The declared type of `section.key` (or a top-level key); None where none is known."""
    if len(keys) == 1:
        return TOP_LEVEL_TYPES.get(keys[0])
    if len(keys) == 2 and (keys[0] in SECTIONS or keys[0] == "train"):
        return _field_types(keys[0]).get(keys[1])
    return None


def _options(expected: Any) -> tuple:
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        return typing.get_args(expected)
    return (expected,)


def _fits(value: Any, option: Any) -> bool:
    origin = typing.get_origin(option) or option
    if option is Any:
        return True
    if option is type(None):
        return value is None
    if origin is bool:
        return isinstance(value, bool)
    if origin in (int, float):
        numbers = (int, float) if origin is float else (int,)
        return isinstance(value, numbers) and not isinstance(value, bool)
    if origin is typing.Literal:
        return any(value == choice and type(value) is type(choice) for choice in option.__args__)
    if origin is list and typing.get_args(option):
        item = typing.get_args(option)[0]
        return isinstance(value, list) and all(_fits(entry, item) for entry in value)
    return not isinstance(origin, type) or isinstance(value, origin)


def _takes_text(option: Any) -> bool:
    origin = typing.get_origin(option) or option
    if origin is list:
        return any(_takes_text(item) for item in typing.get_args(option))
    return isinstance(origin, type) and issubclass(origin, str)


def _number(value: Any, options: tuple) -> Any:
    """A YAML string such as `1e-4` (no dot, so not a YAML float) as the number it names."""
    for kind in (int, float):
        if isinstance(value, str) and any((typing.get_origin(o) or o) is kind for o in options):
            try:
                return kind(value)
            except ValueError:
                continue
    return None


def settle(value: Any, written: Any, expected: Any, where: str) -> Any:
    """`value` (as YAML read it) for a field of type `expected`; `written` is the same
    YAML read with every scalar kept as text, or None where that is not at hand."""
    options = _options(expected)
    if any(_fits(value, option) for option in options):
        return value
    if written is not None and any(_fits(written, o) for o in options if _takes_text(o)):
        return written
    number = _number(value, options)
    if number is not None and any(_fits(number, option) for option in options):
        return number
    hint = ""
    if isinstance(value, bool) and any(_takes_text(option) for option in options):
        hint = " (quote it: YAML reads no/yes/on/off as booleans)"
    elif value is None and any((typing.get_origin(o) or o) is list for o in options):
        hint = " (none at all is [])"
    shown = written if written is not None else value
    raise ConfigError(f"{where}: expected {_type_name(expected)}, got {shown!r}{hint}")


def _text_only(expected: Any) -> bool:
    """A field that takes text, and no mapping or list."""
    options = _options(expected)
    containers = any((typing.get_origin(o) or o) in (dict, list) for o in options)
    return any(_takes_text(option) for option in options) and not containers


def _type_name(expected: Any) -> str:
    names = [getattr(option, "__name__", str(option)) for option in _options(expected)]
    return " or ".join("null" if name == "NoneType" else name for name in names)


def _yaml(text: str, where: str) -> tuple[Any, Any]:
    """(YAML value, the same with every scalar as written)."""
    try:
        return load_yaml(text, where), yaml.load(text, Loader=yaml.BaseLoader)
    except YamlFileError as error:
        raise ConfigError(str(error)) from None


Places = dict[tuple[str, ...], str]  # key path: where it was given ("file, line N", override)


def _file_places(text: str, path: str) -> Places:
    """`path, line N` of each key of the recipe's mappings, by its key path."""
    places: Places = {}

    def walk(node, prefix: tuple[str, ...]) -> None:
        if not isinstance(node, yaml.MappingNode):
            return
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                keys = (*prefix, key_node.value)
                places[keys] = f"{path}, line {key_node.start_mark.line + 1}"
                walk(value_node, keys)

    walk(yaml.compose(text, Loader=UniqueKeyLoader), ())
    return places


def _place(places: Places, source: str, *keys: str) -> str:
    """Where `keys` (or the nearest section above them) was given; else `source`."""
    for end in range(len(keys), 0, -1):
        if keys[:end] in places:
            return places[keys[:end]]
    return source


def apply_override(tree: dict, override: str, source: str, places: Places) -> None:
    """Set `section.key=value` in the raw config tree, the value typed by its field."""
    dotted, _, raw = override.partition("=")
    keys = dotted.strip().split(".")
    if "=" not in override or not all(keys):  # `=3`, `train.=3`: before, "unknown key ''"
        raise ConfigError(f"override {override!r}: expected section.key=value")
    if keys[0].startswith(ANCHORS_ONLY):  # merged into the sections as the file was read
        raise ConfigError(
            f"override {override!r}: {keys[0]} holds a block for merge keys alone, taken "
            "where the recipe was read; override the section's key that takes it (lora.r=...)"
        )
    node = tree
    for key in keys[:-1]:
        if node.get(key) is None:  # absent, or written empty (`lora:`)
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {key!r} in {source} is not a section")
    where = f"override {override!r}"
    for end in range(1, len(keys)):  # a section the override makes: its place too
        places.setdefault(tuple(keys[:end]), where)
    places[tuple(keys)] = where
    expected = field_type(keys)
    text_only = expected is not None and _text_only(expected)
    try:
        value, written = _yaml(raw, where)
    except ConfigError:
        if not text_only:
            raise
        value = written = raw.strip()  # text YAML can't read (`model.chat_template=[x].jinja`)
    if text_only and isinstance(written, (dict, list)):
        written = raw.strip()  # text with a colon or brackets (`data.system_prompt=Rule: x`)
    if expected is not None:
        value = settle(value, "" if written is None else written, expected, where)
    node[keys[-1]] = value


def settle_tree(tree: dict, written: dict | None, source: str, places: Places) -> None:
    """Type every known field of a recipe tree in place (see `settle`)."""
    written = written if isinstance(written, dict) else {}
    for key in TOP_LEVEL_TYPES:
        if key in tree:
            where = f"{_place(places, source, key)}: {key}"
            tree[key] = settle(tree[key], written.get(key), field_type([key]), where)
    for section in (*SECTIONS, "train"):
        values, texts = tree.get(section), written.get(section)
        if not isinstance(values, dict):
            continue
        texts = texts if isinstance(texts, dict) else {}
        for key, value in values.items():
            expected = field_type([section, str(key)])
            if expected is not None:
                where = f"{_place(places, source, section, str(key))}: {section}.{key}"
                values[key] = settle(value, texts.get(key), expected, where)


At = typing.Callable[..., str]  # where a key path was given: `at("data", "cutoff_len")`


def _section(cls, values: Any, name: str, at: At):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{at(name)}: section {name!r} must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{at(name, unknown[0])}: unknown key {name}.{unknown[0]}"
            f"{close_hint(str(unknown[0]), known)} (known: {', '.join(sorted(known))})"
        )
    try:
        return cls(**values)
    except TypeError as error:
        raise ConfigError(f"{at(name)}: section {name!r}: {error}") from None


def _accepted_training_arguments() -> set[str]:
    from transformers import TrainingArguments

    return set(inspect.signature(TrainingArguments.__init__).parameters) - {"self"}


def spelled_as_installed(train: dict, at: At) -> dict:
    """`train` with each renamed argument under the name the installed transformers takes."""
    accepted = _accepted_training_arguments()
    spelled = dict(train)
    for old, new in RENAMED_TRAINING_ARGUMENTS.items():
        if old in train and new in train:
            raise ConfigError(
                f"{at('train', new)}: train.{old} and train.{new} are one setting; give one"
            )
        name = new if new in accepted else old
        for given in (old, new):
            if given in spelled and given != name:
                spelled[name] = spelled.pop(given)
    return spelled


def check_training_arguments(train: dict, at: At) -> None:
    accepted = _accepted_training_arguments()
    for key in train:
        if key in REMOVED_TRAINING_ARGUMENTS and key not in accepted:
            raise ConfigError(f"{at('train', key)}: train.{key}: {REMOVED_TRAINING_ARGUMENTS[key]}")
        if key in UNREAD_TRAINING_ARGUMENTS:
            raise ConfigError(f"{at('train', key)}: train.{key}: {UNREAD_TRAINING_ARGUMENTS[key]}")
        if key not in accepted:
            raise ConfigError(
                f"{at('train', key)}: train.{key} is not a TrainingArguments keyword"
                f"{close_hint(str(key), accepted)}"
            )
    if "output_dir" not in train:
        raise ConfigError(f"{at('train')}: train.output_dir is required")


AT_LEAST_ONE = ("per_device_train_batch_size", "per_device_eval_batch_size",
                "gradient_accumulation_steps")  # fmt: skip


def check_settings(config: SFTConfig, at: At) -> None:
    """Values of the right type that no run can use, refused before anything is read."""
    model, data, train = config.model, config.data, config.train
    if model.torch_dtype not in TORCH_DTYPES:
        raise ConfigError(
            f"{at('model', 'torch_dtype')}: model.torch_dtype {model.torch_dtype!r}: one of "
            f"{', '.join(TORCH_DTYPES)}"
        )
    check_attention(model.attn_implementation, at)
    if model.chat_template is not None:
        check_chat_template(model.chat_template, at)
    found = units.control_token_in(data.system_prompt or "", EAST_TOKENS)
    if found:
        raise ConfigError(
            f"{at('data', 'system_prompt')}: data.system_prompt holds {found!r}, a control "
            "token: the model would read it as that token, not as text"
        )
    check_data_files(data, at)
    if surrogate := lone_surrogate(data.system_prompt or ""):  # before: failed tokenizing
        raise ConfigError(f"{at('data', 'system_prompt')}: data.system_prompt {surrogate}")
    if data.system_prompt is not None and not data.system_prompt.strip():
        raise ConfigError(  # before: an empty system turn; the override `=` gave none
            f"{at('data', 'system_prompt')}: data.system_prompt is empty: leave it out (or "
            "null) for no system turn"
        )
    for name, value in (("cutoff_len", data.cutoff_len), ("max_samples", data.max_samples)):
        if value is not None and value < 1:
            raise ConfigError(f"{at('data', name)}: data.{name} must be at least 1, got {value}")
    if not isinstance(train["output_dir"], str) or not train["output_dir"].strip():
        raise ConfigError(f"{at('train', 'output_dir')}: train.output_dir must name a folder")
    check_output_apart(train["output_dir"], model.name_or_path, at)
    for name in AT_LEAST_ONE:
        if isinstance(train.get(name), int) and train[name] < 1:
            raise ConfigError(
                f"{at('train', name)}: train.{name} must be at least 1, got {train[name]}"
            )
    for name, note in (("learning_rate", ""), ("warmup_steps", " (below 1: a share of the steps)")):
        value = train.get(name)  # warmup before: transformers' "Got warmup_steps = -0.5"
        if isinstance(value, (int, float)) and not (value >= 0 and math.isfinite(value)):
            raise ConfigError(
                f"{at('train', name)}: train.{name} must be a finite number >= 0{note}, got {value}"
            )
    check_length(train, at)
    seed = train.get("seed")
    if isinstance(seed, int) and not 0 <= seed < 2**32:  # before: numpy's, once loaded
        raise ConfigError(f"{at('train', 'seed')}: train.seed must be 0 to 2**32 - 1, got {seed}")
    kwargs = train.get("lr_scheduler_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ConfigError(
            f"{at('train', 'lr_scheduler_kwargs')}: train.lr_scheduler_kwargs must be a "
            f"mapping (name: value), got {kwargs!r}"
        )
    check_schedule(train, at)
    check_best_metric(train, at)
    check_reporting(train, at)
    if evaluates(train) and not data.eval_files:
        raise ConfigError(
            f"{at('train', 'eval_strategy')}: train.eval_strategy "
            f"{train.get('eval_strategy')!r} needs data.eval_files (the held-out records)"
        )
    if config.stage == "lora":
        check_lora(config.lora, at)


def check_schedule(train: dict, at: At) -> None:
    """The learning-rate schedule built and stepped as the Trainer will build it, on a
    stand-in optimizer: a scheduler keyword it does not take, or a value of the wrong kind
    (`{min_lr: abc}`), refused naming the key (before: a TypeError traceback once the model
    and the data had loaded)."""
    import torch
    from transformers import SchedulerType, get_scheduler

    name = str(train.get("lr_scheduler_type", "linear"))
    if name not in {kind.value for kind in SchedulerType}:
        raise ConfigError(
            f"{at('train', 'lr_scheduler_type')}: train.lr_scheduler_type {name!r}: one of "
            f"{', '.join(kind.value for kind in SchedulerType)}"
        )
    if name in ("greedy", "reduce_lr_on_plateau") and not evaluates(train):
        raise ConfigError(  # before: TrainingArguments' message, no place named
            f"{at('train', 'lr_scheduler_type')}: train.lr_scheduler_type {name} is stepped "
            "by an evaluation's loss: set train.eval_strategy (and data.eval_files)"
        )
    kwargs = train.get("lr_scheduler_kwargs") or {}
    rate = train.get("learning_rate", 5e-5)
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=rate if isinstance(rate, (int, float)) else 5e-5)
    try:
        schedule = get_scheduler(
            name, optimizer, num_warmup_steps=1, num_training_steps=10,
            scheduler_specific_kwargs=dict(kwargs),
        )  # fmt: skip
        if isinstance(schedule, torch.optim.lr_scheduler.LambdaLR):  # stepped by metrics: not
            for _ in range(3):  # a schedule's factor is computed at each step
                optimizer.step()
                schedule.step()
    except (TypeError, ValueError, ZeroDivisionError) as error:
        if isinstance(error, ZeroDivisionError) and rate == 0:
            raise ConfigError(  # before: blamed on the kwargs, which were right
                f"{at('train', 'learning_rate')}: train.learning_rate 0: a {name} schedule "
                f"divides by it (lr_scheduler_kwargs {kwargs}); a learning rate above 0"
            ) from None
        raise ConfigError(
            f"{at('train', 'lr_scheduler_kwargs')}: train.lr_scheduler_kwargs {kwargs} do not "
            f"make a {name} schedule ({type(error).__name__}: {error})"
        ) from None


# What an evaluation of `training.sft` logs (it computes no metric of its own): the loss,
# and the Trainer's timings.
EVALUATION_METRICS = ("loss", "runtime", "samples_per_second", "steps_per_second")


def check_best_metric(train: dict, at: At) -> None:
    """`metric_for_best_model` names a metric an evaluation logs (before: `KeyError:
    'eval_bleu'` after the first evaluation, the steps before it lost)."""
    metric = train.get("metric_for_best_model")
    if not isinstance(metric, str):
        return
    if metric.removeprefix("eval_") not in EVALUATION_METRICS:
        raise ConfigError(
            f"{at('train', 'metric_for_best_model')}: train.metric_for_best_model {metric!r}: "
            "an evaluation here logs only its loss (training.sft computes no other metric): "
            f"one of {', '.join(EVALUATION_METRICS)} (eval_ prefixed or not)"
        )


def check_reporting(train: dict, at: At) -> None:
    """Each `report_to` integration is one transformers knows, and its callback is made
    here as the Trainer will make it (before: tensorboard missing was a traceback once
    every record was tokenized and the model loaded)."""
    from transformers.integrations import integration_utils

    named = train.get("report_to")
    names = [named] if isinstance(named, str) else list(named or ())
    known = integration_utils.INTEGRATION_TO_CALLBACK
    for name in names:
        if name in ("none", "all"):  # all: those installed, none: no report
            continue
        if name not in known:
            raise ConfigError(
                f"{at('train', 'report_to')}: train.report_to {name!r}: one of none, all, "
                f"{', '.join(known)}"
            )
        try:
            known[name]()  # the Trainer's own call: it raises when the package is missing
        except Exception as error:  # whatever the integration says is why
            raise ConfigError(
                f"{at('train', 'report_to')}: train.report_to {name}: {error} (install "
                "it, or report_to: none)"
            ) from None


def check_output_apart(output_dir: str, name_or_path: str, at: At) -> None:
    """The run's folder is not the model folder it starts from, nor holds it (before: its
    checkpoints, `model/` and records were written among the base model's files, or its
    `model/` replaced the base). A folder inside the base's is apart: its subfolders are
    no part of the model."""
    base = Path(name_or_path)
    if not base.is_dir():
        return  # a hub id
    output, base = Path(output_dir).resolve(), base.resolve()
    where = "is" if output == base else "holds" if output in base.parents else None
    if where:
        raise ConfigError(
            f"{at('train', 'output_dir')}: train.output_dir {output_dir} {where} "
            f"model.name_or_path {name_or_path}, the model it starts from; another folder"
        )


def check_data_files(data: DataSettings, at: At) -> None:
    """No file listed twice in `data.files` or `data.eval_files`, however spelled (before:
    its records were read twice, the report saying they came from one file). The recipe
    weights no data: listing a file twice is no way to upsample it."""
    for name in ("files", "eval_files"):
        if repeated := repeated_file(getattr(data, name)):
            raise ConfigError(
                f"{at('data', name)}: data.{name} lists one file twice, as {repeated[0]} and "
                f"{repeated[1]}: its records would be read twice; list each file once"
            )


def check_length(train: dict, at: At) -> None:
    """How long the run trains: a number of steps, or (`max_steps: -1`) of epochs; a run
    that would train no step is refused (before: 0 trained one step more at every rerun,
    and no epoch wrote an untrained model)."""
    steps = train.get("max_steps", -1)
    if isinstance(steps, int) and (steps == 0 or steps < -1):
        raise ConfigError(
            f"{at('train', 'max_steps')}: train.max_steps must be at least 1, or -1 to train "
            f"train.num_train_epochs epochs, got {steps}"
        )
    epochs = train.get("num_train_epochs")
    if steps == -1 and isinstance(epochs, (int, float)) and not 0 < epochs < math.inf:
        raise ConfigError(
            f"{at('train', 'num_train_epochs')}: train.num_train_epochs must be a finite "
            f"number above 0 (train.max_steps is -1: the run is sized in epochs), got {epochs}"
        )


def check_chat_template(path: str, at: At) -> None:
    """A template file that is there and compiles (before: a traceback once the model had
    loaded); `training.sft` renders it once the tokenizer, whose tokens it may read, loads."""
    from jinja2 import TemplateSyntaxError
    from transformers.utils.chat_template_utils import _compile_jinja_template

    where = f"{at('model', 'chat_template')}: model.chat_template {path}"
    if not Path(path).is_file():
        raise ConfigError(f"{where}: no such file")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where}: not a UTF-8 text file ({error})") from None
    try:
        _compile_jinja_template(text)
    except TemplateSyntaxError as error:
        raise ConfigError(f"{where}: line {error.lineno}: {error.message}") from None


def check_attention(name: str, at: At) -> None:
    """An attention implementation transformers knows (or a hub kernel, `org/name`)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = {"auto", "eager", *ALL_ATTENTION_FUNCTIONS.keys()}
    if name not in known and "/" not in name:
        raise ConfigError(
            f"{at('model', 'attn_implementation')}: model.attn_implementation {name!r}: "
            f"one of {', '.join(sorted(known))} (or a hub kernel, org/name)"
        )


def check_lora(lora: LoraSettings, at: At) -> None:
    if lora.r < 1:
        raise ConfigError(f"{at('lora', 'r')}: lora.r must be at least 1, got {lora.r}")
    if lora.alpha < 1:  # peft scales the adapter by alpha / r: at 0 it does nothing
        raise ConfigError(f"{at('lora', 'alpha')}: lora.alpha must be at least 1, got {lora.alpha}")
    if not 0 <= lora.dropout < 1:
        raise ConfigError(f"{at('lora', 'dropout')}: lora.dropout must be in [0, 1)")
    if not lora.target_modules:
        raise ConfigError(f"{at('lora', 'target_modules')}: lora.target_modules names no module")


def evaluates(train: dict) -> bool:
    """Whether the Trainer evaluates (its eval files are read only then)."""
    return train.get("eval_strategy") not in (None, "no") or bool(train.get("eval_on_start"))


def parse_config(tree: dict, source: str = "<config>", places: Places | None = None) -> SFTConfig:
    """The checked recipe of `tree`; `places` says where each key was given (else `source`)."""
    at = functools.partial(_place, places or {}, source)
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: a recipe is a YAML mapping")
    tree = without_anchor_blocks(tree)  # `x-defaults: &defaults {...}`: for merge keys
    known = {"stage", "model", "data", "lora", "train", "resume_from_checkpoint"}
    unknown = sorted(set(tree) - known, key=str)
    if unknown:
        raise ConfigError(
            f"{at(str(unknown[0]))}: unknown key {unknown[0]!r}"
            f"{close_hint(str(unknown[0]), known)} (known: {', '.join(sorted(known))})"
        )
    tree = copy.deepcopy(tree)
    settle_tree(tree, None, source, places or {})
    stage = tree.get("stage")
    if stage not in STAGES:
        raise ConfigError(f"{at('stage')}: stage must be one of {STAGES}, got {stage!r}")
    model = _section(ModelSettings, tree.get("model"), "model", at)
    data = _section(DataSettings, tree.get("data"), "data", at)
    if not data.files:
        raise ConfigError(f"{at('data', 'files')}: data.files lists no training file")
    train = tree.get("train") or {}
    if not isinstance(train, dict):
        raise ConfigError(f"{at('train')}: section 'train' must be a mapping")
    train = spelled_as_installed(train, at)
    check_training_arguments(train, at)
    config = SFTConfig(
        stage=stage,
        model=model,
        data=data,
        train=dict(train),
        lora=_section(LoraSettings, tree.get("lora"), "lora", at),
        resume_from_checkpoint=tree.get("resume_from_checkpoint", "auto"),
        source=source,
        places=dict(places or {}),
    )
    check_settings(config, at)
    return config


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> SFTConfig:
    path = Path(path)
    try:
        text = read_yaml_text(path, "recipe")
    except YamlFileError as error:
        raise ConfigError(str(error)) from None
    tree, written = _yaml(text, str(path))
    places = _file_places(text, str(path))
    if isinstance(tree, dict):
        settle_tree(tree, written, str(path), places)
    given: dict[str, str] = {}
    for override in overrides:
        key = override.partition("=")[0].strip()
        if "=" in override and key in given:  # before: the last one won, without a word
            raise ConfigError(f"override {override!r}: {key} given twice (also {given[key]!r})")
        given[key] = override
        if not isinstance(tree, dict):
            break  # parse_config names it
        apply_override(tree, override, str(path), places)
    return parse_config(tree, str(path), places)
