"""Hand-built sGraphs of the fused kernels the search should find, with their unfused references.

Every example has three forms:

- a **fused builder** (``tiled_matmul``, ``rmsnorm_matmul``, ...): a validated :class:`KernelGraph`
  whose work is done by custom kernels (one, except split-KV decoding which needs two);
- a **reference builder** (``reference_*``): the unfused program of predefined ops only, as the
  frontend produces it from the JAX function;
- a **numpy reference** (``numpy_*``): the math, in float64, on numpy arrays in the graphs' input order.

Sizes and tiling parameters may be ints or symbols (:func:`~prism_jax.ir.symbolic.sym`). When the
tiling is left out it is symbolic: grid dims are ``gx, gy, gz`` (in grid order) and the for-loop
extent is ``F``, so ``tiled_matmul(sym("M"), sym("K"), sym("N"))`` is the fully symbolic sGraph;
bind it with :func:`~prism_jax.ir.transform.instantiate` (``BlockGraph.constraints`` says which
assignments are legal). :data:`EXAMPLES` lists every example with default sizes and several legal
tilings; ``EXAMPLES[name].symbolic()`` / ``.concrete(tiling)`` / ``.env(tiling)`` tie them together, and
:func:`random_inputs` makes inputs for any concrete graph.

Conventions shared by all examples:

- Matrices are row-major as JAX has them: ``X [n, d]``, weights ``W [d, N]``; attention tensors are
  ``Q [b, h, q, D]``, ``K, V [b, h, kv, D]`` (split-KV decoding uses ``[h, q, D]``: fold the batch into
  the heads).
- Gains of an RMSNorm are vectors (``g [d]``) as in the JAX programs. The IR broadcasts same-rank
  operands only, so both the fused and the reference graph reshape the gain at the kernel level into a
  row (``[1, d]``, or ``[1, 1, 1, D]`` for attention) before anything else; the custom kernel then
  reads that row like any other input.
- RMSNorm: the references compute ``x * rsqrt(sum(x·x, -1) / d + eps) * g`` as JAX does; fused kernels
  accumulate the rows' sums of squares in the loop and multiply by ``rsqrt(sum / d + eps)`` after it
  (row scaling commutes with the matmul).
- Constants that depend on sizes are symbolic: the mean over ``d`` divides by a CONSTANT whose value
  is the size ``d`` itself, and attention scores are divided by ``sqrt(CONSTANT(D))``, so the graphs
  stay valid for every ``d``/``D`` and :func:`instantiate` fills the numbers in.
- ``Kᵀ``: kernels take ``K`` in its JAX layout ``[.., kv, D]`` and TRANSPOSE the *tile* in the block
  graph (perm swapping the last two dims), exactly as the reference transposes the whole ``K`` before
  its matmul; no pre-transposed copy of ``K`` is ever materialized.
- Online softmax: per for-loop iteration the block computes the score tile ``S``, its row max ``m``
  (``[.., q', 1]``), ``P = exp(S − m)``, and accumulates ``l = ACCUM_RESCALED_SUM(rowsum(P), m)`` and
  ``o = ACCUM_RESCALED_SUM(P @ V, m)``; both end relative to the same running max, so ``o / l`` after
  the loop is the softmax-weighted sum.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from prism_jax.ir.errors import IRError
from prism_jax.ir.graph import BlockGraphBuilder, KernelGraph, KernelGraphBuilder
from prism_jax.ir.maps import MapMatrix, loop_map, map_from_dims
from prism_jax.ir.ops import OpKind
from prism_jax.ir.symbolic import Size, sym
from prism_jax.ir.transform import instantiate
from prism_jax.ir.types import DType, TensorType

EPS = 1e-6
"""The RMSNorm epsilon of the workloads."""

GRID_SYMBOLS = ("gx", "gy", "gz")
"""Names of the default symbolic grid dims, in grid order."""
LOOP_SYMBOL = "F"
"""Name of the default symbolic for-loop extent."""

F32 = DType.FLOAT32


# ---------------------------------------------------------------------------------------------
# helpers


def _grid(grid: Sequence[Size] | None, default_rank: int, ranks: Sequence[int], what: str) -> tuple[Size, ...]:
    if grid is None:
        return tuple(sym(n) for n in GRID_SYMBOLS[:default_rank])
    grid = tuple(grid)
    if len(grid) not in ranks:
        raise IRError(f"{what}: grid must have {' or '.join(map(str, ranks))} dims, got {len(grid)}")
    return grid


def _loop(forloop: Size | None) -> Size:
    return sym(LOOP_SYMBOL) if forloop is None else forloop


def _imap(rank: int, grid_rank: int, splits: Mapping[int, int]) -> MapMatrix:
    """``splits``: data dim -> the grid dim that splits it (grid dims beyond ``grid_rank`` are dropped)."""
    dim_of_grid: list[int | None] = [None] * grid_rank
    for d, p in splits.items():
        if p is not None and p < grid_rank:
            dim_of_grid[p] = d
    return map_from_dims(rank, grid_rank, dim_of_grid)


def _inv_rms(b, sum_squares: int, dim: Size, eps: float) -> int:
    """``rsqrt(sum_squares / dim + eps)``: the inverse RMS of a row, from its sum of squares."""
    mean = b.op(OpKind.DIV, sum_squares, b.constant(dim, like=sum_squares))
    return b.op(OpKind.RSQRT, b.op(OpKind.ADD, mean, b.constant(eps, like=sum_squares)))


def _rmsnorm_rows(b, x: int, gain_row: int, dim: Size, eps: float) -> int:
    """``x * rsqrt(mean(x², -1) + eps) * g`` over the last axis (the unfused form, as JAX writes it)."""
    last = b.type_of(x).rank - 1
    total = b.op(OpKind.REDUCE_SUM, b.op(OpKind.MUL, x, x), axes=(last,))
    return b.op(OpKind.MUL, b.op(OpKind.MUL, x, _inv_rms(b, total, dim, eps)), gain_row)


def _silu(b, x: int) -> int:
    return b.op(OpKind.MUL, x, b.op(OpKind.LOGISTIC, x))


def _swap_last(b, x: int) -> int:
    rank = b.type_of(x).rank
    return b.op(OpKind.TRANSPOSE, x, perm=tuple(range(rank - 2)) + (rank - 1, rank - 2))


def _scaled_scores(b, q: int, k: int, head_dim: Size) -> int:
    """``Q Kᵀ / sqrt(D)`` with K in its ``[.., kv, D]`` layout."""
    s = b.op(OpKind.MATMUL, q, _swap_last(b, k))
    return b.op(OpKind.DIV, s, b.op(OpKind.SQRT, b.constant(head_dim, like=s)))


def _reference_attention(b, q: int, k: int, v: int, head_dim: Size) -> int:
    """``softmax(Q Kᵀ / sqrt(D)) V`` as ``jax.nn.softmax`` computes it (max-shifted, then normalized)."""
    s = _scaled_scores(b, q, k, head_dim)
    last = b.type_of(s).rank - 1
    e = b.op(OpKind.EXP, b.op(OpKind.SUB, s, b.op(OpKind.REDUCE_MAX, s, axes=(last,))))
    p = b.op(OpKind.DIV, e, b.op(OpKind.REDUCE_SUM, e, axes=(last,)))
    return b.op(OpKind.MATMUL, p, v)


def _online_softmax_step(bb: BlockGraphBuilder, q: int, k: int, v: int, head_dim: Size) -> tuple[int, int, int]:
    """One for-loop iteration of flash attention; returns the tile's (row max m, rowsum(P), P @ V)."""
    s = _scaled_scores(bb, q, k, head_dim)
    last = bb.type_of(s).rank - 1
    m = bb.op(OpKind.REDUCE_MAX, s, axes=(last,))
    p = bb.op(OpKind.EXP, bb.op(OpKind.SUB, s, m))
    return m, bb.op(OpKind.REDUCE_SUM, p, axes=(last,)), bb.op(OpKind.MATMUL, p, v)


