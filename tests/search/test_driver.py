"""The search end to end on traced workloads: what it finds, proves and ranks first (structural
properties of the result, never a stored answer), its statistics, the cache and determinism."""

import dataclasses
import time

import jax
import numpy as np
import pytest

import prism_jax
from prism_jax import workloads
from prism_jax.cache import ResultCache
from prism_jax.ir import Interpreter, OpKind, content_hash, instantiate
from prism_jax.search import SearchConfig, search_region, symbolize
from prism_jax.search.split import CHUNK_NAME, is_split

NO_CACHE = SearchConfig(use_cache=False, progress=False)


def _region(name, shape=None):
    wl = workloads.get_workload(name)
    args = wl.make_args(shape or wl.shapes[0], "float32", 0)
    return wl, args, prism_jax.trace(wl.fn, *args).regions[0].graph


def _fused_block(candidate):
    """The candidate's one custom kernel; everything else is a reshape (a view): no intermediate
    goes to device memory."""
    kernels = [op for op in candidate.graph.ops if op.kind == OpKind.CUSTOM_KERNEL]
    others = [op.kind for op in candidate.graph.ops if op.kind != OpKind.CUSTOM_KERNEL]
    assert len(kernels) == 1 and set(others) <= {OpKind.RESHAPE}, candidate
    return kernels[0].block


def _loop_dims(block):
    """kernel input index -> the dim its for-loop splits (None: loaded once)."""
    return {inp.source: next((d for d, f in enumerate(inp.fmap) if f is True), None) for inp in block.inputs}


def _kinds(block):
    return [op.kind for op in block.ops]


def _extents_of_two(graph):
    """Every grid and loop extent 2, so blocks and iterations really combine."""
    return {symbol: 2 for op in graph.ops if op.kind == OpKind.CUSTOM_KERNEL
            for extent in (*op.block.grid, op.block.forloop) for symbol in getattr(extent, "free_symbols", ())}


def _matches_jit(name, candidate, sizes):
    """Run the candidate (grid and loop extents 2, so blocks and iterations really combine) at the
    region's shape through the reference interpreter and compare with jax.jit."""
    wl, args, _ = _region(name)
    concrete = instantiate(candidate.graph, {**sizes, **_extents_of_two(candidate.graph)})
    (got,) = Interpreter().run(concrete, *(np.asarray(a) for a in args))
    np.testing.assert_allclose(got, jax.jit(wl.fn)(*args), rtol=2e-4, atol=2e-5)


def test_swiglu_ranks_first_both_matmuls_in_one_kernel_with_k_in_the_loop():
    _, _, region = _region("swiglu")
    found = search_region(region, NO_CACHE)
    best = found.best
    assert best is not None and best.verdict.status is prism_jax.Status.EQUAL and best.verdict.method == "egraph"
    block = _fused_block(best)
    assert _kinds(block).count(OpKind.MATMUL) == 2 and _kinds(block).count(OpKind.ACCUM_SUM) == 2
    assert _loop_dims(block) == {0: 1, 1: 0, 2: 0}  # X's and both weights' contraction dim in the loop
    assert [c.ranked.seconds for c in found.candidates] == sorted(c.ranked.seconds for c in found.candidates)
    _matches_jit("swiglu", best, found.sizes)


@pytest.mark.slow
def test_rmsnorm_matmul_ranks_first_the_norm_fused_into_the_k_loop():
    _, _, region = _region("rmsnorm_matmul")
    found = search_region(region, NO_CACHE)
    block = _fused_block(found.best)
    loops = _loop_dims(block)
    assert loops[0] == 1 and 0 in loops.values()  # X split along d, W along its rows
    assert _kinds(block).count(OpKind.ACCUM_SUM) == 2  # the sum of squares and the matmul, both in the loop
    assert OpKind.RSQRT in _kinds(block)
    _matches_jit("rmsnorm_matmul", found.best, found.sizes)


