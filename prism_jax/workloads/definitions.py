"""The BENCHMARKS.md workloads as plain JAX functions, with their shapes and input generators.

One definition per workload, used by tests, examples and benchmarks alike.  The functions are
written the way a JAX LLM user writes them (``jax.nn.silu``, ``jax.nn.softmax``, ``jax.lax.rsqrt``,
``jnp.einsum`` / ``@``), so the frontend sees the primitives real programs produce.

Conventions (all workloads):

- RMSNorm: ``x * rsqrt(mean(x², -1) + 1e-6)`` (times the gain where the workload has one).  Its
  statistics and the normalization are computed in float32 and the result is cast back to the input
  dtype, as Flax's ``nnx.RMSNorm`` does; for float32 inputs the casts are no-ops and vanish from the
  jaxpr.
- Attention: ``softmax(Q Kᵀ / sqrt(D)) V`` per head, Q ``[b, H, q, D]``, K/V ``[b, H, kv, D]``;
  the scores are cast to float32 for the softmax and the probabilities back to the input dtype (as
  ``jax.nn.dot_product_attention`` does).  The causal variant (prefill) masks key ``j`` for query ``i``
  when ``j > i + (kv - q)`` (bottom-right aligned; for prefill ``q == kv`` this is the usual
  lower-triangular mask, identical to ``is_causal=True`` in ``jax.nn.dot_product_attention``).
- Matmuls run in the input dtype (XLA accumulates half-precision matmuls in float32).
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

EPS = 1e-6

__all__ = [
    "EPS",
    "Shape",
    "Suite",
    "Workload",
    "WORKLOADS",
    "attention",
    "causal_attention",
    "gated_mlp",
    "get_workload",
    "gqa",
    "lora",
    "mirage_workloads",
    "ntrans",
    "prism_workloads",
    "qknorm_attention",
    "rmsnorm",
    "rmsnorm_linear",
    "rmsnorm_matmul",
    "rmsnorm_mlp",
    "small_shape",
    "swiglu",
]


# ---------------------------------------------------------------------------------------------------
# The functions
# ---------------------------------------------------------------------------------------------------


def rmsnorm(x, g=None, eps: float = EPS):
    """``x / sqrt(mean(x², -1) + eps) [* g]``, statistics in float32, result in ``x.dtype``."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    if g is not None:
        y = y * g
    return y.astype(x.dtype)


def rmsnorm_matmul(x, g, w):
    """``rmsnorm(X) * g @ W``: X [n, d], g [d], W [d, d]."""
    return rmsnorm(x, g) @ w


def rmsnorm_mlp(x, g, wg, wu):
    """``silu(h @ Wg) * (h @ Wu)`` with ``h = rmsnorm(X) * g``."""
    h = rmsnorm(x, g)
    return jax.nn.silu(h @ wg) * (h @ wu)


def swiglu(x, wg, wu):
    """``silu(X @ Wg) * (X @ Wu)``."""
    return jax.nn.silu(x @ wg) * (x @ wu)


def _softmax_f32(scores, dtype):
    return jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(dtype)


def attention(q, k, v, *, causal: bool = False):
    """``softmax(Q Kᵀ / sqrt(D)) V`` per head; q [b, H, q, D], k/v [b, H, kv, D] → [b, H, q, D]."""
    d = q.shape[-1]
    scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(d)
    if causal:
        sq, skv = q.shape[-2], k.shape[-2]
        mask = jnp.tril(jnp.ones((sq, skv), dtype=bool), k=skv - sq)
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    p = _softmax_f32(scores, q.dtype)
    return jnp.einsum("bhqk,bhkd->bhqd", p, v)


def causal_attention(q, k, v):
    """Attention with a causal mask (the prefill workload)."""
    return attention(q, k, v, causal=True)


def qknorm_attention(q, k, v, gq, gk):
    """Attention with RMSNorm (gains gq, gk [D]) applied to Q and to K over D."""
    return attention(rmsnorm(q, gq), rmsnorm(k, gk), v)


