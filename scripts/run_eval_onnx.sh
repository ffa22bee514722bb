#!/usr/bin/env bash
# Evaluate an exported ONNX model with onnxruntime on a COCO validation split (eval_onnx.py in the
# foreground; the COCO table is shown and copied to eval_onnx/log.txt).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat >&2 <<'USAGE'
Usage: bash scripts/run_eval_onnx.sh <DATA_PATH> <COCO_ROOT> <ONNX_MODEL_PATH> [<INSTANCES_SET>] [<DEVICE_TARGET>] [<CONFIG_PATH>] [--key value ...](optional)
  3 to 6 arguments. COCO_ROOT is relative to DATA_PATH unless absolute (as the config's coco_root).
  INSTANCES_SET default 'annotations/instances_{}.json'; DEVICE_TARGET CPU (default) or GPU (onnxruntime's
  CUDA provider, needs onnxruntime-gpu); CONFIG_PATH default config/ssd300_config_cpu.yaml, the config the
  model was exported with. --key value pairs after the arguments override the config (as in eval_onnx.py).
  Any exported batch size works. Writes eval_onnx/ in the repository root (or in $SSD_RUN_DIR).
  e.g. bash scripts/run_eval_onnx.sh ./data coco_ori ssd.onnx 'annotations/instances_{}.json' CPU config/ssd300_config_cpu.yaml
USAGE
  exit 2
}

split_args "$@"
expect_positional 3 4 5 6
require_python
data_path="$(abs_path "${POSITIONAL[0]}")"
coco_root="${POSITIONAL[1]}"
model="$(abs_path "${POSITIONAL[2]}")"
require_file "$model" ONNX_MODEL_PATH
instances_set="${POSITIONAL[3]:-annotations/instances_{\}.json}"
device_target="${POSITIONAL[4]:-CPU}"
config_path="${POSITIONAL[5]:-$SSD_ROOT/config/ssd300_config_cpu.yaml}"
resolve_config "$config_path"
config_path="$CONFIG_FILE"

output="$SSD_RUN_DIR/eval_onnx"
mkdir -p "$output"
echo "evaluating $model with onnxruntime ($device_target); log: $output/log.txt"
cd "$SSD_ROOT" || exit 1
"$SSD_PYTHON" eval_onnx.py --config_path="$config_path" --dataset=coco --data_path="$data_path" \
  --coco_root="$coco_root" --instances_set="$instances_set" --file_name="$model" --device_target="$device_target" \
  --output_path="$output" "${OVERRIDES[@]}" 2>&1 | tee -a "$output/log.txt"
