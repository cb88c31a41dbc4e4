"""``prism_jax.trace``: a JAX function → its regions as IR programs, and an evaluator that runs every
region with the reference interpreter and everything else with JAX (so conversion can be proved exact)."""

from __future__ import annotations

import dataclasses
import heapq
import inspect
import logging
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prism_jax.frontend.convert import Converter
from prism_jax.frontend.normalize import normalize
from prism_jax.frontend.partition import SOURCES, RegionConfig, partition
from prism_jax.frontend.program import FlatProgram, IrNode, LiteralValue, OpaqueNode, ScanNode
from prism_jax.frontend.to_jax import USER_PRECISION, apply_op, kernel_graph_fn, to_numpy
from prism_jax.ir import Interpreter, KernelGraph, KernelGraphBuilder, OpKind

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Region:
    """One fusible region: its IR program and where it sits in the flat program."""

    name: str
    graph: KernelGraph
    inputs: tuple[int, ...]  # flat-program values, in the graph's input order
    outputs: tuple[int, ...]  # flat-program values, in the graph's output order
    nodes: tuple[int, ...]  # flat-program node indices it covers

    def __str__(self) -> str:
        return str(self.graph)


@dataclasses.dataclass
class PartitionedProgram:
    program: FlatProgram
    regions: list[Region]
    scan_bodies: dict[int, "PartitionedProgram"]  # node index → partitioned scan body

    def all_regions(self) -> list[Region]:
        out = list(self.regions)
        for body in self.scan_bodies.values():
            out += body.all_regions()
        return out


def build_partitioned(program: FlatProgram, config: RegionConfig) -> PartitionedProgram:
    normalize(program)
    producers, users = program.producers(), program.users()  # the program is fixed from here on
    regions = [_build_region(program, _without_shared_views(program, nodes, producers, users), producers, users,
                             f"{program.name}.region{k}")
               for k, nodes in enumerate(partition(program, config))]
    bodies = {i: build_partitioned(node.body, config) for i, node in enumerate(program.nodes)
              if isinstance(node, ScanNode)}
    return PartitionedProgram(program, regions, bodies)


def _without_shared_views(program: FlatProgram, nodes: Sequence[int], producers: dict[int, int],
                          users: dict[int, list[int]]) -> list[int]:
    """The region's nodes less the reshapes of values it does not compute that are also read outside it
    (a decode token viewed in 2-D for the norm of this region and for the residual add of another): left
    to XLA, a free view both read, rather than a copy this region would return as an output."""
    members = set(nodes)
    outputs = {v for v in program.outputs if isinstance(v, int)}

    def shared_view(i: int) -> bool:
        node = program.nodes[i]
        return (isinstance(node, IrNode) and node.kind == OpKind.RESHAPE and producers.get(node.inputs[0]) not in members
                and (node.output in outputs or any(u not in members for u in users.get(node.output, []))))

    return [i for i in nodes if not shared_view(i)]


def _build_region(program: FlatProgram, nodes: Sequence[int], producers: dict[int, int], users: dict[int, list[int]],
                  name: str) -> Region:
    members = set(nodes)
    builder = KernelGraphBuilder(name)
    local: dict[int, int] = {}
    inputs: list[int] = []

    def read(v: int) -> int:
        if v in local:
            return local[v]
        p = producers.get(v)
        if _is_source(program, p):
            src = program.nodes[p]  # rematerialize constants and iotas inside the region
            local[v] = builder.op(src.kind, **src.attrs.as_dict())
            return local[v]
        local[v] = builder.input(program.types[v], _input_name(program, v))
        inputs.append(v)
        return local[v]

    external = sorted({v for i in members for v in program.nodes[i].inputs
                       if producers.get(v) not in members and not _is_source(program, producers.get(v))},
                      key=lambda v: (_input_rank(program, v), v))
    for v in external:
        read(v)
    for i in sorted(members):
        node = program.nodes[i]
        args = [read(v) for v in node.inputs]
        local[node.output] = builder.op(node.kind, *args, **node.attrs.as_dict())
    escaping = set(v for v in program.outputs if isinstance(v, int))
    outputs = [program.nodes[i].output for i in sorted(members)
               if program.nodes[i].output in escaping
               or any(u not in members for u in users.get(program.nodes[i].output, []))]
    graph = builder.build([local[v] for v in outputs])
    return Region(name, graph, tuple(inputs), tuple(outputs), tuple(sorted(members)))


