"""Which checkpoint a training run resumes from, and whether it may.

- `resume_from_checkpoint: auto` takes the newest complete `checkpoint-N` of
  `train.output_dir` (one whose trainer state parses: the Trainer writes it last).
- Every run records what decides the weights its steps compute (`recipe.json` in
  `output_dir`: stage, model, LoRA, data files by content, the training settings less
  those that only change how it is logged, saved, evaluated or how long it goes on; the
  length is recorded beside them, and a resume may change it only where the learning-rate
  schedule does not follow it: `check_schedule_length`). An
  `auto` resume from checkpoints of another recipe is refused naming what differs
  (before: a smoke test's checkpoints were resumed by the full run in the same folder),
  and so is a run that does not resume into a folder holding checkpoints (a later `auto`
  would take them for its own). A checkpoint named by its path is compared with the
  recipe beside it the same way (before: taken, its restored schedule overriding a new
  `learning_rate`, which `recipe.json` then recorded).
- A run resumed at its last step (`max_steps` reached) is finished: transformers would
  train one step more at every rerun. Its model is the checkpoint's: `model/` is kept when
  it was written at that step, else copied from the checkpoint (a kill between the last
  checkpoint and the model), or from the best one with `load_best_model_at_end`. A run
  sized in epochs is known finished once resumed (it trains no step): the same then.
- A checkpoint whose trainer state does not parse (a run killed while writing it) is never
  resumed from, and does not stop a fresh run (the Trainer writes it again).
- A checkpoint without optimizer and scheduler state (`train.save_only_model`) is not
  resumed unless it ended the run: transformers would restart the learning-rate schedule
  and the optimizer silently, its weights then unlike an uninterrupted run's.
- Recipes are compared by their effective values: a key left out is its default (the
  dataclasses of training/config.py, TrainingArguments'), so writing a default out is none.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from east_agent.common.atomic import atomic_path, temporary_beside, write_atomically
from east_agent.common.fingerprint import path_setting, same_setting, shown_setting
from east_agent.common.records import read_json_object
from east_agent.lm.checkpoint import (
    ADAPTER_WEIGHTS,
    MODEL_WEIGHTS,
    TRAINING_RECORD,
    check_weights_readable,
)
from training.config import SECTIONS, SFTConfig
from training.model_folder import DIVERGED_HINT, diverged_steps, is_finite

if TYPE_CHECKING:
    from transformers import TrainingArguments

logger = logging.getLogger("training.resume")

RECIPE_RECORD = TRAINING_RECORD  # the agents and merge_lora read it beside an adapter
SUMMARY = "train_summary.json"
FINAL_MODEL_DIR = "model"
# Training settings a resume may change: how the run is logged, saved and evaluated, where
# it runs (activations kept or recomputed), how long it goes on (where the schedule allows:
# `check_schedule_length`); never what one step computes.
RESUMABLE_TRAIN_KEYS = {
    "gradient_checkpointing", "gradient_checkpointing_kwargs", "activation_checkpointing",
    "activation_checkpointing_kwargs",
    "output_dir", "max_steps", "num_train_epochs", "logging_steps", "logging_strategy",
    "logging_first_step", "save_steps", "save_strategy", "save_total_limit", "eval_steps",
    "eval_strategy", "eval_on_start", "per_device_eval_batch_size", "load_best_model_at_end",
    "metric_for_best_model", "greater_is_better", "report_to", "run_name", "disable_tqdm",
    "dataloader_num_workers", "use_cpu",
}  # fmt: skip
LENGTH_KEYS = ("max_steps", "num_train_epochs")  # how long: the summary's `length`
LENGTH_RECORD = "length"  # the recipe record's: the length its schedule was laid out over
# What a checkpoint holds besides the model `save_model` writes (the Trainer's own state).
TRAINER_STATE_FILES = {
    "optimizer.pt", "scheduler.pt", "trainer_state.json", "latest", "zero_to_fp32.py",
}  # fmt: skip


def is_complete_checkpoint(folder: Path) -> bool:
    """Whether `folder` holds a whole trainer state: the Trainer writes it in place, so a
    run killed while writing it leaves a file that does not parse."""
    try:
        read_json_object(folder / "trainer_state.json")
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest `checkpoint-N` whose trainer state was written (the Trainer writes it last)."""
    complete = [path for path in checkpoints_in(output_dir) if is_complete_checkpoint(path)]
    return max(complete, key=_step_of_name, default=None)


def checkpoints_in(output_dir: Path) -> list[Path]:
    return sorted(
        (path for path in output_dir.glob("checkpoint-*") if path.name.split("-")[-1].isdigit()),
        key=_step_of_name,
    )


