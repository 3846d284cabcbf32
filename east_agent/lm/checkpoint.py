"""Loading an EAST checkpoint: model, tokenizer, optional LoRA adapter, dtype, device."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from east_agent.common.arguments import TORCH_DTYPES, checked_device
from east_agent.common.atomic import not_a_folder
from east_agent.common.fingerprint import folder_fingerprint, is_content_setting, is_hub_id
from east_agent.common.records import RecordError, invalid_json, read_json_object
from east_agent.common.text_lines import read_text
from east_agent.decoding.prompt import END_OF_READ, END_OF_WRITE

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """The given path is not a usable EAST checkpoint."""


@dataclass(frozen=True)
class EastTokenIds:
    """Token ids the EAST decoding loop needs, read once from the tokenizer."""

    end_of_read: int
    end_of_write: int
    bos: int | None
    eos: tuple[int, ...]  # every id that ends a turn: tokenizer eos, <|eot_id|>, generation config

    @property
    def read_suppressed(self) -> tuple[int, ...]:
        """Ids that may not win a READ decision."""
        return tuple(dict.fromkeys((*self.eos, self.end_of_write, *self._bos)))

    @property
    def write_suppressed(self) -> tuple[int, ...]:
        """Ids that may not be generated inside a WRITE chunk."""
        return tuple(dict.fromkeys((self.end_of_read, *self._bos)))

    @property
    def write_stops(self) -> tuple[int, ...]:
        """Ids that end a WRITE chunk (end-of-turn tokens are treated as end-of-write)."""
        return tuple(dict.fromkeys((*self.eos, self.end_of_write)))

    @property
    def _bos(self) -> tuple[int, ...]:
        return () if self.bos is None else (self.bos,)


def single_token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int | None:
    """The id of `token` if the tokenizer encodes it as one added token, else None."""
    ids = tokenizer(token, add_special_tokens=False).input_ids
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        return None
    return ids[0]


def end_of_turn_ids(
    tokenizer: PreTrainedTokenizerBase, generation_eos: int | list[int] | None = None
) -> tuple[int, ...]:
    """Every id that ends a turn: tokenizer eos, `<|eot_id|>` if present, generation config."""
    eos: list[int] = []
    if tokenizer.eos_token_id is not None:
        eos.append(tokenizer.eos_token_id)
    eot = single_token_id(tokenizer, "<|eot_id|>")
    if eot is not None:
        eos.append(eot)
    if generation_eos is not None:
        eos.extend([generation_eos] if isinstance(generation_eos, int) else generation_eos)
    return tuple(dict.fromkeys(eos))


def east_token_ids(
    tokenizer: PreTrainedTokenizerBase, generation_eos: int | list[int] | None = None
) -> EastTokenIds:
    """Read the EAST special ids; a tokenizer without them is not an EAST checkpoint."""
    end_of_read = single_token_id(tokenizer, END_OF_READ)
    end_of_write = single_token_id(tokenizer, END_OF_WRITE)
    if end_of_read is None or end_of_write is None:
        missing = [
            name
            for name, token_id in ((END_OF_READ, end_of_read), (END_OF_WRITE, end_of_write))
            if token_id is None
        ]
        raise CheckpointError(
            f"the tokenizer has no {' / '.join(missing)} token, so this is not an EAST "
            "checkpoint (EAST-8B and EAST-Stage-1-8B add both as special tokens; "
            "training.sft adds them to a base model)"
        )
    eos = end_of_turn_ids(tokenizer, generation_eos)
    return EastTokenIds(
        end_of_read=end_of_read,
        end_of_write=end_of_write,
        bos=tokenizer.bos_token_id,
        eos=tuple(token_id for token_id in eos if token_id not in (end_of_read, end_of_write)),
    )


def generation_eos(model_path: str | Path, config: PretrainedConfig) -> int | list[int] | None:
    """The eos ids of the generation config a checkpoint loads with, read without its
    weights: its generation_config.json's, else its config's (as transformers derives one)."""
    if (Path(model_path) / "generation_config.json").is_file():
        from transformers import GenerationConfig

        with loading(model_path, "--model-path", part="generation_config.json"):
            return GenerationConfig.from_pretrained(str(model_path)).eos_token_id
    return getattr(config.get_text_config(), "eos_token_id", None)


CHECKPOINT_DTYPE = "the checkpoint's"


def weights_dtype(torch_dtype: str, device: str, model_path: str | Path | None = None) -> str:
    """The dtype `--torch-dtype` loads the weights in on `device`: `auto` is the
    checkpoint's own on accelerators (named where the config of `model_path` names it, as
    transformers reads it first), float32 on a CPU, where bfloat16 products crawl."""
    if torch_dtype not in TORCH_DTYPES:
        raise ValueError(f"unknown --torch-dtype {torch_dtype!r}: choose one of {TORCH_DTYPES}")
    if torch_dtype == "auto":
        if str(device).startswith("cpu"):
            return "float32"
        return config_dtype(model_path) or CHECKPOINT_DTYPE
    return torch_dtype


def config_dtype(model_path: str | Path | None) -> str | None:
    """The dtype a local checkpoint's `config.json` names (`dtype`, or `torch_dtype` as
    transformers 4 wrote it); None where it names none or cannot be read (a hub id, no
    config: the load says why)."""
    if model_path is None:
        return None
    try:
        config = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    name = config.get("dtype", config.get("torch_dtype"))
    if not isinstance(name, str):
        return None
    dtype = getattr(torch, name, None)
    return name if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None


def resolve_dtype(torch_dtype: str, device: str) -> torch.dtype | str:
    """`weights_dtype` as transformers takes it."""
    name = weights_dtype(torch_dtype, device)
    return "auto" if name == CHECKPOINT_DTYPE else getattr(torch, name)


def check_hub_model(name: str, where: str) -> None:
    """A hub id (`is_hub_id`) is asked of the hub once, now, or found in its cache: one that
    is neither, in one line naming `where` (the loaders would retry for a minute, then fail
    with a traceback): `stage1/model` or `models/east-demo` from another folder is no
    model there."""
    from huggingface_hub import constants, model_info, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return
    problem = "the hub is offline (HF_HUB_OFFLINE) and has no copy in its cache"
    if not constants.HF_HUB_OFFLINE:
        try:
            model_info(name, timeout=10)
            return
        except Exception as error:  # any failure: no model to load from there
            first = (str(error).strip().splitlines() or [""])[0]
            problem = f"the hub gives none ({type(error).__name__}: {first})"
    raise ValueError(f"{where} {name!r}: no such folder here ({Path.cwd()}), and {problem}")


def check_model_path(model_path: str | Path) -> None:
    """Fail early, naming the problem, on a local path that cannot be a checkpoint."""
    if is_hub_id(model_path):
        return  # from_pretrained fetches it where a hub is reachable
    path = Path(model_path)
    if not path.exists():
        raise CheckpointError(f"model path {str(model_path)!r} does not exist")
    if not path.is_dir():
        raise CheckpointError(
            f"model path {str(model_path)!r} is a file, not a checkpoint directory"
        )
    if not (path / "config.json").exists():
        raise CheckpointError(
            f"model path {str(model_path)!r} has no config.json, "
            "so it is not a transformers checkpoint"
        )


def from_pretrained_here_or_hub(loader: type, model_path: str | Path, **kwargs: object) -> Any:
    """`loader.from_pretrained(model_path)`; a hub id that does not load, in one line."""
    try:
        # any class with from_pretrained (transformers', peft's): callers pass a `type`
        return loader.from_pretrained(str(model_path), **kwargs)  # type: ignore[attr-defined]
    except OSError as error:
        if not is_hub_id(model_path):
            raise
        raise CheckpointError(
            f"{str(model_path)!r} is no local directory and could not be loaded from the hub "
            f"({error.__class__.__name__}: {str(error).splitlines()[0]})"
        ) from error


def _config_errors() -> tuple[type[Exception], ...]:
    """huggingface_hub's errors of a config that does not validate (transformers' configs
    are strict dataclasses: a hidden size no multiple of the heads; before: a traceback),
    where this version has them."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:
        return ()
    return (StrictDataclassError,)


