"""`east-simuleval`: the `simuleval` command, with two SimulEval 1.1.4 traps defused.

1. SimulEval parses its own flags before it has imported the agent, with argparse's
   prefix matching on: an agent flag `--latency low` is read as `--latency-metrics low`
   ("No latency metric called low"). This command turns prefix matching off, so agent
   flags are matched whole. (With the stock `simuleval`, write `--latency-level`.)
2. Importing SimulEval warns that ffmpeg is missing, which text evaluation never needs.

Everything else is SimulEval's own `main()`, unchanged.
"""

from __future__ import annotations

import argparse
import warnings


def _match_flags_whole() -> None:
    original_init = argparse.ArgumentParser.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.allow_abbrev = False

    argparse.ArgumentParser.__init__ = init


def main() -> None:
    warnings.filterwarnings(
        "ignore", message="Couldn't find ffmpeg or avconv", category=RuntimeWarning
    )
    _match_flags_whole()
    from simuleval.cli import main as simuleval_main

    simuleval_main()


if __name__ == "__main__":
    main()