def _is_source(program: FlatProgram, index: int | None) -> bool:
    node = program.nodes[index] if index is not None else None
    return isinstance(node, IrNode) and node.kind in SOURCES


def _input_rank(program: FlatProgram, v: int) -> int:
    """Function arguments first, in argument order; then everything else."""
    return program.inputs.index(v) if v in program.inputs else len(program.inputs)


def _input_name(program: FlatProgram, v: int) -> str:
    if v in program.inputs:
        return f"arg{program.inputs.index(v)}"
    if v in program.consts:
        return f"const{v}"
    return f"v{v}"


# ---------------------------------------------------------------------------------------------
# evaluation


RegionRunner = Callable[[Region, list], list]
"""Computes a region's outputs from its inputs (in the region graph's order)."""


def run_partitioned(part: PartitionedProgram, flat_args: Sequence[Any], runner: RegionRunner) -> list[Any]:
    """Evaluate: regions by ``runner``, the rest by JAX (traceable when the runner is)."""
    program = part.program
    env: dict[int, Any] = dict(zip(program.inputs, flat_args))
    env.update({v: jnp.asarray(c) for v, c in program.consts.items()})
    for unit in _schedule(part):
        if isinstance(unit, Region):
            env.update(zip(unit.outputs, runner(unit, [env[v] for v in unit.inputs])))
        else:
            _run_node(part, unit, env, runner)
    return [env[v] for v in program.outputs]


def _schedule(part: PartitionedProgram) -> list[Any]:
    """Topological order of regions (as super-nodes) and the remaining nodes, stable in program order."""
    program = part.program
    region_of = {n: r for r in part.regions for n in r.nodes}
    units: list[Any] = []
    unit_of_node: dict[int, int] = {}
    for i in range(len(program.nodes)):
        if i in region_of:
            r = region_of[i]
            if r.nodes[0] == i:
                units.append(r)
                for n in r.nodes:
                    unit_of_node[n] = len(units) - 1
        else:
            units.append(i)
            unit_of_node[i] = len(units) - 1
    producers = program.producers()
    deps: list[set[int]] = []
    for u in units:
        reads = u.inputs if isinstance(u, Region) else program.nodes[u].inputs
        deps.append({unit_of_node[producers[v]] for v in reads if isinstance(v, int) and v in producers}
                    - {len(deps)})
    order, ready = [], [k for k, d in enumerate(deps) if not d]
    heapq.heapify(ready)
    waiting = {k: set(d) for k, d in enumerate(deps) if d}
    dependents: dict[int, list[int]] = {}
    for k, d in waiting.items():
        for j in d:
            dependents.setdefault(j, []).append(k)
    while ready:
        k = heapq.heappop(ready)
        order.append(units[k])
        for j in dependents.get(k, []):
            waiting[j].discard(k)
            if not waiting[j]:
                del waiting[j]
                heapq.heappush(ready, j)
    if waiting:
        raise RuntimeError("internal error: regions form a cycle (a region is not convex)")
    return order


def interpreter_runner(region: Region, args: list) -> list:
    """Regions by the reference interpreter (eager only: it pulls values to numpy)."""
    return [jnp.asarray(o) for o in Interpreter().run(region.graph, *(to_numpy(a) for a in args))]


def jax_runner(region: Region, args: list) -> list:
    """Regions by their JAX form (the XLA program of the region)."""
    return kernel_graph_fn(region.graph)(*args)


def _value(env: dict[int, Any], v: Any) -> Any:
    return v.value if isinstance(v, LiteralValue) else env[v]


