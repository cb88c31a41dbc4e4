"""Kernel graphs composed from parts: a region no single kernel fuses is split into its outputs' slices
(several outputs) or cut after a matmul or reduction, each part searched (or kept as its own predefined
ops), and the joined program equals the region."""

import importlib
import time
import types

import jax.numpy as jnp
import numpy as np

import prism_jax
from prism_jax.cost import memory_floor_seconds
from prism_jax.ir import Interpreter, OpKind, instantiate
from prism_jax.ir.examples import random_inputs
from prism_jax.search import SearchConfig, search_region, symbolize
from prism_jax.workloads.llama import llama_block_fn, tiny_config

compose = importlib.import_module("prism_jax.search.compose")
driver = importlib.import_module("prism_jax.search.driver")
CONFIG = SearchConfig(use_cache=False, progress=False, time_limit_s=10.0)


def mlp_region():
    """The decoder's MLP with its residual: three matmuls and reshapes, more than one kernel can hold."""
    fn, params = llama_block_fn(tiny_config(), mode="prefill")
    traced = prism_jax.trace(fn, params, jnp.ones((2, 8, 64)))
    return next(r.graph for r in traced.regions if sum(op.kind == OpKind.MATMUL for op in r.graph.ops) == 3
                and any(op.kind == OpKind.LOGISTIC for op in r.graph.ops))


def qkv_region():
    """A decode step's Q, K and V projections of one RMSNorm, Q and K each with its own norm: three
    outputs of different shapes, which no single kernel writes."""
    config = tiny_config(qk_norm=True)
    fn, params = llama_block_fn(config, mode="decode")
    cache = jnp.ones((1, config.n_kv_heads, 8, config.head_dim))
    traced = prism_jax.trace(fn, params, jnp.ones((1, 1, config.dim)), cache, cache, jnp.int32(4))
    return next(r.graph for r in traced.regions if sum(op.kind == OpKind.MATMUL for op in r.graph.ops) == 3
                and len(r.graph.outputs) == 3)


def run(graph, inputs):
    return Interpreter(np.float64).run(graph, *inputs)


def test_the_parts_of_every_cut_compute_the_region():
    region = mlp_region()
    inputs = random_inputs(region)
    (expected,) = run(region, inputs)
    assert compose.cut_positions(region)
    for position in compose.cut_positions(region):
        head, tail = compose.cut(region, position)
        env = dict(zip(region.inputs, inputs))
        for part in (head, tail):
            env.update(zip(part.outputs, run(part.graph, [env[v] for v in part.inputs])))
        np.testing.assert_allclose(env[region.outputs[0]], expected, rtol=1e-12)


def test_region_without_a_fused_kernel_gets_a_composed_program():
    region = mlp_region()
    found = search_region(region, CONFIG)
    assert found.candidates and found.stats.composed >= 1
    best = found.best
    assert best.verdict.method == compose.METHOD and "egraph" in best.verdict.detail
    assert 1 <= len(best.graph.custom_kernels) <= CONFIG.max_kernels
    concrete = instantiate(best.graph, {**found.sizes, **best.ranked.sizes})
    inputs = random_inputs(region)
    np.testing.assert_allclose(run(concrete, inputs)[0], run(region, inputs)[0], rtol=1e-9, atol=1e-9)


def test_one_kernel_limit_turns_composition_off():
    region = mlp_region()
    found = search_region(region, SearchConfig(use_cache=False, progress=False, time_limit_s=10.0, max_kernels=1))
    assert not any(c.verdict.method == compose.METHOD for c in found.candidates)
    assert found.stats.composed == 0


def test_output_slices_compute_each_output_alone():
    region = qkv_region()
    inputs = random_inputs(region)
    expected = dict(zip(region.outputs, run(region, inputs)))
    slices = compose.output_slices(region)
    assert len(slices) == 3
    for part in slices:
        assert len(part.outputs) == 1 and sum(op.kind == OpKind.MATMUL for op in part.graph.ops) == 1
        env = dict(zip(region.inputs, inputs))
        (got,) = run(part.graph, [env[v] for v in part.inputs])
        np.testing.assert_allclose(got, expected[part.outputs[0]], rtol=1e-12)
    assert compose.output_slices(mlp_region()) == []  # one output: nothing to slice


