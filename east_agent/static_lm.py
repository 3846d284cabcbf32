"""A static KV cache and a lean forward for Llama-family models; CUDA graphs on GPUs.

The streaming loop's steps are tiny (a unit's few tokens, or one target token), so a
generic `model(...)` call spends most of its time on Python and kernel launches rather
than on reading the weights. `StaticLM` keeps the same interface as `CachedLM` but:
- preallocates keys and values for `max_length` positions and `max_rows` beams, so a
  step writes in place and rolling back is moving a counter;
- runs the decoder layers itself, over the model's own modules (projections, norms, MLP,
  rotary tables), with no mask or output objects to build;
- fewer, larger kernels: q/k/v and gate/up each run as one matrix product (the layers'
  weights become views into the fused tensor: no memory is added, the model's own forward
  and `save_pretrained` are unchanged; LoRA-wrapped layers stay apart), q and k rotate
  together, RMSNorm is one `F.rms_norm` kernel;
- on CUDA, each layer's step also runs through `torch.compile` (one compiled function
  for all layers, their tensors being its inputs), which fuses the norms, the rotation,
  the cache writes, the residual additions and SiLU into a few kernels around the matrix
  products (on CPUs it does not pay: off there, and `compile_layers` decides);
- on CUDA, captures each step shape once as a CUDA graph and replays it: inputs are padded
  to a bucket of new tokens (1, 2, 4, ... 32) and attention runs over a bucket of cache
  positions (256, 512, ...), padded queries write only past the end of the sequence,
  where nothing reads before it is overwritten.

Supported: `LlamaForCausalLM` and the architectures that share its layer (Mistral without
a sliding window, Qwen2). Anything else stays on `CachedLM` (`supports`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from east_agent.kv_cache import LMBackend

logger = logging.getLogger(__name__)

TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32)
MIN_KV_BUCKET = 256
RECOMPILE_LIMIT = 32


def supports(model) -> str | None:
    """None if `StaticLM` can run `model`, else the reason it cannot."""
    if model.config.model_type not in ("llama", "mistral", "qwen2"):
        return f"model type {model.config.model_type!r}"
    if getattr(model.config, "sliding_window", None) and model.config.model_type != "llama":
        return "a sliding-window attention"
    attention = model.model.layers[0].self_attn
    if hasattr(attention, "q_norm"):
        return "per-head q/k norms"
    return None


def _fuse(modules: list[torch.nn.Module]) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """One weight (and bias) for linear layers that read the same input, or None.

    The layers' own weights become views into the fused tensor, so the model's forward is
    unchanged and no memory is added; done once per model (a second StaticLM reuses it)."""
    if not all(type(module) is torch.nn.Linear for module in modules):
        return None  # e.g. LoRA-wrapped layers: run them one by one
    weights = [module.weight for module in modules]
    fused = getattr(modules[0], "_east_fused", None)
    if fused is not None and fused[0].data_ptr() == weights[0].data_ptr():
        return fused
    # plain tensors even under inference_mode: they are the model's parameters from now on
    with torch.inference_mode(False), torch.no_grad():
        weight = torch.cat([w.detach() for w in weights])
        biases = [module.bias for module in modules]
        bias = None if any(b is None for b in biases) else torch.cat([b.detach() for b in biases])
        start = 0
        for module in modules:
            rows = module.weight.shape[0]
            module.weight.data = weight[start : start + rows]
            if bias is not None:
                module.bias.data = bias[start : start + rows]
            start += rows
    modules[0]._east_fused = (weight, bias)
    return weight, bias


def _rms_norm(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LlamaRMSNorm in one kernel: statistics in float32 as there; the scale is applied
    before the one rounding to the model's dtype (LlamaRMSNorm rounds, then scales)."""
    return F.rms_norm(x, (x.shape[-1],), norm.weight, _epsilon(norm))


def _epsilon(norm: torch.nn.Module) -> float:
    return getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class _Dims(NamedTuple):
    heads: int
    kv_heads: int
    head_dim: int
    grouped: bool  # fewer key/value heads than query heads


