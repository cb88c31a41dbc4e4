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


def test_a_residual_argument_added_to_a_projection_viewed_in_3d_sinks_the_view_to_the_output():
    """``r + (h @ w).reshape(1, 1, d)`` with ``r`` an argument (a decoder's residual stream [b, t, d]
    added to a projection computed in 2-D): the add runs in 2-D on a view of ``r``, so the only reshapes
    are views of the region's inputs and of its output -- none between the matmul and the add, where
    the search cannot fuse across it."""
    h = jax.random.normal(jax.random.key(2), (1, 16))
    r = jax.random.normal(jax.random.key(3), (1, 1, 8))

    graph = _single_region(lambda h, w, r: r + (h @ w).reshape(1, 1, 8), h, W, r)
    for op in graph.ops:
        if op.kind.value == "reshape":
            assert op.inputs[0] in graph.inputs or op.outputs[0] in graph.outputs, graph
    add = next(op for op in graph.ops if op.kind.value == "add")
    assert graph.values[add.outputs[0]].shape == (1, 8)


def test_a_computed_operand_keeps_the_reshape_where_it_was():
    """Only operands from outside the IR are viewed: a computed partner of the same shape would need a
    reshape inside the region, so the add stays in 3-D."""
    h = jax.random.normal(jax.random.key(2), (1, 16))
    r = jax.random.normal(jax.random.key(3), (1, 1, 8))

    graph = _single_region(lambda h, w, r: jnp.exp(r) + (h @ w).reshape(1, 1, 8), h, W, r)
    add = next(op for op in graph.ops if op.kind.value == "add")
    assert graph.values[add.outputs[0]].shape == (1, 1, 8)


def _rms_3d(x):
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)


def test_a_norm_on_a_3d_token_viewed_in_2d_for_its_projection_runs_in_2d():
    """A decode step normalizes its token [1, 1, d] and views it as [1, d] for the projection: the view
    moves up through the norm (its reduction included) to the argument, so no reshape sits between
    the norm and the matmul, and the region equals the one written in 2-D."""
    x3 = X[:1].reshape(1, 1, 16)

    graph = _single_region(lambda x, w: _rms_3d(x).reshape(1, 16) @ w, x3, W)
    for op in graph.ops:
        if op.kind.value == "reshape":
            assert op.inputs[0] in graph.inputs, graph
    plain = _single_region(lambda x, w: _rms_3d(x) @ w, X[:1], W)
    assert graph.op_counts() == {**plain.op_counts(), "reshape": 1}


def test_a_norm_also_returned_in_3d_is_not_computed_twice():
    x3 = X[:1].reshape(1, 1, 16)

    def both(x, w):
        return _rms_3d(x).reshape(1, 16) @ w, _rms_3d(x)

    traced = prism_jax.trace(both, x3, W)
    assert len(traced.regions) == 1
    for got, want in zip(traced.evaluate(x3, W), jax.jit(both)(x3, W)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert traced.regions[0].graph.op_counts()["rsqrt"] == 1


def test_a_transpose_moving_only_unit_dims_is_a_view():
    """Decode attention's [b, 1, h, d] → [b, h, 1, d]: the same elements in the same order, so a reshape
    (which then composes with the reshapes around it); a real transpose stays one."""
    h = jax.random.normal(jax.random.key(2), (1, 16))
    w = jax.random.normal(jax.random.key(3), (16, 32))

    def heads_first(h, w):
        return jnp.transpose((h @ w).reshape(1, 1, 4, 8), (0, 2, 1, 3))

    graph = _single_region(heads_first, h, w)
    assert "transpose" not in graph.op_counts()
    graph = _single_region(lambda h, w: jnp.transpose((h @ w).reshape(1, 4, 8), (0, 2, 1)), h, w)
    assert graph.op_counts()["transpose"] == 1


def test_a_view_of_an_argument_read_by_two_regions_is_neither_regions_output():
    """The decode token viewed in 2-D feeds the norm of one region and the residual add of the next: the
    view stays outside both (a free view), so no region returns a copy of its input."""
    x3 = X[:1].reshape(1, 1, 16)
    w2 = jax.random.normal(jax.random.key(4), (16, 16)) / 4

    def two_regions(x, w, w2):
        h = _rms_3d(x).reshape(1, 16) @ w2
        y = x + jnp.cumsum(h, axis=-1).reshape(1, 1, 16) @ w2  # an equation the IR does not cover: two regions
        return _rms_3d(y).reshape(1, 16) @ w

    traced = prism_jax.trace(two_regions, x3, W, w2)
    assert len(traced.regions) == 2
    np.testing.assert_allclose(traced.evaluate(x3, W, w2), jax.jit(two_regions)(x3, W, w2), rtol=1e-5, atol=1e-6)
    for region in traced.regions:
        graph = region.graph
        producers = {op.outputs[0]: op for op in graph.ops}
        for out in graph.outputs:
            op = producers.get(out)
            assert op is None or op.kind.value != "reshape" or op.inputs[0] not in graph.inputs, graph
