"""Does a long-form stream keep time and memory per word flat? (CPU; minutes, not CI)

    python benchmarks/long_form.py [--words 20000] [--block 2000] [--output benchmarks/RESULTS.md]

The demo model reads one unsegmented stream of Multi30k test sentences (validation sentences
after them, and both again when more words are asked for), word by word, in long-form mode
(`east_agent.decoding.long_form`). Every `--block` words the script prints the seconds per
word of that block, the process's peak resident memory so far, and the longest cache row
seen: flat seconds per word and a peak that stops growing after the first block show that
the talk's length costs time and memory linearly, not more.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import resource
import time

import torch

from east_agent.bench.report import check_output_file, publish
from east_agent.common.arguments import non_negative_int, parse_once_each, positive_int
from east_agent.common.entry import command_line
from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
from east_agent.decoding.prompt import LATENCY_LEVELS
from east_agent.evaluation.demo import DEFAULT_MODEL
from east_agent.evaluation.testsets import read_pairs
from east_agent.lm.checkpoint import load_east_checkpoint


def stream_of_words(count: int) -> list[str]:
    """Multi30k test then val source words; past their 22,473 words, again from the start."""
    words: list[str] = []
    for name in ("multi30k.de-en", "multi30k-val.de-en"):
        pairs, _, _ = read_pairs(name)
        words += [word for source, _ in pairs for word in source.split()]
    return [words[position % len(words)] for position in range(count)]


class LongestRow:
    """Wraps the backend: the longest row any forward has left."""

    def __init__(self, inner) -> None:
        self.inner, self.longest = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def forward(self, rows, tokens):
        logits = self.inner.forward(rows, tokens)
        self.longest = max(self.longest, *(self.inner.length(row) for row in rows))
        return logits


def peak_megabytes() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args) -> str:
    model, tokenizer = load_east_checkpoint(args.model_path, torch_dtype="float32")
    config = DecoderConfig(
        "German", "English", args.latency, long_form=True, context_words=args.context_words
    )
    decoder = EastStreamDecoder(model, tokenizer, config)
    probe = LongestRow(decoder.lm)
    decoder.wrap_lm(lambda lm: probe)
    words = stream_of_words(args.words)
    rows = []
    decoder.reset()
    with torch.inference_mode():
        for start in range(0, len(words), args.block):
            block = words[start : start + args.block]
            began = time.perf_counter()
            for offset, word in enumerate(block):
                decoder.push_unit(word, is_last=start + offset == len(words) - 1)
            seconds = time.perf_counter() - began
            rows.append((start + len(block), seconds / len(block), peak_megabytes(), probe.longest))
            print(rows[-1], flush=True)
    counters = decoder.counters
    assert decoder.segments is not None  # long_form=True: the decoder keeps segments
    budget = decoder.segments.budget
    lines = [
        f"### {datetime.date.today()}: long-form stream, {args.words} words "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "",
        f"`python benchmarks/long_form.py --words {args.words} --block {args.block}`: the demo "
        f"model, float32, `{args.latency}`, cache budget {budget} tokens, "
        f"{args.context_words} words of context; {counters.forward_passes} forwards, "
        f"{counters.tokens_reencoded} context tokens fed again.",
        "",
        "| words read | ms per word (block) | peak RSS MB | longest cache row |",
        "|---|---|---|---|",
        *(f"| {w} | {1000 * s:.2f} | {m:.0f} | {r} |" for w, s, m, r in rows),
        "",
    ]
    return "\n".join(lines)


@command_line("long_form")
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=str(DEFAULT_MODEL))
    parser.add_argument("--words", type=positive_int, default=20000)
    parser.add_argument("--block", type=positive_int, default=2000)
    parser.add_argument("--latency", default="low", choices=LATENCY_LEVELS)
    parser.add_argument("--context-words", type=non_negative_int, default=20)
    parser.add_argument("--output", help="append the table to this Markdown file")
    args = parse_once_each(parser, None)
    if args.output:  # before: found after the whole benchmark
        check_output_file("--output", args.output)
    publish(run(args), args.output)


if __name__ == "__main__":
    main()
