"""A chat LLM from scratch, for corpora where no pretrained model can be downloaded.

    python -m training.base_model --corpus train.de.gz train.en.gz --output outputs/base \\
        --vocab-size 8000 --hidden-size 256 --layers 6 --heads 4 --intermediate-size 768

Trains a byte-level BPE tokenizer on the corpus (the Llama-3 pre-tokenizer, so no text is
ever out of vocabulary) with the Llama-3 chat format's special tokens and template, and
saves it with a randomly initialised `LlamaForCausalLM`: a normal transformers
checkpoint that `training.sft` fine-tunes exactly like Llama-3-8B-Instruct (Stage I adds
the EAST tokens). The EAST and offline prompts are part of the tokenizer's training text,
so they cost few tokens.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from east_agent.common.arguments import parse_once_each, positive_int
from east_agent.common.atomic import atomic_path, check_folder_path, check_replaceable
from east_agent.common.entry import command_line
from east_agent.common.text_lines import iter_lines
from east_agent.decoding.prompt import (
    BEGIN_OF_TEXT,
    END_OF_TURN,
    LANGUAGE_NAMES,
    LATENCY_LEVELS,
    LLAMA3_CHAT_TEMPLATE,
    LLAMA3_SPECIAL_TOKENS,
    OFFLINE_INSTRUCTION,
    SIMT_INSTRUCTION,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

COMMAND = "python -m training.base_model"

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

MODEL_MARKS = ("config.json", "tokenizer_config.json")  # what every output of this holds


def prompt_texts() -> Iterator[str]:
    """Every instruction the model will see, so that they tokenize compactly."""
    for source in sorted(LANGUAGE_NAMES):
        for target in sorted(LANGUAGE_NAMES):
            for latency in LATENCY_LEVELS:
                yield SIMT_INSTRUCTION.format(src_lang=source, tgt_lang=target, latency=latency)
            yield OFFLINE_INSTRUCTION.format(src_lang=source, tgt_lang=target)
    yield "user"
    yield "assistant"


def corpus_lines(paths: Sequence[str | Path]) -> Iterator[str]:
    for path in paths:
        yield from iter_lines(path)  # a bad byte is named with its file and line
    for _ in range(50):  # weight the prompts like frequent sentences
        yield from prompt_texts()


def train_tokenizer(paths: Sequence[str | Path], vocab_size: int) -> PreTrainedTokenizerFast:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(LLAMA3_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    bpe.train_from_iterator(corpus_lines(paths), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=BEGIN_OF_TEXT, eos_token=END_OF_TURN
    )
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    return tokenizer


def build_base_model(
    corpus: Sequence[str | Path],
    output: str | Path,
    vocab_size: int = 8000,
    hidden_size: int = 256,
    layers: int = 6,
    heads: int = 4,
    intermediate_size: int = 768,
    max_positions: int = 512,
    seed: int = 0,
) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    missing = [str(path) for path in corpus if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"no such corpus file: {', '.join(missing)}")
    check_folder_path(Path(output), "--output")
    check_replaceable(Path(output), "model folder", MODEL_MARKS)
    problem = size_problem(hidden_size, heads)
    if problem:
        raise ValueError(problem)
    tokenizer = train_tokenizer(corpus, vocab_size)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    output = Path(output)
    with atomic_path(output) as temporary:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
    return output


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """The model's size flags (here and in training.demo): whole numbers of at least 1."""
    parser.add_argument("--vocab-size", type=positive_int, default=8000)
    parser.add_argument("--hidden-size", type=positive_int, default=256)
    parser.add_argument("--layers", type=positive_int, default=6)
    parser.add_argument("--heads", type=positive_int, default=4)
    parser.add_argument("--intermediate-size", type=positive_int, default=768)


def size_problem(hidden_size: int, heads: int) -> str | None:
    """What makes heads of `hidden_size / heads` unusable, or None: they must split the
    hidden size, into an even size (rotary position embeddings turn pairs of dimensions;
    before: an odd one failed once the tokenizer was trained, the demo's data built)."""
    if hidden_size % heads:
        return f"--hidden-size {hidden_size} is not a multiple of --heads {heads}"
    if hidden_size // heads % 2:
        return (
            f"--hidden-size {hidden_size} / --heads {heads} makes heads of size "
            f"{hidden_size // heads}, odd: rotary position embeddings need an even size"
        )
    return None


def check_sizes(args: argparse.Namespace) -> None:
    """Refuse, before any work, heads that cannot split the hidden size (`size_problem`)."""
    problem = size_problem(args.hidden_size, args.heads)
    if problem:
        raise ValueError(problem)


@command_line(COMMAND)
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=COMMAND, description="a tokenizer and a random chat LLM")
    parser.add_argument("--corpus", nargs="+", required=True, help="text files (.gz ok)")
    parser.add_argument("--output", required=True)
    add_size_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    args = parse_once_each(parser, argv)
    check_sizes(args)
    path = build_base_model(
        args.corpus,
        args.output,
        args.vocab_size,
        args.hidden_size,
        args.layers,
        args.heads,
        args.intermediate_size,
        seed=args.seed,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
