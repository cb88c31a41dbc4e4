"""C++ emitter: custom kernels as native CPU code called through XLA FFI (``jax.ffi.ffi_call``)."""

from prism_jax.codegen.cpp.build import CompileError, compiler, ffi_target, library_for
from prism_jax.codegen.cpp.emit import kernel_source
from prism_jax.codegen.cpp.function import CppOptions, kernel_graph_function

__all__ = ["CompileError", "CppOptions", "compiler", "ffi_target", "kernel_graph_function", "kernel_source",
           "library_for"]
