"""The Pallas emitter: every hand-built sGraph example at every tiling runs in interpret mode and equals
the reference interpreter; kernels with power-of-two tiles also lower for CUDA on this CPU machine."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prism_jax.codegen.pallas import PallasOptions, kernel_graph_function, lower_for_cuda
from prism_jax.ir import IRError, evaluate
from prism_jax.ir.examples import EXAMPLES, instantiate_example, random_inputs, tiled_matmul

INTERPRET = PallasOptions(interpret=True)
CASES = [(name, k) for name, example in EXAMPLES.items() for k in range(len(example.tilings))]


@pytest.mark.parametrize("name,tiling", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_interpret_matches_interpreter(name, tiling):
    graph = instantiate_example(name, EXAMPLES[name].tilings[tiling])
    inputs = random_inputs(graph, seed=tiling)
    expected = evaluate(graph, *inputs)
    got = jax.jit(kernel_graph_function(graph, INTERPRET))(*inputs)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(np.asarray(g), e, rtol=2e-5, atol=2e-5)


def test_split_k_partial_sums_over_an_unmapped_grid_dim():
    """grid z cuts K and the output leaves z unmapped: the blocks' partial products are summed."""
    graph = tiled_matmul(8, 16, 8, grid=(2, 2, 4), forloop=2)
    a, b = random_inputs(graph)
    (got,) = kernel_graph_function(graph, INTERPRET)(a, b)
    np.testing.assert_allclose(np.asarray(got), a @ b, rtol=1e-5, atol=1e-5)


def test_symbolic_graph_is_refused():
    with pytest.raises(IRError, match="instantiate"):
        kernel_graph_function(EXAMPLES["tiled_matmul"].symbolic())


def test_wrong_result_would_be_seen():
    """The comparison above can fail: a kernel with a wrong map gives different numbers."""
    graph = instantiate_example("tiled_matmul", {"grid": (2, 3), "forloop": 4})
    a, b = random_inputs(graph)
    (got,) = kernel_graph_function(graph, INTERPRET)(a, b[:, ::-1].copy())
    assert not np.allclose(np.asarray(got), a @ b, atol=1e-3)


POW2 = [("tiled_matmul", {"M": 32, "K": 64, "N": 32}, {"grid": (2, 2), "forloop": 2}),
        ("rmsnorm_matmul", {"n": 16, "d": 64, "N": 32}, {"grid": (1, 2), "forloop": 2}),
        ("swiglu", {"n": 16, "d": 64, "N": 32}, {"grid": (1, 2), "forloop": 4}),
        ("attention", {"b": 1, "h": 2, "q": 16, "kv": 64, "D": 16}, {"grid": (1, 2, 1), "forloop": 4}),
        ("split_kv_decode_attention", {"h": 4, "q": 1, "kv": 64, "D": 16}, {"grid": (1, 4), "forloop": 2})]


@pytest.mark.parametrize("name,sizes,tiling", POW2, ids=[p[0] for p in POW2])
def test_lowers_for_cuda_on_cpu(name, sizes, tiling):
    graph = instantiate_example(name, tiling, sizes)
    specs = [jax.ShapeDtypeStruct(tuple(t.shape), jnp.float32) for t in graph.input_types]
    lowered = lower_for_cuda(kernel_graph_function(graph, PallasOptions(num_warps=4, num_stages=2)), *specs)
    assert "triton" in lowered.as_text().lower() or "__gpu" in lowered.as_text()


def test_non_power_of_two_tiles_do_not_lower():
    """What the tuner's Triton rules exist for: a 48-wide tile is refused by the Triton lowering."""
    graph = instantiate_example("tiled_matmul", {"grid": (1, 1), "forloop": 1}, {"M": 16, "K": 48, "N": 16})
    specs = [jax.ShapeDtypeStruct(tuple(t.shape), jnp.float32) for t in graph.input_types]
    with pytest.raises(Exception, match="power of 2"):
        lower_for_cuda(kernel_graph_function(graph), *specs)
