"""A static KV cache and a lean forward for Llama-family models; CUDA graphs on GPUs.

The streaming loop's steps are tiny (a unit's few tokens, or one target token), so a
generic `model(...)` call spends most of its time on Python and kernel launches rather
than on reading the weights. `StaticLM` implements the backend protocol
(`east_agent.lm.protocol`) but:
- keeps keys and values in preallocated buffers of `max_rows` rows, each row with its own
  length: a step writes in place, rolling a row back is moving its counter, and the buffers
  grow (doubling, up to `max_length`) only when a row needs more positions;
- runs the decoder layers itself (`east_agent.lm.layers`), over the model's own modules
  (projections, norms, MLP, rotary tables), with no mask or output objects to build;
- fewer, larger kernels: q/k/v and gate/up each run as one matrix product (the layers'
  weights become views into the fused tensor: no memory is added, the model's own forward
  and `save_pretrained` are unchanged; LoRA-wrapped layers stay apart), q and k rotate
  together, RMSNorm is one `F.rms_norm` kernel;
- batches streams: one forward takes rows of any lengths, each with its own number of new
  tokens, packed so that the matrix products read the weights once for all of them; the
  beam searches' row copies, saves and loads of a step are made together at the next
  forward, one gather and one scatter per buffer for all streams (`row_ops`);
- on CUDA, each layer's step also runs through `torch.compile` (one compiled function
  for all layers, their tensors being its inputs), which fuses the norms, the rotation,
  the cache writes, the residual additions and SiLU into a few kernels around the matrix
  products (on CPUs it does not pay: off there, and `compile_layers` decides);
- on CUDA, captures each one-stream step shape once as a CUDA graph and replays it: inputs
  are padded to a bucket of new tokens (1, 2, 4, ... 32) and attention runs over a bucket
  of cache positions (256, 512, ...), padded queries write only past the end of the
  sequence, where nothing reads before it is overwritten. Steps of many streams run
  uncaptured (their shapes vary with every step).

Supported: `LlamaForCausalLM` and the architectures that share its layer (Qwen2, and
Mistral for rows no longer than its sliding window), with rotary tables that do not change
with the length (not `dynamic` or `longrope` scaling). Anything else stays on `CachedLM`
(`supports`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

from east_agent.common.entry import CommandError
from east_agent.lm.layers import (
    Dims,
    LayerStep,
    PlainLayer,
    Queries,
    Ragged,
    RaggedLayerStep,
    attend,
    attend_ragged,
    rms_norm,
)
from east_agent.lm.module_scan import make_modules_scannable
from east_agent.lm.protocol import check_rows_fit, cropped_positions
from east_agent.lm.row_ops import PendingRowOps, Saved

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32)
MIN_KV_BUCKET = 256
RECOMPILE_LIMIT = 32
MIN_CAPACITY = 256  # positions per row the buffers start with (they grow when needed)


class KVCacheMemoryError(CommandError):
    """The key/value buffers outgrew the device's memory (the backend is unusable)."""


