"""The SimulEval adapter of the EAST streaming decoder.

    east-simuleval --agent east_agent/agent.py --model-path DIR --src-lang de \\
        --tgt-lang en --latency low --source src.txt --target ref.txt --output out/

(`simuleval` works the same with `--latency-level low`; see `east_agent.simuleval_cli`.)

SimulEval sends one source unit per step; the agent hands it to `EastStreamDecoder` and
returns every word the decoder wrote at that step in one `WriteAction`. All the decoding
logic lives in `east_agent.decoder`, which does not import SimulEval.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Couldn't find ffmpeg or avconv", category=RuntimeWarning)

from simuleval.agents import ReadAction, TextToTextAgent, WriteAction  # noqa: E402
from simuleval.utils import entrypoint  # noqa: E402

from east_agent.decoder import DecoderConfig, EastStreamDecoder  # noqa: E402
from east_agent.model import TORCH_DTYPES, load_east_checkpoint  # noqa: E402
from east_agent.prompt import LATENCY_LEVELS  # noqa: E402

logger = logging.getLogger("east_agent")


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Flags that load a checkpoint (shared by every agent of this package)."""
    parser.add_argument("--model-path", required=True, help="checkpoint directory or hub id")
    parser.add_argument("--adapter-path", default=None, help="LoRA adapter to merge (peft)")
    parser.add_argument("--torch-dtype", default="auto", choices=TORCH_DTYPES)
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a checkpoint's own modelling code (off by default)",
    )


def add_decoding_args(parser: argparse.ArgumentParser) -> None:
    """Flags of the translation direction and the decoding search."""
    parser.add_argument("--src-lang", required=True, help="source language: ISO code or name")
    parser.add_argument("--tgt-lang", required=True, help="target language: ISO code or name")
    parser.add_argument("--num-beams", type=int, default=1, help="beams per WRITE chunk")
    parser.add_argument(
        "--max-new-tokens", type=int, default=128, help="cap on the tokens of one chunk"
    )
    parser.add_argument(
        "--max-context", type=int, default=None, help="token limit (default: the model's)"
    )


def check_source_file(source: str | None) -> None:
    """Refuse a source file with empty lines before any model is loaded."""
    if not source or not Path(source).is_file():
        return
    with open(source, encoding="utf-8") as lines:
        empty = [number for number, line in enumerate(lines, 1) if not line.strip()]
    if empty:
        shown = ", ".join(str(number) for number in empty[:10])
        more = f" and {len(empty) - 10} more" if len(empty) > 10 else ""
        raise ValueError(
            f"{source}: line {shown}{more}: empty source sentence; remove it "
            "(and the matching reference line) before evaluating"
        )


@entrypoint
class EastAgent(TextToTextAgent):
    """READ/WRITE decided by the EAST model itself, one KV cache per sentence."""

    def __init__(self, args: argparse.Namespace) -> None:
        check_source_file(getattr(args, "source", None))
        self.decoder_config = DecoderConfig(
            src_lang=args.src_lang,
            tgt_lang=args.tgt_lang,
            latency=args.latency,
            num_beams=args.num_beams,
            max_new_tokens=args.max_new_tokens,
            document_level=args.document_level,
            max_context=args.max_context,
        )
        self.model, self.tokenizer = load_east_checkpoint(
            args.model_path,
            adapter_path=args.adapter_path,
            torch_dtype=args.torch_dtype,
            device=getattr(args, "device", "cpu"),
            trust_remote_code=args.trust_remote_code,
        )
        self.decoder = EastStreamDecoder(self.model, self.tokenizer, self.decoder_config)
        self.units_pushed = 0
        super().__init__(args)  # calls reset()

    @staticmethod
    def add_args(parser: argparse.ArgumentParser) -> None:
        add_model_args(parser)
        add_decoding_args(parser)
        parser.add_argument(
            "--latency",
            "--latency-level",
            dest="latency",
            default="low",
            choices=LATENCY_LEVELS,
            help="the latency level asked for in the prompt (with the stock `simuleval` "
            "command write --latency-level: it reads --latency as --latency-metrics)",
        )
        parser.add_argument(
            "--document-level",
            action="store_true",
            help="also write at a sentence end once 20 units were read since the last write",
        )

    def reset(self) -> None:
        super().reset()
        self.decoder.reset()
        self.units_pushed = 0

    def to(self, device: str, *args, fp16: bool = False, **kwargs) -> None:
        """SimulEval's --device / --fp16: the model was loaded on `device` already."""
        import torch

        moved = str(self.decoder.lm.device) != str(torch.device(device))
        if fp16 and self.model.dtype != torch.float16:
            self.model.half()
            moved = True
        if moved:
            self.model.to(device)
            self.decoder = EastStreamDecoder(self.model, self.tokenizer, self.decoder_config)

    def policy(self):
        new_units = self.states.source[self.units_pushed :]
        self.units_pushed = len(self.states.source)
        source_finished = self.states.source_finished
        written: list[str] = []
        finished = False
        for position, unit in enumerate(new_units):
            is_last = source_finished and position == len(new_units) - 1
            step = self.decoder.push_unit(unit, is_last=is_last)
            if step.chunk:
                written.append(step.chunk)
            finished = step.finished
        if source_finished and not finished:
            if self.units_pushed == 0:
                logger.warning("empty source sentence: writing an empty translation")
            step = self.decoder.finish()
            if step.chunk:
                written.append(step.chunk)
            finished = True
        if written or finished:
            return WriteAction("".join(written), finished=finished)
        return ReadAction()
