#!/usr/bin/env bash
# Set up (or reuse) the development environment for prism_jax:
#   * find a Python 3.12 interpreter,
#   * create <repo>/.venv with it (recreated if it is not Python 3.12),
#   * `pip install -e ".[dev]"` (scikit-build-core editable install, which also
#     builds the C++ extension prism_jax._native).
#
# Idempotent: the install is skipped when nothing that affects the build
# changed (hash of pyproject.toml, CMakeLists.txt, csrc/**, this script, the
# interpreter version and $PRISM_JAX_CUDA, kept in .venv/.prism_jax_bootstrap_stamp) AND the
# compiled extension of this checkout is present and loads.
#
# Usage:  source scripts/_bootstrap.sh     (from another bash script)
#         bash scripts/_bootstrap.sh       (just set things up)
#
# Environment knobs:
#   PRISM_JAX_PYTHON=/path/to/python3.12   interpreter to build the venv from
#   PRISM_JAX_FORCE_REINSTALL=1            reinstall even if the stamp matches
#   PRISM_JAX_CUDA=AUTO|ON|OFF             CUDA probe build mode (CMakeLists.txt)
#
# After sourcing, PRISM_JAX_REPO and PRISM_JAX_VENV_PYTHON are set.

_pj_die() {
  printf 'prism_jax bootstrap: ERROR: %s\n' "$*" >&2
  exit 1
}

_pj_note() {
  printf 'prism_jax bootstrap: %s\n' "$*" >&2
}

# True if "$1" runs and is CPython 3.12.
_pj_is_py312() {
  [ -n "$1" ] || return 1
  "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)' >/dev/null 2>&1
}

# Absolute path of the real interpreter behind "$1" (resolves pyenv shims).
_pj_real_python() {
  "$1" -c 'import sys; print(sys.executable)' 2>/dev/null
}

_pj_pyenv_root() {
  local root=""
  if command -v pyenv >/dev/null 2>&1; then
    root="$(pyenv root 2>/dev/null)" || root=""
  fi
  [ -n "$root" ] || root="${PYENV_ROOT:-$HOME/.pyenv}"
  printf '%s\n' "$root"
}

_pj_find_python312() {
  local cand root v exe
  # 1. explicit choice
  if [ -n "${PRISM_JAX_PYTHON:-}" ]; then
    if _pj_is_py312 "$PRISM_JAX_PYTHON"; then
      _pj_real_python "$PRISM_JAX_PYTHON"
      return 0
    fi
    _pj_die "PRISM_JAX_PYTHON=$PRISM_JAX_PYTHON does not run or is not Python 3.12."
  fi
  # 2. python3.12 / python3 on PATH, if they actually run (pyenv shims may not)
  for cand in python3.12 python3; do
    if command -v "$cand" >/dev/null 2>&1 && _pj_is_py312 "$cand"; then
      _pj_real_python "$cand"
      return 0
    fi
  done
  # 3. pyenv installs, newest 3.12.x first
  root="$(_pj_pyenv_root)"
  if [ -d "$root/versions" ]; then
    while IFS= read -r cand; do
      [ -n "$cand" ] || continue
      if _pj_is_py312 "$cand"; then
        _pj_real_python "$cand"
        return 0
      fi
    done < <(ls -d "$root"/versions/3.12*/bin/python3 2>/dev/null | sort -V -r)
  fi
  # 4. pyenv-selected versions (PYENV_VERSION=3.12.x pyenv exec python3)
  if command -v pyenv >/dev/null 2>&1; then
    while IFS= read -r v; do
      [ -n "$v" ] || continue
      exe="$(PYENV_VERSION="$v" pyenv exec python3 -c 'import sys; print(sys.executable)' 2>/dev/null)" || continue
      if _pj_is_py312 "$exe"; then
        printf '%s\n' "$exe"
        return 0
      fi
    done < <(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.|$)' | sort -V -r)
  fi
  return 1
}

