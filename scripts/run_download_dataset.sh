#!/usr/bin/env bash
# Download COCO 2017 (train/val images + annotations, 19 GB) into <data_path>/<coco_root> of CONFIG_FILE,
# in the foreground with progress bars. Re-running resumes a partial download and skips what is already
# unpacked; offline it stops at once and lists the files to fetch elsewhere.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat >&2 <<'USAGE'
Usage: bash scripts/run_download_dataset.sh [DATASET] [CONFIG_FILE] [--key value ...](optional)
  DATASET      coco (the only dataset this script downloads)
  CONFIG_FILE  config whose data_path and coco_root give the target folder; relative data paths in it
               are taken from the repository root
  --key value  options of download_dataset.py: --data_path, --coco_root, --base_url, --timeout,
               --retries, --remove_archives
  e.g. bash scripts/run_download_dataset.sh coco config/ssd300_config_cpu.yaml
USAGE
  exit 2
}

split_args "$@"
expect_positional 2
config_path="$(abs_path "${POSITIONAL[1]}")"
require_file "$config_path" CONFIG_FILE
require_python
cd "$SSD_ROOT"
exec "$SSD_PYTHON" download_dataset.py --dataset "${POSITIONAL[0]}" --config_path "$config_path" "${OVERRIDES[@]}"
