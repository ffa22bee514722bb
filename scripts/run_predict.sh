#!/usr/bin/env bash
# Draw a model's detections on your images with predict.py (checkpoint, MINDIR or ONNX; an image, a folder or
# a glob); the drawn images, detections.json and the log go to OUTPUT_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat >&2 <<'USAGE'
Usage: bash scripts/run_predict.sh [CONFIG_PATH] [MODEL] [INPUT] [OUTPUT_DIR](optional) [--key value ...](optional)
  MODEL: a train.py checkpoint (.ckpt) or an export.py file (.mindir, .onnx) of the network in CONFIG_PATH.
  INPUT: an image, a folder of images, or a glob pattern in quotes ('photos/*.jpg').
  OUTPUT_DIR: drawn images, detections.json (COCO results) and log/; default predict/ in the repository root
  (or in $SSD_RUN_DIR). Options after the arguments: --score_threshold S, --max_boxes K, --classes "name,name",
  --draw_threshold D, or any config key (relative paths inside the config are taken from the repository root).
  e.g. bash scripts/run_predict.sh config/ssd300_demo_config_cpu.yaml output/demo/ckpt_0/ssd-4_125.ckpt demo_data/coco/val2017
USAGE
  exit 2
}

split_args "$@"
expect_positional 3 4
require_python
config_path="${POSITIONAL[0]}"
resolve_config "$config_path"
config_path="$CONFIG_FILE"
model="$(abs_path "${POSITIONAL[1]}")"
require_file "$model" MODEL
input="$(abs_path "${POSITIONAL[2]}")"  # a glob stays a pattern: predict.py expands it
output="$SSD_RUN_DIR/predict"
if [[ ${#POSITIONAL[@]} -eq 4 ]]; then
  output="$(abs_path "${POSITIONAL[3]}")"
fi
cd "$SSD_ROOT"
"$SSD_PYTHON" predict.py --config_path="$config_path" --model="$model" --input="$input" --output_dir="$output" \
  --output_path="$output" "${OVERRIDES[@]}"
