#!/usr/bin/env bash
# The built-in demo, end to end on CPU: set-up, synthetic data, MindRecord, training, COCO evaluation.
#   bash scripts/run_demo.sh
# Idempotent: a second run reuses the environment, the data, the MindRecord and a finished training.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
py="${SSD_VENV:-$root/.venv}/bin/python"
config="config/ssd300_demo_config_cpu.yaml"

# data_path, coco_root, epoch_size, output_path and the backbone weights come from the config, so this script stays in step with it
read -r data_root epochs output backbone < <("$py" - "$config" <<'PY'
import sys
from src.model_utils.config import load_config
c = load_config(sys.argv[1])
print(f"{c.data_path}/{c.coco_root}", c.epoch_size, c.output_path, c.feature_extractor_base_param)
PY
)
echo "[demo] synthetic shapes data in $data_root"
"$py" -m src.data.demo_data --root "$data_root" --num_train 1000 --num_val 200 --seed 0
if [ ! -f "$backbone" ]; then
  echo "[demo] converting torchvision's ImageNet MobileNetV2 weights to $backbone"
  "$py" convert_torchvision_backbone.py --output "$backbone"
fi

last_ckpt() { ls "$output"/ckpt_0/ssd-"$epochs"_*.ckpt 2>/dev/null | head -n 1; }
newest_ckpt() { ls -t "$output"/ckpt_0/ssd-*_*.ckpt 2>/dev/null | head -n 1; }
if [ -z "$(last_ckpt)" ]; then
  resume=()
  if [ -n "$(newest_ckpt)" ]; then  # an interrupted demo training goes on where it stopped
    resume=(--resume "$(newest_ckpt)")
    echo "[demo] resuming the interrupted training from $(newest_ckpt)"
  elif [ -f "$output/metrics_rank0.csv" ]; then  # stopped before its first checkpoint: nothing to resume
    stamp="$(date +%Y%m%d-%H%M%S)"
    mv "$output/metrics_rank0.csv" "$output/metrics_rank0.interrupted-$stamp.csv"
    echo "[demo] the earlier training stopped before its first checkpoint; its metrics are kept as" \
      "$output/metrics_rank0.interrupted-$stamp.csv"
  fi
  echo "[demo] training ($epochs epochs; progress bar below, log in $output/log/)"
  "$py" train.py --config_path "$config" "${resume[@]}"
else
  echo "[demo] reusing the finished training run: $(last_ckpt)"
fi
echo "[demo] evaluating $(last_ckpt) on the demo validation images"
"$py" eval.py --config_path "$config" --checkpoint_file_path "$(last_ckpt)"
mapfile -t sample_images < <(ls "$data_root"/val2017/*.jpg | head -n 4)
echo "[demo] drawing the detections on ${#sample_images[@]} validation images"
"$py" predict.py --config_path "$config" --model "$(last_ckpt)" --input "${sample_images[@]}" \
  --output_dir "$output/predict" --exist_ok  # a second demo run draws them again
echo "[demo] look at: $output/predict/ (drawn images, detections.json), $output/curves.png (loss, lr, mAP)," \
  "$output/eval_per_class_ap.csv (AP per class)"
