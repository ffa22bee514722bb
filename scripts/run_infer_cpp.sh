#!/usr/bin/env bash
# C++ inference end to end: build the runner (only if needed), run it over a folder of images, score its
# result files with postprocess.py and print the mAP.
#   bash scripts/run_infer_cpp.sh MODEL_PATH DATA_PATH [DVPP] [CONFIG_PATH] [DEVICE_TYPE] [DEVICE_ID]
# DEVICE_TYPE CPU runs the cpu build, whose engine is OpenVINO when the build found it (the venv's openvino
# wheel; ONNX or IR) and OpenCV DNN otherwise; CPP_BACKEND=opencv (or openvino) in the environment picks one.
usage() {
  cat >&2 <<'TEXT'
usage: bash scripts/run_infer_cpp.sh MODEL_PATH DATA_PATH [DVPP] [CONFIG_PATH] [DEVICE_TYPE] [DEVICE_ID]
  MODEL_PATH   model from export.py: ONNX or OpenVINO IR (.xml, its .bin beside it) for DEVICE_TYPE CPU,
               MINDIR for Ascend310
  DATA_PATH    folder of the evaluation images (those of the config's validation annotations)
  DVPP         DVPP or CPU: where the Ascend310 decodes and resizes images (default CPU; ignored for CPU)
  CONFIG_PATH  the config the model was exported with (default config/ssd300_config_cpu.yaml)
  DEVICE_TYPE  CPU (default; OpenVINO, or OpenCV DNN when built without OpenVINO) or Ascend310 (alias Ascend;
               MindSpore C++ API)
  DEVICE_ID    Ascend device id (default 0)
environment:
  CPP_BACKEND  openvino or opencv: the CPU engine (default: OpenVINO when the runner was built with it)
  MISSING_AS_EMPTY=1  score ground-truth images without result files as having no detections (a partial folder)
Writes result_Files/, time_Result/, build.log, infer.log, acc.log and postprocess.py's detections json and
per-class AP csv in the current directory.
TEXT
  exit 2
}
set -euo pipefail
[ $# -ge 2 ] && [ $# -le 6 ] || usage
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${SSD_VENV:-$root/.venv}/bin/python"
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
model="$(absolute "$1")"
data="$(absolute "$2")"
dvpp="${3:-CPU}"
config_arg="${4:-config/ssd300_config_cpu.yaml}"
config="$config_arg"
device_type="${5:-CPU}"
device_id="${6:-0}"
[ -f "$config" ] || config="$root/$config"   # like load_config: a relative path is also looked up in the repo
config="$(absolute "$config")"

case "$dvpp" in DVPP|CPU) ;; *) echo "DVPP must be DVPP or CPU, got '$dvpp'" >&2; usage ;; esac
case "$device_type" in
  CPU) backend=cpu ;;
  Ascend310|Ascend) device_type=Ascend310; backend=ascend310 ;;
  *) echo "DEVICE_TYPE must be CPU or Ascend310, got '$device_type'" >&2; usage ;;
esac
cpp_backend="${CPP_BACKEND:-}"
case "$cpp_backend" in
  ""|openvino|opencv) ;;
  *) echo "CPP_BACKEND must be openvino or opencv, got '$cpp_backend'" >&2; usage ;;
esac
if [ "$backend" = ascend310 ] && [ -n "$cpp_backend" ]; then
  echo "CPP_BACKEND picks a CPU engine; DEVICE_TYPE Ascend310 runs MindSpore (unset CPP_BACKEND)" >&2; usage
fi
[[ "$device_id" =~ ^[0-9]+$ ]] || { echo "DEVICE_ID must be a non-negative integer, got '$device_id'" >&2; usage; }
[ -f "$model" ] || { echo "[infer] model file $model not found; export it with export.py (--file_format ONNX for CPU, MINDIR for Ascend310)" >&2; exit 1; }
[ -d "$data" ] || { echo "[infer] image folder $data not found" >&2; exit 1; }
[ -f "$config" ] || { echo "[infer] config file $config_arg not found" >&2; exit 1; }
[ -x "$py" ] || { echo "[infer] $py not found: run bash scripts/setup_env.sh first" >&2; exit 1; }
if [ "$backend" = cpu ] && [ "$dvpp" = DVPP ]; then
  echo "[infer] DVPP applies to Ascend310 only: the CPU runner decodes and resizes with OpenCV (DVPP argument ignored)"
  dvpp=CPU
fi

echo "[infer] building the $backend runner (only what changed)"
bash "$root/ascend310_infer/build.sh" "$backend" > build.log 2>&1 || { cat build.log >&2; echo "[infer] build failed (build.log)" >&2; exit 1; }
sed -n 's/^\[build\] SSD runner backend: /[infer] runner backend: /p' build.log

# the network input size comes from the config through the project's YAML loader
shape="$(cd "$root" && "$py" -c '
import sys
from src.model_utils.config import ConfigError, load_config
try:
    height, width = load_config(sys.argv[1]).img_shape
except ConfigError as error:
    sys.exit(f"[infer] {error}")
print(int(height), int(width))' "$config")"
read -r height width <<< "$shape"

rm -rf result_Files time_Result
echo "[infer] running $(basename "$model") on $data (${height}x${width}, $device_type, preprocessing $dvpp); log: infer.log"
engine_args=()
if [ -n "$cpp_backend" ]; then engine_args=(--backend "$cpp_backend"); fi
# OpenVINO obeys oneDNN's ISA cap too (bf16 cannot compile under AVX2, INT8 loses VNNI): the runner runs without it
env -u ONEDNN_MAX_CPU_ISA "$root/ascend310_infer/out/main" --model_path "$model" --dataset_path "$data" --device_type "$device_type" \
  --device_id "$device_id" --cpu_dvpp "$dvpp" --image_height "$height" --image_width "$width" \
  --output_dir "$PWD/result_Files" --timing_dir "$PWD/time_Result" "${engine_args[@]}" 2>&1 | tee infer.log

echo "[infer] scoring result_Files with postprocess.py; log: acc.log"
results="$PWD/result_Files"
score_args=(--output_path "$PWD")
if [ "${MISSING_AS_EMPTY:-0}" = 1 ]; then score_args+=(--missing_as_empty); fi
(cd "$root" && "$py" postprocess.py --config_path "$config" --result_path "$results" --img_path "$data" \
  "${score_args[@]}") 2>&1 | tee acc.log
echo "[infer] $(grep -m1 '^mAP:' acc.log)"
