"""An instantiated sGraph → a JAX function whose custom kernels are ``pallas_call``\\ s.

Each custom kernel becomes one ``pallas_call``:

- the grid is the block graph's grid; a BlockSpec per block input loads the block's slab of its source
  (the tile times the for-loop extent along the loop dim), its index map is the imap (a dim split by
  several grid dims is split major-to-minor, as in the IR);
- the for-loop is a ``fori_loop`` inside the kernel that slices iteration ``i``'s tile out of each
  slab, with the accumulators as its carry (sums start at 0, maxima at -inf, the rescaled sum of
  online softmax carries its running maximum);
- loop-invariant ops run before the loop, after-loop ops after it, and outputs are stored through
  BlockSpecs from the omap. Grid dims an omap leaves unmapped (partial sums) get a leading output dim
  each, summed outside the kernel.

Predefined ops between kernels run as plain JAX. The same function runs on GPUs (Triton lowering,
``num_warps``/``num_stages`` as tuning knobs) and on CPU in interpret mode.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from prism_jax.codegen.graph_function import graph_function
from prism_jax.frontend.to_jax import apply_op, jax_dtype
from prism_jax.ir import BlockGraph, IRError, KernelGraph, OpKind, TensorType, is_concrete_graph
from prism_jax.ir.graph import BlockInput, Op, Phase

MIN_DOT = 16  # Triton's tl.dot needs every dim ≥ 16; smaller products are written as multiply + sum


@dataclasses.dataclass(frozen=True)
class PallasOptions:
    """How the kernels are compiled: interpret mode (CPU) or Triton with its launch knobs."""

    interpret: bool = False
    num_warps: int | None = None
    num_stages: int | None = None

    def compiler_params(self) -> Any:
        if self.interpret or (self.num_warps is None and self.num_stages is None):
            return None
        from jax.experimental.pallas import triton as pltriton

        return pltriton.CompilerParams(num_warps=self.num_warps, num_stages=self.num_stages)


def kernel_graph_function(graph: KernelGraph, options: PallasOptions = PallasOptions()) -> Callable[..., list]:
    """A traceable JAX function computing ``graph`` (concrete sizes and maps), custom kernels as Pallas."""
    if not is_concrete_graph(graph):
        raise IRError(f"kernel graph {graph.name!r} has symbolic sizes; instantiate it before codegen")
    calls = {i: custom_kernel_call(op.block, [graph.values[v] for v in op.inputs], options, f"{graph.name}_k{i}")
             for i, op in enumerate(graph.ops) if op.kind == OpKind.CUSTOM_KERNEL}
    return graph_function(graph, calls)


def custom_kernel_call(block: BlockGraph, source_types: Sequence[TensorType], options: PallasOptions,
                       name: str = "prism_kernel") -> Callable[..., list]:
    """One custom kernel as a function of its device inputs (returns its outputs)."""
    grid = tuple(int(g) for g in block.grid)
    in_specs = [_input_spec(block, inp, source_types[inp.source]) for inp in block.inputs]
    out_specs, out_shapes, summed = [], [], []
    for k, out in enumerate(block.outputs):
        spec, shape, axes = _output_spec(block, k)
        out_specs.append(spec)
        out_shapes.append(shape)
        summed.append(axes)
    call = pl.pallas_call(
        functools.partial(_kernel_body, block),
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shapes,
        interpret=options.interpret,
        compiler_params=options.compiler_params(),
        name=name,
    )

    def run(*sources: Any) -> list:
        outs = call(*(sources[inp.source] for inp in block.inputs))
        return [jnp.sum(o, axis=tuple(range(n))).astype(o.dtype) if n else o for o, n in zip(outs, summed)]

    return run


# -- BlockSpecs --------------------------------------------------------------------------------------


def _combined_index(row: Sequence[bool], grid: Sequence[int], ids: Sequence[Any]) -> Any:
    """The block's chunk index along one data dim: the grid dims that split it, major to minor."""
    index = 0
    for split, extent, i in zip(row, grid, ids):
        if split:
            index = index * extent + i
    return index


