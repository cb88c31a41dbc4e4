"""benchmarks/cpu.py: the interleaved timer, the read-bandwidth probe, speedups and the summary against the
targets, the tables, and a --quick run end to end (native kernels against jax.jit)."""

import importlib.util
import json
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_harness():
    """benchmarks/ is not a package: load the script as a module (registered, for its dataclasses)."""
    spec = importlib.util.spec_from_file_location("benchmarks_cpu", ROOT / "benchmarks" / "cpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cpu = _load_harness()


def test_time_interleaved_counts_every_call_of_every_function():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn(x):
            calls[name] += 1
            return x + 1
        return fn

    timings = cpu.time_interleaved({"a": make("a"), "b": make("b")}, (jnp.ones(4),), iterations=3, repeats=2, warmup=2)
    assert calls == {"a": 2 + 6, "b": 2 + 6}
    for t in timings.values():
        assert t["calls"] == 6 and t["repeats"] == 2 and len(t["round_medians_s"]) == 2
        assert 0 < t["min_s"] <= t["median_s"] <= t["max_s"]


def test_settled_timing_runs_each_function_untimed_right_before_its_timed_call():
    order = []

    def make(name):
        def fn(x):
            order.append(name)
            return x + 1
        return fn

    timings = cpu.time_interleaved({"a": make("a"), "b": make("b")}, (jnp.ones(4),), iterations=2, repeats=1, warmup=1,
                                   settle=True)
    assert order == ["a", "b"] + ["a", "a", "b", "b"] * 2
    assert all(t["calls"] == 2 for t in timings.values())  # the untimed runs are not counted


def test_read_bandwidth_names_the_fastest_reader():
    bandwidth = cpu.read_bandwidth(1 << 20, calls=2, warmup=1)
    assert bandwidth["array_bytes"] == 1 << 20
    assert set(bandwidth["readers"]) == {"jnp.sum", "row sums", "numpy sum"}
    best = max(r["bytes_per_s"] for r in bandwidth["readers"].values())
    assert bandwidth["bytes_per_s"] == best > 0


def _row(impl, workload="rmsnorm_matmul", dtype="float32", suite="prism", **fields):
    return {"workload": workload, "shape_label": "n=8,d=1024", "dtype": dtype, "suite": suite,
            "implementation": impl, "bytes": 1000, **fields}


def test_speedups_and_summary_against_the_targets():
    rows = []
    for workload, dtype, prism_s in (("rmsnorm_matmul", "float32", 1e-6), ("swiglu", "bfloat16", 4e-6)):
        pair = [_row("xla", workload, dtype, median_s=2e-6, min_s=2e-6, read_bw_fraction=0.3),
                _row("prism_jax", workload, dtype, median_s=prism_s, min_s=prism_s, read_bw_fraction=0.8)]
        cpu.add_speedups(pair)
        rows += pair
    rows.append(_row("prism_jax", "gqa", suite="mirage", numerics="FAILED"))  # no speed figure
    summary = cpu.summarize(rows)
    assert summary["prism_set"]["geomean_speedup"] == pytest.approx(1.0)  # sqrt(2 * 0.5)
    assert summary["prism_set_by_dtype"]["float32"]["geomean_speedup"] == pytest.approx(2.0)
    assert summary["mirage_set"] == {"geomean_speedup": None, "rows": 0, "rows_without_speed_figure": 1}
    assert not summary["speedup_target_met"]
    assert summary["read_bw_fraction"]["prism_jax"]["rows_at_target"] == 2 and summary["bandwidth_target_met"]


def test_roofline_bounds_each_row_by_bytes_or_matmul_flops():
    """1000 bytes at 1e9 B/s is 1 us; 4000 FLOPs at 1e9 FLOP/s is 4 us: compute-bound, floor 4 us -- unless
    the row is bfloat16 on a host with a bfloat16 dot product, which gets no compute floor."""
    row = _row("prism_jax", matmul_flops=4000, median_s=8e-6)
    fields = cpu.roofline(row, 1e9, 1e9, native_bf16_dot=False)
    assert fields["bound"] == "compute" and fields["floor_s"] == pytest.approx(4e-6)
    assert fields["roofline_fraction"] == pytest.approx(0.5) and fields["read_bw_fraction"] == pytest.approx(0.125)
    assert cpu.roofline({**row, "matmul_flops": 500}, 1e9, 1e9, False)["bound"] == "memory"
    native = cpu.roofline({**row, "dtype": "bfloat16"}, 1e9, 1e9, native_bf16_dot=True)
    assert native["bound"] == "memory" and native["compute_floor_s"] is None and native["floor_s"] == pytest.approx(1e-6)
    assert cpu.roofline({**row, "dtype": "bfloat16"}, 1e9, 1e9, native_bf16_dot=False)["bound"] == "compute"


def test_bandwidth_target_counts_memory_bound_rows_only():
    rows = [_row("prism_jax", "lora", bound="compute", median_s=1e-6, read_bw_fraction=0.3, roofline_fraction=0.9),
            _row("prism_jax", "gqa", bound="memory", median_s=1e-6, read_bw_fraction=0.75, roofline_fraction=0.75)]
    summary = cpu.summarize(rows)
    assert summary["read_bw_fraction"]["prism_jax"]["rows"] == 1 and summary["bandwidth_target_met"]
    assert summary["compute_bound_rows"] == ["lora float32"]
    assert summary["roofline_fraction"]["prism_jax"] == {"median": pytest.approx(0.825), "rows": 2}
    rows[1]["read_bw_fraction"] = 0.6
    assert not cpu.summarize(rows)["bandwidth_target_met"]


def test_fma_peak_sums_one_thread_per_core():
    peak = cpu.fma_peak(0.02)
    assert peak["threads"] >= 1 and len(peak["per_thread_flop_per_s"]) == peak["threads"]
    assert peak["flop_per_s"] == pytest.approx(sum(peak["per_thread_flop_per_s"])) and peak["flop_per_s"] > 1e8


def test_markdown_table_has_one_line_per_workload_shape_and_dtype():
    rows = [_row("xla", median_s=2e-6, min_s=1e-6, numerics="ok"),
            _row("prism_jax", median_s=1e-6, min_s=1e-6, speedup_vs_xla=2.0, speedup_vs_xla_min=1.0,
                 regions="region0: kernel", numerics="ok")]
    table = cpu.markdown_table(rows).splitlines()
    assert len(table) == 3 and table[0].count("|") == table[2].count("|")
    assert "2.00×; 1.00×" in table[2] and "region0: kernel" in table[2]


def test_cpu_info_reports_model_cores_caches_and_isa():
    info = cpu.cpu_info()
    assert info["model"] and info["cores_available"] >= 1
    assert isinstance(info["isa"], list) and "kernel_compiler" in info


def test_quick_run_end_to_end(tmp_path):
    out = tmp_path / "cpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu.py"), "--quick", "--workload",
                           "rmsnorm_matmul", "--dtype", "float32", "--cache-dir", str(tmp_path / "cache"),
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    env = result["environment"]
    assert env["cpu"]["model"] and env["read_bandwidth"]["bytes_per_s"] > 0 and env["versions"]
    assert env["fma_peak"]["flop_per_s"] > 0
    impls = {r["implementation"]: r for r in result["results"]}
    assert set(impls) == {"xla", "prism_jax"}
    for row in impls.values():
        assert row["numerics"].startswith("ok") and row["median_s"] > 0
        assert row["bound"] in ("memory", "compute") and row["floor_s"] >= row["memory_floor_s"] > 0
    assert impls["prism_jax"]["optimization"]["second_build_cache_hit"]
    assert "geometric-mean speedup" in proc.stdout
    assert out.with_suffix(".md").exists()
