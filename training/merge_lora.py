"""Fold a LoRA adapter into its base model and save a standalone checkpoint.

    python -m training.merge_lora --model-path outputs/stage1/model \\
        --adapter-path outputs/stage2/model --output outputs/east-merged

Before anything is written, the logits of the merged model on a probe input are compared
with those of base + adapter; if they differ beyond the tolerance of the dtype, the merge
fails loudly and writes nothing. The output folder appears whole or not at all (it is
written under a temporary name and renamed). Errors end the command with one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from east_agent.common.arguments import add_old_spelling, parse_once_each
from east_agent.common.atomic import atomic_path, check_folder_path, not_a_folder
from east_agent.common.entry import CommandError, command_line
from east_agent.decoding.prompt import END_OF_READ, END_OF_WRITE, render_user_turn, simt_instruction
from east_agent.lm.checkpoint import (
    CheckpointError,
    check_adapter_base,
    check_adapter_path,
    check_weights,
    east_token_ids,
    loading,
)
from training.model_folder import load_pretrained

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

COMMAND = "python -m training.merge_lora"

logger = logging.getLogger("training.merge_lora")

# Largest |merged - (base + adapter)| allowed, relative to the largest |logit|.
RELATIVE_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


class MergeMismatchError(CommandError):
    """The merged model does not compute what base + adapter computes."""


def probe_text(tokenizer: PreTrainedTokenizerBase) -> str:
    prompt = render_user_turn(tokenizer, simt_instruction("de", "en", "low"))
    return f"{prompt}Die Katze{END_OF_READ}The cat{END_OF_WRITE} sitzt auf dem Tisch.{END_OF_READ}"


def check_merge(expected: torch.Tensor, actual: torch.Tensor, dtype: torch.dtype) -> float:
    """Return the relative deviation; raise if it exceeds the dtype's tolerance."""
    scale = expected.abs().max().clamp_min(1e-6)
    deviation = float((actual.float() - expected.float()).abs().max() / scale)
    tolerance = RELATIVE_TOLERANCE[dtype]
    if deviation > tolerance or not torch.isfinite(actual).all():
        raise MergeMismatchError(
            f"merged logits deviate from base + adapter by {deviation:.2e} of their scale "
            f"(tolerance {tolerance:.0e} for {dtype}); nothing was written"
        )
    return deviation


def merge(
    base: str | Path,
    adapter: str | Path,
    output: str | Path,
    dtype: str = "float32",
    save_dtype: str | None = None,
) -> float:
    """Merge in `dtype`, verify, save (in `save_dtype`); return the relative deviation."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    output = Path(output)
    if output.exists():
        raise ValueError(f"{output} exists; choose a new output folder")
    check_folder_path(output, "--output")
    base, adapter = Path(base), Path(adapter)
    check_base_of_adapter(base, adapter)
    torch_dtype = getattr(torch, dtype)
    base_tokenizer = load_pretrained(AutoTokenizer, base, "--model-path")
    check_base_tokens(base_tokenizer, base)
    tokenizer = tokenizer_of(adapter, base_tokenizer)
    model = load_pretrained(AutoModelForCausalLM, base, "--model-path", dtype=torch_dtype)
    # peft's KeyError and RuntimeError: an adapter_config.json lacking a key, or not
    # matching its weights (a size mismatch)
    with loading(adapter, "--adapter-path", also=(KeyError, RuntimeError)):
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    probe = tokenizer(probe_text(tokenizer), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        expected = model(**probe).logits
        merged = model.merge_and_unload()
        actual = merged(**probe).logits
    deviation = check_merge(expected, actual, torch_dtype)
    logger.info("merged logits match base + adapter (relative deviation %.2e)", deviation)

    if save_dtype is not None:
        merged = merged.to(getattr(torch, save_dtype))
    with atomic_path(output) as temporary:
        merged.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
    return deviation


def tokenizer_of(adapter: Path, base_tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """The adapter's tokenizer where Stage II saved one, else the base's."""
    from transformers import AutoTokenizer

    if (adapter / "tokenizer_config.json").exists():
        return load_pretrained(AutoTokenizer, adapter, "--adapter-path")
    return base_tokenizer


def check_base_tokens(tokenizer: PreTrainedTokenizerBase, base: Path) -> None:
    """The base must be an EAST (Stage I) model: the adapter's EAST token ids index rows
    a chat model without them lacks (before: an IndexError traceback)."""
    try:
        east_token_ids(tokenizer)
    except CheckpointError as error:
        raise ValueError(f"--model-path {base}: {error}") from None


def check_base_of_adapter(base: Path, adapter: Path) -> None:
    """The adapter must exist, and be merged into the model it was trained on
    (`check_adapter_base`: a merge into another base "verifies" against itself)."""
    if not base.is_dir():  # before: "no such folder" for a file or a broken link too
        raise ValueError(f"--model-path {base}: {not_a_folder(base)}")
    check_adapter_path(adapter)  # its folder, config, weights and ranks, before anything loads
    if (base / "adapter_config.json").exists():
        raise ValueError(
            f"--model-path {base} is a LoRA adapter: give the model it was trained on (Stage I's)"
        )
    if not (base / "config.json").exists():
        raise ValueError(f"--model-path {base}: no config.json (not a transformers model)")
    check_weights(base, "--model-path")
    check_adapter_base(base, adapter, by_named_folder=True)


@command_line(COMMAND)
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="merge a LoRA adapter into its base model"
    )
    parser.add_argument("--model-path", help="the base (Stage I) checkpoint")
    parser.add_argument("--adapter-path", help="the peft adapter (Stage II output)")
    add_old_spelling(parser, "--base", "model_path")
    add_old_spelling(parser, "--adapter", "adapter_path")
    parser.add_argument("--output", required=True, help="new folder for the merged checkpoint")
    dtypes = ["float32", "bfloat16", "float16"]
    parser.add_argument(
        "--torch-dtype", default="float32", choices=dtypes, help="merge in this dtype"
    )
    add_old_spelling(parser, "--dtype", "torch_dtype", choices=dtypes)
    parser.add_argument("--save-dtype", choices=dtypes, help="store the weights in this dtype")
    args = parse_once_each(parser, argv)
    paths = {"--model-path": args.model_path, "--adapter-path": args.adapter_path}
    missing = [flag for flag, path in paths.items() if path is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    merge(args.model_path, args.adapter_path, args.output, args.torch_dtype, args.save_dtype)


if __name__ == "__main__":
    main()
