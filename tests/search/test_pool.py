"""The enumeration's worker processes are kept between searches: reused, replaced when gone or idle too
long, and a failing one reports its error without breaking the next request."""

import pickle
import subprocess

import pytest

from prism_jax.ir.examples import EXAMPLES
from prism_jax.search import pool as pool_module
from prism_jax.search import worker as worker_module
from prism_jax.search.enumerate import EnumerationConfig, enumerate_structures
from prism_jax.search.pool import WorkerError, WorkerPool
from prism_jax.search.problem import SearchProblem


@pytest.fixture
def pool():
    workers = WorkerPool()
    yield workers
    workers.close()


def start_point_request(index: int = 1) -> tuple[bytes, list]:
    """A request for one start point of the rmsnorm_matmul reference, and what it finds in this process."""
    core = SearchProblem.of(EXAMPLES["rmsnorm_matmul"].symbolic_reference()).core
    config = EnumerationConfig(time_limit_s=60.0)
    expected = list(enumerate_structures(core, config, only=index))
    return pickle.dumps([(core, config, index, 400)]), expected


def run_all(workers: WorkerPool, payloads) -> dict:
    return dict(workers.run(payloads))


def test_a_worker_serves_request_after_request(pool):
    payload, expected = start_point_request()
    for _ in range(2):
        (found, stats), = run_all(pool, [payload])[0]
        assert found == expected and len(found) > 0 and stats.complete == len(found)
    assert pool.started == 1


def test_requests_at_once_get_workers_of_their_own_which_are_all_kept(pool):
    payload, expected = start_point_request()
    answers = run_all(pool, [payload, pickle.dumps([])])
    assert answers[0][0][0] == expected and answers[1] == []
    assert pool.started == 2
    run_all(pool, [pickle.dumps([]), pickle.dumps([])])
    assert pool.started == 2


def test_a_worker_that_died_while_idle_is_replaced(pool):
    run_all(pool, [pickle.dumps([])])
    pool._idle[0].process.kill()
    pool._idle[0].process.wait()
    assert run_all(pool, [pickle.dumps([])]) == {0: []}
    assert pool.started == 2


def test_a_worker_idle_too_long_is_closed_and_replaced(pool, monkeypatch):
    run_all(pool, [pickle.dumps([])])
    old = pool._idle[0]
    monkeypatch.setattr(pool_module, "REUSE_WITHIN_S", 0.0)
    run_all(pool, [pickle.dumps([])])
    assert pool.started == 2 and old.process.poll() is not None


def test_a_failing_request_raises_with_the_workers_error_and_the_next_one_works(pool):
    bad = pickle.dumps([("not a graph",)])  # enumerate_start_point takes four arguments
    with pytest.raises(WorkerError, match="search worker failed:(.|\n)*TypeError"):
        run_all(pool, [bad])
    assert not pool._idle  # the failed worker is not kept
    assert run_all(pool, [pickle.dumps([])]) == {0: []}


def test_closing_the_answers_early_waits_for_the_requests_in_flight_and_keeps_their_workers(pool):
    payload, _ = start_point_request()
    answers = pool.run([pickle.dumps([]), payload])
    next(answers)
    answers.close()
    assert len(pool._idle) == 2 and all(worker.alive for worker in pool._idle)


def test_a_forked_process_starts_workers_of_its_own(pool):
    """After a fork the idle workers' pipes are shared with the parent: the child must not use them
    (simulated by the pool's recorded pid), nor close them."""
    run_all(pool, [pickle.dumps([])])
    inherited = pool._idle[0]
    pool._pid = -1
    assert run_all(pool, [pickle.dumps([])]) == {0: []}
    assert pool.started == 2 and inherited.alive and inherited not in pool._idle
    inherited.close()


def test_a_worker_starts_without_importing_jax_or_the_public_api():
    """The worker loads only the subpackages it unpickles and runs: prism_jax's ``__init__`` (jax, the
    frontend, the API) would add over a second to every worker's start."""
    executable, *rest = worker_module.command()
    started = subprocess.run([executable, "-X", "importtime", *rest], input=b"", capture_output=True, timeout=120)
    assert started.returncode == 0, started.stderr.decode()[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in started.stderr.decode().splitlines() if "|" in line}
    assert "prism_jax.search.enumerate" in imported
    assert not {"jax", "prism_jax.api", "prism_jax.frontend"} & imported
