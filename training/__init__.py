"""The EAST two-stage SFT recipe: data formatting, the trainer entry, LoRA merging."""

from east_agent.common.entry import take_signals_from_start

# the modules `python -m` runs as commands
_COMMAND_MODULES = (
    "training.average_checkpoints", "training.base_model", "training.build_data",
    "training.demo", "training.merge_lora", "training.sft",
)  # fmt: skip
# their process keeps an ending signal from this first line (see east_agent)
take_signals_from_start((), _COMMAND_MODULES)
