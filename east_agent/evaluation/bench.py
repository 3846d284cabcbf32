"""`east-bench`: the streaming decoder against a reference-style loop and offline decoding.

    east-bench --model-path models/east-demo --testset multi30k.de-en --limit 100
    east-bench --random-model llama3-8b --device cuda --torch-dtype bfloat16 \\
        --testset wmt22.de-en --limit 100 --schedule schedule.json

In one run, on the same model, sentences and hardware:
- (a) `EastStreamDecoder` (greedy, and beam search with `--num-beams`);
- (b) the reference-style loop of the EAST paper's code, written here from its description:
      at every source word re-render and re-tokenize the whole text, call `generate()`
      for one READ-decision token with the cache passed in, and `generate()` again for
      each WRITE chunk;
- (c) offline decoding of the same sentences: prefill the offline prompt with the whole
      source once, then decode as many target tokens as (a) wrote.
For each: forward passes, tokens fed, tokens re-encoded and wall time per sentence. Per
step: milliseconds of a READ step (two new tokens and a decision) and of a WRITE token,
next to the weight-bandwidth floor (weight bytes over the device-to-device copy bandwidth
measured in the same run).

Random-weight models almost never choose end-of-read, so decisions can follow a schedule
(`--schedule`): a JSON file recorded by `--save-schedule` from a real model's run, or
`waitk:K` (read K units, then a two-token chunk per unit, the rest at the end). With a
schedule every forward still runs; only the READ/WRITE outcomes and chunk lengths are
imposed, on (a), (b) and (c) alike. A recorded file names its test set
(`{"testset": ..., "schedule": [...]}`; a file of the older form, the bare list, names
none) and is refused on another; with a --limit above the sentences it holds, they
are taken again in turn, and the report's header says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, cast

import torch

from east_agent.common.arguments import (
    DefaultsHelpFormatter,
    add_old_spelling,
    checked_device,
    file_path,
    parse_once_each,
    positive_int,
)
from east_agent.common.atomic import (
    append_atomically,
    check_folder_path,
    is_special_file,
    write_atomically,
)
from east_agent.common.entry import CommandError, command_line, raise_if_signalled
from east_agent.common.records import invalid_json
from east_agent.common.text_lines import (
    GZIP_MAGIC,
    check_input_file,
    read_text,
    starts_as_gzip,
)
from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
from east_agent.decoding.prompt import (
    END_OF_READ,
    END_OF_WRITE,
    LATENCY_LEVELS,
    is_unspaced,
    offline_instruction,
    render_user_turn,
    simt_instruction,
)
from east_agent.decoding.units import join_source_units, source_units, unit_text
from east_agent.lm import KV_CACHES, CachedLM, build_lm, cache_argument_name, new_dynamic_cache
from east_agent.lm.checkpoint import TORCH_DTYPES
from east_agent.lm.static import StaticLM, supports

if TYPE_CHECKING:
    from transformers import (
        DynamicCache,
        LlamaForCausalLM,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        PreTrainedTokenizerFast,
    )

    from east_agent.decoding.streaming import Translation
    from east_agent.lm.checkpoint import EastTokenIds
    from east_agent.lm.protocol import LMBackend

Schedule = list[list[tuple[int, int]]]  # per sentence: (units read, chunk tokens) per write


# -- schedules --------------------------------------------------------------------------------


def waitk_schedule(sentences: Sequence[Sequence[str]], k: int, tokens: int = 2) -> Schedule:
    """Read k units, then a `tokens`-token chunk per unit; at the end, the rest of a target
    as long (in tokens) as `tokens` per source unit."""
    schedule = []
    for units in sentences:
        writes = [(read, tokens) for read in range(k, len(units))]
        remaining = max(1, tokens * len(units) - tokens * len(writes))
        schedule.append(writes + [(len(units), remaining)])
    return schedule


# -- counting and timing ----------------------------------------------------------------------


@dataclass
class ForwardCounter:
    """Counts every forward of the model (whoever calls it): passes and positions fed."""

    passes: int = 0
    tokens: int = 0
    handle: object = field(default=None, repr=False)

    def attach(self, model: torch.nn.Module) -> ForwardCounter:
        def count(module, args, kwargs):
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            self.passes += 1
            self.tokens += input_ids.numel() if input_ids is not None else 0

        self.handle = model.register_forward_pre_hook(count, with_kwargs=True)
        return self

    def take(self) -> tuple[int, int]:
        taken = (self.passes, self.tokens)
        self.passes = self.tokens = 0
        return taken


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class MethodResult:
    name: str
    forward_passes: int = 0
    tokens_fed: int = 0
    tokens_reencoded: int = 0
    seconds: float = 0.0
    sentences: int = 0

    def per_sentence(self, value: float) -> float:
        return value / max(self.sentences, 1)


@contextmanager
def one_sentence(
    result: MethodResult, device: torch.device | str, lm: LMBackend | None = None
) -> Iterator[None]:
    """Time one sentence of a method (the device synchronized at both ends) and add what
    the backend `lm` counted meanwhile: the skeleton every method shares."""
    passes, fed = (lm.forward_passes, lm.tokens_fed) if lm is not None else (0, 0)
    synchronize(device)
    started = time.perf_counter()
    yield
    synchronize(device)
    result.seconds += time.perf_counter() - started
    result.sentences += 1
    if lm is not None:
        # StaticLM runs the model's layers itself (and replays CUDA graphs), so the model's
        # forward hook cannot see its steps: every backend counts the forwards it runs.
        result.forward_passes += lm.forward_passes - passes
        result.tokens_fed += lm.tokens_fed - fed


# -- (a) the streaming decoder ----------------------------------------------------------------


def backend_label(lm: LMBackend) -> str:
    """The cache backend as the tables name it: `StaticLM, CUDA graphs, compiled layers`."""
    label = type(lm).__name__
    label += ", CUDA graphs" if getattr(lm, "graphs", None) is not None else ""
    return label + (", compiled layers" if getattr(lm, "compiled", False) else "")


def script_of(schedule: Schedule | None, index: int) -> dict[int, int] | None:
    """The decoder's script for one sentence: {units read: chunk tokens}."""
    return None if schedule is None else dict(schedule[index])


