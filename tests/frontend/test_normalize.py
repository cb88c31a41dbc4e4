"""The same computation gives the same region whichever way it was written."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prism_jax

X = jax.random.normal(jax.random.key(0), (4, 16))
W = jax.random.normal(jax.random.key(1), (16, 8)) / 4
EPS = jnp.float32(1e-6)


def _single_region(fn, *args):
    traced = prism_jax.trace(fn, *args)
    assert len(traced.regions) == 1, traced
    np.testing.assert_allclose(traced.evaluate(*args), jax.jit(fn)(*args), rtol=1e-5, atol=1e-6)
    return traced.regions[0].graph


def _rms_plain(x, w):
    return (x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)) @ w


def _rms_square_axis1(x, w):
    return (x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=1, keepdims=True) + 1e-6)) @ w


def _rms_pow_index(x, w):
    return (x * jax.lax.rsqrt((x ** 2).mean(-1)[:, None] + 1e-6)) @ w


def _rms_vmapped(x, w):
    ms = jax.vmap(lambda r: jnp.mean(r * r))(x)
    return (x * jax.lax.rsqrt(ms[:, None] + 1e-6)) @ w


def _rms_closed_over_eps(x, w):
    return (x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + EPS)) @ w


def _rms_nested_jit(x, w):
    norm = jax.jit(lambda v: v * jax.lax.rsqrt(jnp.mean(v * v, -1, keepdims=True) + 1e-6))
    return norm(x) @ w


def _rms_copies(x, w):
    x = jnp.array(x, copy=True)
    return (x * jax.lax.rsqrt(jnp.mean(jax.lax.stop_gradient(x) ** 2, -1, keepdims=True) + 1e-6)) @ w


@pytest.mark.parametrize("variant", [_rms_square_axis1, _rms_pow_index, _rms_vmapped, _rms_closed_over_eps,
                                     _rms_nested_jit])
def test_rmsnorm_writings_give_one_region(variant):
    assert _single_region(variant, X, W).content_hash() == _single_region(_rms_plain, X, W).content_hash()


def test_identity_copies_and_stop_gradient_vanish():
    graph = _single_region(_rms_copies, X, W)
    assert graph.content_hash() == _single_region(_rms_plain, X, W).content_hash()


def test_silu_and_its_primal_agree():
    a = _single_region(lambda x, w: jax.nn.silu(x @ w), X, W)
    b = _single_region(lambda x, w: (x @ w) * jax.nn.sigmoid(x @ w), X, W)
    assert a.content_hash() == b.content_hash()


def test_softmax_library_and_hand_written_agree():
    def manual(x, w):
        s = x @ w
        e = jnp.exp(s - jnp.max(s, -1, keepdims=True))
        return e / jnp.sum(e, -1, keepdims=True)

    a = _single_region(lambda x, w: jax.nn.softmax(x @ w, axis=-1), X, W)
    assert a.content_hash() == _single_region(manual, X, W).content_hash()


def test_dot_general_without_contraction_is_a_product():
    a, b = jnp.arange(4.0), jnp.arange(3.0) + 1

    def outer_einsum(a, b):
        return jnp.sum(jnp.einsum("i,j->ij", a, b), 0)

    def outer_broadcast(a, b):
        return jnp.sum(a[:, None] * b[None, :], 0)

    g1, g2 = _single_region(outer_einsum, a, b), _single_region(outer_broadcast, a, b)
    assert "matmul" not in g1.op_counts()
    assert g1.content_hash() == g2.content_hash()


def test_reduction_over_leading_axis():
    graph = _single_region(lambda x, w: jnp.sum(x, axis=0) @ w[:, :], X, W)
    reduce_op = next(op for op in graph.ops if op.kind.value == "reduce_sum")
    assert reduce_op.attrs["axes"] == (0,)


def test_softmax_on_a_view_with_an_extra_unit_dim_is_the_plain_softmax():
    """Grouped-query attention computes softmax on [b, h, group, 1, kv]: the unit-dim reshapes sink
    through the reductions and elementwise ops until they cancel."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 8, 32)), jnp.float32)

    def on_view(x):
        return jax.nn.softmax(x.reshape(4, 8, 1, 32), axis=-1).reshape(4, 8, 32)

    graph = _single_region(on_view, x)
    assert "reshape" not in graph.op_counts()
    assert graph.op_counts() == _single_region(lambda x: jax.nn.softmax(x, axis=-1), x).op_counts()
