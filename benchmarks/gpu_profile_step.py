"""Where does a static-cache decode step spend its time? (one GPU call, about 1 minute)

    python3 benchmarks/gpu_profile_step.py [--model llama3-8b] [--context 120]

On the random Llama-3-8B shape in bfloat16, side by side in one process:
- the weight-bandwidth floor (weight bytes / measured copy bandwidth);
- StaticLM's CUDA-graphed READ (two tokens) and WRITE (one token) steps as east-bench
  times them, with q/k/v and gate/up apart (`fuse_projections=False`), fused, and fused
  with compiled layers (the default on CUDA);
- a CUDA graph of the step's matrix products alone (the 7 per layer and the LM head), with
  the model's own weights: what cuBLAS gives for these shapes, with nothing else around;
- the same with q/k/v and gate/up each fused into one product;
- a profile of one uncaptured step (compiled layers): kernels per step and CUDA time by
  kind (matrix products, attention, everything else), the 15 costliest kernels.
The gap between the graphed step and the products-only graph is what the small kernels
(norms, rotary, copies, residuals) cost; that is what fusing them could win.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from east_agent.bench.models import llama3_east_tokenizer, random_model
from east_agent.bench.step_costs import copy_bandwidth, time_ms, weight_bytes
from east_agent.common.arguments import parse_once_each
from east_agent.lm import StaticLM


def graph_ms(function, repeats: int = 50) -> float:
    """`function` captured once as a CUDA graph; milliseconds a replay takes."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            function()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        function()
    return time_ms(graph.replay, "cuda", repeats)


def step_ms(lm: StaticLM, step: torch.Tensor, context: int, repeats: int = 50) -> float:
    """One step as east-bench times it: feed, take the decision on the host, roll back."""

    tokens = step.tolist()

    def run():
        int(lm.forward([0], tokens).argmax())
        lm.crop(0, context)

    return time_ms(run, "cuda", repeats)


def products_only(model, fused: bool):
    hidden = model.config.hidden_size
    x = torch.randn(1, hidden, dtype=model.dtype, device=model.device)
    layers = []
    for layer in model.model.layers:
        attention, mlp = layer.self_attn, layer.mlp
        if fused:
            qkv = torch.cat([attention.q_proj.weight, attention.k_proj.weight,
                             attention.v_proj.weight])  # fmt: skip
            gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
            layers.append(([qkv], attention.o_proj.weight, [gate_up], mlp.down_proj.weight))
        else:
            layers.append((
                [attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight],
                attention.o_proj.weight,
                [mlp.gate_proj.weight, mlp.up_proj.weight],
                mlp.down_proj.weight,
            ))  # fmt: skip
    head = model.lm_head.weight
    intermediate = model.config.intermediate_size

    def run():
        for inputs, output, expand, down in layers:
            for weight in inputs:
                F.linear(x, weight)
            attended = F.linear(x, output)
            for weight in expand:
                F.linear(attended, weight)
            F.linear(torch.empty(1, intermediate, dtype=x.dtype, device=x.device), down)
        F.linear(x, head)

    return run


def profile_eager_step(lm: StaticLM, token: torch.Tensor) -> None:
    from torch.profiler import ProfilerActivity, profile

    positions = torch.tensor([lm.length(0)], device=lm.device)
    for _ in range(2):
        lm._step(token, positions, 0, lm.length(0) + 1, False)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        lm._step(token, positions, 0, lm.length(0) + 1, False)
        torch.cuda.synchronize()
    kinds = {"matrix products": [0, 0.0], "attention": [0, 0.0], "other": [0, 0.0]}
    rows = []
    for event in profiler.key_averages():
        cuda_us = getattr(event, "device_time_total", 0) or getattr(event, "cuda_time_total", 0)
        if cuda_us <= 0:
            continue
        name = event.key.lower()
        if any(word in name for word in ("gemm", "gemv", "cutlass", "nvjet", "cublas", "sm90")):
            kind = "matrix products"
        elif any(word in name for word in ("flash", "fmha", "attention", "sdpa", "efficient")):
            kind = "attention"
        else:
            kind = "other"
        kinds[kind][0] += event.count
        kinds[kind][1] += cuda_us
        rows.append((cuda_us, event.count, event.key[:90]))
    total = sum(value[1] for value in kinds.values())
    print(f"eager step: {sum(v[0] for v in kinds.values())} kernels, {total / 1000:.3f} ms CUDA")
    for kind, (count, cuda_us) in kinds.items():
        print(f"  {kind}: {count} kernels, {cuda_us / 1000:.3f} ms")
    for cuda_us, count, name in sorted(rows, reverse=True)[:15]:
        print(f"  {cuda_us / 1000:8.3f} ms  {count:5d}x  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama3-8b")
    parser.add_argument("--context", type=int, default=120)
    args = parse_once_each(parser, None)
    tokenizer = llama3_east_tokenizer(os.environ["LLAMA3_TOKENIZER"])
    model = random_model(args.model, tokenizer, torch.bfloat16, "cuda")
    floor = 1000 * weight_bytes(model) / copy_bandwidth(torch.device("cuda"), 4096)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"weight-bandwidth floor: {floor:.3f} ms")
    ids = torch.randint(1000, 20000, (1, args.context + 2), device="cuda")
    with torch.inference_mode():
        variants = (
            ("separate projections", {"fuse_projections": False, "compile_layers": False}),
            ("fused projections", {"compile_layers": False}),
            ("fused projections, compiled layers", {"compile_layers": True}),
        )
        for label, options in variants:
            started = time.perf_counter()
            lm = StaticLM(model, max_length=args.context + 64, **options)
            lm.feed(ids[0, : args.context].tolist())
            for name, tokens in (("READ", 2), ("WRITE", 1)):
                step = ids[:, args.context : args.context + tokens]
                ms = step_ms(lm, step, args.context)
                print(
                    f"StaticLM graphed {name} step, {label}: {ms:.3f} ms ({ms / floor:.2f}x floor)"
                )
            print(f"  ({time.perf_counter() - started:.1f} s with captures and compiles)")
        for fused in (False, True):
            ms = graph_ms(products_only(model, fused))
            label = "fused q/k/v and gate/up" if fused else "as in the model"
            print(f"matrix products only, {label}: {ms:.3f} ms ({ms / floor:.2f}x floor)")
        profile_eager_step(lm, ids[:, :1])


if __name__ == "__main__":
    main()
