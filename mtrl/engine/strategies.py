"""Ways to obtain the per-task Jacobian ``J (T, P)`` of the terms ``S (T,)``, as per-parameter blocks.

``J`` is kept as a list of blocks, one ``(T, numel(p))`` per shared parameter ``p`` in the given
order, so that ``G = Σ_blocks J_b J_bᵀ`` and ``d = wᵀJ`` never need the concatenated ``(T, P)``
matrix (only Jacobian aggregators ask for it, via :func:`concat_blocks`). Strategies:

* :func:`reference_blocks`: ``T`` calls of ``torch.autograd.grad`` (simple; tests the others).
* :func:`batched_blocks`: one vectorised backward with the identity as a batch of cotangents
  (``is_grads_batched=True``, the mechanism of torchjd's autojac), in chunks of
  ``chunk_size`` rows; falls back to :func:`reference_blocks` where vmap cannot run the graph.
* :func:`partitioned_blocks`: one ordinary backward to the outputs of the hooked ``nn.Linear``
  layers; per task ``∂S_t/∂W = δ_tᵀ X_t`` by one ``bmm`` over ``(T, n, ·)`` (hooked ``nn.LayerNorm``:
  ``∂S_t/∂γ = Σ_rows δ_t ⊙ X̂_t``; see :mod:`mtrl.engine.capture`).

Shapes: ``S (T,)``; a block ``(T, numel(p))``; ``w (T,)``; ``d`` per parameter ``p.shape``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtrl.engine.capture import LinearCall, LinearCapture

__all__ = [
    "VmapStatus",
    "Workspace",
    "batched_blocks",
    "combine_blocks",
    "concat_blocks",
    "gram_from_blocks",
    "is_vmap_unsupported",
    "partitioned_blocks",
    "reference_blocks",
    "split_direction",
]


def _rows(grads: Sequence[Tensor | None], params: Sequence[Tensor], T: int) -> list[Tensor]:
    """Batched grads ``(T, *p.shape)`` (or ``None`` for an unreached parameter) → blocks ``(T, numel)``."""
    return [
        g.reshape(T, -1) if g is not None else p.new_zeros(T, p.numel()) for g, p in zip(grads, params, strict=True)
    ]


def reference_blocks(terms_T: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    """``J`` by one ``torch.autograd.grad`` per task (``T`` backward passes); the graph is retained."""
    T = terms_T.shape[0]
    rows: list[list[Tensor]] = [[] for _ in params]
    for t in range(T):
        grads = torch.autograd.grad(terms_T[t], params, retain_graph=True, allow_unused=True)
        for rows_p, g, p in zip(rows, grads, params, strict=True):
            rows_p.append(g.reshape(-1) if g is not None else p.new_zeros(p.numel()))
    return [torch.stack(rows_p) for rows_p in rows]


#: Messages of the errors autograd raises when vmap cannot batch an operation of the backward graph
#: (legacy ``_vmap_internals`` behind ``is_grads_batched`` and functorch): missing batching rules
#: (``.item()``, data-dependent control flow, ops without a fallback). Anything else (out of memory,
#: shape errors, real bugs) is re-raised.
_VMAP_UNSUPPORTED = re.compile(r"[Bb]atching rule|vmap|[Bb]atched ?[Tt]ensor|could not generate a fallback")


@dataclass
class VmapStatus:
    """Whether vmap failed on this engine's graph; then :func:`batched_blocks` goes straight to the loop.

    One per :class:`~mtrl.engine.GradientEngine` (one model/loss group), so a vmap-incompatible model
    warns once and is not retried every call; ``reason`` keeps the first error message.
    """

    failed: bool = False
    reason: str = ""


def is_vmap_unsupported(err: RuntimeError) -> bool:
    """True when ``err`` says vmap cannot batch an operation (see ``_VMAP_UNSUPPORTED``)."""
    return bool(_VMAP_UNSUPPORTED.search(str(err)))


def batched_blocks(
    terms_T: Tensor, params: Sequence[Tensor], chunk_size: int | None = None, status: VmapStatus | None = None
) -> list[Tensor]:
    """``J`` by vectorised backward passes over ``chunk_size`` rows of ``I_T`` at a time (all when None).

    The graph is retained (a failed vmap must leave it intact for the fallback). Falls back to
    :func:`reference_blocks` when autograd cannot batch the graph (torchjd's listed cases: compiled
    functions, RNNs on CUDA; any op without a batching rule, e.g. ``.item()`` in a backward); only
    those errors are caught (out-of-memory and other errors propagate). With a ``status`` the
    failure is remembered (one warning, no retry on later calls); without one it warns every call.
    """
    if status is not None and status.failed:
        return reference_blocks(terms_T, params)
    T = terms_T.shape[0]
    step = T if chunk_size is None else chunk_size
    eye_TT = torch.eye(T, dtype=terms_T.dtype, device=terms_T.device)
    chunks: list[list[Tensor]] = []
    try:
        for start in range(0, T, step):
            cotangents = eye_TT[start : start + step]
            grads = torch.autograd.grad(
                terms_T, params, grad_outputs=cotangents, retain_graph=True, allow_unused=True, is_grads_batched=True
            )
            chunks.append(_rows(grads, params, cotangents.shape[0]))
    except RuntimeError as err:
        if not is_vmap_unsupported(err):
            raise
        if status is not None:
            status.failed, status.reason = True, str(err)
        warnings.warn(
            f"batched Jacobian failed under vmap ({err}); using the reference loop"
            + (" for this engine from now on" if status is not None else ""),
            stacklevel=3,
        )
        return reference_blocks(terms_T, params)
    if len(chunks) == 1:
        return chunks[0]
    return [torch.cat(parts) for parts in zip(*chunks, strict=True)]


def _task_major(x: Tensor, T: int, what: str) -> Tensor:
    """View ``(..., f)`` with task-major rows as ``(T, n, f)``; refuse a row count not divisible by ``T``."""
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    if x.dim() < 2 or rows % T != 0:
        raise ValueError(
            f"task_partitioned needs the rows of every captured layer {what} grouped by task with equal "
            f"counts, but a tensor of shape {tuple(x.shape)} has {rows} rows, not divisible by T = {T}"
        )
    return x.reshape(T, rows // T, x.shape[-1])


def partitioned_blocks(
    capture: LinearCapture,
    terms_T: Tensor,
    params: Sequence[Tensor],
    others: Sequence[Tensor],
    retain_graph: bool = False,
    workspace: Workspace | None = None,
) -> tuple[list[Tensor], list[Tensor | None]]:
    """``(J blocks of params, ∇ Σ_t S_t of others)`` from ONE ordinary backward (graph freed unless
    ``retain_graph``).

    ``params`` must all be weights or biases of layers hooked by ``capture``; ``others`` (task and
    balancer parameters) get the plain gradient of ``Σ_t S_t`` from the same backward. With a
    ``workspace`` the weight blocks are written into buffers kept there between calls (the blocks are
    then views of those buffers, valid until the next call): a fresh ``T·out·in`` allocation each
    step costs page faults that made the CPU engine ~15–30% slower.
    """
    T = terms_T.shape[0]
    if T != capture.num_tasks:
        raise ValueError(f"capture was built for {capture.num_tasks} tasks but the losses have T = {T}")
    if not capture.calls:
        raise ValueError(
            "task_partitioned: the capture recorded nothing; run the forward that produces the losses inside "
            "`with capture.record():` with grad enabled, and pass the same capture to engine.backward"
        )
    owner = _owners(capture)
    uncovered = [tuple(p.shape) for p in params if id(p) not in owner]
    if uncovered:
        raise ValueError(
            f"task_partitioned: shared parameters with shapes {uncovered} are not the weight/bias of an nn.Linear "
            f"or nn.LayerNorm hooked by the capture; capture the module holding all shared parameters, or use "
            f"strategy='batched'"
        )
    wanted = {owner[id(p)][0] for p in params}
    layers = {id(layer): layer for layer in capture.layers}
    calls: list[LinearCall] = [c for c in capture.calls if id(c.layer) in wanted]
    for c in calls:
        if c.inputs._version != c.input_version:
            raise ValueError(
                f"task_partitioned: the input of {c.layer} was modified in place after the layer used it, "
                f"so the recorded input no longer is the one its gradient needs; avoid in-place edits there"
            )
        if c.output_version is not None and c.output._version != c.output_version:
            raise ValueError(
                f"task_partitioned: the output of {c.layer} was modified in place after the forward hook "
                f"(e.g. nn.ReLU(inplace=True)); use out-of-place activations (or torch >= 2.2, which handles them)"
            )
    grads = torch.autograd.grad(
        terms_T.sum(), [c.output for c in calls] + list(others), retain_graph=retain_graph, allow_unused=True
    )
    deltas = grads[: len(calls)]
    other_grads: list[Tensor | None] = list(grads[len(calls) :])
    per_layer: dict[int, tuple[list[Tensor], list[Tensor]]] = {}
    for c, delta in zip(calls, deltas, strict=True):
        if delta is None:
            continue
        xs, ds = per_layer.setdefault(id(c.layer), ([], []))
        xs.append(_task_major(c.inputs, T, "input"))
        ds.append(_task_major(delta, T, "output"))
    blocks: list[Tensor] = []
    cache: dict[int, tuple[Tensor, Tensor]] = {}
    for p in params:
        layer_id, is_weight = owner[id(p)]
        if layer_id not in per_layer:
            blocks.append(p.new_zeros(T, p.numel()))
            continue
        pair = cache.get(layer_id)
        if pair is None:
            xs, ds = per_layer[layer_id]
            x_TNI = xs[0] if len(xs) == 1 else torch.cat(xs, dim=1)
            d_TNO = ds[0] if len(ds) == 1 else torch.cat(ds, dim=1)
            # J in the parameters' dtype (under autocast the layer output, hence δ, may be float16)
            if x_TNI.dtype != p.dtype:
                x_TNI = x_TNI.to(p.dtype)
            if d_TNO.dtype != p.dtype:
                d_TNO = d_TNO.to(p.dtype)
            pair = cache[layer_id] = (x_TNI, d_TNO)
        x_TNI, d_TNO = pair
        layer = layers[layer_id]
        if isinstance(layer, nn.LayerNorm):
            if is_weight:  # ∂S_t/∂γ = Σ_rows δ_t ⊙ x̂_t, x̂ the input row normalised without affine
                x_hat = F.layer_norm(x_TNI, layer.normalized_shape, None, None, layer.eps)
                blocks.append((d_TNO * x_hat).sum(dim=1))  # (T, features)
            else:
                blocks.append(d_TNO.sum(dim=1))
        elif is_weight:
            out_TOI = (
                None if workspace is None else workspace.buffer(layer_id, (T, d_TNO.shape[2], x_TNI.shape[2]), x_TNI)
            )
            blocks.append(torch.bmm(d_TNO.transpose(1, 2), x_TNI, out=out_TOI).view(T, -1))  # (T, out·in)
        else:
            blocks.append(d_TNO.sum(dim=1))  # (T, out)
    return blocks, other_grads


def _owners(capture: LinearCapture) -> dict[int, tuple[int, bool]]:
    """``{id(param): (id(layer), is_weight)}`` for the weights and biases of the hooked layers."""
    owner: dict[int, tuple[int, bool]] = {}
    for layer in capture.layers:
        owner[id(layer.weight)] = (id(layer), True)
        if layer.bias is not None:
            owner[id(layer.bias)] = (id(layer), False)
    return owner


class Workspace:
    """Buffers reused across engine calls, keyed by owner id, shape, dtype and device."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[object, ...], Tensor] = {}

    def buffer(self, owner: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised tensor of ``shape`` with the dtype/device of ``like``, the same one each call."""
        key = (owner, shape, like.dtype, like.device)
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._buffers[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def clear(self) -> None:
        self._buffers = {}

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


#: Columns per partial product in :func:`gram_from_blocks` (see there).
GRAM_CHUNK = 2048
#: The chunk for ``T <= GRAM_SMALL_T`` tasks: 1024 columns measured ~12% faster than 2048 at T = 10
#: (MKL, one thread; 2048 was as fast or faster from T = 16 up, 4% faster at T = 50).
GRAM_CHUNK_SMALL_T = 1024
GRAM_SMALL_T = 12


def gram_from_blocks(blocks: Sequence[Tensor]) -> Tensor:
    """``G = Σ_b J_b J_bᵀ`` as float64 ``(T, T)``.

    Each block is cut into chunks of :data:`GRAM_CHUNK` columns (:data:`GRAM_CHUNK_SMALL_T` for at most
    :data:`GRAM_SMALL_T` tasks); the ``(T, T)`` products of all chunks run as ONE ``bmm`` in the blocks'
    dtype (float16/bfloat16 blocks in float32) and are summed in float64. Short float32 dot products
    keep the rounding of ``G`` near ``eps(float32)·tr(G)`` whatever ``P`` (one float32 ``J Jᵀ`` over
    ``P = 3·10⁵`` columns measured ~1e-6 relative, above the ``T·eps(float32)`` rank cut-off of the
    Gramian weightings at small ``T``; chunked: ~1e-9), and the small batched products measured 2×
    faster on the CPU than one ``(T, P)·(P, T)`` product at T = 10.
    Blocks narrower than a chunk (biases) are concatenated first (one product instead of one each).
    """
    wide: list[Tensor] = []
    narrow: list[Tensor] = []
    for block in blocks:
        if block.dtype in (torch.float16, torch.bfloat16):
            block = block.float()
        (narrow if block.shape[1] < GRAM_CHUNK else wide).append(block)
    if len(narrow) > 1 and len({(b.dtype, b.device) for b in narrow}) == 1:
        wide.append(torch.cat(narrow, dim=1))
    else:
        wide.extend(narrow)
    gram: Tensor | None = None
    for block in wide:
        T, width = block.shape
        chunk = GRAM_CHUNK_SMALL_T if T <= GRAM_SMALL_T else GRAM_CHUNK
        full = width // chunk
        parts: list[Tensor] = []
        if full > 1:
            chunks = block[:, : full * chunk].reshape(T, full, chunk).transpose(0, 1)  # (C, T, k)
            parts.append(torch.bmm(chunks, chunks.transpose(1, 2)).to(torch.float64).sum(dim=0))
            block = block[:, full * chunk :]
        if block.shape[1]:
            parts.append((block @ block.T).to(torch.float64))
        for part in parts:
            gram = part if gram is None else gram + part
    if gram is None:
        T = blocks[0].shape[0] if blocks else 0
        device = blocks[0].device if blocks else None
        return torch.zeros(T, T, dtype=torch.float64, device=device)
    return gram


def combine_blocks(weights_T: Tensor, blocks: Sequence[Tensor], params: Sequence[Tensor]) -> list[Tensor]:
    """``d = wᵀ J`` per parameter, shaped like the parameters."""
    cast: dict[torch.dtype, Tensor] = {}
    out: list[Tensor] = []
    for b, p in zip(blocks, params, strict=True):
        w = cast.get(b.dtype)
        if w is None:
            w = cast[b.dtype] = weights_T if weights_T.dtype == b.dtype else weights_T.to(b.dtype)
        out.append((w @ b).view(p.shape))
    return out


def concat_blocks(blocks: Sequence[Tensor]) -> Tensor:
    """The full ``J (T, P)`` in parameter order."""
    return torch.cat(list(blocks), dim=1)


def split_direction(d_P: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    """Cut ``d (P,)`` back into per-parameter tensors."""
    return [part.view(p.shape) for part, p in zip(d_P.split([p.numel() for p in params]), params, strict=True)]
