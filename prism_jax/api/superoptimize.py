"""``prism_jax.superoptimize``: used like ``jax.jit``; each fusible region of the function is searched
(cached), tuned (cached) and replaced by its kernel, wrapped in ``jax.custom_vjp`` so ``jax.grad``,
``jax.vmap`` and an outer ``jax.jit`` compose. A plan is built per call signature (shapes, dtypes,
static arguments), like ``jax.jit``'s re-tracing."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import functools
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax

from prism_jax.cache import open_cache
from prism_jax.cost import GPUS, H100_SXM, NATIVE_CPU, TileRules, gpu_spec, host_cpu
from prism_jax.frontend import Region, TracedProgram, trace
from prism_jax.frontend.trace import static_parameters, static_positions
from prism_jax.frontend.to_jax import USER_PRECISION, kernel_graph_fn
from prism_jax.search import RegionSearch, SearchConfig, search_region
from prism_jax.search.driver import HOST
from prism_jax.ir import content_hash
from prism_jax.tune import Choice, Emitter, ProgramCheck, Target, TuneConfig, check_program, tune_region

if TYPE_CHECKING:
    from prism_jax.api.explain import Explanation

log = logging.getLogger("prism_jax")


class Backend(str, enum.Enum):
    """Where the regions run. ``AUTO``: tuned Pallas kernels on a GPU, tuned native kernels (``CPU``)
    when JAX runs on the CPU, the XLA program on anything else (the report says so). ``INTERPRET``:
    the kernels in Pallas interpret mode (any machine; slow, for checking). ``PALLAS``: GPU kernels
    (needs a GPU). ``CUDA``: CUDA C++ kernels built by nvcc and called through XLA FFI (needs a GPU
    and nvcc). ``CPU``: native C++ kernels for this CPU through XLA FFI. Kernels on a device are each
    timed against XLA's program for the region, and XLA is kept where it is faster. ``XLA``: never
    rewrite."""

    AUTO = "auto"
    INTERPRET = "interpret"
    PALLAS = "pallas"
    CUDA = "cuda"
    CPU = "cpu"
    XLA = "xla"


def _backend(value: Backend | str) -> Backend:
    try:
        return Backend(value)
    except ValueError:
        raise ValueError(f"backend={value!r}: use one of {[b.value for b in Backend]}") from None


def _has_gpu() -> bool:
    return jax.default_backend() in ("gpu", "cuda", "rocm")


def _automatic_backend() -> Backend:
    """What ``backend='auto'`` means where JAX runs now."""
    if _has_gpu():
        return Backend.PALLAS
    return Backend.CPU if jax.default_backend() == "cpu" else Backend.XLA


@dataclasses.dataclass(frozen=True)
class RegionPlan:
    """What runs for one region, and why."""

    region: Region
    search: RegionSearch | None
    choice: Choice | None
    note: str  # why the region runs on XLA (empty when a kernel runs)
    seconds: float  # search + tuning for this plan (cache hits are fast)

    @property
    def uses_kernel(self) -> bool:
        return self.choice is not None and self.choice.uses_kernel


@dataclasses.dataclass(frozen=True)
class Plan:
    """A built function for one call signature."""

    backend: Backend
    note: str
    traced: TracedProgram | None
    regions: tuple[RegionPlan, ...]
    call: Callable[..., Any]  # jitted, on the flat dynamic leaves
    program_check: ProgramCheck | None = None  # the rewrite timed whole against jax.jit (devices only)

    @property
    def runs_kernels(self) -> bool:
        """Whether the regions' kernels run (a program slower as a whole runs jax.jit's instead)."""
        kept = self.program_check is None or self.program_check.keeps_kernels
        return kept and any(p.uses_kernel for p in self.regions)


class Superoptimized:
    """A superoptimized function (what :func:`superoptimize` returns). Call it like the function;
    ``.explain(*args)`` reports what was found for those arguments."""

    def __init__(self, fn: Callable, backend: Backend, static_argnums: tuple[int, ...], static_argnames: tuple[str, ...],
                 search_config: SearchConfig, tune_config: TuneConfig, device: str | None, progress: bool) -> None:
        self.fn, self.backend = fn, backend
        self.static_argnums, self.static_argnames = static_argnums, static_argnames
        self.search_config, self.tune_config = search_config, tune_config
        self.device, self.progress = device, progress
        self._plans: dict[Any, Plan] = {}
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        leaves, key = self._signature(args, kwargs)
        plan = self._plan_for(key, args, kwargs)
        if plan.traced is None:
            return plan.call(*args, **kwargs)
        # the leaves of the key are the traced program's flat arguments (the same split of statics,
        # flattened the same way), so a call flattens its arguments once
        return plan.traced.unflatten_outputs(plan.call(*leaves))

    def explain(self, *args: Any, **kwargs: Any) -> "Explanation":
        """Regions, chosen sGraphs, proofs, tile sizes and timings for a call with these arguments
        (builds the plan if this signature was not called yet)."""
        from prism_jax.api.explain import Explanation

        return Explanation(getattr(self.fn, "__name__", "fn"), self._plan(args, kwargs))

    # -- plans -------------------------------------------------------------------------------------

    def _signature(self, args: tuple, kwargs: dict) -> tuple[list, Any]:
        """The dynamic leaves of a call (as ``TracedProgram.flatten_args`` gives them) and the key of its
        plan: their tree, each array leaf's shape and dtype (a Python scalar's type), the static values.
        Runs on every call, so it touches each leaf once and formats nothing."""
        argnums = static_positions(self.static_argnums, len(args))
        statics = tuple(args[i] for i in argnums)
        static_kw = tuple(sorted((k, kwargs[k]) for k in self.static_argnames if k in kwargs))
        dynamic = (tuple(a for i, a in enumerate(args) if i not in argnums),
                   {k: v for k, v in kwargs.items() if k not in self.static_argnames})
        leaves, tree = jax.tree_util.tree_flatten(dynamic)
        return leaves, (tree, tuple(map(_leaf_signature, leaves)), statics, static_kw)

    def _plan(self, args: tuple, kwargs: dict) -> Plan:
        _, key = self._signature(args, kwargs)
        return self._plan_for(key, args, kwargs)

    def _plan_for(self, key: Any, args: tuple, kwargs: dict) -> Plan:
        try:
            plan = self._plans.get(key)
        except TypeError as err:  # only static values can be unhashable: array leaves are keyed by shape
            raise ValueError(f"static arguments must be hashable, as for jax.jit ({err}); pass arrays and "
                             "lists as dynamic arguments, or as tuples") from None
        return plan or self._new_plan(key, args, kwargs)

    def _new_plan(self, key: Any, args: tuple, kwargs: dict) -> Plan:
        # in a thread of its own: JAX's tracing state is per thread, so under an outer jit/grad/vmap
        # the search and the tuner's checks still run on concrete data
        abstract_args = _abstract(args, static_positions(self.static_argnums, len(args)))
        abstract_kwargs = _abstract_kwargs(kwargs, self.static_argnames)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            self._plans[key] = pool.submit(self._build, tuple(abstract_args), abstract_kwargs).result()
        return self._plans[key]

    def _build(self, args: tuple, kwargs: dict) -> Plan:
        backend = self.backend
        if backend in (Backend.PALLAS, Backend.CUDA) and not _has_gpu():
            raise RuntimeError(f"superoptimize(backend='{backend.value}') needs a GPU, and JAX runs on "
                               f"{jax.default_backend()!r} here; use backend='interpret' to run the kernels in "
                               "Pallas interpret mode, or backend='auto'")
        if backend == Backend.AUTO:
            backend = _automatic_backend()
        if backend == Backend.XLA:
            note = ("backend='xla': the function runs as jax.jit compiles it" if self.backend == Backend.XLA else
                    f"backend='auto' on {jax.default_backend()!r}: prism_jax has kernels for GPUs and CPUs only, "
                    "so the XLA program runs unchanged")
            jitted = jax.jit(self.fn, static_argnums=self.static_argnums, static_argnames=self.static_argnames)
            return Plan(backend, note, None, (), jitted)
        traced = trace(self.fn, *args, static_argnums=self.static_argnums, static_argnames=self.static_argnames,
                       **kwargs)
        target = self._target(backend)
        cache = self._cache()
        plans = self._plan_regions(traced.regions, target, cache)
        reference = jax.jit(traced.original_function())
        if not any(p.uses_kernel for p in plans):
            # every region stays on XLA: run the function as jax.jit compiles it, not the regions'
            # IR lowered again (which differs in details XLA compiles differently, e.g. the matmuls'
            # precision: the IR's dots are HIGHEST, measured 10-20% slower on an AVX-512 CPU)
            return Plan(backend, "", traced, tuple(plans), reference)
        rewrite = jax.jit(traced.flat_function(_runner({id(p.region): p for p in plans}, target)))
        if target.interpret or not _has_code_outside_one_region(traced):
            return Plan(backend, "", traced, tuple(plans), rewrite)
        # each kernel beat XLA for its region alone; the program keeps them only if faster as a whole
        check = check_program(rewrite, reference, traced.flat_avals, _program_fingerprint(traced, plans), target,
                              self.tune_config, cache)
        if not check.keeps_kernels:
            log.info("%s: %s", getattr(self.fn, "__name__", "fn"), check.reason)
        return Plan(backend, "", traced, tuple(plans), rewrite if check.keeps_kernels else reference, check)

    def _cache(self):
        import prism_jax

        return open_cache(version=prism_jax.__version__) if self.search_config.use_cache else None

    def _target(self, backend: Backend) -> Target:
        if backend == Backend.CPU:
            return Target("cpu-native", host_cpu(), interpret=False, rules=NATIVE_CPU, emitter=Emitter.CPP)
        if backend == Backend.INTERPRET:
            device = GPUS.get(self.device or H100_SXM.name, H100_SXM)
            return Target("pallas-interpret", device, interpret=True)
        device = gpu_spec(self.device or jax.devices()[0].device_kind)
        if backend == Backend.CUDA:
            return Target("cuda-native", device, interpret=False, rules=TileRules(), emitter=Emitter.CUDA)
        return Target("pallas-triton", device, interpret=False)

    def _plan_regions(self, regions: Sequence[Region], target: Target, cache) -> list[RegionPlan]:
        from tqdm.auto import tqdm

        device = HOST if target.device.kind == "cpu" else target.device.name
        search_config = dataclasses.replace(self.search_config, device=device, progress=False)
        plans = []
        with tqdm(total=len(regions), disable=not self.progress, unit="region", leave=False) as bar:
            for region in regions:
                bar.set_description(f"superoptimize {region.name}")
                plans.append(_plan_region(region, search_config, self.tune_config, target, cache))
                bar.update(1)
        for p in plans:
            log.info("%s: %s", p.region.name, "kernel" if p.uses_kernel else f"XLA ({p.note})")
        return plans


def _has_code_outside_one_region(traced: TracedProgram) -> bool:
    """More than one region, or equations left outside regions: then the regions' timings alone do
    not tell the program's."""
    return len(traced.regions) > 1 or bool(traced.boundaries)


