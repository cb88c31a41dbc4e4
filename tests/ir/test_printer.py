"""The text form of sGraphs."""

import dataclasses

from prism_jax.ir import MapVar, format_block_graph, format_kernel_graph
from prism_jax.ir.examples import EXAMPLES, attention, tiled_matmul


def test_attention_printout_shows_grid_maps_and_ops():
    text = str(attention(2, 2, 4, 16, 8, grid=(2, 2, 2), forloop=4))
    assert text == format_kernel_graph(attention(2, 2, 4, 16, 8, grid=(2, 2, 2), forloop=4))
    assert text.startswith("kernel_graph attention(%0 Q: f32[2,2,4,8], %1 K: f32[2,2,16,8], %2 V: f32[2,2,16,8]) {")
    assert "grid(x=2, y=2, z=2) forloop(4)" in text
    assert "%0: f32[1,1,2,8] = input($0) imap={x:0, y:1, z:2} fmap=-" in text
    assert "%1: f32[1,1,4,8] = input($1) imap={x:0, y:1, z:-} fmap=2" in text
    assert "accum_rescaled_sum" in text and "transpose(%1) perm=(0,1,3,2)" in text
    assert "reduce_max(" in text and "axes=(3,)" in text
    assert "output[0] = %15 omap={x:0, y:1, z:2}" in text
    div_line = next(line for line in text.splitlines() if " = div(%14, %13)" in line)
    assert div_line.endswith("# after loop")
    assert text.endswith("\n  return %3\n}")


def test_symbolic_printout():
    text = str(EXAMPLES["attention"].symbolic())
    assert "grid(x=gx, y=gy, z=gz) forloop(F)" in text
    assert "f32[b/gx,h/gy,kv/F,D]" in text
    assert "value=D" in text


def test_split_k_and_map_variables():
    graph = tiled_matmul(8, 12, 6, grid=(2, 3, 2), forloop=3)
    text = str(graph)
    assert "imap={x:0, y:-, z:1} fmap=1" in text
    assert "omap={x:0, y:1, z:-}" in text  # z unmapped: partial products summed
    op = graph.ops[0]
    a_in = dataclasses.replace(op.block.inputs[0], imap=((MapVar("m"), False, False), (False, False, True)))
    block = dataclasses.replace(op.block, inputs=(a_in,) + op.block.inputs[1:])
    assert "imap={x:0?m, y:-, z:1}" in format_block_graph(block)


def test_block_graph_indent_and_two_kernels():
    graph = EXAMPLES["split_kv_decode_attention"].concrete()
    text = str(graph)
    assert text.count("custom_kernel(") == 2
    assert "grid(x=2) forloop(1)" in text
    assert "accum_max(" in text
    block_text = format_block_graph(graph.ops[0].block, indent="    ")
    assert all(line.startswith("    ") for line in block_text.splitlines())
    assert block_text.splitlines()[0] == "    grid(x=2, y=4) forloop(2)"


def test_reference_printout_has_no_kernels():
    text = str(EXAMPLES["rmsnorm_matmul"].reference_graph())
    assert "custom_kernel" not in text and "forloop(" not in text
    assert "rsqrt(" in text and "reshape(%1) shape=(1,16)" in text and "matmul(" in text