def _step_of_name(path: Path) -> int:
    return int(path.name.split("-")[-1])


def resolve_resume(config: SFTConfig) -> str | None:
    setting = config.resume_from_checkpoint
    if setting in (None, False, "none", "no"):
        return None
    if setting in (True, "auto"):
        checkpoint = last_complete_checkpoint(config.output_dir)
        return str(checkpoint) if checkpoint else None
    assert isinstance(setting, str)  # None and both bools are handled above
    if not is_complete_checkpoint(Path(setting)):
        raise ValueError(f"resume_from_checkpoint: {setting} is not a complete checkpoint")
    return str(setting)


def holds_optimizer_state(checkpoint: Path) -> bool:
    """Whether the Trainer saved its optimizer and scheduler state in `checkpoint` (not
    with `save_only_model`): DeepSpeed keeps both in a `global_step*` folder; else an
    `optimizer.pt` (`.bin`, an FSDP `optimizer_0` folder, a rank's `rankN-of-M-optimizer.pt`)
    beside `scheduler.pt`."""
    if any(path.is_dir() for path in checkpoint.glob("global_step*")):
        return True
    optimizer = any(
        path.name.startswith("optimizer") or path.name.endswith("-optimizer.pt")
        for path in checkpoint.iterdir()
    )
    return optimizer and (checkpoint / "scheduler.pt").is_file()


def check_resumable(
    config: SFTConfig, resume: str | None, training_args: TrainingArguments
) -> None:
    """Refuse to go on from a checkpoint without optimizer state (before anything loads); a
    run that ended at it (`finished_step`, `ended_by_epochs`) trains no step from it."""
    if resume is None or holds_optimizer_state(Path(resume)):
        return
    epochs = training_args.num_train_epochs
    if training_args.max_steps > 0 or not ended_by_epochs(resume, epochs):
        raise ValueError(
            f"{resume} cannot be resumed exactly: it holds no optimizer and scheduler state "
            "(train.save_only_model keeps the weights only), so the learning-rate schedule "
            f"and the optimizer would restart; delete {config.output_dir} to train afresh, "
            "or set resume_from_checkpoint: null and train into another train.output_dir"
        )


def ended_by_epochs(checkpoint: str, epochs: float) -> bool:
    """Whether `checkpoint` is the last step of a run of `epochs` epochs (its trainer
    state's `max_steps`, for the same epochs: the recipe check says the data are the same)."""
    state = read_json_object(Path(checkpoint) / "trainer_state.json")
    at_end = state.get("global_step") == state.get("max_steps")
    return at_end and state.get("num_train_epochs") == math.ceil(epochs)


def trained_recipe(config: SFTConfig) -> dict:
    """What decides the weights the run's steps compute, files known by their content."""
    model = {**vars(config.model)}
    model["name_or_path"] = path_setting(Path(config.model.name_or_path), model_folder=True)
    data = {**vars(config.data)}
    data["files"] = [path_setting(Path(name), model_folder=False) for name in config.data.files]
    for not_trained_on in ("eval_files", "cache_dir"):
        data.pop(not_trained_on)
    train = {key: value for key, value in config.train.items() if key not in RESUMABLE_TRAIN_KEYS}
    recipe = {"stage": config.stage, "model": model, "data": data, "train": train}
    if config.stage == "lora":
        recipe["lora"] = {**vars(config.lora)}
    return json.loads(json.dumps(recipe, default=str))


def check_checkpoints(config: SFTConfig, recipe: dict, resume: str | None) -> None:
    """Refuse checkpoints of another recipe, and a run that would mix its checkpoints with
    an earlier run's; before anything loads."""
    if resume is None:
        found = checkpoints_in(config.output_dir)
        earlier = [path.name for path in found if is_complete_checkpoint(path)]
        for path in found:
            if not is_complete_checkpoint(path):  # `auto` never takes it: no run's to keep
                logger.warning("%s is incomplete (a run killed while writing it)", path)
        if earlier:
            raise ValueError(
                f"{config.output_dir} holds checkpoints of an earlier run "
                f"({', '.join(earlier)}) and this one does not resume: a later "
                "`resume_from_checkpoint: auto` would take them for its own; resume (auto), "
                "choose another train.output_dir, or remove them"
            )
        check_finished_model(config, recipe)
        return
    record = Path(resume).parent / RECIPE_RECORD
    if not record.exists():
        logger.info("%s has no %s (an earlier version's): resumed unchecked", resume, record.name)
        return
    written, length = read_recipe_record(record)
    differ = _differences(written, recipe)
    named = config.resume_from_checkpoint not in (True, "auto")
    if differ:  # a checkpoint named by its path too: its optimizer and schedule win
        raise ValueError(
            f"{resume} was trained by another recipe ({'; '.join(differ)}): resume with the "
            "recipe that wrote it, or train into another train.output_dir"
            + (start_from_hint(str(written.get("stage", config.stage))) if named else "")
        )
    if length is not None:
        check_schedule_length(config, resume, length, named)