def run_streaming(
    decoder: EastStreamDecoder,
    sentences: list[list[str]],
    schedule: Schedule | None,
    counter: ForwardCounter,
    device: torch.device,
) -> tuple:
    backend = backend_label(decoder.lm)
    result = MethodResult(f"(a) streaming, beams={decoder.config.num_beams}, {backend}")
    recorded: Schedule = []
    for index, units in enumerate(sentences):
        with one_sentence(result, device, decoder.lm):
            translation = decoder.translate(units, script_of(schedule, index))
        counter.take()
        result.tokens_reencoded += translation.counters.tokens_reencoded
        recorded.append(
            [(d, len(ids)) for d, ids in zip(translation.delays, translation.chunk_ids)]
        )
    return result, recorded


# -- (b) the reference-style loop -------------------------------------------------------------


def run_reference_loop(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: DecoderConfig,
    sentences: list[list[str]],
    schedule: Schedule,
    counter: ForwardCounter,
    device: torch.device,
) -> MethodResult:
    """The paper's code path: full re-tokenization and `generate()` at every step."""
    from east_agent.lm.checkpoint import east_token_ids

    ids = east_token_ids(tokenizer, model.generation_config.eos_token_id)
    prompt = render_user_turn(
        tokenizer, simt_instruction(config.src_lang, config.tgt_lang, config.latency)
    )
    result = MethodResult("(b) reference loop (re-tokenize + generate)")
    for index, units in enumerate(sentences):
        writes, cache = dict(schedule[index]), new_dynamic_cache(model)
        with one_sentence(result, device):
            text = reference_sentence(model, tokenizer, config, units, writes, prompt, cache, ids)
        passes, fed = counter.take()
        final_length = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        result.forward_passes += passes
        result.tokens_fed += fed
        result.tokens_reencoded += max(0, fed - final_length)
    return result