def gqa(q, k, v):
    """Grouped-query attention: q [b, Hq, q, D], k/v [b, Hkv, kv, D]; query head h reads KV head h // (Hq/Hkv)."""
    b, hq, sq, d = q.shape
    hkv = k.shape[1]
    qg = q.reshape(b, hkv, hq // hkv, sq, d)
    scores = jnp.einsum("bhgqd,bhkd->bhgqk", qg, k) / math.sqrt(d)
    p = _softmax_f32(scores, q.dtype)
    out = jnp.einsum("bhgqk,bhkd->bhgqd", p, v)
    return out.reshape(b, hq, sq, d)


def rmsnorm_linear(x, w):
    """``rmsnorm(X) @ W`` (no gain): X [n, d], W [d, e]."""
    return rmsnorm(x) @ w


def lora(x, w, a, b):
    """``X W + (X A) B``: X [n, d], W [d, e], A [d, r], B [r, e]."""
    return x @ w + (x @ a) @ b


def gated_mlp(x, w1, w2):
    """``silu(X W1) * (X W2)``."""
    return jax.nn.silu(x @ w1) * (x @ w2)


def ntrans(h, x, a):
    """nGPT's normalized update ``rmsnorm(X + a * (rmsnorm(H) - X))`` (no gains); H, X, a [n, d]."""
    return rmsnorm(x + a * (rmsnorm(h) - x))


# ---------------------------------------------------------------------------------------------------
# Shapes and workloads
# ---------------------------------------------------------------------------------------------------


class Suite(enum.Enum):
    PRISM = "prism"
    MIRAGE = "mirage"


@dataclass(frozen=True, init=False)
class Shape:
    """Named size parameters, e.g. ``Shape(n=8, d=1024)``; ``shape.n``, ``shape["n"]``, ``shape.label``."""

    items: tuple[tuple[str, int], ...]

    def __init__(self, items: Mapping[str, int] | tuple[tuple[str, int], ...] | None = None, /, **sizes: int):
        pairs = list(dict(items).items()) if items is not None else []
        pairs += list(sizes.items())
        names = [k for k, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate size names in {names}")
        for k, v in pairs:
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"size {k}={v!r} must be a positive int")
        object.__setattr__(self, "items", tuple((str(k), int(v)) for k, v in pairs))

    def __getattr__(self, name: str) -> int:
        if name.startswith("__") or name == "items":
            raise AttributeError(name)
        for k, v in self.items:
            if k == name:
                return v
        raise AttributeError(f"Shape has no size {name!r} (sizes: {self.keys()})")

    def __getitem__(self, name: str) -> int:
        for k, v in self.items:
            if k == name:
                return v
        raise KeyError(name)

    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.items)

    def as_dict(self) -> dict[str, int]:
        return dict(self.items)

    def replace(self, **sizes: int) -> "Shape":
        unknown = set(sizes) - set(self.keys())
        if unknown:
            raise KeyError(f"unknown sizes {sorted(unknown)}; sizes: {self.keys()}")
        return Shape({**self.as_dict(), **sizes})

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.items)

    def __str__(self) -> str:
        return self.label

    def __repr__(self) -> str:
        return f"Shape({', '.join(f'{k}={v}' for k, v in self.items)})"


# How each argument is drawn: ("normal", scale) → scale·N(0,1); ("gain",) → 1 + 0.1·N(0,1);
# ("uniform", lo, hi) → U(lo, hi).
_Init = tuple


@dataclass(frozen=True)
class _Arg:
    name: str
    shape: tuple[int, ...]
    init: _Init


