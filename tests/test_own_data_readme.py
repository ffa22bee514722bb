"""The README's "Train on your own data" commands, run as written for YOLO, COCO and VOC.

The same small set of images is written in the three layouts the README names, under a stand-in for
/data; each block's three commands (check, train, predict) then run in that folder with only the
paths rewritten and one epoch instead of the config's sixty. predict.py gets nothing but the
checkpoint, so this also shows that a run's checkpoint carries its config.
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import PROJECT_ROOT
from dataset_formats import write_coco, write_voc, write_yolo
from src.data.annotations import ConversionReport
from src.data.coco_reader import read_coco
from src.data.demo_data import DEMO_CLASSES, generate_demo_dataset

SECTION = "## Train on your own data"
SCRIPTS = ("check_dataset.py", "train.py", "predict.py")


def readme_blocks() -> list[list[str]]:
    """The bash blocks of the README section, one list of command lines per block."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return [block.strip().splitlines() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)]


def test_the_section_has_three_commands_per_format() -> None:
    blocks = readme_blocks()
    assert [line.split()[1] for block in blocks for line in block] == list(SCRIPTS) * 3
    assert [re.search(r"--dataset (\w+)", block[0]).group(1) for block in blocks] == ["yolo", "coco", "voc"]


def _write_layouts(data: Path) -> None:
    """The demo shapes as data/shapes (YOLO), data/shapes_coco and data/shapes_voc, as the README names them."""
    root = generate_demo_dataset(data.parent / "demo", num_train=16, num_val=8, image_size=128, seed=1)
    for split, coco_split, voc_split in (("train", "train2017", "train"), ("val", "val2017", "eval")):
        records = read_coco(root / "annotations" / f"instances_{coco_split}.json", root / coco_split, DEMO_CLASSES,
                            ConversionReport())
        write_yolo(records, DEMO_CLASSES, data / "shapes", split)
        write_coco(records, DEMO_CLASSES, data / "shapes_coco", coco_split)
        write_voc(records, DEMO_CLASSES, data / "shapes_voc" / voc_split)


def _as_run_here(line: str, data: Path) -> list[str]:
    """A README command with /data and the repository paths made absolute, and one training epoch."""
    words = [word.replace("/data", str(data)) for word in shlex.split(line)]
    words = [sys.executable, str(PROJECT_ROOT / words[1])] + [
        str(PROJECT_ROOT / word) if word.startswith("config/") else word for word in words[2:]]
    return words + (["--epoch_size", "1"] if words[1].endswith("train.py") else [])


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1, 2], ids=["yolo", "coco", "voc"])
def test_readme_commands_check_train_and_predict(tmp_path_factory, index: int) -> None:
    work = tmp_path_factory.mktemp("own_data")
    data = work / "data"
    _write_layouts(data)
    backbone = subprocess.run([sys.executable, str(PROJECT_ROOT / "convert_torchvision_backbone.py"), "--output",
                               "mobilenet_v2_imagenet.ckpt"], cwd=work, capture_output=True, text=True, timeout=300)
    assert backbone.returncode == 0, backbone.stderr[-2000:]
    for line in readme_blocks()[index]:
        done = subprocess.run(_as_run_here(line, data), cwd=work, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{line}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        assert "Traceback" not in done.stderr
    output = work / re.search(r"--output_path (\S+)", readme_blocks()[index][1]).group(1)
    report = json.loads((output / "dataset_check" / "report.json").read_text())
    assert json.dumps(report).count("circle") >= 1
    saved = yaml.safe_load_all((output / "ckpt_0" / "config.yaml").read_text()).__next__()
    assert saved["classes"][0] == "background" and sorted(saved["classes"][1:]) == sorted(DEMO_CLASSES[1:])
    assert saved["num_classes"] == 5  # VOC has no class order of its own: its names come sorted
    detections = json.loads((output / "predict" / "detections.json").read_text())
    assert {d["category_name"] for d in detections} <= {"circle", "square", "triangle", "plus"} and detections
