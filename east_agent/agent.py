"""The SimulEval agent of the EAST streaming decoder.

    east-simuleval --agent east_agent/agent.py --model-path DIR --src-lang de \\
        --tgt-lang en --latency low --source src.txt --target ref.txt --output out/

(`simuleval` works the same with `--latency-level low`; see `east_agent.simuleval_cli`.)
All decoding lives in `east_agent.decoder`, which does not import SimulEval.
"""

from __future__ import annotations

import argparse

from simuleval.utils import entrypoint

from east_agent.decoder import EastStreamDecoder
from east_agent.simuleval_adapter import (
    StreamingAgent,
    add_decoding_args,
    add_latency_arg,
    add_model_args,
    decoder_config,
    load_east,
)


@entrypoint
class EastAgent(StreamingAgent):
    """READ/WRITE decided by the EAST model itself, one KV cache per sentence."""

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        add_model_args(parser)
        add_decoding_args(parser)
        add_latency_arg(parser)
        parser.add_argument("--num-beams", type=int, default=1, help="beams per WRITE chunk")
        parser.add_argument(
            "--document-level",
            action="store_true",
            help="also write at a sentence end once 20 units were read since the last write",
        )

    @classmethod
    def load(cls, args: argparse.Namespace):
        return load_east(args)

    @classmethod
    def build_decoder(cls, model, tokenizer, args, streams: int = 1) -> EastStreamDecoder:
        return EastStreamDecoder(model, tokenizer, decoder_config(args), streams)
