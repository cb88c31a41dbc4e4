"""The sGraph IR: symbolic sizes and constraints, kernel graphs, block graphs, maps, printer,
(de)serialization and the numpy reference interpreter. Pure Python: no jax, no egglog."""

from prism_jax.ir.errors import IRError, SchemaError
from prism_jax.ir.graph import (BlockGraph, BlockGraphBuilder, BlockInput, BlockOutput, KernelGraph,
                                KernelGraphBuilder, Op, Phase, is_concrete_graph, validate_block_graph,
                                validate_kernel_graph)
from prism_jax.ir.interpreter import Interpreter, evaluate, numpy_dtype
from prism_jax.ir.maps import (MapEntry, MapMatrix, MapVar, enumerate_assignments, loop_map, map_from_dims,
                               map_variables, no_split, tile_dim, tile_dim_expr)
from prism_jax.ir.ops import (ACCUMULATORS, BLOCK_OPS, ELEMENTWISE, LAYOUT, PREDEFINED, REDUCTIONS, Attrs, OpKind,
                              broadcast_shapes, infer_types)
from prism_jax.ir.printer import format_block_graph, format_kernel_graph
from prism_jax.ir.serialize import SCHEMA_VERSION, content_hash, from_json, to_json
from prism_jax.ir.symbolic import (ConstraintSet, Divisible, InRange, MemoryBudget, Mono, Size,
                                   UnsatisfiableError, constant_value, evaluate as evaluate_size, substitute,
                                   sym)
from prism_jax.ir.transform import instantiate, rename_symbols
from prism_jax.ir.types import DType, TensorType

__all__ = ["ACCUMULATORS", "Attrs", "BLOCK_OPS", "BlockGraph", "BlockGraphBuilder", "BlockInput", "BlockOutput",
           "ConstraintSet", "DType", "Divisible", "ELEMENTWISE", "IRError", "InRange", "Interpreter",
           "KernelGraph", "KernelGraphBuilder", "LAYOUT", "MapEntry", "MapMatrix", "MapVar", "MemoryBudget",
           "Mono", "Op", "OpKind", "PREDEFINED", "Phase", "REDUCTIONS", "SCHEMA_VERSION", "SchemaError", "Size",
           "TensorType", "UnsatisfiableError", "broadcast_shapes", "constant_value", "content_hash",
           "enumerate_assignments",
           "evaluate", "evaluate_size", "format_block_graph", "format_kernel_graph", "from_json", "infer_types",
           "instantiate", "rename_symbols", "is_concrete_graph", "loop_map", "map_from_dims", "map_variables", "no_split",
           "numpy_dtype", "substitute", "sym", "tile_dim", "tile_dim_expr", "to_json", "validate_block_graph",
           "validate_kernel_graph"]