def _gain_row(kb: KernelGraphBuilder, gain: int, rank: int) -> int:
    """Reshape a gain vector ``[d]`` into a broadcastable ``[1, .., 1, d]`` (kernel level)."""
    (d,) = kb.type_of(gain).shape
    return kb.op(OpKind.RESHAPE, gain, shape=(1,) * (rank - 1) + (d,))


# ---------------------------------------------------------------------------------------------
# tiled matmul


def tiled_matmul(M: Size, K: Size, N: Size, *, grid: Sequence[Size] | None = None, forloop: Size | None = None,
                 dtype: DType = F32) -> KernelGraph:
    """``C = A @ B`` (A ``[M, K]``, B ``[K, N]``) as one custom kernel.

    grid ``(gx, gy)``: M split over x, N over y; K runs through the for-loop (ACCUM_SUM of the partial
    products). A third grid dim ``gz`` is split-K: K is cut over z (major) and the loop (minor), and the
    output leaves z unmapped, so the z blocks' partial products are summed into C.
    """
    grid, F = _grid(grid, 2, (2, 3), "tiled_matmul"), _loop(forloop)
    r = len(grid)
    ta, tb = TensorType((M, K), dtype), TensorType((K, N), dtype)
    kb = KernelGraphBuilder("tiled_matmul")
    a_in, b_in = kb.input(ta, "A"), kb.input(tb, "B")
    bb = BlockGraphBuilder(grid, F)
    a = bb.input(0, ta, _imap(2, r, {0: 0, 1: 2}), loop_map(2, 1))
    b = bb.input(1, tb, _imap(2, r, {0: 2, 1: 1}), loop_map(2, 0))
    c = bb.accumulate(OpKind.ACCUM_SUM, bb.op(OpKind.MATMUL, a, b))
    bb.output(c, _imap(2, r, {0: 0, 1: 1}))
    (c_out,) = kb.custom_kernel(bb.build([ta, tb]), a_in, b_in)
    return kb.build([c_out])


