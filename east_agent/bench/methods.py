"""The three methods `east-bench` compares on one model, sentences and schedule: (a) the
streaming decoder, (b) the reference-style loop of the EAST paper's code (re-tokenize and
`generate()` at every step), (c) offline decoding of the same sentences."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from east_agent.bench.schedules import Schedule, schedule_file, script_of
from east_agent.bench.timing import ForwardCounter, MethodResult, one_sentence, progress
from east_agent.common.atomic import (
    write_atomically,
)
from east_agent.decoding.east import DecoderConfig, EastStreamDecoder
from east_agent.decoding.prompt import (
    END_OF_READ,
    END_OF_WRITE,
    offline_instruction,
    render_user_turn,
    simt_instruction,
)
from east_agent.decoding.units import join_source_units, unit_text
from east_agent.lm import build_lm, cache_argument_name, new_dynamic_cache

if TYPE_CHECKING:
    from transformers import (
        DynamicCache,
        PreTrainedModel,
        PreTrainedTokenizerBase,
    )

    from east_agent.lm.checkpoint import EastTokenIds
    from east_agent.lm.protocol import LMBackend


def backend_label(lm: LMBackend) -> str:
    """The cache backend as the tables name it: `StaticLM, CUDA graphs, compiled layers`."""
    label = type(lm).__name__
    label += ", CUDA graphs" if getattr(lm, "graphs", None) is not None else ""
    return label + (", compiled layers" if getattr(lm, "compiled", False) else "")


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