def _input_spec(block: BlockGraph, inp: BlockInput, source: TensorType) -> pl.BlockSpec:
    grid = tuple(int(g) for g in block.grid)
    tile = block.values[inp.value].shape
    slab = tuple(int(t) * (int(block.forloop) if looped else 1) for t, looped in zip(tile, inp.fmap))
    rows = inp.imap

    def index_map(*ids):
        return tuple(_combined_index(row, grid, ids) for row in rows)

    return pl.BlockSpec(slab, index_map)


def _output_spec(block: BlockGraph, k: int) -> tuple[pl.BlockSpec, jax.ShapeDtypeStruct, int]:
    """The output's BlockSpec and shape; grid dims the omap leaves unmapped (extent > 1) become leading
    dims of partial results, summed after the call (their count is returned)."""
    grid = tuple(int(g) for g in block.grid)
    out = block.outputs[k]
    full = block.output_type(k)
    tile = tuple(int(t) for t in block.values[out.value].shape)
    partial = [p for p in range(len(grid)) if grid[p] > 1 and not any(row[p] for row in out.omap)]

    def index_map(*ids):
        return tuple(ids[p] for p in partial) + tuple(_combined_index(row, grid, ids) for row in out.omap)

    shape = tuple(grid[p] for p in partial) + tuple(int(d) for d in full.shape)
    spec = pl.BlockSpec((None,) * len(partial) + tile, index_map)
    return spec, jax.ShapeDtypeStruct(shape, jax_dtype(full)), len(partial)


# -- the kernel body ---------------------------------------------------------------------------------


def _kernel_body(block: BlockGraph, *refs: Any) -> None:
    in_refs, out_refs = refs[:len(block.inputs)], refs[len(block.inputs):]
    phases = block.phases()
    forloop = int(block.forloop)
    env: dict[int, Any] = {}
    looped = [any(e is True for e in inp.fmap) for inp in block.inputs]
    for inp, ref, is_looped in zip(block.inputs, in_refs, looped):
        if not is_looped:
            env[inp.value] = ref[...]
    for op in block.ops:  # loop-invariant values once, before the loop
        if phases[op.outputs[0]] == Phase.INVARIANT:
            env[op.outputs[0]] = _eval(op, env, block)
    accumulators = [op for op in block.ops if op.kind in _UPDATE]

    def body(iteration, state):
        local = dict(env)
        for inp, ref, is_looped in zip(block.inputs, in_refs, looped):
            if is_looped:
                local[inp.value] = ref[_iteration_index(block, inp, iteration)]
        for op in block.ops:
            if phases[op.outputs[0]] == Phase.LOOP:
                local[op.outputs[0]] = _eval(op, local, block)
        return tuple(_UPDATE[op.kind](s, *(local[v] for v in op.inputs)) for op, s in zip(accumulators, state))

    init = tuple(_INIT[op.kind](block, op) for op in accumulators)
    if accumulators or any(looped):
        state = body(0, init) if forloop == 1 else jax.lax.fori_loop(0, forloop, body, init)
    else:
        state = init
    for op, s in zip(accumulators, state):
        env[op.outputs[0]] = s[0] if op.kind == OpKind.ACCUM_RESCALED_SUM else s
    for op in block.ops:  # after the loop
        if phases[op.outputs[0]] == Phase.POST and op.kind not in _UPDATE:
            env[op.outputs[0]] = _eval(op, env, block)
    for out, ref in zip(block.outputs, out_refs):
        ref[...] = env[out.value].astype(ref.dtype)


def _iteration_index(block: BlockGraph, inp: BlockInput, iteration: Any) -> tuple:
    tile = block.values[inp.value].shape
    return tuple(pl.ds(iteration * int(t), int(t)) if looped is True else slice(None)
                 for t, looped in zip(tile, inp.fmap))


def _eval(op: Op, env: dict[int, Any], block: BlockGraph) -> Any:
    args = [env[v] for v in op.inputs]
    out_type = block.values[op.outputs[0]]
    if op.kind == OpKind.MATMUL:
        return _matmul(args[0], args[1], out_type)
    if op.kind == OpKind.TRANSPOSE:
        return _transpose(args[0], op.attrs["perm"])
    return apply_op(op.kind, op.attrs, args, out_type)