def check_schedule_length(config: SFTConfig, resume: str, length: dict, named: bool) -> None:
    """Refuse to resume a run for another length (`max_steps`, or `num_train_epochs` for a
    run sized in epochs) where the learning-rate schedule is laid out over the length: the
    restored scheduler would jump to the new schedule midway (before: a cosine decayed over
    10 steps went back up to near its peak for steps 11 to 20, a model neither length
    trains); `named`: a checkpoint named by its path, rather than `auto`."""
    then, now = effective_length(length), effective_length(run_length(config))
    if now == then or not schedule_follows_length(config.train):
        return
    then_said = ", ".join(f"train.{name} {value}" for name, value in then.items())
    now_said = ", ".join(f"train.{name} {value}" for name, value in now.items())
    elsewhere = (
        start_from_hint(config.stage)
        if named
        else ", or train the new length into another train.output_dir (training.demo: "
        "another --workdir)"
    )
    raise ValueError(
        f"{resume} was trained with {then_said}, over which train.lr_scheduler_type "
        f"{config.train.get('lr_scheduler_type', 'linear')} lays out the learning rate; "
        f"resumed with {now_said}, the schedule would jump midway: resume with {then_said}"
        f"{elsewhere} (a constant schedule, its warm-up in whole steps, resumes for any "
        "length)"
    )


def effective_length(length: dict) -> dict:
    """What of a run's length (`run_length`) the Trainer reads: `max_steps` when above 0
    (the epochs are then not read), else the epochs."""
    steps = length.get("max_steps", -1)
    if isinstance(steps, int) and steps > 0:
        return {"max_steps": steps}
    return {"num_train_epochs": length.get("num_train_epochs")}


# no decay over the steps: greedy lowers the rate when the evaluation loss stops falling
LENGTH_FREE_SCHEDULES = {"constant", "reduce_lr_on_plateau", "greedy"}
WARMUP_ONLY_SCHEDULES = {"constant_with_warmup", "inverse_sqrt"}  # warm-up, then no length


def schedule_follows_length(train: dict) -> bool:
    """Whether a recipe's learning rate at a step depends on how long the run is: its decay
    does, and so does a warm-up given as a ratio of the steps (`warmup_steps` below 1)."""
    scheduler = str(train.get("lr_scheduler_type", "linear"))
    if scheduler in LENGTH_FREE_SCHEDULES:
        return False
    warmup = train.get("warmup_steps", 0) or 0
    return scheduler not in WARMUP_ONLY_SCHEDULES or 0 < warmup < 1


def start_from_hint(stage: str) -> str:
    """How to train from the weights of a checkpoint of a `stage` run ("full", "lora": the
    one that wrote it, not the recipe now) rather than go on with its run."""
    if stage == "lora":  # an adapter: model.name_or_path takes no adapter
        return (
            " (to start from its weights: merge it into its base with training.merge_lora, "
            "and train from the merged model into another train.output_dir)"
        )
    return (
        " (to start from its weights: set model.name_or_path to it, resume_from_checkpoint: "
        "null, and another train.output_dir)"
    )


def check_finished_model(config: SFTConfig, recipe: dict) -> None:
    """A final model that another recipe trained without checkpoints (`save_strategy: no`),
    or a folder of that name no run wrote (no recipe record beside it: a user's, a model
    copied there), is not replaced by this run's (before: silently)."""
    final, record = config.output_dir / FINAL_MODEL_DIR, config.output_dir / RECIPE_RECORD
    if not final.is_dir():
        return
    if not record.is_file():
        raise ValueError(
            f"{final} was not written by a training run of this version (no {record.name} "
            "beside it: a user's folder, or an older version's run), and this run would "
            "replace it: train into another train.output_dir, or remove it"
        )
    written, _ = read_recipe_record(record)  # a longer run trains afresh (`finished_model`)
    differ = _differences(written, recipe)
    if differ:
        raise ValueError(
            f"{final} was trained by another recipe ({'; '.join(differ)}): train into "
            "another train.output_dir, or remove it"
        )


