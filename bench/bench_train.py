"""Training-step throughput of every SSD network on this machine (images/s), compile time apart.

Usage: .venv/bin/python bench/bench_train.py [--config CONFIG ...] [--batch_size N] [--steps 8]
       [--float16] [--graph_kernel] [--jit_level O0|O1|O2]

Default: the five CPU configs, each network at its own resolution and batch size. ``--config``
(repeatable) picks configs; ``--batch_size`` overrides every config's batch size. The last three
switches are the experiments of the "Training step on CPU" table of docs/PERFORMANCE.md: ``--float16`` trains
as ``use_float16: True`` does (float16 cells, dynamic loss scale), ``--graph_kernel`` sets
``enable_graph_kernel=True`` and ``--jit_level`` sets MindSpore's ``jit_config`` level. As the trainer
does, float32 on CPU runs the depthwise convolutions on the project's kernel (src/models/cpu_depthwise.py);
``SSD_CPU_DEPTHWISE_KERNEL=0`` in the environment times MindSpore's own kernels instead.

Runs the real GRAPH_MODE train step (network + focal/SmoothL1 loss + Momentum; loss scaling where the
step keeps it, with float16 or on GPU/Ascend; global-norm clipping for the FPN configs) on one fixed
batch whose targets come from the real box encoder, so the number measures the network and
optimiser, not the input pipeline. The first (compiling) step is reported apart from the median of
the timed steps. Prints the machine first: on a shared machine the load average says how far to
trust the numbers.

A second table splits the median step so that a regression shows where it is: ``forward`` (network
and loss in training mode, timed in turn with the step), ``backward+update`` (the step minus that),
``data`` (the config's training pipeline alone, per batch, on coco128 converted as train.py converts
it; its threads share the cores with the step while training) and the first step's seconds
(graph compilation). bench/profile_train_step.py breaks a step down further, op by op.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine_info import describe_machine  # noqa: E402
from src.model_utils.config import Config, ConfigError, load_config  # noqa: E402
from src.model_utils.device_adapter import cap_onednn_isa  # noqa: E402
from src.models.registry import NETWORKS  # noqa: E402

#: The project's own log lines (which depthwise kernel runs) reach the bench's output through this logger.
BENCH_LOG = logging.getLogger("bench.train")
#: Epochs of a data-time measurement: one untimed warm-up (pipeline start-up, first prefetch), two timed.
DATA_EPOCHS = 3


@dataclass
class BenchRow:
    """One network's measurement: one row of each table."""

    model_name: str
    img_shape: tuple[int, int]
    batch_size: int
    compile_seconds: float
    median_step_seconds: float
    forward_seconds: float
    data_seconds: float

    @property
    def images_per_second(self) -> float:
        return self.batch_size / self.median_step_seconds

    @property
    def backward_update_seconds(self) -> float:
        return self.median_step_seconds - self.forward_seconds


@dataclass
class TrainParts:
    """The cells of one training step, built as the trainer builds them (the profile times each)."""

    network: Any
    loss_net: Any
    train_net: Any


def load_average() -> str:
    """The 1/5/15-minute load: on a shared machine it says how far to trust the step times."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def synthetic_batch(config: Config, batch_size: int, rng: np.random.Generator) -> list:
    """Random images and the encoded targets of 1-4 random boxes per image."""
    import mindspore as ms

    from src.boxes.anchors import default_boxes_from_config
    from src.boxes.coding import BoxCoder

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


def build_train_parts(config: Config, train_steps: int) -> TrainParts:
    """Network, loss cell and train step in training mode; the learning-rate schedule covers `train_steps` calls."""
    import mindspore as ms

    from src.models.cpu_depthwise import use_cpu_depthwise_kernels
    from src.models.init_weights import init_network_weights
    from src.models.registry import build_ssd
    from src.models.ssd import freeze_layers
    from src.train.loss import SSDWithLossCell
    from src.train.lr_schedule import warmup_cosine_lr
    from src.train.step import build_optimizer, build_train_step

    network = build_ssd(config)
    init_network_weights(network, config.num_classes)
    freeze_layers(network, config.freeze_layer)  # as the trainer does (the demo freezes the stride-8 layers)
    use_cpu_depthwise_kernels(network, bool(config.use_float16), BENCH_LOG)  # as the trainer does
    if config.use_float16:  # as the trainer does
        network.to_float(ms.float16)
    loss_net = SSDWithLossCell(network, config.gamma, config.alpha)
    lr = warmup_cosine_lr(config.lr_init, config.lr, 0.0, 0, 1, train_steps)
    train_net = build_train_step(loss_net, build_optimizer(loss_net, lr, config), config)
    train_net.set_train(True)
    return TrainParts(network, loss_net, train_net)


def call_and_wait(call: Callable[[], Any]) -> None:
    """Run a compiled cell and copy out its first output, so the time covers the work and not only its launch."""
    outputs = call()
    (outputs[0] if isinstance(outputs, (tuple, list)) else outputs).asnumpy()


def time_in_turn(calls: dict[str, Callable[[], Any]], steps: int) -> dict[str, tuple[float, float]]:
    """Per call: (seconds of the first run, which compiles its graph; median of `steps` runs after it).

    The first runs go in the dict's order (the first one pays the cold compile a training run pays).
    The timed runs take the calls in turn, round after round, so a change of load on a shared
    machine shifts every median alike instead of one call's.
    """
    first, times = {}, {name: [] for name in calls}
    for name, call in calls.items():
        started = time.perf_counter()
        call_and_wait(call)
        first[name] = time.perf_counter() - started
    for _ in range(steps):
        for name, call in calls.items():
            started = time.perf_counter()
            call_and_wait(call)
            times[name].append(time.perf_counter() - started)
    return {name: (first[name], statistics.median(times[name])) for name in calls}


def data_mindrecord(folder: Path) -> tuple[Path, str]:
    """coco128 (generated demo images without ../shared) as train.py converts it, and its description.

    Read with the COCO classes of the ssd300 recipe whatever config is measured: the pipeline's cost
    depends on the images, the input size, the augmentation and the anchors, not on the class names.
    """
    from bench.bench_pipeline import source_records, training_mindrecord

    records, description = source_records(folder, list(load_config(NETWORKS["ssd300"].cpu_config_path).classes))
    return training_mindrecord(records, folder / "mindrecord"), description


def data_seconds_per_batch(mindrecord: Path, config: Config, batch_size: int) -> float:
    """Seconds the config's training pipeline (the trainer's worker count) takes per batch, running alone."""
    from bench.bench_pipeline import pipeline_rate

    rate = pipeline_rate(mindrecord, config, batch_size, int(config.num_parallel_workers), DATA_EPOCHS,
                         python_multiprocessing=False)
    return batch_size / rate


def bench_network(config: Config, batch_size: int, steps: int, mindrecord: Path) -> BenchRow:
    """Compile and time the config's train step and its forward part in turn, then time its data pipeline."""
    parts = build_train_parts(config, steps + 1)
    batch = synthetic_batch(config, batch_size, np.random.default_rng(0))
    timed = time_in_turn({"step": lambda: parts.train_net(*batch), "forward": lambda: parts.loss_net(*batch)},
                         steps)
    (compile_seconds, step_seconds), (_, forward_seconds) = timed["step"], timed["forward"]
    return BenchRow(config.model_name, tuple(config.img_shape), batch_size, compile_seconds, step_seconds,
                    forward_seconds, data_seconds_per_batch(mindrecord, config, batch_size))