def _leading_units(shape: Sequence[int], keep: int) -> bool:
    return all(d == 1 for d in shape[:-keep])


def _matmul(a: Any, b: Any, out_type: TensorType) -> Any:
    """``[..., M, K] @ [..., K, N]``: a 2-D dot where Triton allows it (leading dims of 1 squeezed),
    else a broadcast multiply and a sum over K (small decode tiles, batched tiles)."""
    out_dtype = jax_dtype(out_type)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    if _leading_units(a.shape, 2) and _leading_units(b.shape, 2) and min(m, k, n) >= MIN_DOT:
        product = jnp.dot(a.reshape(m, k), b.reshape(k, n), preferred_element_type=jnp.float32)
        return product.astype(out_dtype).reshape(out_type.shape)
    widened = jnp.float32 if jnp.dtype(a.dtype).itemsize < 4 else a.dtype
    product = jnp.sum(a[..., :, :, None].astype(widened) * b[..., None, :, :].astype(widened), axis=-2)
    return product.astype(out_dtype)


def _transpose(x: Any, perm: Sequence[int]) -> Any:
    """Swapping the last two dims of a tile with leading dims of 1 is a 2-D transpose (what Triton has)."""
    rank = len(perm)
    if rank > 2 and tuple(perm) == (*range(rank - 2), rank - 1, rank - 2) and _leading_units(x.shape, 2):
        m, n = x.shape[-2:]
        return x.reshape(m, n).T.reshape(*x.shape[:-2], n, m)
    return jnp.transpose(x, perm)


# -- accumulators ------------------------------------------------------------------------------------


def _zeros(block: BlockGraph, op: Op) -> Any:
    t = block.values[op.outputs[0]]
    return jnp.zeros(tuple(int(d) for d in t.shape), jax_dtype(t))


def _neg_inf(block: BlockGraph, op: Op, value: int | None = None) -> Any:
    t = block.values[op.outputs[0] if value is None else value]
    return jnp.full(tuple(int(d) for d in t.shape), -math.inf, jax_dtype(t))


def _rescaled_update(state, value, log_scale):
    """acc·exp(m − m') + value·exp(s − m'), m' = max(m, s): online softmax (−inf terms contribute 0)."""
    acc, running = state
    new_max = jnp.maximum(running, log_scale)
    old = jnp.where(running == -math.inf, 0.0, jnp.exp(running - new_max))
    new = jnp.where(log_scale == -math.inf, 0.0, jnp.exp(log_scale - new_max))
    return (acc * old + value * new).astype(acc.dtype), new_max


_INIT: dict[OpKind, Callable] = {
    OpKind.ACCUM_SUM: _zeros,
    OpKind.ACCUM_SUM_SQUARES: _zeros,
    OpKind.ACCUM_MAX: _neg_inf,
    OpKind.ACCUM_RESCALED_SUM: lambda block, op: (_zeros(block, op), _neg_inf(block, op, op.inputs[1])),
}
_UPDATE: dict[OpKind, Callable] = {
    OpKind.ACCUM_SUM: lambda acc, x: (acc + x).astype(acc.dtype),
    OpKind.ACCUM_SUM_SQUARES: lambda acc, x: (acc + x * x).astype(acc.dtype),
    OpKind.ACCUM_MAX: lambda acc, x: jnp.maximum(acc, x).astype(acc.dtype),
    OpKind.ACCUM_RESCALED_SUM: _rescaled_update,
}


def lower_for_cuda(fn: Callable, *specs: jax.ShapeDtypeStruct, device_kind: str = "NVIDIA H100 80GB HBM3",
                   num_cores: int = 132) -> Any:
    """Lower ``fn`` for CUDA on a machine without a GPU (an abstract device): Triton lowering errors show
    here, in CI, instead of on the first GPU that runs the kernel."""
    device = jax.sharding.AbstractDevice(device_kind=device_kind, platform="gpu", num_cores=num_cores)
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((), (), abstract_device=device)):
        return jax.jit(fn).trace(*specs).lower(lowering_platforms=("cuda",))
