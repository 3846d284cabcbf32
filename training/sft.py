"""The EAST two-stage SFT entry point (transformers Trainer; DeepSpeed and peft where asked).

    python -m training.sft --config training/configs/stage1_full.yaml [section.key=value ...]

Stage I (`stage: full`) fine-tunes every weight of a chat LLM on SiMT data, after adding
`<|end-of-read|>` / `<|end-of-write|>` to its tokenizer and embeddings (new rows start at
the mean of the existing ones). Stage II (`stage: lora`) trains a LoRA adapter on the
Stage I model over multilingual SiMT and offline MT data; `python -m training.merge_lora`
folds it back in. The final model lands in `<output_dir>/model` (written to a temporary
folder first, then renamed), loadable unchanged by `east_agent`. The tokenized samples are
cached (`data.cache_dir`, see training/config.py): the first process of each node
tokenizes, the other ranks and later runs on the same data load them. Errors in the
recipe or the data end the command with one line on stderr and exit status 2; every data
record is read and checked before the tokenizer and the model load.

Multi-GPU and multi-node runs go through the standard launchers, unchanged:
    torchrun --nproc_per_node 8 -m training.sft --config ...
    deepspeed --num_gpus 8 --module training.sft --config ...
    accelerate launch --num_processes 8 -m training.sft --config ...
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from east_agent.common.arguments import parse_once_each
from east_agent.common.atomic import (
    check_folder_path,
    install,
    temporary_beside,
    write_atomically,
)
from east_agent.common.entry import command_line, raise_if_signalled
from east_agent.common.run_lock import hold_run_lock
from east_agent.decoding.prompt import END_OF_READ, END_OF_WRITE
from east_agent.lm.checkpoint import (
    CheckpointError,
    check_hub_model,
    check_model_path,
    check_weights,
    east_token_ids,
    is_hub_id,
)
from training.config import LoraSettings, SFTConfig, evaluates, load_config
from training.data import (
    IGNORE_INDEX,
    ChatTokenizer,
    Conversation,
    DataReport,
    check_control_tokens,
    check_system_prompt,
    read_records,
    tokenize_records,
)
from training.model_folder import DIVERGED_HINT, diverged_steps, is_finite, load_pretrained
from training.resume import (
    FINAL_MODEL_DIR,
    SUMMARY,
    check_checkpoints,
    check_resumable,
    finish_from_checkpoint,
    finished_model,
    finished_step,
    record_recipe,
    resolve_resume,
    run_length,
    step_of,
    trained_recipe,
)

COMMAND = "python -m training.sft"
TRAIN_LOCK = "train.lock"  # in train.output_dir, held by the run's first process

if TYPE_CHECKING:
    from datasets import Dataset
    from peft import PeftModel
    from transformers import (
        PreTrainedModel,
        PreTrainedTokenizerBase,
        Trainer,
        TrainingArguments,
    )

logger = logging.getLogger("training.sft")


def attention_implementation(setting: str) -> str:
    if setting != "auto":
        return setting
    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def torch_dtype(name: str) -> str | torch.dtype:
    return "auto" if name == "auto" else getattr(torch, name)


def load_tokenizer(config: SFTConfig) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(
        AutoTokenizer,
        config.model.name_or_path,
        "model.name_or_path",
        trust_remote_code=config.model.trust_remote_code,
    )
    if config.model.chat_template:
        tokenizer.chat_template = Path(config.model.chat_template).read_text(encoding="utf-8")
        check_template_renders(tokenizer, config)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"{config.model.name_or_path} has no chat template: set model.chat_template "
            "to a .jinja file"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding only: masked out of attention and loss
    return tokenizer


def add_east_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add the two EAST tokens as special tokens; return how many were new."""
    present = set(tokenizer.get_vocab())
    missing = [token for token in (END_OF_READ, END_OF_WRITE) if token not in present]
    if not missing:
        return 0
    return tokenizer.add_special_tokens({"additional_special_tokens": missing})


def _gathered(parameters):
    """All of `parameters`, gathered for modification under DeepSpeed ZeRO-3."""
    from contextlib import nullcontext

    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(parameters, modifier_rank=0)