def reference_sentence(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: DecoderConfig,
    units: list[str],
    writes: dict[int, int],
    text: str,
    cache: DynamicCache,
    ids: EastTokenIds,
) -> str:
    """One sentence of the paper's loop; the final text."""
    device = model.device
    cache_kwarg = cache_argument_name(model)
    common = {"do_sample": False, "num_beams": 1, "pad_token_id": ids.end_of_write}
    for position, unit in enumerate(units):
        text += unit_text(unit, config.src_lang, first=position == 0)
        inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(device)
        model.generate(  # type: ignore[operator]  # GenerationMixin's, untyped on PreTrainedModel
            **inputs, max_new_tokens=1, suppress_tokens=list(ids.read_suppressed),
            eos_token_id=[ids.end_of_read], **common, **{cache_kwarg: cache},
        )  # fmt: skip
        if position + 1 not in writes:
            continue
        text += END_OF_READ
        inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(device)
        tokens = writes[position + 1]
        output = model.generate(  # type: ignore[operator]  # as above
            **inputs, max_new_tokens=tokens + 1, min_new_tokens=tokens + 1,
            suppress_tokens=list(ids.write_suppressed), **common, **{cache_kwarg: cache},
        )  # fmt: skip
        chunk = output[0, inputs["input_ids"].shape[1] :][:tokens]
        # one sequence of ids decodes to one string
        text += cast(str, tokenizer.decode(chunk, skip_special_tokens=True)) + END_OF_WRITE
    return text


# -- (c) offline decoding ---------------------------------------------------------------------


@torch.inference_mode()
def run_offline(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    config: DecoderConfig,
    sentences: list[list[str]],
    schedule: Schedule,
    counter: ForwardCounter,
    device: torch.device,
    kv_cache: str = "dynamic",
) -> MethodResult:
    """(c) on the same cache backend as (a), so that the two differ only in their schedule."""
    prompts = []
    for index, units in enumerate(sentences):
        source = join_source_units(list(units), config.src_lang)
        prompt = render_user_turn(
            tokenizer, offline_instruction(config.src_lang, config.tgt_lang, source)
        )
        target_tokens = sum(tokens for _, tokens in schedule[index]) + 1  # and the end of turn
        prompts.append((tokenizer(prompt, add_special_tokens=False)["input_ids"], target_tokens))
    longest = max(len(ids) + tokens for ids, tokens in prompts)
    lm = build_lm(model, kv_cache, max_length=longest)
    result = MethodResult(f"(c) offline (prefill source, decode target), {backend_label(lm)}")
    for prompt_ids, target_tokens in prompts:
        lm.reset()
        with one_sentence(result, device, lm):
            logits = lm.feed(prompt_ids)
            for _ in range(target_tokens - 1):
                logits = lm.feed([int(logits.argmax())])
        counter.take()
    return result


# -- per-step costs and the floor -------------------------------------------------------------


def copy_bandwidth(device: torch.device, megabytes: int) -> float:
    """Bytes per second of a device-to-device copy (read + write)."""
    source = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    synchronize(device)
    repeats = 10
    started = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    synchronize(device)
    return 2 * source.numel() * repeats / (time.perf_counter() - started)


def weight_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@torch.inference_mode()
def time_ms(step: Callable[[], object], device: torch.device | str, repeats: int = 30) -> float:
    """Milliseconds a call of `step` takes, after 3 warm-up calls, device work included."""
    for _ in range(3):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(device)
    return 1000 * (time.perf_counter() - started) / repeats


def step_costs(
    model: PreTrainedModel,
    device: torch.device,
    kv_caches: Sequence[str],
    context: int = 120,
    repeats: int = 30,
) -> dict:
    """Milliseconds of a READ step (2 tokens + decision) and of a WRITE token, at a context
    of `context` tokens, on each cache backend and with `generate()` and the cache passed in."""
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(1000, min(20000, vocab), (context + 2,)).tolist()
    mask = torch.zeros(vocab, dtype=torch.bool, device=device)

    def timed(step) -> float:
        return time_ms(step, device, repeats)

    def step(lm, tokens):
        def run():
            int(lm.feed(ids[context : context + tokens]).masked_fill(mask, float("-inf")).argmax())
            lm.crop(0, context)

        return run

    costs = {}
    for kind in kv_caches:
        lm = build_lm(model, kind, max_length=context + 64)
        lm.feed(ids[:context])
        costs[f"READ step, {kind} cache"] = timed(step(lm, 2))
        costs[f"WRITE token, {kind} cache"] = timed(step(lm, 1))
    lm = CachedLM(model)
    lm.feed(ids[:context])
    cache_kwarg = cache_argument_name(model)
    full = torch.tensor([ids], device=device)

    def generate_read_step():
        model.generate(
            input_ids=full, max_new_tokens=1, do_sample=False, pad_token_id=0,
            **{cache_kwarg: lm.cache},
        )  # fmt: skip
        lm.crop(0, context)

    costs["READ step, generate() with the cache"] = timed(generate_read_step)
    return costs


