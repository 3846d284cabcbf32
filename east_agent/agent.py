"""The SimulEval agent of the EAST streaming decoder.

    east-simuleval --agent east_agent/agent.py --model-path DIR --src-lang de \\
        --tgt-lang en --latency low --source src.txt --target ref.txt --output out/

(`simuleval` works the same with `--latency-level low`; see `east_agent.simuleval_glue.cli`.)
All decoding lives in `east_agent.decoding.east`, which does not import SimulEval.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from simuleval.utils import entrypoint

from east_agent.common.arguments import positive_int
from east_agent.decoding.chunk_search import BEAM_STOP_RULES, REFERENCE
from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
from east_agent.decoding.long_form import long_form_settings
from east_agent.simuleval_glue.adapter import (
    StreamingAgent,
    add_decoding_args,
    add_latency_arg,
    add_long_form_args,
    add_model_args,
    check_beams_in_vocabulary,
    load_east,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@entrypoint
class EastAgent(StreamingAgent[DecoderConfig]):
    """READ/WRITE decided by the EAST model itself, one KV cache per sentence."""

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        add_model_args(parser)
        add_decoding_args(parser)
        add_latency_arg(parser)
        parser.add_argument(
            "--num-beams", type=positive_int, default=1, help="beams per WRITE chunk (default 1)"
        )
        parser.add_argument(
            "--beam-stop",
            choices=BEAM_STOP_RULES,
            default=REFERENCE,
            help="when a beam search stops: reference (transformers 4.44.2, the paper's "
            "code) or transformers (5.x: the best running beam against the worst finished)",
        )
        parser.add_argument(
            "--document-level",
            action="store_true",
            help="also write at a sentence end once 20 units were read since the last write",
        )
        add_long_form_args(parser)

    @classmethod
    def decoding_config(cls, args: argparse.Namespace) -> DecoderConfig:
        return DecoderConfig(
            src_lang=args.src_lang,
            tgt_lang=args.tgt_lang,
            latency=args.latency,
            num_beams=args.num_beams,
            max_new_tokens=args.max_new_tokens,
            document_level=args.document_level,
            max_context=args.max_context,
            kv_cache=args.kv_cache,
            beam_stop=args.beam_stop,
            **long_form_settings(args),
        )

    @classmethod
    def check_with_tokenizer(cls, args: argparse.Namespace, config: DecoderConfig) -> None:
        super().check_with_tokenizer(args, config)
        check_beams_in_vocabulary(args, config.num_beams)

    @classmethod
    def load(
        cls, args: argparse.Namespace, config: DecoderConfig
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        return load_east(args, config.max_context)

    @classmethod
    def build_decoder(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: DecoderConfig,
        streams: int = 1,
    ) -> EastStreamDecoder:
        return EastStreamDecoder(model, tokenizer, config, streams)

    @classmethod
    def fixed_prompt(
        cls, tokenizer: PreTrainedTokenizerBase, config: DecoderConfig
    ) -> tuple[str, ...]:
        return EastStreamDecoder.fixed_prompt(tokenizer, config)