def _program_fingerprint(traced: TracedProgram, plans: Sequence[RegionPlan]) -> str:
    """The program (its regions' IR, the equations outside them, the leaves' shapes and dtypes) and
    the kernels chosen for it; stable across processes (no object addresses)."""
    kernels = [(content_hash(p.choice.graph), repr(p.choice.options)) if p.uses_kernel else None for p in plans]
    text = json.dumps({"program": str(traced), "outside": traced.outside_regions(),
                       "leaves": [(tuple(a.shape), str(a.dtype)) for a in traced.flat_avals], "kernels": kernels})
    return hashlib.sha256(text.encode()).hexdigest()


def _plan_region(region: Region, search_config: SearchConfig, tune_config: TuneConfig, target: Target,
                 cache) -> RegionPlan:
    start = time.perf_counter()
    try:
        found = search_region(region.graph, search_config, None, cache)
    except Exception as err:  # an unsupported region runs on XLA, with the reason in the report
        log.warning("search of %s failed: %s", region.name, err)
        return RegionPlan(region, None, None, f"search failed: {type(err).__name__}: {err}", time.perf_counter() - start)
    if not found.candidates:
        return RegionPlan(region, found, None, "the search found no verified candidate", time.perf_counter() - start)
    candidates = [(c.graph, found.sizes) for c in found.candidates]
    choice = tune_region(region.graph, candidates, target, tune_config, cache)
    note = "" if choice.uses_kernel else choice.reason
    return RegionPlan(region, found, choice, note, time.perf_counter() - start)


