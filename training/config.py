"""SFT recipes: a YAML file plus `section.key=value` overrides, parsed once and checked.

    stage: full | lora
    model:  name_or_path, torch_dtype, attn_implementation, trust_remote_code, chat_template
    data:   files, eval_files, cutoff_len, skip_malformed, max_samples
    lora:   r, alpha, dropout, target_modules          (stage: lora)
    train:  transformers.TrainingArguments keyword arguments, passed through
    resume_from_checkpoint: auto | <path> | null

Unknown keys are errors that name the file and the key (a typo must not silently fall
back to a default), and so are TrainingArguments keywords this transformers lacks.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

STAGES = ("full", "lora")
REMOVED_TRAINING_ARGUMENTS = {
    "warmup_ratio": "transformers 5 removed it: write `warmup_steps: 0.1` (a float < 1 is a ratio)",
    "overwrite_output_dir": "transformers 5 removed it",
    "logging_dir": "transformers 5 removed it",
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
    skip_malformed: bool = False
    max_samples: int | None = None


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
    resume_from_checkpoint: str | None = "auto"
    source: str = "<config>"

    @property
    def output_dir(self) -> Path:
        return Path(self.train["output_dir"])


def apply_override(tree: dict, override: str, source: str) -> None:
    """Set `section.key=value` in the raw config tree (the value parsed as YAML)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected section.key=value")
    dotted, raw = override.split("=", 1)
    keys = dotted.strip().split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {key!r} in {source} is not a section")
    node[keys[-1]] = yaml.safe_load(raw)


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


def check_training_arguments(train: dict, source: str) -> None:
    from transformers import TrainingArguments

    accepted = set(inspect.signature(TrainingArguments.__init__).parameters) - {"self"}
    for key in train:
        if key in REMOVED_TRAINING_ARGUMENTS and key not in accepted:
            raise ConfigError(f"{source}: train.{key}: {REMOVED_TRAINING_ARGUMENTS[key]}")
        if key not in accepted:
            raise ConfigError(f"{source}: train.{key} is not a TrainingArguments keyword")
    if "output_dir" not in train:
        raise ConfigError(f"{source}: train.output_dir is required")


def parse_config(tree: dict, source: str = "<config>") -> SFTConfig:
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: a recipe is a YAML mapping")
    known = {"stage", "model", "data", "lora", "train", "resume_from_checkpoint"}
    unknown = sorted(set(tree) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
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
    check_training_arguments(train, source)
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
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such recipe") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: invalid YAML: {error}") from None
    for override in overrides:
        apply_override(tree, override, str(path))
    return parse_config(tree, str(path))