def resize_embeddings_with_mean(
    model: PreTrainedModel, vocab_size: int, new_tokens: int | None = None
) -> int:
    """Give the last `new_tokens` ids below `vocab_size` (at least the rows the embeddings
    lack) rows set to the mean of the rows before them, growing the embeddings to
    `vocab_size` rows where they have fewer; return how many rows were set. A model with
    spare rows (a vocabulary padded to a multiple of 64, say) gets the new ids' rows set
    there too: untrained rows were left to them."""
    old_size = embedding_rows(model)
    new_tokens = max(new_tokens or 0, vocab_size - old_size)
    if new_tokens == 0:
        return 0
    if vocab_size > old_size:
        model.resize_token_embeddings(vocab_size, mean_resizing=False)
    first = vocab_size - new_tokens
    embeddings = (model.get_input_embeddings(), model.get_output_embeddings())
    # nn.Module types an attribute as a tensor or a module: an embedding's weight is a tensor
    weights = [cast(torch.Tensor, m.weight) for m in embeddings if m is not None]
    matrices = {id(weight): weight for weight in weights}  # tied: once
    with _gathered(list(matrices.values())), torch.no_grad():
        for weight in matrices.values():
            weight[first:vocab_size] = weight[:first].mean(dim=0, keepdim=True)
    return new_tokens


def embedding_rows(model: PreTrainedModel) -> int:
    """The rows of the input embeddings, whole: under DeepSpeed ZeRO-3 a weight's own
    shape is its empty shard's (`ds_shape` is the whole one; before, Stage I read 0 rows,
    set every row to the mean of none, and trained from NaN embeddings)."""
    weight = cast(torch.Tensor, model.get_input_embeddings().weight)  # typed loosely by nn.Module
    return int(getattr(weight, "ds_shape", weight.shape)[0])


def check_template_renders(tokenizer: PreTrainedTokenizerBase, config: SFTConfig) -> None:
    """`model.chat_template` renders a chat (with the system turn `data.system_prompt`
    adds), with the tokenizer's own tokens: before the weights load (before: a jinja
    traceback after)."""
    chat = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    if config.data.system_prompt is not None:
        chat.insert(0, {"role": "system", "content": config.data.system_prompt})
    try:
        tokenizer.apply_chat_template(chat, tokenize=False)
    except Exception as error:  # jinja's own, or what the template raises itself
        raise ValueError(
            f"model.chat_template {config.model.chat_template}: does not render a chat "
            f"({type(error).__name__}: {error})"
        ) from None


def load_model(
    config: SFTConfig, tokenizer: PreTrainedTokenizerBase, new_tokens: int | None = None
) -> PreTrainedModel | PeftModel:
    """The model to train; Stage I sets the rows of the `new_tokens` ids the tokenizer
    just got (default: those the embeddings lack) to the mean of the others."""
    from transformers import AutoModelForCausalLM, set_seed

    if config.stage == "lora":  # Stage II starts from an EAST (Stage I) checkpoint
        check_east_tokenizer(config, tokenizer)
    # train.seed decides the weights the run starts from (LoRA's A, rows the checkpoint
    # lacks), not only the steps: the Trainer seeds itself after the model is built
    set_seed(config.seed)
    model = load_pretrained(
        AutoModelForCausalLM,
        config.model.name_or_path,
        "model.name_or_path",
        dtype=torch_dtype(config.model.torch_dtype),
        attn_implementation=attention_implementation(config.model.attn_implementation),
        trust_remote_code=config.model.trust_remote_code,
    )
    if config.stage == "full":
        added = resize_embeddings_with_mean(model, len(tokenizer), new_tokens)
        logger.info("embeddings: %d new rows (mean-initialised)", added)
        east_token_ids(tokenizer)
        return model
    if embedding_rows(model) < len(tokenizer):
        raise ValueError(
            f"{config.model.name_or_path}: the tokenizer has {len(tokenizer)} ids but the "
            "model's embeddings fewer; Stage II needs the Stage I checkpoint"
        )
    return wrap_with_lora(model, config)


