#!/usr/bin/env bash
# Data-parallel training on the GPUs of this machine with msrun (NCCL), as the seed's mpirun launcher did.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat >&2 <<'USAGE'
Usage: bash scripts/run_distribute_train_gpu.sh [DEVICE_NUM] [EPOCH_SIZE] [LR] [DATASET] [CONFIG_PATH] [PRE_TRAINED](optional) [PRE_TRAINED_EPOCH_SIZE](optional) [--key value ...](optional)
  5 or 7 arguments. Starts DEVICE_NUM workers on this machine's GPUs with msrun (a free port is picked;
  NCCL collectives); each trains on its 1/DEVICE_NUM of the MindRecord and the gradients are averaged.
  As in the seed it passes --device_target=GPU --loss_scale=1. LR is used as given, batch_size is per
  GPU (the global batch is printed). Rank 0 creates the MindRecord if needed, the other ranks wait for it.
  --key value pairs after the arguments override the config (as in train.py); relative paths inside
  the config and in overrides are taken from the repository root. Without GPUs use run_distribute_train_cpu.sh.
  Writes LOG/ in the repository root (or in $SSD_RUN_DIR): msrun_log/worker_<rank>.log, log/,
  ckpt_0/ (checkpoints of rank 0; every rank's ckpt_<rank>/ with --save_ckpt_all_ranks True).
  e.g. bash scripts/run_distribute_train_gpu.sh 8 500 0.05 coco config/ssd300_config_gpu.yaml
USAGE
  exit 2
}

split_args "$@"
expect_positional 5 7
train_args "${POSITIONAL[@]}"
run_msrun "${POSITIONAL[0]}" "$SSD_RUN_DIR/LOG" "${TRAIN_ARGS[@]}" --device_target=GPU --loss_scale=1 "${OVERRIDES[@]}"