def reference_tiled_matmul(M: Size, K: Size, N: Size, *, dtype: DType = F32) -> KernelGraph:
    kb = KernelGraphBuilder("tiled_matmul")
    a, b = kb.input(TensorType((M, K), dtype), "A"), kb.input(TensorType((K, N), dtype), "B")
    return kb.build([kb.op(OpKind.MATMUL, a, b)])


def numpy_tiled_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float64) @ np.asarray(b, np.float64)


# ---------------------------------------------------------------------------------------------
# RMSNorm + matmul


def _row_col_maps(r: int) -> tuple[dict[int, int], dict[int, int]]:
    """Grid ``(gN,)``: columns only; grid ``(g_rows, gN)``: rows over x, columns over y."""
    rows = {0: 0} if r == 2 else {}
    cols_grid = r - 1
    return rows, {1: cols_grid}


def rmsnorm_matmul(n: Size, d: Size, N: Size, *, eps: float = EPS, grid: Sequence[Size] | None = None,
                   forloop: Size | None = None, accumulate_squares: bool = False, dtype: DType = F32) -> KernelGraph:
    """``Y = (X * rsqrt(mean(X², -1) + eps) * g) @ W`` fused: X ``[n, d]``, g ``[d]``, W ``[d, N]``.

    grid ``(g_rows, gN)`` (or ``(gN,)``: every block takes all rows); K = d runs through the loop. Per
    iteration the block accumulates the rows' sums of squares of its X tile and ``(X·g) @ W``; after the
    loop it scales the rows by ``rsqrt(sum / d + eps)`` (row scaling commutes with the matmul; the
    multiply-by-rsqrt form, rather than divide-by-sqrt, is the one the e-graph prover closes). With
    ``accumulate_squares`` the squares are accumulated elementwise (ACCUM_SUM_SQUARES) and summed over
    the row after the loop instead.
    """
    grid, F = _grid(grid, 2, (1, 2), "rmsnorm_matmul"), _loop(forloop)
    r = len(grid)
    rows, cols = _row_col_maps(r)
    tx, tg, tw = TensorType((n, d), dtype), TensorType((d,), dtype), TensorType((d, N), dtype)
    kb = KernelGraphBuilder("rmsnorm_matmul")
    x_in, g_in, w_in = kb.input(tx, "X"), kb.input(tg, "g"), kb.input(tw, "W")
    g_row = _gain_row(kb, g_in, 2)
    tgr = kb.type_of(g_row)

    bb = BlockGraphBuilder(grid, F)
    x = bb.input(0, tx, _imap(2, r, rows), loop_map(2, 1))
    g = bb.input(1, tgr, _imap(2, r, {}), loop_map(2, 1))
    w = bb.input(2, tw, _imap(2, r, cols), loop_map(2, 0))
    if accumulate_squares:
        squares = bb.op(OpKind.REDUCE_SUM, bb.accumulate(OpKind.ACCUM_SUM_SQUARES, x), axes=(1,))
    else:
        squares = bb.accumulate(OpKind.ACCUM_SUM, bb.op(OpKind.REDUCE_SUM, bb.op(OpKind.SQUARE, x), axes=(1,)))
    acc = bb.accumulate(OpKind.ACCUM_SUM, bb.op(OpKind.MATMUL, bb.op(OpKind.MUL, x, g), w))
    y = bb.op(OpKind.MUL, acc, _inv_rms(bb, squares, d, eps))
    bb.output(y, _imap(2, r, {**rows, **cols}))
    (y_out,) = kb.custom_kernel(bb.build([tx, tgr, tw]), x_in, g_row, w_in)
    return kb.build([y_out])


def reference_rmsnorm_matmul(n: Size, d: Size, N: Size, *, eps: float = EPS, dtype: DType = F32) -> KernelGraph:
    kb = KernelGraphBuilder("rmsnorm_matmul")
    x = kb.input(TensorType((n, d), dtype), "X")
    g = kb.input(TensorType((d,), dtype), "g")
    w = kb.input(TensorType((d, N), dtype), "W")
    h = _rmsnorm_rows(kb, x, _gain_row(kb, g, 2), d, eps)
    return kb.build([kb.op(OpKind.MATMUL, h, w)])