class _PlainLayer(NamedTuple):
    """A layer's tensors, for the layer step that runs on tensors alone (and compiles)."""

    input_norm: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    output: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor
    eps: float

    @classmethod
    def of(cls, layer: torch.nn.Module, qkv, gate_up, act: str) -> _PlainLayer | None:
        """None unless every product is a plain bias-free (q/k/v aside) linear layer and the
        activation is SiLU: LoRA-wrapped layers run through their modules instead."""
        attention, mlp = layer.self_attn, layer.mlp
        if qkv is None or gate_up is None or gate_up[1] is not None or act not in ("silu", "swish"):
            return None
        if any(
            type(module) is not torch.nn.Linear or module.bias is not None
            for module in (attention.o_proj, mlp.down_proj)
        ):
            return None
        norm = layer.input_layernorm
        return cls(
            norm.weight,
            *qkv,
            attention.o_proj.weight,
            layer.post_attention_layernorm.weight,
            gate_up[0],
            mlp.down_proj.weight,
            _epsilon(norm),
        )


def _attend(projected, cos, sin, positions, mask, keys, values, kv_length: int, dims: _Dims):
    """Rotate q and k (side by side: one rotation; `cos`/`sin` are the tables of all
    positions), write k and v into the first rows of the cache buffers `keys`/`values` at
    `positions`, attend over the first `kv_length` positions."""
    rows, steps = projected.shape[:2]
    keys, values = keys[:rows], values[:rows]
    cos, sin = cos[positions], sin[positions]
    q_width, kv_width = dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
    qk = projected[..., : q_width + kv_width]
    qk = qk.view(rows, steps, dims.heads + dims.kv_heads, dims.head_dim).transpose(1, 2)
    qk = _rotate(qk, cos, sin)
    q, k = qk[:, : dims.heads], qk[:, dims.heads :]
    v = projected[..., q_width + kv_width :]
    v = v.view(rows, steps, dims.kv_heads, dims.head_dim).transpose(1, 2)
    keys.index_copy_(2, positions, k)
    values.index_copy_(2, positions, v)
    out = F.scaled_dot_product_attention(
        q,
        keys[:, :, :kv_length],
        values[:, :, :kv_length],
        attn_mask=mask,
        enable_gqa=dims.grouped,
    )
    return out.transpose(1, 2).reshape(rows, steps, q_width)


def _plain_layer_step(
    hidden, cos, sin, positions, mask, keys, values, kv_length: int, layer: _PlainLayer, dims
):
    """One decoder layer on tensors alone: what `torch.compile` fuses (norms, rotary,
    cache writes, residuals and SiLU into a few kernels around the matrix products)."""
    width = (hidden.shape[-1],)
    x = F.rms_norm(hidden, width, layer.input_norm, layer.eps)
    projected = F.linear(x, layer.qkv, layer.qkv_bias)
    out = _attend(projected, cos, sin, positions, mask, keys, values, kv_length, dims)
    hidden = hidden + F.linear(out, layer.output)
    x = F.rms_norm(hidden, width, layer.post_norm, layer.eps)
    gate, up = F.linear(x, layer.gate_up).chunk(2, dim=-1)
    return hidden + F.linear(F.silu(gate) * up, layer.down)


class _LayerStep(torch.nn.Module):
    """`_plain_layer_step` with the head counts as attributes: there they stay constants for
    `torch.compile(dynamic=True)`, which would make integer arguments symbols."""

    def __init__(self, dims: _Dims) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, hidden, cos, sin, positions, mask, keys, values, kv_length, layer):
        cache = (positions, mask, keys, values, kv_length)
        return _plain_layer_step(hidden, cos, sin, *cache, layer, self.dims)


