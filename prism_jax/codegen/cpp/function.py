"""An instantiated kernel graph → a JAX function whose custom kernels are native CPU custom calls."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import numpy as np

from prism_jax.codegen.cpp.build import ffi_target
from prism_jax.codegen.cpp.emit import kernel_source
from prism_jax.codegen.graph_function import graph_function, native_kernels
from prism_jax.ir import KernelGraph


@dataclasses.dataclass(frozen=True)
class CppOptions:
    """Knobs of the native CPU kernels (the tuner's launch options)."""

    threads: int = 0  # threads working on a kernel's blocks (the caller included); 0: XLA's intra-op pool size


def kernel_graph_function(graph: KernelGraph, options: CppOptions = CppOptions()) -> Callable[..., list]:
    """A traceable JAX function computing ``graph`` (concrete) with each custom kernel compiled to C++."""
    calls = {}
    for i, op, sources, symbol, outs in native_kernels(graph):
        call = jax.ffi.ffi_call(ffi_target(kernel_source(op.block, sources, symbol), symbol), outs,
                                vmap_method="sequential")
        # the thread count is an attribute: one compiled kernel serves every setting the tuner tries
        calls[i] = functools.partial(call, workers=np.int64(options.threads))
    return graph_function(graph, calls)