def numpy_rmsnorm(x: np.ndarray, g: np.ndarray, eps: float = EPS) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * np.asarray(g, np.float64)


def numpy_rmsnorm_matmul(x, g, w, eps: float = EPS) -> np.ndarray:
    return numpy_rmsnorm(x, g, eps) @ np.asarray(w, np.float64)


# ---------------------------------------------------------------------------------------------
# SwiGLU and the RMSNorm MLP


def swiglu(n: Size, d: Size, N: Size, *, grid: Sequence[Size] | None = None, forloop: Size | None = None,
           dtype: DType = F32) -> KernelGraph:
    """``silu(X @ Wg) * (X @ Wu)`` (X ``[n, d]``, Wg/Wu ``[d, N]``) with both matmuls in one kernel.

    grid ``(g_rows, gN)`` (or ``(gN,)``); K = d in the loop; ``silu(a) = a * logistic(a)`` after the loop.
    """
    grid, F = _grid(grid, 2, (1, 2), "swiglu"), _loop(forloop)
    r = len(grid)
    rows, cols = _row_col_maps(r)
    tx, tw = TensorType((n, d), dtype), TensorType((d, N), dtype)
    kb = KernelGraphBuilder("swiglu")
    x_in, wg_in, wu_in = kb.input(tx, "X"), kb.input(tw, "Wg"), kb.input(tw, "Wu")
    bb = BlockGraphBuilder(grid, F)
    x = bb.input(0, tx, _imap(2, r, rows), loop_map(2, 1))
    wg = bb.input(1, tw, _imap(2, r, cols), loop_map(2, 0))
    wu = bb.input(2, tw, _imap(2, r, cols), loop_map(2, 0))
    gate = bb.accumulate(OpKind.ACCUM_SUM, bb.op(OpKind.MATMUL, x, wg))
    up = bb.accumulate(OpKind.ACCUM_SUM, bb.op(OpKind.MATMUL, x, wu))
    bb.output(bb.op(OpKind.MUL, _silu(bb, gate), up), _imap(2, r, {**rows, **cols}))
    (y,) = kb.custom_kernel(bb.build([tx, tw, tw]), x_in, wg_in, wu_in)
    return kb.build([y])


def reference_swiglu(n: Size, d: Size, N: Size, *, dtype: DType = F32) -> KernelGraph:
    kb = KernelGraphBuilder("swiglu")
    x = kb.input(TensorType((n, d), dtype), "X")
    wg, wu = kb.input(TensorType((d, N), dtype), "Wg"), kb.input(TensorType((d, N), dtype), "Wu")
    y = kb.op(OpKind.MUL, _silu(kb, kb.op(OpKind.MATMUL, x, wg)), kb.op(OpKind.MATMUL, x, wu))
    return kb.build([y])


def _numpy_silu(a: np.ndarray) -> np.ndarray:
    return a / (1 + np.exp(-a))


def numpy_swiglu(x, wg, wu) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return _numpy_silu(x @ np.asarray(wg, np.float64)) * (x @ np.asarray(wu, np.float64))


def rmsnorm_mlp(n: Size, d: Size, N: Size, *, eps: float = EPS, grid: Sequence[Size] | None = None,
                forloop: Size | None = None, dtype: DType = F32) -> KernelGraph:
    """``silu(h @ Wg) * (h @ Wu)`` with ``h = rmsnorm(X) * g``: RMSNorm and both matmuls in one kernel.

    The loop accumulates the row sums of squares and ``(X·g) @ Wg``, ``(X·g) @ Wu``; after it both
    products are scaled by the inverse row RMS, then gated.
    """
    grid, F = _grid(grid, 2, (1, 2), "rmsnorm_mlp"), _loop(forloop)
    r = len(grid)
    rows, cols = _row_col_maps(r)
    tx, tg, tw = TensorType((n, d), dtype), TensorType((d,), dtype), TensorType((d, N), dtype)
    kb = KernelGraphBuilder("rmsnorm_mlp")
    x_in, g_in = kb.input(tx, "X"), kb.input(tg, "g")
    wg_in, wu_in = kb.input(tw, "Wg"), kb.input(tw, "Wu")
    g_row = _gain_row(kb, g_in, 2)
    tgr = kb.type_of(g_row)
    bb = BlockGraphBuilder(grid, F)
    x = bb.input(0, tx, _imap(2, r, rows), loop_map(2, 1))
    g = bb.input(1, tgr, _imap(2, r, {}), loop_map(2, 1))
    wg = bb.input(2, tw, _imap(2, r, cols), loop_map(2, 0))
    wu = bb.input(3, tw, _imap(2, r, cols), loop_map(2, 0))
    squares = bb.accumulate(OpKind.ACCUM_SUM, bb.op(OpKind.REDUCE_SUM, bb.op(OpKind.SQUARE, x), axes=(1,)))
    xg = bb.op(OpKind.MUL, x, g)
    gate = bb.accumulate(OpKind.ACCUM_SUM, bb.op(OpKind.MATMUL, xg, wg))
    up = bb.accumulate(OpKind.ACCUM_SUM, bb.op(OpKind.MATMUL, xg, wu))
    inv = _inv_rms(bb, squares, d, eps)
    gate, up = bb.op(OpKind.MUL, gate, inv), bb.op(OpKind.MUL, up, inv)
    bb.output(bb.op(OpKind.MUL, _silu(bb, gate), up), _imap(2, r, {**rows, **cols}))
    (y,) = kb.custom_kernel(bb.build([tx, tgr, tw, tw]), x_in, g_row, wg_in, wu_in)
    return kb.build([y])


