"""prism_jax: symbolic superoptimization of JAX programs (after Prism and Mirage).

Public API (everything else is internal and may change):

- :func:`trace` — a JAX function → its fusible regions as sGraph IR programs, with an evaluator that
  runs every region through the reference interpreter.
- :class:`TracedProgram`, :class:`Region`, :class:`RegionConfig` — what ``trace`` returns / takes.
- :func:`verify` — are two JAX functions equivalent (fingerprint, then an e-graph proof)?
  :func:`verify_graphs` does the same for two IR graphs; :class:`Verdict`, :class:`Status`,
  :class:`Method` describe the answer and how it was reached.
- :mod:`prism_jax.ir` — the sGraph IR (symbolic sizes, kernel and block graphs, interpreter).
"""

from prism_jax import ir
from prism_jax.frontend import Region, RegionConfig, TracedProgram, trace
from prism_jax.verify import Method, Status, Verdict, verify_graphs
from prism_jax.api import verify  # after the subpackage import: the name prism_jax.verify is the function

__version__ = "0.1.0"

__all__ = ["Method", "Region", "RegionConfig", "Status", "TracedProgram", "Verdict", "__version__", "ir",
           "trace", "verify", "verify_graphs"]
