"""SearchProblem: views split off, 16-bit regions searched in float32 and stored in their own dtype."""

import jax
import jax.numpy as jnp

import prism_jax
from prism_jax.search import SearchConfig, search_region


def test_reshaped_16bit_output_is_stored_in_its_dtype():
    """A bf16 output that the region re-views (reshape after the final convert) keeps bfloat16."""

    def norm_then_flatten(x, g):
        y = x.astype(jnp.float32)
        y = y * jax.lax.rsqrt(jnp.mean(y * y, -1, keepdims=True) + 1e-6) * g.astype(jnp.float32)
        return y.astype(jnp.bfloat16).reshape(x.shape[0], -1)

    x, g = jnp.ones((2, 1, 64), jnp.bfloat16), jnp.ones((64,), jnp.bfloat16)
    region = prism_jax.trace(norm_then_flatten, x, g).regions[0].graph
    found = search_region(region, SearchConfig(use_cache=False, progress=False, time_limit_s=20))
    assert found.candidates
    for candidate in found.candidates:
        assert candidate.graph.output_types[0].dtype == region.output_types[0].dtype
