"""Many streams at once (`east-bench --streams N ...`): the sequential decoder against
continuous batching at each stream count, on the same sentences and schedule; sentences
and target tokens per second, steps, rows per step, KV-cache memory per stream, the
sentences identical to the sequential decoder's, and a WMT22 grid's projected hours."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from east_agent.bench.schedules import Schedule, script_of
from east_agent.bench.timing import progress, synchronize
from east_agent.common.entry import CommandError
from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
from east_agent.lm.static import StaticLM, supports

if TYPE_CHECKING:
    from transformers import (
        PreTrainedModel,
        PreTrainedTokenizerBase,
    )

    from east_agent.decoding.streaming import Translation


WMT22_GRID_SENTENCES = 8 * 16 * 2000  # 8 directions x 16 systems x ~2,000 sentences


@dataclass
class StreamsResult:
    streams: int
    beams: int
    seconds: float
    sentences: int
    target_tokens: int
    steps: int = 0
    rows: int = 0
    kv_bytes_per_stream: float = 0.0
    identical: int = 0  # sentences equal to the sequential decoder's (chunks and delays)


def stream_benchmark(
    args: argparse.Namespace,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: list[list[str]],
    schedule: Schedule | None,
    languages: tuple[str, str],
    started: float,
    finished_row: Callable[[list], None],
) -> list:
    """Greedy (and beam search with --num-beams above 1): the sequential decoder, then
    continuous batching at each --streams count, on the same sentences (and schedule);
    `finished_row(results)` after each row."""
    from east_agent.decoding.batching import BatchStats, Sentence, translate_batch

    src_lang, tgt_lang = languages
    results = []
    for beams in sorted({1, args.num_beams}):
        config = DecoderConfig(src_lang, tgt_lang, args.latency, num_beams=beams)
        sequential = EastStreamDecoder(model, tokenizer, config)
        sequential.translate(sentences[0], script_of(schedule, 0))  # warm-up
        synchronize(args.device)
        begun = time.perf_counter()
        expected = [
            sequential.translate(units, script_of(schedule, index))
            for index, units in enumerate(sentences)
        ]
        synchronize(args.device)
        tokens = target_tokens(expected)
        results.append(
            StreamsResult(1, beams, time.perf_counter() - begun, len(sentences), tokens,
                          identical=len(sentences))
        )  # fmt: skip
        finished_row(results)  # on disk before it is said
        progress(f"sequential, beams={beams}: {results[-1].seconds:.1f} s", started)
        for count in args.streams:
            decoder = EastStreamDecoder(model, tokenizer, config, streams=count)
            # the static backend, the one that is ragged, runs many streams and says its
            # cache's size: one stream too (before, on the dynamic fallback: an
            # AttributeError at the table)
            if not decoder.lm.ragged:
                reason = (
                    supports(model, decoder.lm.max_length) or "its probe failed (the warning above)"
                )
                streams = "1 stream needs" if count == 1 else f"{count} streams need"
                raise CommandError(f"{streams} the static KV cache, which "
                                   f"did not take this model: {reason}")  # fmt: skip
            jobs = [Sentence(i, units, script_of(schedule, i)) for i, units in enumerate(sentences)]
            list(translate_batch(decoder, jobs[: min(count, 4)]))  # warm-up
            stats = BatchStats()
            synchronize(args.device)
            begun = time.perf_counter()
            outcomes = {outcome.key: outcome for outcome in translate_batch(decoder, jobs, stats)}
            synchronize(args.device)
            seconds = time.perf_counter() - begun
            translations = [outcomes[i].translation for i in range(len(sentences))]
            same = sum(
                found is not None
                and (found.chunk_ids, found.delays) == (wanted.chunk_ids, wanted.delays)
                for found, wanted in zip(translations, expected)
            )
            assert isinstance(decoder.lm, StaticLM)  # the ragged backend, checked above
            kv = decoder.lm.memory_bytes() / len(decoder.streams)
            # the row's own tokens (before: the sequential decoder's, where outputs differ)
            decoded = target_tokens([outcome.translation for outcome in outcomes.values()])
            results.append(
                StreamsResult(count, beams, seconds, len(sentences), decoded, stats.steps,
                              stats.rows, kv, same)
            )  # fmt: skip
            finished_row(results)
            progress(f"{count} streams, beams={beams}: {seconds:.1f} s", started)
    return results


def target_tokens(translations: Sequence[Translation | None]) -> int:
    """The target tokens the translations hold (a sentence that failed: none)."""
    return sum(len(ids) for t in translations if t is not None for ids in t.chunk_ids)


def streams_report(results: list[StreamsResult], header: str) -> str:
    lines = [
        header,
        "",
        "| streams | beams | sentences/s | target tokens/s | speed-up over 1 stream | steps "
        "| rows/step | ms/step | KV MiB/stream | identical to sequential | WMT22 grid (h) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        base = next(b for b in results if b.beams == r.beams and b.streams == 1)
        rate = r.sentences / r.seconds
        steps, per_step, kv = "n/a", "n/a | n/a", "n/a"
        if r.steps:
            steps = str(r.steps)
            per_step = f"{r.rows / r.steps:.1f} | {1000 * r.seconds / r.steps:.2f}"
            kv = f"{r.kv_bytes_per_stream / 2**20:.2f}"
        lines.append(
            f"| {r.streams}{'' if r.steps else ' (sequential)'} | {r.beams} | {rate:.2f} "
            f"| {r.target_tokens / r.seconds:.1f} | {base.seconds / r.seconds:.2f}x | {steps} "
            f"| {per_step} | {kv} | {r.identical}/{r.sentences} "
            f"| {WMT22_GRID_SENTENCES / rate / 3600:.2f} |"
        )
    lines.append("")
    lines.append(
        "WMT22 grid: 8 directions x 16 systems x 2,000 sentences at this rate (projected: "
        "every run costing what this one does)."
    )
    return "\n".join(lines) + "\n"
