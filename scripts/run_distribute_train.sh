#!/usr/bin/env bash
# Data-parallel training on the Ascend devices of this machine: one process per device with an HCCL
# rank table (the seed's way), or msrun when no rank table is given.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat >&2 <<'USAGE'
Usage: bash scripts/run_distribute_train.sh [DEVICE_NUM] [EPOCH_SIZE] [LR] [DATASET] [RANK_TABLE_FILE] [CONFIG_PATH] [PRE_TRAINED](optional) [PRE_TRAINED_EPOCH_SIZE](optional) [--key value ...](optional)
  6 or 8 arguments. RANK_TABLE_FILE is an HCCL rank table json: one train.py per device i with DEVICE_ID=i,
  RANK_ID=i, writing LOG<i>/ (log.txt, env.log with the launch variables, log/, ckpt_<i>/). Pass "none" instead to launch with msrun
  (a free port is picked), writing LOG/ (msrun_log/worker_<rank>.log, log/, ckpt_0/). The device type comes
  from the config (Ascend in config/*_config.yaml). Rank 0 creates the MindRecord if needed, the other ranks
  wait for it. LR is used as given, batch_size is per device (the global batch is printed). --key value pairs
  after the arguments override the config (as in train.py); relative paths inside the config and in
  overrides are taken from the repository root. Run folders go to the repository root (or $SSD_RUN_DIR).
  e.g. bash scripts/run_distribute_train.sh 8 500 0.05 coco /path/hccl_8p.json config/ssd300_config.yaml
       bash scripts/run_distribute_train.sh 8 500 0.05 coco none config/ssd300_config.yaml
USAGE
  exit 2
}

split_args "$@"
expect_positional 6 8
device_num="${POSITIONAL[0]}"
rank_table="${POSITIONAL[4]}"
train_args "${POSITIONAL[@]:0:4}" "${POSITIONAL[@]:5}"
if [[ "$rank_table" == "none" ]]; then
  run_msrun "$device_num" "$SSD_RUN_DIR/LOG" "${TRAIN_ARGS[@]}" "${OVERRIDES[@]}"
  exit
fi

rank_table="$(abs_path "$rank_table")"
require_file "$rank_table" "RANK_TABLE_FILE (pass none to launch with msrun)"
export RANK_TABLE_FILE="$rank_table" RANK_SIZE="$device_num"
cd "$SSD_ROOT"
pids=()
for ((rank = 0; rank < device_num; rank++)); do
  output="$SSD_RUN_DIR/LOG$rank"
  mkdir -p "$output"
  (
    export DEVICE_ID="$rank" RANK_ID="$rank"
    env | grep -E '^(RANK_|DEVICE_|HCCL_|ASCEND_|MS_|PATH=|LD_LIBRARY_PATH=)' > "$output/env.log" || true
    exec "$SSD_PYTHON" train.py "${TRAIN_ARGS[@]}" --run_distribute=True --device_num="$device_num" \
      --device_id="$rank" --output_path="$output" "${OVERRIDES[@]}" >> "$output/log.txt" 2>&1
  ) &
  pids+=("$!")
done
echo "started $device_num ranks with rank table $rank_table; logs in $SSD_RUN_DIR/LOG<rank>/log.txt"
echo "  follow rank 0 with: tail -f $SSD_RUN_DIR/LOG0/log.txt; checkpoints: $SSD_RUN_DIR/LOG0/ckpt_0/"
status=0
for rank in "${!pids[@]}"; do
  if ! wait "${pids[$rank]}"; then
    echo "rank $rank failed: see $SSD_RUN_DIR/LOG$rank/log.txt" >&2
    status=1
  fi
done
exit "$status"
