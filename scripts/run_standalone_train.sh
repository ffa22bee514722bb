#!/usr/bin/env bash
# Train on one device (the seed's launcher): train.py creates the MindRecord on first use and runs in
# the foreground, its output shown and appended to LOG<DEVICE_ID>/log.txt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat >&2 <<'USAGE'
Usage: bash scripts/run_standalone_train.sh [DEVICE_ID] [EPOCH_SIZE] [LR] [DATASET] [CONFIG_PATH] [PRE_TRAINED](optional) [PRE_TRAINED_EPOCH_SIZE](optional) [--key value ...](optional)
  5 or 7 arguments. PRE_TRAINED is a whole-detector checkpoint to start from, PRE_TRAINED_EPOCH_SIZE the
  epoch its learning-rate schedule resumes at. --key value pairs after the arguments override the config
  (as in train.py). Relative paths inside the config and in overrides are taken from the repository root.
  Writes LOG<DEVICE_ID>/ in the repository root (or in $SSD_RUN_DIR): log.txt, log/, ckpt_0/ (checkpoints).
  e.g. bash scripts/run_standalone_train.sh 0 500 0.05 coco config/ssd300_config.yaml
       bash scripts/run_standalone_train.sh 0 60 0.05 coco config/ssd300_config_cpu.yaml /path/ssd-100_458.ckpt 40
USAGE
  exit 2
}

split_args "$@"
expect_positional 5 7
train_args "${POSITIONAL[@]}"
device_id="${POSITIONAL[0]}"
require_device_id "$device_id"
output="$SSD_RUN_DIR/LOG$device_id"
mkdir -p "$output"
export DEVICE_ID="$device_id" RANK_ID=0 RANK_SIZE=1
echo "training on device $device_id; log: $output/log.txt, checkpoints: $output/ckpt_0/"
cd "$SSD_ROOT"
"$SSD_PYTHON" train.py "${TRAIN_ARGS[@]}" --device_id="$device_id" --output_path="$output" "${OVERRIDES[@]}" \
  2>&1 | tee -a "$output/log.txt"  # -a: a refused or resumed run never wipes the earlier run's console log
