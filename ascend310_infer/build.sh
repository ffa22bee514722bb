#!/usr/bin/env bash
# Configure and build the SSD inference runner into ascend310_infer/out/main; make recompiles only what changed.
#   bash ascend310_infer/build.sh                              cpu build: OpenVINO and OpenCV DNN engines, picked
#                                                              at run time with main --backend openvino|opencv
#   bash ascend310_infer/build.sh ascend310 [MINDSPORE_PATH]   Ascend310 backend: MindSpore C++ API runs the MINDIR
# cpu: OpenVINO's CMake package comes from OpenVINO_DIR in the environment, else from the openvino wheel of the
# project's venv (${SSD_VENV:-<repo>/.venv}: <site-packages>/openvino/cmake); without either the runner is built
# with OpenCV DNN only (the configure line printed below names the engines in).
# MINDSPORE_PATH (argument or environment) defaults to the folder of the installed mindspore-ascend
# (else mindspore) Python package; it must hold include/api/model.h, which only the Ascend toolkit's
# MindSpore ships.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build_dir="$here/out"
backend="${1:-cpu}"
usage="usage: bash ascend310_infer/build.sh [cpu | ascend310 [MINDSPORE_PATH]]"

# OpenVINO's CMake folder in the wheel of the project's venv; empty when the venv has no openvino.
venv_openvino_dir() {
  local python="${SSD_VENV:-$(dirname "$here")/.venv}/bin/python" package
  [ -x "$python" ] || return 0
  package="$("$python" -c 'import openvino, os; print(os.path.dirname(openvino.__file__))' 2>/dev/null)" || return 0
  if [ -f "$package/cmake/OpenVINOConfig.cmake" ]; then echo "$package/cmake"; fi
}

cmake_args=(-DBACKEND="$backend")
case "$backend" in
  cpu)
    [ $# -le 1 ] || { echo "$usage" >&2; exit 2; }
    openvino_dir="${OpenVINO_DIR:-$(venv_openvino_dir)}"
    if [ -n "$openvino_dir" ]; then cmake_args+=(-DOpenVINO_DIR="$openvino_dir"); fi ;;
  ascend310)
    [ $# -le 2 ] || { echo "$usage" >&2; exit 2; }
    mindspore_path="${2:-${MINDSPORE_PATH:-}}"
    if [ -z "$mindspore_path" ]; then
      for package in mindspore-ascend mindspore; do
        location="$(python3 -m pip show "$package" 2>/dev/null | sed -n 's/^Location: //p')" || location=""
        if [ -n "$location" ]; then mindspore_path="$location/mindspore"; break; fi
      done
    fi
    # an empty path is passed on: CMake stops with the explanation
    cmake_args+=(-DMINDSPORE_PATH="$mindspore_path") ;;
  *)
    echo "$usage" >&2; exit 2 ;;
esac

for tool in cmake make g++; do
  command -v "$tool" >/dev/null || { echo "[build] $tool not found: run bash scripts/setup_env.sh (installs cmake g++ make libopencv-dev)" >&2; exit 1; }
done
mkdir -p "$build_dir"
if ! cmake -S "$here" -B "$build_dir" "${cmake_args[@]}" > "$build_dir/configure.log" 2>&1; then
  cat "$build_dir/configure.log" >&2
  echo "[build] configuring the $backend runner failed (log: $build_dir/configure.log)" >&2
  exit 1
fi
sed -n 's/^-- \(SSD runner backend: .*\)/[build] \1/p; s/^-- \(OpenVINO.s CMake package not found.*\)/[build] \1/p' \
  "$build_dir/configure.log"
cmake --build "$build_dir" -j "$(nproc)"
echo "[build] $build_dir/main ($backend backend)"
