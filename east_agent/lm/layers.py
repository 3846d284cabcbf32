"""One Llama-family decoder layer on plain tensors, over a preallocated KV cache.

Two shapes of step run through the same layer:
- *uniform*: rows 0 .. k-1 of the cache, one length, the same new positions for all (one
  stream, or its beams): hidden states [k, T, width]. This is the step CUDA graphs capture.
- *ragged*: any rows, each with its own length and its own number of new tokens (many
  streams at once). The new tokens are packed, [1, S, width], so the matrix products do no
  work on padding; only attention lays the queries out per row ([rows, T, ...]).
Both write each new key and value at its row's own positions and attend over those rows.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, TypeGuard

import torch
import torch.nn.functional as F


class Dims(NamedTuple):
    heads: int
    kv_heads: int
    head_dim: int
    grouped: bool  # fewer key/value heads than query heads


class Norm(Protocol):
    """An RMSNorm module (LlamaRMSNorm and its copies in the other Llama-family models)."""

    weight: torch.Tensor


class DecoderLayer(Protocol):
    """What is read of a Llama-family decoder layer's modules."""

    self_attn: torch.nn.Module
    mlp: torch.nn.Module
    input_layernorm: Norm
    post_attention_layernorm: Norm


class PlainLayer(NamedTuple):
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
    def of(
        cls,
        layer: DecoderLayer,
        qkv: tuple[torch.Tensor, torch.Tensor | None] | None,
        gate_up: tuple[torch.Tensor, torch.Tensor | None] | None,
        act: str | None,
    ) -> PlainLayer | None:
        """None unless every product is a plain bias-free (q/k/v aside) linear layer and the
        activation is SiLU: LoRA-wrapped layers run through their modules instead."""
        attention, mlp = layer.self_attn, layer.mlp
        if qkv is None or gate_up is None or gate_up[1] is not None or act not in ("silu", "swish"):
            return None
        output, down = attention.o_proj, mlp.down_proj
        if not (_bias_free_linear(output) and _bias_free_linear(down)):
            return None
        norm = layer.input_layernorm
        return cls(
            norm.weight,
            *qkv,
            output.weight,
            layer.post_attention_layernorm.weight,
            gate_up[0],
            down.weight,
            epsilon(norm),
        )


def _bias_free_linear(module: object) -> TypeGuard[torch.nn.Linear]:
    return type(module) is torch.nn.Linear and module.bias is None


class Queries(NamedTuple):
    """One group of a ragged step's queries, laid out [rows, T] for one attention.

    Token `tokens[i]` of the packed step sits at (`slots[0][i]`, `slots[1][i]`). The
    layout's rows are cache rows `rows`: `(first, count)`, a span read in place, or an
    index tensor, gathered. `mask` [rows, 1, T, kv_length] lets each query see its own
    row's positions up to its own (an empty slot sees position 0 only); on CPUs attention
    runs as products with `bias` (the mask as 0 / -inf, [rows, 1, 1, T, kv_length])."""

    tokens: torch.Tensor
    slots: tuple[torch.Tensor, torch.Tensor]
    rows: tuple[int, int] | torch.Tensor
    width: int
    mask: torch.Tensor | None
    bias: torch.Tensor | None


class Ragged(NamedTuple):
    """Where the packed tokens of a ragged step go: `rows` / `positions` [S], each token's
    cache row and position; `cos` / `sin` [S, 1, head_dim], the rotary tables at those
    positions (taken once for all layers); its queries in one group (padded to the longest
    row) or, on CPUs, several: every row's first new token, then the rest of the rows with
    more, in groups of rows that end near each other."""

    rows: torch.Tensor
    positions: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    groups: tuple[Queries, ...]
    shared: bool  # every row of the step holds the backend's shared prefix (`prefix` below)


def epsilon(norm: Norm) -> float:
    return getattr(norm, "variance_epsilon", 0.0) or getattr(norm, "eps", 1e-6)


def rms_norm(norm: Norm, x: torch.Tensor) -> torch.Tensor:
    """LlamaRMSNorm in one kernel: statistics in float32 as there; the scale is applied
    before the one rounding to the model's dtype (LlamaRMSNorm rounds, then scales)."""
    return F.rms_norm(x, (x.shape[-1],), norm.weight, epsilon(norm))


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _split(projected: torch.Tensor, dims: Dims):
    """q and k (side by side, [..., heads + kv_heads, head_dim]) and v from q/k/v."""
    q_width, kv_width = dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim
    qk = projected[..., : q_width + kv_width]
    qk = qk.unflatten(-1, (dims.heads + dims.kv_heads, dims.head_dim))
    v = projected[..., q_width + kv_width :].unflatten(-1, (dims.kv_heads, dims.head_dim))
    return qk, v


