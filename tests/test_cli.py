"""The demo (the README's main command) runs as a test, at small shapes."""

from prism_jax.cli import main


def test_demo_traces_every_workload_exactly(capsys):
    assert main(["demo", "--small", "--quiet"]) == 0
    out = capsys.readouterr().out
    for name in ("rmsnorm_matmul", "qknorm_attention", "gqa", "ntrans"):
        assert name in out
    assert "MISMATCH" not in out


def test_demo_prints_the_ir_of_a_chosen_workload(capsys):
    assert main(["demo", "--small", "--workload", "swiglu"]) == 0
    out = capsys.readouterr().out
    assert "kernel_graph swiglu.region0" in out and "matmul" in out


def test_version(capsys):
    assert main(["version"]) == 0
    assert "jax 0.11.2" in capsys.readouterr().out