@pytest.mark.slow
def test_attention_finds_the_flash_kernel_and_the_split_kv_program():
    _, _, region = _region("attention")  # decode: q = 1, kv = 1024
    found = search_region(region, NO_CACHE)
    single = next(c for c in found.candidates if not is_split(c.graph))
    block = _fused_block(single)
    loops = _loop_dims(block)
    assert loops[0] is None and loops[1] == 2 and loops[2] == 2  # Q loaded once, K and V walked along kv
    assert _kinds(block).count(OpKind.ACCUM_RESCALED_SUM) == 2  # online softmax
    _matches_jit("attention", single, found.sizes)
    # flash-decoding: KV chunks over a grid dim, then a combine kernel; at decode shapes the cost model
    # ranks it first (16 (batch, head) blocks alone leave most of an H100 idle)
    split = found.best
    assert is_split(split.graph) and split.verdict.method == "egraph"
    first, combine = (op.block for op in split.graph.ops if op.kind == OpKind.CUSTOM_KERNEL)
    assert CHUNK_NAME in {str(g) for g in first.grid} and _kinds(first).count(OpKind.ACCUM_RESCALED_SUM) == 2
    assert OpKind.REDUCE_MAX in _kinds(combine) and OpKind.EXP in _kinds(combine)
    _matches_jit("attention", split, found.sizes)
    assert found.stats.seconds["total"] < 120  # the benchmark holds the 60 s target; CI machines vary


@pytest.mark.slow
def test_qknorm_attention_keeps_both_norms_inside_the_attention_kernel():
    _, _, region = _region("qknorm_attention")
    # the enumeration is bounded by time, not by count: the fused kernel is the 52nd structure of the
    # every-prologue start point, which completes in ~10 s in one process on a 2-core AMD EPYC (Zen 3;
    # ~55 s before the node index and bulk order rule of 2026-12-03, when a 100 s limit on a loaded CI
    # machine ended after 34 structures without it). That start point gets the whole enumeration budget
    # (55% of the limit: ~50 s here, five times what it needs); the search takes longer with a longer
    # limit only because the start point without prologues enumerates its share of it and finds nothing
    found = search_region(region, dataclasses.replace(NO_CACHE, time_limit_s=90.0))
    best_single = next(c for c in found.candidates if not is_split(c.graph))
    block = _fused_block(best_single)
    assert _kinds(block).count(OpKind.RSQRT) == 2
    assert _kinds(block).count(OpKind.ACCUM_RESCALED_SUM) == 2
    assert _loop_dims(block)[1] == 2
    _matches_jit("qknorm_attention", best_single, found.sizes)


@pytest.mark.slow
def test_rmsnorm_mlp_is_one_fused_kernel():
    _, _, region = _region("rmsnorm_mlp")
    found = search_region(region, NO_CACHE)
    block = _fused_block(found.best)
    assert _kinds(block).count(OpKind.MATMUL) == 2 and OpKind.RSQRT in _kinds(block)
    _matches_jit("rmsnorm_mlp", found.best, found.sizes)


def test_statistics_count_every_pruning_rule_and_phase():
    _, _, region = _region("swiglu")
    stats = search_region(region, NO_CACHE).stats
    e = stats.enumeration
    assert e.ill_typed > 0 and e.pruned_abstract > 0 and e.pruned_order > 0 and e.pruned_phase > 0
    assert stats.refuted > 0 and stats.proved == stats.sent_to_egraph - stats.unknown
    table = stats.table()
    for phase in ("enumerate", "maps + fingerprint", "rank", "prove", "total"):
        assert f"seconds: {phase}" in table
    assert "pruned: abstract expression" in table and "refuted by fingerprint" in table


def test_search_is_deterministic():
    _, _, region = _region("swiglu")
    first, second = (search_region(region, NO_CACHE) for _ in range(2))
    assert [content_hash(c.graph) for c in first.candidates] == [content_hash(c.graph) for c in second.candidates]