@contextmanager
def loading(
    folder: str | Path,
    where: str,
    also: tuple[type[Exception], ...] = (),
    part: str | None = None,
) -> Iterator[None]:
    """A load of `folder` (or of its `part`: `config.json`, `its tokenizer`) whose failure
    is told in one line naming `where` and `folder` (`also`: the loader's own errors of a
    bad folder, besides a missing or corrupt file: a weights file cut off is a
    SafetensorError traceback otherwise)."""
    from safetensors import SafetensorError

    what = f"{part} cannot be loaded" if part else "cannot be loaded"
    try:
        yield
    except CheckpointError as error:
        raise ValueError(f"{where}: {error}") from None
    # joined, not unpacked: mypy types `(A, *b, *c)` as a tuple of objects
    except (OSError, ValueError, SafetensorError) + _config_errors() + also as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
        first = lines[0]
        if first.endswith(":") and len(lines) > 1:  # peft's "Error(s) in loading ...:"
            first = f"{first} {lines[1][:300]}"
        hint = "an incomplete or corrupt model folder?"
        if "size mismatch" in first:
            hint = "trained on a model of another shape? give the model it was trained on"
        raise ValueError(
            f"{where} {folder}: {what} ({type(error).__name__}: {first}); {hint}"
        ) from error
    except RuntimeError as error:  # transformers' refusal of weights of other shapes
        if "ignore_mismatched_sizes" not in str(error):
            raise  # a program's error, kept whole
        raise ValueError(
            f"{where} {folder}: {what}: its weights are not of the shapes its config.json "
            "gives (named in transformers' load report above); an edited config.json, or "
            "another model's weights?"
        ) from error


