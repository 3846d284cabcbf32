"""The EAST two-stage SFT recipe: data formatting, the trainer entry, LoRA merging."""
