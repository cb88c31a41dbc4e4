"""The import direction of docs/architecture.md, held by walking every module's imports."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "prism_jax"

# what each layer may import from the package (itself always allowed)
ALLOWED = {
    "ir": set(),
    "workloads": set(),
    "native": set(),
    "cache": set(),
    "frontend": {"ir"},
    "verify": {"ir"},
    "cost": {"ir"},
    "codegen": {"ir", "frontend", "cost", "native", "cache"},  # frontend: to_jax; cache: the kernel dir
    "search": {"ir", "verify", "cost", "cache"},
    "tune": {"ir", "frontend", "codegen", "cost", "native", "cache"},
    "api": {"ir", "frontend", "verify", "search", "cost", "codegen", "tune", "native", "workloads", "cache"},
    "__init__": {"ir", "frontend", "verify", "search", "cost", "codegen", "tune", "api", "native", "cache"},
    "__main__": {"cli"},
    "cli": {"ir", "frontend", "verify", "search", "cost", "codegen", "tune", "api", "workloads", "native", "cache"},
}
FORBIDDEN_THIRD_PARTY = {"ir": {"jax", "jaxlib", "egglog", "flax"},
                         "cache": {"jax", "jaxlib", "egglog", "flax", "numpy", "sympy"}}
EGGLOG_ONLY_IN = {"verify"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        layer = rel.parts[0].removesuffix(".py")
        yield path, layer


def _imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; use absolute prism_jax.* imports")


@pytest.mark.parametrize("path,layer", list(_modules()), ids=lambda x: str(x).split("prism_jax/")[-1])
def test_imports_go_downward(path, layer):
    assert layer in ALLOWED, f"{path}: layer '{layer}' is not in the layering table; add it to docs and here"
    for name in _imports(path):
        parts = name.split(".")
        assert not name.startswith("jax._src"), f"{path} imports {name}: use public JAX API"
        if parts[0] == "prism_jax" and len(parts) > 1:
            target = parts[1]
            assert target == layer or target in ALLOWED[layer], f"{path} ({layer}) must not import prism_jax.{target}"
            assert target != "cli" or layer == "__main__", f"{path}: nothing imports the CLI"
        assert parts[0] not in FORBIDDEN_THIRD_PARTY.get(layer, set()), f"{path} ({layer}) must not import {parts[0]}"
        if parts[0] == "egglog":
            assert layer in EGGLOG_ONLY_IN, f"{path}: egglog is only used in prism_jax/verify"


def test_ir_runs_without_jax(tmp_path):
    """Importing the IR must not pull jax in (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = "import sys, prism_jax.ir.graph, prism_jax.ir.interpreter; assert 'jax' not in sys.modules, 'jax imported'"
    # import the subpackage without the top-level package's eager imports
    result = subprocess.run([sys.executable, "-c", "import importlib, sys, types; "
                             f"sys.path.insert(0, {str(PACKAGE.parent)!r}); "
                             "pkg = types.ModuleType('prism_jax'); pkg.__path__ = "
                             f"[{str(PACKAGE)!r}]; sys.modules['prism_jax'] = pkg; " + code],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
