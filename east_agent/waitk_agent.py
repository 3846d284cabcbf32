"""The SimulEval agent of the wait-k baselines (`east_agent.waitk`).

    east-simuleval --agent east_agent/waitk_agent.py --waitk 3 --prompt offline \\
        --model-path DIR --src-lang de --tgt-lang en --source src.txt --target ref.txt \\
        --output out/

`--prompt offline` is the classic LLM wait-k for any chat LLM (offline translation prompt
over the source prefix); `--prompt east` drives an EAST checkpoint with the wait-k schedule
on its own interleaved stream (the EAST prompt's latency level from `--latency`).
"""

from __future__ import annotations

import argparse

from simuleval.utils import entrypoint

from east_agent.model import load_model, load_tokenizer
from east_agent.simuleval_adapter import (
    StreamingAgent,
    add_decoding_args,
    add_latency_arg,
    add_model_args,
    check_max_context,
    decoder_config,
    load_east,
)
from east_agent.streaming import StreamingDecoder
from east_agent.waitk import EastWaitkDecoder, OfflineWaitkDecoder, WaitkConfig, check_waitk

PROMPTS = ("offline", "east")


@entrypoint
class WaitkAgent(StreamingAgent):
    """Read k units, then one word per unit read; after the source ends, write the rest."""

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        add_model_args(parser)
        add_decoding_args(parser)
        add_latency_arg(parser)
        parser.add_argument("--waitk", type=int, required=True, help="units read before writing")
        parser.add_argument(
            "--prompt",
            default="offline",
            choices=PROMPTS,
            help="offline: any chat LLM, offline prompt; east: an EAST checkpoint's own stream",
        )

    @classmethod
    def load(cls, args: argparse.Namespace):
        check_waitk(args.waitk)
        if args.prompt == "east":
            return load_east(args)
        WaitkConfig(args.src_lang, args.tgt_lang, args.waitk)  # refuse bad flags before loading
        check_max_context(args)
        tokenizer = load_tokenizer(args.model_path, args.trust_remote_code)
        model = load_model(
            args.model_path,
            adapter_path=args.adapter_path,
            torch_dtype=args.torch_dtype,
            device=getattr(args, "device", "cpu"),
            trust_remote_code=args.trust_remote_code,
        )
        return model, tokenizer

    @classmethod
    def build_decoder(cls, model, tokenizer, args, streams: int = 1) -> StreamingDecoder:
        if args.prompt == "east":
            return EastWaitkDecoder(model, tokenizer, decoder_config(args), args.waitk, streams)
        config = WaitkConfig(
            args.src_lang,
            args.tgt_lang,
            args.waitk,
            args.max_new_tokens,
            args.max_context,
            args.kv_cache,
        )
        return OfflineWaitkDecoder(model, tokenizer, config, streams)