def attend(
    projected: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor | None,
    keys: torch.Tensor,
    values: torch.Tensor,
    kv_length: int,
    dims: Dims,
) -> torch.Tensor:
    """Uniform step: rotate q and k (side by side: one rotation; `cos`/`sin` are the tables
    of all positions), write k and v into rows 0 .. k-1 of the cache buffers at `positions`
    [T], attend over the first `kv_length` positions."""
    rows, steps = projected.shape[:2]
    keys, values = keys[:rows], values[:rows]
    qk, v = _split(projected, dims)
    qk = rotate(qk.transpose(1, 2), cos[positions], sin[positions])
    q, k = qk[:, : dims.heads], qk[:, dims.heads :]
    keys.index_copy_(2, positions, k)
    values.index_copy_(2, positions, v.transpose(1, 2))
    out = F.scaled_dot_product_attention(
        q,
        keys[:, :, :kv_length],
        values[:, :, :kv_length],
        attn_mask=mask,
        enable_gqa=dims.grouped,
    )
    return out.transpose(1, 2).reshape(rows, steps, dims.heads * dims.head_dim)


def attend_ragged(
    projected: torch.Tensor,
    ragged: Ragged,
    keys: torch.Tensor,
    values: torch.Tensor,
    dims: Dims,
    prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Ragged step: `projected` [1, S, ...] packed; each token's k and v go to its own row
    and position; queries are laid out per row for one attention over the rows' span.
    `prefix` ([kv_heads, P, D] keys and values): the first P positions, the same in every
    row of the step, read once for all rows (only with `bias`)."""
    qk, v = _split(projected[0], dims)  # [S, heads + kv_heads, D], [S, kv_heads, D]
    qk = rotate(qk, ragged.cos, ragged.sin)
    q, k = qk[:, : dims.heads], qk[:, dims.heads :]
    keys[ragged.rows, :, ragged.positions] = k
    values[ragged.rows, :, ragged.positions] = v
    out = torch.empty_like(q)
    start = 0 if prefix is None else prefix[0].shape[1]
    for group in ragged.groups:
        group_keys, group_values = _group_rows(group, keys, values, start)
        queries = q.new_zeros(group_keys.shape[0], group.width, *q.shape[1:])
        queries[group.slots] = q[group.tokens]
        if group.bias is None:
            group_out = F.scaled_dot_product_attention(
                queries.transpose(1, 2),
                group_keys,
                group_values,
                attn_mask=group.mask,
                enable_gqa=dims.grouped,
            ).transpose(1, 2)
        else:
            group_out = _attention_by_products(
                queries, group_keys, group_values, group.bias, dims, prefix
            )
        out[group.tokens] = group_out[group.slots]
    return out.reshape(1, -1, dims.heads * dims.head_dim)  # [1, S, width]


def _group_rows(group: Queries, keys, values, start: int):
    """The keys and values a group attends to: its rows, positions `start` to the mask's end."""
    bounds = group.mask if group.bias is None else group.bias
    assert bounds is not None  # a group has a mask or a bias (`StaticLM._queries`)
    end = bounds.shape[-1]
    if isinstance(group.rows, torch.Tensor):  # index_select: several times faster on CPUs
        return (
            keys[:, :, start:end].index_select(0, group.rows),
            values[:, :, start:end].index_select(0, group.rows),
        )
    first, count = group.rows
    return keys[first : first + count, :, start:end], values[first : first + count, :, start:end]


def _attention_by_products(queries, keys, values, bias, dims: Dims, prefix=None):
    """Attention as batched products and a softmax ([rows, T, heads, D] queries): on CPUs
    several times faster than `scaled_dot_product_attention` for the few queries per row
    of a ragged step. Each key/value head serves its group of query heads directly. With
    `prefix`, `keys`/`values` are the rows' positions after it, and the shared prefix is
    read once: one product per key/value head for all rows."""
    rows, width = queries.shape[:2]
    kv_heads, groups = dims.kv_heads, dims.heads // dims.kv_heads
    # [rows, kv_heads, groups * T, D]: the queries that share a key/value head, together
    grouped = queries.view(rows, width, kv_heads, groups, dims.head_dim)
    grouped = grouped.permute(0, 2, 3, 1, 4).reshape(rows, kv_heads, groups * width, -1)
    grouped = grouped * dims.head_dim**-0.5
    scores = grouped @ keys.transpose(-1, -2)
    if prefix is not None:
        scores = torch.cat([_by_head(grouped, prefix[0].transpose(-1, -2)), scores], dim=-1)
    scores = scores.view(rows, kv_heads, groups, width, -1) + bias  # bias [rows,1,1,T,kv]
    weights = torch.softmax(scores.view(rows, kv_heads, groups * width, -1), dim=-1)
    if prefix is None:
        out = weights @ values
    else:
        shared = prefix[1].shape[1]
        out = weights[..., shared:] @ values + _by_head(weights[..., :shared], prefix[1])
    out = out.view(rows, kv_heads, groups, width, dims.head_dim)
    return out.permute(0, 3, 1, 2, 4).reshape(rows, width, dims.heads, dims.head_dim)


def _by_head(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """[rows, kv_heads, M, K] @ [kv_heads, K, N] as one product per head, all rows at once."""
    rows, heads, m, k = left.shape
    stacked = left.transpose(0, 1).reshape(heads, rows * m, k)
    return (stacked @ right).view(heads, rows, m, -1).transpose(0, 1)


def plain_layer_step(
    hidden: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
    mask: torch.Tensor | None,
    keys: torch.Tensor,
    values: torch.Tensor,
    kv_length: int,
    layer: PlainLayer,
    dims: Dims,
) -> torch.Tensor:
    """One decoder layer on tensors alone (uniform step): what `torch.compile` fuses (norms,
    rotary, cache writes, residuals and SiLU into a few kernels around the products)."""
    width = (hidden.shape[-1],)
    x = F.rms_norm(hidden, width, layer.input_norm, layer.eps)
    projected = F.linear(x, layer.qkv, layer.qkv_bias)
    out = attend(projected, cos, sin, positions, mask, keys, values, kv_length, dims)
    return _mlp_residual(hidden + F.linear(out, layer.output), layer)


def plain_ragged_layer_step(
    hidden: torch.Tensor,
    ragged: Ragged,
    keys: torch.Tensor,
    values: torch.Tensor,
    prefix: tuple[torch.Tensor, torch.Tensor] | None,
    layer: PlainLayer,
    dims: Dims,
) -> torch.Tensor:
    """One decoder layer on tensors alone (ragged step)."""
    width = (hidden.shape[-1],)
    x = F.rms_norm(hidden, width, layer.input_norm, layer.eps)
    projected = F.linear(x, layer.qkv, layer.qkv_bias)
    out = attend_ragged(projected, ragged, keys, values, dims, prefix)
    return _mlp_residual(hidden + F.linear(out, layer.output), layer)


def _mlp_residual(hidden: torch.Tensor, layer: PlainLayer) -> torch.Tensor:
    x = F.rms_norm(hidden, (hidden.shape[-1],), layer.post_norm, layer.eps)
    gate, up = F.linear(x, layer.gate_up).chunk(2, dim=-1)
    return hidden + F.linear(F.silu(gate) * up, layer.down)


class LayerStep(torch.nn.Module):
    """`plain_layer_step` with the head counts as attributes: there they stay constants for
    `torch.compile(dynamic=True)`, which would make integer arguments symbols."""

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dims = dims

    def forward(
        self,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None,
        keys: torch.Tensor,
        values: torch.Tensor,
        kv_length: int,
        layer: PlainLayer,
    ) -> torch.Tensor:
        cache = (positions, mask, keys, values, kv_length)
        return plain_layer_step(hidden, cos, sin, *cache, layer, self.dims)


class RaggedLayerStep(torch.nn.Module):
    """`plain_ragged_layer_step`, likewise."""

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dims = dims

    def forward(
        self,
        hidden: torch.Tensor,
        ragged: Ragged,
        keys: torch.Tensor,
        values: torch.Tensor,
        prefix: tuple[torch.Tensor, torch.Tensor] | None,
        layer: PlainLayer,
    ) -> torch.Tensor:
        return plain_ragged_layer_step(hidden, ragged, keys, values, prefix, layer, self.dims)