def format_table(rows: list[BenchRow], steps: int) -> str:
    header = (f"{'model':<22} {'img_shape':>9} {'batch':>5} {'compile s':>9} "
              f"{'median step s':>13} {'img/s':>7}   (median of {steps} timed steps)")
    lines = [header, "-" * len(header)]
    for row in rows:
        shape = "x".join(str(v) for v in row.img_shape)
        lines.append(f"{row.model_name:<22} {shape:>9} {row.batch_size:>5} {row.compile_seconds:>9.1f} "
                     f"{row.median_step_seconds:>13.2f} {row.images_per_second:>7.2f}")
    return "\n".join(lines)


def format_split(rows: list[BenchRow]) -> str:
    """The median step split in two, the pipeline's time per batch and the first (compiling) step."""
    header = (f"{'model':<22} {'forward s':>9} {'backward+update s':>17} {'data s/batch':>12} "
              f"{'first step (compile) s':>22}")
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row.model_name:<22} {row.forward_seconds:>9.3f} {row.backward_update_seconds:>17.3f} "
                     f"{row.data_seconds:>12.3f} {row.compile_seconds:>22.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", default=None,
                        help="config to benchmark (repeatable); default: the five CPU configs")
    parser.add_argument("--batch_size", type=int, default=None, help="default: each config's batch_size")
    parser.add_argument("--steps", type=int, default=8, help="timed steps after the compiling one (default 8)")
    parser.add_argument("--float16", action="store_true", help="train with use_float16: True")
    parser.add_argument("--graph_kernel", action="store_true", help="ms.set_context(enable_graph_kernel=True)")
    parser.add_argument("--jit_level", choices=("O0", "O1", "O2"), default=None,
                        help="ms.set_context(jit_config={'jit_level': ...}); default: MindSpore's")
    args = parser.parse_args(argv)
    if args.steps < 1 or (args.batch_size is not None and args.batch_size < 1):
        parser.error("--steps and --batch_size must be at least 1")
    try:
        overrides = {"use_float16": True} if args.float16 else None
        paths = args.config or [record.cpu_config_path for record in NETWORKS.values()]
        configs = [load_config(path, overrides) for path in paths]
    except ConfigError as err:
        parser.error(str(err))
    devices = sorted({config.device_target for config in configs})
    if len(devices) != 1:
        parser.error(f"the configs name several device targets {devices}; benchmark one device per run")
    print(cap_onednn_isa(devices[0]) or "device target is not CPU: no oneDNN cap")
    import mindspore as ms  # after the oneDNN cap, which must be in place before the first op

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device(devices[0])
    if args.graph_kernel:
        ms.set_context(enable_graph_kernel=True)
    if args.jit_level:
        ms.set_context(jit_config={"jit_level": args.jit_level})
    print(describe_machine(), flush=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"float16 {args.float16}, graph kernel {args.graph_kernel}, jit_level {args.jit_level or 'default'}")
    print(f"load average (1, 5, 15 min) at start: {load_average()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as temp:
        mindrecord, description = data_mindrecord(Path(temp))
        for config in configs:
            batch_size = args.batch_size or int(config.batch_size)
            print(f"... {config.model_name}: batch {batch_size}, 1 compiling + {args.steps} timed steps", flush=True)
            rows.append(bench_network(config, batch_size, args.steps, mindrecord))
            gc.collect()  # the previous network's buffers go before the next one is built
    print(f"\ntraining step on {devices[0]}:")
    print(format_table(rows, args.steps))
    print(f"\nsplit of the median step (forward: network + loss in training mode, timed in turn with the step; "
          f"data: the training pipeline alone on {description}, {DATA_EPOCHS - 1} epochs after a warm-up):")
    print(format_split(rows))
    print(f"load average (1, 5, 15 min) at the end: {load_average()}")


if __name__ == "__main__":
    main()