def reference_rmsnorm_mlp(n: Size, d: Size, N: Size, *, eps: float = EPS, dtype: DType = F32) -> KernelGraph:
    kb = KernelGraphBuilder("rmsnorm_mlp")
    x = kb.input(TensorType((n, d), dtype), "X")
    g = kb.input(TensorType((d,), dtype), "g")
    wg, wu = kb.input(TensorType((d, N), dtype), "Wg"), kb.input(TensorType((d, N), dtype), "Wu")
    h = _rmsnorm_rows(kb, x, _gain_row(kb, g, 2), d, eps)
    y = kb.op(OpKind.MUL, _silu(kb, kb.op(OpKind.MATMUL, h, wg)), kb.op(OpKind.MATMUL, h, wu))
    return kb.build([y])


def numpy_rmsnorm_mlp(x, g, wg, wu, eps: float = EPS) -> np.ndarray:
    return numpy_swiglu(numpy_rmsnorm(x, g, eps), wg, wu)


# ---------------------------------------------------------------------------------------------
# attention


def _attention_kernel(name: str, b: Size, h: Size, q: Size, kv: Size, D: Size, grid, forloop, dtype,
                      qk_norm_eps: float | None) -> KernelGraph:
    """The flash-attention kernel; with ``qk_norm_eps`` it takes gains gq, gk and RMS-normalizes Q and K."""
    grid, F = _grid(grid, 3, (1, 2, 3), name), _loop(forloop)
    r = len(grid)
    tq, tkv = TensorType((b, h, q, D), dtype), TensorType((b, h, kv, D), dtype)
    kb = KernelGraphBuilder(name)
    q_in, k_in, v_in = kb.input(tq, "Q"), kb.input(tkv, "K"), kb.input(tkv, "V")
    sources, types = [q_in, k_in, v_in], [tq, tkv, tkv]
    if qk_norm_eps is not None:
        tg = TensorType((D,), dtype)
        rows = [_gain_row(kb, kb.input(tg, gain), 4) for gain in ("gq", "gk")]
        sources += rows
        types += [kb.type_of(v) for v in rows]
    # grid (gb, gh, gq): batch over x, heads over y, query rows over z
    bb = BlockGraphBuilder(grid, F)
    out_map = {0: 0, 1: 1, 2: 2}
    qt = bb.input(0, tq, _imap(4, r, out_map))
    kt = bb.input(1, tkv, _imap(4, r, {0: 0, 1: 1}), loop_map(4, 2))
    vt = bb.input(2, tkv, _imap(4, r, {0: 0, 1: 1}), loop_map(4, 2))
    if qk_norm_eps is not None:
        gq, gk = (bb.input(k, types[k], _imap(4, r, {})) for k in (3, 4))
        qt = _rmsnorm_block(bb, qt, gq, D, qk_norm_eps)
        kt = _rmsnorm_block(bb, kt, gk, D, qk_norm_eps)
    m, row_sum, pv = _online_softmax_step(bb, qt, kt, vt, D)
    l_acc = bb.accumulate(OpKind.ACCUM_RESCALED_SUM, row_sum, m)
    o_acc = bb.accumulate(OpKind.ACCUM_RESCALED_SUM, pv, m)
    bb.output(bb.op(OpKind.DIV, o_acc, l_acc), _imap(4, r, out_map))
    (o,) = kb.custom_kernel(bb.build(types), *sources)
    return kb.build([o])


