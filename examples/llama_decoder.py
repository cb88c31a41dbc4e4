"""A Llama-style decoder block (Flax nnx: RMSNorm, grouped-query attention with QK-norm, SwiGLU MLP)
whose forward pass is wrapped with ``prism_jax.superoptimize`` — for prefill, and for decode with a
KV cache.

    python examples/llama_decoder.py            # tiny block, Pallas interpret mode on CPU
    python examples/llama_decoder.py --dtype bfloat16

By default the kernels run in Pallas interpret mode (numerics only, any machine); ``--backend cpu``
runs native CPU kernels timed against XLA, ``--backend pallas`` tuned GPU kernels. The first run searches and tunes (cached on disk); later
runs take their plans from the cache.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import prism_jax
from prism_jax.workloads.llama import llama_block_fn, tiny_config


def decoder_inputs(config, dtype, batch: int = 2, prompt: int = 8, max_len: int = 16, seed: int = 1):
    """A prompt for prefill, and one new token plus a KV cache (positions < ``prompt`` filled) for decode."""
    keys = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(keys[0], (batch, prompt, config.dim), dtype)
    token = jax.random.normal(keys[1], (batch, 1, config.dim), dtype)
    cache_shape = (batch, config.n_kv_heads, max_len, config.head_dim)
    cache_k = jax.random.normal(keys[2], cache_shape, dtype)
    cache_v = jax.random.normal(keys[3], cache_shape, dtype)
    return x, (token, cache_k, cache_v, jnp.int32(prompt))


def max_difference(a, b) -> float:
    return max(float(jnp.max(jnp.abs(x.astype(jnp.float32) - y.astype(jnp.float32))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def run(dtype=jnp.float32, backend: str = "interpret", time_limit_s: float = 20.0, verbose: bool = True,
        tune_config: prism_jax.TuneConfig = prism_jax.TuneConfig()) -> dict:
    """Superoptimize prefill and decode; returns each mode's max difference from ``jax.jit`` and report."""
    config = tiny_config(qk_norm=True)
    prompt, decode_args = decoder_inputs(config, dtype)
    search = prism_jax.SearchConfig(time_limit_s=time_limit_s, progress=False)
    results = {}
    for mode, extra in (("prefill", (prompt,)), ("decode", decode_args)):
        fn, params = llama_block_fn(config, mode=mode, dtype=dtype)
        optimized = prism_jax.superoptimize(fn, backend=backend, search_config=search, tune_config=tune_config,
                                            progress=verbose)
        got, expected = optimized(params, *extra), jax.jit(fn)(params, *extra)
        report = optimized.explain(params, *extra)
        results[mode] = (max_difference(got, expected), report)
        if verbose:
            print(report.table())
            print(f"{mode}: max |superoptimized - jax.jit| = {results[mode][0]:.2e}\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--backend", default="interpret", choices=("interpret", "cpu", "pallas", "cuda", "auto", "xla"))
    parser.add_argument("--time-limit", type=float, default=20.0, help="search seconds per region")
    args = parser.parse_args()
    run(jnp.dtype(args.dtype), args.backend, args.time_limit)


if __name__ == "__main__":
    main()
