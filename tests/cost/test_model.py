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


def test_native_cpu_kernels_stream_their_weights():
    """A whole-row rmsnorm_mlp block (no K loop) holds two weight tiles of d x N/gx; read in place by the
    CPU kernels they take no cache: NATIVE_CPU accepts 2 blocks of 512 columns (4 MiB of float32 weights
    against a 2 MiB cache) where the plain rules need narrower tiles, and the estimate overlaps their
    loads with the matmuls."""
    import dataclasses

    from prism_jax.cost import NATIVE_CPU
    from prism_jax.cost.model import overlaps_loads, streamed_matmul_operands

    cpu = dataclasses.replace(H100_SXM, name="test cpu", kind="cpu", onchip_bytes=2 << 20, parallel_units=2)
    symbolic = EXAMPLES["rmsnorm_mlp"].symbolic()
    sizes = {"n": 8, "d": 1024, "N": 1024}
    whole_rows = {"grid": (1, 2), "forloop": 1}
    graph = instantiate_example("rmsnorm_mlp", whole_rows, sizes)
    block = graph.custom_kernels[0].block
    streamed = streamed_matmul_operands(block)
    weights = [i.value for i in block.inputs if tuple(block.values[i.value].shape) == (1024, 512)]
    assert len(weights) == 2 and set(weights) <= streamed
    assert not any(i.value in streamed for i in block.inputs if i.value not in weights)  # X and g are tiles
    assert overlaps_loads(block, cpu, streamed_operands=True) and not overlaps_loads(block, cpu)

    streamed_ok = ranked_sizes(symbolic, cpu, sizes, limit=1000, rules=NATIVE_CPU)
    plain_ok = ranked_sizes(symbolic, cpu, sizes, limit=1000, rules=TileRules())
    assert {tuple(sorted(r.sizes.items())) for r in plain_ok} < {tuple(sorted(r.sizes.items())) for r in streamed_ok}


def test_sizes_are_costed_without_revalidation_and_indivisible_ones_are_skipped():
    """Ranking binds sizes without validating the graph again: binding itself must reject sizes that
    do not divide the dims they split, and the estimate must be the validated instance's."""
    from prism_jax.cost.sizing import _cost
    from prism_jax.ir import instantiate

    example = EXAMPLES["rmsnorm_matmul"]
    graph = example.symbolic()
    rules = TileRules.for_device(H100_SXM)
    env = example.env(example.tilings[0])
    ranked = _cost(graph, env, H100_SXM, rules)
    assert ranked is not None
    assert ranked.estimate.seconds == estimate(instantiate(graph, env), H100_SXM,
                                               rules.streamed_matmul_operands).seconds
    assert _cost(graph, {**env, "gx": 3}, H100_SXM, rules) is None  # 3 does not divide n = 4
