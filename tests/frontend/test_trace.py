"""trace(): rule coverage, boundaries, pytrees, static arguments, nested calls, scan, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prism_jax
from prism_jax.frontend import RULES

KEY = jax.random.key(0)
X = jax.random.normal(KEY, (4, 16))
W = jax.random.normal(jax.random.key(1), (16, 8)) / 4


def _check(fn, *args, regions=None, **kwargs):
    traced = prism_jax.trace(fn, *args, **kwargs)
    dyn_kwargs = {k: v for k, v in kwargs.items() if k not in ("static_argnums", "static_argnames")}
    expected = jax.jit(fn, static_argnums=kwargs.get("static_argnums", ()),
                       static_argnames=kwargs.get("static_argnames", ()))(*args, **dyn_kwargs)
    got = traced.evaluate(*args, **dyn_kwargs)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, expected)
    if regions is not None:
        assert len(traced.regions) == regions, traced
    return traced


def _ops(traced):
    return {op.kind.value for r in traced.regions for op in r.graph.ops}


def test_rule_table_covers_the_llm_primitives():
    needed = {"dot_general", "add", "sub", "mul", "div", "max", "min", "exp", "log", "rsqrt", "sqrt", "tanh",
              "logistic", "integer_pow", "pow", "reduce_sum", "reduce_max", "broadcast_in_dim", "reshape",
              "transpose", "squeeze", "convert_element_type", "select_n", "iota", "copy", "split",
              "concatenate", "stop_gradient", "square", "lt", "gt", "eq"}
    assert needed <= set(RULES)


@pytest.mark.parametrize("unary", [jnp.exp, jnp.log1p, jnp.tanh, jax.nn.sigmoid, jnp.sqrt, jax.lax.rsqrt,
                                   jnp.abs, jnp.square, lambda v: v ** 3, lambda v: jnp.power(v, 1.5),
                                   lambda v: -v])
def test_elementwise_rules_are_exact(unary):
    x = jnp.abs(X) + 0.5
    _check(lambda x, w: unary(x) @ w, x, W)


def test_comparisons_select_and_iota_mask():
    def masked(x, w):
        s = x @ w
        row = jax.lax.broadcasted_iota(jnp.int32, s.shape, 0)
        col = jax.lax.broadcasted_iota(jnp.int32, s.shape, 1)
        return jax.nn.softmax(jnp.where(col <= row, s, -jnp.inf), axis=-1)

    traced = _check(masked, X, W, regions=1)
    assert {"iota", "le", "select", "matmul"} <= _ops(traced)


def test_dot_general_batch_and_multiple_contracting_dims():
    a = jax.random.normal(KEY, (2, 3, 4, 5))
    b = jax.random.normal(KEY, (2, 4, 5, 6))
    traced = _check(lambda a, b: jnp.einsum("bmij,bijn->bmn", a, b), a, b, regions=1)
    assert "matmul" in _ops(traced)
    c = jax.random.normal(KEY, (3, 2, 6, 7))
    _check(lambda a, c: jnp.einsum("bmij,mbnk->bnijk", a, c).sum(-1), a, c)


def test_bfloat16_casts_and_preferred_element_type():
    def f(x, w):
        y = jnp.dot(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
        return jax.nn.relu(y).astype(jnp.bfloat16)

    traced = prism_jax.trace(f, X, W)
    got, want = traced.evaluate(X, W), jax.jit(f)(X, W)
    assert got.dtype == want.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.float32(got), np.float32(want), rtol=2e-2, atol=2e-2)


def test_unsupported_primitive_ends_a_region_and_is_reported():
    def f(x, w):
        h = jnp.sort(x, axis=-1)  # no rule: a boundary
        return jax.nn.softmax(h @ w, -1) @ w.T

    traced = _check(f, X, W, regions=1)
    assert any("sort" in b for b in traced.boundaries)
    assert "sort" in str(traced)


def test_pytrees_and_keyword_arguments():
    def f(params, x, *, scale):
        return {"y": (x @ params["w"]) * scale, "z": jnp.sum(x * x, -1)}

    _check(f, {"w": W}, X, scale=jnp.float32(2.0))


def test_static_arguments_like_jit():
    def f(x, w, axis, use_tanh=False):
        y = jnp.sum(x, axis=axis, keepdims=True) * x @ w
        return jnp.tanh(y) if use_tanh else y

    traced = _check(f, X, W, 1, static_argnums=2, use_tanh=True, static_argnames="use_tanh")
    assert "tanh" in _ops(traced)
    with pytest.raises(ValueError, match="static arguments changed"):
        traced.evaluate(X, W, 0, use_tanh=True)


def test_evaluate_rejects_new_shapes_with_advice():
    traced = prism_jax.trace(lambda x, w: x @ w, X, W)
    with pytest.raises(ValueError, match="trace again"):
        traced.evaluate(X[:2], W)


def test_custom_vjp_and_custom_jvp_are_looked_through():
    @jax.custom_vjp
    def scaled(x):
        return x * 2.0

    scaled.defvjp(lambda x: (scaled(x), None), lambda _, g: (g * 2.0,))

    traced = _check(lambda x, w: jax.nn.silu(scaled(x) @ w), X, W, regions=1)
    assert "logistic" in _ops(traced)
    assert not traced.boundaries


def test_scan_over_stacked_layers_finds_regions_in_the_body():
    ws = jax.random.normal(KEY, (3, 16, 16)) / 4

    def layers(x, ws):
        def body(h, w):
            h = h * jax.lax.rsqrt(jnp.mean(h * h, -1, keepdims=True) + 1e-6)
            return jnp.tanh(h @ w), jnp.sum(h)
        return jax.lax.scan(body, x, ws)

    traced = _check(layers, X, ws)
    assert len(traced.regions) >= 1
    assert "matmul" in _ops(traced)


def test_partial_and_closures_trace():
    bias = jnp.arange(8.0)
    f = functools.partial(lambda x, w, b: x @ w + b, b=bias)
    traced = _check(f, X, W, regions=1)
    assert len(traced.regions[0].graph.inputs) == 3  # the closed-over array is a region input


def test_region_budget_cuts_long_chains():
    def deep(x, w):
        for _ in range(8):
            x = jnp.tanh(x @ w)
        return x

    traced = _check(deep, X, jnp.eye(16) * 0.5)
    assert len(traced.regions) >= 2
    assert all(sum(op.kind.value == "matmul" for op in r.graph.ops) <= 6 for r in traced.regions)


@pytest.mark.parametrize("precision,attr", [(jax.lax.Precision.HIGHEST, ("highest", "highest")),
                                            ("BF16_BF16_F32", ("algorithm", "BF16_BF16_F32")),
                                            (None, None)])
def test_an_explicit_dot_precision_is_kept_for_where_xla_runs_the_region(precision, attr):
    """``jnp.dot(.., precision=...)``: the matmul carries it (through serialization), and the region's
    XLA form at the user's precision lowers with it; the references kernels are checked against stay
    at HIGHEST, and a dot with no precision of its own gets jax.jit's default."""
    from prism_jax.frontend.to_jax import REFERENCE_PRECISION, USER_PRECISION, kernel_graph_fn
    from prism_jax.ir import OpKind
    from prism_jax.ir.serialize import from_json, to_json

    traced = _check(lambda x, w: jnp.tanh(jnp.dot(x, w, precision=precision)), X, W, regions=1)
    graph = traced.regions[0].graph
    (matmul,) = [op for op in graph.ops if op.kind == OpKind.MATMUL]
    assert matmul.attrs.get("precision") == attr
    again = from_json(to_json(graph))
    assert [op.attrs.get("precision") for op in again.ops if op.kind == OpKind.MATMUL] == [attr]

    def lowered(p):
        return jax.jit(kernel_graph_fn(graph, p)).lower(X, W).as_text()

    user = lowered(USER_PRECISION)
    assert ("HIGHEST" in user) == (attr == ("highest", "highest"))
    assert ("algorithm" in user) == (attr is not None and attr[0] == "algorithm")
    assert "HIGHEST" in lowered(REFERENCE_PRECISION)