def _runner(plans: dict[int, RegionPlan], target: Target) -> Callable[[Region, list], list]:
    kernels: dict[int, Callable] = {}

    def run(region: Region, args: list) -> list:
        plan = plans.get(id(region))
        if plan is None or not plan.uses_kernel:  # the user's code: matmuls at jax.jit's default precision
            return kernel_graph_fn(region.graph, USER_PRECISION)(*args)
        reference = kernel_graph_fn(region.graph)
        if id(region) not in kernels:
            kernels[id(region)] = with_reference_vjp(target.build(plan.choice.graph, plan.choice.options), reference)
        return list(kernels[id(region)](*args))

    return run


def with_reference_vjp(kernel: Callable[..., Sequence], reference: Callable[..., Sequence]) -> Callable:
    """``kernel`` forward, the VJP of ``reference`` backward: kernels need no derivative of their own."""

    @jax.custom_vjp
    def call(*args):
        return tuple(kernel(*args))

    def forward(*args):
        return tuple(kernel(*args)), args

    def backward(args, cotangents):
        _, vjp = jax.vjp(lambda *a: tuple(reference(*a)), *args)
        return vjp(cotangents)

    call.defvjp(forward, backward)
    return call


def _leaf_signature(x: Any) -> tuple:
    """An array leaf's part of a plan key: (shape, dtype). A Python scalar's is its type: as under
    ``jax.jit`` it is traced as a weakly typed dynamic scalar, so one plan serves every value."""
    try:
        return x.shape, x.dtype
    except AttributeError:
        return (type(x),)


