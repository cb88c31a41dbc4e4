"""The cost model: XLA-style fusion of predefined ops, one kernel per custom kernel, and the sizing
shortlist under a backend's tile rules."""

import jax
import jax.numpy as jnp

import prism_jax
from prism_jax.cost import H100_SXM, TRITON, TileRules, best_sizes, estimate, memory_floor_seconds, ranked_sizes
from prism_jax.ir import DType, KernelGraphBuilder, OpKind, TensorType
from prism_jax.ir.examples import EXAMPLES, instantiate_example


def region(fn, *args):
    return prism_jax.trace(fn, *args).regions[0].graph


def rmsnorm_matmul(x, g, w):
    return (x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * g) @ w


def test_predefined_ops_fuse_as_xla_fuses_them():
    graph = region(rmsnorm_matmul, jnp.ones((8, 256)), jnp.ones(256), jnp.ones((256, 512)))
    kinds = [k.name.split()[1] for k in estimate(graph, H100_SXM).kernels]
    # the sum of squares; the normalized rows (a matmul operand, so written); the matmul
    assert kinds == ["reduce_sum", "mul", "matmul"]


def test_elementwise_only_is_one_fusion():
    kb = KernelGraphBuilder("elementwise")
    x, y = kb.input(TensorType((64, 64), DType.FLOAT32)), kb.input(TensorType((64, 64), DType.FLOAT32))
    out = kb.op(OpKind.ADD, kb.op(OpKind.MUL, kb.op(OpKind.TANH, x), y), kb.constant(1.0, like=x))
    cost = estimate(kb.build([out]), H100_SXM)
    assert len(cost.kernels) == 1 and cost.kernels[0].bytes == 3 * 64 * 64 * 4


def test_custom_kernel_is_one_kernel_and_beats_the_unfused_region():
    sizes = {"n": 16, "d": 1024, "N": 1024}
    reference = EXAMPLES["rmsnorm_matmul"].reference_graph(sizes)
    tiled = best_sizes(EXAMPLES["rmsnorm_matmul"].symbolic(), H100_SXM, sizes)
    assert len(tiled.estimate.kernels) == 1
    assert memory_floor_seconds(reference, H100_SXM) < tiled.seconds < estimate(reference, H100_SXM).seconds
    one_block = instantiate_example("rmsnorm_matmul", {"grid": (1, 1), "forloop": 1}, sizes)
    assert estimate(one_block, H100_SXM).seconds > tiled.seconds  # one block leaves the GPU idle


def test_ranked_sizes_shortlist_and_triton_rules():
    symbolic = EXAMPLES["rmsnorm_matmul"].symbolic()
    sizes = {"n": 16, "d": 1024, "N": 1024}
    shortlist = ranked_sizes(symbolic, H100_SXM, sizes, limit=4)
    assert 1 <= len(shortlist) <= 4 and [r.key for r in shortlist] == sorted(r.key for r in shortlist)
    assert shortlist[0].key == best_sizes(symbolic, H100_SXM, sizes).key
    # a 48-wide dim has no power-of-two tiling: Triton's rules refuse what the plain rules accept
    odd = {"n": 16, "d": 48, "N": 48}
    assert ranked_sizes(symbolic, H100_SXM, odd, rules=TileRules(16)) and not ranked_sizes(symbolic, H100_SXM, odd,
                                                                                            rules=TRITON)