def _rmsnorm_block(bb: BlockGraphBuilder, x: int, gain_row: int, dim: Size, eps: float) -> int:
    """RMSNorm of a tile over its last axis (which must hold the whole ``dim``)."""
    last = bb.type_of(x).rank - 1
    squares = bb.op(OpKind.REDUCE_SUM, bb.op(OpKind.SQUARE, x), axes=(last,))
    return bb.op(OpKind.MUL, bb.op(OpKind.MUL, x, _inv_rms(bb, squares, dim, eps)), gain_row)


def attention(b: Size, h: Size, q: Size, kv: Size, D: Size, *, grid: Sequence[Size] | None = None,
              forloop: Size | None = None, dtype: DType = F32) -> KernelGraph:
    """``O = softmax(Q Kᵀ / sqrt(D)) V`` as one flash-attention kernel.

    Q ``[b, h, q, D]``, K/V ``[b, h, kv, D]``. grid ``(gb, gh, gq)``: batch over x, heads over y, query
    rows over z (a shorter grid leaves the later dims whole); kv runs through the for-loop with the
    online softmax (ACCUM_RESCALED_SUM for ``l`` and ``o``, log-scale = the score tile's row max);
    ``O = o / l`` after the loop. K is transposed per tile (see the module notes).
    """
    return _attention_kernel("attention", b, h, q, kv, D, grid, forloop, dtype, None)


def reference_attention(b: Size, h: Size, q: Size, kv: Size, D: Size, *, dtype: DType = F32) -> KernelGraph:
    kb = KernelGraphBuilder("attention")
    tq, tkv = TensorType((b, h, q, D), dtype), TensorType((b, h, kv, D), dtype)
    qi, ki, vi = kb.input(tq, "Q"), kb.input(tkv, "K"), kb.input(tkv, "V")
    return kb.build([_reference_attention(kb, qi, ki, vi, D)])


def numpy_attention(q, k, v) -> np.ndarray:
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def qknorm_attention(b: Size, h: Size, q: Size, kv: Size, D: Size, *, eps: float = EPS,
                     grid: Sequence[Size] | None = None, forloop: Size | None = None,
                     dtype: DType = F32) -> KernelGraph:
    """Attention with RMSNorm over D (gains ``gq``, ``gk`` ``[D]``) of Q and K, inside the kernel.

    Inputs Q, K, V, gq, gk. The Q tile is normalized once per block (loop-invariant), each K tile in its
    iteration; D is never split, so the tiles hold whole rows.
    """
    return _attention_kernel("qknorm_attention", b, h, q, kv, D, grid, forloop, dtype, eps)


def reference_qknorm_attention(b: Size, h: Size, q: Size, kv: Size, D: Size, *, eps: float = EPS,
                               dtype: DType = F32) -> KernelGraph:
    kb = KernelGraphBuilder("qknorm_attention")
    tq, tkv, tg = TensorType((b, h, q, D), dtype), TensorType((b, h, kv, D), dtype), TensorType((D,), dtype)
    qi, ki, vi = kb.input(tq, "Q"), kb.input(tkv, "K"), kb.input(tkv, "V")
    gq, gk = kb.input(tg, "gq"), kb.input(tg, "gk")
    qn = _rmsnorm_rows(kb, qi, _gain_row(kb, gq, 4), D, eps)
    kn = _rmsnorm_rows(kb, ki, _gain_row(kb, gk, 4), D, eps)
    return kb.build([_reference_attention(kb, qn, kn, vi, D)])


def numpy_qknorm_attention(q, k, v, gq, gk, eps: float = EPS) -> np.ndarray:
    return numpy_attention(numpy_rmsnorm(q, gq, eps), numpy_rmsnorm(k, gk, eps), v)


# ---------------------------------------------------------------------------------------------
# split-KV (flash-decoding) attention