def _run_node(part: PartitionedProgram, i: int, env: dict[int, Any], runner: RegionRunner) -> None:
    node = part.program.nodes[i]
    args = [_value(env, v) for v in node.inputs]
    if isinstance(node, IrNode):
        # the user's code outside regions: matmuls at the default precision, as jax.jit runs them
        env[node.output] = apply_op(node.kind, node.attrs, args, part.program.types[node.output], USER_PRECISION)
    elif isinstance(node, OpaqueNode):
        out = node.eqn.primitive.bind(*args, **node.eqn.params)
        env.update(zip(node.outputs, out if node.eqn.primitive.multiple_results else [out]))
    else:
        env.update(zip(node.outputs, _run_scan(part.scan_bodies[i], node, args, runner)))


def _run_scan(body: PartitionedProgram, node: ScanNode, args: list[Any], runner: RegionRunner) -> list[Any]:
    """A scan whose body runs partitioned: one ``lax.scan`` over the body (traced once, so its regions'
    kernels are called from one loop body however long the scan), or step by step in Python for the
    interpreter, which needs concrete values."""
    consts = args[:node.num_consts]
    carry = args[node.num_consts:node.num_consts + node.num_carry]
    xs = args[node.num_consts + node.num_carry:]
    params = node.eqn.params
    if runner is interpreter_runner:
        return _run_scan_steps(body, node, consts, carry, xs, runner)
    carry_avals = [v.aval for v in node.eqn.outvars[:node.num_carry]]

    def as_carry(values: Sequence[Any]) -> list[Any]:  # the scan's carry types exactly (no weak types)
        return [jax.lax.convert_element_type(v, a.dtype) for v, a in zip(values, carry_avals)]

    def step(c: list[Any], x: list[Any]) -> tuple[list[Any], list[Any]]:
        outs = run_partitioned(body, [*consts, *c, *x], runner)
        return as_carry(outs[:node.num_carry]), list(outs[node.num_carry:])

    final, ys = jax.lax.scan(step, as_carry(carry), list(xs), length=int(params["length"]),
                             reverse=bool(params.get("reverse", False)), unroll=params.get("unroll", 1))
    return [*final, *ys]


def _run_scan_steps(body: PartitionedProgram, node: ScanNode, consts: list[Any], carry: list[Any],
                    xs: list[Any], runner: RegionRunner) -> list[Any]:
    length = int(node.eqn.params["length"])
    steps = range(length - 1, -1, -1) if node.eqn.params.get("reverse", False) else range(length)
    ys_steps = []
    for t in steps:
        outs = run_partitioned(body, [*consts, *carry, *(x[t] for x in xs)], runner)
        carry, ys = outs[:node.num_carry], outs[node.num_carry:]
        ys_steps.append(ys)
    if node.eqn.params.get("reverse", False):
        ys_steps.reverse()
    n_ys = len(node.outputs) - node.num_carry
    stacked = [jnp.stack([step[k] for step in ys_steps]) if ys_steps else
               jnp.zeros((0,) + tuple(node.eqn.outvars[node.num_carry + k].aval.shape[1:]))
               for k in range(n_ys)]
    return [*carry, *stacked]


# ---------------------------------------------------------------------------------------------
# public entry


