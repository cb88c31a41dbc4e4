"""The compiled extension prism_jax._native and its wrapper prism_jax.native."""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess
import time
import uuid

import numpy as np
import pytest

from prism_jax import native

GXX = shutil.which("g++") or shutil.which("c++")
needs_gxx = pytest.mark.skipif(GXX is None, reason="no C++ compiler (g++) on PATH")


def _compile_so(tmp_path, source: str, name: str, extra_flags=()) -> str:
    src = tmp_path / f"{name}.cc"
    src.write_text(source)
    out = tmp_path / f"lib{name}.so"
    cmd = [GXX, "-std=c++17", "-O1", "-shared", "-fPIC", *extra_flags, str(src), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stderr}"
    return str(out)


def test_extension_imports():
    import prism_jax._native as ext

    assert native.available()
    assert native.get_native() is ext
    assert isinstance(ext.version(), str) and ext.version()
    assert native.native_version() == ext.version()


def test_perf_counter_ns_is_monotonic_int():
    samples = [native.perf_counter_ns() for _ in range(10_000)]
    assert all(isinstance(s, int) for s in samples[:10])
    assert all(b >= a for a, b in zip(samples, samples[1:]))


def test_perf_counter_ns_is_in_nanoseconds():
    t0_py, t0 = time.perf_counter_ns(), native.perf_counter_ns()
    time.sleep(0.010)
    t1, t1_py = native.perf_counter_ns(), time.perf_counter_ns()
    dt, dt_py = t1 - t0, t1_py - t0_py
    assert dt >= 9_000_000, dt  # slept >= 10 ms
    assert dt <= 5_000_000_000, dt  # loose: a loaded CI machine
    assert 0.5 < dt / dt_py < 2.0, (dt, dt_py)


def test_load_symbol_capsule_missing_library(tmp_path):
    missing = tmp_path / "does_not_exist" / "libnothing.so"
    with pytest.raises(RuntimeError) as info:
        native.load_symbol_capsule(missing, "anything")
    assert str(missing) in str(info.value)


@needs_gxx
def test_load_symbol_capsule_real_library(tmp_path):
    path = _compile_so(
        tmp_path, 'extern "C" int prism_test_answer(int x) { return x + 41; }\n', "answer"
    )
    cap = native.load_symbol_capsule(path, "prism_test_answer")
    assert type(cap).__name__ == "PyCapsule"

    # the capsule is unnamed (like jax.ffi.pycapsule) and holds the symbol's address
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    addr = get_pointer(cap, None)
    fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(addr)
    assert fn(1) == 42

    # loading again (same handle, kept alive) gives the same address
    assert get_pointer(native.load_symbol_capsule(path, "prism_test_answer"), None) == addr

    with pytest.raises(RuntimeError) as info:
        native.load_symbol_capsule(path, "no_such_symbol")
    assert "no_such_symbol" in str(info.value)


@needs_gxx
def test_capsule_registers_as_jax_ffi_target(tmp_path):
    """End to end: a capsule from load_symbol_capsule works as an XLA FFI CPU target."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    source = r"""
#include <cstdint>
#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;
static ffi::Error AddOneImpl(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y) {
  const int64_t n = static_cast<int64_t>(x.element_count());
  for (int64_t i = 0; i < n; ++i) y->typed_data()[i] = x.typed_data()[i] + 1.0f;
  return ffi::Error::Success();
}
XLA_FFI_DEFINE_HANDLER_SYMBOL(PrismTestAddOne, AddOneImpl,
    ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
"""
    path = _compile_so(tmp_path, source, "addone", ["-I", jax.ffi.include_dir()])
    cap = native.load_symbol_capsule(path, "PrismTestAddOne")
    name = f"prism_test_add_one_{uuid.uuid4().hex[:8]}"
    jax.ffi.register_ffi_target(name, cap, platform="cpu")
    x = jnp.arange(6, dtype=jnp.float32).reshape(2, 3)
    call = jax.ffi.ffi_call(name, jax.ShapeDtypeStruct(x.shape, x.dtype))
    y = jax.jit(lambda a: call(a))(x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x) + 1.0)


def test_cuda_flags():
    compiled = native.cuda_compiled()
    assert isinstance(compiled, bool)
    count = native.cuda_device_count()
    assert isinstance(count, int) and count >= 0
    if not compiled:
        assert count == 0


def test_runtime_header_is_found():
    inc = native.runtime_include_dir()
    text = (inc / "prism_runtime.h").read_text()
    assert "namespace prism_jax" in text and "ceil_div" in text


def test_timer_falls_back_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(native, "_native", None)
    monkeypatch.setattr(native, "_import_error", ImportError("simulated missing extension"))
    monkeypatch.setattr(native, "_warned_timer_fallback", False)
    with caplog.at_level(logging.WARNING, logger=native.__name__):
        a = native.perf_counter_ns()
        b = native.perf_counter_ns()
    assert isinstance(a, int) and b >= a
    warnings = [r for r in caplog.records if r.name == native.__name__]
    assert len(warnings) == 1
    assert "scripts/_bootstrap.sh" in warnings[0].getMessage()
    assert native.cuda_device_count() == 0
    with pytest.raises(native.NativeUnavailableError, match="_bootstrap.sh"):
        native.load_symbol_capsule("/nonexistent.so", "x")