def _draw(rng: np.random.Generator, arg: _Arg) -> np.ndarray:
    kind = arg.init[0]
    if kind == "normal":
        return arg.init[1] * rng.standard_normal(arg.shape, dtype=np.float32)
    if kind == "gain":
        return 1.0 + 0.1 * rng.standard_normal(arg.shape, dtype=np.float32)
    if kind == "uniform":
        return rng.uniform(arg.init[1], arg.init[2], arg.shape)
    raise ValueError(f"unknown init {arg.init}")


def _make_args(arg_specs: Callable[[Shape], tuple[_Arg, ...]], shape: Shape, dtype: Any = jnp.float32,
               seed: int = 0) -> tuple[jax.Array, ...]:
    """Deterministic inputs: drawn in float32 by numpy (one stream per input, spawned from ``seed``;
    ``jax.random`` would compile a program per shape), then rounded to ``dtype`` (so the bfloat16
    inputs are the float32 ones rounded)."""
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"workload inputs must be floating point, got {dtype}")
    specs = arg_specs(shape)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(specs))]
    return tuple(jnp.asarray(_draw(r, a).astype(np.float32).astype(dtype)) for r, a in zip(streams, specs))


@dataclass(frozen=True)
class Workload:
    """A benchmark workload: a plain JAX function, its shapes and a deterministic input generator.

    ``make_args(shape, dtype=float32, seed=0)`` returns the positional inputs of ``fn`` (named
    ``arg_names``); ``fn_for(shape)`` is ``prefill_fn`` for a prefill shape (causal attention) and
    ``fn`` otherwise.
    """

    name: str
    suite: Suite
    fn: Callable[..., jax.Array]
    shapes: tuple[Shape, ...]
    prefill_shapes: tuple[Shape, ...]
    make_args: Callable[..., tuple[jax.Array, ...]] = field(repr=False)
    arg_names: tuple[str, ...]
    description: str
    arg_shapes: Callable[[Shape], tuple[tuple[int, ...], ...]] = field(repr=False, default=None)
    prefill_fn: Callable[..., jax.Array] | None = field(repr=False, default=None)
    small: Shape | None = None
    small_prefill: Shape | None = None

    def fn_for(self, shape: Shape) -> Callable[..., jax.Array]:
        if self.prefill_fn is not None and (shape in self.prefill_shapes or shape == self.small_prefill):
            return self.prefill_fn
        return self.fn

    def out_shape(self, shape: Shape, dtype: Any = jnp.float32) -> jax.ShapeDtypeStruct:
        structs = [jax.ShapeDtypeStruct(s, jnp.dtype(dtype)) for s in self.arg_shapes(shape)]
        return jax.eval_shape(self.fn_for(shape), *structs)

    @property
    def all_shapes(self) -> tuple[Shape, ...]:
        return self.shapes + self.prefill_shapes


def _workload(name, suite, fn, shapes, arg_specs, description, *, prefill_shapes=(), prefill_fn=None,
              small, small_prefill=None) -> Workload:
    probe = arg_specs(shapes[0])
    return Workload(
        name=name,
        suite=suite,
        fn=fn,
        shapes=tuple(shapes),
        prefill_shapes=tuple(prefill_shapes),
        make_args=functools.partial(_make_args, arg_specs),
        arg_names=tuple(a.name for a in probe),
        description=description,
        arg_shapes=lambda shape: tuple(a.shape for a in arg_specs(shape)),
        prefill_fn=prefill_fn,
        small=small,
        small_prefill=small_prefill,
    )


def _nd(pairs):
    return tuple(Shape(n=n, d=d) for n, d in pairs)


def _attn_shapes(tuples):
    return tuple(Shape(b=b, H=h, q=q, kv=kv, D=d) for b, h, q, kv, d in tuples)


_PRISM_ND = _nd([(8, 1024), (8, 2048), (8, 4096), (16, 1024), (16, 4096)])
_PREFILL_ND = _nd([(2048, 4096)])
_ATTN = _attn_shapes([(2, 8, 1, 1024, 128), (2, 8, 128, 1024, 128), (2, 32, 1, 1024, 128), (4, 8, 1, 1024, 128)])
_ATTN_PREFILL = _attn_shapes([(1, 32, 2048, 2048, 128)])


