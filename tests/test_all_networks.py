"""Every network end to end with its 81-class CPU config, as the acceptance of issue 3 asks.

For each model_name, train.py runs 2 steps on the demo shapes labelled with COCO names, the
checkpoint it writes has the model zoo's ``network.*`` names and shapes, and eval.py evaluates that
checkpoint and prints the COCO table. A separate in-process test checks the decoded output shapes,
which eval.py does not report. Networks train once per module (the ``trained`` fixture); the
640-px FPN networks dominate the run time.
"""
from __future__ import annotations

import math
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from src.data.demo_data import COCO_SHAPE_NAMES, generate_demo_dataset
from src.model_utils.config import load_config
from src.models.registry import NETWORKS, inference_network
from tests.conftest import read_layout, read_metrics, run_script

pytestmark = pytest.mark.slow  # trains or exports real networks: the full suite only

#: model_name -> number of default boxes at the img_shape of its CPU config (the registry's cpu_config_file).
NUM_BOXES = {"ssd300": 1917, "ssd_mobilenet_v1": 1917, "ssd_vgg16": 7308, "ssd_mobilenet_v1_fpn": 51150,
             "ssd_resnet50_fpn": 51150}
NUM_CLASSES = 81
# Batch 2 over 4 images = the 2 steps; a 640-px ResNet50-FPN step at batch 4 costs 30 s on 2 cores.
BATCH, TRAIN_IMAGES, VAL_IMAGES = 2, 4, 2
STEPS = TRAIN_IMAGES // BATCH


def config_path(model_name: str) -> Path:
    return NETWORKS[model_name].cpu_config_path


@pytest.fixture(scope="module")
def coco_named_demo(tmp_path_factory) -> Path:
    """The demo shapes labelled sports ball/tv/kite/airplane (300 px; the FPN configs resize to 640)."""
    root = tmp_path_factory.mktemp("coco_named_demo")
    generate_demo_dataset(root / "coco", num_train=TRAIN_IMAGES, num_val=VAL_IMAGES, seed=5, min_size=60,
                          max_objects=3, class_names=COCO_SHAPE_NAMES)
    return root


def run_args(model_name: str, data_root: Path, output: Path, *extra: str) -> list[str]:
    """The network's own CPU config with only data locations and run length overridden.

    One MindRecord folder serves every network: all five configs share the COCO class list, and
    images are resized by the data pipeline, not at conversion.
    """
    return ["--config_path", str(config_path(model_name)), "--data_path", str(data_root), "--coco_root", "coco",
            "--mindrecord_dir", "MindRecord", "--output_path", str(output), "--batch_size", str(BATCH),
            "--eval_batch_size", str(BATCH), "--epoch_size", "1", "--save_checkpoint_epochs", "1",
            "--log_interval", "1", "--feature_extractor_base_param", "", "--freeze_layer", "None", *extra]


@pytest.fixture(scope="module", params=list(NETWORKS))
def trained(request, coco_named_demo, tmp_path_factory) -> tuple[str, Path]:
    """(model_name, output folder) of a finished 2-step train.py run."""
    model_name = request.param
    output = tmp_path_factory.mktemp(f"run_{model_name}")
    done = run_script("train.py", *run_args(model_name, coco_named_demo, output))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return model_name, output


def last_checkpoint(output: Path) -> Path:
    return output / "ckpt_0" / f"ssd-1_{STEPS}.ckpt"


def test_train_runs_two_steps_and_saves_a_checkpoint(trained):
    _, output = trained
    rows = read_metrics(output)
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert sorted(p.name for p in (output / "ckpt_0").glob("*.ckpt")) == [last_checkpoint(output).name]


def test_checkpoint_has_the_zoo_layout(trained, checkpoint_layout_dir):
    model_name, output = trained
    params = ms.load_checkpoint(str(last_checkpoint(output)))
    network_shapes = {name: list(p.shape) for name, p in params.items() if name.startswith("network.")}
    expected = {name: list(shape) for name, shape, _ in read_layout(checkpoint_layout_dir, model_name)}
    assert expected and network_shapes == expected


def test_eval_prints_the_coco_table(trained, coco_named_demo):
    model_name, output = trained
    done = run_script("eval.py", *run_args(model_name, coco_named_demo, output / "eval", "--checkpoint_file_path",
                                           str(last_checkpoint(output))))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("Average Precision") == 6 and done.stdout.count("Average Recall") == 6
    assert "mAP: " in done.stdout and f"{VAL_IMAGES} images" in done.stdout
    class_rows = {line.split("  ")[0] for line in done.stdout.splitlines()}
    assert set(COCO_SHAPE_NAMES) <= class_rows  # the per-class table names the four COCO categories
    assert (output / "eval" / "eval_detections.json").is_file()


@pytest.mark.parametrize("model_name", list(NETWORKS))
def test_inference_outputs_boxes_and_81_class_scores(graph_mode, model_name):
    config = load_config(config_path(model_name))
    num_boxes = NUM_BOXES[model_name]
    infer_net = inference_network(config)
    infer_net.set_train(False)
    images = np.random.default_rng(0).normal(size=(2, 3, *config.img_shape)).astype(np.float32)
    boxes, scores = (t.asnumpy() for t in infer_net(ms.Tensor(images)))
    assert config.num_ssd_boxes == num_boxes
    assert boxes.shape == (2, num_boxes, 4) and scores.shape == (2, num_boxes, NUM_CLASSES)
    assert 0.0 <= scores.min() and scores.max() <= 1.0