def test_region_of_several_outputs_is_composed_from_their_slices():
    """The decode step's QKV region: cuts by op order mix the three projections (no program within the
    time limit before the slices existed); one slice per output finds kernels for each."""
    region = qkv_region()
    reports = []
    found = search_region(region, CONFIG, lambda phase, done, total: reports.append((phase, done, total)))
    assert found.candidates and found.best.verdict.method == compose.METHOD
    # the composition reports its seconds and keeps to its time (twice the limit; a part's last search
    # may run over its share a little), where parts cut again used to overrun theirs several times
    assert [total for phase, _, total in reports if phase == "compose s"][-1] == round(2 * CONFIG.time_limit_s)
    assert found.stats.seconds["compose"] < 3 * CONFIG.time_limit_s
    concrete = instantiate(found.best.graph, {**found.sizes, **found.best.ranked.sizes})
    assert len(concrete.custom_kernels) >= 2
    inputs = random_inputs(region)
    for got, expected in zip(run(concrete, inputs), run(region, inputs)):
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_parts_share_the_composition_time_and_it_ends_in_time():
    """A search that uses all the time it is given: the slices' parts split the slices' share evenly,
    the cuts get the rest, no part is searched with less than MIN_PART_S, and the composition ends
    within its budget (a part's search is bounded by what it is given, its own composition included)."""
    region = qkv_region()
    given = []

    def search(part, seconds):
        given.append((part.name, seconds))
        time.sleep(seconds)
        return None  # nothing found: every split is tried

    budget = 4.0
    start = time.perf_counter()
    assert compose.compose(region, search, lambda graph: None, 5, budget) == []
    elapsed = time.perf_counter() - start
    assert elapsed < budget + 0.5
    slices = [(name, s) for name, s in given if ".out" in name]
    assert len(slices) == 3 and all(s >= compose.MIN_PART_S for _, s in given)
    share = budget * compose.SLICE_SHARE
    assert abs(slices[0][1] - share / 3) < 0.1  # the first of three gets a third, not all of it
    assert sum(s for _, s in slices) <= share + 0.1
    assert any(".head" in name or ".tail" in name for name, _ in given)  # the cuts had their turn


def test_the_program_leaving_the_fewest_matmuls_to_predefined_ops_comes_with_the_cheapest():
    """The cost model takes predefined ops at the roofline (XLA's CPU dots of a few rows are far from
    it), so besides the cheapest program the composition offers the one whose kernels cover the most
    matmuls and reductions, for the tuner to time. Here the rank prefers fewer kernels outright."""
    fn, params = llama_block_fn(tiny_config(), mode="prefill")
    traced = prism_jax.trace(fn, params, jnp.ones((1, 1, 64)))  # one token: the views are unit-dim ones
    mlp = next(r.graph for r in traced.regions if any(op.kind == OpKind.LOGISTIC for op in r.graph.ops))
    region, sizes = symbolize(mlp)

    def search(part, seconds):
        return search_region(part, SearchConfig(use_cache=False, progress=False, time_limit_s=min(seconds, 4.0),
                                                max_kernels=1), sizes=sizes)

    def fewest_kernels(graph):
        return types.SimpleNamespace(key=(len(graph.custom_kernels),))

    programs = compose.compose(region, search, fewest_kernels, 5, 20.0)
    assert len(programs) == 2
    (cheapest, _, _), (widest, verdict, _) = programs
    assert len(cheapest.custom_kernels) == 1
    assert compose._left_heavy(widest) < compose._left_heavy(cheapest)
    assert verdict.method == compose.METHOD


def test_cuts_after_a_matmul_come_before_cuts_inside_a_softmax():
    """Decode attention with its output projection: the cut after P V (attention | projection) is tried
    before the more balanced cuts between softmax's reductions."""
    fn, params = llama_block_fn(tiny_config(), mode="decode")
    config = tiny_config()
    cache = jnp.ones((1, config.n_kv_heads, 8, config.head_dim))
    traced = prism_jax.trace(fn, params, jnp.ones((1, 1, config.dim)), cache, cache, jnp.int32(4))
    region = next(r.graph for r in traced.regions if any(op.kind == OpKind.REDUCE_MAX for op in r.graph.ops))
    kinds = [region.ops[p - 1].kind for p in compose.cut_positions(region)]
    matmul_cuts = kinds.count(OpKind.MATMUL)
    assert matmul_cuts >= 2 and set(kinds[:matmul_cuts]) == {OpKind.MATMUL}
    heads = [compose.cut(region, p)[0].graph for p in compose.cut_positions(region)[:compose.MAX_CUTS]]
    assert any(sum(op.kind == OpKind.MATMUL for op in head.ops) == 2  # Q K^T and P V: the attention alone
               and any(op.kind == OpKind.REDUCE_MAX for op in head.ops) for head in heads)


def test_a_one_kernel_program_well_above_the_floor_is_offered_with_compositions():
    """A decode MLP as one kernel either recomputes the hidden layer in every block or runs on one
    block (estimated well above the memory floor on a multi-core device): the search composes too, so
    the tuner also times the gate/up kernel followed by the down-projection kernel."""
    from prism_jax.workloads.llama import LlamaConfig
    config = LlamaConfig(dim=256, n_heads=2, n_kv_heads=1, head_dim=128, hidden_dim=704)
    fn, params = llama_block_fn(config, mode="prefill")
    traced = prism_jax.trace(fn, params, jnp.ones((1, 1, config.dim)))
    mlp = next(r.graph for r in traced.regions if any(op.kind == OpKind.LOGISTIC for op in r.graph.ops))
    search_config = SearchConfig(use_cache=False, progress=False, time_limit_s=10.0, device="host")
    found = search_region(mlp, search_config)
    one_kernel = [c for c in found.candidates if c.structure != driver.COMPOSED]
    floor = memory_floor_seconds(instantiate(found.reference, found.sizes), search_config.device_spec())
    assert one_kernel and one_kernel[0].ranked.seconds > driver.SHORT_OF_FLOOR * floor
    composed = [c for c in found.candidates if c.structure == driver.COMPOSED]
    assert composed and max(len(c.graph.custom_kernels) for c in composed) >= 2
    keys = [c.ranked.key for c in found.candidates]
    assert keys == sorted(keys)
