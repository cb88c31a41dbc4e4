"""The BENCHMARKS.md workloads written as Flax nnx modules, the way a Flax user writes them.

``nnx_workload(name, shape, dtype, seed)`` returns ``(f, args)``: ``f`` is a pure function of the SAME
positional inputs as the jnp definition (``definitions.WORKLOADS[name].make_args``), weights included.
Inside ``f`` the module's graph definition is merged with a state built from the argument arrays, so
the weights are inputs of the traced jaxpr, never closed-over constants; ``f(*args)`` equals
``WORKLOADS[name].fn(*args)`` up to float rounding.

``variant="dpa"`` (attention workloads only) computes attention with ``nnx.dot_product_attention``
(which, without dropout, calls ``jax.nn.dot_product_attention``) on ``[b, seq, heads, D]`` views
instead of explicit einsums.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

from prism_jax.workloads.definitions import EPS, Shape, get_workload

__all__ = [
    "Attention",
    "GQA",
    "GatedMLP",
    "LoRA",
    "NTrans",
    "QKNormAttention",
    "RMSNormLinear",
    "RMSNormMLP",
    "RMSNormMatmul",
    "SwiGLU",
    "nnx_workload",
    "sdpa",
]


def _linear(d_in: int, d_out: int, rngs: nnx.Rngs, param_dtype) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, use_bias=False, param_dtype=param_dtype, rngs=rngs)


def _rmsnorm(d: int, rngs: nnx.Rngs, param_dtype, use_scale: bool = True) -> nnx.RMSNorm:
    return nnx.RMSNorm(d, epsilon=EPS, use_scale=use_scale, param_dtype=param_dtype, rngs=rngs)


def sdpa(q, k, v, *, causal: bool = False, use_dpa: bool = False):
    """softmax(Q Kᵀ / sqrt(D)) V per head on [b, H, q, D] / [b, Hkv, kv, D] arrays (Hkv divides H).

    ``use_dpa=False``: explicit einsums and ``jax.nn.softmax`` (in float32); ``use_dpa=True``:
    ``nnx.dot_product_attention`` on the ``[b, seq, heads, D]`` layout it expects.
    """
    if use_dpa:
        t = lambda a: jnp.swapaxes(a, 1, 2)  # noqa: E731  [b, H, s, D] <-> [b, s, H, D]
        return t(nnx.dot_product_attention(t(q), t(k), t(v), is_causal=causal))
    b, hq, sq, d = q.shape
    hkv, skv = k.shape[1], k.shape[2]
    qg = q.reshape(b, hkv, hq // hkv, sq, d)
    scores = jnp.einsum("bhgqd,bhkd->bhgqk", qg, k) / math.sqrt(d)
    if causal:
        mask = jnp.tril(jnp.ones((sq, skv), dtype=bool), k=skv - sq)
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    p = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype)
    return jnp.einsum("bhgqk,bhkd->bhgqd", p, v).reshape(b, hq, sq, d)


class RMSNormMatmul(nnx.Module):
    def __init__(self, d: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.norm = _rmsnorm(d, rngs, param_dtype)
        self.proj = _linear(d, d, rngs, param_dtype)

    def __call__(self, x):
        return self.proj(self.norm(x))


class RMSNormMLP(nnx.Module):
    def __init__(self, d: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.norm = _rmsnorm(d, rngs, param_dtype)
        self.gate = _linear(d, d, rngs, param_dtype)
        self.up = _linear(d, d, rngs, param_dtype)

    def __call__(self, x):
        h = self.norm(x)
        return nnx.silu(self.gate(h)) * self.up(h)


class SwiGLU(nnx.Module):
    def __init__(self, d: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.gate = _linear(d, d, rngs, param_dtype)
        self.up = _linear(d, d, rngs, param_dtype)

    def __call__(self, x):
        return nnx.silu(self.gate(x)) * self.up(x)


class GatedMLP(nnx.Module):
    def __init__(self, d: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.w1 = _linear(d, d, rngs, param_dtype)
        self.w2 = _linear(d, d, rngs, param_dtype)

    def __call__(self, x):
        return nnx.silu(self.w1(x)) * self.w2(x)


class Attention(nnx.Module):
    """Parameter-free attention core on [b, H, q, D] (also GQA when K/V have fewer heads)."""

    def __init__(self, *, causal: bool = False, use_dpa: bool = False):
        self.causal = causal
        self.use_dpa = use_dpa

    def __call__(self, q, k, v):
        return sdpa(q, k, v, causal=self.causal, use_dpa=self.use_dpa)


GQA = Attention  # the same module: grouping follows from K/V having fewer heads than Q


class QKNormAttention(nnx.Module):
    def __init__(self, head_dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32, use_dpa: bool = False):
        self.q_norm = _rmsnorm(head_dim, rngs, param_dtype)
        self.k_norm = _rmsnorm(head_dim, rngs, param_dtype)
        self.use_dpa = use_dpa

    def __call__(self, q, k, v):
        return sdpa(self.q_norm(q), self.k_norm(k), v, use_dpa=self.use_dpa)


class RMSNormLinear(nnx.Module):
    def __init__(self, d: int, e: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.norm = _rmsnorm(d, rngs, param_dtype, use_scale=False)
        self.proj = _linear(d, e, rngs, param_dtype)

    def __call__(self, x):
        return self.proj(self.norm(x))


class LoRA(nnx.Module):
    """``X W + (X A) B`` as Flax's ``nnx.LoRALinear`` (kernel W, lora.lora_a A, lora.lora_b B)."""

    def __init__(self, d: int, e: int, r: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.linear = nnx.LoRALinear(d, e, lora_rank=r, use_bias=False, param_dtype=param_dtype,
                                     lora_param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x):
        return self.linear(x)


class NTrans(nnx.Module):
    """nGPT's ``rmsnorm(X + a * (rmsnorm(H) - X))`` with two scale-free RMSNorms."""

    def __init__(self, d: int, *, rngs: nnx.Rngs):
        self.norm_h = _rmsnorm(d, rngs, jnp.float32, use_scale=False)
        self.norm_out = _rmsnorm(d, rngs, jnp.float32, use_scale=False)

    def __call__(self, h, x, a):
        return self.norm_out(x + a * (self.norm_h(h) - x))


# name -> (module constructor(shape, param_dtype, use_dpa, causal),
#          number of leading activation args,
#          params(args) -> pure state dict from the remaining args)
_Spec = tuple[Callable[..., nnx.Module], int, Callable[..., dict]]

_SPECS: dict[str, _Spec] = {
    "rmsnorm_matmul": (lambda s, dt, **kw: RMSNormMatmul(s.d, rngs=nnx.Rngs(0), param_dtype=dt), 1,
                       lambda g, w: {"norm": {"scale": g}, "proj": {"kernel": w}}),
    "rmsnorm_mlp": (lambda s, dt, **kw: RMSNormMLP(s.d, rngs=nnx.Rngs(0), param_dtype=dt), 1,
                    lambda g, wg, wu: {"norm": {"scale": g}, "gate": {"kernel": wg}, "up": {"kernel": wu}}),
    "swiglu": (lambda s, dt, **kw: SwiGLU(s.d, rngs=nnx.Rngs(0), param_dtype=dt), 1,
               lambda wg, wu: {"gate": {"kernel": wg}, "up": {"kernel": wu}}),
    "attention": (lambda s, dt, use_dpa, causal: Attention(causal=causal, use_dpa=use_dpa), 3, lambda: {}),
    "qknorm_attention": (lambda s, dt, use_dpa, **kw: QKNormAttention(s.D, rngs=nnx.Rngs(0), param_dtype=dt,
                                                                      use_dpa=use_dpa), 3,
                         lambda gq, gk: {"q_norm": {"scale": gq}, "k_norm": {"scale": gk}}),
    "gqa": (lambda s, dt, use_dpa, **kw: GQA(use_dpa=use_dpa), 3, lambda: {}),
    "rmsnorm_linear_6144": (lambda s, dt, **kw: RMSNormLinear(s.d, s.e, rngs=nnx.Rngs(0), param_dtype=dt), 1,
                            lambda w: {"proj": {"kernel": w}}),
    "lora": (lambda s, dt, **kw: LoRA(s.d, s.e, s.r, rngs=nnx.Rngs(0), param_dtype=dt), 1,
             lambda w, a, b: {"linear": {"kernel": w, "lora": {"lora_a": a, "lora_b": b}}}),
    "gated_mlp": (lambda s, dt, **kw: GatedMLP(s.d, rngs=nnx.Rngs(0), param_dtype=dt), 1,
                  lambda w1, w2: {"w1": {"kernel": w1}, "w2": {"kernel": w2}}),
    "ntrans": (lambda s, dt, **kw: NTrans(s.d, rngs=nnx.Rngs(0)), 3, lambda: {}),
}

_ATTENTION_WORKLOADS = ("attention", "qknorm_attention", "gqa")


def nnx_module_fn(name: str, shape: Shape, dtype: Any = jnp.float32, *, variant: str = "einsum",
                  causal: bool | None = None) -> Callable[..., jax.Array]:
    """The pure function ``f(*args)`` of the nnx module for workload ``name`` (arguments as the jnp one).

    ``causal=None`` follows the workload (causal for attention's prefill shapes).
    """
    w = get_workload(name)
    name = w.name
    if variant not in ("einsum", "dpa"):
        raise ValueError(f"variant must be 'einsum' or 'dpa', got {variant!r}")
    if variant == "dpa" and name not in _ATTENTION_WORKLOADS:
        raise ValueError(f"variant 'dpa' applies to {_ATTENTION_WORKLOADS}, not {name!r}")
    if causal is None:
        causal = w.fn_for(shape) is not w.fn
    if causal and name != "attention":
        raise ValueError(f"only 'attention' has a causal variant, not {name!r}")
    make, n_act, params = _SPECS[name]
    param_dtype = jnp.dtype(dtype)
    # abstract module: no weights are computed here; they all come from f's arguments
    abstract = nnx.eval_shape(lambda: make(shape, param_dtype, use_dpa=(variant == "dpa"), causal=causal))
    graphdef, abstract_state = nnx.split(abstract)
    n_args = len(w.arg_names)

    def f(*args):
        if len(args) != n_args:
            raise TypeError(f"{name}: expected {n_args} arguments {w.arg_names}, got {len(args)}")
        state = jax.tree.map(lambda leaf: leaf, abstract_state)  # a fresh State to fill in
        nnx.replace_by_pure_dict(state, params(*args[n_act:]))
        model = nnx.merge(graphdef, state)
        return model(*args[:n_act])

    f.__name__ = f"{name}_nnx" + ("_dpa" if variant == "dpa" else "") + ("_causal" if causal else "")
    f.__qualname__ = f.__name__
    return f


def nnx_workload(name: str, shape: Shape, dtype: Any = jnp.float32, seed: int = 0, *,
                 variant: str = "einsum", causal: bool | None = None
                 ) -> tuple[Callable[..., jax.Array], tuple[jax.Array, ...]]:
    """``(f, args)``: the nnx version of workload ``name`` as a pure function and its inputs, which are
    exactly ``get_workload(name).make_args(shape, dtype, seed)``."""
    f = nnx_module_fn(name, shape, dtype, variant=variant, causal=causal)
    return f, get_workload(name).make_args(shape, dtype, seed)