def check_east_tokenizer(config: SFTConfig, tokenizer: PreTrainedTokenizerBase) -> None:
    """Stage II's model must have the EAST tokens: refused before its weights load."""
    try:
        east_token_ids(tokenizer)
    except CheckpointError as error:  # before: it did not say which stage adds them
        raise ValueError(
            f"model.name_or_path {config.model.name_or_path}: {error}; stage lora (Stage II) "
            "starts from a Stage I model: train one with stage full first"
        ) from None


def wrap_with_lora(model: PreTrainedModel, config: SFTConfig) -> PeftModel:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules,
        task_type="CAUSAL_LM",
    )
    check_target_modules(model, config)
    try:
        lora_model = get_peft_model(model, lora)
    except ValueError as error:  # modules the model lacks: known only now
        raise ValueError(f"{config.source}: lora.target_modules: {error}") from None
    if config.train.get("gradient_checkpointing") or config.train.get("activation_checkpointing"):
        lora_model.enable_input_require_grads()
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in lora_model.parameters()]
    trainable = sum(size for size, trained in sizes if trained)  # ZeRO-3: whole, not a shard
    total = sum(size for size, _ in sizes)
    logger.info(
        "LoRA: %d of %d parameters trainable (%.2f%%)", trainable, total, 100 * trainable / total
    )
    return lora_model


def check_target_modules(model: PreTrainedModel, config: SFTConfig) -> None:
    """Every module a `lora.target_modules` list names is one of the model's, matched as
    peft matches it (the name, or its end after a dot): before, a misspelt one among good
    ones was left out without a word (peft refuses only a list that matches nothing). A
    string (`all-linear`, a regular expression) is peft's to match."""
    targets = config.lora.target_modules
    if isinstance(targets, str):
        return
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        linear = sorted(
            {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear)}
        )  # fmt: skip
        raise ValueError(
            f"{config.place('lora', 'target_modules')}: lora.target_modules: "
            f"{', '.join(missing)}: no module of the model is named so (its linear layers: "
            f"{', '.join(linear)})"
        )


def save_final_model(
    trainer: Trainer, tokenizer: PreTrainedTokenizerBase, output_dir: Path
) -> Path:
    """Write the model to a temporary folder, then rename it into place."""
    final = output_dir / FINAL_MODEL_DIR
    # Every rank saves into one shared folder (ZeRO-3 gathers the weights): rank 0 names it
    # first, clearing a crashed run's leftover, and nobody writes until all have named it.
    with trainer.args.main_process_first(local=False, desc="naming the model folder"):
        temporary = temporary_beside(final, private=False)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(temporary))
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(temporary)
        install(temporary, final)
    return final


def build_trainer(
    config: SFTConfig,
    training_args: TrainingArguments,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    samples: Dataset,
    eval_samples: Dataset | None = None,
) -> Trainer:
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback

    class SignalCheck(TrainerCallback):
        """A Ctrl-C a library swallowed (as the run's modules imported) ends the run at
        the next step, not hours later at its end (`raise_if_signalled`)."""

        def on_step_end(self, args, state, control, **kwargs) -> None:
            raise_if_signalled()

    collator = DataCollatorForSeq2Seq(
        tokenizer,
        label_pad_token_id=IGNORE_INDEX,
        pad_to_multiple_of=8 if torch.cuda.is_available() else None,
    )
    return Trainer(
        model=model,
        args=training_args,
        train_dataset=samples,
        eval_dataset=eval_samples,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[SignalCheck()],
    )


def read_data(
    config: SFTConfig, training_args: TrainingArguments, evaluation: bool = False
) -> tuple[list[Conversation], DataReport]:
    """Every record of `data.files` (`data.eval_files` in `evaluation`) read and checked (a
    bad one raises naming file and line, or is skipped as the recipe says), shuffled and
    cut to `data.max_samples`. Needs neither tokenizer nor model: run it first, once
    `check_data_files_here` found the files."""
    files = config.data.eval_files if evaluation else config.data.files
    max_samples = None if evaluation else config.data.max_samples
    return read_records(files, config.data.skip_malformed, max_samples, training_args.seed)


