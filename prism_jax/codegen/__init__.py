"""Code generation: an instantiated sGraph becomes a function JAX can call, one emitter per target
(``pallas``: Pallas kernels for GPUs, interpret mode on CPU)."""
