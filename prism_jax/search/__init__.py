"""Symbolic search: level-1 enumeration of block-graph structures pruned by abstract expressions
(``enumerate.py``) and map instantiation with verification (``maps.py``). Single custom kernels only so
far; no cost ranking, parallelism or cache yet (see docs/architecture.md)."""

from prism_jax.search.enumerate import (EnumerationConfig, EnumerationStats, FusedKernel, enumerate_structures,
                                        find_fused_kernels, vocabulary)
from prism_jax.search.maps import (BlockStructure, MapAssignment, MapSearchResult, MapSearchStats, build_candidate,
                                   map_assignments, resolve_maps)

__all__ = ["EnumerationConfig", "EnumerationStats", "FusedKernel", "enumerate_structures", "find_fused_kernels",
           "vocabulary", "BlockStructure", "MapAssignment", "MapSearchResult", "MapSearchStats", "build_candidate",
           "map_assignments", "resolve_maps"]
