"""The JAX function of an instantiated kernel graph, given how each custom kernel is called: shared
by every emitter (predefined ops between kernels run as plain JAX)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from prism_jax.frontend.to_jax import apply_op
from prism_jax.ir import KernelGraph


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
