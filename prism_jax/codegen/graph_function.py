"""The JAX function of an instantiated kernel graph, given how each custom kernel is called: shared
by every emitter (predefined ops between kernels run as plain JAX)."""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterator, Mapping

import jax

from prism_jax.frontend.to_jax import apply_op, jax_dtype
from prism_jax.ir import IRError, KernelGraph, Op, OpKind, TensorType, is_concrete_graph


def native_kernels(graph: KernelGraph) -> Iterator[tuple[int, Op, list[TensorType], str, list[jax.ShapeDtypeStruct]]]:
    """Per custom kernel of ``graph`` (concrete) for a native emitter: op index, op, source types, a
    symbol naming it by content (one compiled library per distinct kernel) and its output structs."""
    if not is_concrete_graph(graph):
        raise IRError(f"kernel graph {graph.name!r} has symbolic sizes; instantiate it before codegen")
    for i, op in enumerate(graph.ops):
        if op.kind == OpKind.CUSTOM_KERNEL:
            sources = [graph.values[v] for v in op.inputs]
            symbol = "k" + hashlib.sha256(repr((op.block, sources)).encode()).hexdigest()[:16]
            outs = [jax.ShapeDtypeStruct(tuple(int(d) for d in graph.values[v].shape), jax_dtype(graph.values[v]))
                    for v in op.outputs]
            yield i, op, sources, symbol, outs


def graph_function(graph: KernelGraph, calls: Mapping[int, Callable[..., Any]]) -> Callable[..., list]:
    """``calls[i]`` computes the outputs of custom-kernel op ``i`` from its inputs."""

    def fn(*args: Any) -> list:
        env = dict(zip(graph.inputs, args))
        for i, op in enumerate(graph.ops):
            ins = [env[v] for v in op.inputs]
            if i in calls:
                env.update(zip(op.outputs, calls[i](*ins)))
            else:
                env[op.outputs[0]] = apply_op(op.kind, op.attrs, ins, graph.values[op.outputs[0]])
        return [env[v] for v in graph.outputs]

    return fn
