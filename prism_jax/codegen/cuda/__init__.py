"""CUDA emitter: custom kernels as CUDA C++ with XLA FFI handlers for the CUDA platform, built by nvcc,
registered with XLA and called through ``jax.ffi.ffi_call``."""

from prism_jax.codegen.cpp.build import CompileError
from prism_jax.codegen.cuda.build import compile_object, ffi_target, library_for, nvcc
from prism_jax.codegen.cuda.emit import kernel_source
from prism_jax.codegen.cuda.function import CudaOptions, custom_kernel_targets, kernel_graph_function

__all__ = ["CompileError", "CudaOptions", "compile_object", "custom_kernel_targets", "ffi_target",
           "kernel_graph_function", "kernel_source", "library_for", "nvcc"]