def check_data_files_here(config: SFTConfig, key: str) -> None:
    """Each file of `data.<key>` is a file here (before the recipe is compared with a
    checkpoint's: a file not there was named a change of recipe), named where it was
    given: the recipe's line, or the override (before: the recipe file for both)."""
    for file in getattr(config.data, key):
        if (problem := not_a_file_here(file, "data file")) is not None:
            raise ValueError(f"{config.place('data', key)}: data.{key}: {file}: {problem}")


def names_a_file(deepspeed: str) -> bool:
    """Whether `train.deepspeed` names a file: not empty (no DeepSpeed), nor a JSON text
    or a base64-encoded one, which accelerate takes as the configuration itself."""
    text = deepspeed.strip()
    if not text or text.startswith("{"):
        return False
    try:
        json.loads(base64.b64decode(text, validate=True))
    except (ValueError, UnicodeDecodeError):  # binascii.Error and JSONDecodeError among them
        return True
    return False


def not_a_file_here(file: str, kind: str) -> str | None:
    """Why `file` is not a file here (a relative one named with the folder it was read
    from), or None."""
    if Path(file).is_file():
        return None
    problem = f"a folder, not a {kind}" if Path(file).is_dir() else "no such file"
    return problem + ("" if Path(file).is_absolute() else f", read from {Path.cwd()}")


def tokenize_data(
    config: SFTConfig,
    tokenizer: PreTrainedTokenizerBase,
    model: torch.nn.Module,
    conversations: Sequence[Conversation],
    report: DataReport,
    training_args: TrainingArguments,
    evaluation: bool = False,
) -> Dataset:
    """The tokenized samples of `conversations` (from `read_data`), as the recipe's data
    section says; counted in `report`, which is logged."""
    generation_config = getattr(model, "generation_config", None)
    encoder = ChatTokenizer(
        tokenizer,
        config.data.cutoff_len,
        config.data.system_prompt,
        getattr(generation_config, "eos_token_id", None),
    )
    progress = not evaluation and training_args.local_process_index == 0
    return tokenize_records(encoder, conversations, report, tokenized_cache_dir(config), progress)


def tokenized_cache_dir(config: SFTConfig) -> Path:
    if config.data.cache_dir is not None:
        return Path(config.data.cache_dir)
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE) / "east-sft"


def check_folders(config: SFTConfig) -> None:
    """Folders the run writes that are files (a bare errno later, or mid-run), and a model
    to train that the run's own model replaces."""
    check_folder_path(config.output_dir, "train.output_dir")
    deepspeed = config.train.get("deepspeed")
    if isinstance(deepspeed, str) and names_a_file(deepspeed):
        if (problem := not_a_file_here(deepspeed, "DeepSpeed config")) is not None:
            place = config.place("train", "deepspeed")  # before: transformers' words alone
            raise ValueError(f"{place}: train.deepspeed: {deepspeed}: {problem}")
    if config.data.cache_dir is not None:
        check_folder_path(Path(config.data.cache_dir), "data.cache_dir")
    written = config.output_dir / FINAL_MODEL_DIR
    if written.exists() and not written.is_dir():  # before: found after the whole training
        raise ValueError(
            f"train.output_dir {config.output_dir}: its {FINAL_MODEL_DIR} is a file, not the "
            "folder the run writes its final model into: another train.output_dir"
        )
    final = written.resolve()
    start = Path(config.model.name_or_path).resolve()
    if start == final or final in start.parents:
        raise ValueError(
            f"model.name_or_path {config.model.name_or_path} is this run's own final model "
            f"({config.output_dir / FINAL_MODEL_DIR}), which the run replaces: train into "
            "another train.output_dir"
        )


def check_model_folder(name_or_path: str) -> None:
    """A model that is not a hub id (`org/name`) must be a checkpoint folder here, with its
    weights, as for the agents (else transformers asks the hub for it, and fails with a
    traceback about repository ids: Stage II started before Stage I ended). A few stats:
    done before the data are read. A hub id is checked by `check_hub_model`."""
    try:
        check_model_path(name_or_path)
    except CheckpointError as error:
        raise ValueError(f"model.name_or_path: {error}") from None
    check_weights(name_or_path, "model.name_or_path")


