"""JSON round trip, content hash, schema errors."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from prism_jax.ir import (SCHEMA_VERSION, IRError, KernelGraphBuilder, MapVar, OpKind, SchemaError, TensorType,
                          DType, content_hash, from_json, to_json)
from prism_jax.ir.examples import EXAMPLES, rmsnorm_matmul, tiled_matmul

ROOT = Path(__file__).resolve().parents[2]


def all_graphs():
    for name in sorted(EXAMPLES):
        ex = EXAMPLES[name]
        yield f"{name}-symbolic", ex.symbolic()
        yield f"{name}-symbolic-reference", ex.symbolic_reference()
        yield f"{name}-reference", ex.reference_graph()
        for k, tiling in enumerate(ex.tilings):
            yield f"{name}-{k}", ex.concrete(tiling)


GRAPHS = dict(all_graphs())


@pytest.mark.parametrize("key", sorted(GRAPHS))
def test_round_trip(key):
    graph = GRAPHS[key]
    text = to_json(graph)
    back = from_json(text)
    assert back == graph
    assert to_json(back) == text  # canonical: writing is deterministic
    assert from_json(to_json(graph, indent=2)) == graph
    assert content_hash(back) == content_hash(graph)


def test_round_trip_of_map_variables_and_special_floats():
    graph = tiled_matmul(8, 12, 6, grid=(2, 3), forloop=4)
    op = graph.ops[0]
    a_in = dataclasses.replace(op.block.inputs[0], imap=((MapVar("m_0"), False), (False, False)))
    with_var = dataclasses.replace(graph, ops=(dataclasses.replace(
        op, block=dataclasses.replace(op.block, inputs=(a_in,) + op.block.inputs[1:])),))
    assert from_json(to_json(with_var)) == with_var
    assert '{"var": "m_0"}' in to_json(with_var)

    kb = KernelGraphBuilder("inf")
    x = kb.input(TensorType((4,), DType.FLOAT32))
    y = kb.op(OpKind.MAX, x, kb.constant(float("-inf"), like=x))
    graph = kb.build([y])
    text = to_json(graph)
    assert '"-inf"' in text
    assert from_json(text) == graph


def test_content_hash_is_a_function_of_the_computation():
    a = EXAMPLES["attention"].symbolic()
    b = EXAMPLES["attention"].symbolic()
    assert a is not b and content_hash(a) == content_hash(b) == a.content_hash()
    assert len(content_hash(a)) == 20
    # names do not enter the hash
    renamed = dataclasses.replace(a, name="other", input_names=("q", "k", "v"))
    assert content_hash(renamed) == content_hash(a)
    # one changed op changes it
    base = rmsnorm_matmul(4, 16, 8, grid=(2, 4), forloop=4)
    assert content_hash(base) != content_hash(rmsnorm_matmul(4, 16, 8, eps=1e-5, grid=(2, 4), forloop=4))
    assert content_hash(base) != content_hash(rmsnorm_matmul(4, 16, 8, grid=(2, 4), forloop=2))
    op = base.ops[-1]
    block = op.block
    index = next(i for i, o in enumerate(block.ops) if o.kind == OpKind.RSQRT)
    changed_op = dataclasses.replace(block.ops[index], kind=OpKind.SQRT)
    changed = dataclasses.replace(base, ops=base.ops[:-1] + (dataclasses.replace(
        op, block=dataclasses.replace(block, ops=block.ops[:index] + (changed_op,) + block.ops[index + 1:])),))
    assert content_hash(changed) != content_hash(base)
    hashes = {content_hash(g) for g in GRAPHS.values()}
    assert len(hashes) == len(GRAPHS)


def test_content_hash_is_stable_across_processes():
    code = ("from prism_jax.ir.examples import EXAMPLES; from prism_jax.ir import content_hash; "
            "print(content_hash(EXAMPLES['attention'].symbolic()), "
            "content_hash(EXAMPLES['split_kv_decode_attention'].concrete()))")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out == [content_hash(EXAMPLES["attention"].symbolic()),
                   content_hash(EXAMPLES["split_kv_decode_attention"].concrete())]


# -- schema errors ---------------------------------------------------------------------------------


def doc():
    return json.loads(to_json(tiled_matmul(8, 12, 6, grid=(2, 3), forloop=4)))


def test_wrong_schema_name():
    d = doc()
    d["schema"] = "mirage.graph"
    with pytest.raises(SchemaError, match=r"not a prism_jax\.sgraph document \(schema='mirage\.graph'\)"):
        from_json(json.dumps(d))
    with pytest.raises(SchemaError, match=r"not a prism_jax\.sgraph document"):
        from_json("[1, 2]")


def test_wrong_version():
    d = doc()
    d["version"] = SCHEMA_VERSION + 98
    with pytest.raises(SchemaError, match=rf"version {SCHEMA_VERSION + 98} is not supported; this release reads "
                                          rf"version {SCHEMA_VERSION}"):
        from_json(json.dumps(d))


def test_not_json():
    with pytest.raises(SchemaError, match="not JSON"):
        from_json("{schema: ")


@pytest.mark.parametrize("corrupt", [
    lambda d: d.pop("graph"),
    lambda d: d["graph"].pop("values"),
    lambda d: d.__setitem__("graph", []),
    lambda d: d["graph"]["ops"].__setitem__(0, 1),
    lambda d: d["graph"]["ops"][0].__setitem__("attrs", []),
    lambda d: d["graph"]["ops"][0]["block"].__setitem__("forloop", {"mono": [1, 0, []]}),
    lambda d: d["graph"]["values"][0].__setitem__("shape", [{"mono": [1, 1, [["M", 1, 3]]]}]),
    lambda d: d["graph"]["values"][0].__setitem__("dtype", "float128"),
], ids=["no-graph", "no-values", "graph-list", "op-int", "attrs-list", "zero-denominator", "bad-factor",
        "bad-dtype"])
def test_malformed_documents(corrupt):
    d = doc()
    corrupt(d)
    with pytest.raises(SchemaError, match=r"malformed prism_jax\.sgraph document: \w+"):
        from_json(json.dumps(d))


def test_unknown_op_kind_and_value_encoding():
    d = doc()
    d["graph"]["ops"][0]["block"]["ops"][0]["kind"] = "frobnicate"
    with pytest.raises(SchemaError, match="unknown op kind 'frobnicate'"):
        from_json(json.dumps(d))
    d = doc()
    d["graph"]["ops"][0]["block"]["grid"] = [{"complex": [1, 2]}, 3]
    with pytest.raises(SchemaError, match=r"unknown value encoding \['complex'\]"):
        from_json(json.dumps(d))


def test_well_formed_but_invalid_graph_is_an_ir_error():
    d = doc()
    d["graph"]["ops"][0]["block"]["forloop"] = 3  # 12 is divisible by 3, but the tile types say 12 / 4
    with pytest.raises(IRError, match=r"op #0 .*input 0 .*does not follow from"):
        from_json(json.dumps(d))
    d = doc()
    d["graph"]["outputs"] = [17]
    with pytest.raises(IRError, match="returns undefined value %17"):
        from_json(json.dumps(d))
