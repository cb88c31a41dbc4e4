"""Device specs for the analytic cost model: published numbers for GPUs, run-time readings for the CPU.

Numbers are the vendors' peak figures (dense, no sparsity); the cost model scales them by achievable
fractions. They rank candidates; they are estimates, never measurements."""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import platform


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    name: str
    kind: str  # "gpu" or "cpu"
    memory_bandwidth: float  # bytes/s, device memory (HBM or DRAM)
    flops_f32: float  # FLOP/s without tensor cores / matrix units
    flops_f16: float  # FLOP/s for 16-bit matmul (tensor cores where present)
    onchip_bytes: int  # per block: shared memory (GPU) or a core's private cache (CPU)
    parallel_units: int  # SMs or cores
    max_blocks: int  # most blocks a grid may have
    launch_overhead_s: float  # per kernel launch / parallel region
    isa: tuple[str, ...] = ()
    step_overhead_s: float = 0.0  # per block and loop iteration (CPU: the loop, tile copies, calls)

    def flops(self, dtype_bytes: int) -> float:
        return self.flops_f16 if dtype_bytes <= 2 else self.flops_f32


H100_SXM = DeviceSpec("NVIDIA H100 80GB HBM3", "gpu", 3.35e12, 67e12, 989e12, 227 * 1024, 132, 2**31 - 1, 3e-6)
H100_PCIE = DeviceSpec("NVIDIA H100 PCIe", "gpu", 2.0e12, 51e12, 756e12, 227 * 1024, 114, 2**31 - 1, 3e-6)
H200 = DeviceSpec("NVIDIA H200", "gpu", 4.8e12, 67e12, 989e12, 227 * 1024, 132, 2**31 - 1, 3e-6)
A100 = DeviceSpec("NVIDIA A100-SXM4-80GB", "gpu", 2.04e12, 19.5e12, 312e12, 163 * 1024, 108, 2**31 - 1, 4e-6)

GPUS = {spec.name: spec for spec in (H100_SXM, H100_PCIE, H200, A100)}


def gpu_spec(device_kind: str) -> DeviceSpec:
    """The spec whose name best matches a JAX ``device_kind`` string; H100 SXM when unknown."""
    lowered = device_kind.lower()
    for key, spec in (("h200", H200), ("h100 pcie", H100_PCIE), ("h100", H100_SXM), ("a100", A100)):
        if key in lowered:
            return spec
    return H100_SXM


@functools.cache
def host_cpu() -> DeviceSpec:
    """This machine's CPU, read at run time (cores, caches, ISA). Bandwidth and FLOP/s are rough
    defaults from the core count and vector width; benchmarks measure the real bandwidth."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    flags, model = _cpuinfo()
    isa = tuple(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "neon") if f in flags)
    lanes = 16 if "avx512f" in isa else 8 if "avx2" in isa else 4
    clock = 2.5e9
    flops = cores * clock * lanes * 2 * 2  # two FMA units
    l2 = _cache_bytes(level=2) or 1 << 20
    return DeviceSpec(model or platform.processor() or "cpu", "cpu", 20e9 * max(1, cores // 2) ** 0.5, flops,
                      flops * (2 if "avx512_bf16" in isa or "amx_bf16" in isa else 1), l2, cores, 1 << 16,
                      5e-6, isa, CPU_STEP_OVERHEAD_S)


CPU_STEP_OVERHEAD_S = 2e-7  # a block-iteration's fixed cost on a CPU core (measured order of magnitude)


def _cpuinfo() -> tuple[set[str], str]:
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return set(), ""
    flags, model = set(), ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "model name" and not model:
            model = value.strip()
    return flags, model


def _cache_bytes(level: int) -> int | None:
    base = pathlib.Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(base.glob("index*")):
        try:
            if int((index / "level").read_text()) != level or (index / "type").read_text().strip() == "Instruction":
                continue
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        units = {"K": 1024, "M": 1024 * 1024}
        return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
    return None