# Hash of everything that affects the build/install.
_pj_stamp_hash() {
  local repo="$1" pyver="$2"
  (
    cd "$repo" || exit 1
    printf 'python=%s cuda=%s\n' "$pyver" "${PRISM_JAX_CUDA:-}"
    find pyproject.toml CMakeLists.txt csrc scripts/_bootstrap.sh -type f -print0 2>/dev/null |
      LC_ALL=C sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -d' ' -f1
}

# Succeeds if the venv has prism-jax installed (editable) from THIS checkout and
# its compiled extension loads.  Does not import prism_jax/__init__.py.
_pj_extension_ok() {
  local venv_py="$1" repo="$2"
  (cd / && "$venv_py" - "$repo" >/dev/null 2>&1) <<'PYEOF'
import importlib.machinery, importlib.metadata as md, importlib.util, json, os, sys
from pathlib import Path
repo = Path(sys.argv[1]).resolve()
dist = md.distribution("prism-jax")
# editable install of this very checkout?
du = dist.read_text("direct_url.json")
info = json.loads(du) if du else {}
url = info.get("url", "")
if not url.startswith("file://") or Path(url[len("file://"):]).resolve() != repo:
    sys.exit(1)
if not info.get("dir_info", {}).get("editable", False):
    sys.exit(1)
# locate the extension through the installed files (redirect editable mode
# installs it in site-packages) and load it without importing the package
suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
so = [f for f in (dist.files or []) if f.name.startswith("_native.") and str(f).endswith(suffixes)]
if not so:
    sys.exit(1)
path = Path(dist.locate_file(so[0])).resolve()
spec = importlib.util.spec_from_file_location("prism_jax._native", path)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
assert mod.perf_counter_ns() > 0
PYEOF
}

_pj_bootstrap() {
  local repo venv venv_py py pyver stamp_file want have log lockfd
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)" || _pj_die "cannot locate the repository root"
  venv="$repo/.venv"
  venv_py="$venv/bin/python"
  mkdir -p "$repo/build"
  log="$repo/build/bootstrap.log"

  # Serialize concurrent bootstraps of the same checkout (parallel test runs).
  if command -v flock >/dev/null 2>&1; then
    exec {lockfd}>"$repo/build/.bootstrap.lock"
    flock "$lockfd"
  fi

  # --- venv -----------------------------------------------------------------
  if [ -x "$venv_py" ] && _pj_is_py312 "$venv_py"; then
    :
  else
    py="$(_pj_find_python312)" || py=""
    if [ -z "$py" ]; then
      _pj_die "no Python 3.12 interpreter found (tried \$PRISM_JAX_PYTHON, python3.12 and python3 on PATH, $(_pj_pyenv_root)/versions/3.12*, pyenv). Install one (e.g. \`pyenv install 3.12\`) or point PRISM_JAX_PYTHON at it, then re-run."
    fi
    if [ -e "$venv" ]; then
      _pj_note "$venv is not a working Python 3.12 venv; recreating it with $py"
    else
      _pj_note "creating $venv with $py"
    fi
    "$py" -m venv --clear "$venv" >"$log" 2>&1 || {
      cat "$log" >&2
      _pj_die "\`$py -m venv $venv\` failed (is the venv/ensurepip module installed for that Python?)"
    }
    "$venv_py" -m pip install -q --upgrade pip >>"$log" 2>&1 || {
      tail -n 50 "$log" >&2
      _pj_die "could not upgrade pip in $venv (see $log)"
    }
  fi

  # --- editable install ---------------------------------------------------------
  pyver="$("$venv_py" -c 'import sys; print(sys.version.split()[0])')"
  stamp_file="$venv/.prism_jax_bootstrap_stamp"
  want="$(_pj_stamp_hash "$repo" "$pyver")"
  have="$(cat "$stamp_file" 2>/dev/null || true)"
  if [ "${PRISM_JAX_FORCE_REINSTALL:-0}" != "1" ] && [ "$want" = "$have" ] &&
    _pj_extension_ok "$venv_py" "$repo"; then
    :  # up to date
  else
    _pj_note "installing prism_jax (editable, with the C++ extension) into $venv; log: $log"
    rm -f "$stamp_file"
    {
      # Build requirements go into the venv itself: the editable install is
      # built without isolation so re-installs reuse build/<tag> incrementally.
      "$venv_py" -m pip install \
        "scikit-build-core>=0.10" "pybind11>=2.12" "cmake>=3.18" "ninja" &&
        (cd "$repo" && "$venv_py" -m pip install --no-build-isolation -e ".[dev]")
    } >"$log" 2>&1 || {
      tail -n 150 "$log" >&2
      _pj_die "\`pip install -e .[dev]\` failed (full log: $log). Fix the error above and re-run; set PRISM_JAX_CUDA=OFF to skip the CUDA probe."
    }
    _pj_extension_ok "$venv_py" "$repo" ||
      _pj_die "install finished but prism_jax._native does not load from $venv (log: $log). Try: PRISM_JAX_FORCE_REINSTALL=1 bash scripts/_bootstrap.sh"
    printf '%s\n' "$want" >"$stamp_file"
  fi

  if [ -n "${lockfd:-}" ]; then
    exec {lockfd}>&-
  fi
  PRISM_JAX_REPO="$repo"
  PRISM_JAX_VENV_PYTHON="$venv_py"
  export PRISM_JAX_REPO PRISM_JAX_VENV_PYTHON
}

_pj_bootstrap
