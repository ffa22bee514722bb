"""train.py and eval.py end to end, as users run them: real MindRecord, GRAPH_MODE steps, pycocotools.

A small demo set (48 training images) trains for 3 epochs of 6 steps once per session (the
``trained_run`` fixture of conftest.py, shared with the export tests); the other tests reuse that
run (resume equivalence, evaluation, checkpoint refusal).
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time

import mindspore as ms
import pytest

from src.model_utils.config import load_config
from src.train.trainer import MAX_OVERFLOW_SKIPS, RESOLVED_CONFIG, TrainingDiverged, guard_loss
from tests.conftest import (DEMO_CONFIG, EPOCHS, PROJECT_ROOT, STEPS_PER_EPOCH, demo_args, read_layout, read_metrics,
                            run_script)

pytestmark = pytest.mark.slow  # trains or exports real networks: the full suite only

CPU_CONFIG = PROJECT_ROOT / "config" / "ssd300_config_cpu.yaml"


def test_training_lowers_the_loss_and_saves_checkpoints(trained_run):
    rows = read_metrics(trained_run)
    assert [int(r["step"]) for r in rows] == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    losses = [float(r["loss"]) for r in rows]
    assert sum(losses[-6:]) / 6 < 0.9 * sum(losses[:6]) / 6, losses  # deterministic run: 7.79 -> 6.62
    names = sorted(p.name for p in (trained_run / "ckpt_0").glob("ssd-*.ckpt"))
    assert names == [f"ssd-{e}_{STEPS_PER_EPOCH}.ckpt" for e in range(1, EPOCHS + 1)]
    assert (trained_run / "log" / "train_rank0.log").read_text().count("training done") == 1


def test_the_log_says_that_the_first_step_compiles_and_how_long_it_took(trained_run):
    """10-30 s of a progress bar standing still read as a hang without these two lines."""
    log = (trained_run / "log" / "train_rank0.log").read_text()
    compiling = log.index("first step: compiling the training graph")
    compiled = re.search(r"graph compiled in \d+\.\d s \(first step\)", log)
    assert compiled and log.count("graph compiled in") == 1, log
    assert compiling < compiled.start() < log.index(f"epoch 1/{EPOCHS} step 1/{STEPS_PER_EPOCH}")


def test_the_run_saves_its_resolved_config_beside_the_checkpoints(demo_root, trained_run):
    """Every key written out, command-line overrides included: the file alone reproduces the run."""
    saved = trained_run / "ckpt_0" / RESOLVED_CONFIG
    overrides = {"data_path": str(demo_root), "coco_root": "coco", "mindrecord_dir": "MindRecord",
                 "output_path": str(trained_run), "epoch_size": EPOCHS, "batch_size": 8, "eval_batch_size": 8,
                 "save_checkpoint_epochs": 1, "log_interval": 1, "warmup_epochs": 1, "lr": 0.01,
                 "feature_extractor_base_param": "", "freeze_layer": "None"}
    expected = load_config(DEMO_CONFIG, overrides)
    assert "__BASE__" not in saved.read_text()
    assert load_config(saved).to_dict() == expected.to_dict()


def test_resume_after_kill_reproduces_steps_and_learning_rates(demo_root, trained_run, tmp_path):
    output = tmp_path / "killed"
    first = output / "ckpt_0" / f"ssd-1_{STEPS_PER_EPOCH}.ckpt"
    process = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "train.py"), *demo_args(demo_root, output)],
                               cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not first.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first.exists(), "the run never wrote its first checkpoint"
    assert not (output / "ckpt_0" / f"ssd-{EPOCHS}_{STEPS_PER_EPOCH}.ckpt").exists(), "killed too late"

    resumed = run_script("train.py", *demo_args(demo_root, output, "--resume", str(first)))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from {first}: epoch 1, global step {STEPS_PER_EPOCH}" in resumed.stdout
    reference, after_resume = read_metrics(trained_run), read_metrics(output)
    assert [r["step"] for r in after_resume] == [r["step"] for r in reference]
    assert [r["lr"] for r in after_resume] == [r["lr"] for r in reference]
    assert f"global step {EPOCHS * STEPS_PER_EPOCH}" in resumed.stdout


def test_eval_prints_the_coco_table_for_a_trained_checkpoint(demo_root, trained_run):
    checkpoint = trained_run / "ckpt_0" / f"ssd-{EPOCHS}_{STEPS_PER_EPOCH}.ckpt"
    done = run_script("eval.py", *demo_args(demo_root, trained_run / "eval", "--checkpoint_file_path",
                                            str(checkpoint)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("Average Precision") == 6 and done.stdout.count("Average Recall") == 6
    assert "mAP: " in done.stdout
    assert (trained_run / "eval" / "eval_detections.json").is_file()


def test_eval_refuses_a_checkpoint_of_another_head(demo_root, trained_run, tmp_path):
    """A checkpoint without its run's config.yaml (as a model-zoo one): the class count read from its tensors."""
    checkpoint = tmp_path / f"ssd-{EPOCHS}_{STEPS_PER_EPOCH}.ckpt"
    shutil.copy(trained_run / "ckpt_0" / checkpoint.name, checkpoint)
    done = run_script("eval.py", *demo_args(demo_root, trained_run / "eval81", "--checkpoint_file_path",
                                            str(checkpoint)), "--config_path", str(CPU_CONFIG))
    assert done.returncode != 0
    assert (f"{checkpoint} was trained for 5 classes (background included) but the config has num_classes 81"
            in done.stderr)


