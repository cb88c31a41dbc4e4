"""Compile generated C++ into a shared library on first use and register its FFI handler with XLA.

Libraries live in ``<cache dir>/kernels/<hash>.so``, the hash covering the source, the flags, the
compiler's version and jaxlib's version (a new compiler or jaxlib builds afresh). A library is
written under a temporary name and renamed into place, so two processes never load a half-written
file; a library that does not load (corrupt) is rebuilt once. Generated kernels include one header,
:data:`PRELUDE`, which GCC precompiles once per cache dir (a kernel then skips parsing XLA's FFI
headers). Compile errors and a missing compiler raise :class:`CompileError` with the reason (the tuner
then keeps XLA and says why).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import threading
from typing import Callable, Iterator, Sequence

import jax

from prism_jax import native
from prism_jax.cache import cache_dir

log = logging.getLogger("prism_jax.codegen")

COMPILER_ENV = "PRISM_JAX_CXX"  # the compiler to use (default: $CXX, then g++, then c++)
# -fno-trapping-math: no floating-point operation is assumed to trap (nothing here reads the FP exception
# flags), so GCC may if-convert the selects in a loop body and vectorize it on AVX2, which it otherwise
# refuses ("control flow in loop"): fast_exp's clamp kept softmax's and SiLU's exp loops scalar on an AVX2
# host (GQA float32: a third of the kernel's time).  The values computed are the same.
FLAGS = ("-O3", "-march=native", "-fno-trapping-math", "-pthread", "-std=c++17", "-shared", "-fPIC", "-w")


class CompileError(RuntimeError):
    """A generated kernel did not compile (or no compiler was found)."""


def compiler() -> str:
    """The C++ compiler: ``$PRISM_JAX_CXX`` when set (an error if it is not found), else ``$CXX``, g++, c++."""
    explicit = os.environ.get(COMPILER_ENV)
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise CompileError(f"{COMPILER_ENV}={explicit!r} is not an executable on PATH")
        return found
    for candidate in (os.environ.get("CXX"), "g++", "c++"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    raise CompileError(f"no C++ compiler found (set {COMPILER_ENV} or CXX, or install g++)")


@functools.lru_cache(maxsize=None)
def _compiler_version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CompileError(f"the C++ compiler {path} does not run: {err}") from err
    if out.returncode != 0:
        raise CompileError(f"the C++ compiler {path} does not run: {out.stderr.strip()[:200]}")
    return out.stdout.splitlines()[0] if out.stdout else path


def include_dirs() -> list[str]:
    return [jax.ffi.include_dir(), str(native.runtime_include_dir())]


RUNTIME_SOURCE = "prism_cpu_runtime.cc"  # prism_cpu.h's matmuls, compiled once per machine


KERNEL_FLAGS = (*FLAGS, "-DPRISM_CPU_EXTERN_MATMUL")  # kernels call the runtime library's matmuls
PRELUDE = "prism_kernel_prelude.h"  # the one header generated kernels include, first (precompiled with GCC)


def library_for(source: str) -> pathlib.Path:
    """The compiled library of ``source`` (built now unless cached), linked against the runtime library
    (:func:`runtime_library`) found next to it. A source that starts by including :data:`PRELUDE`
    compiles against its precompiled form where the compiler is GCC."""
    tool = compiler()
    wants_prelude = source.lstrip().startswith(f'#include "{PRELUDE}"')
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # on a fresh cache both take seconds: overlap them
        prelude = pool.submit(precompiled_prelude, tool) if wants_prelude else None
        runtime = runtime_library()
        precompiled = prelude.result() if prelude is not None else None
    link = (f"-L{runtime.parent}", f"-l:{runtime.name}", "-Wl,-rpath,$ORIGIN")
    return build_cached(source, tool, KERNEL_FLAGS, include_dirs(), ".cc", context=_host_context(), link=link,
                        precompiled=precompiled)


def precompiled_prelude(tool: str) -> pathlib.Path | None:
    """A directory holding :data:`PRELUDE` precompiled by ``tool`` with the kernels' flags (built now
    unless cached, keyed like a library), or None where ``tool`` is not GCC or precompiling failed
    (kernels then parse the header themselves: slower, same code)."""
    if not _is_gcc(tool):
        return None
    key = _cache_key(f'#include "{PRELUDE}"\n', tool, KERNEL_FLAGS, include_dirs(), _host_context())
    path = cache_dir() / "kernels" / f"prelude-{key}" / f"{PRELUDE}.gch"
    with _one_build_of(path):
        if str(path) in _unprecompilable:
            return None
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            command = [tool, *KERNEL_FLAGS, *(f"-I{d}" for d in include_dirs()), "-x", "c++-header"]
            try:
                _compile(command, f'#include "{PRELUDE}"\n', ".h", path)
            except (CompileError, OSError, subprocess.TimeoutExpired) as err:
                log.info("kernels compile without a precompiled %s: %s", PRELUDE, err)
                _unprecompilable.add(str(path))
                return None
    return path.parent


_unprecompilable: set[str] = set()  # preludes that failed to precompile in this process (not tried again)


@functools.lru_cache(maxsize=None)
def _is_gcc(tool: str) -> bool:
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Free Software Foundation" in out and "clang" not in out


def runtime_library() -> pathlib.Path:
    """The runtime's matmuls compiled for this machine (once; cached like the kernels). A cached copy
    that does not load (a corrupt file) is rebuilt."""
    source = (native.runtime_include_dir() / RUNTIME_SOURCE).read_text()

    def build() -> pathlib.Path:
        return build_cached(source, compiler(), FLAGS, include_dirs(), ".cc", context=_host_context())

    path = build()
    if str(path) not in _loadable:
        try:
            ctypes.CDLL(str(path))
        except OSError as err:
            log.warning("rebuilding %s, which did not load (%s)", path, err)
            path.unlink(missing_ok=True)
            path = build()
            ctypes.CDLL(str(path))
        _loadable.add(str(path))
    return path


_loadable: set[str] = set()  # runtime libraries this process has loaded


@functools.lru_cache(maxsize=1)
def _host_context() -> str:
    """What a cached library also depends on: the runtime headers it includes (a changed header must
    rebuild) and, for ``-march=native``, this CPU's model and ISA flags (a cache shared with another
    machine must not load code for instructions this one lacks)."""
    digest = hashlib.sha256()
    for header in sorted([*native.runtime_include_dir().glob("*.h"), *native.runtime_include_dir().glob("*.cc")]):
        digest.update(header.name.encode() + b"\0" + header.read_bytes())
    try:
        cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = platform.processor()
    lines = [line for line in cpuinfo.splitlines() if line.startswith(("model name", "flags", "Features"))]
    digest.update("\n".join(dict.fromkeys(lines)).encode())
    return digest.hexdigest()


def build_cached(source: str, tool: str, flags: Sequence[str], includes: Sequence[str], suffix: str,
                 output: str = ".so", context: str = "", link: Sequence[str] = (),
                 precompiled: pathlib.Path | None = None) -> pathlib.Path:
    """``tool flags -I... source link -o <cache dir>/kernels/<hash><output>``, unless already there. The
    hash covers the source, flags, link arguments, the tool's version, jax's version, the include dirs
    and ``context`` (whatever else the result depends on). ``precompiled``: a directory of precompiled
    headers searched first, which speeds the compile and changes nothing in its result (not hashed);
    one the compiler cannot read is deleted and the source compiled without it."""
    key = _cache_key(source, tool, [*flags, *link], includes, context)
    directory = cache_dir() / "kernels"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{key}{output}"
    with _one_build_of(path):  # the tuner's threads often ask for one source at once (e.g. per thread count)
        if not path.exists():
            search = [f"-I{d}" for d in includes]
            _compile_preferring(precompiled, [tool, *flags], search, source, suffix, path, link)
    return path


@contextlib.contextmanager
def _one_build_of(path: pathlib.Path) -> Iterator[None]:
    """Held while ``path`` is built: other threads of this process wanting it wait, then find it built."""
    with _building_lock:
        lock = _building.setdefault(str(path), threading.Lock())
    with lock:
        yield


_building: dict[str, threading.Lock] = {}
_building_lock = threading.Lock()


def _compile_preferring(precompiled: pathlib.Path | None, command: list[str], search: list[str], source: str,
                        suffix: str, path: pathlib.Path, link: Sequence[str]) -> None:
    """Compile with the precompiled headers in ``precompiled`` first on the search path, or without them
    where there are none or the compiler cannot read them (then they are deleted)."""
    tool = command[0]
    if precompiled is not None:
        try:
            _compile([*command, f"-I{precompiled}", *search], source, suffix, path, link)
            return
        except CompileError as err:
            if "precompiled header" not in str(err):
                raise
            log.warning("deleting the precompiled headers in %s, which %s could not read", precompiled, tool)
            shutil.rmtree(precompiled, ignore_errors=True)
    _compile([*command, *search], source, suffix, path, link)


def _cache_key(source: str, tool: str, flags: Sequence[str], includes: Sequence[str], context: str) -> str:
    return hashlib.sha256("\0".join([source, " ".join(flags), _compiler_version(tool), jax.__version__,
                                     *includes, context]).encode()).hexdigest()[:32]


def _compile(command: list[str], source: str, suffix: str, path: pathlib.Path, link: Sequence[str] = ()) -> None:
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        src = pathlib.Path(tmp) / f"kernel{suffix}"
        src.write_text(source)
        out = pathlib.Path(tmp) / f"kernel{path.suffix}"
        # libraries after the source: with --as-needed a library named before its users is dropped
        result = subprocess.run([*command, str(src), *link, "-o", str(out)], capture_output=True, text=True,
                                timeout=600)
        if result.returncode != 0:
            raise CompileError(f"{command[0]} failed on a generated kernel:\n{result.stderr.strip()[:2000]}")
        os.replace(out, path)  # atomic: readers see no file or the whole file
    log.info("compiled %s", path.name)


_registered: dict[str, str] = {}
_lock = threading.Lock()


def ffi_target(source: str, symbol: str, build: Callable[[str], pathlib.Path] | None = None,
               platform: str = "cpu") -> str:
    """The XLA FFI target name of ``symbol`` in ``source`` compiled by ``build`` (default: the host C++
    compiler, :func:`library_for`), registered for ``platform`` once per process (jaxlib would hand a
    second registration of a name on to the platform again)."""
    build = build or library_for
    path = build(source)
    name = f"prism_{path.stem}_{symbol}"  # the stem hashes source, flags and compiler: no two libraries share it
    with _lock:
        if name not in _registered:
            try:
                capsule = native.load_symbol_capsule(path, symbol)
            except RuntimeError as err:  # a corrupt library: build it again, once
                log.warning("rebuilding %s, which did not load (%s)", path, err)
                path.unlink(missing_ok=True)
                capsule = native.load_symbol_capsule(build(source), symbol)
            jax.ffi.register_ffi_target(name, capsule, platform=platform)
            _registered[name] = str(path)
    return name
