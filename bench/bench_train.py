"""Training-step throughput of an SSD network on this machine (images/s), compile time apart.

Usage: .venv/bin/python bench/bench_train.py [--config config/ssd300_config_cpu.yaml]
       [--batch_size 8] [--steps 8]

Runs the real GRAPH_MODE train step (network + focal/SmoothL1 loss + Momentum + loss scaling)
on fixed batches whose targets come from the real box encoder, so the number measures the
network and optimiser, not the input pipeline (see bench_pipeline.py for that). Prints the
first (compiling) step separately and the median of the remaining steps.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.model_utils.config import load_config  # noqa: E402
from src.model_utils.device_adapter import cap_onednn_isa  # noqa: E402


def synthetic_batch(config, batch_size: int, rng: np.random.Generator):
    """Random images and the encoded targets of 1-4 random boxes per image."""
    import mindspore as ms

    from src.anchor_generator import default_boxes_from_config
    from src.box_utils import BoxCoder

    coder = BoxCoder(default_boxes_from_config(config), config.prior_scaling, config.match_threshold)
    height, width = config.img_shape
    images = rng.normal(0, 1, (batch_size, 3, height, width)).astype(np.float32)
    targets = []
    for _ in range(batch_size):
        count = int(rng.integers(1, 5))
        corner = rng.uniform(0, 0.6, (count, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(0.1, 0.4, (count, 2))], axis=1)
        targets.append(coder.encode(boxes, rng.integers(1, config.num_classes, count)))
    loc, labels, matched = (np.stack(column) for column in zip(*targets))
    return [ms.Tensor(a) for a in (images, loc, labels, matched)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="config/ssd300_config_cpu.yaml")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="timed steps after the compiling one (>= 5)")
    args = parser.parse_args()
    config = load_config(args.config)
    print(cap_onednn_isa(config.device_target) or "device target is not CPU: no oneDNN cap")
    import mindspore as ms

    from src.init_params import init_network_weights
    from src.loss import SSDWithLossCell
    from src.lr_schedule import warmup_cosine_lr
    from src.ssd import build_ssd
    from src.train_step import build_optimizer, build_train_step

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device(config.device_target)
    network = build_ssd(config)
    init_network_weights(network, config.num_classes)
    loss_net = SSDWithLossCell(network, config)
    lr = warmup_cosine_lr(config.lr_init, config.lr, 0.0, 0, 1, args.steps + 1)
    train_net = build_train_step(loss_net, build_optimizer(loss_net, lr, config), config)
    train_net.set_train(True)
    batch = synthetic_batch(config, args.batch_size, np.random.default_rng(0))
    started = time.perf_counter()
    train_net(*batch)[0].asnumpy()
    compile_seconds = time.perf_counter() - started
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        train_net(*batch)[0].asnumpy()
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(f"{config.model_name} batch {args.batch_size} on {config.device_target}: first step (compile) "
          f"{compile_seconds:.1f} s; median step {median * 1000:.0f} ms over {args.steps} steps = "
          f"{args.batch_size / median:.2f} img/s")


if __name__ == "__main__":
    main()
