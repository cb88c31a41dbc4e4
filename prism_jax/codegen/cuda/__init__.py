"""CUDA emitter: custom kernels as CUDA C++ with XLA FFI handlers for the CUDA platform, built by nvcc."""

from prism_jax.codegen.cuda.build import compile_object, library_for, nvcc
from prism_jax.codegen.cuda.emit import kernel_source

__all__ = ["compile_object", "kernel_source", "library_for", "nvcc"]
