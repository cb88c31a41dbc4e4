"""Symbolic search. So far: map instantiation (resolving the imap/fmap/omap of a block-graph structure,
canonical up to grid-dim permutation, shape-checked early, verified). Level-1 structure enumeration is
the next step (see docs/architecture.md)."""

from prism_jax.search.maps import (BlockStructure, MapAssignment, MapSearchResult, MapSearchStats, build_candidate,
                                   map_assignments, resolve_maps)

__all__ = ["BlockStructure", "MapAssignment", "MapSearchResult", "MapSearchStats", "build_candidate",
           "map_assignments", "resolve_maps"]
