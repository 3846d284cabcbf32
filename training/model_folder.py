"""Model folders the training commands read: checked before they load, and a load that
fails anyway (a truncated weights file, a corrupt tokenizer) told in one line naming the
folder, not a safetensors or OSError traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from east_agent.lm.checkpoint import from_pretrained_here_or_hub, loading


def load_pretrained(loader: type, folder: str | Path, where: str, **kwargs: object) -> Any:
    """`loader.from_pretrained(folder)`; a failure in one line naming `where` and `folder`."""
    with loading(folder, where):
        return from_pretrained_here_or_hub(loader, folder, **kwargs)