def _w(d):  # a weight with fan-in d
    return ("normal", 1.0 / math.sqrt(d))


_X = ("normal", 1.0)
_G = ("gain",)


def _specs_rmsnorm_matmul(s):
    return (_Arg("x", (s.n, s.d), _X), _Arg("g", (s.d,), _G), _Arg("w", (s.d, s.d), _w(s.d)))


def _specs_rmsnorm_mlp(s):
    return (_Arg("x", (s.n, s.d), _X), _Arg("g", (s.d,), _G),
            _Arg("wg", (s.d, s.d), _w(s.d)), _Arg("wu", (s.d, s.d), _w(s.d)))


def _specs_swiglu(s):
    return (_Arg("x", (s.n, s.d), _X), _Arg("wg", (s.d, s.d), _w(s.d)), _Arg("wu", (s.d, s.d), _w(s.d)))


def _specs_attention(s):
    return (_Arg("q", (s.b, s.H, s.q, s.D), _X), _Arg("k", (s.b, s.H, s.kv, s.D), _X),
            _Arg("v", (s.b, s.H, s.kv, s.D), _X))


def _specs_qknorm_attention(s):
    return _specs_attention(s) + (_Arg("gq", (s.D,), _G), _Arg("gk", (s.D,), _G))


def _specs_gqa(s):
    if s.H % s.Hkv:
        raise ValueError(f"gqa: H={s.H} is not a multiple of Hkv={s.Hkv}")
    return (_Arg("q", (s.b, s.H, s.q, s.D), _X), _Arg("k", (s.b, s.Hkv, s.kv, s.D), _X),
            _Arg("v", (s.b, s.Hkv, s.kv, s.D), _X))


def _specs_rmsnorm_linear(s):
    return (_Arg("x", (s.n, s.d), _X), _Arg("w", (s.d, s.e), _w(s.d)))


def _specs_lora(s):
    return (_Arg("x", (s.n, s.d), _X), _Arg("w", (s.d, s.e), _w(s.d)),
            _Arg("a", (s.d, s.r), _w(s.d)), _Arg("b", (s.r, s.e), _w(s.r)))


def _specs_gated_mlp(s):
    return (_Arg("x", (s.n, s.d), _X), _Arg("w1", (s.d, s.d), _w(s.d)), _Arg("w2", (s.d, s.d), _w(s.d)))


def _specs_ntrans(s):
    return (_Arg("h", (s.n, s.d), _X), _Arg("x", (s.n, s.d), _X), _Arg("a", (s.n, s.d), ("uniform", 0.01, 0.1)))


_SMALL_ND = Shape(n=4, d=64)
_SMALL_ATTN = Shape(b=1, H=2, q=4, kv=32, D=16)
_SMALL_ATTN_PREFILL = Shape(b=1, H=2, q=8, kv=8, D=16)

