"""Workload definitions: jnp functions against float64 numpy references, nnx modules against the jnp
functions, and the Llama block's prefill against step-by-step decode with a KV cache."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prism_jax.workloads import (
    EPS,
    WORKLOADS,
    Shape,
    Suite,
    get_workload,
    mirage_workloads,
    prism_workloads,
    small_shape,
)

nnx = pytest.importorskip("flax.nnx")
nnx_modules = pytest.importorskip("prism_jax.workloads.nnx_modules")
llama = pytest.importorskip("prism_jax.workloads.llama")

ATTENTION = ("attention", "qknorm_attention", "gqa")


# ------------------------------------------------------------------------------------------------
# float64 numpy references, independent of jax
# ------------------------------------------------------------------------------------------------


def np_rmsnorm(x, g=None):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + EPS)
    return y * g if g is not None else y


def np_silu(x):
    return x / (1.0 + np.exp(-x))


def np_softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_attention(q, k, v, causal=False):
    d = q.shape[-1]
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(d)
    if causal:
        nq, nk = s.shape[-2:]
        allowed = np.arange(nk)[None, :] <= np.arange(nq)[:, None] + (nk - nq)
        s = np.where(allowed, s, -np.inf)
    return np_softmax(s) @ v


def np_gqa(q, k, v):
    group = q.shape[1] // k.shape[1]
    return np_attention(q, np.repeat(k, group, axis=1), np.repeat(v, group, axis=1))


REFERENCES = {
    "rmsnorm_matmul": lambda x, g, w: np_rmsnorm(x, g) @ w,
    "rmsnorm_mlp": lambda x, g, wg, wu: np_silu(np_rmsnorm(x, g) @ wg) * (np_rmsnorm(x, g) @ wu),
    "swiglu": lambda x, wg, wu: np_silu(x @ wg) * (x @ wu),
    "attention": np_attention,
    "qknorm_attention": lambda q, k, v, gq, gk: np_attention(np_rmsnorm(q, gq), np_rmsnorm(k, gk), v),
    "gqa": np_gqa,
    "rmsnorm_linear_6144": lambda x, w: np_rmsnorm(x) @ w,
    "lora": lambda x, w, a, b: x @ w + (x @ a) @ b,
    "gated_mlp": lambda x, w1, w2: np_silu(x @ w1) * (x @ w2),
    "ntrans": lambda h, x, a: np_rmsnorm(x + a * (np_rmsnorm(h) - x)),
}


def expected_out_shape(name, s):
    if name in ATTENTION:
        return (s.b, s.H, s.q, s.D)
    if name in ("rmsnorm_linear_6144", "lora"):
        return (s.n, s.e)
    return (s.n, s.d)


CASES = [(name, False) for name in WORKLOADS] + [
    (name, True) for name, w in WORKLOADS.items() if w.small_prefill is not None]
IDS = [f"{n}-{'prefill' if p else 'decode'}" for n, p in CASES]


def _case(name, prefill):
    w = get_workload(name)
    s = small_shape(w, prefill=prefill)
    return w, s, w.make_args(s)


# ------------------------------------------------------------------------------------------------
# registry and shapes
# ------------------------------------------------------------------------------------------------


def test_registry():
    assert [w.name for w in prism_workloads()] == [
        "rmsnorm_matmul", "rmsnorm_mlp", "swiglu", "attention", "qknorm_attention"]
    assert [w.name for w in mirage_workloads()] == [
        "gqa", "rmsnorm_linear_6144", "lora", "gated_mlp", "ntrans"]
    assert all(w.suite is Suite.PRISM for w in prism_workloads())
    assert get_workload("rmsnorm_linear") is WORKLOADS["rmsnorm_linear_6144"]
    assert set(REFERENCES) == set(WORKLOADS)


def test_get_workload_error_lists_names():
    with pytest.raises(KeyError) as info:
        get_workload("no_such_workload")
    message = str(info.value)
    assert "no_such_workload" in message
    for name in WORKLOADS:
        assert name in message


def test_shapes_match_benchmarks():
    w = WORKLOADS
    assert [s.label for s in w["rmsnorm_matmul"].shapes] == [
        "n=8,d=1024", "n=8,d=2048", "n=8,d=4096", "n=16,d=1024", "n=16,d=4096"]
    assert w["rmsnorm_matmul"].prefill_shapes == ()
    assert w["swiglu"].prefill_shapes == (Shape(n=2048, d=4096),)
    assert w["rmsnorm_mlp"].prefill_shapes == (Shape(n=2048, d=4096),)
    assert w["attention"].prefill_shapes == (Shape(b=1, H=32, q=2048, kv=2048, D=128),)
    assert w["attention"].fn_for(w["attention"].prefill_shapes[0]) is w["attention"].prefill_fn
    assert w["attention"].fn_for(w["attention"].shapes[0]) is w["attention"].fn
    assert [w["attention"].arg_shapes(s) for s in w["attention"].shapes][1] == (
        (2, 8, 128, 128), (2, 8, 1024, 128), (2, 8, 1024, 128))
    assert w["gqa"].arg_shapes(w["gqa"].shapes[1]) == ((8, 32, 1, 128), (8, 8, 4096, 128), (8, 8, 4096, 128))
    assert w["rmsnorm_linear_6144"].arg_shapes(w["rmsnorm_linear_6144"].shapes[1]) == ((16, 4096), (4096, 6144))
    assert w["lora"].arg_shapes(w["lora"].shapes[0]) == ((16, 256), (256, 4096), (256, 16), (16, 4096))
    assert w["gated_mlp"].arg_shapes(w["gated_mlp"].shapes[0]) == ((8, 4096), (4096, 4096), (4096, 4096))
    assert [s.n for s in w["ntrans"].shapes] == [8, 64]
    for wl in WORKLOADS.values():
        for s in wl.all_shapes:
            out = wl.out_shape(s, jnp.bfloat16)
            assert out.shape == expected_out_shape(wl.name, s) and out.dtype == jnp.bfloat16
            assert len(wl.arg_shapes(s)) == len(wl.arg_names)
        assert small_shape(wl).keys() == wl.shapes[0].keys()
        assert small_shape(wl, prefill=True).keys() == wl.shapes[0].keys()


def test_shape_object():
    s = Shape(n=8, d=1024)
    assert (s.n, s["d"], s.label, str(s)) == (8, 1024, "n=8,d=1024", "n=8,d=1024")
    assert s == Shape({"n": 8, "d": 1024}) and hash(s) == hash(Shape(n=8, d=1024))
    assert s.replace(n=16) == Shape(n=16, d=1024)
    with pytest.raises(AttributeError):
        s.q
    with pytest.raises(ValueError):
        Shape(n=0)


def test_make_args_deterministic_and_dtypes():
    w = WORKLOADS["rmsnorm_mlp"]
    s = small_shape(w)
    a, b, c = w.make_args(s, jnp.float32, 0), w.make_args(s, jnp.float32, 0), w.make_args(s, jnp.float32, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    for dt in (jnp.bfloat16, jnp.float16, "bfloat16"):
        half = w.make_args(s, dt, 0)
        assert all(x.dtype == jnp.dtype(dt) for x in half)
        np.testing.assert_array_equal(np.asarray(half[0], np.float32), np.asarray(a[0].astype(jnp.dtype(dt)), np.float32))
    x, g, wg, _ = a
    assert abs(float(jnp.std(x)) - 1) < 0.3 and abs(float(jnp.mean(g)) - 1) < 0.1
    assert abs(float(jnp.std(wg)) * math.sqrt(s.d) - 1) < 0.3


# ------------------------------------------------------------------------------------------------
# jnp functions against the float64 references
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,prefill", CASES, ids=IDS)
def test_jnp_matches_numpy_float64(name, prefill):
    w, s, args = _case(name, prefill)
    out = np.asarray(jax.jit(w.fn_for(s))(*args))
    assert out.shape == expected_out_shape(name, s) and out.dtype == np.float32
    assert np.isfinite(out).all()
    args64 = [np.asarray(a, np.float64) for a in args]
    causal = prefill and name == "attention"
    ref = REFERENCES[name](*args64, causal=True) if causal else REFERENCES[name](*args64)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_causal_mask_is_causal():
    w = WORKLOADS["attention"]
    s = small_shape(w, prefill=True)
    q, k, v = w.make_args(s)
    full = w.prefill_fn(q, k, v)
    # changing the last key/value leaves every query but the last unchanged
    k2, v2 = k.at[:, :, -1].add(1.0), v.at[:, :, -1].add(1.0)
    part = w.prefill_fn(q, k2, v2)
    np.testing.assert_array_equal(full[:, :, :-1], part[:, :, :-1])
    assert not np.allclose(full[:, :, -1], part[:, :, -1])


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", list(WORKLOADS))
def test_half_precision_runs(name, dtype):
    w = get_workload(name)
    s = small_shape(w)
    out = jax.jit(w.fn)(*w.make_args(s, dtype))
    assert out.dtype == jnp.dtype(dtype) and bool(jnp.isfinite(out).all())
    ref = REFERENCES[name](*[np.asarray(a, np.float64) for a in w.make_args(s, dtype)])
    np.testing.assert_allclose(np.asarray(out, np.float64), ref, rtol=0.05, atol=0.05)


# ------------------------------------------------------------------------------------------------
# nnx modules against the jnp functions
# ------------------------------------------------------------------------------------------------


NNX_CASES = [(n, p, "einsum") for n, p in CASES] + [(n, p, "dpa") for n, p in CASES if n in ATTENTION]


@pytest.mark.parametrize("name,prefill,variant", NNX_CASES,
                         ids=[f"{n}-{'prefill' if p else 'decode'}-{v}" for n, p, v in NNX_CASES])
def test_nnx_matches_jnp(name, prefill, variant):
    w, s, args = _case(name, prefill)
    f, nnx_args = nnx_modules.nnx_workload(name, s, jnp.float32, 0, variant=variant)
    assert all(np.array_equal(a, b) for a, b in zip(args, nnx_args))
    # the weights are inputs of the jaxpr, not constants
    closed = jax.make_jaxpr(f)(*args)
    assert not closed.consts and len(closed.jaxpr.invars) == len(args)
    np.testing.assert_allclose(np.asarray(jax.jit(f)(*args)), np.asarray(jax.jit(w.fn_for(s))(*args)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["rmsnorm_mlp", "qknorm_attention", "ntrans"])
def test_nnx_half_precision_matches_jnp(name):
    w = get_workload(name)
    s = small_shape(w)
    f, args = nnx_modules.nnx_workload(name, s, jnp.bfloat16)
    out, ref = jax.jit(f)(*args), jax.jit(w.fn)(*args)
    assert out.dtype == ref.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32), rtol=2e-2, atol=2e-2)


def test_nnx_rejects_bad_variant():
    s = small_shape("swiglu")
    with pytest.raises(ValueError):
        nnx_modules.nnx_workload("swiglu", s, variant="dpa")
    f, args = nnx_modules.nnx_workload("swiglu", s)
    with pytest.raises(TypeError):
        f(*args[:-1])


# ------------------------------------------------------------------------------------------------
# Llama block
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qk_norm", [False, True], ids=["plain", "qknorm"])
def test_llama_prefill_equals_decode_steps(qk_norm):
    cfg = llama.tiny_config(qk_norm)
    prefill, params = llama.llama_block_fn(cfg, mode="prefill", seed=0)
    decode, _ = llama.llama_block_fn(cfg, mode="decode", seed=0)
    b, s, max_len = 2, 6, 10
    x = jax.random.normal(jax.random.key(7), (b, s, cfg.dim), jnp.float32)

    # parameters are explicit inputs
    closed = jax.make_jaxpr(prefill)(params, x)
    assert not closed.consts and len(closed.jaxpr.invars) == len(jax.tree.leaves(params)) + 1

    y = jax.jit(prefill)(params, x)
    assert y.shape == (b, s, cfg.dim) and bool(jnp.isfinite(y).all())
    # causal: a prefix's outputs do not depend on later tokens
    np.testing.assert_allclose(jax.jit(prefill)(params, x[:, :3]), y[:, :3], rtol=1e-5, atol=1e-6)

    # teacher forcing: s decode steps from an empty cache give prefill's outputs
    step = jax.jit(decode)
    ck = cv = jnp.zeros((b, cfg.n_kv_heads, max_len, cfg.head_dim), jnp.float32)
    outs = []
    for t in range(s):
        o, ck, cv = step(params, x[:, t:t + 1], ck, cv, t)
        outs.append(o)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), y, rtol=1e-4, atol=1e-5)
    assert not bool(jnp.any(ck[:, :, s:])) and bool(jnp.all(jnp.any(ck[:, :, :s] != 0, axis=-1)))

    # prefill's own cache, then one decode step, equals prefill's last position
    block = llama.LlamaBlock(cfg, rngs=nnx.Rngs(0))
    _, ck2, cv2 = block.prefill(x[:, :s - 1], max_len)
    np.testing.assert_allclose(ck2[:, :, :s - 1], ck[:, :, :s - 1], rtol=1e-5, atol=1e-6)
    last, _, _ = step(params, x[:, s - 1:s], ck2, cv2, s - 1)
    np.testing.assert_allclose(last[:, 0], y[:, -1], rtol=1e-4, atol=1e-5)


def test_llama_bfloat16_runs():
    cfg = llama.tiny_config(True)
    prefill, params = llama.llama_block_fn(cfg, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(0), (1, 4, cfg.dim)).astype(jnp.bfloat16)
    y = jax.jit(prefill)(params, x)
    assert y.dtype == jnp.bfloat16 and bool(jnp.isfinite(y).all())


def test_llama_config_checks():
    with pytest.raises(ValueError):
        llama.LlamaConfig(dim=64, n_heads=4, n_kv_heads=3, head_dim=16, hidden_dim=128)
    assert llama.TINY_CONFIG == llama.tiny_config() and llama.TINY_CONFIG.group == 2
