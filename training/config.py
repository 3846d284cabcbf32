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
checkpoint in the format it saw (and decode such a model with the same system turn).

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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from east_agent.lm.checkpoint import TORCH_DTYPES

STAGES = ("full", "lora")
REMOVED_TRAINING_ARGUMENTS = {
    "warmup_ratio": "transformers 5 removed it: write `warmup_steps: 0.1` (a float < 1 is a ratio)",
    "overwrite_output_dir": "transformers 5 removed it",
    "logging_dir": "transformers 5 removed it",
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

    @property
    def output_dir(self) -> Path:
        return Path(self.train["output_dir"])


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


class _KeyGivenTwice(yaml.YAMLError):
    def __init__(self, key, line: int) -> None:
        super().__init__(f"line {line}: key {key!r} given twice")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last,
    silently dropping a whole section or setting)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise _KeyGivenTwice(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _yaml(text: str, where: str) -> tuple[Any, Any]:
    """(YAML value, the same with every scalar as written)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader), yaml.load(text, Loader=yaml.BaseLoader)
    except _KeyGivenTwice as error:
        raise ConfigError(f"{where}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: invalid YAML: {error}") from None


def apply_override(tree: dict, override: str, source: str) -> None:
    """Set `section.key=value` in the raw config tree, the value typed by its field."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected section.key=value")
    dotted, raw = override.split("=", 1)
    keys = dotted.strip().split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {key!r} in {source} is not a section")
    where = f"override {override!r}"
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


def settle_tree(tree: dict, written: dict | None, source: str) -> None:
    """Type every known field of a recipe tree in place (see `settle`)."""
    written = written if isinstance(written, dict) else {}
    for key in TOP_LEVEL_TYPES:
        if key in tree:
            tree[key] = settle(tree[key], written.get(key), field_type([key]), f"{source}: {key}")
    for section in (*SECTIONS, "train"):
        values, texts = tree.get(section), written.get(section)
        if not isinstance(values, dict):
            continue
        texts = texts if isinstance(texts, dict) else {}
        for key, value in values.items():
            expected = field_type([section, str(key)])
            if expected is not None:
                where = f"{source}: {section}.{key}"
                values[key] = settle(value, texts.get(key), expected, where)


def _section(cls, values: Any, name: str, source: str):
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section {name!r} must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {name}.{unknown[0]} (known: {', '.join(sorted(known))})"
        )
    try:
        return cls(**values)
    except TypeError as error:
        raise ConfigError(f"{source}: section {name!r}: {error}") from None


def _accepted_training_arguments() -> set[str]:
    from transformers import TrainingArguments

    return set(inspect.signature(TrainingArguments.__init__).parameters) - {"self"}


def spelled_as_installed(train: dict, source: str) -> dict:
    """`train` with each renamed argument under the name the installed transformers takes."""
    accepted = _accepted_training_arguments()
    spelled = dict(train)
    for old, new in RENAMED_TRAINING_ARGUMENTS.items():
        if old in train and new in train:
            raise ConfigError(f"{source}: train.{old} and train.{new} are one setting; give one")
        name = new if new in accepted else old
        for given in (old, new):
            if given in spelled and given != name:
                spelled[name] = spelled.pop(given)
    return spelled


def check_training_arguments(train: dict, source: str) -> None:
    accepted = _accepted_training_arguments()
    for key in train:
        if key in REMOVED_TRAINING_ARGUMENTS and key not in accepted:
            raise ConfigError(f"{source}: train.{key}: {REMOVED_TRAINING_ARGUMENTS[key]}")
        if key not in accepted:
            raise ConfigError(f"{source}: train.{key} is not a TrainingArguments keyword")
    if "output_dir" not in train:
        raise ConfigError(f"{source}: train.output_dir is required")


AT_LEAST_ONE = ("per_device_train_batch_size", "per_device_eval_batch_size",
                "gradient_accumulation_steps")  # fmt: skip


def check_settings(model: ModelSettings, data: DataSettings, train: dict, source: str) -> None:
    """Values of the right type that no run can use, refused before anything is read."""
    if model.torch_dtype not in TORCH_DTYPES:
        raise ConfigError(
            f"{source}: model.torch_dtype {model.torch_dtype!r}: one of {', '.join(TORCH_DTYPES)}"
        )
    for name, value in (("cutoff_len", data.cutoff_len), ("max_samples", data.max_samples)):
        if value is not None and value < 1:
            raise ConfigError(f"{source}: data.{name} must be at least 1, got {value}")
    if not isinstance(train["output_dir"], str) or not train["output_dir"].strip():
        raise ConfigError(f"{source}: train.output_dir must name a folder")
    for name in AT_LEAST_ONE:
        if isinstance(train.get(name), int) and train[name] < 1:
            raise ConfigError(f"{source}: train.{name} must be at least 1, got {train[name]}")
    if evaluates(train) and not data.eval_files:
        raise ConfigError(
            f"{source}: train.eval_strategy {train.get('eval_strategy')!r} needs "
            "data.eval_files (the held-out records)"
        )


def evaluates(train: dict) -> bool:
    """Whether the Trainer evaluates (its eval files are read only then)."""
    return train.get("eval_strategy") not in (None, "no") or bool(train.get("eval_on_start"))


def parse_config(tree: dict, source: str = "<config>") -> SFTConfig:
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: a recipe is a YAML mapping")
    known = {"stage", "model", "data", "lora", "train", "resume_from_checkpoint"}
    unknown = sorted(set(tree) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    tree = copy.deepcopy(tree)
    settle_tree(tree, None, source)
    stage = tree.get("stage")
    if stage not in STAGES:
        raise ConfigError(f"{source}: stage must be one of {STAGES}, got {stage!r}")
    model = _section(ModelSettings, tree.get("model"), "model", source)
    data = _section(DataSettings, tree.get("data"), "data", source)
    if not data.files:
        raise ConfigError(f"{source}: data.files lists no training file")
    train = tree.get("train") or {}
    if not isinstance(train, dict):
        raise ConfigError(f"{source}: section 'train' must be a mapping")
    train = spelled_as_installed(train, source)
    check_training_arguments(train, source)
    check_settings(model, data, train, source)
    return SFTConfig(
        stage=stage,
        model=model,
        data=data,
        train=dict(train),
        lora=_section(LoraSettings, tree.get("lora"), "lora", source),
        resume_from_checkpoint=tree.get("resume_from_checkpoint", "auto"),
        source=source,
    )


def load_config(path: str | Path, overrides: list[str] = ()) -> SFTConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such recipe") from None
    tree, written = _yaml(text, str(path))
    if isinstance(tree, dict):
        settle_tree(tree, written, str(path))
    for override in overrides:
        apply_override(tree, override, str(path))
    return parse_config(tree, str(path))
