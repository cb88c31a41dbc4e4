#!/usr/bin/env bash
# Run the prism_jax demo in the project venv (created/updated on demand).
#   bash scripts/demo.sh [demo options...]
set -uo pipefail

# shellcheck source=scripts/_bootstrap.sh
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"

exec "$PRISM_JAX_VENV_PYTHON" -m prism_jax demo "$@"