class TracedProgram:
    """What :func:`trace` returns: ``.regions`` (printable IR programs) and ``.evaluate``."""

    def __init__(self, fn: Callable, part: PartitionedProgram, in_tree: Any, out_tree: Any,
                 statics: "_Statics", flat_avals: Sequence[Any], flat_fn: Callable[..., Any] | None = None) -> None:
        self.fn, self._part, self._in_tree, self._out_tree = fn, part, in_tree, out_tree
        self._statics, self._flat_avals, self._flat_fn = statics, list(flat_avals), flat_fn

    @property
    def flat_avals(self) -> list[Any]:
        """Shape and dtype of each dynamic leaf, in :meth:`flatten_args` order."""
        return list(self._flat_avals)

    def outside_regions(self) -> list:
        """Each equation left to XLA (primitive, operands, results, plain parameters; scan bodies
        recursively): with :meth:`__str__`'s regions, a description of the whole program that is the
        same in every process (no object addresses), for cache keys."""
        return _describe_outside_regions(self._part.program)

    def original_function(self) -> Callable[..., list[Any]]:
        """The traced function itself on the flat dynamic leaves, its outputs flat (as
        :meth:`flat_function`'s): what ``jax.jit(fn)`` compiles, to compare a rewritten program with."""
        if self._flat_fn is None:
            raise ValueError("this TracedProgram was built without its function's flat form")
        flat_fn = self._flat_fn
        return lambda *leaves: jax.tree_util.tree_leaves(flat_fn(*leaves))

    @property
    def regions(self) -> list[Region]:
        return self._part.all_regions()

    @property
    def program(self) -> FlatProgram:
        return self._part.program

    @property
    def boundaries(self) -> list[str]:
        """Why code stayed outside regions: one entry per unconverted equation."""
        return list(self._part.program.unsupported)

    def evaluate(self, *args: Any, use_interpreter: bool = True, **kwargs: Any) -> Any:
        """Run the function: regions by the reference interpreter, the rest by JAX (eagerly)."""
        leaves = self.flatten_args(*args, **kwargs)
        for k, (leaf, aval) in enumerate(zip(leaves, self._flat_avals)):
            if tuple(np.shape(leaf)) != tuple(aval.shape):
                raise ValueError(f"evaluate: argument leaf {k} has shape {np.shape(leaf)}, traced with "
                                 f"{tuple(aval.shape)}; call prism_jax.trace again for new shapes")
        leaves = [jnp.asarray(x, dtype=a.dtype) for x, a in zip(leaves, self._flat_avals)]
        outs = run_partitioned(self._part, leaves, interpreter_runner if use_interpreter else jax_runner)
        return jax.tree_util.tree_unflatten(self._out_tree, outs)

    def flat_function(self, runner: RegionRunner) -> Callable[..., list[Any]]:
        """The traced function on its flat dynamic leaves, regions computed by ``runner``: traceable
        (jit/grad/vmap) when the runner is. Flatten arguments with :meth:`flatten_args`."""
        return lambda *leaves: run_partitioned(self._part, leaves, runner)

    def flatten_args(self, *args: Any, **kwargs: Any) -> list[Any]:
        """The dynamic leaves of a call (static arguments must equal the traced ones)."""
        leaves, tree = jax.tree_util.tree_flatten(self._statics.split(args, kwargs, check=True))
        if tree != self._in_tree:
            raise ValueError(f"arguments have structure {tree}, traced with {self._in_tree}")
        return leaves

    def unflatten_outputs(self, outs: Sequence[Any]) -> Any:
        return jax.tree_util.tree_unflatten(self._out_tree, list(outs))

    def __str__(self) -> str:
        name = getattr(self.fn, "__name__", "fn")
        lines = [f"traced {name}: {len(self.regions)} region(s), {len(self.boundaries)} boundary equation(s)"]
        for r in self.regions:
            lines.append(str(r))
        if self.boundaries:
            lines.append("left to XLA: " + "; ".join(sorted(set(self.boundaries))))
        return "\n".join(lines)

    __repr__ = __str__


_PLAIN = (bool, int, float, str, type(None))


def _describe_outside_regions(program: FlatProgram) -> list:
    described: list = []
    for node in program.nodes:
        if isinstance(node, ScanNode):
            described.append(["scan", _describe_outside_regions(node.body)])
        elif isinstance(node, OpaqueNode):
            params = {k: v for k, v in node.eqn.params.items()
                      if isinstance(v, _PLAIN) or (isinstance(v, tuple) and all(isinstance(x, _PLAIN) for x in v))}
            operands = [repr(x.value) if isinstance(x, LiteralValue) else x for x in node.inputs]
            described.append([node.eqn.primitive.name, operands, list(node.outputs),
                              [str(v.aval) for v in node.eqn.outvars], repr(sorted(params.items()))])
    return described


