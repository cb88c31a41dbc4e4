"""JSON round trip of sGraphs with a schema name and version, and a stable content hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from fractions import Fraction
from typing import Any

from prism_jax.ir.errors import IRError, SchemaError
from prism_jax.ir.graph import BlockGraph, BlockInput, BlockOutput, KernelGraph, Op, validate_kernel_graph
from prism_jax.ir.maps import MapVar
from prism_jax.ir.ops import Attrs, OpKind
from prism_jax.ir.symbolic import Mono
from prism_jax.ir.types import DType, TensorType

SCHEMA_NAME = "prism_jax.sgraph"
SCHEMA_VERSION = 1


def to_json(graph: KernelGraph, indent: int | None = None) -> str:
    doc = {"schema": SCHEMA_NAME, "version": SCHEMA_VERSION, "graph": _kernel(graph)}
    return json.dumps(doc, indent=indent, sort_keys=True, allow_nan=False)


def from_json(text: str) -> KernelGraph:
    """Parse and validate; a foreign schema, another version or a malformed graph is a SchemaError/IRError."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaError(f"not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_NAME:
        raise SchemaError(f"not a {SCHEMA_NAME} document (schema={doc.get('schema') if isinstance(doc, dict) else None!r})")
    if doc.get("version") != SCHEMA_VERSION:
        raise SchemaError(f"{SCHEMA_NAME} version {doc.get('version')!r} is not supported; this release reads "
                          f"version {SCHEMA_VERSION} (re-run the search to regenerate it)")
    try:
        graph = _read_kernel(doc["graph"])
    except IRError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError) as e:
        raise SchemaError(f"malformed {SCHEMA_NAME} document: {type(e).__name__}: {e}") from None
    validate_kernel_graph(graph)
    return graph


def content_hash(graph: KernelGraph) -> str:
    """Hash of the computation only: graph and input names do not enter it, so the same region traced
    from differently named functions (or re-traced in another process) hashes the same."""
    anonymous = dataclasses.replace(graph, name="", input_names=("",) * len(graph.input_names))
    return hashlib.sha256(to_json(anonymous).encode()).hexdigest()[:20]


# -- writing -------------------------------------------------------------------------------------


def _value(v: Any) -> Any:
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"float": repr(v)}
    if isinstance(v, Mono):
        return {"mono": [v.coeff.numerator, v.coeff.denominator, [list(f) for f in v.factors]]}
    if isinstance(v, DType):
        return {"dtype": v.value}
    if isinstance(v, MapVar):
        return {"var": v.name}
    if isinstance(v, tuple):
        return [_value(x) for x in v]
    raise TypeError(f"cannot serialize {type(v).__name__} {v!r}")


def _type(t: TensorType) -> dict:
    return {"shape": _value(t.shape), "dtype": t.dtype.value}


def _op(op: Op) -> dict:
    doc = {"kind": op.kind.value, "inputs": list(op.inputs), "outputs": list(op.outputs),
           "attrs": {k: _value(v) for k, v in op.attrs.items}}
    if op.block is not None:
        doc["block"] = _block(op.block)
    return doc


def _block(b: BlockGraph) -> dict:
    return {
        "grid": _value(b.grid), "forloop": _value(b.forloop), "values": [_type(t) for t in b.values],
        "inputs": [{"value": i.value, "source": i.source, "imap": _value(i.imap), "fmap": _value(i.fmap)}
                   for i in b.inputs],
        "ops": [_op(op) for op in b.ops],
        "outputs": [{"value": o.value, "omap": _value(o.omap)} for o in b.outputs],
    }


def _kernel(g: KernelGraph) -> dict:
    return {"name": g.name, "values": [_type(t) for t in g.values], "inputs": list(g.inputs),
            "input_names": list(g.input_names), "ops": [_op(op) for op in g.ops], "outputs": list(g.outputs)}


# -- reading -------------------------------------------------------------------------------------


def _read(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_read(x) for x in v)
    if isinstance(v, dict):
        if "mono" in v:
            num, den, factors = v["mono"]
            return Mono(Fraction(num, den), tuple((str(n), int(e)) for n, e in factors))
        if "dtype" in v:
            return DType.from_name(v["dtype"])
        if "var" in v:
            return MapVar(str(v["var"]))
        if "float" in v:
            return float(v["float"])
        raise SchemaError(f"unknown value encoding {sorted(v)}")
    return v


def _read_type(d: dict) -> TensorType:
    return TensorType(_read(d["shape"]), DType.from_name(d["dtype"]))


def _read_kind(name: str) -> OpKind:
    try:
        return OpKind(name)
    except ValueError:
        raise SchemaError(f"unknown op kind {name!r}") from None


def _read_op(d: dict) -> Op:
    block = _read_block(d["block"]) if "block" in d else None
    attrs = Attrs.of({k: _read(v) for k, v in d["attrs"].items()})
    return Op(_read_kind(d["kind"]), tuple(d["inputs"]), tuple(d["outputs"]), attrs, block)


def _read_block(d: dict) -> BlockGraph:
    return BlockGraph(
        grid=_read(d["grid"]), forloop=_read(d["forloop"]), values=tuple(_read_type(t) for t in d["values"]),
        inputs=tuple(BlockInput(i["value"], i["source"], _read(i["imap"]), _read(i["fmap"])) for i in d["inputs"]),
        ops=tuple(_read_op(op) for op in d["ops"]),
        outputs=tuple(BlockOutput(o["value"], _read(o["omap"])) for o in d["outputs"]),
    )


def _read_kernel(d: dict) -> KernelGraph:
    return KernelGraph(str(d["name"]), tuple(_read_type(t) for t in d["values"]), tuple(d["inputs"]),
                       tuple(d["input_names"]), tuple(_read_op(op) for op in d["ops"]), tuple(d["outputs"]))
