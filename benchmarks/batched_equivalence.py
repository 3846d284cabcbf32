"""Are batched translations the sequential decoder's? (minutes, not CI)

    python benchmarks/batched_equivalence.py [--limit 1000] [--levels low high]
        [--num-beams 1 5] [--beam-stop reference] [--streams 64]
        [--device cpu] [--torch-dtype float32] [--output benchmarks/RESULTS.md]

CPU float32 by default; `benchmarks/gpu_batched.sh` runs it on a GPU in bfloat16.

For each latency level and beam count, the demo model translates the Multi30k test
sentences twice in one process: one sentence after another (`EastStreamDecoder.translate`),
and with `--streams` streams at once (`east_agent.decoding.batching`). A sentence is identical when
its chunk ids and delays are. Matrix products over another number of rows may round
differently, so a sentence may differ; for greedy decoding the script finds the first
decision where it does and prints that decision's top-2 margin in the sequential run (the
gap between the best and the second-best logit, suppressed ids left out): a near-tie is a
margin far below the logits' spread. BLEU of both runs is printed side by side (timings
are not: see `east-bench --streams` for speed).
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from pathlib import Path

import sacrebleu
import torch

import east_agent.decoding.streaming as streaming
from east_agent.bench.report import check_output_file, publish
from east_agent.common.arguments import (
    TORCH_DTYPES,
    add_old_spelling,
    checked_device,
    parse_once_each,
    positive_int,
)
from east_agent.common.entry import command_line
from east_agent.decoding.batching import Sentence, translate_batch
from east_agent.decoding.chunk_search import BEAM_STOP_RULES, REFERENCE
from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
from east_agent.decoding.prompt import LATENCY_LEVELS
from east_agent.evaluation.testsets import read_pairs
from east_agent.lm.checkpoint import load_east_checkpoint

REPOSITORY = Path(__file__).resolve().parent.parent
STOP = "stop"


class MarginRecorder:
    """Wraps `run_feeds`: the top-2 masked logits of every masked feed, in order."""

    def __init__(self) -> None:
        self.original = streaming.run_feeds
        self.margins: list[tuple[int, float]] = []  # (chosen id, top-1 minus top-2)

    def __call__(self, lm, feeds):
        results = self.original(lm, feeds)
        for feed, fed in zip(feeds, results):
            if feed.mask is not None:
                top = torch.topk(fed.logits[0].masked_fill(feed.mask, float("-inf")), 2)
                self.margins.append((int(top.indices[0]), float(top.values[0] - top.values[1])))
        return results


def chunk_caps(translation, max_new_tokens: int) -> list[int]:
    """The most tokens each chunk of a sentence could have (`EastStreamDecoder.write_tokens`
    at the units read since the write before)."""
    delays = translation.delays
    return [
        min(max_new_tokens, 2 * (delay - previous + 25))
        for previous, delay in zip([0, *delays], delays)
    ]


def outcomes(translation, max_new_tokens: int) -> list:
    """The outcome of each masked forward of a greedy sentence, in order: each read or
    write decision, each chunk token, and the stop of a chunk shorter than its cap."""
    max_tokens = chunk_caps(translation, max_new_tokens)
    symbols, chunk = [], 0
    for decision in translation.decisions:
        if decision != "forced":
            symbols.append("write" if decision == "write" else "read")
        if decision in ("write", "forced"):
            ids = translation.chunk_ids[chunk]
            symbols += ids
            if len(ids) < max_tokens[chunk]:
                symbols.append(STOP)
            chunk += 1
    return symbols


def first_difference(a: list, b: list) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def compare(model, tokenizer, units, references, level, beams, args) -> dict:
    config = DecoderConfig("German", "English", level, num_beams=beams, beam_stop=args.beam_stop)
    streams = args.streams
    sequential = EastStreamDecoder(model, tokenizer, config)
    started = time.perf_counter()
    expected = [sequential.translate(sentence) for sentence in units]
    sequential_seconds = time.perf_counter() - started
    decoder = EastStreamDecoder(model, tokenizer, config, streams=streams)
    started = time.perf_counter()
    jobs = [Sentence(index, sentence) for index, sentence in enumerate(units)]
    got = {}
    for outcome in translate_batch(decoder, jobs):
        if outcome.error is not None:  # before: an AttributeError on its translation, None
            raise outcome.error
        assert outcome.translation is not None  # an outcome holds one or the other
        got[outcome.key] = outcome.translation
    batched_seconds = time.perf_counter() - started
    different = [
        index
        for index, translation in enumerate(expected)
        if (translation.chunk_ids, translation.delays) != (got[index].chunk_ids, got[index].delays)
    ]
    margins = []
    if beams == 1:
        for index in different:
            margins.append((index, *first_margin(sequential, units[index], got[index])))
    bleu = [
        sacrebleu.corpus_bleu([t.text.strip() for t in ts], [references]).score
        for ts in (expected, [got[i] for i in range(len(units))])
    ]
    return {
        "level": level, "beams": beams, "identical": len(units) - len(different),
        "sentences": len(units), "bleu": bleu, "margins": margins,
        "seconds": (sequential_seconds, batched_seconds),
    }  # fmt: skip


def first_margin(decoder, units, batched) -> tuple[int, float, float]:
    """(forward index, top-2 margin there, median margin of the sentence) of the first
    decision where the batched translation left the sequential one."""
    recorder = MarginRecorder()
    streaming.run_feeds = recorder
    try:
        translation = decoder.translate(units)
    finally:
        streaming.run_feeds = recorder.original
    # each translation's caps its own: the batched one may have other chunks (before: the
    # sequential one's caps for both, an IndexError where the batched one had more chunks)
    mine = outcomes(translation, decoder.config.max_new_tokens)
    theirs = outcomes(batched, decoder.config.max_new_tokens)
    at = first_difference(mine, theirs)
    all_margins = sorted(margin for _, margin in recorder.margins)
    margin = recorder.margins[at][1] if at < len(recorder.margins) else float("nan")
    return at, margin, all_margins[len(all_margins) // 2]


def report(results: list[dict], header: str) -> str:
    lines = [
        header, "",
        "| level | beams | identical | BLEU sequential | BLEU batched |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for r in results:
        lines.append(
            f"| {r['level']} | {r['beams']} | {r['identical']}/{r['sentences']} "
            f"({100 * r['identical'] / r['sentences']:.1f}%) | {r['bleu'][0]:.2f} "
            f"| {r['bleu'][1]:.2f} |"
        )
    for r in results:
        for index, at, margin, median in r["margins"]:
            there = "no margin recorded" if math.isnan(margin) else f"top-2 margin {margin:.4f}"
            lines.append(
                f"- {r['level']}, greedy, sentence {index}: first difference at masked forward "
                f"{at}, {there} there (the sentence's median margin {median:.2f})"
            )
    return "\n".join(lines) + "\n"


@command_line("batched_equivalence")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=str(REPOSITORY / "models" / "east-demo"))
    parser.add_argument("--limit", type=positive_int, default=1000)
    parser.add_argument("--levels", nargs="+", choices=LATENCY_LEVELS, default=["low", "high"])
    parser.add_argument("--num-beams", type=positive_int, nargs="+", default=[1, 5])
    add_old_spelling(parser, "--beams", "num_beams", type=positive_int, nargs="+")
    parser.add_argument(
        "--beam-stop",
        choices=BEAM_STOP_RULES,
        default=REFERENCE,
        help="the beam searches' stopping rule (the agents' flag of the same name)",
    )
    parser.add_argument("--streams", type=positive_int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--torch-dtype", default="float32", choices=TORCH_DTYPES[1:])
    add_old_spelling(parser, "--dtype", "torch_dtype", choices=TORCH_DTYPES[1:])
    parser.add_argument("--output", help="append the table to this Markdown file")
    args = parse_once_each(parser, argv)
    checked_device(args.device, "--device")  # before: torch's traceback once the model loaded
    if args.output:  # before: found after the whole comparison
        check_output_file("--output", args.output)
    model, tokenizer = load_east_checkpoint(
        args.model_path, torch_dtype=args.torch_dtype, device=args.device
    )
    pairs, _, _ = read_pairs("multi30k.de-en")
    pairs = pairs[: args.limit]
    units = [source.split() for source, _ in pairs]
    references = [reference for _, reference in pairs]
    results = []
    for beams in args.num_beams:
        for level in args.levels:
            results.append(compare(model, tokenizer, units, references, level, beams, args))
            print(results[-1], file=sys.stderr, flush=True)
    header = (
        f"### {datetime.date.today()}: batched ({args.streams} streams) against sequential, "
        f"{args.model_path}, {args.torch_dtype} on {args.device}, {len(units)} Multi30k test "
        f"sentences, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    if any(beams > 1 for beams in args.num_beams):
        header += f", beam stop `{args.beam_stop}`"
    publish(report(results, header), args.output)


if __name__ == "__main__":
    main()
