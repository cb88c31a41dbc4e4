"""examples/llama_decoder.py runs as a test: the Flax decoder block superoptimized for prefill and for
decode with a KV cache, equal to jax.jit; plus jax.grad and jax.vmap through the superoptimized block."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prism_jax
from prism_jax.workloads.llama import llama_block_fn, tiny_config

NATIVE_SEARCH_S = 4.0  # per region: what is checked is that the kernels found compute the block
EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "llama_decoder.py"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "llama-cache"))


def assert_grad_and_vmap_match(optimized, fn, params, prompt):
    """jax.grad (of a sum of squares, by the parameters) and jax.vmap (over prompts) through ``optimized``
    equal them through ``fn``."""

    def loss(f):
        return lambda p, x: jnp.sum(jnp.square(f(p, x)))

    got, expected = jax.grad(loss(optimized))(params, prompt), jax.grad(loss(fn))(params, prompt)
    for g, e in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=2e-4, atol=2e-4 * float(np.max(np.abs(e))))
    batch = jnp.stack([prompt, 0.5 * prompt])
    np.testing.assert_allclose(np.asarray(jax.vmap(lambda x: optimized(params, x))(batch)),
                               np.asarray(jax.vmap(lambda x: fn(params, x))(batch)), rtol=1e-4, atol=1e-4)


def load_example():
    spec = importlib.util.spec_from_file_location("llama_decoder_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_example_prefill_and_decode_match_jit_in_both_dtypes_and_through_grad_and_vmap():
    """One test, so that one cache serves it all: a bfloat16 region reuses its float32 twin's search of
    the whole region (the parts of a composed region are cut elsewhere around the converts and are
    searched again), and the gradient's prefill block is the float32 run's (a hit)."""
    example = load_example()
    for dtype, tolerance in ((jnp.float32, 1e-4), (jnp.bfloat16, 0.1)):
        results = example.run(dtype, time_limit_s=8.0, verbose=False)
        for mode, (difference, report) in results.items():
            assert difference <= tolerance, (dtype, mode, difference)
            assert any(p.uses_kernel for p in report.plan.regions), str(report)
    config = tiny_config(qk_norm=True)
    fn, params = llama_block_fn(config, mode="prefill")
    prompt, _ = example.decoder_inputs(config, jnp.float32)
    optimized = prism_jax.superoptimize(fn, backend="interpret", progress=False,
                                        search_config=prism_jax.SearchConfig(time_limit_s=8.0, progress=False))
    assert_grad_and_vmap_match(optimized, fn, params, prompt)


@pytest.mark.slow
def test_native_cpu_kernels_in_the_block_match_jit_with_grad_and_vmap(native_kernels_win):
    """float32 (bfloat16 native kernels are checked per workload in tests/api). The tuner's clock is fake,
    so one candidate at one size is enough: what is checked is that the kernels compute the block."""
    example = load_example()
    tune = prism_jax.TuneConfig(candidates=1, sizes_per_candidate=1, cpu_threads=(0,), iterations=2, repeats=1)
    results = example.run(jnp.float32, backend="cpu", time_limit_s=NATIVE_SEARCH_S, verbose=False, tune_config=tune)
    for mode, (difference, report) in results.items():
        assert difference <= 1e-4, (mode, difference)
        assert report.plan.runs_kernels, str(report)  # the clock is fake for the whole-program check too
    config = tiny_config(qk_norm=True)
    fn, params = llama_block_fn(config, mode="prefill")
    prompt, _ = example.decoder_inputs(config, jnp.float32)
    optimized = prism_jax.superoptimize(fn, backend="cpu", progress=False, tune_config=tune,
                                        search_config=prism_jax.SearchConfig(time_limit_s=NATIVE_SEARCH_S, progress=False))
    assert_grad_and_vmap_match(optimized, fn, params, prompt)