def read_recipe_record(record: Path) -> tuple[dict, dict | None]:
    """A `recipe.json`: the recipe it compares, and the length its run's schedule was laid
    out over (None in an earlier version's record)."""
    written = read_json_object(record)
    return written, written.pop(LENGTH_RECORD, None)


def _differences(
    written: dict, now: dict, prefix: str = "", defaults: dict | None = None
) -> list[str]:
    """What differs between two recipes, by effective value: a key one of them leaves out
    is its section's default (`section_defaults`), shown as such."""
    defaults, shown = defaults or {}, []
    for key in sorted(set(written) | set(now)):
        one, other = written.get(key, defaults.get(key)), now.get(key, defaults.get(key))
        name = f"{prefix}{key}"
        if isinstance(one, dict) and isinstance(other, dict) and not _is_file(one):
            inner = None if prefix else section_defaults(key)
            shown += _differences(one, other, f"{name}.", inner)
        elif not _same(one, other):
            then, at_present = _shown_in(written, key, defaults), _shown_in(now, key, defaults)
            shown.append(f"{name}: {then} then, {at_present} now")
    return shown


@functools.cache
def section_defaults(section: str) -> dict:
    """The value a recipe section's key takes when left out, as `trained_recipe` records
    values (JSON); none for a key without a default."""
    from transformers import TrainingArguments

    settings = TrainingArguments if section == "train" else SECTIONS.get(section)
    defaults = {}
    fields = dataclasses.fields(settings) if settings is not None else ()
    for field in fields:
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return json.loads(json.dumps(defaults, default=str))


def _is_file(value) -> bool:
    return isinstance(value, dict) and "sha256" in value


def _same(one, other) -> bool:
    if isinstance(one, list) and isinstance(other, list):
        return len(one) == len(other) and all(map(same_setting, one, other))
    return same_setting(one, other)


def _shown_in(recipe: dict, key: str, defaults: dict) -> str:
    """`recipe`'s value of `key`, or the default it takes, said to be one."""
    if key in recipe or key not in defaults:
        return _shown(recipe.get(key))
    return f"{_shown(defaults[key])} (default)"


def _shown(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(shown_setting, value)) + "]"
    return "null" if value is None else shown_setting(value)  # as a recipe spells it


def record_recipe(config: SFTConfig, recipe: dict) -> None:
    """`recipe.json`: what decides the weights, and the length the run's learning-rate
    schedule is laid out over (`LENGTH_RECORD`, compared on resume alone)."""
    config.output_dir.mkdir(parents=True, exist_ok=True)
    record = {**recipe, LENGTH_RECORD: run_length(config)}
    write_atomically(config.output_dir / RECIPE_RECORD, json.dumps(record, indent=2) + "\n")


def finished_step(resume: str | None, max_steps: int) -> int | None:
    """The step at which the resumed checkpoint ended a `max_steps` run; None when the
    run goes on (or is sized in epochs, which transformers resumes without a step more)."""
    if resume is None or max_steps <= 0:
        return None
    step = step_of(resume)
    if step > max_steps:
        raise ValueError(
            f"{resume} is at step {step}, past train.max_steps {max_steps}: its model was "
            "trained longer than asked; train into another train.output_dir"
        )
    return step if step == max_steps else None


def run_length(config: SFTConfig) -> dict:
    """How long the recipe trains (`max_steps`, `num_train_epochs`, defaults filled in):
    the summary records it, and the recipe record beside what it compares (a resume may
    change it where the schedule allows: `check_schedule_length`)."""
    from transformers import TrainingArguments

    defaults = {field.name: field.default for field in dataclasses.fields(TrainingArguments)}
    return {name: config.train.get(name, defaults[name]) for name in LENGTH_KEYS}


def finished_model(config: SFTConfig) -> Path | None:
    """The `model/` of a finished run of this recipe (`check_finished_model` compared it)
    and length (its summary's, written after it) when no checkpoint is left to resume
    (removed to save disk, or `save_strategy: no`); None when the run is to train (before:
    every step trained again, without a word). A summary of an earlier version, which
    records no length, counts for a run sized in steps that ended at its `max_steps`."""
    if config.resume_from_checkpoint not in (True, "auto") or resolve_resume(config):
        return None
    final, summary = config.output_dir / FINAL_MODEL_DIR, config.output_dir / SUMMARY
    if not (final.is_dir() and summary.is_file() and (config.output_dir / RECIPE_RECORD).is_file()):
        return None
    written, length = read_json_object(summary), run_length(config)
    step = written.get("global_step")
    if isinstance(written.get("length"), dict):  # epochs are not read in a run of steps
        finished = effective_length(written["length"]) == effective_length(length)
    else:  # an earlier version's summary: a run sized in steps, ended at them
        finished = length["max_steps"] > 0 and step == length["max_steps"]
    if not isinstance(step, int) or not finished:
        return None
    logger.info("finished at step %d already (%s): nothing to train", step, final)
    return final