def split_kv_decode_attention(h: Size, q: Size, kv: Size, D: Size, *, grid: Sequence[Size] | None = None,
                              forloop: Size | None = None, dtype: DType = F32) -> KernelGraph:
    """Flash-decoding: attention over a long KV split into chunks, in two custom kernels.

    Q ``[h, q, D]`` (decode: q is small, e.g. 1), K/V ``[h, kv, D]``; fold a batch into ``h``.

    Kernel 1, grid ``(gh, C)``: heads over x, KV chunks over y; each chunk of kv/C keys runs through
    the for-loop (F iterations) with the online softmax and stores its partial ``o`` (unnormalized,
    relative to the chunk max), ``l`` and ``m`` (ACCUM_MAX of the score tiles' row maxes, the same max
    the rescaled sums end relative to). A post-loop RESHAPE gives each tile a size-1 chunk dim that the
    omap places along y: outputs ``O_part [h, C, q, D]``, ``L_part [h, C, q, 1]``, ``M_part [h, C, q, 1]``.

    Kernel 2, grid ``(gh,)``, one iteration: ``M = max_c m_c``, ``w_c = exp(m_c − M)``,
    ``O = Σ_c w_c o_c / Σ_c w_c l_c``, reshaped back to ``[h', q, D]``.
    """
    grid, F = _grid(grid, 2, (2,), "split_kv_decode_attention"), _loop(forloop)
    gh, chunks = grid
    tq, tkv = TensorType((h, q, D), dtype), TensorType((h, kv, D), dtype)
    kb = KernelGraphBuilder("split_kv_decode_attention")
    q_in, k_in, v_in = kb.input(tq, "Q"), kb.input(tkv, "K"), kb.input(tkv, "V")

    bb = BlockGraphBuilder(grid, F)
    qt = bb.input(0, tq, _imap(3, 2, {0: 0}))
    kt = bb.input(1, tkv, _imap(3, 2, {0: 0, 1: 1}), loop_map(3, 1))
    vt = bb.input(2, tkv, _imap(3, 2, {0: 0, 1: 1}), loop_map(3, 1))
    m, row_sum, pv = _online_softmax_step(bb, qt, kt, vt, D)
    parts = (bb.accumulate(OpKind.ACCUM_RESCALED_SUM, pv, m), bb.accumulate(OpKind.ACCUM_RESCALED_SUM, row_sum, m),
             bb.accumulate(OpKind.ACCUM_MAX, m))
    for part in parts:
        h_t, q_t, last = bb.type_of(part).shape
        bb.output(bb.op(OpKind.RESHAPE, part, shape=(h_t, 1, q_t, last)), _imap(4, 2, {0: 0, 1: 1}))
    o_part, l_part, m_part = kb.custom_kernel(bb.build([tq, tkv, tkv]), q_in, k_in, v_in)

    types = [kb.type_of(v) for v in (o_part, l_part, m_part)]
    cb = BlockGraphBuilder((gh,), 1)
    o_t, l_t, m_t = (cb.input(k, t, _imap(4, 1, {0: 0})) for k, t in enumerate(types))
    m_max = cb.op(OpKind.REDUCE_MAX, m_t, axes=(1,))
    weight = cb.op(OpKind.EXP, cb.op(OpKind.SUB, m_t, m_max))
    num = cb.op(OpKind.REDUCE_SUM, cb.op(OpKind.MUL, o_t, weight), axes=(1,))
    den = cb.op(OpKind.REDUCE_SUM, cb.op(OpKind.MUL, l_t, weight), axes=(1,))
    out = cb.op(OpKind.DIV, num, den)
    h_t, _, q_t, d_t = cb.type_of(out).shape
    cb.output(cb.op(OpKind.RESHAPE, out, shape=(h_t, q_t, d_t)), _imap(3, 1, {0: 0}))
    (o,) = kb.custom_kernel(cb.build(types), o_part, l_part, m_part)
    return kb.build([o])


def reference_split_kv_decode_attention(h: Size, q: Size, kv: Size, D: Size, *, dtype: DType = F32) -> KernelGraph:
    kb = KernelGraphBuilder("split_kv_decode_attention")
    tq, tkv = TensorType((h, q, D), dtype), TensorType((h, kv, D), dtype)
    qi, ki, vi = kb.input(tq, "Q"), kb.input(tkv, "K"), kb.input(tkv, "V")
    return kb.build([_reference_attention(kb, qi, ki, vi, D)])


numpy_split_kv_decode_attention = numpy_attention


# ---------------------------------------------------------------------------------------------
# the registry


class Example(NamedTuple):
    """One example: ``(fused builder, reference builder, numpy reference, default sizes, tilings)``.

    ``sizes`` name the builders' size parameters; each tiling is ``{"grid": (...), "forloop": F}``, legal
    for the default sizes. The numpy reference takes the input arrays in the graphs' input order."""

    build: Callable[..., KernelGraph]
    reference: Callable[..., KernelGraph]
    numpy: Callable[..., np.ndarray]
    sizes: Mapping[str, int]
    tilings: tuple[Mapping[str, Any], ...]

    def concrete(self, tiling: Mapping[str, Any] | None = None, sizes: Mapping[str, int] | None = None,
                 **options: Any) -> KernelGraph:
        """The fused graph at concrete ``sizes`` (default: ``self.sizes``) and ``tiling`` (default: the first)."""
        tiling = self.tilings[0] if tiling is None else tiling
        return self.build(**dict(sizes or self.sizes), **tiling, **options)

    def reference_graph(self, sizes: Mapping[str, int] | None = None) -> KernelGraph:
        return self.reference(**dict(sizes or self.sizes))

    def symbolic(self, **options: Any) -> KernelGraph:
        """The fused graph with every size and the tiling symbolic (sizes named as the parameters, grid
        ``gx, gy, gz`` and loop ``F``)."""
        rank = len(self.tilings[0]["grid"])
        return self.build(**{k: sym(k) for k in self.sizes}, grid=tuple(sym(n) for n in GRID_SYMBOLS[:rank]),
                          forloop=sym(LOOP_SYMBOL), **options)

    def symbolic_reference(self) -> KernelGraph:
        return self.reference(**{k: sym(k) for k in self.sizes})

    def env(self, tiling: Mapping[str, Any] | None = None, sizes: Mapping[str, int] | None = None) -> dict[str, int]:
        """The symbol assignment that turns :meth:`symbolic` into :meth:`concrete` ``(tiling, sizes)``."""
        tiling = self.tilings[0] if tiling is None else tiling
        env = dict(sizes or self.sizes)
        env.update(zip(GRID_SYMBOLS, tiling["grid"]))
        env[LOOP_SYMBOL] = tiling["forloop"]
        return env


