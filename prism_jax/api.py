"""The user-facing entry points that combine stages (trace → verify, and later search → tune → rewrite)."""

from __future__ import annotations

from typing import Any, Callable

from prism_jax.frontend import TracedProgram, trace
from prism_jax.ir import KernelGraph
from prism_jax.verify import Method, Verdict, verify_graphs


def _single_region(fn: Callable, args: tuple, kwargs: dict, which: str) -> KernelGraph:
    traced: TracedProgram = trace(fn, *args, **kwargs)
    if len(traced.regions) != 1 or traced.boundaries:
        raise ValueError(f"verify: {which} must trace to exactly one region with nothing left to XLA; it has "
                         f"{len(traced.regions)} region(s) and boundaries {traced.boundaries}. Verify the regions "
                         "separately with prism_jax.verify_graphs.")
    region = traced.regions[0]
    if len(region.graph.outputs) != len(traced.program.outputs):
        raise ValueError(f"verify: part of {which}'s output is computed outside its region")
    return region.graph


def verify(f: Callable | KernelGraph, g: Callable | KernelGraph, *example_args: Any,
           method: Method | str = Method.AUTO, **example_kwargs: Any) -> Verdict:
    """Are two JAX functions (or two IR graphs) equivalent? Functions are traced on the example arguments
    into one region each and compared: ``equal`` only when proved, ``not_equal`` with a counterexample,
    else ``unknown``."""
    if isinstance(f, KernelGraph) and isinstance(g, KernelGraph):
        return verify_graphs(f, g, method)
    reference = _single_region(f, example_args, example_kwargs, "the first function")
    candidate = _single_region(g, example_args, example_kwargs, "the second function")
    return verify_graphs(reference, candidate, method)
