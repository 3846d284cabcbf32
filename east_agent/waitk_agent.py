"""The SimulEval agent of the wait-k baselines (`east_agent.decoding.waitk`).

    east-simuleval --agent east_agent/waitk_agent.py --waitk 3 --prompt offline \\
        --model-path DIR --src-lang de --tgt-lang en --source src.txt --target ref.txt \\
        --output out/

`--prompt offline` is the classic LLM wait-k for any chat LLM (offline translation prompt
over the source prefix); `--prompt east` drives an EAST checkpoint with the wait-k schedule
on its own interleaved stream (the EAST prompt's latency level from `--latency`).
`--long-form` reads a talk per line with a bounded cache, the schedule starting again in
each segment (`east_agent.decoding.long_form`).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from simuleval.utils import entrypoint

from east_agent.common.arguments import positive_int, torch_dtype_of
from east_agent.decoding.long_form import long_form_settings
from east_agent.decoding.streaming import StreamingDecoder
from east_agent.decoding.waitk import PROMPTS, EastWaitkDecoder, OfflineWaitkDecoder, WaitkConfig
from east_agent.lm.checkpoint import load_model
from east_agent.simuleval_glue.adapter import (
    StreamingAgent,
    add_decoding_args,
    add_latency_arg,
    add_long_form_args,
    add_model_args,
    check_max_context,
    checkpoint_tokenizer,
    load_east,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@entrypoint
class WaitkAgent(StreamingAgent[WaitkConfig]):
    """Read k units, then one word per unit read; after the source ends, write the rest."""

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        add_model_args(parser)
        add_decoding_args(parser)
        add_latency_arg(parser, note=", the only one the offline prompt takes: it asks for none")
        parser.add_argument(
            "--waitk", type=positive_int, required=True, help="units read before writing"
        )
        parser.add_argument(
            "--prompt",
            default="offline",
            choices=PROMPTS,
            help="offline (the default): any chat LLM, offline prompt; east: an EAST "
            "checkpoint's own stream",
        )
        add_long_form_args(parser)

    @classmethod
    def decoding_config(cls, args: argparse.Namespace) -> WaitkConfig:
        return WaitkConfig(
            args.src_lang,
            args.tgt_lang,
            args.waitk,
            args.max_new_tokens,
            args.max_context,
            args.kv_cache,
            prompt=args.prompt,
            latency=args.latency,
            **long_form_settings(args),
        )

    @classmethod
    def load(
        cls, args: argparse.Namespace, config: WaitkConfig
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        if config.prompt == "east":
            return load_east(args, config.max_context)
        check_max_context(args, config.max_context)
        tokenizer = checkpoint_tokenizer(args)()  # as the checks loaded it
        model = load_model(
            args.model_path,
            adapter_path=args.adapter_path,
            torch_dtype=torch_dtype_of(args),
            device=getattr(args, "device", "cpu"),
            trust_remote_code=args.trust_remote_code,
        )
        return model, tokenizer

    @classmethod
    def build_decoder(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: WaitkConfig,
        streams: int = 1,
    ) -> StreamingDecoder:
        if config.prompt == "east":
            return EastWaitkDecoder(model, tokenizer, config.east_config(), config.waitk, streams)
        return OfflineWaitkDecoder(model, tokenizer, config, streams)

    @classmethod
    def fixed_prompt(
        cls, tokenizer: PreTrainedTokenizerBase, config: WaitkConfig
    ) -> tuple[str, ...]:
        if config.prompt == "east":
            return EastWaitkDecoder.fixed_prompt(tokenizer, config.east_config())
        return OfflineWaitkDecoder.fixed_prompt(tokenizer, config)
