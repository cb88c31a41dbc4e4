"""Pallas emitter: custom kernels as ``pallas_call`` (Triton on GPU, interpret mode on CPU)."""

from prism_jax.codegen.pallas.emit import PallasOptions, custom_kernel_call, kernel_graph_function, lower_for_cuda

__all__ = ["PallasOptions", "custom_kernel_call", "kernel_graph_function", "lower_for_cuda"]
