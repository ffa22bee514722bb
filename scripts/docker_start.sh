#!/usr/bin/env bash
# Start an interactive container of the SSD image with a data and a model folder mounted.
#   bash scripts/docker_start.sh [--cpu] [IMAGE] [DATA_DIR] [MODEL_DIR]
# Default (as in the model zoo): an Ascend host; every /dev/davinciN, the Ascend management devices,
# the driver and add-ons folders and the NPU log folders are passed in. --cpu: no devices (the image
# built from the Dockerfile as is). DATA_DIR and MODEL_DIR are mounted at the same paths inside, so
# absolute paths in configs work unchanged.
set -euo pipefail
usage() {
  echo "Usage: bash scripts/docker_start.sh [--cpu] [IMAGE] [DATA_DIR] [MODEL_DIR]"
  echo "  --cpu      start without Ascend devices (default: Ascend host, mounts /dev/davinci* and the driver)"
  echo "  IMAGE      image built from the Dockerfile, e.g. ssd:cpu"
  echo "  DATA_DIR   existing dataset folder, mounted at the same path"
  echo "  MODEL_DIR  existing folder for checkpoints and outputs, mounted at the same path"
  echo "Example: bash scripts/docker_start.sh --cpu ssd:cpu /data /models"
}
device="ascend"
if [ "${1:-}" = "--cpu" ]; then
  device="cpu"
  shift
fi
if [ $# -ne 3 ]; then
  usage >&2
  exit 2
fi
image="$1"
data_dir="$(realpath -m "$2")"
model_dir="$(realpath -m "$3")"
for folder in "$data_dir" "$model_dir"; do
  if [ ! -d "$folder" ]; then
    echo "docker_start.sh: $folder is not an existing folder (create it, or pass the right path)" >&2
    exit 1
  fi
done
if ! command -v docker >/dev/null 2>&1; then
  echo "docker_start.sh: the docker command was not found; install Docker first" >&2
  exit 1
fi

options=(--rm -it --ipc=host -v "$data_dir:$data_dir" -v "$model_dir:$model_dir")
if [ "$device" = "ascend" ]; then
  shopt -s nullglob
  npus=(/dev/davinci[0-9]*)
  if [ ${#npus[@]} -eq 0 ]; then
    echo "docker_start.sh: no /dev/davinci* devices on this host; on a CPU machine use --cpu" >&2
    exit 1
  fi
  for npu in "${npus[@]}" /dev/davinci_manager /dev/devmm_svm /dev/hisi_hdc; do
    options+=(--device="$npu")
  done
  options+=(-v /usr/local/Ascend/driver:/usr/local/Ascend/driver:ro)
  for folder in /usr/local/Ascend/add-ons /var/log/npu; do
    if [ -d "$folder" ]; then
      options+=(-v "$folder:$folder")
    fi
  done
fi
exec docker run "${options[@]}" "$image" /bin/bash
