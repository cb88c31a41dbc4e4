#!/usr/bin/env bash
# Run the test suite in the project venv (created/updated on demand).
#   bash scripts/test.sh                      # whole suite (tests/), parallel
#   bash scripts/test.sh tests/test_native.py -k capsule
# Extra arguments go to pytest.  Runs with pytest-xdist (-n auto) when more
# than one CPU is available and no -n/--numprocesses/-p no:xdist was given.
# Exit status is pytest's.
set -uo pipefail

# shellcheck source=scripts/_bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"

_pj_ncpu="$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo 1)"
# worksteal: an idle worker takes tests queued for a busy one (the slow tests run first, see
# tests/conftest.py, and would otherwise all sit in one worker's first batch)
_pj_xdist=(-n auto --dist worksteal)
if [ "${_pj_ncpu:-1}" -le 1 ]; then
  _pj_xdist=()
fi
for _pj_arg in "$@"; do
  case "$_pj_arg" in
    -n | -n* | --numprocesses | --numprocesses=* | no:xdist | -pno:xdist) _pj_xdist=() ;;
  esac
done

# Without arguments run from the repo root so pytest uses testpaths=["tests"];
# with arguments stay in the caller's directory so relative paths work.
if [ "$#" -eq 0 ]; then
  cd "$PRISM_JAX_REPO" || exit 1
fi

# --durations: the slowest tests listed at the end, to keep the suite within its time budget
"$PRISM_JAX_VENV_PYTHON" -m pytest -q --durations=25 ${_pj_xdist[@]+"${_pj_xdist[@]}"} "$@"
exit $?
