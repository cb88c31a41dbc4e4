"""The user-facing entry points that combine stages (trace → verify, and later search → tune → rewrite)."""

from __future__ import annotations

from typing import Any, Callable

from prism_jax.cache import open_cache
from prism_jax.frontend import TracedProgram, trace
from prism_jax.ir import KernelGraph
from prism_jax.search import RegionSearch, SearchConfig, SearchResult, search_region
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


def search(fn: Callable | TracedProgram | KernelGraph, *example_args: Any, config: SearchConfig = SearchConfig(),
           **trace_kwargs: Any) -> SearchResult:
    """Superoptimization candidates for every region of ``fn`` traced on the example arguments (or of
    an already traced program, or of one IR graph): verified programs, best-estimated first, with
    statistics per region. ``trace_kwargs`` go to :func:`trace` (``static_argnums``,
    ``static_argnames``, keyword arguments of ``fn``).

    Each region's search is symbolic in its sizes and cached on disk (see :mod:`prism_jax.cache`), so
    a second call, or a call with other shapes, only re-ranks the stored candidates."""
    import prism_jax

    if isinstance(fn, KernelGraph):
        regions = [fn]
    else:
        traced = fn if isinstance(fn, TracedProgram) else trace(fn, *example_args, **trace_kwargs)
        regions = [r.graph for r in traced.regions]
    cache = open_cache(version=prism_jax.__version__) if config.use_cache else None
    found: list[RegionSearch] = []
    with _progress_bar(len(regions), config.progress) as bar:
        for region in regions:
            bar.set_description(f"search {region.name}")
            found.append(search_region(region, config, _phase_reporter(bar), cache))
            bar.update(1)
    return SearchResult(found)


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="region", leave=False)


def _phase_reporter(bar):
    def report(phase: str, done: int, total: int) -> None:
        bar.set_postfix_str(f"{phase} {done}/{total}", refresh=False)

    return report