def _shape_struct(x: Any) -> Any:
    return jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, "shape") and hasattr(x, "dtype") else x


def _abstract(args: tuple, static_argnums: tuple[int, ...]) -> list:
    """Array leaves as shape/dtype structs (works for tracers of an outer jit/grad/vmap too)."""
    return [a if i in static_argnums else jax.tree_util.tree_map(_shape_struct, a) for i, a in enumerate(args)]


def _abstract_kwargs(kwargs: dict, static_argnames: tuple[str, ...]) -> dict:
    return {k: v if k in static_argnames else jax.tree_util.tree_map(_shape_struct, v) for k, v in kwargs.items()}


def superoptimize(fn: Callable | None = None, *, backend: Backend | str = Backend.AUTO,
                  static_argnums: int | Sequence[int] = (), static_argnames: str | Sequence[str] = (),
                  search_config: SearchConfig = SearchConfig(), tune_config: TuneConfig = TuneConfig(),
                  device: str | None = None, progress: bool = True) -> Any:
    """Superoptimize ``fn`` like ``jax.jit`` compiles it (a decorator, with or without arguments).

    On each new call signature the function is traced; every fusible region is searched (symbolically,
    cached on disk), its verified candidates are instantiated, checked against the region and tuned
    (cached), and the region is replaced by the winner, or kept on XLA with the reason in
    ``.explain(...)``. ``device`` names the GPU whose spec ranks candidates (default: the GPU found, or
    an H100 for ``backend='interpret'``).
    """
    argnums = (static_argnums,) if isinstance(static_argnums, int) else tuple(static_argnums)
    argnames = (static_argnames,) if isinstance(static_argnames, str) else tuple(static_argnames)
    chosen = _backend(backend)
    if device is not None and device not in GPUS:
        raise ValueError(f"device={device!r}: use one of {sorted(GPUS)}")

    def wrap(f: Callable) -> Superoptimized:
        static_argnums, static_argnames = static_parameters(f, argnums, argnames)
        return Superoptimized(f, chosen, static_argnums, static_argnames, search_config, tune_config, device,
                              progress)

    return wrap if fn is None else wrap(fn)
