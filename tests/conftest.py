"""Fixtures shared across the test packages."""

import os
import sys

import pytest


def pytest_collection_modifyitems(config, items):
    """Slow tests first (a stable sort: each module's own order kept), so the longest start early and,
    with pytest-xdist's work stealing (scripts/test.sh), the workers finish together."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def native_kernels_win(monkeypatch):
    """The tuner's clock says every kernel beats XLA (the first program it times for a region, or for
    the whole program), so the native kernels run whatever this machine measures: what is tested is
    that they compute the region."""
    import prism_jax.tune.tuner as tuner

    calls = []

    def fake_timer(fn, args, **kwargs):  # one timer per program, XLA's first
        calls.append(fn)
        seconds = 2e-3 if fn is calls[0] else 1e-3
        return lambda: seconds

    def first_timed_is_xla(real):
        def timed(*args, **kwargs):
            calls.clear()
            return real(*args, **kwargs)
        return timed

    api = sys.modules["prism_jax.api.superoptimize"]
    monkeypatch.setattr(tuner, "ChainTimer", fake_timer)
    monkeypatch.setattr(api, "tune_region", first_timed_is_xla(tuner.tune_region))
    monkeypatch.setattr(api, "check_program", first_timed_is_xla(api.check_program))


@pytest.fixture(scope="session")
def run_shared_dir(tmp_path_factory):
    """``run_shared_dir(name)``: a directory every worker of this pytest run shares (pytest-xdist gives
    each worker a basetemp of its own inside the run's). A cache there lets a worker reuse what another
    one searched -- a bfloat16 case finds its float32 twin's search (the same float32 core) whichever
    worker ran it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent

    def make(name: str):
        path = base / name
        path.mkdir(exist_ok=True)
        return path

    return make
