"""An instantiated kernel graph → a JAX function whose custom kernels are CUDA custom calls.

Each custom kernel is emitted as CUDA C++ (:mod:`prism_jax.codegen.cuda.emit`), built by nvcc into
``<cache dir>/kernels/<hash>.so`` and its FFI handler registered for the CUDA platform when the
function is built (see :mod:`prism_jax.codegen.cuda.build` for what works without a GPU: building
and lowering for CUDA do, running does not). The predefined ops between kernels run as plain JAX.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax

from prism_jax.codegen.cuda.build import ffi_target
from prism_jax.codegen.cuda.emit import THREADS, kernel_source
from prism_jax.codegen.graph_function import graph_function, native_kernels
from prism_jax.ir import KernelGraph


@dataclasses.dataclass(frozen=True)
class CudaOptions:
    """Knobs of the CUDA kernels (the tuner's launch options)."""

    threads: int = THREADS  # threads per block: a multiple of the warp (32), at most 1024

    def __post_init__(self) -> None:
        if not (32 <= self.threads <= 1024 and self.threads % 32 == 0):
            raise ValueError(f"CudaOptions.threads={self.threads}: use a multiple of 32 in [32, 1024]")


def custom_kernel_targets(graph: KernelGraph, options: CudaOptions = CudaOptions()) -> dict[int, str]:
    """Op index → registered FFI target name, for each custom kernel of ``graph`` (concrete); built by
    nvcc unless cached, registered once per process."""
    return {i: _target(op, sources, symbol, options) for i, op, sources, symbol, _ in native_kernels(graph)}


def kernel_graph_function(graph: KernelGraph, options: CudaOptions = CudaOptions()) -> Callable[..., list]:
    """A traceable JAX function computing ``graph`` (concrete) with each custom kernel a CUDA custom call
    (``jax.ffi.ffi_call``; under ``jax.vmap`` the kernel runs once per batch element)."""
    calls = {i: jax.ffi.ffi_call(_target(op, sources, symbol, options), outs, vmap_method="sequential")
             for i, op, sources, symbol, outs in native_kernels(graph)}
    return graph_function(graph, calls)


def _target(op, sources, symbol: str, options: CudaOptions) -> str:
    return ffi_target(kernel_source(op.block, sources, symbol, options.threads), symbol)
