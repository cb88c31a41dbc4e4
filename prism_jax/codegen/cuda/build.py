"""nvcc for generated CUDA kernels: shared libraries (for the CUDA FFI target, where a GPU runs them)
or object files (compile checks on machines without a GPU), cached like the C++ kernels."""

from __future__ import annotations

import os
import pathlib
import shutil

import jax

from prism_jax.codegen.cpp.build import CompileError, build_cached

ARCH_ENV = "PRISM_JAX_CUDA_ARCH"  # e.g. sm_90 (default), sm_90a, sm_80
FLAGS = ("-std=c++17", "-O3", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC", "--diag-suppress=940,2473")


def nvcc() -> str:
    found = shutil.which("nvcc")
    if found is None:
        raise CompileError("nvcc not found: the CUDA kernels cannot be compiled here")
    return found


def arch() -> str:
    return os.environ.get(ARCH_ENV, "sm_90")


def compile_object(source: str) -> pathlib.Path:
    """An object file of ``source`` (a compile check: nothing is loaded)."""
    return build_cached(source, nvcc(), (*FLAGS, f"-arch={arch()}", "-c"), [jax.ffi.include_dir()], ".cu", ".o")


def library_for(source: str) -> pathlib.Path:
    """A shared library of ``source`` for ``jax.ffi.register_ffi_target(..., platform="CUDA")``."""
    return build_cached(source, nvcc(), (*FLAGS, f"-arch={arch()}", "-shared"), [jax.ffi.include_dir()], ".cu")