_ALL = (
    _workload("rmsnorm_matmul", Suite.PRISM, rmsnorm_matmul, _PRISM_ND, _specs_rmsnorm_matmul,
              "rmsnorm(X) * g @ W; X [n,d], g [d], W [d,d]", small=_SMALL_ND),
    _workload("rmsnorm_mlp", Suite.PRISM, rmsnorm_mlp, _PRISM_ND, _specs_rmsnorm_mlp,
              "silu(h @ Wg) * (h @ Wu), h = rmsnorm(X) * g; X [n,d], g [d], Wg, Wu [d,d]",
              prefill_shapes=_PREFILL_ND, small=_SMALL_ND, small_prefill=Shape(n=32, d=64)),
    _workload("swiglu", Suite.PRISM, swiglu, _PRISM_ND, _specs_swiglu,
              "silu(X @ Wg) * (X @ Wu); X [n,d], Wg, Wu [d,d]",
              prefill_shapes=_PREFILL_ND, small=_SMALL_ND, small_prefill=Shape(n=32, d=64)),
    _workload("attention", Suite.PRISM, attention, _ATTN, _specs_attention,
              "softmax(Q K^T / sqrt(D)) V per head; Q [b,H,q,D], K, V [b,H,kv,D]; prefill is causal",
              prefill_shapes=_ATTN_PREFILL, prefill_fn=causal_attention, small=_SMALL_ATTN,
              small_prefill=_SMALL_ATTN_PREFILL),
    _workload("qknorm_attention", Suite.PRISM, qknorm_attention, _ATTN, _specs_qknorm_attention,
              "attention with RMSNorm (gains gq, gk [D]) on Q and on K over D", small=_SMALL_ATTN),
    _workload("gqa", Suite.MIRAGE, gqa,
              tuple(Shape(b=b, H=32, Hkv=8, q=1, kv=4096, D=128) for b in (1, 8)), _specs_gqa,
              "grouped-query attention, 4 query heads per KV head; Q [b,32,1,128], K, V [b,8,4096,128]",
              small=Shape(b=1, H=8, Hkv=2, q=1, kv=32, D=16)),
    _workload("rmsnorm_linear_6144", Suite.MIRAGE, rmsnorm_linear,
              tuple(Shape(n=2 * b, d=4096, e=6144) for b in (1, 8)), _specs_rmsnorm_linear,
              "rmsnorm(X) @ W (no gain); X [2b,4096], W [4096,6144]", small=Shape(n=2, d=64, e=96)),
    _workload("lora", Suite.MIRAGE, lora, (Shape(n=16, d=256, e=4096, r=16),), _specs_lora,
              "X W + (X A) B; X [16,256], W [256,4096], A [256,16], B [16,4096]",
              small=Shape(n=4, d=32, e=64, r=4)),
    _workload("gated_mlp", Suite.MIRAGE, gated_mlp, (Shape(n=8, d=4096),), _specs_gated_mlp,
              "silu(X W1) * (X W2); X [8,4096], W1, W2 [4096,4096]", small=_SMALL_ND),
    _workload("ntrans", Suite.MIRAGE, ntrans, tuple(Shape(n=8 * b, d=4096) for b in (1, 8)), _specs_ntrans,
              "rmsnorm(X + a * (rmsnorm(H) - X)) (no gains); H, X, a [8b,4096]", small=_SMALL_ND),
)

WORKLOADS: dict[str, Workload] = {w.name: w for w in _ALL}

# other spellings accepted by get_workload
ALIASES: dict[str, str] = {"rmsnorm_linear": "rmsnorm_linear_6144"}


def get_workload(name: str) -> Workload:
    """The workload called ``name``; a KeyError listing the valid names otherwise."""
    key = ALIASES.get(name, name)
    try:
        return WORKLOADS[key]
    except KeyError:
        raise KeyError(f"unknown workload {name!r}; valid names: {', '.join(WORKLOADS)}") from None


def prism_workloads() -> list[Workload]:
    """The Prism set (the paper's five LLM workloads), in BENCHMARKS.md order."""
    return [w for w in WORKLOADS.values() if w.suite is Suite.PRISM]


def mirage_workloads() -> list[Workload]:
    """The Mirage set (OSDI'25), in BENCHMARKS.md order."""
    return [w for w in WORKLOADS.values() if w.suite is Suite.MIRAGE]


def small_shape(workload: Workload | str, *, prefill: bool = False) -> Shape:
    """A tiny shape with the same size names as the workload's real shapes, for fast tests.

    ``prefill=True`` gives a tiny prefill-like shape (attention: q == kv, run causally by
    ``workload.fn_for``); for workloads without prefill shapes it is the decode-like small shape.
    """
    w = get_workload(workload) if isinstance(workload, str) else workload
    if prefill and w.small_prefill is not None:
        return w.small_prefill
    return w.small
