"""The whole-program check: the rewrite against jax.jit of the function, timed as regions are, the
verdict cached; a program that cannot be timed, or a cache entry of another form, never breaks a build."""

import jax
import jax.numpy as jnp
import pytest

from prism_jax.cache import ResultCache
from prism_jax.cost import H100_SXM
from prism_jax.tune import Target, TuneConfig, check_program
from prism_jax.tune.program import CACHE_NAMESPACE, _cache_key

TIMED = Target("cpu-timed", H100_SXM, interpret=False)
AVALS = [jax.ShapeDtypeStruct((8, 8), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32)]
CONFIG = TuneConfig(warmup=1, repeats=1, iterations=2)


def reference(x, i):
    return [jnp.sin(x) + i]


def rewrite(x, i):
    return [jnp.sin(x) + i]


@pytest.fixture
def clock(monkeypatch):
    """Per-call seconds of each program by identity (the tuner's ChainTimer replaced)."""
    import prism_jax.tune.tuner as tuner

    seconds = {}

    def timer(fn, args, **kwargs):
        jax.block_until_ready(fn(*args))  # each program really runs once
        return lambda: seconds[fn]

    monkeypatch.setattr(tuner, "ChainTimer", timer)
    return seconds


@pytest.mark.parametrize("kernels_s,keeps", [(1e-3, True), (0.99e-3, False), (3e-3, False)])
def test_kernels_stay_only_when_clearly_faster_and_the_verdict_is_cached(clock, tmp_path, kernels_s, keeps):
    cache = ResultCache(tmp_path / "c.sqlite")
    clock.update({reference: 2e-3 if keeps else 1e-3, rewrite: kernels_s})
    check = check_program(rewrite, reference, AVALS, "p", TIMED, CONFIG, cache)
    assert check.keeps_kernels == keeps and not check.cache_hit
    assert (check.reason == "") == keeps and (keeps or "not clearly faster" in check.reason)
    clock.clear()  # a timing now would fail: the verdict must come from the cache
    again = check_program(rewrite, reference, AVALS, "p", TIMED, CONFIG, cache)
    assert again.cache_hit and again.keeps_kernels == keeps and again.reason == check.reason


def test_a_program_that_fails_to_run_keeps_jit_with_the_reason_and_caches_nothing(clock, tmp_path):
    cache = ResultCache(tmp_path / "c.sqlite")

    def broken(x, i):
        raise RuntimeError("out of memory")

    clock.update({reference: 1e-3})
    check = check_program(broken, reference, AVALS, "p", TIMED, CONFIG, cache)
    assert not check.keeps_kernels and "timing the whole program failed (RuntimeError: out of memory)" in check.reason
    assert cache.get(CACHE_NAMESPACE, _cache_key("p", TIMED, CONFIG)) is None


def test_a_cache_entry_of_another_form_is_timed_afresh(clock, tmp_path):
    cache = ResultCache(tmp_path / "c.sqlite")
    cache.put(CACHE_NAMESPACE, _cache_key("p", TIMED, CONFIG), {"keeps": True})
    clock.update({reference: 2e-3, rewrite: 1e-3})
    check = check_program(rewrite, reference, AVALS, "p", TIMED, CONFIG, cache)
    assert check.keeps_kernels and not check.cache_hit
