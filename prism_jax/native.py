"""Thin wrapper around the compiled extension ``prism_jax._native``.

The extension is imported lazily (importing this module never fails).  If it is
missing, :func:`perf_counter_ns` falls back to :func:`time.perf_counter_ns`
(logging a warning once); every other function raises :class:`NativeUnavailableError`
with instructions on how to rebuild.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "NativeUnavailableError",
    "available",
    "get_native",
    "perf_counter_ns",
    "load_symbol_capsule",
    "cuda_compiled",
    "cuda_device_count",
    "native_version",
    "runtime_include_dir",
]

logger = logging.getLogger(__name__)

REBUILD_HINT = (
    "Rebuild it with `bash scripts/_bootstrap.sh` from the repository root "
    "(or `.venv/bin/python -m pip install -e '.[dev]'`); this needs a C++17 "
    "compiler and CMake >= 3.18."
)


class NativeUnavailableError(ImportError):
    """The compiled extension ``prism_jax._native`` could not be imported."""


_lock = threading.Lock()
_native: ModuleType | None = None
_import_error: BaseException | None = None
_warned_timer_fallback = False


def _load() -> ModuleType | None:
    global _native, _import_error
    if _native is not None or _import_error is not None:
        return _native
    with _lock:
        if _native is None and _import_error is None:
            try:
                from prism_jax import _native as mod  # type: ignore[attr-defined]
            except ImportError as exc:
                _import_error = exc
            else:
                _native = mod
    return _native


def available() -> bool:
    """True if the compiled extension can be imported."""
    return _load() is not None


def get_native() -> ModuleType:
    """Return the ``prism_jax._native`` module or raise :class:`NativeUnavailableError`."""
    mod = _load()
    if mod is None:
        raise NativeUnavailableError(
            f"prism_jax._native (the compiled extension) is not available: "
            f"{_import_error}. {REBUILD_HINT}"
        ) from _import_error
    return mod


def perf_counter_ns() -> int:
    """Monotonic clock in integer nanoseconds (native steady_clock when available)."""
    mod = _load()
    if mod is not None:
        return mod.perf_counter_ns()
    global _warned_timer_fallback
    if not _warned_timer_fallback:
        _warned_timer_fallback = True
        logger.warning(
            "prism_jax._native is not available (%s); timing with time.perf_counter_ns "
            "instead. %s",
            _import_error,
            REBUILD_HINT,
        )
    return time.perf_counter_ns()


def load_symbol_capsule(path: str | os.PathLike[str], symbol: str) -> Any:
    """dlopen ``path`` and return ``symbol``'s address as an unnamed PyCapsule.

    The result can be passed to ``jax.ffi.register_ffi_target(name, capsule,
    platform="cpu")``.  The library stays loaded for the life of the process.
    Raises RuntimeError (naming the path and dlerror()) on failure.
    """
    return get_native().load_symbol_capsule(os.fspath(path), symbol)


def cuda_compiled() -> bool:
    """True if the CUDA probe was compiled in (nvcc was found at build time)."""
    return bool(get_native().cuda_compiled())


def cuda_device_count() -> int:
    """CUDA devices visible to the CUDA runtime (0 when not compiled / no driver / none)."""
    mod = _load()
    if mod is None:
        return 0
    return int(mod.cuda_device_count())


def native_version() -> str:
    """Version string baked into the extension at build time."""
    return str(get_native().version())


def runtime_include_dir() -> Path:
    """Directory containing ``prism_runtime.h`` (for compiling generated kernels)."""
    pkg_dir = Path(__file__).resolve().parent
    candidates = [pkg_dir / "include", pkg_dir.parent / "csrc" / "runtime"]
    for cand in candidates:
        if (cand / "prism_runtime.h").is_file():
            return cand
    raise FileNotFoundError(
        "prism_runtime.h not found (looked in: "
        + ", ".join(str(c) for c in candidates)
        + ")"
    )