def run(config: SFTConfig) -> Path:
    """Train one stage and return the folder of the final model."""
    from transformers import TrainingArguments

    started = time.time()
    check_folders(config)
    with launched_alone(config):
        # TrainingArguments first: with ZeRO-3 it makes from_pretrained shard the model.
        try:
            training_args = TrainingArguments(**config.train)
        except ValueError as error:  # before: transformers' words alone, the recipe unnamed
            raise ValueError(f"{training_arguments_fault(config, error)}: {error}") from None
        if training_args.process_index != 0:  # the ranks of one run share its folder
            return train(config, training_args, started)
        with holding_output_dir(config.output_dir):  # a second run into it is refused
            return train(config, training_args, started)


# what a launcher sets (torchrun, deepspeed, accelerate; mpirun's Open MPI, MPICH, PMIx)
LAUNCHED = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")


@contextmanager
def launched_alone(config: SFTConfig) -> Iterator[None]:
    """A DeepSpeed recipe run as one process with no launcher (`python -m training.sft`,
    the recipes' one-GPU command) and no mpi4py for DeepSpeed to ask: the environment a
    launcher gives one process (rank 0 of 1, a free local port) while the run lasts
    (before: DeepSpeed looked for MPI, and ended in a `ModuleNotFoundError: mpi4py`
    traceback once the data had been read). Under a launcher, or with mpi4py, as given."""
    launched = any(name in os.environ for name in LAUNCHED)
    if not config.train.get("deepspeed") or launched or importlib.util.find_spec("mpi4py"):
        yield
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    alone = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    alone["MASTER_PORT"] = str(port)
    before = {name: os.environ.get(name) for name in alone}
    os.environ.update(alone)
    logger.info("one process, no launcher: DeepSpeed runs as rank 0 of 1")
    try:
        yield
    finally:  # a later run in this process (training.demo's) is not launched by it
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def training_arguments_fault(config: SFTConfig, error: ValueError) -> str:
    """Where the `train` settings TrainingArguments refused were given, and what to change
    where it is bfloat16 on a machine without it (the Stage I and II recipes ask for it)."""
    # transformers' words for it ("Your setup doesn't support bf16/gpu"; not "At most one
    # of fp16 and bf16 can be True", another fault)
    if config.train.get("bf16") and "support bf16" in str(error):
        return (
            f"{config.place('train', 'bf16')}: train.bf16 true, and this machine has no "
            "bfloat16 device (train.bf16=false to try it here)"
        )
    said = str(error)
    named = [  # a value quoted as transformers quotes the one it refuses (an enum's, a file)
        key
        for key, value in config.train.items()
        if isinstance(value, str)
        and (said.startswith(f"{value} is not a valid ") or f"Received: {value}" in said)
    ]
    if len(named) == 1:
        return f"{config.place('train', named[0])}: TrainingArguments refused train.{named[0]}"
    return f"{config.place('train')}: TrainingArguments refused the train settings"


@contextmanager
def holding_output_dir(output_dir: Path) -> Iterator[None]:
    """`output_dir` locked for the run (`train.lock`); a folder this run made that holds
    only its lock when the run ends in an error (a refused recipe, data or model) is
    removed, and so are the folders above it it made, left empty (before: left behind,
    empty but for `train.lock`; then `outputs/` of `outputs/stage1`)."""
    made = not output_dir.exists()
    parents_made = [parent for parent in output_dir.parents if not parent.exists()]
    with hold_run_lock(output_dir, TRAIN_LOCK):
        try:
            yield
        except BaseException:
            if made and [path.name for path in output_dir.iterdir()] == [TRAIN_LOCK]:
                with suppress(OSError):  # another run's lock meanwhile: kept
                    (output_dir / TRAIN_LOCK).unlink()  # its handle, open, is let go after
                    output_dir.rmdir()
                    for parent in parents_made:  # innermost first; one in use stops it
                        parent.rmdir()
            raise


