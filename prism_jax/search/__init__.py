"""Symbolic search: level-1 enumeration of block-graph structures pruned soundly (``enumerate.py``),
map instantiation (``maps.py``), and the per-region driver
that symbolizes, screens with the fingerprint, ranks and proves (``driver.py``)."""

from prism_jax.search.driver import (Candidate, RegionSearch, SearchConfig, SearchResult, SearchStats, cache_key,
                                     search_region)
from prism_jax.search.enumerate import (EnumerationConfig, EnumerationStats, FusedKernel, enumerate_structures,
                                        find_fused_kernels, prologues, vocabulary)
from prism_jax.search.maps import (BlockStructure, MapAssignment, MapSearchResult, MapSearchStats, build_candidate,
                                   map_assignments, resolve_maps)
from prism_jax.search.problem import SearchProblem
from prism_jax.search.symbolize import symbolize

__all__ = ["Candidate", "RegionSearch", "SearchConfig", "SearchResult", "SearchStats", "cache_key", "search_region",
           "EnumerationConfig", "EnumerationStats", "FusedKernel", "enumerate_structures", "find_fused_kernels",
           "prologues", "vocabulary", "BlockStructure", "MapAssignment", "MapSearchResult", "MapSearchStats",
           "build_candidate", "map_assignments", "resolve_maps", "SearchProblem",
           "symbolize"]