def test_time_limit_returns_what_was_found_so_far():
    _, _, region = _region("attention")
    found = search_region(region, SearchConfig(time_limit_s=0.5, use_cache=False, progress=False))
    assert found.stats.timed_out
    assert all(c.verdict.status is prism_jax.Status.EQUAL for c in found.candidates)


def test_a_timed_out_search_is_searched_again_under_a_longer_limit(tmp_path):
    """The cache key has no time limit: a result that ran out of time is reused under the same or a
    shorter limit, and searched again under a longer one (a composed region's part searched in a
    small share of the time, later given more, used to read back the small share's result)."""
    _, _, region = _region("attention")
    cache = ResultCache(tmp_path / "results.sqlite")
    short = SearchConfig(time_limit_s=0.5, progress=False)
    first = search_region(region, short, None, cache)
    assert first.stats.timed_out and first.stats.time_limit_s == 0.5 and not first.cache_hit
    assert search_region(region, short, None, cache).cache_hit
    longer = search_region(region, dataclasses.replace(short, time_limit_s=1.0), None, cache)
    assert not longer.cache_hit


def test_second_search_is_a_cache_hit_for_any_shape(tmp_path, monkeypatch):
    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path))
    wl = workloads.get_workload("swiglu")
    config = SearchConfig(progress=False)
    first = prism_jax.search(wl.fn, *wl.make_args(wl.shapes[0], "float32", 0), config=config)
    start = time.perf_counter()
    again = prism_jax.search(wl.fn, *wl.make_args(wl.shapes[0], "float32", 0), config=config)
    assert time.perf_counter() - start < 5  # the benchmark records the sub-second figure
    other_shape = prism_jax.search(wl.fn, *wl.make_args(wl.shapes[3], "float32", 0), config=config)
    assert not first.regions[0].cache_hit and again.regions[0].cache_hit and other_shape.regions[0].cache_hit
    assert [content_hash(c.graph) for c in again.regions[0].candidates] == \
        [content_hash(c.graph) for c in first.regions[0].candidates]
    assert "hit" in again.table() and "swiglu" in str(again)


def test_a_bfloat16_region_reuses_its_float32_twins_search(tmp_path, monkeypatch):
    """Both compute the same float32 core: the second search only assembles the stored core candidates
    into its own region (bfloat16 loads and stores) and re-ranks them; the proof note says so."""
    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path))
    wl = workloads.get_workload("rmsnorm_matmul")
    config = SearchConfig(time_limit_s=20.0, progress=False)
    first = prism_jax.search(wl.fn, *wl.make_args(wl.shapes[0], "float32", 0), config=config).regions[0]
    args = wl.make_args(wl.shapes[0], "bfloat16", 0)
    twin = prism_jax.search(wl.fn, *args, config=config).regions[0]
    assert not first.cache_hit and twin.cache_hit and "core cache lookup + re-rank" in twin.stats.seconds
    assert len(twin.candidates) == len(first.candidates) > 0
    best = twin.best
    assert best.verdict.detail.count("float converts erased") == 1
    assert best.graph.input_types[0].dtype == twin.reference.input_types[0].dtype != first.reference.input_types[0].dtype
    concrete = instantiate(best.graph, {**twin.sizes, **_extents_of_two(best.graph)})
    (got,) = Interpreter().run(concrete, *(np.asarray(a) for a in args))
    want = np.asarray(jax.jit(wl.fn)(*args), np.float32)
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=5e-2, atol=5e-2)


def test_symbolize_shares_equal_dims_and_turns_dim_constants_into_symbols():
    _, _, region = _region("rmsnorm_matmul")
    symbolic, sizes = symbolize(region)
    assert sorted(sizes.values()) == sorted({8, 1024})
    constants = [op.attrs["value"] for op in symbolic.ops if op.kind == OpKind.CONSTANT]
    assert any(getattr(c, "free_symbols", None) for c in constants)  # the mean's divisor d
    back = instantiate(symbolic, sizes)
    assert back.values == region.values
    inputs = [np.random.default_rng(k).standard_normal(tuple(t.shape)).astype(np.float32)
              for k, t in enumerate(region.input_types)]
    np.testing.assert_array_equal(Interpreter().run(back, *inputs)[0], Interpreter().run(region, *inputs)[0])


