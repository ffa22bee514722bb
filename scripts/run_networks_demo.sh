#!/usr/bin/env bash
# Every network on CPU with its 81-class COCO config: set-up, a small demo set whose shapes carry COCO
# names (sports ball, tv, kite, airplane), then per network 2 training steps and a COCO evaluation.
#   bash scripts/run_networks_demo.sh [model_name ...]     (default: all five; ~6 min on 2 CPU cores)
# Shows that train.py and eval.py run end to end for each network; 2 steps learn nothing, so the
# COCO table reads ~0. For a demo that learns, see scripts/run_demo.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# batch 2 over 4 training images = 2 steps (the configs' own batch of 4-8 would need more images and time)
batch=2
num_train=4
num_val=4

usage() {
  echo "Usage: bash scripts/run_networks_demo.sh [model_name ...]"
  echo "  model_name: ${all_networks[*]:-a network of src/models/registry.py} (default: all)"
}
for name in "$@"; do
  case "$name" in
    -h|--help) usage; exit 0 ;;
  esac
done

bash "$root/scripts/setup_env.sh"
cd "$root"
py="${SSD_VENV:-$root/.venv}/bin/python"

# model_name -> its CPU config, read from the network registry (one record per network)
declare -A config_of=()
all_networks=()
while read -r name config; do
  config_of[$name]="$config"
  all_networks+=("$name")
done < <("$py" -c 'from src.models.registry import CONFIG_DIR, NETWORKS
for name, record in NETWORKS.items():
    print(name, record.cpu_config_path.relative_to(CONFIG_DIR.parent))')
[ ${#all_networks[@]} -gt 0 ] || { echo "could not read the network registry (src/models/registry.py)" >&2; exit 1; }
for name in "$@"; do
  if [ -z "$name" ] || [ -z "${config_of[$name]+set}" ]; then
    echo "unknown model_name '$name'" >&2
    usage >&2
    exit 2
  fi
done
networks=("$@")
[ ${#networks[@]} -gt 0 ] || networks=("${all_networks[@]}")
data_root="demo_data/coco_named"
output_root="output/networks_demo"

echo "[networks] demo shapes with COCO names in $data_root/coco"
"$py" -m src.data.demo_data --root "$data_root/coco" --num_train "$num_train" --num_val "$num_val" --seed 0 --coco_names

failed=()
for name in "${networks[@]}"; do
  output="$output_root/$name"
  common=(--config_path "${config_of[$name]}" --data_path "$data_root" --coco_root coco
          --mindrecord_dir MindRecord --batch_size "$batch" --eval_batch_size "$batch" --feature_extractor_base_param "")
  checkpoint="$output/ckpt_0/ssd-1_$((num_train / batch)).ckpt"
  echo "[networks] $name: training 2 steps with ${config_of[$name]} (log in $output/log/)"
  if "$py" train.py "${common[@]}" --output_path "$output" --epoch_size 1 --save_checkpoint_epochs 1 --log_interval 1 \
      && echo "[networks] $name: evaluating $checkpoint" \
      && "$py" eval.py "${common[@]}" --output_path "$output/eval" --checkpoint_file_path "$checkpoint"; then
    echo "[networks] $name: done"
  else
    echo "[networks] $name: FAILED (see the messages above)" >&2
    failed+=("$name")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "[networks] failed: ${failed[*]}" >&2
  exit 1
fi
echo "[networks] trained and evaluated: ${networks[*]}"
