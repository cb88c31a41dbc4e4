"""A small Llama-style decoder block in Flax nnx (prefill and KV-cache decode).

    h   = x + Wo · attention(rope(q_norm?(x̂ Wq)), rope(k_norm?(x̂ Wk)), x̂ Wv),   x̂ = rmsnorm(x) * g_attn
    out = h + W_down · (silu(ĥ W_gate) * (ĥ W_up)),                             ĥ = rmsnorm(h) * g_mlp

Grouped-query attention (``n_heads / n_kv_heads`` query heads per KV head, query head ``h`` reads KV
head ``h // group``), rotary embeddings (rotate-half form, base ``rope_theta``) on q and k after the
optional QK-norm (RMSNorm over the head dim, as in Qwen3 / OLMo2), a causal mask in prefill, and in
decode a KV cache ``[b, n_kv_heads, max_len, head_dim]`` updated with ``jax.lax.dynamic_update_slice``
where cache positions after the current one are masked.  Norms and softmax are computed in float32,
matmuls in the parameter/input dtype.

``llama_block_fn(config, mode=...)`` gives the block as a pure function whose parameters are explicit
inputs: ``fn(params, x)`` (prefill) or ``fn(params, x, cache_k, cache_v, pos)`` (decode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["LlamaBlock", "LlamaConfig", "TINY_CONFIG", "apply_rope", "llama_block_fn", "tiny_config"]


@dataclass(frozen=True)
class LlamaConfig:
    dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_dim: int
    qk_norm: bool = False
    eps: float = 1e-6
    rope_theta: float = 10000.0

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads


TINY_CONFIG = LlamaConfig(dim=64, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=128)


def tiny_config(qk_norm: bool = False) -> LlamaConfig:
    """The tiny test configuration (dim 64, 4 heads, 2 KV heads, head_dim 16, hidden 128)."""
    return LlamaConfig(dim=64, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=128, qk_norm=qk_norm)


def apply_rope(x, positions, theta: float = 10000.0):
    """Rotary embedding, rotate-half form: x [b, s, heads, hd], positions [s] (int) → same shape/dtype."""
    hd = x.shape[-1]
    inv_freq = theta ** (-jnp.arange(0, hd, 2, dtype=jnp.float32) / hd)  # [hd/2]
    angles = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]  # [s, hd/2]
    cos = jnp.cos(angles)[None, :, None, :]
    sin = jnp.sin(angles)[None, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


class LlamaBlock(nnx.Module):
    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs, param_dtype: Any = jnp.float32):
        c = config
        self.config = c

        def linear(i, o):
            return nnx.Linear(i, o, use_bias=False, param_dtype=param_dtype, rngs=rngs)

        def norm(d):
            return nnx.RMSNorm(d, epsilon=c.eps, param_dtype=param_dtype, rngs=rngs)

        self.attn_norm = norm(c.dim)
        self.wq = linear(c.dim, c.n_heads * c.head_dim)
        self.wk = linear(c.dim, c.n_kv_heads * c.head_dim)
        self.wv = linear(c.dim, c.n_kv_heads * c.head_dim)
        self.wo = linear(c.n_heads * c.head_dim, c.dim)
        if c.qk_norm:
            self.q_norm = norm(c.head_dim)
            self.k_norm = norm(c.head_dim)
        self.mlp_norm = norm(c.dim)
        self.w_gate = linear(c.dim, c.hidden_dim)
        self.w_up = linear(c.dim, c.hidden_dim)
        self.w_down = linear(c.hidden_dim, c.dim)

    # -- pieces -------------------------------------------------------------------------------------

    def _qkv(self, x, positions):
        """x [b, s, dim] → q [b, H, s, hd], k, v [b, Hkv, s, hd] (rope on q, k)."""
        c = self.config
        b, s, _ = x.shape
        h = self.attn_norm(x)
        q = self.wq(h).reshape(b, s, c.n_heads, c.head_dim)
        k = self.wk(h).reshape(b, s, c.n_kv_heads, c.head_dim)
        v = self.wv(h).reshape(b, s, c.n_kv_heads, c.head_dim)
        if c.qk_norm:
            q = self.q_norm(q)
            k = self.k_norm(k)
        q = apply_rope(q, positions, c.rope_theta)
        k = apply_rope(k, positions, c.rope_theta)
        t = lambda a: jnp.transpose(a, (0, 2, 1, 3))  # noqa: E731
        return t(q), t(k), t(v)

    def _attend(self, q, k, v, mask):
        """q [b, H, s, hd], k/v [b, Hkv, T, hd], mask [s, T] (True = attend) → [b, s, dim]."""
        c = self.config
        b, _, s, hd = q.shape
        qg = q.reshape(b, c.n_kv_heads, c.group, s, hd)
        scores = jnp.einsum("bhgqd,bhkd->bhgqk", qg, k).astype(jnp.float32) / math.sqrt(hd)
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
        p = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhgqk,bhkd->bhgqd", p, v).reshape(b, c.n_heads, s, hd)
        out = jnp.transpose(out, (0, 2, 1, 3)).reshape(b, s, c.n_heads * hd)
        return self.wo(out)

    def _mlp_residual(self, h):
        y = self.mlp_norm(h)
        return h + self.w_down(nnx.silu(self.w_gate(y)) * self.w_up(y))

    # -- prefill ------------------------------------------------------------------------------------

    def __call__(self, x):
        """Prefill: x [b, s, dim] (positions 0..s-1, causal) → [b, s, dim]."""
        s = x.shape[1]
        q, k, v = self._qkv(x, jnp.arange(s))
        mask = jnp.tril(jnp.ones((s, s), dtype=bool))
        return self._mlp_residual(x + self._attend(q, k, v, mask))

    def prefill(self, x, max_len: int, cache_dtype: Any = None):
        """Prefill that also returns the KV cache: → (out [b, s, dim], cache_k, cache_v [b, Hkv, max_len, hd])."""
        b, s, _ = x.shape
        if s > max_len:
            raise ValueError(f"prompt length {s} exceeds max_len {max_len}")
        q, k, v = self._qkv(x, jnp.arange(s))
        mask = jnp.tril(jnp.ones((s, s), dtype=bool))
        out = self._mlp_residual(x + self._attend(q, k, v, mask))
        cache_k, cache_v = self.init_cache(b, max_len, cache_dtype or x.dtype)
        cache_k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, 0, 0, 0))
        cache_v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, 0, 0, 0))
        return out, cache_k, cache_v

    # -- decode -------------------------------------------------------------------------------------

    def init_cache(self, batch: int, max_len: int, dtype: Any = jnp.float32):
        c = self.config
        z = jnp.zeros((batch, c.n_kv_heads, max_len, c.head_dim), dtype)
        return z, z

    def decode(self, x, cache_k, cache_v, pos):
        """One decode step: x [b, 1, dim] at position ``pos`` (int or int32 scalar), cache
        [b, Hkv, max_len, hd] holding positions < pos → (out [b, 1, dim], cache_k, cache_v)."""
        pos = jnp.asarray(pos, jnp.int32)
        q, k, v = self._qkv(x, pos[None])
        zero = jnp.zeros((), jnp.int32)
        start = (zero, zero, pos, zero)
        cache_k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), start)
        cache_v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), start)
        max_len = cache_k.shape[2]
        mask = (jnp.arange(max_len) <= pos)[None, :]  # [1, max_len]
        out = self._mlp_residual(x + self._attend(q, cache_k, cache_v, mask))
        return out, cache_k, cache_v


def llama_block_fn(config: LlamaConfig = TINY_CONFIG, *, mode: str = "prefill", dtype: Any = jnp.float32,
                   seed: int = 0) -> tuple[Callable[..., Any], dict]:
    """The block as a pure function with explicit parameters: ``(fn, params)``.

    ``params`` is a nested dict of arrays (``nnx.to_pure_dict`` of the block initialized from
    ``nnx.Rngs(seed)`` in ``dtype``).  ``mode="prefill"``: ``fn(params, x) -> out``;
    ``mode="decode"``: ``fn(params, x, cache_k, cache_v, pos) -> (out, cache_k, cache_v)``.
    Every parameter is an input of the traced jaxpr.
    """
    if mode not in ("prefill", "decode"):
        raise ValueError(f"mode must be 'prefill' or 'decode', got {mode!r}")
    block = LlamaBlock(config, rngs=nnx.Rngs(seed), param_dtype=jnp.dtype(dtype))
    graphdef, state = nnx.split(block)
    params = nnx.to_pure_dict(state)
    abstract_state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)

    def _model(p):
        st = jax.tree.map(lambda leaf: leaf, abstract_state)
        nnx.replace_by_pure_dict(st, p)
        return nnx.merge(graphdef, st)

    if mode == "prefill":
        def fn(params, x):
            return _model(params)(x)
    else:
        def fn(params, x, cache_k, cache_v, pos):
            return _model(params).decode(x, cache_k, cache_v, pos)

    fn.__name__ = fn.__qualname__ = f"llama_block_{mode}"
    return fn, params
