"""EAST simultaneous translation: the streaming decoder and its SimulEval agents.

The SimulEval adapters live in `east_agent.agent` (and are not imported here, so that
`simuleval --agent east_agent/agent.py` registers exactly one agent). The decoder's names
below are imported when first asked for, so that a command of this package does not load
torch before it needs it.
"""

import warnings
from typing import TYPE_CHECKING

from east_agent.common.entry import take_signals_from_start

# what runs as a command: setup.cfg's console scripts, and the modules `python -m` runs
_COMMANDS = (
    "east-simuleval", "east-eval", "east-prepare", "east-remote-eval", "east-package-system",
    "east-bench", "east-demo",
)  # fmt: skip
_COMMAND_MODULES = (
    "east_agent.bench", "east_agent.evaluation.cli", "east_agent.evaluation.demo",
    "east_agent.evaluation.omnisteval_scoring", "east_agent.evaluation.prepare",
    "east_agent.simuleval_glue.cli", "east_agent.simuleval_glue.remote_eval",
    "east_agent.simuleval_glue.system_dir",
)  # fmt: skip
# its process keeps an ending signal from this first line until the command's handlers take it
take_signals_from_start(_COMMANDS, _COMMAND_MODULES)

if TYPE_CHECKING:  # what type checkers see of the names imported when first asked for
    from east_agent.decoding.east import DecoderConfig, EastStreamDecoder, Translation

__all__ = ["DecoderConfig", "EastStreamDecoder", "Translation"]

# SimulEval imports pydub, which warns that ffmpeg is missing; text evaluation never needs
# it. Set here, before any module of the package can import SimulEval.
warnings.filterwarnings("ignore", message="Couldn't find ffmpeg or avconv", category=RuntimeWarning)
# peft (0.21) reads `is_gradient_checkpointing` of every model it wraps, which transformers
# (5.2x) deprecates with a FutureWarning: printed by every LoRA training run and merge,
# though nothing of ours asks for it.
warnings.filterwarnings(
    "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
)


def __getattr__(name: str) -> object:
    if name in __all__:
        from east_agent.decoding import east

        return getattr(east, name)
    raise AttributeError(f"module 'east_agent' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
