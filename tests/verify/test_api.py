"""prism_jax.verify on JAX functions and the verifiers' contracts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prism_jax
from prism_jax.ir import DType, KernelGraphBuilder, OpKind, TensorType, sym
from prism_jax.verify import (EGraphConfig, EGraphVerifier, FingerprintVerifier, Status, modular_exact,
                              verify_graphs)
from prism_jax.verify.fingerprint import ModularInterpreter, PRIME

X = jax.random.normal(jax.random.key(0), (4, 16))
W = jax.random.normal(jax.random.key(1), (16, 8))


def test_equal_functions_are_proved():
    verdict = prism_jax.verify(lambda x, w: jax.nn.silu(x @ w), lambda x, w: (x @ w) * jax.nn.sigmoid(x @ w), X, W)
    assert verdict.status is Status.EQUAL, verdict
    assert "egraph" in verdict.method


def test_softmax_shift_invariance_is_proved():
    verdict = prism_jax.verify(lambda x, w: jax.nn.softmax(x @ w, -1),
                               lambda x, w: jnp.exp(x @ w) / jnp.sum(jnp.exp(x @ w), -1, keepdims=True), X, W)
    assert verdict.status is Status.EQUAL, verdict


def test_wrong_axis_is_refuted_with_a_counterexample():
    verdict = prism_jax.verify(lambda x, w: jax.nn.softmax(x @ w, -1), lambda x, w: jax.nn.softmax(x @ w, 0), X, W)
    assert verdict.status is Status.NOT_EQUAL
    assert verdict.counterexample is not None and verdict.counterexample.max_error > 1e-3


def test_functions_with_code_outside_a_region_are_rejected_clearly():
    with pytest.raises(ValueError, match="exactly one region"):
        prism_jax.verify(lambda x, w: jnp.sort(x @ w), lambda x, w: x @ w, X, W)


def _matmul_graph(name, swap=False):
    b = KernelGraphBuilder(name)
    n, k = sym("n"), sym("k")
    x = b.input(TensorType((n, k), DType.FLOAT32))
    y = b.input(TensorType((k, n), DType.FLOAT32))
    return b.build([b.op(OpKind.MATMUL, y, x) if swap else b.op(OpKind.MATMUL, x, y)])


def test_egraph_budget_gives_unknown_never_equal():
    slow = EGraphVerifier(EGraphConfig(max_iterations=0))
    ref = _matmul_graph("a")
    verdict = slow.verify(ref, _matmul_graph("b", swap=True))
    assert verdict.status is Status.UNKNOWN


def test_fingerprint_never_claims_equal():
    ref = _matmul_graph("a")
    verdict = FingerprintVerifier().verify(ref, _matmul_graph("b"))
    assert verdict.status is Status.UNKNOWN and verdict.evidence >= 3
    refuted = verify_graphs(ref, _matmul_graph("c", swap=True))
    assert refuted.status is Status.NOT_EQUAL


def test_modular_arithmetic_only_for_ring_ops():
    assert modular_exact(_matmul_graph("a"))
    b = KernelGraphBuilder("e")
    x = b.input(TensorType((2, 2), DType.FLOAT32))
    assert not modular_exact(b.build([b.op(OpKind.EXP, x)]))


def test_modular_interpreter_is_exact_on_large_residues():
    b = KernelGraphBuilder("m")
    x = b.input(TensorType((3, 5), DType.FLOAT32))
    y = b.input(TensorType((5, 2), DType.FLOAT32))
    graph = b.build([b.op(OpKind.MATMUL, b.op(OpKind.SQUARE, x), y)])
    rng = np.random.default_rng(0)
    xs, ys = rng.integers(0, PRIME, (3, 5)), rng.integers(0, PRIME, (5, 2))
    (got,) = ModularInterpreter().run(graph, xs, ys)
    want = [[sum(int(xs[i, k]) ** 2 * int(ys[k, j]) for k in range(5)) % PRIME for j in range(2)] for i in range(3)]
    assert (got % PRIME).tolist() == want


def test_contraction_over_a_broadcast_dim_is_never_proved():
    """Terms carry no sizes, so broadcast_to(u, (4, K)) @ broadcast_to(w, (K, 8)) must not encode alike for
    every K: the encoder gives up (unknown) and the fingerprint refutes."""
    u, w = jnp.ones((4, 1)), jnp.ones((1, 8))

    def k16(u, w):
        return jnp.broadcast_to(u, (4, 16)) @ jnp.broadcast_to(w, (16, 8))

    def k32(u, w):
        return jnp.broadcast_to(u, (4, 32)) @ jnp.broadcast_to(w, (32, 8))

    assert prism_jax.verify(k16, k32, u, w, method="egraph").status is Status.UNKNOWN
    assert prism_jax.verify(k16, k32, u, w).status is Status.NOT_EQUAL


def test_verify_accepts_ir_graphs():
    assert prism_jax.verify(_matmul_graph("a"), _matmul_graph("b")).status is Status.EQUAL
    assert prism_jax.verify(_matmul_graph("a"), _matmul_graph("b", swap=True)).status is Status.NOT_EQUAL
