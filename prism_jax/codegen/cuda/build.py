"""nvcc for generated CUDA kernels: shared libraries (for the CUDA FFI target, where a GPU runs them)
or object files (compile checks on machines without a GPU), cached like the C++ kernels.

What needs a GPU and what does not (checked with jax 0.11.2 and nvcc 13 on a machine with neither a
GPU, a driver nor a CUDA plugin):

- nvcc links the CUDA runtime statically, so a library loads (dlopen, dlsym) without a driver or
  libcudart; the driver is looked for only when a kernel is launched.
- ``jax.ffi.register_ffi_target(..., platform="CUDA")`` works without a CUDA plugin: jaxlib keeps the
  registration and hands it to the plugin when one loads. So targets register at build time on any
  machine with nvcc (and a program using them lowers for CUDA there); running that program on a
  backend without the handler fails when XLA compiles it ("No FFI handler registered for ... on a
  platform Host").
- Without nvcc, building raises :class:`CompileError`.
"""

from __future__ import annotations

import os
import pathlib
import shutil

import jax

from prism_jax.codegen.cpp.build import CompileError, build_cached
from prism_jax.codegen.cpp.build import ffi_target as cpp_ffi_target

ARCH_ENV = "PRISM_JAX_CUDA_ARCH"  # e.g. sm_90 (default), sm_90a, sm_80
FLAGS = ("-std=c++17", "-O3", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC", "--diag-suppress=940,2473")
PLATFORM = "CUDA"  # XLA's name of the platform (jaxlib maps "gpu" to it too)


def nvcc() -> str:
    found = shutil.which("nvcc")
    if found is None:
        raise CompileError("nvcc not found on PATH: the CUDA kernels cannot be compiled here "
                           "(install the CUDA toolkit or put its bin/ on PATH)")
    return found


def arch() -> str:
    return os.environ.get(ARCH_ENV, "sm_90")


def compile_object(source: str) -> pathlib.Path:
    """An object file of ``source`` (a compile check: nothing is loaded)."""
    return build_cached(source, nvcc(), (*FLAGS, f"-arch={arch()}", "-c"), [jax.ffi.include_dir()], ".cu", ".o")


def library_for(source: str) -> pathlib.Path:
    """A shared library of ``source`` for ``jax.ffi.register_ffi_target(..., platform="CUDA")``."""
    return build_cached(source, nvcc(), (*FLAGS, f"-arch={arch()}", "-shared"), [jax.ffi.include_dir()], ".cu")


def ffi_target(source: str, symbol: str) -> str:
    """The XLA FFI target name of ``symbol`` in the nvcc-built ``source``, registered for CUDA once per
    process (loading and registering need no GPU: see the module docstring)."""
    return cpp_ffi_target(source, symbol, build=library_for, platform=PLATFORM)