def test_guard_loss_rules():
    assert guard_loss(1.0, False, 1024.0, 3, dynamic_scale=True, where="x") == 0
    assert guard_loss(float("inf"), True, 512.0, 0, dynamic_scale=True, where="x") == 1
    assert guard_loss(2.0, True, 1024.0, 0, dynamic_scale=False, where="x") == 1
    with pytest.raises(TrainingDiverged, match="loss is nan at epoch 2 step 7"):
        guard_loss(float("nan"), True, 1024.0, 0, dynamic_scale=False, where="epoch 2 step 7")
    with pytest.raises(TrainingDiverged, match="after 32 overflow-skipped steps"):
        guard_loss(float("inf"), True, 2.0, MAX_OVERFLOW_SKIPS, dynamic_scale=True, where="step 9")
    with pytest.raises(TrainingDiverged):
        guard_loss(float("inf"), True, 1.0, 0, dynamic_scale=True, where="step 9")


def test_coco128_convert_train_evaluate_with_crowd_boxes(coco128_root, checkpoint_layout_dir, tmp_path):
    common = ["--config_path", str(CPU_CONFIG), "--data_path", str(tmp_path), "--coco_root", str(coco128_root),
              "--train_data_type", "train2017", "--val_data_type", "train2017",
              "--mindrecord_dir", str(tmp_path / "mindrecord"), "--output_path", str(tmp_path / "out"),
              "--batch_size", "8", "--eval_batch_size", "8"]
    trained = run_script("train.py", *common, "--epoch_size", "2", "--save_checkpoint_epochs", "2",
                         "--log_interval", "5")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    checkpoint = tmp_path / "out" / "ckpt_0" / "ssd-2_15.ckpt"
    params = ms.load_checkpoint(str(checkpoint))
    network_shapes = {n: list(p.shape) for n, p in params.items() if n.startswith("network.")}
    assert network_shapes == {name: list(shape) for name, shape, _ in read_layout(checkpoint_layout_dir, "ssd300")}

    weights_only = tmp_path / "weights_only.ckpt"
    ms.save_checkpoint([{"name": n, "data": p} for n, p in params.items() if n.startswith("network.")],
                       str(weights_only))
    evaluated = run_script("eval.py", *common, "--checkpoint_file_path", str(weights_only))
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    assert "10 crowd boxes handled by COCOeval" in evaluated.stdout
    assert "128 images" in evaluated.stdout
    assert evaluated.stdout.count("Average Precision") == 6


def test_a_train_step_runs_the_network_forward_once(graph_mode):
    """The step logs the loss parts and differentiates their sum through one call: BatchNorm's moving
    statistics move exactly as much as after one training-mode forward pass (two passes would move them twice)."""
    import numpy as np

    from src.model_utils.config import load_config
    from src.models.init_weights import init_network_weights
    from src.models.registry import build_ssd
    from src.train.loss import SSDWithLossCell
    from src.train.step import build_optimizer, build_train_step
    from tests.conftest import DEMO_CONFIG, synthetic_train_inputs

    config = load_config(DEMO_CONFIG)
    network = build_ssd(config)
    init_network_weights(network, int(config.num_classes))
    loss_cell = SSDWithLossCell(network, config.gamma, config.alpha)
    step = build_train_step(loss_cell, build_optimizer(loss_cell, np.zeros(2, np.float32), config), config)
    initial = {p.name: p.asnumpy().copy() for p in network.get_parameters()}
    inputs = synthetic_train_inputs(config.num_ssd_boxes, positives=10, label=1, seed=0)
    step.set_train(True)
    step(*inputs)
    moving = {name: p.asnumpy().copy() for name, p in ((p.name, p) for p in network.get_parameters())
              if name.endswith("moving_mean")}
    for param in network.get_parameters():
        param.set_data(ms.Tensor(initial[param.name]))
    loss_cell.set_train(True)
    loss_cell(*inputs)
    assert moving and any(not np.array_equal(value, initial[name]) for name, value in moving.items())
    for param in network.get_parameters():
        if param.name in moving:
            np.testing.assert_allclose(moving[param.name], param.asnumpy(), rtol=1e-5, atol=1e-6, err_msg=param.name)
