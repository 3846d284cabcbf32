"""What a grid worker needs before its first run, imported once by the process the workers
are forked from (`east_agent.evaluation.jobs.start_worker_imports`), while `east-eval`
checks the grid: torch, SimulEval, the agents and decoders, and transformers' Llama modules
and the loaders behind them (transformers imports those lazily, at the first checkpoint
loaded: about 4 s on a 2-core CPU, then a load takes 0.2 s).

Before its imports the forkserver ignores SIGUSR1, which the workers inherit until their
handler is in place (one told to take more threads while it starts up must not die of it),
and SIGINT and SIGHUP (Ctrl-C and a closed terminal reach the whole process group:
east-eval stops the workers; east-eval holds them back from this process until then),
and is made to die with `east-eval` (`PR_SET_PDEATHSIG`); each worker dies with the
forkserver (`FORKSERVER_PID`, which the workers inherit). The forkserver's own way to end
(its pipe from `east-eval` closing) does not come while workers live: each holds a copy of
that pipe. Nothing but the forkserver imports this module."""

import os
import signal
import sys

from east_agent.common.child_process import die_with
from east_agent.evaluation.jobs import FORKSERVER_PARENT, LEFT_TO_EAST_EVAL

FORKSERVER_PID = os.getpid()
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
# Ctrl-C is east-eval's to act on; multiprocessing has the forkserver ignore it only after
# these imports (before: a Ctrl-C in a grid's first seconds printed their traceback); and
# so is a closed terminal's SIGHUP (the forkserver's end was the workers' at once)
for signum in LEFT_TO_EAST_EVAL:
    signal.signal(signum, signal.SIG_IGN)  # one pending meanwhile is dropped with it
# east-eval started this process with them blocked, so that none came before this line
signal.pthread_sigmask(signal.SIG_UNBLOCK, LEFT_TO_EAST_EVAL)
if sys.platform.startswith("linux"):
    die_with(int(os.environ.get(FORKSERVER_PARENT, os.getppid())))()

import transformers  # noqa: E402 (after the death signal: these take seconds)
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.models.llama import modeling_llama  # noqa: E402

import east_agent.agent  # noqa: E402
import east_agent.evaluation.runs  # noqa: E402
import east_agent.simuleval_glue.batch  # noqa: E402
import east_agent.waitk_agent  # noqa: E402

__all__ = [
    "AutoConfig",
    "AutoModelForCausalLM",
    "AutoTokenizer",
    "FORKSERVER_PID",
    "east_agent",
    "modeling_llama",
    "transformers",
]
