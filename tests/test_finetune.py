"""Fine-tuning a checkpoint to another class count with one switch (``--finetune True``).

Real networks and real checkpoint files: an 81-class ssd300 saved as train.py saves it, loaded
into a 5-class one. The dropped tensors are counted against the registry's class-tensor patterns
and the model zoo's checkpoint table.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from src.model_utils.config import load_config
from src.models.registry import NETWORKS, build_ssd
from src.train.loss import SSDWithLossCell
from src.train.trainer import fill_finetune_filter
from src.weights.checkpoint import CheckpointMismatchError, load_network_weights
from tests.conftest import EPOCHS, STEPS_PER_EPOCH, demo_args, read_layout, run_script

RECORD = NETWORKS["ssd300"]
FIVE_CLASSES = {"num_classes": 5, "classes": ["background", "circle", "square", "triangle", "plus"]}


def _loss_net(config):
    """The cell the trainer loads --pre_trained into (its tensors are named ``network.*``)."""
    return SSDWithLossCell(build_ssd(config), config.gamma, config.alpha)


@pytest.fixture(scope="module")
def coco_checkpoint(tmp_path_factory) -> Path:
    """An 81-class ssd300 checkpoint with random weights, written like train.py's."""
    path = tmp_path_factory.mktemp("coco") / "coco81.ckpt"
    ms.save_checkpoint(_loss_net(load_config(RECORD.cpu_config_path)), str(path))
    return path


def _finetune_config():
    config = load_config(RECORD.cpu_config_path, {**FIVE_CLASSES, "finetune": True})
    fill_finetune_filter(config)
    return config


def test_finetune_fills_the_filter_keys_from_the_registry():
    config = _finetune_config()
    assert config.filter_weight is True
    assert config.checkpoint_filter_list == list(RECORD.class_tensors)
    untouched = load_config(RECORD.cpu_config_path)
    fill_finetune_filter(untouched)
    assert untouched.filter_weight is False and untouched.checkpoint_filter_list == ["multi_loc_layers",
                                                                                      "multi_cls_layers"]


def test_finetune_loads_all_but_the_class_tensors(coco_checkpoint, checkpoint_layout_dir):
    config = _finetune_config()
    network = _loss_net(config)
    before = {p.name: p.asnumpy().copy() for p in network.get_parameters()}
    report = load_network_weights(coco_checkpoint, network, drop=config.checkpoint_filter_list, config=config)

    layout = [name for name, _, _ in read_layout(checkpoint_layout_dir, "ssd300")]
    class_names = [name for name in layout if any(fnmatchcase(name, p) for p in RECORD.class_tensors)]
    assert len(class_names) == 12  # weight and bias of the class predictor on each of the 6 levels
    assert report.total == len(layout)
    assert sorted(report.dropped) == sorted(report.new) == sorted(class_names)
    assert report.summary() == (
        f"loaded {len(layout) - 12} of {len(layout)} tensors from {coco_checkpoint}, dropped: 12 tensors matching "
        f"{', '.join(RECORD.class_tensors)}, new: {', '.join(report.new[:8])} ... and 4 more")
    saved = ms.load_checkpoint(str(coco_checkpoint))
    for parameter in network.get_parameters():
        if parameter.name in class_names:  # left at the 5-class network's initial values
            np.testing.assert_array_equal(parameter.asnumpy(), before[parameter.name])
        elif parameter.name.startswith("network."):
            np.testing.assert_array_equal(parameter.asnumpy(), saved[parameter.name].asnumpy())


def test_another_class_count_without_finetune_is_one_error(coco_checkpoint):
    config = load_config(RECORD.cpu_config_path, FIVE_CLASSES)
    with pytest.raises(CheckpointMismatchError) as raised:
        load_network_weights(coco_checkpoint, _loss_net(config), config=config)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{coco_checkpoint} was trained for 81 classes (background included) but the config "
                              "has num_classes 5;") and "--finetune True" in message


def test_a_checkpoint_of_another_network_is_one_error_naming_both(tmp_path):
    other = tmp_path / "mobilenet_v1.ckpt"
    ms.save_checkpoint(_loss_net(load_config(NETWORKS["ssd_mobilenet_v1"].cpu_config_path)), str(other))
    config = _finetune_config()
    with pytest.raises(CheckpointMismatchError, match=rf"^{other} holds the weights of ssd_mobilenet_v1 but the "
                                                      r"config builds ssd300; pass a ssd300 checkpoint"):
        load_network_weights(other, _loss_net(config), drop=config.checkpoint_filter_list, config=config)


@pytest.mark.slow
def test_train_py_finetunes_a_trained_run_to_other_classes(demo_root, trained_run, tmp_path):
    """5-class demo checkpoint -> 4 classes ('plus' boxes are skipped, counted): one epoch, the log line."""
    checkpoint = trained_run / "ckpt_0" / f"ssd-{EPOCHS}_{STEPS_PER_EPOCH}.ckpt"
    output = tmp_path / "finetuned"
    done = run_script("train.py", *demo_args(demo_root, output, "--epoch_size", "1", "--mindrecord_dir",
                                             "MindRecord_finetune", "--num_classes", "4", "--classes",
                                             "['background', 'circle', 'square', 'triangle']",
                                             "--pre_trained", str(checkpoint), "--finetune", "True"))
    assert done.returncode == 0, done.stderr[-3000:]
    log = (output / "log" / "train_rank0.log").read_text()
    total = len(list(build_ssd(load_config(RECORD.cpu_config_path)).get_parameters()))
    assert (f"pre_trained: loaded {total - 12} of {total} tensors from {checkpoint}, dropped: 12 tensors matching "
            f"{', '.join(RECORD.class_tensors)}, new: network.multi_box.multi_cls_layers.0.3.weight") in log
    saved = load_config(output / "ckpt_0" / "config.yaml")
    assert saved.filter_weight is True and saved.checkpoint_filter_list == list(RECORD.class_tensors)


def test_finetune_without_pre_trained_is_a_usage_error(tmp_path):
    done = run_script("train.py", "--config_path", str(RECORD.cpu_config_path), "--finetune", "True",
                      "--output_path", str(tmp_path))
    assert done.returncode == 2
    assert "--finetune True needs --pre_trained" in done.stderr and len(done.stderr.strip().splitlines()) == 1
