"""Model folders the training commands read: checked before they load, and a load that
fails anyway (a truncated weights file, a corrupt tokenizer) told in one line naming the
folder, not a safetensors or OSError traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from east_agent.lm.checkpoint import CheckpointError, from_pretrained_here_or_hub


def load_pretrained(loader, folder: str | Path, where: str, **kwargs) -> Any:
    """`loader.from_pretrained(folder)`; a failure in one line naming `where` and `folder`."""
    with loading(folder, where):
        return from_pretrained_here_or_hub(loader, folder, **kwargs)


@contextmanager
def loading(
    folder: str | Path, where: str, also: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """A load of `folder` whose failure is told in one line naming `where` and `folder`
    (`also`: the loader's own errors of a bad folder, besides a missing or corrupt file)."""
    from safetensors import SafetensorError

    try:
        yield
    except CheckpointError as error:
        raise ValueError(f"{where}: {error}") from None
    except (OSError, ValueError, SafetensorError, *also) as error:
        first = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(
            f"{where} {folder}: cannot be loaded ({type(error).__name__}: {first}); "
            "an incomplete or corrupt model folder?"
        ) from None
