"""The user-facing entry points that combine stages: ``verify`` and ``search`` (``entry.py``) and
``superoptimize`` (trace → search → tune → rewrite, ``superoptimize.py``) with its report
(``explain.py``)."""

from prism_jax.api.entry import search, verify
from prism_jax.api.explain import Explanation
from prism_jax.api.superoptimize import Backend, Superoptimized, superoptimize, with_reference_vjp

__all__ = ["Backend", "Explanation", "Superoptimized", "search", "superoptimize", "verify", "with_reference_vjp"]
