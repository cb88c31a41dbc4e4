"""An instantiated kernel graph → a JAX function whose custom kernels are native CPU custom calls."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Callable

import jax
import numpy as np

from prism_jax.codegen.cpp.build import ffi_target
from prism_jax.codegen.cpp.emit import kernel_source
from prism_jax.codegen.graph_function import graph_function
from prism_jax.frontend.to_jax import jax_dtype
from prism_jax.ir import IRError, KernelGraph, OpKind, is_concrete_graph


@dataclasses.dataclass(frozen=True)
class CppOptions:
    """Knobs of the native CPU kernels (the tuner's launch options)."""

    threads: int = 0  # threads working on a kernel's blocks (the caller included); 0: XLA's intra-op pool size


def kernel_graph_function(graph: KernelGraph, options: CppOptions = CppOptions()) -> Callable[..., list]:
    """A traceable JAX function computing ``graph`` (concrete) with each custom kernel compiled to C++."""
    if not is_concrete_graph(graph):
        raise IRError(f"kernel graph {graph.name!r} has symbolic sizes; instantiate it before codegen")
    calls = {}
    for i, op in enumerate(graph.ops):
        if op.kind == OpKind.CUSTOM_KERNEL:
            sources = [graph.values[v] for v in op.inputs]
            symbol = "k" + hashlib.sha256(repr((op.block, sources)).encode()).hexdigest()[:16]
            source = kernel_source(op.block, sources, symbol)
            outs = [jax.ShapeDtypeStruct(tuple(int(d) for d in graph.values[v].shape), jax_dtype(graph.values[v]))
                    for v in op.outputs]
            call = jax.ffi.ffi_call(ffi_target(source, symbol), outs, vmap_method="sequential")
            # the thread count is an attribute: one compiled kernel serves every setting the tuner tries
            calls[i] = functools.partial(call, workers=np.int64(options.threads))
    return graph_function(graph, calls)