def check_not_diverged(checkpoint: Path, files: list[Path]) -> None:
    """The checkpoint a run ended at is no diverged run's (its logged gradients, then its
    safetensors weights read tensor by tensor), or it is refused: before, the rerun of a
    run refused for NaN weights copied that checkpoint's as its model, exit 0."""
    from safetensors import safe_open

    state = read_json_object(checkpoint / "trainer_state.json")
    diverged = diverged_steps(state.get("log_history") or [])
    if diverged:
        raise ValueError(f"{checkpoint} ended the run, but {diverged}: {DIVERGED_HINT}")
    for path in files:
        if path.suffix != ".safetensors":
            continue
        with safe_open(str(path), framework="pt") as weights:
            for name in weights.keys():
                if not is_finite(weights.get_tensor(name)):
                    raise ValueError(
                        f"{checkpoint} ended the run, but its tensor {name} ({path.name}) "
                        f"holds NaN or inf: the loss diverged; no model written: "
                        f"{DIVERGED_HINT}"
                    )


def step_of(checkpoint: str | Path) -> int:
    """The step a complete checkpoint was written at."""
    return read_json_object(Path(checkpoint) / "trainer_state.json").get("global_step", 0)


def model_checkpoint(config: SFTConfig, checkpoint: Path) -> Path:
    """The checkpoint whose weights are the run's model: with `load_best_model_at_end`, the
    best one the trainer state names (the Trainer loads it at the end), else `checkpoint`."""
    if not config.train.get("load_best_model_at_end"):
        return checkpoint
    best = read_json_object(checkpoint / "trainer_state.json").get("best_model_checkpoint")
    if not best:
        return checkpoint
    # the state names it as the run's output_dir was spelled then (relative to its cwd)
    found = config.output_dir / Path(best).name
    if not found.is_dir():
        raise ValueError(
            f"{checkpoint}: its best checkpoint {best} (load_best_model_at_end) is gone"
        )
    return found


def finish_from_checkpoint(config: SFTConfig, checkpoint: Path, step: int, writer: bool) -> Path:
    """The model of a run that ended at `checkpoint` (step `step`), without training: the
    `model/` written then, or the model's checkpoint (`model_checkpoint`) copied there
    (`writer`: the process that writes)."""
    final = config.output_dir / FINAL_MODEL_DIR
    summary_path = config.output_dir / SUMMARY
    summary = read_json_object(summary_path) if summary_path.exists() else {}
    if final.is_dir() and summary.get("global_step") == step:
        logger.info("finished at step %d already (%s): nothing to train", step, final)
        return final
    if not writer:
        return final
    checkpoint = model_checkpoint(config, checkpoint)
    files = [
        path
        for path in sorted(checkpoint.iterdir())
        if path.is_file()
        and path.name not in TRAINER_STATE_FILES
        and not path.name.startswith("rng_state")
    ]
    # every Trainer checkpoint holds training_args.bin: weights are known by their names
    weights = ADAPTER_WEIGHTS if config.stage == "lora" else MODEL_WEIGHTS
    if not any(path.name in weights for path in files):
        raise ValueError(
            f"{checkpoint} ended the run (step {step}) but holds no model weights (a ZeRO-3 "
            "checkpoint without stage3_gather_16bit_weights_on_model_save?): convert it with "
            "its zero_to_fp32.py"
        )
    # weights damaged since the Trainer wrote them (trainer_state.json comes last): refused
    # naming the file (before: a 1,000-byte model.safetensors copied, exit 0)
    check_weights_readable(checkpoint, "the run's last checkpoint", weights)  # then its path
    check_not_diverged(checkpoint, files)
    temporary_beside(final, private=False)  # a save cut by the kill leaves its ranks' copy
    with atomic_path(final) as temporary:
        temporary.mkdir()
        for path in files:
            shutil.copy2(path, temporary / path.name)
    logger.info("finished at step %d: %s copied from %s", step, final, checkpoint)
    summary = {
        "recipe": config.source,
        "stage": config.stage,
        "global_step": step,
        "length": run_length(config),
        "train_metrics": {},
        "written_from": str(checkpoint),
        "final_model": str(final),
    }
    write_atomically(summary_path, json.dumps(summary, indent=2, default=str))
    return final
