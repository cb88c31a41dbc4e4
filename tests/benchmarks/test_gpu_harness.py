"""benchmarks/gpu.py on CPU (its timing loop is prism_jax.tune.measure, tested there): the roofline helpers, the attention layout mapping, the
tables, the no-GPU exit and a --dry-run end to end (prism_jax in Pallas interpret mode)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prism_jax import workloads

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_harness():
    """benchmarks/ is not a package: load the script as a module (registered, for its dataclasses)."""
    spec = importlib.util.spec_from_file_location("benchmarks_gpu", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gpu = _load_harness()


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path / "prism-cache"))


def test_io_bytes_and_matmul_flops_rmsnorm_matmul():
    wl = workloads.get_workload("rmsnorm_matmul")
    shape = wl.shapes[0]  # n=8, d=1024
    args = wl.make_args(shape, jnp.bfloat16)
    # x [8,1024] + g [1024] + W [1024,1024] read, out [8,1024] written, 2 bytes each
    assert gpu.io_bytes(wl.fn, args) == 2 * (8 * 1024 + 1024 + 1024 * 1024 + 8 * 1024)
    assert gpu.matmul_flops(wl.fn, args) == 2 * 8 * 1024 * 1024


def test_matmul_flops_attention_and_gqa():
    wl = workloads.get_workload("attention")
    s = wl.small_prefill
    args = wl.make_args(s, jnp.float32)
    assert gpu.matmul_flops(wl.fn_for(s), args) == 2 * (2 * s.b * s.H * s.q * s.kv * s.D)
    gqa = workloads.get_workload("gqa")
    s = gqa.small
    assert gpu.matmul_flops(gqa.fn, gqa.make_args(s, jnp.float32)) == 2 * (2 * s.b * s.H * s.q * s.kv * s.D)


def test_copy_bandwidth_counts_read_and_write():
    bandwidth = gpu.copy_bandwidth(1 << 20, iterations=2, repeats=2, warmup=1)
    assert bandwidth["bytes_moved"] == 2 << 20
    assert bandwidth["bytes_per_s"] > 0 and bandwidth["max_bytes_per_s"] >= bandwidth["bytes_per_s"]


def test_net_time_roofline_and_speedups():
    overhead = gpu.Timing(1e-6, 1e-6, 1e-6, (1e-6,), 10, 1)
    xla = gpu.add_net_time({"implementation": "xla", "median_s": 5e-6, "notes": []}, overhead)
    fast = gpu.add_net_time({"implementation": "prism_jax", "median_s": 3e-6, "notes": []}, overhead)
    noise = gpu.add_net_time({"implementation": "cudnn", "median_s": 0.5e-6, "notes": []}, overhead)
    skipped = gpu.add_net_time({"implementation": "dpa_xla", "notes": ["why"]}, overhead)
    for row in (xla, fast, noise, skipped):
        gpu.add_roofline(row, nbytes=2_000_000, flops=4_000_000, copy_bytes_per_s=1e12, prefill=True)
    gpu.add_speedups([xla, fast, noise, skipped])
    assert fast["net_s"] == pytest.approx(2e-6)
    assert fast["copy_bw_fraction"] == pytest.approx(2e6 / 2e-6 / 1e12)
    assert fast["tflops"] == pytest.approx(4e6 / 2e-6 / 1e12)
    assert fast["speedup_vs_xla"] == pytest.approx(2.0) and fast["speedup_vs_xla_raw"] == pytest.approx(5 / 3)
    assert noise["net_s"] is None and noise["speedup_vs_xla"] is None and "no net time" in noise["notes"][-1]
    assert skipped["net_s"] is None and skipped["copy_bw_fraction"] is None and skipped["speedup_vs_xla"] is None


def test_measure_times_only_what_passes_its_numerics():
    settings = gpu.Settings("float32", iterations=2, repeats=2, warmup=1, dry_run=True, on_gpu=False,
                            backend="interpret", search_config=None)
    x = jnp.linspace(-1.0, 1.0, 16)
    expected = gpu.reference_output(jnp.sin, (x,))
    good = gpu.measure(gpu.Impl("good", jnp.sin, (x,)), expected, settings)
    bad = gpu.measure(gpu.Impl("bad", lambda a: jnp.sin(a) + 0.5, (x,)), expected, settings)
    skipped = gpu.measure(gpu.Impl("skipped", None, skip="why not"), expected, settings)
    assert good["status"] == "measured" and good["numerics"].startswith("ok") and good["median_s"] > 0
    assert bad["status"] == "failed" and bad["numerics"].startswith("FAILED") and "median_s" not in bad
    assert skipped["status"] == "skipped" and skipped["notes"] == ["why not"] and "median_s" not in skipped


def _row(implementation, **fields):
    base = {"workload": "attention", "shape_label": "b=1,H=2,q=4,kv=32,D=16", "dtype": "bfloat16",
            "implementation": implementation, "timing": gpu.DRY_RUN_LABEL, "notes": [], "numerics": "not run"}
    return {**base, **fields}


def test_markdown_table_renders_measured_and_skipped_rows():
    rows = [_row("xla", median_s=5e-6, min_s=4e-6, max_s=6e-6, net_s=4e-6, copy_bw_fraction=0.5, tflops=None,
                 speedup_vs_xla=1.0, speedup_vs_xla_raw=1.0, numerics="ok, max rel. error 1e-03"),
            _row("cudnn", notes=["cuDNN needs a GPU (dry run)"])]
    table = gpu.markdown_table(rows).splitlines()
    assert len(table) == 2 + len(rows)
    assert table[0].count("|") == table[2].count("|") == table[3].count("|")
    assert "| 5 (4–6) | 4 | 50% | - | 1.00×; 1.00× | ok, max rel. error 1e-03 |" in table[2]
    assert gpu.DRY_RUN_LABEL in table[3] and "not run" in table[3] and "cuDNN needs a GPU" in table[3]


def test_optimization_table_lists_prism_rows_only():
    optimization = {"build_s": 9.5, "second_build_s": 1.25, "second_build_cache_hit": True,
                    "regions": [{"uses_kernel": True, "search_tune_s": 9.4, "cache_hit": False,
                                 "search_cache_hit": True}]}
    table = gpu.optimization_table([_row("xla"), _row("prism_jax", optimization=optimization)]).splitlines()
    assert len(table) == 3
    assert table[2].endswith("| 1/1 | 9.40 | search hit | 9.50 | 1.25 (hit) |")


def test_plot_is_skipped_with_a_note_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    note = gpu.plot_speedups([_row("xla")], tmp_path / "p.png", "title")
    assert "matplotlib is not installed" in note and not (tmp_path / "p.png").exists()


def test_plot_is_written_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [_row("xla", speedup_vs_xla=1.0), _row("prism_jax", speedup_vs_xla=1.5), _row("cudnn")]
    assert "written" in gpu.plot_speedups(rows, tmp_path / "p.png", "title")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_device_slug():
    assert gpu.device_slug("NVIDIA H100 80GB HBM3") == "nvidia_h100_80gb_hbm3"
    assert gpu.device_slug("cpu") == "cpu"


CASES = [("attention", "small"), ("attention", "small_prefill"), ("gqa", "small"), ("qknorm_attention", "small")]


@pytest.mark.parametrize("name,which", CASES, ids=[f"{n}-{w}" for n, w in CASES])
def test_dot_product_attention_layout_matches_the_workload(name, which):
    """The mapping used for cuDNN, run with implementation="xla" (which runs here): same answer."""
    wl = workloads.get_workload(name)
    shape = getattr(wl, which)
    args = wl.make_args(shape, jnp.float32)
    impl = gpu.dpa_impl(wl, shape, args, "xla", "float32", on_gpu=False)
    got = impl.to_workload_layout(jax.jit(impl.fn)(*impl.args))
    np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jit(wl.fn_for(shape))(*args)), atol=2e-5, rtol=2e-5)


def test_cudnn_is_skipped_with_a_reason_where_it_cannot_run():
    wl = workloads.get_workload("attention")
    args = wl.make_args(wl.small, jnp.bfloat16)
    assert "needs a GPU" in gpu.dpa_impl(wl, wl.small, args, "cudnn", "bfloat16", on_gpu=False).skip
    assert "float16/bfloat16" in gpu.dpa_impl(wl, wl.small, args, "cudnn", "float32", on_gpu=True).skip


def test_without_gpu_main_says_so_and_exits_0(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(gpu, "has_gpu", lambda: False)
    assert gpu.main(["--workload", "rmsnorm_matmul", "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no GPU found (jax backend: ")
    assert "GPU figures cannot be measured here; use --dry-run to exercise the harness" in out
    assert not (tmp_path / "r.json").exists()


def test_script_without_gpu_exits_0():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py")], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("no GPU found (jax backend: cpu): GPU figures cannot be measured here; "
                                     "use --dry-run to exercise the harness")


@pytest.mark.slow
def test_dry_run_end_to_end(tmp_path, capsys):
    out = tmp_path / "results" / "gpu_dry.json"
    assert gpu.main(["--dry-run", "--workload", "rmsnorm_matmul", "--small", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    env, rows = data["environment"], data["results"]
    assert env["dry_run"] is True and env["prism_backend"] == "interpret"
    assert env["command"].endswith("benchmarks/gpu.py --dry-run --workload rmsnorm_matmul --small --out " + str(out))
    for key in ("device", "versions", "git", "date", "l2", "copy_bandwidth"):
        assert env[key]
    assert env["copy_bandwidth"]["bytes_per_s"] > 0
    assert [r["implementation"] for r in rows] == ["xla", "prism_jax"]
    for r in rows:
        assert r["timing"] == gpu.DRY_RUN_LABEL
        assert r["status"] == "measured" and r["numerics"].startswith("ok")
        assert r["min_s"] <= r["median_s"] <= r["max_s"] and r["bytes"] > 0
    prism = rows[1]
    assert prism["optimization"]["second_build_cache_hit"] is True
    assert prism["optimization"]["regions"] and prism["optimization"]["regions"][0]["uses_kernel"]
    table = out.with_suffix(".md").read_text()
    assert "DRY RUN" in table and gpu.DRY_RUN_LABEL in table and "| prism_jax |" in table
    assert "results:" in capsys.readouterr().out
