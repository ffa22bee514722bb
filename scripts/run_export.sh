#!/usr/bin/env bash
# Export a checkpoint for deployment with export.py; the file is written to the current directory.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat >&2 <<'USAGE'
Usage: bash scripts/run_export.sh [CONFIG_PATH] [FILE_FORMAT] [CKPT] [BATCH_SIZE](optional) [--key value ...](optional)
  FILE_FORMAT: MINDIR, ONNX or AIR (AIR only with an Ascend config). BATCH_SIZE is the fixed batch of the
  exported graph, default 1 (not the config's training batch_size). Writes <file_name>.<format> in the
  current directory (file_name from the config, default "ssd"; override with --file_name NAME).
  e.g. bash scripts/run_export.sh config/ssd300_config_cpu.yaml ONNX output/ckpt_0/ssd-60_458.ckpt 1
USAGE
  exit 2
}

split_args "$@"
expect_positional 3 4
require_python
config_path="${POSITIONAL[0]}"
resolve_config "$config_path"
config_path="$CONFIG_FILE"
checkpoint="$(abs_path "${POSITIONAL[2]}")"
require_file "$checkpoint" CKPT
args=(--config_path="$config_path" --file_format="${POSITIONAL[1]}" --checkpoint_file_path="$checkpoint")
if [[ ${#POSITIONAL[@]} -eq 4 ]]; then
  args+=(--batch_size="${POSITIONAL[3]}")
fi
"$SSD_PYTHON" "$SSD_ROOT/export.py" "${args[@]}" "${OVERRIDES[@]}"