def train(config: SFTConfig, training_args: TrainingArguments, started: float) -> Path:
    """`run` once the folders are checked (and locked, by the first process)."""
    check_data_files_here(config, "files")
    if evaluates(config.train):
        check_data_files_here(config, "eval_files")
    resume, recipe = resolve_resume(config), trained_recipe(config)
    if resume is not None:  # said once (before: by every caller of resolve_resume)
        logger.info("resuming from %s", resume)
    check_checkpoints(config, recipe, resume)
    finished = None if resume else finished_model(config)
    if finished is not None:
        return finished
    finished_at = finished_step(resume, training_args.max_steps)
    if finished_at is not None:
        assert resume is not None  # finished_step is None without a checkpoint to resume
        writer = training_args.process_index == 0
        return finish_from_checkpoint(config, Path(resume), finished_at, writer)
    check_resumable(config, resume, training_args)
    warn_of_settings(config)
    if is_hub_id(config.model.name_or_path):  # one request, before reading every record
        check_hub_model(config.model.name_or_path, "model.name_or_path")
    else:
        check_model_folder(config.model.name_or_path)  # a few stats
    # Every record is read and checked before the model loads: bad data fails in seconds.
    conversations, report = read_data(config, training_args)
    if not conversations:
        raise ValueError("no training sample is left after reading the data")
    eval_records = None
    if config.data.eval_files and evaluates(config.train):
        eval_records = read_data(config, training_args, evaluation=True)
        if not eval_records[0]:
            raise ValueError(f"data.eval_files hold no record: {', '.join(config.data.eval_files)}")
    elif config.data.eval_files:
        logger.info("data.eval_files not read: train.eval_strategy is no")
    tokenizer = load_tokenizer(config)
    # the tokenizer's control tokens in a record's text: refused before the model loads
    conversations = check_control_tokens(tokenizer, conversations, report)
    check_system_prompt(tokenizer, config.data.system_prompt)
    if eval_records is not None:
        eval_records = (check_control_tokens(tokenizer, *eval_records), eval_records[1])
    added = add_east_tokens(tokenizer) if config.stage == "full" else 0
    logger.info("EAST tokens added to the tokenizer: %d", added)
    model = load_model(config, tokenizer, added)
    # The node's first process tokenizes and fills the cache; the other ranks then load it.
    with training_args.main_process_first(desc="tokenizing"):
        samples = tokenize_data(config, tokenizer, model, conversations, report, training_args)
        eval_samples = None
        if eval_records is not None:
            eval_samples = tokenize_data(
                config, tokenizer, model, *eval_records, training_args, evaluation=True
            )
    if len(samples) == 0:  # before: naming neither the files nor the cut-off
        raise ValueError(no_sample_left(config, report))
    if eval_samples is not None and len(eval_samples) == 0:
        raise ValueError(f"no eval sample is left within data.cutoff_len {config.data.cutoff_len}")
    trainer = build_trainer(config, training_args, model, tokenizer, samples, eval_samples)
    if len(trainer.get_train_dataloader()) == 0:
        # not one batch, before training (before: sized in epochs, transformers' "args.
        # max_steps must be set to a positive value if dataloader does not have a length";
        # in steps, refused once trained: a recipe record left behind)
        raise ValueError(no_step_taken(trainer, len(samples)))
    if trainer.is_world_process_zero():
        record_recipe(config, recipe)
    # read before training: the checkpoint rotation (save_total_limit) may remove it
    resumed_at = None if resume is None else step_of(resume)
    result = trainer.train(resume_from_checkpoint=resume)
    # an epoch-sized run resumed at its end
    if resume is not None and resumed_at == trainer.state.global_step:
        return finish_from_checkpoint(
            config, Path(resume), resumed_at, trainer.is_world_process_zero()
        )
    check_trained(trainer, len(samples))
    final = save_final_model(trainer, tokenizer, config.output_dir)
    if trainer.is_world_process_zero():
        summary = {
            "recipe": config.source,
            "stage": config.stage,
            "model": asdict(config.model),
            "data": {**asdict(report), "lines": report.lines()},
            "train_metrics": result.metrics,  # of the steps after `resumed_at_step`
            "resumed_at_step": resumed_at or 0,
            "global_step": trainer.state.global_step,
            "length": run_length(config),  # another is no finished run of it
            "best_metric": trainer.state.best_metric,
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "wall_seconds": round(time.time() - started, 1),
            "final_model": str(final),
        }
        summary_text = json.dumps(summary, indent=2, default=str)
        write_atomically(config.output_dir / SUMMARY, summary_text)
    return final


