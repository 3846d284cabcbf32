"""The package's top level: its decoder names, loaded when first asked for."""

import subprocess
import sys

import east_agent


def test_the_decoder_names_are_listed_and_load_on_first_use():
    assert {"DecoderConfig", "EastStreamDecoder", "Translation"} <= set(dir(east_agent))
    from east_agent.decoding.east import EastStreamDecoder

    assert east_agent.EastStreamDecoder is EastStreamDecoder


def test_importing_the_package_loads_no_torch():
    probe = "import sys, east_agent; dir(east_agent); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