@dataclasses.dataclass(frozen=True)
class _Statics:
    """Static positional/keyword arguments, as in ``jax.jit``: baked into the trace."""

    argnums: tuple[int, ...]
    argnames: tuple[str, ...]
    values: tuple[Any, ...] = ()

    def split(self, args: Sequence[Any], kwargs: dict[str, Any], check: bool = False) -> tuple:
        static = tuple(args[i] for i in self.argnums) + tuple(kwargs[n] for n in self.argnames if n in kwargs)
        if check and static != self.values:
            raise ValueError(f"static arguments changed from {self.values} to {static}; "
                             "call prism_jax.trace again for new static values")
        dyn_args = tuple(a for i, a in enumerate(args) if i not in self.argnums)
        dyn_kwargs = {k: v for k, v in kwargs.items() if k not in self.argnames}
        return dyn_args, dyn_kwargs

    def merge(self, args_template: Sequence[Any], dyn_args: Sequence[Any], kwargs: dict[str, Any],
              static_kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        it = iter(dyn_args)
        full = [args_template[i] if i in self.argnums else next(it) for i in range(len(args_template))]
        return full, {**kwargs, **static_kwargs}


def static_parameters(fn: Callable, static_argnums: int | Sequence[int] = (),
                      static_argnames: str | Sequence[str] = ()) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """``static_argnums`` and ``static_argnames`` completed from each other by ``fn``'s signature, as
    ``jax.jit`` does: a static parameter may then be passed by position or by name, and a negative
    number counts back from the last positional parameter. Without a signature (some builtins), or
    with ``*args`` (negative numbers then count back from the last argument of each call), they are
    taken as given."""
    argnums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    argnames = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return argnums, argnames
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return argnums, argnames
    for i in argnums:
        if not -len(positional) <= i < len(positional):
            name = getattr(fn, "__name__", "fn")
            raise ValueError(f"static_argnums={static_argnums}: {name} has {len(positional)} positional "
                             f"parameter(s), so each number must be in [{-len(positional)}, {len(positional)})")
    argnums = tuple(sorted({i % len(positional) for i in argnums}
                           | {k for k, p in enumerate(positional) if p.name in argnames}))
    by_name = tuple(positional[i].name for i in argnums
                    if positional[i].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return argnums, argnames + tuple(n for n in by_name if n not in argnames)


def static_positions(argnums: Sequence[int], count: int) -> tuple[int, ...]:
    """The positions among ``count`` positional arguments of a call that are static: negative numbers
    counted back from the last one; numbers past the end (a parameter passed by name) left out."""
    return tuple(sorted({i + count if i < 0 else i for i in argnums} & set(range(count))))


def trace(fn: Callable, *args: Any, static_argnums: int | Sequence[int] = (),
          static_argnames: str | Sequence[str] = (), region_config: RegionConfig = RegionConfig(),
          **kwargs: Any) -> TracedProgram:
    """Trace ``fn(*args, **kwargs)`` into regions of IR programs.

    Arguments are pytrees of arrays; ``static_argnums``/``static_argnames`` mark hashable arguments
    baked into the trace, as in ``jax.jit``. Primitives without an IR rule end a region; they never
    fail the trace (see ``TracedProgram.boundaries``).
    """
    argnums, argnames = static_parameters(fn, static_argnums, static_argnames)
    statics = _Statics(static_positions(argnums, len(args)), argnames)
    statics = dataclasses.replace(statics, values=tuple(args[i] for i in statics.argnums)
                                  + tuple(kwargs[n] for n in argnames if n in kwargs))
    dynamic = statics.split(args, kwargs)
    leaves, in_tree = jax.tree_util.tree_flatten(dynamic)
    static_kwargs = {n: kwargs[n] for n in argnames if n in kwargs}

    def flat_fn(*flat):
        dyn_args, dyn_kwargs = jax.tree_util.tree_unflatten(in_tree, flat)
        full_args, full_kwargs = statics.merge(args, dyn_args, dyn_kwargs, static_kwargs)
        return fn(*full_args, **full_kwargs)

    jaxpr, out_shape = jax.make_jaxpr(flat_fn, return_shape=True)(*leaves)
    out_tree = jax.tree_util.tree_structure(out_shape)
    name = getattr(fn, "__name__", "fn").replace("<", "").replace(">", "")
    program = Converter(name).convert_top(jaxpr)
    part = build_partitioned(program, region_config)
    log.info("traced %s: %d region(s), %d boundary equation(s)", name, len(part.all_regions()),
             len(program.unsupported))
    return TracedProgram(fn, part, in_tree, out_tree, statics, [v.aval for v in jaxpr.invars], flat_fn)
