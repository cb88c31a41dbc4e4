"""Every BENCHMARKS.md workload, in jnp and in Flax nnx, traces into one region that reproduces jax.jit;
a Llama block keeps RoPE and the KV-cache update outside its regions."""

import jax
import numpy as np
import pytest

import prism_jax
from prism_jax import workloads
from prism_jax.workloads import llama
from prism_jax.verify import Status, verify_graphs
from prism_jax.workloads.nnx_modules import nnx_workload

NAMES = sorted(workloads.WORKLOADS)


def _assert_one_exact_region(fn, args):
    traced = prism_jax.trace(fn, *args)
    assert len(traced.regions) == 1, traced
    # float32 sums of 1024+ products in another order differ by ~1e-6 of the output's scale
    want = np.asarray(jax.jit(fn)(*args))
    np.testing.assert_allclose(traced.evaluate(*args), want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))
    return traced


@pytest.mark.parametrize("name", NAMES)
def test_jnp_workload_is_one_exact_region(name):
    wl = workloads.get_workload(name)
    traced = _assert_one_exact_region(wl.fn, wl.make_args(workloads.small_shape(wl), "float32", 0))
    assert not traced.boundaries


@pytest.mark.parametrize("name", NAMES)
def test_nnx_workload_is_one_exact_region(name):
    wl = workloads.get_workload(name)
    fn, args = nnx_workload(name, workloads.small_shape(wl), "float32", 0)
    _assert_one_exact_region(fn, args)


def _regions_both_ways(name):
    wl = workloads.get_workload(name)
    shape = workloads.small_shape(wl)
    fn, args = nnx_workload(name, shape, "float32", 0)
    nnx_graph = prism_jax.trace(fn, *args).regions[0].graph
    jnp_graph = prism_jax.trace(wl.fn, *wl.make_args(shape, "float32", 0)).regions[0].graph
    return jnp_graph, nnx_graph


@pytest.mark.parametrize("name", ["swiglu", "gated_mlp", "lora"])
def test_jnp_and_nnx_give_the_same_region(name):
    jnp_graph, nnx_graph = _regions_both_ways(name)
    assert nnx_graph.content_hash() == jnp_graph.content_hash()


@pytest.mark.parametrize("name", ["rmsnorm_matmul", "rmsnorm_mlp", "rmsnorm_linear_6144"])
def test_jnp_and_nnx_regions_are_proved_equal(name):
    """nnx.RMSNorm computes x * (rsqrt(ms) * g), the jnp version (x * rsqrt(ms)) * g: a different
    association, so a different region, which the verifier proves equal."""
    jnp_graph, nnx_graph = _regions_both_ways(name)
    assert verify_graphs(jnp_graph, nnx_graph).status is Status.EQUAL


@pytest.mark.parametrize("name", ["attention", "qknorm_attention"])
def test_jnp_and_nnx_attention_have_the_same_ops(name):
    # the nnx version computes softmax on a 5-D [b, h, group=1, q, kv] layout: normalization sinks
    # the unit-dim reshapes through the softmax until they cancel, leaving the jnp region's ops
    jnp_graph, nnx_graph = _regions_both_ways(name)
    assert nnx_graph.op_counts() == jnp_graph.op_counts()


def test_full_size_rmsnorm_matmul_region():
    wl = workloads.get_workload("rmsnorm_matmul")
    _assert_one_exact_region(wl.fn, wl.make_args(wl.shapes[0], "float32", 0))


@pytest.mark.parametrize("qk_norm", [False, True])
def test_llama_prefill_block_regions_leave_rope_outside(qk_norm):
    fn, params = llama.llama_block_fn(llama.tiny_config(qk_norm), mode="prefill")
    x = jax.random.normal(jax.random.key(3), (2, 8, llama.tiny_config(qk_norm).dim))
    traced = prism_jax.trace(fn, params, x)
    np.testing.assert_allclose(traced.evaluate(params, x), jax.jit(fn)(params, x), rtol=1e-5, atol=1e-5)
    kinds = [{op.kind.value for op in r.graph.ops} for r in traced.regions]
    assert len(traced.regions) >= 3
    assert all("slice" not in k and "concat" not in k for k in kinds), "RoPE's rotate-half entered a region"
    assert any("cos" in b or "sin" in b for b in traced.boundaries)
    attention = [k for k in kinds if {"reduce_max", "exp"} <= k]
    assert len(attention) == 1 and "matmul" in attention[0]


def test_llama_decode_with_kv_cache_traces_and_matches():
    cfg = llama.tiny_config(False)
    fn, params = llama.llama_block_fn(cfg, mode="decode")
    block_args = _decode_args(cfg)
    traced = prism_jax.trace(fn, params, *block_args)
    got, want = traced.evaluate(params, *block_args), jax.jit(fn)(params, *block_args)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), got, want)
    assert any("dynamic_update_slice" in b for b in traced.boundaries)
    assert traced.regions


def _decode_args(cfg):
    b, max_len = 2, 16
    x = jax.random.normal(jax.random.key(4), (b, 1, cfg.dim))
    ck = jax.random.normal(jax.random.key(5), (b, cfg.n_kv_heads, max_len, cfg.head_dim))
    cv = jax.random.normal(jax.random.key(6), (b, cfg.n_kv_heads, max_len, cfg.head_dim))
    return x, ck, cv, np.int32(5)