# -- models -----------------------------------------------------------------------------------


# a Llama-3 tokenizer's ids (every Llama 3.x one): the random models' vocabulary
LLAMA3_VOCABULARY = 128_256


def llama3_east_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """A Llama-3 tokenizer (its `tokenizer.json`, or a folder holding one) in EAST-8B form:
    the Llama-3 chat template and the two EAST tokens."""
    from transformers import PreTrainedTokenizerFast

    from east_agent.decoding.prompt import (
        BEGIN_OF_TEXT,
        END_OF_TURN,
        LLAMA3_CHAT_TEMPLATE,
        LLAMA3_SPECIAL_TOKENS,
    )

    path = Path(path)
    path = path / "tokenizer.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"--tokenizer {path}: no tokenizer.json there")
    try:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(path), bos_token=BEGIN_OF_TEXT, eos_token=END_OF_TURN
        )
    except Exception as error:  # tokenizers raises its parse errors as a bare Exception
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"--tokenizer {path}: not a tokenizer.json ({first})") from None
    vocabulary = tokenizer.get_vocab()
    lacking = [token for token in LLAMA3_SPECIAL_TOKENS if token not in vocabulary]
    if lacking or len(vocabulary) < LLAMA3_VOCABULARY:  # before: taken, the model sized by it
        without = f", without {', '.join(lacking)}" if lacking else ""
        raise ValueError(
            f"--tokenizer {path}: no Llama-3 tokenizer ({len(vocabulary):,} tokens{without}; "
            f"Llama-3's has {LLAMA3_VOCABULARY:,}): the random models are Llama-3's shape, "
            "vocabulary included"
        )
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    tokenizer.add_special_tokens({"additional_special_tokens": [END_OF_READ, END_OF_WRITE]})
    return tokenizer


class LlamaShape(TypedDict):
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rope_theta: float
    max_position_embeddings: int


RANDOM_MODELS: dict[str, LlamaShape] = {
    "llama3-8b": {
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8, "rope_theta": 500000.0,
        "max_position_embeddings": 8192,
    },
    "llama3-tiny": {
        "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 500000.0,
        "max_position_embeddings": 2048,
    },
}  # fmt: skip


