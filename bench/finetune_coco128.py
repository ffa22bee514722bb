"""The fine-tuning recipe on real images: SSD300-MobileNetV2 from ImageNet weights on coco128, 96 train / 32 val.

Usage: .venv/bin/python bench/finetune_coco128.py [--epochs 40] [--lr 0.05] [--images 128] [--work DIR]
       [--coco128 ../shared/data/coco128] [--backbone FILE]

What a user with a small data set of their own does, with the project's own commands:

1. a deterministic split of the one coco128 folder: image ids sorted, every fourth image to
   validation (96 / 32 of 128), written as two COCO folders (``train2017``/``val2017`` of
   symbolic links and their ``instances_*.json``) under ``--work``;
2. ``check_dataset.py`` on the training split (its summary and anchor-coverage lines are printed;
   the report is in ``<run>/dataset_check/``);
3. torchvision's ImageNet MobileNetV2 converted once (to ``--backbone``, default in ``--work``) by
   ``convert_torchvision_backbone.py`` (offline: the weights come from an installed package);
4. ``train.py`` with ``config/ssd300_config_cpu.yaml``, the backbone and ``--epochs``;
5. ``eval.py --checkpoint_file_path <last checkpoint>`` without ``--config_path``: the run's
   config.yaml beside the checkpoint is found.

Prints the machine, the COCO AP and AP50 on the 32 validation images and the wall time of each
step. The default (40 epochs at lr 0.05: AP 0.014, AP50 0.021) takes about 20 minutes on 2 cores.
``--images 16`` keeps only the
first 16 images (12 / 4) for a quick check that the recipe runs end to end (e.g. ``--epochs 1``).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine_info import describe_machine  # noqa: E402

CONFIG = ROOT / "config" / "ssd300_config_cpu.yaml"
DEFAULT_COCO128 = ROOT.parent / "shared" / "data" / "coco128"
#: Every VAL_EVERY-th image (by sorted id) goes to validation: 32 of 128.
VAL_EVERY = 4
#: Warm-up and batch of the recipe (the demo's: ImageNet backbone, batch 8 on one device); --lr sets the peak rate.
RECIPE = ["--warmup_epochs", "1", "--batch_size", "8", "--eval_batch_size", "8"]


def split_coco(source: Path, target: Path, images: int) -> tuple[int, int]:
    """Write ``target``/train2017, val2017 (links to the images) and their annotation files; the two sizes."""
    data = json.loads((source / "annotations" / "instances_train2017.json").read_text())
    chosen = sorted(data["images"], key=lambda image: image["id"])[:images]
    parts = {"val2017": chosen[VAL_EVERY - 1::VAL_EVERY]}
    val_ids = {image["id"] for image in parts["val2017"]}
    parts["train2017"] = [image for image in chosen if image["id"] not in val_ids]
    (target / "annotations").mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        folder = target / name
        folder.mkdir(exist_ok=True)
        for image in part:
            link = folder / image["file_name"]
            if not link.exists():
                link.symlink_to((source / "train2017" / image["file_name"]).resolve())
        ids = {image["id"] for image in part}
        subset = {**data, "images": part, "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}
        (target / "annotations" / f"instances_{name}.json").write_text(json.dumps(subset))
    return len(parts["train2017"]), len(parts["val2017"])


def run(step: str, *args: str) -> tuple[str, float]:
    """Run a project script; its output and wall time. A failure prints its last lines and stops the bench."""
    started = time.time()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.time() - started
    if done.returncode:
        sys.exit(f"{step} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    print(f"{step}: {seconds:.0f} s", flush=True)
    return done.stdout + done.stderr, seconds


def coco_numbers(eval_output: str) -> tuple[float, float]:
    """AP and AP50 from the COCO summary eval.py prints."""
    numbers = {}
    for line in eval_output.splitlines():
        found = re.search(r"Average Precision\s+\(AP\) @\[ IoU=([0-9.:]+)\s+\| area=\s*all .*= ([-0-9.]+)", line)
        if found:
            numbers.setdefault(found.group(1), float(found.group(2)))
    return numbers["0.50:0.95"], numbers["0.50"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--images", type=int, default=128, help="use the first N images of coco128 (by id)")
    parser.add_argument("--lr", default="0.05", help="peak learning rate")
    parser.add_argument("--work", type=Path, default=ROOT / "output" / "bench_finetune_coco128")
    parser.add_argument("--coco128", type=Path, default=DEFAULT_COCO128)
    parser.add_argument("--backbone", type=Path, help="ImageNet MobileNetV2 .ckpt (default: converted into --work)")
    args = parser.parse_args()
    args.backbone = args.backbone or args.work / "mobilenet_v2_imagenet.ckpt"
    print(describe_machine("pycocotools"), flush=True)
    run_dir = args.work / f"run_{args.images}img_{args.epochs}ep_lr{args.lr}"
    if run_dir.exists():
        sys.exit(f"{run_dir} exists (an earlier bench run); remove it or pass another --work")
    num_train, num_val = split_coco(args.coco128, args.work / "coco128", args.images)
    print(f"split: {num_train} train / {num_val} val images (every {VAL_EVERY}th by image id to val)", flush=True)
    data_args = ["--config_path", str(CONFIG), "--data_path", str(args.work), "--coco_root", "coco128",
                 "--mindrecord_dir", f"MindRecord_{args.images}", "--output_path", str(run_dir)]
    check, _ = run("check_dataset.py", "check_dataset.py", *data_args)
    print("\n".join(line.split("] ", 1)[-1] for line in check.splitlines()
                    if "dataset check" in line or "anchor coverage" in line), flush=True)
    if not args.backbone.is_file():
        run("backbone conversion", "convert_torchvision_backbone.py", "--output", str(args.backbone))
    _, train_seconds = run(
        f"train.py ({args.epochs} epochs)", "train.py", *data_args, "--epoch_size", str(args.epochs), "--save_checkpoint_epochs", str(args.epochs), "--run_eval", "False",
        "--feature_extractor_base_param", str(args.backbone.resolve()), "--lr", args.lr, *RECIPE)
    checkpoint = next((run_dir / "ckpt_0").glob(f"ssd-{args.epochs}_*.ckpt"))
    output, eval_seconds = run("eval.py (checkpoint only)", "eval.py", "--checkpoint_file_path", str(checkpoint))
    ap, ap50 = coco_numbers(output)
    print(f"ssd300 MobileNetV2 (ImageNet backbone), coco128 {num_train} train / {num_val} val, {args.epochs} epochs: "
          f"AP {ap:.4f}, AP50 {ap50:.4f}; train {train_seconds:.0f} s, eval {eval_seconds:.0f} s; "
          f"checkpoint {checkpoint}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
