"""The on-disk result cache: JSON values by (namespace, key) in one sqlite file, shared across processes.

The bottom layer of prism_jax (stdlib only).  Search stores symbolic candidates per region and tuning
stores tuned choices per shapes and device, so minutes of work survive the process.

- :func:`cache_dir` — ``$PRISM_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/prism_jax``, else ``~/.cache/prism_jax``.
- :func:`cache_enabled` — False when ``$PRISM_JAX_CACHE`` is ``0``/``off``/``false``/``no``.
- :func:`open_cache` — a :class:`ResultCache`, or a :class:`NullCache` when caching is off.
- :class:`ResultCache` — ``get``/``put``/``delete``/``clear``/``keys``/``len``/``stats``/``prune``; best
  effort, never raises on I/O trouble (see :mod:`prism_jax.cache.store`).
"""

from prism_jax.cache.store import (
    CACHE_DIR_ENV,
    CACHE_ENV,
    SCHEMA_VERSION,
    CacheStats,
    JSONValue,
    NullCache,
    ResultCache,
    cache_dir,
    cache_enabled,
    open_cache,
)

__all__ = ["CACHE_DIR_ENV", "CACHE_ENV", "SCHEMA_VERSION", "CacheStats", "JSONValue", "NullCache", "ResultCache",
           "cache_dir", "cache_enabled", "open_cache"]
