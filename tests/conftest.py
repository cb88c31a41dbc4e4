"""Fixtures shared across the test packages."""

import sys

import pytest


@pytest.fixture
def native_kernels_win(monkeypatch):
    """The tuner's clock says every kernel beats XLA (the first program it times for a region), so the
    native kernels run whatever this machine measures: what is tested is that they compute the region."""
    import prism_jax.tune.tuner as tuner

    calls = []

    def fake_timer(fn, args, **kwargs):  # one timer per program, XLA's first
        calls.append(fn)
        seconds = 2e-3 if fn is calls[0] else 1e-3
        return lambda: seconds

    def tune_region(*args, **kwargs):
        calls.clear()
        return real(*args, **kwargs)

    real = tuner.tune_region
    monkeypatch.setattr(tuner, "ChainTimer", fake_timer)
    monkeypatch.setattr(sys.modules["prism_jax.api.superoptimize"], "tune_region", tune_region)