def check_config(
    model_path: str | Path,
    where: str,
    trust_remote_code: bool = False,
    shown: str | Path | None = None,
) -> None:
    """A local checkpoint's `config.json` read as transformers reads it, first of all its
    files (not JSON, a model type it does not know), and its `generation_config.json`
    where it has one: refused in one line naming `where` and the folder (`shown`: as
    named; before: a transformers traceback, and a generation config that is not JSON was
    passed over by the load, its end-of-turn ids with it). A hub id, or a path that is no
    checkpoint folder, is left to `check_model_path` and the load."""
    if is_hub_id(model_path) or not (Path(model_path) / "config.json").is_file():
        return
    from transformers import AutoConfig, GenerationConfig

    with loading(shown or model_path, where, part="config.json"):
        AutoConfig.from_pretrained(str(model_path), trust_remote_code=trust_remote_code)
    if (Path(model_path) / "generation_config.json").is_file():
        with loading(shown or model_path, where, part="generation_config.json"):
            GenerationConfig.from_pretrained(str(model_path))


def load_tokenizer(
    model_path: str | Path, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    check_model_path(model_path)
    return from_pretrained_here_or_hub(
        AutoTokenizer, model_path, trust_remote_code=trust_remote_code
    )


def load_model(
    model_path: str | Path,
    adapter_path: str | Path | None = None,
    torch_dtype: str = "auto",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Load a causal LM for inference; a LoRA adapter is merged into it."""
    from transformers import AutoModelForCausalLM

    check_model_path(model_path)
    dtype = resolve_dtype(torch_dtype, device)  # a bad flag is not a bad folder
    with loading(model_path, "--model-path"):
        model = from_pretrained_here_or_hub(
            AutoModelForCausalLM, model_path, dtype=dtype, trust_remote_code=trust_remote_code
        )
    if adapter_path is not None:
        model = merge_adapter(model, adapter_path)
    model.to(device)
    model.eval()
    return model


MODEL_WEIGHTS = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)  # fmt: skip
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def check_weights(folder: str | Path, where: str, names: tuple[str, ...] = MODEL_WEIGHTS) -> None:
    """A local folder must hold its weights (a run killed before writing them leaves a
    config alone), and a link to it must lead somewhere: refused naming `where` (the flag
    or setting) before anything loads."""
    if Path(folder).is_symlink() and not Path(folder).exists():
        raise ValueError(
            f"{where} {folder}: {not_a_folder(Path(folder))} (the model moved or was removed)"
        )
    if is_hub_id(folder) or not Path(folder).is_dir():
        return
    if not any((Path(folder) / name).is_file() for name in names):
        raise ValueError(
            f"{where} {folder}: no weights file ({' or '.join(names)}): an unfinished or "
            "incomplete model folder"
        )


def check_weights_readable(
    folder: str | Path, where: str, names: tuple[str, ...] = MODEL_WEIGHTS
) -> None:
    """Each safetensors file a load of the local `folder` reads (the first of `names`
    there, or every shard its index names) must read: its header, and a length that covers
    the tensors the header lists. A file cut short (a copy or download stopped part-way) or
    a shard missing is refused in one line naming `where`, the folder and the file, reading
    the headers only (no weights load); a torch pickle (`.bin`) is read by the load alone,
    and a folder with no weights file at all is `check_weights`'s to refuse."""
    from safetensors import safe_open

    for file in safetensors_files(folder, where, names) or ():
        with loading(folder, where, part=file.name):
            with safe_open(str(file), framework="pt"):
                pass


def check_checkpoint_files(
    model_path: str | Path, where: str, trust_remote_code: bool = False
) -> None:
    """A local checkpoint folder's weights there, its `config.json` (and generation config)
    read as transformers reads them and its safetensors headers whole: each refused in one
    line naming `where`, the folder and the file, no weights loaded."""
    check_model_path(model_path)  # not there, a file, or no config.json: said first
    check_weights(model_path, where)
    check_config(model_path, where, trust_remote_code)
    check_weights_readable(model_path, where)


def safetensors_files(
    folder: str | Path, where: str, names: tuple[str, ...] = MODEL_WEIGHTS
) -> list[Path] | None:
    """The safetensors files a load of the local `folder` reads (the first of `names`
    there, or every shard its index names; a bad index refused naming `where`), or None: a
    hub id, no weights file, or a torch pickle (`.bin`)."""
    if is_hub_id(folder) or not Path(folder).is_dir():
        return None
    for name in names:
        path = Path(folder) / name
        if not path.is_file():
            continue
        if name.endswith(".safetensors"):
            return [path]
        if not name.endswith(".safetensors.index.json"):
            return None
        with loading(folder, where, part=name):
            index = json.loads(path.read_text(encoding="utf-8"))
            shards = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(shards, dict) or not all(
                isinstance(shard, str) for shard in shards.values()
            ):
                raise ValueError("no weight_map of tensor names to files")
        return [Path(folder) / shard for shard in sorted(set(shards.values()))]
    return None


def saved_tensor_shapes(
    folder: str | Path, where: str, names: tuple[str, ...] = MODEL_WEIGHTS
) -> dict[str, tuple[int, ...]] | None:
    """The name and shape of every tensor `folder`'s safetensors files hold, read from their
    headers (no weights load); None where there are none (`safetensors_files`)."""
    from safetensors import safe_open

    files = safetensors_files(folder, where, names)
    if files is None:
        return None
    shapes = {}
    for file in files:
        with loading(folder, where, part=file.name):
            with safe_open(str(file), framework="pt") as saved:
                for name in saved.keys():
                    shapes[name] = tuple(saved.get_slice(name).get_shape())
    return shapes


def check_adapter_path(adapter_path: str | Path | None, where: str = "--adapter-path") -> None:
    """A peft adapter's folder (or None), refused before any model loads, each time naming
    `where` and the path as given: no such folder, a file or a broken link (before, a file:
    "has no adapter_config.json"), a folder without adapter_config.json, a config that is
    no JSON object (named by line), no weights file, weights cut short, or weights of another rank
    than the config's (before, all three found by peft once the model had loaded: a
    hub error for the missing file, a state-dict traceback for the rank)."""
    if adapter_path is None:
        return
    folder = Path(adapter_path)
    if not folder.is_dir():
        raise CheckpointError(f"{where} {adapter_path}: {not_a_folder(folder)}")
    if not (folder / "adapter_config.json").exists():
        raise CheckpointError(
            f"{where} {adapter_path}: no adapter_config.json (not a peft adapter)"
        )
    config = adapter_config(folder)
    check_weights(folder, where, ADAPTER_WEIGHTS)
    # the headers read once: a file cut short is refused here (`check_weights_readable`)
    shapes = saved_tensor_shapes(folder, where, ADAPTER_WEIGHTS) or {}
    rank = config.get("r")
    if config.get("rank_pattern") or type(rank) is not int:
        return  # ranks that differ by module: peft's to check
    for name, shape in shapes.items():
        saved = shape[0] if ".lora_A." in name else shape[-1] if ".lora_B." in name else rank
        if len(shape) == 2 and saved != rank:
            raise ValueError(
                f"{where} {folder}: {name} is of rank {saved}, but adapter_config.json says "
                f"r: {rank}: the weights and the config are two adapters'"
            )


def adapter_config(folder: Path) -> dict:
    """An adapter's `adapter_config.json`, one that is no JSON object named by line."""
    path = folder / "adapter_config.json"
    try:
        config = json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno}: {invalid_json(error)}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


# A Stage II run's record of its recipe, beside the adapter it writes (`training.resume`):
# the model it was trained on, by content, as it was then.
TRAINING_RECORD = "recipe.json"


def check_adapter_base(
    model_path: str | Path,
    adapter_path: str | Path,
    names: tuple[str, str] = ("--model-path", "--adapter-path"),
    by_named_folder: bool = False,
) -> None:
    """The adapter goes into the model it was trained on, by the fingerprint its Stage II
    run recorded (`recipe.json` beside it, where the adapter's folder really is): before,
    an adapter merged into a Stage I model trained again since "verified" against itself
    (base + adapter equals the merge whatever the base). `by_named_folder` (a merge): with
    no record, by the folder its `adapter_config.json` names, where that is here (a copied
    adapter's named folder may have changed since: the agents do not refuse by it).
    `names`: how the command names the two folders."""
    base, adapter = Path(model_path), Path(adapter_path)
    if not base.is_dir():
        return  # a hub id: nothing here to compare
    trained_on, record = recorded_base(adapter)
    if isinstance(trained_on, dict) and is_content_setting(trained_on):
        if folder_fingerprint(base) != trained_on["sha256"]:
            raise CheckpointError(
                f"{names[1]} {adapter} was trained on {trained_on['folder']} as it was "
                f"then ({record} holds its fingerprint), and {names[0]} {base} is another "
                "model (or that one trained again since): give the model it was trained on"
            )
        return
    if not by_named_folder:
        return
    named = read_json_object(adapter / "adapter_config.json").get("base_model_name_or_path")
    if not named or not Path(named).is_dir():
        return  # a hub name, or a folder not here: nothing to compare
    if folder_fingerprint(Path(named)) != folder_fingerprint(base):
        raise CheckpointError(
            f"{names[1]} {adapter} was trained on {named}, and {names[0]} {base} is "
            "another model: give the model it was trained on"
        )


def recorded_base(adapter: Path) -> tuple[object, Path]:
    """The model a Stage II run recorded it trained on (`model.name_or_path` of its
    `recipe.json`, beside the adapter's real folder) and the record; None where there is
    no readable record of a LoRA run."""
    record = adapter.resolve().parent / TRAINING_RECORD
    if not record.is_file():
        return None, record
    try:
        recipe = read_json_object(record)
    except RecordError as error:
        logger.warning("%s: not read (%s): the adapter's base is not checked", record, error)
        return None, record
    model = recipe.get("model") if recipe.get("stage") == "lora" else None
    return (model.get("name_or_path") if isinstance(model, dict) else None), record


def merge_adapter(model: PreTrainedModel, adapter_path: str | Path) -> PreTrainedModel:
    from peft import PeftModel

    check_adapter_path(adapter_path)
    path = Path(adapter_path)
    logger.info("merging LoRA adapter %s", adapter_path)
    return PeftModel.from_pretrained(model, str(path)).merge_and_unload()


def load_east_checkpoint(
    model_path: str | Path,
    adapter_path: str | Path | None = None,
    torch_dtype: str | torch.dtype = "auto",
    device: str = "cpu",
    trust_remote_code: bool = False,
    tokenizer_loader: Callable[[], PreTrainedTokenizerBase] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load tokenizer and model, and check that the tokenizer is an EAST tokenizer first;
    `tokenizer_loader`: the caller's, where it holds the tokenizer loaded already (a
    Llama-3 tokenizer takes about a second to load). A `device` this machine lacks is
    refused first (before: torch's error once the weights had loaded)."""
    try:  # `0` or a torch.device too, as `.to()` takes them
        name = device if isinstance(device, str) else str(torch.device(device))
    except (RuntimeError, TypeError) as error:  # `0` on a machine without an accelerator
        raise CheckpointError(f"device: {device!r}: {error}") from None
    try:
        checked_device(name, "device")
    except ValueError as error:
        raise CheckpointError(str(error)) from None
    if is_hub_id(model_path):  # asked once (before: the loaders' retries, a minute offline)
        try:
            check_hub_model(str(model_path), "model_path")
        except ValueError as error:
            raise CheckpointError(str(error)) from None
    if isinstance(torch_dtype, torch.dtype):  # as transformers takes it: torch.float32
        torch_dtype = str(torch_dtype).removeprefix("torch.")
    # before: a config that does not parse, or a generation config that is no JSON, was a
    # traceback of the tokenizer's load, or found once the model ran (east-bench's)
    check_checkpoint_files(model_path, "--model-path", trust_remote_code)
    if tokenizer_loader is None:
        tokenizer = load_tokenizer(model_path, trust_remote_code)
    else:
        tokenizer = tokenizer_loader()
    east_token_ids(tokenizer)  # fail before the (slow) model load
    model = load_model(model_path, adapter_path, torch_dtype, device, trust_remote_code)
    return model, tokenizer
