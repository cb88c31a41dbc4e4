"""The whole-program check: a rewritten program with kernels against ``jax.jit`` of the function,
timed on the device as the tuner times regions (:func:`prism_jax.tune.tuner._device_times`).

Each kernel beat XLA's program for its region timed alone. In the whole program XLA also loses its
fusions across region boundaries, and its intra-op pool keeps a thread spinning after its own ops,
which competes with a kernel's threads: a Llama decode block (dim 1024, float32, 2 cores) ran one
kernel at 591 µs to XLA's 756 for its region, yet the step took 4796 µs to ``jax.jit``'s 4461. So a
program keeps its kernels only when clearly faster as a whole; otherwise ``jax.jit``'s program runs,
and ``explain()`` says why. Verdicts are cached like the tuner's choices."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import jax

from prism_jax.tune.tuner import (Target, TuneConfig, _code_fingerprint, _device_times, _not_clearly_faster,
                                  random_leaves)

if TYPE_CHECKING:
    from prism_jax.cache import NullCache, ResultCache

log = logging.getLogger("prism_jax.tune")

CACHE_NAMESPACE = "program/v2"


@dataclasses.dataclass(frozen=True)
class ProgramCheck:
    """The verdict on one program: its time with the kernels and ``jax.jit``'s, per call (the last
    timing), and why ``jax.jit``'s program runs instead (empty when the kernels stay)."""

    keeps_kernels: bool
    kernels_s: float
    xla_s: float
    reason: str = ""
    cache_hit: bool = False


def check_program(kernels: Callable[..., Any], reference: Callable[..., Any], avals: Sequence[Any], fingerprint: str,
                  target: Target, config: TuneConfig = TuneConfig(),
                  cache: "ResultCache | NullCache | None" = None) -> ProgramCheck:
    """Time ``kernels`` (the jitted rewrite) against ``reference`` (``jax.jit`` of the function), both
    on flat inputs of ``avals``; ``fingerprint`` names the program and its chosen kernels (the cache
    key). The kernels stay when ``config.min_speedup`` times faster, twice, as the tuner decides a
    region: a step that one kernel makes 4% faster at best came out 0.88x to 1.05x in three runs."""
    key = _cache_key(fingerprint, target, config)
    if cache is not None and config.use_cache:
        stored = cache.get(CACHE_NAMESPACE, key)
        try:
            return ProgramCheck(**stored, cache_hit=True)
        except TypeError:  # nothing stored, or an entry of another form: timed afresh
            pass
    try:
        xla_s, kernels_s, reason = _time_against_reference(kernels, reference, avals, config)
    except Exception as err:  # the program did not run whole (memory?): jax.jit's runs, nothing is cached
        log.warning("timing the whole program failed: %s: %s", type(err).__name__, err)
        return ProgramCheck(False, math.nan, math.nan, f"jax.jit's program runs: timing the whole program failed "
                            f"({type(err).__name__}: {str(err)[:200]})")
    check = ProgramCheck(reason is None, kernels_s, xla_s,
                         "" if reason is None else f"jax.jit's program runs: with its kernels the whole program is "
                         f"not clearly faster -- {reason}")
    log.debug("whole program: kernels %.1f µs, jax.jit %.1f µs", kernels_s * 1e6, xla_s * 1e6)
    if cache is not None and config.use_cache:
        cache.put(CACHE_NAMESPACE, key, {"keeps_kernels": check.keeps_kernels, "kernels_s": kernels_s, "xla_s": xla_s,
                                         "reason": check.reason})
    return check


def _time_against_reference(kernels: Callable[..., Any], reference: Callable[..., Any], avals: Sequence[Any],
                            config: TuneConfig) -> tuple[float, float, str | None]:
    """XLA's seconds, the kernels', and why the kernels are not clearly faster (None: they are, twice)."""
    args = random_leaves(avals, config.seed)
    jax.block_until_ready(reference(*args))  # compiled first: its next call sets the calls per timed loop
    xla_s, kernels_s = _device_times([reference, kernels], args, config)
    reason = _not_clearly_faster(kernels_s, xla_s, config)
    if reason is None:  # the better of two noisy timings is biased: it must win again
        xla_s, kernels_s = _device_times([reference, kernels], args, config)
        reason = _not_clearly_faster(kernels_s, xla_s, config, again=True)
    return xla_s, kernels_s, reason


def _cache_key(fingerprint: str, target: Target, config: TuneConfig) -> str:
    text = json.dumps({"program": fingerprint, "target": target.name, "device": target.device.name,
                       "code": _code_fingerprint(target), "jax": jax.__version__, "config": config.key_fields()},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
