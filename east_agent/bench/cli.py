"""`east-bench`'s command line: its flags, each checked before any model loads, the model
(a checkpoint or random weights) and the sentences, then the single-stream tables or the
many-streams table."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from east_agent.bench.methods import decoder_runs
from east_agent.bench.models import RANDOM_MODELS, llama3_east_tokenizer, random_model
from east_agent.bench.report import check_output_file, compile_note, publish, report, run_header
from east_agent.bench.schedules import (
    Schedule,
    check_schedule_fits,
    distinct_sentences,
    load_schedule,
    read_schedule,
    schedule_text,
)
from east_agent.bench.step_costs import copy_bandwidth, step_costs, weight_bytes
from east_agent.bench.streams import stream_benchmark, streams_report
from east_agent.bench.timing import progress
from east_agent.common.arguments import (
    TORCH_DTYPES,
    DefaultsHelpFormatter,
    add_old_spelling,
    checked_device,
    file_path,
    parse_once_each,
    positive_int,
)
from east_agent.common.atomic import (
    is_special_file,
    write_atomically,
)
from east_agent.common.entry import command_line
from east_agent.decoding.prompt import (
    LATENCY_LEVELS,
    is_unspaced,
)
from east_agent.decoding.units import source_units
from east_agent.lm import KV_CACHES

if TYPE_CHECKING:
    from transformers import (
        PreTrainedModel,
        PreTrainedTokenizerBase,
    )


def read_testset(testset: str) -> tuple[list[tuple[str, str]], str, str]:
    """(source, reference) pairs and languages of `--testset`; an unknown name says so."""
    from east_agent.evaluation.testsets import read_pairs

    try:
        return read_pairs(testset)
    except ValueError as error:
        raise ValueError(f"--testset: {error}") from None


def source_sentences(
    pairs: list[tuple[str, str]],
    count: int,
    src_lang: str,
    tokenizer: PreTrainedTokenizerBase | None,
) -> list:
    """The source units of the first `count` pairs (those with any)."""
    sentences = [source_units(source, src_lang, tokenizer) for source, _ in pairs[:count]]
    return [units for units in sentences if units]


def bench_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="east-bench",  # under `python -m` too (before: "usage: bench.py")
        description="benchmark the streaming decoder",
        formatter_class=DefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-path", help="an EAST checkpoint")
    source.add_argument("--random-model", choices=sorted(RANDOM_MODELS), help="random weights")
    parser.add_argument(
        "--tokenizer", help="with --random-model: a Llama-3 tokenizer.json (or its folder)"
    )
    parser.add_argument(
        "--seed", type=int, help="with --random-model: the weights' seed (default: 0)"
    )
    parser.add_argument("--testset", default="multi30k.de-en", help="east-prepare's names")
    parser.add_argument(
        "--limit", type=positive_int, default=100, help="the test set's first N sentences"
    )
    add_old_spelling(parser, "--sentences", "limit", type=positive_int)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument(
        "--torch-dtype", default="float32", choices=TORCH_DTYPES[1:], help="the weights' dtype"
    )
    add_old_spelling(parser, "--dtype", "torch_dtype", choices=TORCH_DTYPES[1:])
    parser.add_argument("--latency", default="low", choices=LATENCY_LEVELS, help="the level")
    parser.add_argument(
        "--num-beams", type=positive_int, default=5, help="also run (a) with this many beams"
    )
    add_old_spelling(parser, "--beams", "num_beams", type=positive_int)
    parser.add_argument(
        "--kv-caches",
        nargs="+",
        choices=KV_CACHES,
        help="(a) on each backend (default: static dynamic; --streams runs the static one)",
    )
    parser.add_argument(
        "--schedule",
        type=schedule_text,
        help="waitk:K, or a JSON file from --save-schedule (default: the model's own decisions)",
    )
    parser.add_argument(
        "--save-schedule", type=file_path, help="write the schedule (a) followed to this file"
    )
    parser.add_argument(
        "--copy-megabytes",
        type=positive_int,
        default=256,
        help="megabytes copied on the device to measure the weight-bandwidth floor",
    )
    parser.add_argument("--output", type=file_path, help="append the tables to this Markdown file")
    parser.add_argument(
        "--streams",
        type=positive_int,
        nargs="+",
        help="instead: many streams at once (continuous batching) at each of these counts, "
        "against the sequential decoder in the same run",
    )
    return parser


def load_bench_model(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """(model, tokenizer, name) of `--model-path` or `--random-model`."""
    if args.model_path:
        from east_agent.lm.checkpoint import load_east_checkpoint

        model, tokenizer = load_east_checkpoint(
            args.model_path, torch_dtype=args.torch_dtype, device=args.device
        )
        return model, tokenizer, args.model_path
    if not args.schedule or not args.tokenizer:
        parser.error(
            "a random model needs --schedule (waitk:K or a recorded file) and "
            "--tokenizer (a Llama-3 tokenizer.json, or a folder holding one)"
        )
    tokenizer = llama3_east_tokenizer(args.tokenizer)
    dtype = getattr(torch, args.torch_dtype)
    seed = args.seed or 0
    model = random_model(args.random_model, tokenizer, dtype, args.device, seed)
    return model, tokenizer, f"random {args.random_model}, seed {seed}"


def check_random_model_flags(args: argparse.Namespace) -> None:
    """--seed and --tokenizer are the random model's: refused with --model-path, whose
    checkpoint has its own weights and tokenizer (before: silently ignored)."""
    if args.random_model:
        return
    for flag, value in (("--seed", args.seed), ("--tokenizer", args.tokenizer)):
        if value is not None:
            raise ValueError(f"{flag}: only with --random-model (--model-path has its own)")


def check_streams_flags(args: argparse.Namespace) -> None:
    """--kv-caches is the single-stream tables': the streams benchmark batches rows of the
    static cache (before: silently ignored); resolved to its default otherwise. A count or
    backend given twice is refused."""
    if args.streams and args.kv_caches:
        raise ValueError("--kv-caches: not with --streams, which runs the static KV cache")
    for flag, values in (("--streams", args.streams), ("--kv-caches", args.kv_caches)):
        twice = sorted({value for value in values or [] if values.count(value) > 1}, key=str)
        if twice:  # before: run and tabled twice
            raise ValueError(f"{flag}: {', '.join(map(str, twice))} given twice; give each once")
    args.kv_caches = args.kv_caches or ["static", "dynamic"]


def sentences_decoded(
    args: argparse.Namespace, loaded: int, schedule: int | Schedule | None
) -> int:
    """How many sentences `load_schedule` gives of `loaded` read from the test set (at most
    that many, before a tokenizer cuts the units of an unspaced source): a recorded
    schedule takes its sentences again in turn up to --limit."""
    return args.limit if isinstance(schedule, list) else loaded


def check_stream_counts(args: argparse.Namespace, sentences: int) -> None:
    """Each --streams count has a sentence for every stream: above the `sentences` the
    benchmark decodes, its row would be labelled with streams that never ran and the KV
    memory divided among them (before: checked against --limit, not the sentences the
    test set has)."""
    over = [count for count in args.streams or [] if count > sentences]
    if not over:
        return
    counts = " ".join(map(str, over))
    if sentences == args.limit:
        raise ValueError(
            f"--streams {counts}: more streams than the {sentences} sentences (--limit) "
            "could ever keep busy"
        )
    raise ValueError(
        f"--streams {counts}: more streams than the {sentences} sentences to decode could "
        f"ever keep busy (--limit {args.limit}, of which --testset {args.testset} "
        f"gives {sentences})"
    )


def check_num_beams(
    args: argparse.Namespace,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    scripted: bool,
) -> None:
    """`--num-beams` within the vocabulary, once the model is known (a chunk `scripted` by
    a schedule has no stop id; the model's own chunks end at its stop ids)."""
    from east_agent.decoding.chunk_search import check_beams_fit

    stops = 0
    if not scripted and args.num_beams > 1:
        from east_agent.lm.checkpoint import east_token_ids

        stops = len(east_token_ids(tokenizer, model.generation_config.eos_token_id).write_stops)
    check_beams_fit(args.num_beams, stops, model.get_output_embeddings().weight.shape[0])


def check_save_schedule(args: argparse.Namespace) -> None:
    """--save-schedule records the decisions a real model makes on its own, in the
    single-stream tables; refused where there are none to record (before: ignored)."""
    if not args.save_schedule:
        return
    if args.random_model:
        raise ValueError("--save-schedule: not with --random-model, which follows --schedule")
    if args.schedule:
        raise ValueError(f"--save-schedule: not with --schedule, whose {args.schedule} is followed")
    if args.streams:
        raise ValueError("--save-schedule: not with --streams, which records no schedule")


def check_output_files(args: argparse.Namespace) -> None:
    """`--output` and `--save-schedule` checked before any model loads (their folders made):
    a path that names a folder, or whose folder cannot be made or take a new file, is
    refused, and so is an `--output` the report cannot be appended to (not UTF-8 text, or
    not open to writing)."""
    named = [("--output", args.output), ("--save-schedule", args.save_schedule)]
    if args.schedule and not args.schedule.startswith("waitk:"):
        named.append(("--schedule", args.schedule))
    paths = [(flag, Path(value).resolve()) for flag, value in named if value]
    for index, (flag, path) in enumerate(paths):  # before: tables appended to a schedule
        for other, other_path in paths[index + 1 :]:
            if path == other_path:
                raise ValueError(f"{flag} and {other} name one file, {path}: name two")
    for flag, value in named[:2]:
        if value:
            check_output_file(flag, value)


@command_line("east-bench")
def main(argv: list[str] | None = None) -> None:
    parser = bench_parser()
    args = parse_once_each(parser, argv)
    started = time.perf_counter()
    device = checked_device(args.device, "--device")
    check_random_model_flags(args)
    check_streams_flags(args)
    # Test set, schedule and output files are checked before the model loads (minutes for 8B).
    pairs, src_lang, tgt_lang = read_testset(args.testset)
    schedule_setting = read_schedule(args.schedule, args.testset, args.latency)
    loaded = len(pairs[: args.limit])  # at most; those without source text are left out
    if not is_unspaced(src_lang):  # its units need no tokenizer
        early = source_sentences(pairs, args.limit, src_lang, None)
        check_schedule_fits(args.schedule, schedule_setting, early)
        loaded = len(early)
    if loaded:  # none is refused as such once the units are known
        check_stream_counts(args, sentences_decoded(args, loaded, schedule_setting))
    check_save_schedule(args)
    check_output_files(args)  # makes their folders: after every refusal
    model, tokenizer, model_name = load_bench_model(args, parser)
    # a schedule, given or recorded by the first run of (a), scripts the single-stream
    # tables' beam search; the streams benchmark's follows the model without --schedule
    scripted = schedule_setting is not None or not args.streams
    check_num_beams(args, model, tokenizer, scripted)
    sentences = source_sentences(pairs, args.limit, src_lang, tokenizer)
    if not sentences:
        raise ValueError(f"--testset {args.testset}: no sentence with any source text")
    check_schedule_fits(args.schedule, schedule_setting, sentences)
    distinct = distinct_sentences(len(sentences), schedule_setting)
    sentences, schedule = load_schedule(args, sentences, schedule_setting)
    check_stream_counts(args, len(sentences))  # the units an unspaced source has are known now
    progress(f"{model_name} ready, {len(sentences)} sentences", started)
    if args.streams:
        header = run_header(args, model, model_name, len(sentences), device, "", distinct)
        # the rows so far beside the report (none beside a device: /dev/null.partial)
        keeps_rows = args.output and not is_special_file(Path(args.output))
        partial = Path(f"{args.output}.partial") if keeps_rows else None

        earlier = bool(partial and partial.exists())  # a run's cut short before this one
        written: list[int] = []

        def finished_row(results: list) -> None:
            """The table so far, beside the output: a run cut short keeps its rows."""
            if not partial:
                return
            if earlier and not written:  # before: replaced without a word
                print(f"note: {partial}: an earlier run's rows replaced", file=sys.stderr)
            write_atomically(partial, streams_report(results, header))
            written.append(len(results))

        try:
            languages = (src_lang, tgt_lang)
            results = stream_benchmark(
                args, model, tokenizer, sentences, schedule, languages, started, finished_row
            )
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the rows this run kept are named
            if written:
                print(f"east-bench: the rows finished are in {partial}", file=sys.stderr)
            raise
        publish(streams_report(results, header), args.output)
        if partial:
            partial.unlink(missing_ok=True)
        return
    languages = (src_lang, tgt_lang)
    results = decoder_runs(args, model, tokenizer, sentences, schedule, languages, started)
    bandwidth = copy_bandwidth(device, args.copy_megabytes)
    floor_ms = 1000 * weight_bytes(model) / bandwidth
    steps = step_costs(model, device, args.kv_caches)
    progress("step costs measured", started)
    note = f"; copy bandwidth {bandwidth / 1e9:.1f} GB/s{compile_note()}"
    header = run_header(args, model, model_name, len(sentences), device, note, distinct)
    publish(report(results, steps, floor_ms, header), args.output)
