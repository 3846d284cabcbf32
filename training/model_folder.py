"""Model folders the training commands read: checked before they load, and a load that
fails anyway (a truncated weights file, a corrupt tokenizer) told in one line naming the
folder, not a safetensors or OSError traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from east_agent.lm.checkpoint import CheckpointError, from_pretrained_here_or_hub, is_hub_id

MODEL_WEIGHTS = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)  # fmt: skip
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def check_weights(folder: str | Path, where: str, names: tuple[str, ...] = MODEL_WEIGHTS) -> None:
    """A local folder must hold its weights (a run killed before writing them leaves a
    config alone): refused naming `where` (the flag or setting) before anything loads."""
    if is_hub_id(folder) or not Path(folder).is_dir():
        return
    if not any((Path(folder) / name).is_file() for name in names):
        raise ValueError(
            f"{where} {folder}: no weights file ({' or '.join(names)}): an unfinished or "
            "incomplete model folder"
        )


def load_pretrained(loader, folder: str | Path, where: str, **kwargs) -> Any:
    """`loader.from_pretrained(folder)`; a failure in one line naming `where` and `folder`."""
    with loading(folder, where):
        return from_pretrained_here_or_hub(loader, folder, **kwargs)


@contextmanager
def loading(folder: str | Path, where: str) -> Iterator[None]:
    """A load of `folder` whose failure is told in one line naming `where` and `folder`."""
    from safetensors import SafetensorError

    try:
        yield
    except CheckpointError as error:
        raise ValueError(f"{where}: {error}") from None
    except (OSError, ValueError, SafetensorError) as error:
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(
            f"{where} {folder}: cannot be loaded ({type(error).__name__}: {first}); "
            "an incomplete or corrupt model folder?"
        ) from None
