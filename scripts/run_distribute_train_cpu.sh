#!/usr/bin/env bash
# Data-parallel training on CPU worker processes of this machine with msrun (MindSpore's own TCP
# collectives): the launch path of run_distribute_train_gpu.sh, runnable without accelerators.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat >&2 <<'USAGE'
Usage: bash scripts/run_distribute_train_cpu.sh [DEVICE_NUM] [EPOCH_SIZE] [LR] [DATASET] [CONFIG_PATH] [PRE_TRAINED](optional) [PRE_TRAINED_EPOCH_SIZE](optional) [--key value ...](optional)
  5 or 7 arguments. Starts DEVICE_NUM CPU workers on this machine with msrun (a free port is picked);
  each trains on its 1/DEVICE_NUM of the MindRecord and the gradients are averaged. LR is used as given,
  batch_size is per worker (the global batch is printed). Rank 0 creates the MindRecord if needed, the
  other ranks wait for it. --key value pairs after the arguments override the config (as in train.py);
  relative paths inside the config and in overrides are taken from the repository root.
  Writes LOG/ in the repository root (or in $SSD_RUN_DIR): msrun_log/worker_<rank>.log, log/,
  ckpt_0/ (checkpoints of rank 0; every rank's ckpt_<rank>/ with --save_ckpt_all_ranks True).
  e.g. bash scripts/run_distribute_train_cpu.sh 2 6 0.01 coco config/ssd300_demo_config_cpu.yaml
USAGE
  exit 2
}

split_args "$@"
expect_positional 5 7
train_args "${POSITIONAL[@]}"
run_msrun "${POSITIONAL[0]}" "$SSD_RUN_DIR/LOG" "${TRAIN_ARGS[@]}" --device_target=CPU "${OVERRIDES[@]}"
