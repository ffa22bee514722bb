#!/usr/bin/env bash
# Set up the environment (once) and run the test suite: bash scripts/run_tests.sh [pytest args]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
exec "${SSD_VENV:-$root/.venv}/bin/python" -m pytest tests -q "$@"
