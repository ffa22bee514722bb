#!/usr/bin/env bash
# Evaluate a checkpoint with the COCO protocol on a GPU; eval.py runs in the foreground, its output
# (the COCO table) shown and copied to eval<DEVICE_ID>/log.txt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat >&2 <<'USAGE'
Usage: bash scripts/run_eval_gpu.sh [DATASET] [CHECKPOINT_PATH] [DEVICE_ID] [CONFIG_PATH] [--key value ...](optional)
  4 arguments; passes --device_target=GPU as the seed did. --key value pairs after the arguments override
  the config and that option (e.g. --device_target CPU on a machine without GPU); relative paths inside the
  config and in overrides are taken from the repository root.
  Writes eval<DEVICE_ID>/ in the repository root (or in $SSD_RUN_DIR): log.txt, eval_detections.json, log/.
  e.g. bash scripts/run_eval_gpu.sh coco LOG/ckpt_0/ssd-500_458.ckpt 0 config/ssd300_config_gpu.yaml
USAGE
  exit 2
}

split_args "$@"
expect_positional 4
eval_args "${POSITIONAL[@]}"
run_eval "${POSITIONAL[2]}" "${EVAL_ARGS[@]}" --device_target=GPU "${OVERRIDES[@]}"