def random_model(
    name: str, tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype, device: str, seed: int = 0
) -> LlamaForCausalLM:
    """The `RANDOM_MODELS[name]` shape with weights drawn from `seed` (the same weights,
    and so the same translations, in every run on one machine); the caller's CPU and
    CUDA generators are left as they were."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **RANDOM_MODELS[name],  # type: ignore[misc]  # rope_theta: taken by its **kwargs, unhinted
    )
    cuda_devices = list(range(torch.cuda.device_count()))  # manual_seed seeds them all
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        with torch.device(device):
            model = LlamaForCausalLM._from_config(config, dtype=dtype)
    return model.eval()


# -- the report -------------------------------------------------------------------------------


def report(results: list[MethodResult], steps: dict, floor_ms: float, header: str) -> str:
    baseline = next(r for r in results if r.name.startswith("(b)"))
    offline = next(r for r in results if r.name.startswith("(c)"))
    lines = [
        header,
        "",
        "| method | forwards/sent. | tokens fed/sent. | re-encoded/sent. | ms/sent. "
        "| speed-up over (b) | wall vs (c) | forwards vs (c) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        per = r.per_sentence
        lines.append(
            f"| {r.name} | {per(r.forward_passes):.1f} | {per(r.tokens_fed):.1f} | "
            f"{per(r.tokens_reencoded):.1f} | {1000 * per(r.seconds):.1f} | "
            f"{baseline.seconds / r.seconds:.2f}x | {r.seconds / offline.seconds:.2f}x | "
            f"{r.forward_passes / offline.forward_passes:.2f}x |"
        )
    lines += ["", "| step | ms | / floor |", "|---|---|---|"]
    lines.append(f"| weight-bandwidth floor | {floor_ms:.3f} | 1.00x |")
    for name, ms in steps.items():
        lines.append(f"| {name} | {ms:.3f} | {ms / floor_ms:.2f}x |")
    return "\n".join(lines) + "\n"


def sentences_label(total: int, distinct: int, testset: str) -> str:
    """`total` sentences of `testset`, of which the first `distinct` taken again in turn."""
    label = f"{total} sentences of {testset}"
    if distinct < total:
        label += f" (its first {distinct}, taken again in turn)"
    return label


def run_header(
    args: argparse.Namespace,
    model: torch.nn.Module,
    model_name: str,
    sentences: int,
    device: torch.device,
    note: str,
    distinct: int | None = None,
) -> str:
    threads = torch.get_num_threads()
    machine = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.machine()} CPU, {threads} thread{'s' if threads != 1 else ''}"
    )
    return (
        f"### {datetime.date.today()}: {model_name} ({args.torch_dtype}, "
        f"{weight_bytes(model) / 1e9:.3f} GB of weights) on {machine}, torch "
        f"{torch.__version__}, transformers {__import__('transformers').__version__}\n\n"
        f"{sentences_label(sentences, distinct or sentences, args.testset)}, latency "
        f"{args.latency}, schedule: {args.schedule or 'the model’s own decisions'}{note}"
    )


# -- many streams at once ---------------------------------------------------------------------

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
    started: float,
    finished_row: Callable[[list], None],
) -> list:
    """Greedy (and beam search with --num-beams above 1): the sequential decoder, then
    continuous batching at each --streams count, on the same sentences (and schedule);
    `finished_row(results)` after each row."""
    from east_agent.decoding.batching import BatchStats, Sentence, translate_batch

    src_lang, tgt_lang = load_sentences(args.testset, 0, tokenizer)[1:]
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


def publish(text: str, output: str | None) -> None:
    """Print a report; append it to the Markdown file `output` too, if given (the file is
    rewritten in one step: a kill leaves it as it was or with the whole report, and two
    benchmarks finishing at once both keep theirs)."""
    print(text)
    if output:
        append_atomically(Path(output), "\n" + text)


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


def load_sentences(
    testset: str, count: int, tokenizer: PreTrainedTokenizerBase | None
) -> tuple[list[list[str]], str, str]:
    pairs, src_lang, tgt_lang = read_testset(testset)
    return source_sentences(pairs, count, src_lang, tokenizer), src_lang, tgt_lang


def compile_note() -> str:
    """How many versions torch.compile made of the compiled layer step in this process; at
    the limit, torch runs it uncompiled from then on, and the tables must say so."""
    from torch._dynamo.utils import counters

    from east_agent.lm.static import RECOMPILE_LIMIT

    graphs = counters["stats"]["unique_graphs"]
    if not graphs:
        return ""
    note = f"; compiled layer step: {graphs} versions (limit {RECOMPILE_LIMIT})"
    return note + (" REACHED: later steps ran uncompiled" if graphs >= RECOMPILE_LIMIT else "")


def progress(text: str, started: float) -> None:
    """One line on stderr per stage: a GPU run is timed from outside, so say where it is.
    A stage is done: a Ctrl-C a library swallowed ends the run here, not after the rest."""
    elapsed = time.perf_counter() - started
    print(f"[east-bench {elapsed:7.1f} s] {text}", file=sys.stderr, flush=True)
    raise_if_signalled()


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
        from east_agent.lm.checkpoint import check_weights, load_east_checkpoint

        check_weights(args.model_path, "--model-path")  # before the tokenizer loads
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


def check_output_file(flag: str, value: str) -> None:
    """One of `check_output_files`' files (the benchmark scripts' `--output` too)."""
    path = Path(value)
    if is_special_file(path):  # /dev/null, /dev/stdout: written into as it is
        return
    if path.is_dir():
        raise ValueError(f"{flag} {value}: a folder; name a file")
    if flag == "--output" and path.exists():  # the report is appended to its bytes
        with open(path, "rb") as handle:
            if starts_as_gzip(handle.read(len(GZIP_MAGIC))):
                raise ValueError(f"{flag} {value}: gzip-compressed; name a Markdown file")
        read_text(path)  # UTF-8 text, a bad byte named
    check_folder_path(path.parent, f"{flag} {value}: its folder")  # "is a file"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"{flag} {value}: cannot make its folder {path.parent}: {error.strerror}"
        ) from None
    check_writable(path, flag, append=flag == "--output")


def check_writable(path: Path, flag: str, append: bool = False) -> None:
    """`path`'s folder takes a new file (the atomic write's temporary, renamed into place):
    tried for real, a file made there and removed, since permission bits do not stop root
    and a read-only mount or an immutable folder stops everyone. With `append`, a file
    already at `path` must open for appending too (`append_atomically` locks it so);
    opening it changes nothing (before: both found after the whole benchmark)."""
    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as error:
        raise ValueError(
            f"{flag} {path}: cannot write in its folder {path.parent}: {error.strerror}"
        ) from None
    if append and path.exists():
        try:
            open(path, "ab").close()
        except OSError as error:
            raise ValueError(f"{flag} {path}: cannot append to it: {error.strerror}") from None


def schedule_text(text: str) -> str:
    """--schedule's value (argparse `type`): blank names no schedule (before: taken as none,
    the model's own decisions run, exit 0)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty: give waitk:K or a --save-schedule file")
    return text


