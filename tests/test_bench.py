"""Every bench script runs from the repository and prints its machine line and table (tiny sizes:
these check that the scripts work, the numbers come from full runs, see docs/PERFORMANCE.md)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

MACHINE_LINE = re.compile(r"^machine: \d+ cores, .+; mindspore \S+.*ONEDNN_MAX_CPU_ISA=", re.MULTILINE)


def run_bench(script: str, *args: str, timeout: float = 900) -> str:
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / script), *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert MACHINE_LINE.search(done.stdout), done.stdout[:2000]
    return done.stdout


@pytest.mark.slow
def test_bench_mindrecord_prints_a_rate_per_shard_count():
    out = run_bench("bench_mindrecord.py", "--repeats", "1", "--shards", "1", "2")
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+[0-9.]+\s+([0-9.]+)$", out, flags=re.MULTILINE)
    assert [shards for shards, _, _ in rows] == ["1", "2"]
    assert all(int(images) > 0 and float(rate) > 0 for _, images, rate in rows)


@pytest.mark.slow
def test_bench_pipeline_prints_a_row_per_config_and_worker_count():
    out = run_bench("bench_pipeline.py", "--configs", "config/ssd300_config_cpu.yaml", "--workers", "1",
                    "--epochs", "2", "--repeats", "1")
    assert re.search(r"^config/ssd300_config_cpu.yaml\s+300x300\s+1917\s+8\s+1\s+[0-9.]+\s", out, flags=re.MULTILINE), out
    assert re.search(r"1917 anchors, [0-9.]+ images/s", out), out


def test_bench_nms_prints_both_networks_at_both_thresholds():
    out = run_bench("bench_nms.py", "--images", "2", "--repeats", "1")
    for network, anchors in (("ssd300", 1917), ("ssd_mobilenet_v1_fpn", 51150)):
        assert len(re.findall(rf"^{network}\s+{anchors}\s+0\.(?:10|01)\s", out, flags=re.MULTILINE)) == 2, out


def test_bench_postprocess_reports_time_and_peak_memory():
    out = run_bench("bench_postprocess.py", "--images", "20")
    assert re.search(r"20 images in [0-9.]+ s = [0-9.]+ images/s", out), out
    assert re.search(r"peak RSS \d+ MB \(limit 2048 MB\)", out), out


@pytest.mark.slow
def test_bench_train_times_one_network():
    out = run_bench("bench_train.py", "--config", "config/ssd300_config_cpu.yaml", "--batch_size", "2", "--steps", "1")
    assert re.search(r"^ssd300\s+300x300\s+2\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+$", out, flags=re.MULTILINE), out
    assert re.search(r"^model\s+forward s\s+backward\+update s\s+data s/batch\s+first step \(compile\) s$", out,
                     flags=re.MULTILINE), out
    split = re.search(r"^ssd300\s+([0-9.]+)\s+(-?[0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", out, flags=re.MULTILINE)
    assert split and float(split[1]) > 0 and float(split[3]) > 0 and float(split[4]) > 0, out


@pytest.mark.slow
def test_profile_train_step_prints_the_stages_and_the_op_table():
    out = run_bench("profile_train_step.py", "--config", "config/ssd300_demo_config_cpu.yaml", "--batch_size", "2",
                    "--steps", "1", "--profile_steps", "1")
    assert "command: " in out and "profile_train_step.py --config config/ssd300_demo_config_cpu.yaml" in out, out
    for stage in ("forward, inference mode", "forward, training mode", "forward + loss", "forward + loss + backward",
                  "train step (src/train/step.py)"):
        assert re.search(rf"^{re.escape(stage)}\s+[0-9.]+\s+[0-9.]+\s+\d+%$", out, flags=re.MULTILINE), (stage, out)
    assert re.search(r"^data pipeline per batch, alone\s+[0-9.]+\s+\d+%", out, flags=re.MULTILINE), out
    ops = re.findall(r"^(\w+)\s+\d+\s+[0-9.]+\s+[0-9.]+%$", out, flags=re.MULTILINE)
    assert len(ops) == 15 and "Conv2D" in ops, out
    assert re.search(r"^depthwise 3x3\*\s+33\s", out, flags=re.MULTILINE), out  # on the project's kernel
    assert re.search(r"^\* on the project's CPU kernel \(Custom ops\): its two gradients, [0-9.]+ ms", out,
                     flags=re.MULTILINE), out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed (bash scripts/setup_env.sh installs it)")
def test_bench_cpp_runner_compares_the_runner_with_onnxruntime():
    out = run_bench("bench_cpp_runner.py", "--images", "2", "--batch_sizes", "1")
    assert re.search(r"batch 1: C\+\+ runner [0-9.]+ ms/image .* onnxruntime inference [0-9.]+ ms/image", out), out