def warn_of_settings(config: SFTConfig) -> None:
    """Settings a run can use that leave the user something to know, one line each."""
    if config.train.get("save_only_model"):
        logger.warning(
            "train.save_only_model: the checkpoints keep the weights only; a killed run "
            "cannot resume from them (its optimizer and learning-rate schedule would restart)"
        )
    if config.stage == "full" and config.lora != LoraSettings():  # lora settings set, unused
        logger.warning(
            "lora: its settings are not used: stage full trains every weight (stage: lora "
            "trains an adapter)"
        )
    if config.data.system_prompt is not None:
        logger.warning(
            "data.system_prompt: the samples get a system turn that east_agent's decoder "
            "does not render; the model is decoded without it"
        )


def check_trained(trainer: Trainer, samples: int) -> None:
    """A fresh run that took no optimizer step, or whose steps all had gradients of NaN or
    inf (skipped by a loss scaler, or diverged), or whose trained weights hold NaN or inf,
    has no model to write (before: the base model, or one of NaN weights, written as
    trained, exit 0; its checkpoints stay for a look)."""
    if trainer.state.global_step == 0:
        raise ValueError(no_step_taken(trainer, samples))
    diverged = diverged_steps(trainer.state.log_history)
    if diverged:
        raise ValueError(f"{diverged}; no model written: {DIVERGED_HINT}")
    assert trainer.model is not None  # the Trainer was built with the model
    broken = trainer.accelerator.reduce(  # every rank's count (a rank's shard under FSDP)
        torch.tensor(len(non_finite_weights(trainer.model)), device=trainer.accelerator.device),
        reduction="sum",
    )
    if int(broken):
        raise ValueError(
            f"the trained weights hold NaN or inf ({int(broken)} tensors): the loss "
            f"diverged; no model written: {DIVERGED_HINT}"
        )


def non_finite_weights(model: torch.nn.Module) -> list[str]:
    """The names of the trained (`requires_grad`) weights that hold NaN or inf, each
    gathered in turn under DeepSpeed ZeRO-3 (every rank takes part)."""
    from contextlib import nullcontext

    from transformers.integrations import is_deepspeed_zero3_enabled

    sharded = is_deepspeed_zero3_enabled()
    broken = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if sharded:
            import deepspeed

            whole = deepspeed.zero.GatheredParameters([parameter], modifier_rank=None)
        else:
            whole = nullcontext()
        with whole:
            if not is_finite(parameter):
                broken.append(name)
    return broken


def no_sample_left(config: SFTConfig, report: DataReport) -> str:
    """Why no training sample is left: the records read of data.files, and those dropped."""
    why = [f"{report.records} records read from data.files ({', '.join(config.data.files)})"]
    if report.beyond_max_samples:
        why.append(f"{report.beyond_max_samples} left out by data.max_samples")
    if report.dropped_prompt_too_long:
        why.append(
            f"{report.dropped_prompt_too_long} dropped: their prompt alone exceeds "
            f"data.cutoff_len {config.data.cutoff_len}"
        )
    skipped = report.malformed_skipped + report.unreadable_skipped
    if skipped:
        why.append(f"{skipped} skipped as malformed or unreadable")
    return f"no training sample is left after reading the data: {'; '.join(why)}"


def no_step_taken(trainer: Trainer, samples: int) -> str:
    return (
        f"the run took no optimizer step ({samples} samples, per-device batch "
        f"{trainer.args.per_device_train_batch_size}, train.dataloader_drop_last "
        f"{trainer.args.dataloader_drop_last}): no model written"
    )


@command_line(COMMAND)
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="EAST supervised fine-tuning (Stage I or II)"
    )
    parser.add_argument("--config", required=True, help="YAML recipe (training/configs/)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.max_steps=10")
    # The deepspeed launcher passes the local rank as a flag; the Trainer reads LOCAL_RANK.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    args = parse_once_each(parser, argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        stream=sys.stderr,
    )
    run(load_config(args.config, args.overrides))


if __name__ == "__main__":
    main()