def test_worker_processes_find_the_same_structures_in_the_same_order():
    """Enumeration start points run in worker processes; merged in start-point order, the result does
    not depend on the worker count (no start point runs out of time here)."""
    from prism_jax.search.driver import SearchStats, _enumerate
    from prism_jax.search.problem import SearchProblem

    _, _, region = _region("rmsnorm_matmul")
    core = SearchProblem.of(symbolize(region)[0]).core
    found = {}
    for workers in (1, 2):
        stats = SearchStats()
        found[workers] = _enumerate(core, SearchConfig(workers=workers, use_cache=False), stats, time.perf_counter(),
                                    None)
        assert not stats.timed_out
    assert found[1] == found[2] and len(found[1]) > 1


def test_structures_arrive_in_batches_that_screening_can_stop_early():
    """Worker processes' structures come in start-point order as their start points finish (screening
    starts on the first while the others still run; the order is the previous test's); closing the
    stream early waits for the workers and leaves final stats."""
    from prism_jax.search.driver import SearchStats, _enumerate_batches
    from prism_jax.search.problem import SearchProblem

    _, _, region = _region("rmsnorm_matmul")
    core = SearchProblem.of(symbolize(region)[0]).core
    config = SearchConfig(workers=2, use_cache=False)
    stats = SearchStats()
    stream = _enumerate_batches(core, config, stats, time.perf_counter(), None)
    first = next(stream)
    stream.close()
    assert stats.structures == len(first) > 0 and "enumerate" in stats.seconds


@pytest.mark.parametrize("name", ["swiglu", "rmsnorm_matmul"])
def test_bfloat16_regions_are_searched_in_float32_and_convert_tiles_at_load_and_store(name):
    """A bf16 region upcasts around its reductions: the search works on its float32 form with those
    converts erased; the kernel loads bf16 tiles, computes in float32 and stores bf16."""
    wl = workloads.get_workload(name)
    args = wl.make_args(wl.shapes[0], "bfloat16", 0)
    found = search_region(prism_jax.trace(wl.fn, *args).regions[0].graph, NO_CACHE)
    best = found.best
    block = _fused_block(best)
    assert "float converts erased" in best.verdict.detail
    assert all(str(block.values[i.value].dtype) in ("bfloat16", "DType.BFLOAT16") for i in block.inputs)
    assert OpKind.CONVERT in _kinds(block) and OpKind.ACCUM_SUM in _kinds(block)
    assert best.graph.output_types[0].dtype == found.reference.output_types[0].dtype
    concrete = instantiate(best.graph, {**found.sizes, **_extents_of_two(best.graph)})
    (got,) = Interpreter().run(concrete, *(np.asarray(a) for a in args))
    want = np.asarray(jax.jit(wl.fn)(*args), np.float32)
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=5e-2, atol=5e-2)


@pytest.mark.slow
def test_matmul_free_region_is_fused_from_the_region_itself():
    """ntrans (two RMSNorms and a residual mix, no matmul): the region as one kernel seeds the search,
    so a fused kernel is found and proved even when the enumeration finds nothing in its time."""
    _, _, region = _region("ntrans")
    found = search_region(region, SearchConfig(time_limit_s=12, use_cache=False, progress=False))
    block = _fused_block(found.best)
    assert _kinds(block).count(OpKind.RSQRT) == 2 and found.best.verdict.method == "egraph"
    _matches_jit("ntrans", found.best, found.sizes)