def _tilings(*items: tuple[tuple[int, ...], int]) -> tuple[dict[str, Any], ...]:
    return tuple({"grid": grid, "forloop": forloop} for grid, forloop in items)


EXAMPLES: dict[str, Example] = {
    "tiled_matmul": Example(
        tiled_matmul, reference_tiled_matmul, numpy_tiled_matmul, {"M": 8, "K": 12, "N": 6},
        _tilings(((2, 3), 4), ((1, 1), 1), ((8, 6), 12), ((4, 2), 3))),
    "rmsnorm_matmul": Example(
        rmsnorm_matmul, reference_rmsnorm_matmul, numpy_rmsnorm_matmul, {"n": 4, "d": 16, "N": 8},
        _tilings(((2, 4), 4), ((1, 1), 1), ((4, 8), 16), ((1, 2), 8))),
    "swiglu": Example(
        swiglu, reference_swiglu, numpy_swiglu, {"n": 4, "d": 12, "N": 6},
        _tilings(((2, 3), 3), ((1, 1), 1), ((4, 6), 12), ((1, 2), 4))),
    "rmsnorm_mlp": Example(
        rmsnorm_mlp, reference_rmsnorm_mlp, numpy_rmsnorm_mlp, {"n": 4, "d": 16, "N": 6},
        _tilings(((2, 3), 4), ((1, 1), 1), ((4, 6), 16), ((2, 1), 2))),
    "attention": Example(
        attention, reference_attention, numpy_attention, {"b": 2, "h": 2, "q": 4, "kv": 16, "D": 8},
        _tilings(((2, 2, 2), 4), ((1, 1, 1), 1), ((2, 2, 4), 16), ((1, 2, 1), 2))),
    "qknorm_attention": Example(
        qknorm_attention, reference_qknorm_attention, numpy_qknorm_attention,
        {"b": 1, "h": 2, "q": 4, "kv": 12, "D": 8},
        _tilings(((1, 2, 2), 3), ((1, 1, 1), 1), ((1, 2, 4), 12), ((1, 1, 2), 4))),
    "split_kv_decode_attention": Example(
        split_kv_decode_attention, reference_split_kv_decode_attention, numpy_split_kv_decode_attention,
        {"h": 4, "q": 1, "kv": 32, "D": 8},
        _tilings(((2, 4), 2), ((1, 1), 1), ((4, 32), 1), ((4, 2), 16), ((1, 8), 4))),
}
"""name -> :class:`Example`; the first tiling of each is a typical one, the second forloop=1 with one
block, the third the maximal split (every tile dim that can be 1 is 1)."""


def random_inputs(graph: KernelGraph, seed: int = 0, dtype: np.dtype | type | None = None) -> list[np.ndarray]:
    """Standard normal inputs for a concrete graph (in each input's dtype unless ``dtype`` is given)."""
    from prism_jax.ir.interpreter import numpy_dtype

    rng = np.random.default_rng(seed)
    out = []
    for t in graph.input_types:
        if not all(isinstance(d, int) for d in t.shape):
            raise IRError(f"random_inputs needs concrete shapes, got {t}")
        out.append(rng.standard_normal(t.shape).astype(dtype or numpy_dtype(t.dtype)))
    return out


def instantiate_example(name: str, tiling: Mapping[str, Any] | None = None,
                        sizes: Mapping[str, int] | None = None) -> KernelGraph:
    """The symbolic fused graph of ``name`` bound to ``sizes`` and ``tiling`` (what the tuner does)."""
    example = EXAMPLES[name]
    return instantiate(example.symbolic(), example.env(tiling, sizes))
