"""examples/quickstart.ipynb runs as a test: its code cells in order, in one namespace (as a kernel would),
and the last expression of the report cell renders as HTML."""

import ast
import json
import pathlib

import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PRISM_JAX_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "notebook-cache"))


def run_cell(source: str, namespace: dict):
    """Execute a cell; return the value of its last expression (what the notebook would display)."""
    tree = ast.parse(source)
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    exec(compile(tree, "<cell>", "exec"), namespace)
    return eval(compile(ast.Expression(last.value), "<cell>", "eval"), namespace) if last else None


@pytest.mark.slow
def test_quickstart_notebook_runs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    namespace: dict = {}
    shown = [run_cell("".join(c["source"]), namespace) for c in cells if c["cell_type"] == "code"]
    assert shown[2] < 1e-4  # superoptimized vs jax.jit
    assert "<table>" in shown[3]._repr_html_() and "kernel" in shown[3]._repr_html_()
    assert shown[4] == ((8, 256), (2, 8, 512))
