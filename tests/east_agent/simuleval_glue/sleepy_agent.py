"""A wait-1 copy agent that sleeps a known time at every step (computation-aware tests)."""

import time

from simuleval.agents import ReadAction, TextToTextAgent, WriteAction
from simuleval.utils import entrypoint


@entrypoint
class SleepyWaitOne(TextToTextAgent):
    @staticmethod
    def add_args(parser):
        parser.add_argument("--sleep", type=float, default=0.1)

    def policy(self):
        time.sleep(self.args.sleep)
        written = len(self.states.target)
        if written < len(self.states.source):
            last = self.states.source_finished and written == len(self.states.source) - 1
            return WriteAction(self.states.source[written], finished=last)
        return ReadAction()