def read_schedule(
    setting: str | None, testset: str | None = None, latency: str | None = None
) -> int | Schedule | None:
    """`--schedule` checked before any model loads: None (the model decides), K of
    `waitk:K`, or the schedule recorded in a `--save-schedule` file (on `testset` at
    `latency`, where the file names them)."""
    if not setting:
        return None
    if setting.startswith("waitk:"):
        k = setting.removeprefix("waitk:")
        if not k.strip().isdigit() or int(k) < 1:
            raise ValueError(f"--schedule {setting}: waitk:K takes a whole number K of at least 1")
        return int(k)
    path = Path(setting)
    try:  # before: a folder was "no such file"
        check_input_file(path, "--schedule")
    except ValueError as error:
        raise ValueError(f"{error} (waitk:K, or a JSON file from --save-schedule)") from None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--schedule {setting}: cannot read: {error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"--schedule {setting}: line {error.lineno}: {invalid_json(error)}"
        ) from None
    return checked_schedule(setting, recorded, testset, latency)


def schedule_file(testset: str, latency: str, schedule: Schedule) -> str:
    """What `--save-schedule` writes: the schedule, and the test set and latency level it
    was recorded on."""
    return json.dumps({"testset": testset, "latency": latency, "schedule": schedule})


def checked_schedule(
    setting: str, recorded: object, testset: str | None, latency: str | None = None
) -> Schedule:
    """The schedule of a `--save-schedule` file's JSON (or of the older forms: without the
    latency level, or the bare list), refused if recorded on another test set than
    `testset` or at another latency level than `latency` (a run that follows it at another
    level makes that level's decisions: its header would name the wrong one)."""
    if isinstance(recorded, dict):
        if set(recorded) - {"latency"} != {"testset", "schedule"}:
            raise ValueError(
                f"--schedule {setting}: expected the keys testset and schedule (and latency, "
                "as --save-schedule writes it)"
            )
        if "latency" in recorded and recorded["latency"] not in LATENCY_LEVELS:
            raise ValueError(
                f"--schedule {setting}: latency {recorded['latency']!r} is no level "
                f"({', '.join(LATENCY_LEVELS)})"
            )
        if testset is not None and recorded["testset"] != testset:
            raise ValueError(
                f"--schedule {setting}: recorded on {recorded['testset']}, "
                f"not on --testset {testset}"
            )
        level = recorded.get("latency")
        if None not in (latency, level) and level != latency:
            raise ValueError(
                f"--schedule {setting}: recorded at --latency {level}, not at --latency {latency}"
            )
        recorded = recorded["schedule"]
    if not isinstance(recorded, list) or not recorded:
        raise ValueError(f"--schedule {setting}: expected a non-empty JSON list of sentences")
    for index, writes in enumerate(recorded):
        if not isinstance(writes, list) or not all(
            isinstance(write, list)
            and len(write) == 2
            and all(type(number) is int and number >= 0 for number in write)
            for write in writes
        ):
            raise ValueError(
                f"--schedule {setting}: sentence {index}: expected a list of "
                "[units read, chunk tokens] pairs of whole numbers"
            )
    return [[tuple(write) for write in writes] for writes in recorded]