class StaticLM(LMBackend):
    def __init__(
        self,
        model,
        max_length: int,
        max_rows: int = 1,
        cuda_graphs: bool | None = None,
        fuse_projections: bool = True,
        compile_layers: bool | None = None,
    ):
        reason = supports(model)
        if reason is not None:
            raise NotImplementedError(f"StaticLM does not run {reason}")
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        config = model.config
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = config.num_key_value_heads
        self.dims = _Dims(heads, kv_heads, head_dim, kv_heads != heads)
        self.max_length = max_length
        self.max_rows = max_rows
        capacity = max_length + TOKEN_BUCKETS[-1]  # padded steps write past the end
        shape = (max_rows, self.dims.kv_heads, capacity, head_dim)
        # Normal tensors even when built under inference_mode: the same kind of tensor
        # whoever builds the backend, so that compiled layers need no second version.
        with torch.inference_mode(False), torch.no_grad():
            self.keys = [
                torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in model.model.layers
            ]
            self.values = [torch.zeros_like(keys) for keys in self.keys]
            positions = torch.arange(capacity, device=self.device)[None]
            probe = torch.zeros(1, dtype=self.dtype, device=self.device)
            cos, sin = model.model.rotary_emb(probe, positions)
            self.cos, self.sin = cos[0].clone(), sin[0].clone()  # [capacity, head_dim]
        # Fewer, larger matrix products: q/k/v and gate/up each become one.
        self.fused = [
            (
                _fuse([layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
                _fuse([layer.mlp.gate_proj, layer.mlp.up_proj]),
            )
            if fuse_projections
            else (None, None)
            for layer in model.model.layers
        ]
        self.plain = [
            _PlainLayer.of(layer, qkv, gate_up, getattr(config, "hidden_act", None))
            for layer, (qkv, gate_up) in zip(model.model.layers, self.fused)
        ]
        self.length = 0
        self.rows = 1
        self.forward_passes = 0
        self.tokens_fed = 0
        use_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if compile_layers is None:
            compile_layers = use_graphs and self.device.type == "cuda"
        # One compiled function serves every layer (their tensors are its inputs). The
        # step's sizes are symbols from the start, so a process compiles it about four times
        # (one token or more, one row or more) whatever the buckets, lengths and backends.
        self.compiled = bool(compile_layers)
        self.layer_step = _LayerStep(self.dims)
        self.compile_scope = contextlib.nullcontext()
        if self.compiled:
            # One token or more, one row or more, buffers of one row or more: up to 6 graphs
            # (and a few more where sizes coincide); past the limit torch would run eagerly.
            self.compile_scope = torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT)
            self.layer_step = torch.compile(self.layer_step, dynamic=True)
            # sizes that never change stay constants (`dynamic=True` makes the rest symbols)
            for tensor in (*self.keys, *self.values):
                torch._dynamo.mark_static(tensor, 1)
                torch._dynamo.mark_static(tensor, 3)
            for tensor in (self.cos, self.sin):
                torch._dynamo.mark_static(tensor, 1)
            for plain in self.plain:
                for tensor in plain or ():
                    if isinstance(tensor, torch.Tensor):
                        torch._dynamo.mark_static(tensor)
        self.graphs = _GraphCache(self) if use_graphs else None

    # -- the step ------------------------------------------------------------------------------

    def _step(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        last: torch.Tensor | int,
        kv_length: int,
        masked: bool,
    ) -> torch.Tensor:
        """Feed `input_ids` [rows, T] at `positions` [T]; attend over the first
        `kv_length` cache positions (causally if `masked`, else to all of them); return
        float32 logits of position `last` [rows, V]."""
        model = self.model.model
        hidden = model.embed_tokens(input_ids)
        mask = None
        if masked or self.compiled:  # compiled: always a mask, one graph fewer
            keys_at = torch.arange(kv_length, device=self.device)
            mask = keys_at[None, :] <= positions[:, None]  # [T, kv_length]
        with self.compile_scope:
            hidden = self._layers(hidden, positions, mask, kv_length)
        last_hidden = (
            hidden[:, last] if isinstance(last, int) else hidden.index_select(1, last)[:, 0]
        )
        return self.model.lm_head(_rms_norm(model.norm, last_hidden)).float()

    def _layers(self, hidden, positions, mask, kv_length: int) -> torch.Tensor:
        for layer, keys, values, plain, (qkv, gate_up) in zip(
            self.model.model.layers, self.keys, self.values, self.plain, self.fused
        ):
            cache = (self.cos, self.sin, positions, mask, keys, values, kv_length)
            if plain is not None:
                hidden = self.layer_step(hidden, *cache, plain)
                continue
            attention = layer.self_attn
            x = _rms_norm(layer.input_layernorm, hidden)
            if qkv is not None:
                projected = F.linear(x, *qkv)
            else:
                projections = (attention.q_proj, attention.k_proj, attention.v_proj)
                projected = torch.cat([projection(x) for projection in projections], dim=-1)
            out = _attend(projected, *cache, self.dims)
            hidden = hidden + attention.o_proj(out)
            hidden = hidden + self._mlp(
                layer.mlp, gate_up, _rms_norm(layer.post_attention_layernorm, hidden)
            )
        return hidden

    @staticmethod
    def _mlp(mlp: torch.nn.Module, gate_up, x: torch.Tensor) -> torch.Tensor:
        if gate_up is None:
            return mlp(x)
        gate, up = F.linear(x, *gate_up).chunk(2, dim=-1)
        return mlp.down_proj(mlp.act_fn(gate) * up)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Feed `input_ids` [rows, n]; return the last position's float32 logits [rows, vocab]."""
        rows, steps = input_ids.shape
        if self.length + steps > self.max_length:
            raise ValueError(f"the static cache holds {self.max_length} positions")
        if self.graphs is not None and steps <= TOKEN_BUCKETS[-1]:
            # A graph writes its logits into the same buffer at every replay.
            logits = self.graphs.run(input_ids, self.length).clone()
        else:
            positions = torch.arange(self.length, self.length + steps, device=self.device)
            logits = self._step(input_ids, positions, steps - 1, self.length + steps, steps > 1)
        self.length += steps
        self.forward_passes += 1
        self.tokens_fed += input_ids.numel()
        return logits

    def crop(self, length: int) -> int:
        dropped = self._dropped(length)
        self.length = length
        return dropped

    def reset(self) -> None:
        self.length, self.rows = 0, 1

    # -- beams: rows of the buffers ------------------------------------------------------------

    def snapshot(self):
        return None  # row 0 keeps the shared prefix: beams only write after it

    def expand(self, rows: int) -> None:
        if rows > self.max_rows:
            raise ValueError(f"the static cache was built for {self.max_rows} rows")
        for buffer in (*self.keys, *self.values):
            buffer[1:rows, :, : self.length] = buffer[:1, :, : self.length]
        self.rows = rows

    def reorder(self, row_indices: torch.Tensor) -> None:
        rows = row_indices.numel()
        for buffer in (*self.keys, *self.values):
            buffer[:rows, :, : self.length] = buffer[row_indices, :, : self.length]

    def row_suffix(self, row: int, start: int):
        return start, [
            (keys[row, :, start : self.length].clone(), values[row, :, start : self.length].clone())
            for keys, values in zip(self.keys, self.values)
        ]

    def restore(self, prefix, suffix) -> None:
        start, layers = suffix
        for keys, values, (suffix_keys, suffix_values) in zip(self.keys, self.values, layers):
            end = start + suffix_keys.shape[1]
            keys[0, :, start:end] = suffix_keys
            values[0, :, start:end] = suffix_values
        self.length = start + layers[0][0].shape[1]
        self.rows = 1


def bucket(value: int, buckets) -> int:
    return next(size for size in buckets if size >= value)


def kv_bucket(length: int, limit: int) -> int:
    return min(max(MIN_KV_BUCKET, 2 ** math.ceil(math.log2(max(length, 1)))), limit)


class _GraphCache:
    """One captured step per (rows, token bucket, cache bucket); captured on first use."""

    def __init__(self, lm: StaticLM) -> None:
        self.lm = lm
        self.steps: dict[tuple[int, int, int], _GraphedStep] = {}
        self.pool = torch.cuda.graph_pool_handle() if lm.device.type == "cuda" else None

    def run(self, input_ids: torch.Tensor, length: int) -> torch.Tensor:
        rows, steps = input_ids.shape
        tokens = bucket(steps, TOKEN_BUCKETS)
        capacity = self.lm.max_length + TOKEN_BUCKETS[-1]
        key = (rows, tokens, kv_bucket(length + tokens, capacity))
        if key not in self.steps:
            self.steps[key] = _GraphedStep(self.lm, *key, pool=self.pool)
        return self.steps[key].run(input_ids, length, steps)


class _GraphedStep:
    def __init__(self, lm: StaticLM, rows: int, tokens: int, kv_length: int, pool) -> None:
        self.lm = lm
        self.input_ids = torch.zeros(rows, tokens, dtype=torch.long, device=lm.device)
        # Warm-up and capture run the step for real: point them at the scratch positions
        # past `max_length`, so that they cannot overwrite the sequence's keys and values.
        self.positions = torch.arange(lm.max_length, lm.max_length + tokens, device=lm.device)
        self.last = torch.zeros(1, dtype=torch.long, device=lm.device)
        self.kv_length = kv_length
        self.graph = None
        if lm.device.type != "cuda":
            self._call()  # no graph on a CPU: the same padded step, run eagerly
            return
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # allocator and kernel selection settle before capture
                self._call()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.logits = self._call()

    def _call(self) -> torch.Tensor:
        return self.lm._step(self.input_ids, self.positions, self.last, self.kv_length, True)

    def run(self, input_ids: torch.Tensor, length: int, steps: int) -> torch.Tensor:
        """Pad to the bucket; padded positions lie past the sequence's end."""
        self.input_ids[:, :steps].copy_(input_ids)
        self.input_ids[:, steps:].fill_(0)
        torch.arange(length, length + self.input_ids.shape[1], out=self.positions)
        self.last.fill_(steps - 1)
        if self.graph is None:
            return self._call()
        self.graph.replay()
        return self.logits
