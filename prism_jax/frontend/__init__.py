"""jaxpr → IR: the primitive rule table, normalization, region partitioning and ``trace``."""

from prism_jax.frontend.convert import RULES, Unsupported
from prism_jax.frontend.partition import RegionConfig
from prism_jax.frontend.to_jax import kernel_graph_fn
from prism_jax.frontend.trace import Region, TracedProgram, trace

__all__ = ["RULES", "RegionConfig", "Region", "TracedProgram", "Unsupported", "kernel_graph_fn", "trace"]
