"""Model folders the training commands read: checked before they load, and a load that
fails anyway (a truncated weights file, a corrupt tokenizer) told in one line naming the
folder, not a safetensors or OSError traceback."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from east_agent.lm.checkpoint import from_pretrained_here_or_hub, loading

# what to change when a run's weights or gradients are NaN or inf (a diverged loss)
DIVERGED_HINT = (
    "its checkpoints stay for a look: train again into another train.output_dir (a lower "
    "train.learning_rate, warm-up, gradient clipping, bfloat16 over float16?)"
)


def load_pretrained(loader: type, folder: str | Path, where: str, **kwargs: object) -> Any:
    """`loader.from_pretrained(folder)`; a failure in one line naming `where` and `folder`."""
    with loading(folder, where):
        return from_pretrained_here_or_hub(loader, folder, **kwargs)


def is_finite(tensor: torch.Tensor) -> bool:
    """No NaN or inf in `tensor` (one that holds no floats has none)."""
    return not tensor.is_floating_point() or bool(torch.isfinite(tensor).all())


def diverged_steps(log_history: Sequence[dict]) -> str | None:
    """Why a run's logged steps show it diverged (every logged `grad_norm` NaN or inf: the
    updates skipped by a loss scaler, or the weights gone), or None."""
    norms = [entry["grad_norm"] for entry in log_history if "grad_norm" in entry]
    if norms and not any(math.isfinite(norm) for norm in norms):
        return (
            f"every logged step's gradients were NaN or inf (grad_norm {norms[-1]}, "
            f"{len(norms)} logged): the updates were skipped or the weights diverged"
        )
    return None
