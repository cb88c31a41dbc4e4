"""Device specs and the analytic (roofline) cost model."""

from prism_jax.cost.devices import A100, GPUS, H100_PCIE, H100_SXM, H200, DeviceSpec, gpu_spec, host_cpu
from prism_jax.cost.model import CostEstimate, KernelCost, block_cost, estimate, memory_floor_seconds
from prism_jax.cost.sizing import NATIVE_CPU, TRITON, Ranked, TileRules, best_sizes, ranked_sizes, size_options

__all__ = ["A100", "GPUS", "H100_PCIE", "H100_SXM", "H200", "CostEstimate", "DeviceSpec", "KernelCost",
           "block_cost", "estimate", "gpu_spec", "host_cpu", "memory_floor_seconds", "NATIVE_CPU", "TRITON", "Ranked", "TileRules",
           "best_sizes", "ranked_sizes", "size_options"]
