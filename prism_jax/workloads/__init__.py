"""BENCHMARKS.md workloads: plain jnp functions with shapes and inputs (``definitions``), the same as
Flax nnx modules (``nnx_modules``, needs flax), and a small Llama decoder block (``llama``, needs flax).

Only ``definitions`` is imported here, so ``import prism_jax.workloads`` does not need flax.
"""

from prism_jax.workloads.definitions import (
    ALIASES,
    EPS,
    WORKLOADS,
    Shape,
    Suite,
    Workload,
    attention,
    causal_attention,
    gated_mlp,
    get_workload,
    gqa,
    lora,
    mirage_workloads,
    ntrans,
    prism_workloads,
    qknorm_attention,
    rmsnorm,
    rmsnorm_linear,
    rmsnorm_matmul,
    rmsnorm_mlp,
    small_shape,
    swiglu,
)

__all__ = [
    "ALIASES",
    "EPS",
    "WORKLOADS",
    "Shape",
    "Suite",
    "Workload",
    "attention",
    "causal_attention",
    "gated_mlp",
    "get_workload",
    "gqa",
    "lora",
    "mirage_workloads",
    "ntrans",
    "prism_workloads",
    "qknorm_attention",
    "rmsnorm",
    "rmsnorm_linear",
    "rmsnorm_matmul",
    "rmsnorm_mlp",
    "small_shape",
    "swiglu",
]
