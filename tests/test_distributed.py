"""Data-parallel training as users start it, and the once-only MindRecord conversion it relies on.

The msrun test runs ``scripts/run_distribute_train_cpu.sh`` with 2 CPU workers on 16 demo images
(batch 4 per worker, 1 epoch = 2 steps; about a minute) and checks what data parallelism promises:
identical parameters on both ranks, disjoint halves of the data, one conversion of the MindRecord.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from src.data.demo_data import DEMO_CLASSES, generate_demo_dataset
from src.data.mindrecord import (TRAIN_PREFIX, ensure_mindrecord, find_complete_mindrecord, mindrecord_folder,
                                 wait_for_mindrecord)
from src.model_utils.config import load_config
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow  # launches msrun with real training processes: the full suite only

DEMO_CONFIG = PROJECT_ROOT / "config" / "ssd300_demo_config_cpu.yaml"
NUM_TRAIN, WORKERS, BATCH = 16, 2, 4
#: BatchNorm's running statistics are updated from each rank's own batches, not all-reduced.
PER_RANK_SUFFIXES = (".moving_mean", ".moving_variance")


@pytest.fixture(scope="module")
def msrun_output(tmp_path_factory) -> Path:
    """LOG/ of one 2-worker CPU run of the documented launcher (every rank saves its checkpoint)."""
    tmp = tmp_path_factory.mktemp("msrun")
    generate_demo_dataset(tmp / "data" / "coco", num_train=NUM_TRAIN, num_val=1, seed=5, min_size=60, max_objects=3)
    env = {**os.environ, "SSD_RUN_DIR": str(tmp / "runs")}
    done = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "run_distribute_train_cpu.sh"), str(WORKERS), "1", "0.01", "coco",
         str(DEMO_CONFIG), "--data_path", str(tmp / "data"), "--batch_size", str(BATCH),
         "--feature_extractor_base_param", "", "--freeze_layer", "None", "--save_ckpt_all_ranks", "True", "--log_interval", "1"],
        cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    output = tmp / "runs" / "LOG"
    logs = "".join(path.read_text() for path in sorted(output.glob("msrun_log/worker_*.log")))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + logs[-3000:]
    return output


def test_both_ranks_end_with_the_same_trainable_parameters(msrun_output):
    steps = NUM_TRAIN // (WORKERS * BATCH)
    first, second = (ms.load_checkpoint(str(msrun_output / f"ckpt_{rank}" / f"ssd-1_{steps}.ckpt"))
                     for rank in range(WORKERS))
    assert sorted(first) == sorted(second)
    differing = sorted(name for name in first
                       if not np.array_equal(first[name].asnumpy(), second[name].asnumpy()))
    per_rank = sorted(name for name in first if name.endswith(PER_RANK_SUFFIXES))
    # Weights, optimiser moments and step counters agree bit for bit; only BN running statistics differ,
    # and they do differ, because each rank normalised its own half of the data.
    assert per_rank and differing == per_rank
    assert any(name.startswith("moments.") for name in first)


def test_each_rank_trained_on_its_own_half_of_the_images(msrun_output):
    consumed = [json.loads((msrun_output / f"first_epoch_img_ids_rank{rank}.json").read_text())
                for rank in range(WORKERS)]
    halves = [set(record["img_ids"]) for record in consumed]
    assert [len(record["img_ids"]) for record in consumed] == [NUM_TRAIN // WORKERS] * WORKERS
    assert [len(half) for half in halves] == [NUM_TRAIN // WORKERS] * WORKERS
    assert not halves[0] & halves[1]
    annotations = json.loads((msrun_output.parents[1] / "data" / "coco" / "annotations"
                              / "instances_train2017.json").read_text())
    assert halves[0] | halves[1] == {image["id"] for image in annotations["images"]}
    for rank in range(WORKERS):
        log = (msrun_output / "log" / f"train_rank{rank}.log").read_text()
        assert f"batch {BATCH} per device x {WORKERS} devices = global batch {BATCH * WORKERS}" in log


def test_the_mindrecord_was_converted_once_by_rank_0(msrun_output):
    worker_logs = [(msrun_output / "msrun_log" / f"worker_{rank}.log").read_text() for rank in range(WORKERS)]
    conversions = [log.count(f"{TRAIN_PREFIX}: wrote {NUM_TRAIN} images") for log in worker_logs]
    assert conversions == [1, 0]
    mindrecord_dir = msrun_output.parents[1] / "data" / "MindRecord"
    assert find_complete_mindrecord(mindrecord_dir, TRAIN_PREFIX) is not None
    assert not list(mindrecord_dir.glob(".partial-*"))


# ---- the once-only conversion on its own ------------------------------------------------------------

RANK_HELPER = """\
import json
import logging
import sys

logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # the library logs on "ssd"
sys.path.insert(0, sys.argv[1])
from src.model_utils.config import load_config
from src.data.mindrecord import ensure_mindrecord_for_rank

config = load_config(sys.argv[2], overrides=json.loads(sys.argv[3]))
print("rank result", ensure_mindrecord_for_rank(config, for_training=True, rank=int(sys.argv[4]), timeout=300),
      flush=True)
"""


def _demo_config(data_path: Path, **overrides):
    values = {"data_path": str(data_path), "mindrecord_dir": "mr", "classes": list(DEMO_CLASSES), "num_classes": 5}
    return load_config(DEMO_CONFIG, overrides={**values, **overrides})


def test_rank_1_waits_for_the_conversion_of_rank_0(tmp_path):
    """Two real processes: rank 1 starts first and must wait, only rank 0 writes, both get the same files."""
    generate_demo_dataset(tmp_path / "coco", 24, 1, image_size=64)
    (tmp_path / "helper.py").write_text(RANK_HELPER)
    overrides = json.dumps({"data_path": str(tmp_path), "mindrecord_dir": "mr"})

    def start(rank: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(tmp_path / "helper.py"), str(PROJECT_ROOT), str(DEMO_CONFIG),
                                 overrides, str(rank)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    waiter = start(1)
    rank1_lines = []
    while not any(line.startswith("waiting up to 300 s for rank 0 to convert") for line in rank1_lines):
        line = waiter.stdout.readline()  # blocks until the next line; "" once the process has ended
        assert line, "rank 1 ended without waiting:\n" + "".join(rank1_lines)
        rank1_lines.append(line)
    time.sleep(0.5)
    assert waiter.poll() is None, "rank 1 must keep waiting while nobody converts"
    converter = start(0)
    rank0_out, _ = converter.communicate(timeout=300)
    rank1_out = "".join(rank1_lines) + waiter.communicate(timeout=60)[0]
    assert converter.returncode == 0 and waiter.returncode == 0, rank0_out + rank1_out
    shard0 = tmp_path / "mr" / f"{TRAIN_PREFIX}0"
    assert f"rank result {shard0}" in rank0_out and f"rank result {shard0}" in rank1_out
    assert rank0_out.count(f"{TRAIN_PREFIX}: wrote 24 images") == 1
    assert "wrote" not in rank1_out and "writing" not in rank1_out


def test_a_waiting_rank_gives_up_with_the_way_out(tmp_path):
    generate_demo_dataset(tmp_path / "coco", 3, 1, image_size=64)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"only_create_dataset=True") as caught:
        wait_for_mindrecord(_demo_config(tmp_path), for_training=True, timeout=1.0, poll_seconds=0.1)
    assert 1.0 <= time.monotonic() - started < 10
    assert str(tmp_path / "mr" / TRAIN_PREFIX) in str(caught.value) and "within 1 s" in str(caught.value)


def test_a_waiting_rank_does_not_take_a_stale_conversion(tmp_path):
    """A conversion made for another class list is what rank 0 is about to replace: not usable yet."""
    generate_demo_dataset(tmp_path / "coco", 6, 1, image_size=64)
    other_classes = ["background", "square", "circle", "triangle", "plus"]  # the same names, other labels
    ensure_mindrecord(_demo_config(tmp_path, classes=other_classes), for_training=True)
    config = _demo_config(tmp_path)
    with pytest.raises(TimeoutError):
        wait_for_mindrecord(config, for_training=True, timeout=0.3, poll_seconds=0.1)
    converted = ensure_mindrecord(config, for_training=True)
    assert wait_for_mindrecord(config, for_training=True, timeout=0.3, poll_seconds=0.1) == converted


def test_a_waiting_rank_fails_at_once_when_the_source_is_missing(tmp_path):
    config = _demo_config(tmp_path)
    started = time.monotonic()
    with pytest.raises(FileNotFoundError, match="instances_train2017.json"):
        wait_for_mindrecord(config, for_training=True, timeout=60)
    assert time.monotonic() - started < 5
    assert not mindrecord_folder(config).exists()


def test_run_distribute_without_a_launcher_names_the_launch_scripts(tmp_path):
    env = {name: value for name, value in os.environ.items()
           if name not in ("MS_ROLE", "RANK_TABLE_FILE", "OMPI_COMM_WORLD_SIZE")}
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "train.py"), "--config_path", str(DEMO_CONFIG),
                           "--run_distribute", "True", "--output_path", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode != 0
    assert "train.py: error: run_distribute=True needs a distributed launcher" in done.stderr
    assert "Traceback" not in done.stderr
    assert "scripts/run_distribute_train_cpu.sh" in done.stderr