def out_of_memory(error: BaseException) -> bool:
    """Whether `error` is an allocation the device's memory could not hold: CUDA's error,
    or the CPU allocator's, a plain RuntimeError."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "can't allocate memory" in str(error)


def _zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype, device=device)


def kv_cache_advice(
    layers: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> str:
    """What buffers of `shape` (rows, kv heads, positions + padding, head dim) per layer
    need, and what to lower, for a device they do not fit on."""
    rows, positions = shape[0], shape[2] - TOKEN_BUCKETS[-1]
    needed = 2 * layers * math.prod(shape) * dtype.itemsize  # keys and values
    where = f"{device}"
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        where += f" ({_size(total)}, the weights included)"
    return (
        f"the KV cache does not fit on {where}: {rows} rows (streams x beams) of "
        f"{positions} positions need {_size(needed)} ({_size(needed / rows)} a row); use "
        "fewer streams or beams (--batch-size, --num-beams) or a shorter --max-context"
    )


def _size(count: float) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"


# Rotary scalings whose frequencies are the same at every length: `StaticLM` computes its
# tables once (`dynamic` and `longrope` change them with the length seen).
STATIC_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def supports(model: PreTrainedModel, max_length: int | None = None) -> str | None:
    """None if `StaticLM` can run `model` for rows of up to `max_length` positions (None:
    any), else the reason it cannot."""
    if model.config.model_type not in ("llama", "mistral", "qwen2"):
        return f"model type {model.config.model_type!r}"
    rope_type = getattr(model.model.rotary_emb, "rope_type", "default")
    if rope_type not in STATIC_ROPE_TYPES:
        return f"{rope_type!r} rotary scaling (its frequencies change with the length seen)"
    window = getattr(model.config, "sliding_window", None)
    # within its window, a sliding window attends to every position: plain attention
    if window and model.config.model_type != "llama" and (max_length or math.inf) > window:
        return (
            f"a sliding-window attention beyond its window ({window} positions: a "
            f"--max-context of {window} or less runs it)"
        )
    attention = model.model.layers[0].self_attn
    if hasattr(attention, "q_norm"):
        return "per-head q/k norms"
    return None


def _fuse(modules: list[torch.nn.Module]) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """One weight (and bias) for linear layers that read the same input, or None.

    The layers' own weights become views into the fused tensor, so the model's forward is
    unchanged and no memory is added; done once per model (a second StaticLM reuses it)."""
    linears = [module for module in modules if type(module) is torch.nn.Linear]
    if len(linears) != len(modules):
        return None  # e.g. LoRA-wrapped layers: run them one by one
    weights = [module.weight for module in linears]
    fused = getattr(linears[0], "_east_fused", None)
    if fused is not None and fused[0].data_ptr() == weights[0].data_ptr():
        return fused
    # plain tensors even under inference_mode: they are the model's parameters from now on
    with torch.inference_mode(False), torch.no_grad():
        weight = torch.cat([w.detach() for w in weights])
        biases = [module.bias for module in linears]
        bias = None if any(b is None for b in biases) else torch.cat([b.detach() for b in biases])
        start = 0
        for module in linears:
            rows = module.weight.shape[0]
            module.weight.data = weight[start : start + rows]
            if bias is not None:
                module.bias.data = bias[start : start + rows]
            start += rows
    # torch types a module's attributes as tensors or modules: this one is neither
    linears[0]._east_fused = (weight, bias)  # type: ignore[assignment]
    return weight, bias


def _mark_static(tensors, *dims: int) -> None:
    for tensor in tensors:
        if dims:
            for dim in dims:
                torch._dynamo.mark_static(tensor, dim)
        else:
            torch._dynamo.mark_static(tensor)


class StaticLM:
    ragged = True

    def __init__(
        self,
        model: PreTrainedModel,
        max_length: int,
        max_rows: int = 1,
        cuda_graphs: bool | None = None,
        fuse_projections: bool = True,
        compile_layers: bool | None = None,
    ) -> None:
        reason = supports(model, max_length)
        if reason is not None:
            raise NotImplementedError(f"StaticLM does not run {reason}")
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        config = model.config
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = config.num_key_value_heads
        self.dims = Dims(heads, kv_heads, head_dim, kv_heads != heads)
        self.max_length = max_length
        self.max_rows = max_rows
        # How a ragged step lays out its queries (`_ragged_geometry`): on CPUs in groups,
        # attention as products with the shared prefix read once; elsewhere in one padded
        # group through `scaled_dot_product_attention`. Tests set it to run the GPUs' way.
        self.split_queries = self.device.type == "cpu"
        self.lengths = [0] * max_rows
        # A prefix every row in `sharing` holds (the prompt): read once per ragged step.
        self.prefix: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.sharing: set[int] = set()
        self.forward_passes = 0
        self.tokens_fed = 0
        self.broken: str | None = None  # why the buffers were lost (a failed growth)
        self.row_ops = PendingRowOps()  # copies, saves and loads made at the next forward
        # Rotary tables of every position a step can touch (padded steps write past the end).
        with torch.inference_mode(False), torch.no_grad():
            positions = torch.arange(max_length + TOKEN_BUCKETS[-1], device=self.device)[None]
            probe = torch.zeros(1, dtype=self.dtype, device=self.device)
            cos, sin = model.model.rotary_emb(probe, positions)
            self.cos, self.sin = cos[0].clone(), sin[0].clone()  # [positions, head_dim]
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
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
            PlainLayer.of(layer, qkv, gate_up, getattr(config, "hidden_act", None))
            for layer, (qkv, gate_up) in zip(model.model.layers, self.fused)
        ]
        use_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if compile_layers is None:
            compile_layers = use_graphs and self.device.type == "cuda"
        # One compiled function serves every layer (their tensors are its inputs). The
        # step's sizes are symbols from the start, so a process compiles it a few times
        # (one token or more, one row or more) whatever the buckets, lengths and backends.
        self.compiled = bool(compile_layers)
        # the modules, or what `torch.compile` makes of them
        self.layer_step: Callable[..., torch.Tensor] = LayerStep(self.dims)
        self.ragged_layer_step: Callable[..., torch.Tensor] = RaggedLayerStep(self.dims)
        self.compile_scope = contextlib.nullcontext()
        if self.compiled:
            make_modules_scannable()
            # past the limit torch would run the step eagerly
            self.compile_scope = torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT)
            self.layer_step = torch.compile(self.layer_step, dynamic=True)
            self.ragged_layer_step = torch.compile(self.ragged_layer_step, dynamic=True)
            # sizes that never change stay constants (`dynamic=True` makes the rest symbols)
            _mark_static((self.cos, self.sin), 1)
            for plain in self.plain:
                _mark_static([t for t in plain or () if isinstance(t, torch.Tensor)])
        self.graphs = _GraphCache(self) if use_graphs else None
        self._allocate(min(MIN_CAPACITY, max_length))

    # -- buffers -------------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """Positions per row the buffers hold now (padded steps need `TOKEN_BUCKETS[-1]`
        more, past the end)."""
        return self.keys[0].shape[2] - TOKEN_BUCKETS[-1]

    def _allocate(self, capacity: int) -> None:
        """(Re)allocate the buffers for `capacity` positions a row, keeping what they hold.

        One layer at a time, each old buffer let go once copied: growing takes the new
        buffers and one layer's old ones, not both whole sets (256 streams of 5 beams of an
        8B model grow from 45 to 85 GiB; both at once would not fit on a 141 GiB device
        beside the weights). Normal tensors even when built under inference_mode: the same
        kind of tensor whoever builds the backend, so that compiled layers need no second
        version."""
        shape = (
            self.max_rows,
            self.dims.kv_heads,
            capacity + TOKEN_BUCKETS[-1],
            self.dims.head_dim,
        )
        self._make_row_ops()
        kept = max(self.lengths)
        if self.graphs is not None:
            self.graphs.clear()  # captured steps point at the old buffers
        old = (self.keys, self.values)
        self.keys, self.values = [], []
        try:
            self._move_into(shape, kept, old)
        except Exception as error:
            if not out_of_memory(error):
                raise
            # part old, part new: nothing to go on with. Nothing is kept either: the frame
            # that held the buffers went with the out-of-memory error, and this one's go now.
            self.keys, self.values = [], []
            del old
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.broken = kv_cache_advice(len(self.plain), shape, self.dtype, self.device)
        if self.broken is not None:
            raise KVCacheMemoryError(self.broken) from None
        if self.compiled:
            _mark_static(self.keys + self.values, 1, 3)

    def _move_into(self, shape: tuple[int, ...], kept: int, old: tuple[list, list]) -> None:
        """Make new buffers of `shape`, each holding the first `kept` positions of its old
        one, which goes before the next is made."""
        with torch.inference_mode(False), torch.no_grad():
            for layer in range(len(self.plain)):
                for old_buffers, new_buffers in zip(old, (self.keys, self.values)):
                    buffer = _zeros(shape, self.dtype, self.device)
                    if old_buffers:
                        buffer[:, :, :kept] = old_buffers[layer][:, :, :kept]
                        old_buffers[layer] = None  # gone before the next layer's are made
                    new_buffers.append(buffer)

    def _ensure_capacity(self, needed: int) -> None:
        if needed > self.capacity:
            grown = max(needed, 2 * self.capacity)
            self._allocate(min(2 ** math.ceil(math.log2(grown)), self.max_length))

    def _check_usable(self) -> None:
        if self.broken is not None:
            raise KVCacheMemoryError(self.broken)

    def _make_row_ops(self) -> None:
        """Make the row copies, saves and loads asked for since the last forward. The
        lengths moved when they were asked for: if they cannot be made, the rows no longer
        hold what their lengths say, and the backend refuses all work from then on."""
        if not (self.row_ops and self.keys):
            return
        try:
            with torch.no_grad():
                self.row_ops.make(self.keys + self.values)
        except Exception as error:
            if not out_of_memory(error):
                self.broken = f"the KV-cache copies failed ({type(error).__name__}: {error})"
                raise
            self.broken = (
                "the beam searches' KV-cache copies did not fit in the device's memory "
                "beside the cache; try a smaller --batch-size or fewer --num-beams"
            )
        finally:
            self.row_ops = PendingRowOps()
        self._check_usable()

    def memory_bytes(self) -> int:
        """Bytes the key/value buffers take now."""
        return sum(buffer.numel() * buffer.element_size() for buffer in self.keys + self.values)

    # -- the protocol --------------------------------------------------------------------------

    def length(self, row: int = 0) -> int:
        return self.lengths[row]

    @torch.inference_mode()
    def forward(self, rows: Sequence[int], tokens: Sequence[Sequence[int]]) -> torch.Tensor:
        self._check_usable()
        check_rows_fit(self, rows, tokens)
        self._make_row_ops()
        counts = [len(ids) for ids in tokens]
        self._ensure_capacity(max(self.lengths[row] + n for row, n in zip(rows, counts)))
        length = self.lengths[rows[0]]
        uniform = (
            list(rows) == list(range(len(rows)))
            and all(self.lengths[row] == length for row in rows)
            and all(n == counts[0] for n in counts)
        )
        if uniform:
            input_ids = torch.tensor(tokens, dtype=torch.long, device=self.device)
            logits = self._uniform_forward(input_ids, length)
        else:
            logits = self._ragged_forward(rows, tokens)
        for row, n in zip(rows, counts):
            self.lengths[row] += n
        self.forward_passes += 1
        self.tokens_fed += sum(counts)
        return logits

    def feed(self, token_ids: Sequence[int], row: int = 0) -> torch.Tensor:
        """Feed ids to one row and return its last logits [vocab]."""
        return self.forward([row], [token_ids])[0]

    def crop(self, row: int, length: int) -> int:
        dropped = cropped_positions(self.lengths[row], length)
        self.lengths[row] = length
        if length < self.prefix_length:
            self.sharing.discard(row)
        return dropped

    def reset(self) -> None:
        self._make_row_ops()  # what was saved before stays good
        self.lengths = [0] * self.max_rows
        self.prefix, self.sharing = None, set()

    def fork(self, source: int, targets: Sequence[int]) -> None:
        self.copy_rows(targets, [source] * len(targets), [0] * len(targets))

    def copy_rows(self, rows: Sequence[int], sources: Sequence[int], starts: Sequence[int]) -> None:
        """Recorded now, made with the other streams' at the next forward (`row_ops`)."""
        self._check_usable()
        copies = [
            (row, source, start, self.lengths[source])
            for row, source, start in zip(rows, sources, starts)
            if row != source
        ]
        if not copies:
            return
        self.row_ops.copy(copies)
        sharing_before = set(self.sharing)
        for row, source, start, end in copies:
            self.lengths[row] = end
            if start < self.prefix_length:  # then it shares the prefix as its source did
                if source in sharing_before:
                    self.sharing.add(row)
                else:
                    self.sharing.discard(row)

    @property
    def prefix_length(self) -> int:
        return 0 if self.prefix is None else self.prefix[0][0].shape[1]

    def share_prefix(self, row: int, length: int) -> None:
        """The first `length` positions of `row` (the prompt) are what every row forked from
        it holds: ragged steps of such rows read them once for all rows (on CPUs)."""
        self._check_usable()
        self._make_row_ops()
        self.prefix = [
            (keys[row, :, :length].clone(), values[row, :, :length].clone())
            for keys, values in zip(self.keys, self.values)
        ]
        self.sharing = {row}

    def save(self, row: int, start: int) -> Saved:
        """Recorded now, copied at the next forward (`row_ops`)."""
        self._check_usable()
        if not 0 <= start <= self.lengths[row]:
            raise ValueError(f"cannot save row {row} of {self.lengths[row]} positions from {start}")
        return self.row_ops.save(row, start, self.lengths[row])

    def load(self, row: int, saved: Saved) -> None:
        """Recorded now, made at the next forward (`row_ops`)."""
        self._check_usable()
        self._ensure_capacity(saved.end)
        self.row_ops.load(row, saved)
        self.lengths[row] = saved.end
        if saved.start < self.prefix_length:
            self.sharing.discard(row)

    def release(self, rows: Sequence[int]) -> None:
        for row in rows:
            self.lengths[row] = 0
            self.sharing.discard(row)

    # -- uniform steps: rows 0 .. k-1, one length --------------------------------------------

    def _uniform_forward(self, input_ids: torch.Tensor, length: int) -> torch.Tensor:
        steps = input_ids.shape[1]
        if self.graphs is not None and steps <= TOKEN_BUCKETS[-1]:
            # A graph writes its logits into the same buffer at every replay.
            return self.graphs.run(input_ids, length).clone()
        positions = torch.arange(length, length + steps, device=self.device)
        return self._step(input_ids, positions, steps - 1, length + steps, steps > 1)

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
        hidden = self.model.model.embed_tokens(input_ids)
        mask = None
        if masked or self.compiled:  # compiled: always a mask, one graph fewer
            keys_at = torch.arange(kv_length, device=self.device)
            mask = keys_at[None, :] <= positions[:, None]  # [T, kv_length]
        with self.compile_scope:
            hidden = self._layers(hidden, positions, mask, kv_length)
        last_hidden = (
            hidden[:, last] if isinstance(last, int) else hidden.index_select(1, last)[:, 0]
        )
        return self._logits(last_hidden)

    def _logits(self, last_hidden: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(rms_norm(self.model.model.norm, last_hidden)).float()

    def _layers(self, hidden, positions, mask, kv_length: int) -> torch.Tensor:
        for layer, keys, values, plain, (qkv, gate_up) in zip(
            self.model.model.layers, self.keys, self.values, self.plain, self.fused
        ):
            cache = (self.cos, self.sin, positions, mask, keys, values, kv_length)
            if plain is not None:
                hidden = self.layer_step(hidden, *cache, plain)
                continue
            out = attend(_projected(layer, qkv, hidden), *cache, self.dims)
            hidden = _module_rest(layer, gate_up, hidden, out)
        return hidden

    # -- ragged steps: any rows, each its own length and token count -------------------------

    def _ragged_forward(self, rows: Sequence[int], tokens: Sequence[Sequence[int]]):
        geometry, flat_ids, last = self._ragged_geometry(rows, tokens)
        hidden = self.model.model.embed_tokens(flat_ids)[None]  # [1, S, width]
        with self.compile_scope:
            prefixes: Sequence[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.keys)
            if geometry.shared:
                assert self.prefix is not None  # `shared` only where there is one
                prefixes = self.prefix
            for layer, keys, values, prefix, plain, (qkv, gate_up) in zip(
                self.model.model.layers, self.keys, self.values, prefixes, self.plain, self.fused
            ):
                if plain is not None:
                    hidden = self.ragged_layer_step(hidden, geometry, keys, values, prefix, plain)
                    continue
                projected = _projected(layer, qkv, hidden)
                out = attend_ragged(projected, geometry, keys, values, self.dims, prefix)
                hidden = _module_rest(layer, gate_up, hidden, out)
        return self._logits(hidden[0, last])

    def _ragged_geometry(self, rows: Sequence[int], tokens: Sequence[Sequence[int]]):
        """The packed ids, each token's row and position, the query groups, and the index
        of each row's last token."""
        flat: list[int] = []
        token_rows: list[int] = []
        token_positions: list[int] = []
        last: list[int] = []
        for row, ids in zip(rows, tokens):
            flat += ids
            token_rows += [row] * len(ids)
            token_positions += range(self.lengths[row], self.lengths[row] + len(ids))
            last.append(len(flat) - 1)
        packed = torch.tensor([flat, token_rows, token_positions], device=self.device)
        split = self.split_queries
        shared = split and self.prefix is not None and self.sharing.issuperset(rows)
        if split:
            groups = self._split(rows, tokens, self.prefix_length if shared else 0)
        else:
            groups = self._padded(rows, tokens, max(token_positions) + 1)
        cos, sin = self.cos[packed[2]][:, None], self.sin[packed[2]][:, None]
        geometry = Ragged(packed[1], packed[2], cos, sin, groups, shared)
        return geometry, packed[0], torch.tensor(last, device=self.device)

    def _padded(self, rows, tokens, kv_length: int) -> tuple[Queries, ...]:
        """One group: every row of the span, padded to the most new tokens (GPUs)."""
        first, layout, offset = min(rows), _Layout(), 0
        for row, ids in zip(rows, tokens):
            layout.add(offset, row - first, self.lengths[row], len(ids))
            offset += len(ids)
        width = max(len(ids) for ids in tokens)
        return (self._queries(layout, (first, max(rows) - first + 1), width, kv_length),)

    def _split(self, rows, tokens, start: int) -> tuple[Queries, ...]:
        """CPUs: each row's first new token over the rows' span, one query a row, up to the
        longest of those rows; then the other new tokens of the rows that have more, their
        rows gathered, in a few groups of rows that end near each other (`wide_groups`;
        the rows' own positions begin at `start`, after the prefix read once for all).
        Most rows bring one token, and there products over a few queries a row cost about
        as much as over one: padding every row to the longest costs more than the gather."""
        first, narrow, wide, offset = min(rows), _Layout(), [], 0
        for row, ids in zip(rows, tokens):
            length = self.lengths[row]
            narrow.add(offset, row - first, length, 1)
            if len(ids) > 1:
                wide.append(WideRow(length + len(ids), row, offset + 1, len(ids) - 1))
            offset += len(ids)
        narrow_end = max(self.lengths[row] for row in rows) + 1
        groups = [self._queries(narrow, (first, max(rows) - first + 1), 1, narrow_end)]
        for part in wide_groups(sorted(wide), start):
            layout = _Layout()
            for layout_row, (end, _, token, count) in enumerate(part):
                layout.add(token, layout_row, end - count, count)  # from its second token
            index = torch.tensor([wide_row.row for wide_row in part], device=self.device)
            width = max(wide_row.count for wide_row in part)
            groups.append(self._queries(layout, index, width, part[-1].end))
        return tuple(groups)

    def _queries(self, layout: _Layout, rows, width: int, kv_length: int) -> Queries:
        tokens, layout_rows, columns, positions = torch.tensor(layout.lists, device=self.device)
        count = rows.shape[0] if isinstance(rows, torch.Tensor) else rows[1]
        query_positions = torch.zeros(count, width, dtype=torch.long, device=self.device)
        query_positions[layout_rows, columns] = positions
        mask = torch.arange(kv_length, device=self.device) <= query_positions[..., None]
        if not self.split_queries:
            return Queries(tokens, (layout_rows, columns), rows, width, mask[:, None], None)
        bias = torch.zeros(mask.shape, dtype=self.dtype, device=self.device)
        bias = bias.masked_fill_(~mask, float("-inf"))[:, None, None]
        return Queries(tokens, (layout_rows, columns), rows, width, None, bias)


# -- layers that run through their modules (LoRA-wrapped, other activations) -----------------


def _projected(layer, qkv, hidden: torch.Tensor) -> torch.Tensor:
    x = rms_norm(layer.input_layernorm, hidden)
    if qkv is not None:
        return F.linear(x, *qkv)
    attention = layer.self_attn
    projections = (attention.q_proj, attention.k_proj, attention.v_proj)
    return torch.cat([projection(x) for projection in projections], dim=-1)


def _module_rest(layer, gate_up, hidden: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Output projection, residuals and MLP through the layer's modules."""
    hidden = hidden + layer.self_attn.o_proj(out)
    x = rms_norm(layer.post_attention_layernorm, hidden)
    mlp = layer.mlp
    if gate_up is None:
        return hidden + mlp(x)
    gate, up = F.linear(x, *gate_up).chunk(2, dim=-1)
    return hidden + mlp.down_proj(mlp.act_fn(gate) * up)


class _Layout:
    """Where the queries of one group go: packed token, layout row, column, position."""

    def __init__(self) -> None:
        self.lists: list[list[int]] = [[], [], [], []]

    def add(self, token: int, layout_row: int, position: int, count: int) -> None:
        """`count` consecutive tokens from packed index `token`, at `position` on."""
        tokens, layout_rows, columns, positions = self.lists
        tokens += range(token, token + count)
        layout_rows += [layout_row] * count
        columns += range(count)
        positions += range(position, position + count)


class WideRow(NamedTuple):
    """A row of a ragged step with new tokens after its first: where its last one ends, the
    cache row, the packed index of its second token, how many tokens from there."""

    end: int
    row: int
    token: int
    count: int  # type: ignore[assignment]  # a field: shadows tuple.count, never called


# What one more attention group costs on a CPU, in query-position pairs of attention work:
# a group is some fifteen more small operators in every layer, each a fixed ~10 us whatever
# its size (measured on the demo model, one thread).
GROUP_COST = 4096
MAX_WIDE_GROUPS = 4


def wide_groups(wide: list[WideRow], start: int) -> list[list[WideRow]]:
    """Cut `wide` (sorted by end) into runs of rows that end near each other: each group
    attends over its own rows' positions `start` .. its last end, its queries padded to its
    widest row; a cut is made where it saves more attention work than a group costs."""
    if not wide:
        return []
    parts = [wide]
    while len(parts) < MAX_WIDE_GROUPS:
        saving, at, which = max(_best_cut(part, start) + (i,) for i, part in enumerate(parts))
        if saving <= GROUP_COST:
            break
        part = parts[which]
        parts[which : which + 1] = [part[:at], part[at:]]
    return parts


def _best_cut(part: list[WideRow], start: int) -> tuple[int, int]:
    """(work saved, index) of the best cut of one group in two."""
    widest_before, widest = [], 0
    for wide_row in part:
        widest = max(widest, wide_row.count)
        widest_before.append(widest)
    best, at, widest_after = None, 0, 0
    for cut in range(len(part) - 1, 0, -1):
        widest_after = max(widest_after, part[cut].count)
        work = _work(cut, widest_before[cut - 1], part[cut - 1].end - start)
        work += _work(len(part) - cut, widest_after, part[-1].end - start)
        if best is None or work < best:
            best, at = work, cut
    if best is None:
        return 0, 0
    return _work(len(part), widest_before[-1], part[-1].end - start) - best, at


def _work(rows: int, width: int, positions: int) -> int:
    """Query-position pairs of a group: its rows, padded to its widest, over its span."""
    return rows * width * positions


def bucket(value: int, buckets: Sequence[int]) -> int:
    return next(size for size in buckets if size >= value)


def kv_bucket(length: int, limit: int) -> int:
    return min(max(MIN_KV_BUCKET, 2 ** math.ceil(math.log2(max(length, 1)))), limit)


class _GraphCache:
    """One captured uniform step per (rows, token bucket, cache bucket); captured on first use."""

    def __init__(self, lm: StaticLM) -> None:
        self.lm = lm
        self.steps: dict[tuple[int, int, int], _GraphedStep] = {}
        self.pool = torch.cuda.graph_pool_handle() if lm.device.type == "cuda" else None

    def clear(self) -> None:
        self.steps = {}

    def run(self, input_ids: torch.Tensor, length: int) -> torch.Tensor:
        rows, steps = input_ids.shape
        tokens = bucket(steps, TOKEN_BUCKETS)
        capacity = self.lm.keys[0].shape[2]
        key = (rows, tokens, kv_bucket(length + tokens, capacity))
        if key not in self.steps:
            self.steps[key] = _GraphedStep(self.lm, *key, pool=self.pool)
        return self.steps[key].run(input_ids, length, steps)


class _GraphedStep:
    def __init__(self, lm: StaticLM, rows: int, tokens: int, kv_length: int, pool) -> None:
        self.lm = lm
        self.input_ids = torch.zeros(rows, tokens, dtype=torch.long, device=lm.device)
        # Warm-up and capture run the step for real: point them at the scratch positions
        # past the buffers' capacity, so that they cannot overwrite the sequence's keys.
        scratch = lm.capacity
        self.positions = torch.arange(scratch, scratch + tokens, device=lm.device)
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
