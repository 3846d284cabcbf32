"""Average the weights of several checkpoints of one model (e.g. the last ones of a run).

    python -m training.average_checkpoints --inputs outputs/a outputs/b --output outputs/avg

Every input must be a standalone transformers checkpoint of the same architecture (merge
LoRA adapters first, `training.merge_lora`); tensors are averaged in float32 and saved in
the first input's dtype (or `--save-dtype`) together with its config and tokenizer, which
every input must share (its config less how it was saved, its tokenizer's vocabulary). An
input whose config, vocabulary or tensors differ is named in the error, nothing written;
the output folder appears whole or not at all. Errors end the command with one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from east_agent.common.arguments import parse_once_each
from east_agent.common.atomic import atomic_path, check_folder_path
from east_agent.common.entry import command_line
from east_agent.common.records import read_json_object
from east_agent.lm.checkpoint import check_weights, saved_tensor_shapes
from training.model_folder import is_finite, load_pretrained

COMMAND = "python -m training.average_checkpoints"

logger = logging.getLogger("training.average_checkpoints")


class CheckpointMismatchError(ValueError):
    """The checkpoints do not hold the same tensors."""


def average(
    inputs: Sequence[str | Path],
    output: str | Path,
    weights: Sequence[float] | None = None,
    save_dtype: str | None = None,
) -> None:
    from transformers import AutoTokenizer

    if len(inputs) < 2:
        raise ValueError("average needs at least two checkpoints")
    weights = list(weights) if weights is not None else [1.0] * len(inputs)
    if len(weights) != len(inputs) or not all(0 < weight < math.inf for weight in weights):
        raise ValueError(f"need one positive weight per input, got {weights}")
    output = Path(output)
    if output.exists():
        raise ValueError(f"{output} exists; choose a new output folder")
    check_folder_path(output, "--output")
    seen: dict[Path, Path] = {}
    for path in map(Path, inputs):
        if path.is_file():  # before: "no such checkpoint folder"
            raise ValueError(f"{path}: a file, not a checkpoint folder")
        if not path.is_dir():
            raise ValueError(f"{path}: no such checkpoint folder")
        if path.resolve() in seen:  # before: averaged with itself, silently
            raise ValueError(
                f"{path}: given twice (as {seen[path.resolve()]} too); to count a checkpoint "
                "more, give --weights"
            )
        seen[path.resolve()] = path
        if (path / "adapter_config.json").exists():  # LoRA factors do not average as updates
            raise ValueError(
                f"{path} is a LoRA adapter: merge it into its base first (python -m "
                "training.merge_lora), then average the merged checkpoints"
            )
        check_weights(path, "--inputs")
    for checkpoint in inputs[1:]:
        check_same_model(Path(inputs[0]), Path(checkpoint))
        check_same_tensor_shapes(Path(inputs[0]), Path(checkpoint))
    model = load_whole(inputs[0])
    dtype = getattr(torch, save_dtype) if save_dtype else model.dtype
    total = sum(weights)
    _check_finite(model.state_dict(), inputs[0])
    sums = {
        name: tensor.detach().float() * (weights[0] / total)
        for name, tensor in model.state_dict().items()
    }
    for checkpoint, weight in zip(inputs[1:], weights[1:]):
        other = load_whole(checkpoint).state_dict()
        _check_same_tensors(sums, other, inputs[0], checkpoint)
        _check_finite(other, checkpoint)
        for name, tensor in other.items():
            sums[name] += tensor.detach().float() * (weight / total)
        logger.info("added %s (weight %.3g)", checkpoint, weight / total)
    model = model.to(dtype)  # first: the average is cast once, to the dtype it is saved in
    model.load_state_dict({name: tensor.to(dtype) for name, tensor in sums.items()})
    with atomic_path(output) as temporary:
        model.save_pretrained(temporary)
        load_pretrained(AutoTokenizer, inputs[0], "--inputs").save_pretrained(temporary)
    logger.info("wrote the average of %d checkpoints to %s", len(inputs), output)


# config.json keys that say how a checkpoint was saved or is run, not which model it is
SAVING_KEYS = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache"}


def check_same_model(first: Path, other: Path) -> None:
    """Checkpoints of one model: the same config (less how it was saved) and the same
    tokenizer vocabulary, or an error naming what differs (before: averaged, the output
    taking the first input's config and tokenizer, whichever came first)."""
    configs = [read_json_object(path / "config.json") for path in (first, other)]
    differ = sorted(
        key
        for key in (set(configs[0]) | set(configs[1])) - SAVING_KEYS
        if configs[0].get(key) != configs[1].get(key)
    )
    if differ:
        raise CheckpointMismatchError(
            f"{other}: config.json differs from {first}'s in {', '.join(differ[:5])}: "
            "not a checkpoint of the same model"
        )
    files = [path / "tokenizer.json" for path in (first, other)]
    if all(path.is_file() for path in files) and vocabulary(files[0]) != vocabulary(files[1]):
        raise CheckpointMismatchError(
            f"{other}: tokenizer.json holds another vocabulary than {first}'s: not a "
            "checkpoint of the same model (the output would take the first one's tokenizer)"
        )


def check_same_tensor_shapes(first: Path, other: Path) -> None:
    """The tensors both checkpoints' weights files hold have one shape each, read from
    their headers before anything loads (before: another shape was transformers'
    traceback). Names one file holds and the other not are left to the load (a tied
    `lm_head`, a format of another transformers version): `load_whole`."""
    shapes = [saved_tensor_shapes(path, "--inputs") for path in (first, other)]
    if shapes[0] is None or shapes[1] is None:
        return
    for name in sorted(shapes[0].keys() & shapes[1].keys()):
        if shapes[1][name] != shapes[0][name]:
            raise CheckpointMismatchError(
                f"{other}: tensor {name} has shape {shapes[1][name]}, {shapes[0][name]} in {first}"
            )


def load_whole(path: str | Path):
    """The model of checkpoint `path`, every weight read from its files (before: a tensor
    they lacked was made up at random by the load and averaged in, exit 0)."""
    from transformers import AutoModelForCausalLM

    model, info = load_pretrained(AutoModelForCausalLM, path, "--inputs", output_loading_info=True)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise CheckpointMismatchError(
            f"{path}: its weights files lack {', '.join(missing[:3])} ({len(missing)} "
            "tensors the load would make up at random): not a whole checkpoint"
        )
    return model


def vocabulary(tokenizer_file: Path) -> tuple:
    """The tokens and ids a `tokenizer.json` holds, its added tokens among them (not how
    a `tokenizers` version writes them: merges are saved in two forms)."""
    saved = read_json_object(tokenizer_file)
    model = saved.get("model")
    if not isinstance(model, dict):
        model = {}
    added = sorted(
        (token.get("id"), token.get("content"))
        for token in saved.get("added_tokens") or []
        if isinstance(token, dict)
    )
    vocab = model.get("vocab") or {}
    # a BPE or WordPiece vocabulary maps tokens to ids; a Unigram one lists [token, score]
    # pairs, each token's id its place in the list (before: an AttributeError)
    if isinstance(vocab, dict):
        return sorted(vocab.items()), added
    return sorted((entry[0], index) for index, entry in enumerate(vocab)), added


def _check_finite(tensors: dict, path) -> None:
    """An input of NaN or inf weights (a diverged run) is refused (before: averaged in,
    the average NaN where it was)."""
    for name, tensor in tensors.items():
        if not is_finite(tensor):
            raise ValueError(
                f"{path}: tensor {name} holds NaN or inf: a diverged run's weights; leave "
                "it out of the average"
            )


def _check_same_tensors(reference: dict, other: dict, reference_path, path) -> None:
    missing = sorted(set(reference) - set(other))
    extra = sorted(set(other) - set(reference))
    if missing or extra:
        raise CheckpointMismatchError(
            f"{path}: tensors differ from {reference_path}: "
            f"missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for name, tensor in other.items():
        if tensor.shape != reference[name].shape:
            raise CheckpointMismatchError(
                f"{path}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"{tuple(reference[name].shape)} in {reference_path}"
            )


@command_line(COMMAND)
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", nargs="+", required=True, help="checkpoint folders")
    parser.add_argument("--output", required=True)
    parser.add_argument("--weights", nargs="+", type=float, help="default: equal weights")
    parser.add_argument(
        "--save-dtype",
        choices=["float32", "bfloat16", "float16"],
        help="the dtype the average is saved in (default: the first input's)",
    )
    args = parse_once_each(parser, argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    average(args.inputs, args.output, args.weights, args.save_dtype)


if __name__ == "__main__":
    main()
