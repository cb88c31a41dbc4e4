"""prism_jax: symbolic superoptimization of JAX programs (after Prism and Mirage).

Public API (everything else is internal and may change):

- :func:`trace` — a JAX function → its fusible regions as sGraph IR programs, with an evaluator that
  runs every region through the reference interpreter.
- :class:`TracedProgram`, :class:`Region`, :class:`RegionConfig` — what ``trace`` returns / takes.
- :func:`verify` — are two JAX functions equivalent (fingerprint, then an e-graph proof)?
  :func:`verify_graphs` does the same for two IR graphs; :class:`Verdict`, :class:`Status`,
  :class:`Method` describe the answer and how it was reached.
- :func:`search` — verified superoptimization candidates of every region (symbolic search, ranking
  by the cost model, e-graph proofs, on-disk cache); :class:`SearchConfig` sets its limits and
  :class:`SearchResult` holds candidates and statistics.
- :func:`superoptimize` — used like ``jax.jit``: every region searched, tuned and replaced by its
  verified kernel (Pallas; interpret mode on CPU) or kept on XLA with the reason;
  ``.explain(*args)`` reports it. :class:`Backend` names where regions run; :class:`TuneConfig`
  sets the tuner; :class:`Explanation` is the report.
- :mod:`prism_jax.ir` — the sGraph IR (symbolic sizes, kernel and block graphs, interpreter).
"""

from prism_jax import ir
from prism_jax.frontend import Region, RegionConfig, TracedProgram, trace
from prism_jax.search import SearchConfig, SearchResult
from prism_jax.tune import TuneConfig
from prism_jax.verify import Method, Status, Verdict, verify_graphs

__version__ = "0.1.0"

# after the subpackage imports: the names prism_jax.verify and prism_jax.search are the functions
from prism_jax.api import Backend, Explanation, Superoptimized, search, superoptimize, verify  # noqa: E402

__all__ = ["Backend", "Explanation", "Method", "Region", "RegionConfig", "SearchConfig", "SearchResult", "Status",
           "Superoptimized", "TracedProgram", "TuneConfig", "Verdict", "__version__", "ir", "search", "superoptimize",
           "trace", "verify", "verify_graphs"]
