"""The EAST two-stage SFT recipe: data formatting, the trainer entry, LoRA merging."""

from east_agent.common.entry import started_as_command, take_signals_from_start

if started_as_command(()):  # `python -m training.sft`, ...: a signal kept from the first line
    take_signals_from_start()
