"""prism_jax: symbolic superoptimization of JAX programs (after Prism and Mirage).

Public API (everything else is internal and may change):

- :func:`trace` — a JAX function → its fusible regions as sGraph IR programs, with an evaluator that
  runs every region through the reference interpreter.
- :class:`TracedProgram`, :class:`Region`, :class:`RegionConfig` — what ``trace`` returns / takes.
- :mod:`prism_jax.ir` — the sGraph IR (symbolic sizes, kernel and block graphs, interpreter).
"""

from prism_jax.frontend import Region, RegionConfig, TracedProgram, trace
from prism_jax import ir

__version__ = "0.1.0"

__all__ = ["Region", "RegionConfig", "TracedProgram", "__version__", "ir", "trace"]
