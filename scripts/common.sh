#!/usr/bin/env bash
# Shared by the launchers in scripts/ that source it (run_standalone_train.sh, run_distribute_train*.sh,
# run_eval*.sh, run_download_dataset.sh): repository root, the project's python, argument splitting and
# the msrun launch. Run on its own it only prints this usage note.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  echo "Usage: source scripts/common.sh from a launcher script (e.g. scripts/run_standalone_train.sh); it does nothing on its own" >&2
  exit 2
fi

SSD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SSD_BIN="${SSD_VENV:-$SSD_ROOT/.venv}/bin"
SSD_PYTHON="$SSD_BIN/python"
# msrun starts its workers as a plain `python`: the project's environment must come first on PATH.
export PATH="$SSD_BIN:$PATH"
# Run folders (LOG<id>/, LOG/, eval<id>/) go to the repository root as in the seed, or to SSD_RUN_DIR.
SSD_RUN_DIR="$(realpath -m -- "${SSD_RUN_DIR:-$SSD_ROOT}")"

# split_args ARGS...: POSITIONAL gets the leading arguments, OVERRIDES everything from the first
# `--key` on (passed to train.py / eval.py as config overrides after the script's own options).
split_args() {
  POSITIONAL=()
  while [[ $# -gt 0 && "$1" != --* ]]; do
    POSITIONAL+=("$1")
    shift
  done
  # shellcheck disable=SC2034  # read by the launcher that sources this file
  OVERRIDES=("$@")
}

# expect_positional COUNT...: stop with the launcher's usage unless POSITIONAL holds one of these counts.
expect_positional() {
  local count
  for count in "$@"; do
    if [[ ${#POSITIONAL[@]} -eq $count ]]; then
      return 0
    fi
  done
  usage
}

# abs_path PATH: absolute, relative to the caller's directory (the launchers then run from the root).
abs_path() {
  realpath -m -- "$1"
}

# require_file PATH WHAT: stop with one line when a file argument does not exist.
require_file() {
  if [[ ! -f "$1" ]]; then
    echo "error: $2 $1 is not a file" >&2
    exit 1
  fi
}

# require_device_id ID: stop with one line, before any folder named after it is made, unless ID is a device number.
require_device_id() {
  if [[ ! "$1" =~ ^[0-9]+$ ]]; then
    echo "error: DEVICE_ID $1 is not a device number (0, 1, ...)" >&2
    exit 2
  fi
}

# resolve_config PATH: the config file as an absolute path in CONFIG_FILE (stops when missing); a relative
# path not found from the current directory is looked up in the repository, as the config loader does.
resolve_config() {
  local path="$1"
  if [[ ! -f "$path" && -f "$SSD_ROOT/$path" ]]; then
    path="$SSD_ROOT/$path"
  fi
  CONFIG_FILE="$(abs_path "$path")"
  require_file "$CONFIG_FILE" CONFIG_PATH
}

# require_python: stop with the fix when the project's environment has not been set up yet.
require_python() {
  if [[ ! -x "$SSD_PYTHON" ]]; then
    echo "error: $SSD_PYTHON not found; set up the environment first: bash scripts/setup_env.sh" >&2
    exit 1
  fi
}

# train_args FIRST EPOCH_SIZE LR DATASET CONFIG_PATH [PRE_TRAINED PRE_TRAINED_EPOCH_SIZE]: the seed's
# training arguments as train.py options in TRAIN_ARGS (FIRST, the device id or count, is left to the
# caller; the paths are made absolute and checked).
train_args() {
  local pre_trained
  require_python
  resolve_config "$5"
  TRAIN_ARGS=(--config_path="$CONFIG_FILE" --epoch_size="$2" --lr="$3" --dataset="$4")
  if [[ $# -eq 7 ]]; then
    pre_trained="$(abs_path "$6")"
    require_file "$pre_trained" PRE_TRAINED
    TRAIN_ARGS+=(--pre_trained="$pre_trained" --pre_trained_epoch_size="$7")
  fi
}

# eval_args DATASET CHECKPOINT_PATH DEVICE_ID CONFIG_PATH: the seed's evaluation arguments as eval.py
# options in EVAL_ARGS (the paths are made absolute and checked).
eval_args() {
  local checkpoint
  require_python
  checkpoint="$(abs_path "$2")"
  require_file "$checkpoint" CHECKPOINT_PATH
  resolve_config "$4"
  # shellcheck disable=SC2034  # read by the launcher that sources this file
  EVAL_ARGS=(--config_path="$CONFIG_FILE" --dataset="$1" --checkpoint_file_path="$checkpoint" --device_id="$3")
}

# run_eval DEVICE_ID EVAL_PY_ARGS...: eval.py in the foreground, its output appended to eval<DEVICE_ID>/log.txt.
run_eval() {
  local device_id="$1"
  shift
  require_device_id "$device_id"
  local output="$SSD_RUN_DIR/eval$device_id"
  mkdir -p "$output"
  export DEVICE_ID="$device_id" DEVICE_NUM=1 RANK_ID=0 RANK_SIZE=1
  echo "evaluating on device $device_id; log: $output/log.txt, detections: $output/eval_detections.json"
  cd "$SSD_ROOT" || exit 1
  "$SSD_PYTHON" eval.py --output_path="$output" "$@" 2>&1 | tee -a "$output/log.txt"  # -a: earlier runs' logs stay
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now (for msrun's scheduler).
free_port() {
  "$SSD_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run_msrun DEVICE_NUM OUTPUT_DIR TRAIN_ARGS...: data-parallel train.py on DEVICE_NUM workers of this
# machine, in the foreground; returns msrun's exit status (non-zero when any worker failed).
run_msrun() {
  local device_num="$1" output="$2"
  shift 2
  local port
  port="$(free_port)"
  mkdir -p "$output"
  echo "msrun: $device_num workers on this machine, scheduler port $port"
  echo "  worker logs: $output/msrun_log/worker_<rank>.log (follow with: tail -f $output/msrun_log/worker_0.log)"
  echo "  rank logs:   $output/log/train_rank<rank>.log"
  echo "  checkpoints: $output/ckpt_0/ (every rank's own ckpt_<rank>/ with --save_ckpt_all_ranks True)"
  cd "$SSD_ROOT" || exit 1
  if ! "$SSD_BIN/msrun" --worker_num="$device_num" --local_worker_num="$device_num" --master_addr=127.0.0.1 \
    --master_port="$port" --log_dir="$output/msrun_log" --join=True --cluster_time_out=300 \
    train.py --run_distribute=True --device_num="$device_num" --output_path="$output" "$@"; then
    echo "error: the distributed run failed; each worker's error is at the end of $output/msrun_log/worker_<rank>.log" >&2
    return 1
  fi
}
