"""The shell launchers in scripts/: usage on wrong arguments, and a real train -> eval round on CPU.

The data-parallel launcher's real run is in test_distributed.py.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from src.data.demo_data import generate_demo_dataset
from tests.conftest import PROJECT_ROOT

SCRIPTS = PROJECT_ROOT / "scripts"
DEMO_CONFIG = PROJECT_ROOT / "config" / "ssd300_demo_config_cpu.yaml"

#: Argument counts each launcher refuses: none, one short, and the gap between its two valid counts.
WRONG_ARGUMENT_COUNTS = {
    "run_standalone_train.sh": (0, 4, 6, 8),
    "run_distribute_train.sh": (0, 5, 7, 9),
    "run_distribute_train_gpu.sh": (0, 4, 6, 8),
    "run_distribute_train_cpu.sh": (0, 4, 6, 8),
    "run_eval.sh": (0, 3, 5),
    "run_eval_gpu.sh": (0, 3, 5),
    "common.sh": (0, 1),
}


def run_script(name: str, *args: str, run_dir: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "SSD_RUN_DIR": str(run_dir)} if run_dir else None
    return subprocess.run(["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=run_dir)


@pytest.mark.parametrize("name, count", [(name, count) for name, counts in WRONG_ARGUMENT_COUNTS.items()
                                         for count in counts])
def test_wrong_argument_count_prints_the_usage_and_fails(name, count, tmp_path):
    done = run_script(name, *[f"arg{i}" for i in range(count)], run_dir=tmp_path)
    assert done.returncode != 0
    assert done.stderr.startswith("Usage: ") and name in done.stderr.splitlines()[0], done.stderr
    assert not list(tmp_path.iterdir()), "nothing may be created before the arguments are checked"


def test_overrides_do_not_count_as_arguments_and_missing_files_are_named(tmp_path):
    done = run_script("run_eval.sh", "coco", "absent.ckpt", "0", str(DEMO_CONFIG), "--batch_size", "2",
                      run_dir=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: CHECKPOINT_PATH {tmp_path / 'absent.ckpt'} is not a file"


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scripts_demo")
    generate_demo_dataset(root / "coco", num_train=8, num_val=3, seed=4, min_size=60, max_objects=3)
    return root


@pytest.fixture(scope="module")
def standalone_checkpoint(demo_data, tmp_path_factory) -> Path:
    """One epoch (2 steps) through run_standalone_train.sh; returns its checkpoint."""
    run_dir = tmp_path_factory.mktemp("standalone")
    done = run_script("run_standalone_train.sh", "0", "1", "0.01", "coco", str(DEMO_CONFIG),
                      "--data_path", str(demo_data), "--batch_size", "4", "--feature_extractor_base_param", "", "--freeze_layer", "None",
                      run_dir=run_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = run_dir / "LOG0"
    assert f"checkpoints: {output}/ckpt_0/" in done.stdout
    assert "training done" in (output / "log.txt").read_text()
    return output / "ckpt_0" / "ssd-1_2.ckpt"


def _assert_coco_table(text: str) -> None:
    assert text.count("Average Precision") == 6 and text.count("Average Recall") == 6, text[-3000:]
    assert "mAP: " in text


@pytest.mark.slow
def test_run_eval_prints_the_coco_table_on_cpu(demo_data, standalone_checkpoint, tmp_path):
    done = run_script("run_eval.sh", "coco", str(standalone_checkpoint), "0", str(DEMO_CONFIG),
                      "--data_path", str(demo_data), run_dir=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _assert_coco_table(done.stdout)
    _assert_coco_table((tmp_path / "eval0" / "log.txt").read_text())
    assert (tmp_path / "eval0" / "eval_detections.json").is_file()


@pytest.mark.slow
def test_run_eval_gpu_needs_a_gpu_or_the_cpu_override(demo_data, standalone_checkpoint, tmp_path):
    args = ("coco", str(standalone_checkpoint), "1", str(DEMO_CONFIG), "--data_path", str(demo_data))
    refused = run_script("run_eval_gpu.sh", *args, run_dir=tmp_path)
    assert refused.returncode != 0
    assert "device_target GPU is not available in this MindSpore installation" in refused.stdout
    done = run_script("run_eval_gpu.sh", *args, "--device_target", "CPU", run_dir=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _assert_coco_table(done.stdout)
