"""The reference interpreter: evaluates an instantiated sGraph with numpy, literally.

Custom kernels run block by block and iteration by iteration: inputs are sliced by their imap/fmap,
accumulators carry state across iterations, post-loop ops run once per block, and outputs are placed
by their omap (summed over grid dims the omap leaves unmapped). It is deliberately slow and simple:
it is the ground truth that verification and codegen are compared against.
"""

from __future__ import annotations

import itertools
from typing import Callable, Sequence

import numpy as np

from prism_jax.ir.errors import IRError
from prism_jax.ir.graph import BlockGraph, KernelGraph, Op, Phase, is_concrete_graph
from prism_jax.ir.maps import block_offsets, is_concrete_map
from prism_jax.ir.ops import OpKind
from prism_jax.ir.symbolic import constant_value
from prism_jax.ir.types import DType, TensorType


def numpy_dtype(dtype: DType) -> np.dtype:
    if dtype == DType.BFLOAT16:
        try:
            import ml_dtypes
        except ImportError as e:  # pragma: no cover - ml_dtypes ships with jax
            raise IRError("bfloat16 needs the ml_dtypes package") from e
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype.value)


class Interpreter:
    """Evaluates kernel graphs. ``compute_dtype=np.float64`` widens every float value (for
    verification); the default computes in each value's own dtype."""

    def __init__(self, compute_dtype: np.dtype | type | None = None) -> None:
        self.compute_dtype = np.dtype(compute_dtype) if compute_dtype is not None else None

    def _dtype(self, t: TensorType) -> np.dtype:
        if self.compute_dtype is not None and t.dtype.is_float:
            return self.compute_dtype
        return numpy_dtype(t.dtype)

    def run(self, graph: KernelGraph, *args: np.ndarray) -> list[np.ndarray]:
        # IEEE semantics (inf/nan propagate, as on the device) without a warning per op
        with np.errstate(all="ignore"):
            return self._run(graph, *args)

    def _run(self, graph: KernelGraph, *args: np.ndarray) -> list[np.ndarray]:
        if not is_concrete_graph(graph):
            raise IRError(f"kernel graph {graph.name!r} has symbolic sizes; instantiate it first")
        if len(args) != len(graph.inputs):
            raise IRError(f"kernel graph {graph.name!r} takes {len(graph.inputs)} inputs, got {len(args)}")
        env: dict[int, np.ndarray] = {}
        for k, (v, a) in enumerate(zip(graph.inputs, args)):
            expected = graph.values[v]
            a = np.asarray(a)
            if tuple(a.shape) != tuple(expected.shape):
                raise IRError(f"input {k} ({graph.input_names[k]}): expected shape {expected.shape}, got {a.shape}")
            env[v] = a.astype(self._dtype(expected))
        for op in graph.ops:
            if op.kind == OpKind.CUSTOM_KERNEL:
                results = self._run_block(op.block, [env[v] for v in op.inputs])
                env.update(zip(op.outputs, results))
            else:
                env[op.outputs[0]] = self.eval_op(op, [env[v] for v in op.inputs], graph.values[op.outputs[0]])
        return [env[v] for v in graph.outputs]

    # -- block graphs ------------------------------------------------------------------------

    def run_block(self, block: BlockGraph, sources: Sequence[np.ndarray]) -> list[np.ndarray]:
        with np.errstate(all="ignore"):
            return self._run_block(block, sources)

    def _run_block(self, block: BlockGraph, sources: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not all(is_concrete_map(i.imap) and is_concrete_map(i.fmap) for i in block.inputs):
            raise IRError("block graph has unresolved map variables; instantiate it first")
        phases = block.phases()
        outputs = [np.zeros(block.output_type(k).shape, self._dtype(block.output_type(k)))
                   for k in range(len(block.outputs))]
        for b in itertools.product(*(range(g) for g in block.grid)):
            env = self._run_block_instance(block, b, sources, phases)
            for k, out in enumerate(block.outputs):
                tile = env[out.value]
                index = tuple(_chunk(row, block.grid, b, d_tile) for row, d_tile in zip(out.omap, tile.shape))
                outputs[k][index] += tile.astype(outputs[k].dtype)
        return outputs

    def _run_block_instance(self, block: BlockGraph, b: tuple[int, ...], sources, phases) -> dict[int, np.ndarray]:
        env: dict[int, np.ndarray] = {}
        state: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        for it in range(block.forloop):
            for inp in block.inputs:
                tile_shape = block.values[inp.value].shape
                index = tuple(_chunk(row, block.grid, b, t, f, block.forloop, it)
                              for row, t, f in zip(inp.imap, tile_shape, inp.fmap))
                env[inp.value] = sources[inp.source][index]
            for op in block.ops:
                if phases[op.outputs[0]] == Phase.POST:
                    if op.kind in _ACCUMULATE:
                        _ACCUMULATE[op.kind](state, op, [env[v] for v in op.inputs])
                    continue
                env[op.outputs[0]] = self.eval_op(op, [env[v] for v in op.inputs], block.values[op.outputs[0]])
        for op in block.ops:
            if phases[op.outputs[0]] != Phase.POST:
                continue
            out_type = block.values[op.outputs[0]]
            if op.kind in _ACCUMULATE:
                env[op.outputs[0]] = _final(state.get(op.outputs[0]), op, out_type, self._dtype(out_type))
            else:
                env[op.outputs[0]] = self.eval_op(op, [env[v] for v in op.inputs], out_type)
        return env

    # -- single ops --------------------------------------------------------------------------

    def eval_op(self, op: Op, args: list[np.ndarray], out_type: TensorType) -> np.ndarray:
        """One op on numpy arrays (floating-point warnings are the caller's: ``run`` silences them)."""
        fn = _EVAL.get(op.kind)
        if fn is None:
            raise IRError(f"the interpreter cannot evaluate {op.kind}")
        return np.asarray(fn(op, args, out_type)).astype(self._dtype(out_type), copy=False)


def evaluate(graph: KernelGraph, *args: np.ndarray, compute_dtype=None) -> list[np.ndarray]:
    """Evaluate an instantiated kernel graph on numpy inputs; returns its outputs."""
    return Interpreter(compute_dtype).run(graph, *args)


def _chunk(row, grid, block, tile: int, loop_entry=False, forloop=1, iteration=0) -> slice:
    index, _ = block_offsets(row, grid, block, loop_entry, forloop, iteration)
    return slice(index * tile, (index + 1) * tile)


# accumulators: state[value] = (accumulated, running log-scale max or None)

def _accumulate(state, op: Op, args) -> None:
    key, x = op.outputs[0], args[0]
    acc = state.get(key, (None, None))[0]
    if op.kind == OpKind.ACCUM_SUM:
        new = x if acc is None else acc + x
    elif op.kind == OpKind.ACCUM_SUM_SQUARES:
        new = x * x if acc is None else acc + x * x
    else:
        new = x if acc is None else np.maximum(acc, x)
    state[key] = (new, None)


def _accumulate_rescaled(state, op: Op, args) -> None:
    """acc·exp(m − m') + value·exp(s − m') with m' = max(m, s): the online-softmax update."""
    key, (value, log_scale) = op.outputs[0], args
    if key not in state:
        state[key] = (value.copy(), log_scale.copy())
        return
    acc, m = state[key]
    with np.errstate(all="ignore"):
        m_new = np.maximum(m, log_scale)
        old = np.where(np.isneginf(m), 0.0, np.exp(m - m_new))
        new = np.where(np.isneginf(log_scale), 0.0, np.exp(log_scale - m_new))
    state[key] = (acc * old + value * new, m_new)


def _final(entry, op: Op, out_type: TensorType, dtype) -> np.ndarray:
    if entry is None:  # a zero-trip loop: the identity of the accumulator
        fill = -np.inf if op.kind == OpKind.ACCUM_MAX else 0.0
        return np.full(out_type.shape, fill, dtype)
    return entry[0]


_ACCUMULATE: dict[OpKind, Callable] = {
    OpKind.ACCUM_SUM: _accumulate, OpKind.ACCUM_SUM_SQUARES: _accumulate, OpKind.ACCUM_MAX: _accumulate,
    OpKind.ACCUM_RESCALED_SUM: _accumulate_rescaled,
}


def _logistic(x):
    # stable for large |x| in either sign
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _iota(op, args, t):
    shape, dim = op.attrs["shape"], op.attrs["dimension"]
    index = np.arange(shape[dim]).reshape([-1 if i == dim else 1 for i in range(len(shape))])
    return np.broadcast_to(index, shape)


def _slice(op, args, t):
    return args[0][tuple(slice(s, l) for s, l in zip(op.attrs["start"], op.attrs["limit"]))]


def _unary(fn):
    return lambda op, args, t: fn(args[0])


def _binary(fn):
    return lambda op, args, t: fn(args[0], args[1])


_EVAL: dict[OpKind, Callable] = {
    OpKind.CONSTANT: lambda op, args, t: np.full(t.shape, constant_value(op.attrs["value"])),
    OpKind.IOTA: _iota,
    OpKind.NEG: _unary(np.negative),
    OpKind.EXP: _unary(np.exp),
    OpKind.LOG: _unary(np.log),
    OpKind.SQRT: _unary(np.sqrt),
    OpKind.RSQRT: _unary(lambda x: 1 / np.sqrt(x)),
    OpKind.TANH: _unary(np.tanh),
    OpKind.LOGISTIC: _unary(_logistic),
    OpKind.SQUARE: _unary(np.square),
    OpKind.RECIPROCAL: _unary(lambda x: 1 / x),
    OpKind.ABS: _unary(np.abs),
    OpKind.NOT: _unary(np.logical_not),
    OpKind.INTEGER_POW: lambda op, args, t: args[0] ** op.attrs["exponent"],
    OpKind.CONVERT: lambda op, args, t: args[0],  # the cast happens in eval_op
    OpKind.ADD: _binary(np.add),
    OpKind.SUB: _binary(np.subtract),
    OpKind.MUL: _binary(np.multiply),
    OpKind.DIV: _binary(np.divide),
    OpKind.MAX: _binary(np.maximum),
    OpKind.MIN: _binary(np.minimum),
    OpKind.POW: _binary(np.power),
    OpKind.AND: _binary(np.logical_and),
    OpKind.OR: _binary(np.logical_or),
    OpKind.LT: _binary(np.less),
    OpKind.LE: _binary(np.less_equal),
    OpKind.GT: _binary(np.greater),
    OpKind.GE: _binary(np.greater_equal),
    OpKind.EQ: _binary(np.equal),
    OpKind.NE: _binary(np.not_equal),
    OpKind.SELECT: lambda op, args, t: np.where(args[0], args[2], args[1]),
    OpKind.REDUCE_SUM: lambda op, args, t: np.sum(args[0], axis=tuple(op.attrs["axes"]), keepdims=True),
    OpKind.REDUCE_MAX: lambda op, args, t: np.max(args[0], axis=tuple(op.attrs["axes"]), keepdims=True),
    OpKind.MATMUL: _binary(np.matmul),
    OpKind.BROADCAST: lambda op, args, t: np.broadcast_to(args[0], t.shape),
    OpKind.RESHAPE: lambda op, args, t: np.reshape(args[0], t.shape),
    OpKind.TRANSPOSE: lambda op, args, t: np.transpose(args[0], op.attrs["perm"]),
    OpKind.CONCAT: lambda op, args, t: np.concatenate(args, axis=op.attrs["axis"]),
    OpKind.SLICE: _slice,
}
