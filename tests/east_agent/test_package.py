"""The package's top level: its decoder names, loaded when first asked for."""

import subprocess
import sys

import pytest

import east_agent


def test_the_decoder_names_are_listed_and_load_on_first_use():
    assert {"DecoderConfig", "EastStreamDecoder", "Translation"} <= set(dir(east_agent))
    from east_agent.decoding.east import EastStreamDecoder

    assert east_agent.EastStreamDecoder is EastStreamDecoder


def test_importing_the_package_loads_no_torch():
    probe = "import sys, east_agent; dir(east_agent); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_wrapping_a_model_in_lora_prints_no_deprecation_of_peft():
    """peft reads a property transformers deprecates: before, a FutureWarning on every
    LoRA training run and merge."""
    wrap = (
        "from peft import LoraConfig, get_peft_model\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,"
        " num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)\n"
        "get_peft_model(LlamaForCausalLM(config), LoraConfig(target_modules=['q_proj']))\n"
    )

    def warnings_of(probe: str) -> str:
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stderr

    if "is_gradient_checkpointing" not in warnings_of(wrap):
        pytest.skip("this transformers does not deprecate is_gradient_checkpointing")
    assert "is_gradient_checkpointing" not in warnings_of("import east_agent\n" + wrap)