def check_schedule_fits(
    setting: str | None, schedule: int | Schedule | None, sentences: list[list[str]]
) -> None:
    """A recorded schedule's writes fall within their sentences, in order: a write after
    more units than a sentence has is never reached (and its tokens counted by (c) all the
    same); a write out of order or twice is followed by no method; a sentence without one
    measures nothing (before: "9.00x" of nothing, exit 0)."""
    if not isinstance(schedule, list):
        return
    for index, (writes, units) in enumerate(zip(schedule, sentences)):
        read = [position for position, _ in writes]
        problem = None
        if not writes:  # every method would write nothing, and be compared on it
            problem = "no write (a sentence writes at least once)"
        elif any(later <= earlier for earlier, later in zip(read, read[1:])):
            problem = f"units read {read}: not increasing"
        elif read and read[0] < 1:
            problem = "a write after 0 units (a unit is read first)"
        elif read and read[-1] > len(units):
            problem = f"a write after {read[-1]} units, and it has {len(units)}"
        if problem:
            raise ValueError(f"--schedule {setting}: sentence {index}: {problem}")


def load_schedule(
    args: argparse.Namespace, sentences: list, schedule: int | Schedule | None = None
) -> tuple[list, list | None]:
    """(sentences, schedule) of `--schedule` (read by `read_schedule`; read here if not
    given): none (the model decides), wait-k, or a recorded file, whose sentences are
    taken again in turn when more are asked for."""
    if schedule is None:
        schedule = read_schedule(args.schedule, args.testset, args.latency)
    if schedule is None:
        return sentences, None
    if isinstance(schedule, int):
        return sentences, waitk_schedule(sentences, schedule)
    schedule = schedule[: len(sentences)]
    sentences = [sentences[i % len(schedule)] for i in range(args.limit)]
    return sentences, [schedule[i % len(schedule)] for i in range(args.limit)]


def distinct_sentences(loaded: int, schedule: int | Schedule | None) -> int:
    """How many of `load_schedule`'s sentences differ, of `loaded` read from the test set:
    a recorded schedule shorter than that takes its first sentences again in turn."""
    return min(loaded, len(schedule)) if isinstance(schedule, list) else loaded


def decoder_runs(
    args: argparse.Namespace,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: list[list[str]],
    schedule: Schedule | None,
    languages: tuple[str, str],
    started: float,
) -> list:
    """(a) on each backend (the first run records the schedule the others follow), (a)
    with beams, (b) the reference loop, (c) offline: their results in that order."""
    device, (src_lang, tgt_lang) = torch.device(args.device), languages
    counter = ForwardCounter().attach(model)
    results = []

    def timed(decoder):
        run_streaming(decoder, sentences[:2], schedule, counter, device)  # warm-up, graphs
        counter.take()
        result, recorded = run_streaming(decoder, sentences, schedule, counter, device)
        progress(f"{result.name}: {result.seconds:.1f} s", started)
        results.append(result)
        return recorded

    for kind in args.kv_caches:
        config = DecoderConfig(src_lang, tgt_lang, args.latency, kv_cache=kind)
        recorded = timed(EastStreamDecoder(model, tokenizer, config))
        if schedule is None:
            schedule = recorded  # the rest follow the decisions the model just made
            if args.save_schedule:
                write_atomically(
                    Path(args.save_schedule), schedule_file(args.testset, args.latency, recorded)
                )
    assert schedule is not None  # recorded by the first backend's run: --kv-caches has one
    if args.num_beams > 1:
        beam_config = DecoderConfig(
            src_lang, tgt_lang, args.latency, num_beams=args.num_beams, kv_cache=args.kv_caches[0]
        )
        timed(EastStreamDecoder(model, tokenizer, beam_config))
    results.append(
        run_reference_loop(model, tokenizer, config, sentences, schedule, counter, device)
    )
    progress(f"{results[-1].name}: {results[-1].seconds:.1f} s", started)
    results.append(
        run_offline(
            model, tokenizer, config, sentences, schedule, counter, device, args.kv_caches[0]
        )
    )
    progress(f"{results[-1].name}: {results[-1].seconds:.1f} s", started)
    return results


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
            results = stream_benchmark(
                args, model, tokenizer, sentences, schedule, started, finished_row
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


if __name__ == "__main__":
    main()
