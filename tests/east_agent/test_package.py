"""The package's top level: its decoder names, loaded when first asked for."""

import subprocess
import sys

import pytest
from commands import REPO, console_script_entries

import east_agent


def test_the_decoder_names_are_listed_and_load_on_first_use():
    assert {"DecoderConfig", "EastStreamDecoder", "Translation"} <= set(dir(east_agent))
    from east_agent.decoding.east import EastStreamDecoder

    assert east_agent.EastStreamDecoder is EastStreamDecoder


def test_importing_the_package_loads_no_torch():
    probe = "import sys, east_agent; dir(east_agent); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def console_script_modules() -> list[str]:
    """The modules of setup.cfg's console scripts (`east-demo = east_agent.evaluation.demo:...`)."""
    return [entry.split(":")[0] for entry in console_script_entries().values()]


def command_modules() -> set[str]:
    """The modules of both packages that `python -m` runs as a command: a `__main__` that
    calls a `command_line` main (a `__main__.py`: its package)."""
    found = set()
    for package in ("east_agent", "training"):
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text()
            if path.name == "__main__.py" or (
                'if __name__ == "__main__":' in text and "@command_line(" in text
            ):
                parts = path.relative_to(REPO).with_suffix("").parts
                found.add(".".join(parts[:-1] if path.name == "__main__.py" else parts))
    return found


def test_every_command_keeps_a_signal_from_its_first_line():
    """The lists `take_signals_from_start` reads are the commands there are: one left out
    would print a traceback for a Ctrl-C as torch imports (a list written by hand)."""
    import training

    assert set(east_agent._COMMANDS) == set(console_script_entries())
    assert {*east_agent._COMMAND_MODULES, *training._COMMAND_MODULES} == command_modules()


# east-bench measures models: its flags and its work are torch's, and its --help is no user's
# first step (a review: the list was written by hand, and left it out without a word)
TORCH_AT_IMPORT = {"east_agent.bench.cli"}


@pytest.mark.parametrize("command", sorted(set(console_script_modules()) - TORCH_AT_IMPORT))
def test_a_commands_module_reads_its_flags_without_torch(command):
    """torch loads when the work starts, not on import: before, `east-demo` imported it
    for its --torch-dtype choices (1.9 s for --help, against 0.2 s; a Ctrl-C in its first
    1.3 s a torch traceback, not one line)."""
    probe = f"import sys, {command}; print('torch' in sys.modules)"
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
