"""The demo (the README's main command) runs as a test, at small shapes."""

import pytest

from prism_jax.cli import main


@pytest.fixture(autouse=True)
def private_cache(run_shared_dir, monkeypatch):
    """One cache for the run's workers: the swiglu demo finds the Prism-set demo's search of swiglu."""
    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(run_shared_dir("demo-cache")))


@pytest.mark.slow
def test_demo_superoptimizes_the_prism_set_and_hits_the_cache_second(capsys):
    assert main(["demo", "--small", "--quiet", "--time-limit", "6"]) == 0
    first = capsys.readouterr().out
    for name in ("rmsnorm_matmul", "rmsnorm_mlp", "swiglu", "attention", "qknorm_attention"):
        assert name in first
    assert "MISMATCH" not in first and "H100 est." in first and "egraph" in first and "native CPU kernels" in first
    assert main(["demo", "--small", "--quiet", "--time-limit", "6"]) == 0
    second = capsys.readouterr().out
    rows = [line for line in second.splitlines() if line.startswith(("rmsnorm", "swiglu", "attention", "qknorm"))]
    assert len(rows) == 5 and all(" hit " in row for row in rows), second


def test_demo_prints_the_chosen_sgraph_of_a_workload(capsys):
    assert main(["demo", "--small", "--workload", "swiglu", "--time-limit", "6"]) == 0
    out = capsys.readouterr().out
    # both matmuls and the SiLU in one custom kernel (printed whether it runs or XLA won the timing)
    kernel = out[out.index("custom_kernel"):]
    assert kernel.count("= matmul(") == 2 and "logistic(" in kernel


def test_version(capsys):
    assert main(["version"]) == 0
    assert "jax 0.11.2" in capsys.readouterr().out