def test_on_chip_pruning_holds_for_every_size():
    """Symbolic tiles can shrink to one element; concrete ones cannot: only those are pruned."""
    from prism_jax.ir.examples import EXAMPLES, instantiate_example
    from prism_jax.search.driver import smallest_footprint

    assert smallest_footprint(EXAMPLES["rmsnorm_matmul"].symbolic()) < 64
    whole = instantiate_example("tiled_matmul", {"grid": (1, 1), "forloop": 1}, {"M": 512, "K": 512, "N": 512})
    assert smallest_footprint(whole) == 4 * 512 * 512 * 4  # A, B, their product and its accumulator


def test_screen_prunes_what_never_fits_before_the_fingerprint():
    import time

    from prism_jax.search.driver import SearchStats, _screen
    from prism_jax.search.enumerate import EnumerationConfig, enumerate_structures
    from prism_jax.search.problem import SearchProblem

    _, _, region = _region("swiglu")
    core = SearchProblem.of(symbolize(region)[0]).core
    structures = list(enumerate_structures(core, EnumerationConfig(time_limit_s=5.0), only=0))
    roomy, cramped = SearchStats(), SearchStats()
    assert _screen(structures, core, (1, 2), roomy, time.perf_counter() + 30, None, onchip_bytes=1 << 30)
    assert roomy.never_fits == 0
    assert not _screen(structures, core, (1, 2), cramped, time.perf_counter() + 30, None, onchip_bytes=8)
    assert cramped.never_fits == cramped.assignments - cramped.ill_typed > 0


def test_screening_and_proving_go_past_the_limit_for_a_first_candidate_but_not_past_a_hard_deadline():
    """A region's search screens and proves past its time limit until it has a candidate; a composed
    region's part (which the composition can cover otherwise) stops at its hard deadline."""
    import time

    from prism_jax.search.driver import SearchStats, _prove, _screen
    from prism_jax.search.enumerate import EnumerationConfig, enumerate_structures
    from prism_jax.search.problem import SearchProblem

    _, _, region = _region("swiglu")
    problem = SearchProblem.of(symbolize(region)[0])
    structures = list(enumerate_structures(problem.core, EnumerationConfig(time_limit_s=5.0), only=0))
    past = time.perf_counter() - 1
    late, stopped = SearchStats(), SearchStats()
    survivors = _screen(structures, problem.core, (1, 2), late, past, None, onchip_bytes=1 << 30)
    assert survivors and late.assignments > 0  # went on until one survived
    assert not _screen(structures, problem.core, (1, 2), stopped, past, None, onchip_bytes=1 << 30,
                       hard_deadline=past)
    assert stopped.assignments == 0 and stopped.timed_out

    ranked = [(0, index, k, graph, graph, None) for k, (index, graph) in enumerate(survivors[:3])]
    config = SearchConfig(max_candidates=3)
    assert len(_prove(ranked, problem, config, SearchStats(), past, None)) == 1  # one, then the limit
    stopped = SearchStats()
    assert _prove(ranked, problem, config, stopped, past, None, hard_deadline=past) == []
    assert stopped.sent_to_egraph == 0 and stopped.timed_out


def test_a_projection_added_to_a_3d_residual_is_one_kernel():
    """A decoder's down projection: ``r + ((a * b) @ w).reshape(1, 1, d)`` with the residual ``r`` an
    argument of shape [1, 1, d]. The region's add runs on a view of ``r`` (normalization), so the search
    finds the one-kernel program: the product in the K loop, the residual added after it."""
    keys = jax.random.split(jax.random.key(0), 4)
    args = (jax.random.normal(keys[0], (1, 64)), jax.random.normal(keys[1], (1, 64)),
            jax.random.normal(keys[2], (64, 32)), jax.random.normal(keys[3], (1, 1, 32)))

    def fn(a, b, w, r):
        return r + ((a * b) @ w).reshape(1, 1, 32)

    region = prism_jax.trace(fn, *args).regions[0].graph
    result = search_region(region, NO_CACHE)
    assert result.best is not None
    block = _fused_block(result.best)
    assert {OpKind.MATMUL, OpKind.MUL, OpKind.ADD} <= set(_kinds(block))
