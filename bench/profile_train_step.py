"""Where one SSD training step goes on CPU: stage by stage, then op by op (MindSpore's profiler).

Usage: .venv/bin/python bench/profile_train_step.py [--config config/ssd300_config_cpu.yaml]
       [--batch_size N] [--steps 8] [--profile_steps 2]

Stages, each its own GRAPH_MODE graph on one fixed synthetic batch (bench_train.py's): the network
in inference mode, the network in training mode, network + loss, network + loss + backward (the
gradients, no update), and the full train step the trainer runs (src/train/step.py: Momentum, with
loss scaling and overflow scan where the step keeps them); then the config's data pipeline alone,
per batch, on coco128. Every stage runs once to compile (the train step first: its first run is the
cold compile a training run pays; the later graphs reuse its kernels), then the stages run in turn
for ``--steps`` rounds and the table shows medians, so a change of load on a shared machine shifts
every row alike. Then ``--profile_steps`` train steps run under ``mindspore.profiler.profile`` (CPU
op timing works on the CPU build of MindSpore 2.10): the top ops by total time, and the
convolutions by kind.

What it found for ssd300 (MobileNetV2, 300x300, batch 8) on a 2-core AMD EPYC shared with other
jobs (2026-12-04, three runs; steps of 1.4-3.1 s as the load varied, so read shares, not seconds):
forward 25-30 % of the step (training mode 0-12 % dearer than inference mode), loss 2-3 %, backward
about 65 %, the rest (step minus gradients: Momentum and bookkeeping) about 5 %, of which the
profiled ApplyMomentum ops are under 1 %; the data pipeline alone needs 0.02-0.05 s per batch. The
profiled op times add up to 93-97 % of the wall step: framework time between ops is small.
Convolutions take two thirds of the op time (backward-input 21-26 %, backward-filter 23-25 %,
forward 15-19 %), BatchNorm and its gradient 20-24 %, ReLU6 and its gradient 5-6 %; the loss
(BCEWithLogitsLoss and friends) and the 255 ApplyMomentum calls are under 1 % each.

Why: the 33 depthwise 3x3 convolutions do 6 % of the network's multiply-adds but take 40-47 % of
all op time, while the 55 1x1 convolutions, 92 % of the multiply-adds, take 19-22 %: 1-3 GMAC/s
against 25-60. MindSpore hands oneDNN plain NCHW tensors, and for a grouped convolution in that
layout oneDNN runs ``gemm:jit`` (``ONEDNN_VERBOSE=1`` shows it: an im2col and a GEMM with one input
channel per group) instead of its direct depthwise kernels, which want a blocked or channels-last
layout; it is slowest in the two backward passes and at the early 150x150 and 75x75 layers with
96-144 channels. BatchNorm in training mode is a separate pass over those same large activations,
forward and again backward (no conv+BN fusion while training). The time to win is in those
kernels, not in the loss or the optimiser.

Since then the depthwise layers train on the project's kernel (src/models/cpu_depthwise.py), which
shows as 99 ``Custom`` ops (33 layers x forward and two gradients). The same profile on the same
2-core AMD EPYC (2026-12-04): depthwise 218 ms per step against 448 ms on oneDNN (forward 61 against
112), step 0.82 s against 1.05 s; BatchNorm and its gradient (about 30 %) and the 1x1 convolutions
(about 28 %) are now the largest parts.
"""
from __future__ import annotations

import argparse
import csv
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import nn, ops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_train import (build_train_parts, call_and_wait, data_mindrecord, data_seconds_per_batch,  # noqa: E402
                               load_average, synthetic_batch, time_in_turn)
from bench.machine_info import describe_machine  # noqa: E402
from src.model_utils.config import Config, ConfigError, load_config  # noqa: E402
from src.model_utils.device_adapter import cap_onednn_isa  # noqa: E402

DEFAULT_CONFIG = "config/ssd300_config_cpu.yaml"
TOP_OPS = 15
#: Stage names as the table shows them, in its order; the train step is compiled first nevertheless.
STEP = "train step (src/train/step.py)"
INFERENCE = "forward, inference mode"
FORWARD = "forward, training mode"
WITH_LOSS = "forward + loss"
WITH_BACKWARD = "forward + loss + backward"
STAGE_ORDER = (INFERENCE, FORWARD, WITH_LOSS, WITH_BACKWARD, STEP)
#: MindSpore's CPU convolution kernels, by the part of the step they run in.
CONV_OPS = {"Conv2D": "forward", "Conv2DBackpropInput": "backward input", "Conv2DBackpropFilter": "backward filter"}
#: The depthwise layers on the project's CPU kernel (src/models/cpu_depthwise.py) run as aot Custom ops.
KERNEL_KIND = "depthwise 3x3*"


@dataclass
class OpTime:
    """One op type's (or one convolution kind's) calls and milliseconds per profiled step."""

    name: str
    calls: float
    ms: float


class LossGradients(nn.Cell):
    """``(*inputs) -> gradients of every trainable weight``: the step without loss scaling and update."""

    def __init__(self, loss_net: nn.Cell) -> None:
        super().__init__(auto_prefix=False)
        self.loss_net = loss_net
        self.weights = ms.ParameterTuple(loss_net.trainable_params())
        self.grad = ops.GradOperation(get_by_list=True)

    def construct(self, *inputs):
        return self.grad(self.loss_net, self.weights)(*inputs)


def stage_calls(config: Config, batch: list, steps: int) -> tuple[dict[str, Callable[[], Any]], Any]:
    """The stages' calls (the train step first, so that it compiles cold) and the train step cell.

    The inference-mode network is a second instance: switching the trained one between modes every
    round would measure the switch too.
    """
    from src.models.init_weights import init_network_weights
    from src.models.registry import build_ssd

    parts = build_train_parts(config, steps)
    inference = build_ssd(config)
    init_network_weights(inference, int(config.num_classes))
    inference.set_train(False)
    gradients = LossGradients(parts.loss_net)
    calls = {STEP: lambda: parts.train_net(*batch), INFERENCE: lambda: inference(batch[0]),
             FORWARD: lambda: parts.network(batch[0]), WITH_LOSS: lambda: parts.loss_net(*batch),
             WITH_BACKWARD: lambda: gradients(*batch)}
    return calls, parts


def format_stages(timed: dict[str, tuple[float, float]], data_seconds: float, data_description: str) -> str:
    """The stage table and what the differences of its medians say."""
    step = timed[STEP][1]
    header = f"{'stage':<34} {'first run s':>11} {'median s':>9} {'of the step':>11}"
    lines = [header, "-" * len(header)]
    for name in STAGE_ORDER:
        first, median = timed[name]
        lines.append(f"{name:<34} {first:>11.1f} {median:>9.3f} {median / step:>10.0%}")
    lines.append(f"{'data pipeline per batch, alone':<34} {'':>11} {data_seconds:>9.3f} {data_seconds / step:>10.0%}"
                 f"   ({data_description})")
    median = {name: values[1] for name, values in timed.items()}
    parts = (("training- over inference-mode forward", median[FORWARD] - median[INFERENCE]),
             ("loss", median[WITH_LOSS] - median[FORWARD]),
             ("backward", median[WITH_BACKWARD] - median[WITH_LOSS]),
             ("update and the rest of the step", median[STEP] - median[WITH_BACKWARD]))
    lines.append("differences of medians: " + "; ".join(f"{name} {seconds:.3f} s" for name, seconds in parts))
    return "\n".join(lines)


def profile_train_steps(train_call: Callable[[], Any], steps: int, folder: Path) -> tuple[Path | None, float]:
    """Run `steps` train steps under MindSpore's profiler (CPU op timing).

    Returns the folder of its op tables (None when it wrote none: its methods log errors instead of
    raising) and the median wall seconds of the profiled steps, to compare with the ops' sum.
    """
    from mindspore.profiler import ProfilerActivity, profile, tensorboard_trace_handler

    profiler = profile(activities=[ProfilerActivity.CPU], start_profile=False,
                       on_trace_ready=tensorboard_trace_handler(str(folder)))
    profiler.start()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        call_and_wait(train_call)
        times.append(time.perf_counter() - started)
    profiler.stop()
    tables = sorted(folder.glob("*/FRAMEWORK/cpu_op_type_info_*.csv"))
    return (tables[0].parent if tables else None), float(np.median(times))


def read_rows(framework: Path, pattern: str) -> list[dict[str, str]]:
    with next(framework.glob(pattern)).open(newline="") as handle:
        return list(csv.DictReader(handle))


def op_types(framework: Path, steps: int) -> list[OpTime]:
    """Every op type's calls and milliseconds per step, the longest first."""
    rows = read_rows(framework, "cpu_op_type_info_*.csv")
    ops = [OpTime(row["op_type"], int(row["type_occurrences"]) / steps, float(row["total_compute_time"]) / steps)
           for row in rows]
    return sorted(ops, key=lambda op: op.ms, reverse=True)


def conv_kinds(network: Any) -> dict[str, str]:
    """Cell path of every Conv2d of the network -> its kind ("depthwise 3x3", "dense 1x1", ...)."""
    kinds = {}
    for name, cell in network.cells_and_names():
        if isinstance(cell, nn.Conv2d):
            kernel = "x".join(str(side) for side in cell.kernel_size)
            kinds[name] = f"{'depthwise' if cell.group > 1 else 'dense'} {kernel}"
    return kinds


def op_cell_path(full_op_name: str) -> str:
    """The profiler's scope of an op as a dotted cell path: 'Default/network-SSDWithLossCell/.../0-Conv2d/
    Grad_Conv2D/Conv2DBackpropInput-op0' -> 'network. ... .0' (scopes are '<attribute>-<class>')."""
    return ".".join(scope.rsplit("-", 1)[0] for scope in full_op_name.split("/")[:-1] if "-" in scope)


def conv_times(framework: Path, steps: int, kinds: dict[str, str]) -> dict[str, dict[str, OpTime]]:
    """Convolution milliseconds per step by kind, then by part of the step (forward, backward input/filter)."""
    table: dict[str, dict[str, OpTime]] = defaultdict(dict)
    for row in read_rows(framework, "cpu_op_detail_info_*.csv"):
        if row["op_type"] == "Custom":  # the profiler files both gradients under one layer's scope
            name = "gradients" if "/Grad_Custom/" in row["full_op_name"] else "forward"
            part = table[KERNEL_KIND].setdefault(name, OpTime(name, 0.0, 0.0))
            part.calls += int(row["op_occurrences"]) / steps
            part.ms += float(row["op_total_time(ms)"]) / steps
            continue
        if row["op_type"] not in CONV_OPS:
            continue
        path = op_cell_path(row["full_op_name"])
        owners = [name for name in kinds if path == name or path.endswith("." + name)]
        kind = kinds[max(owners, key=len)] if owners else "unmatched"
        part = table[kind].setdefault(CONV_OPS[row["op_type"]], OpTime(CONV_OPS[row["op_type"]], 0.0, 0.0))
        part.calls += int(row["op_occurrences"]) / steps
        part.ms += float(row["op_total_time(ms)"]) / steps
    return table


def format_ops(ops: list[OpTime], convs: dict[str, dict[str, OpTime]], wall_seconds: float, steps: int) -> str:
    """Top op types, then the convolutions by kind; shares are of the summed op time."""
    total = sum(op.ms for op in ops)
    lines = [(f"MindSpore profiler, {steps} train steps: ops sum {total:.0f} ms per step, median wall step "
              f"{wall_seconds * 1000:.0f} ms while profiled (the rest is framework time between ops)"),
             f"\ntop {TOP_OPS} op types by total time:"]
    header = f"{'op type':<24} {'calls/step':>10} {'ms/step':>9} {'share':>7}"
    lines += [header, "-" * len(header)]
    lines += [f"{op.name:<24} {op.calls:>10.0f} {op.ms:>9.1f} {op.ms / total:>7.1%}" for op in ops[:TOP_OPS]]
    lines.append("\nconvolutions by kind (ms per step; share of all op time):")
    header = (f"{'kind':<16} {'layers':>6} " + " ".join(f"{part:>15}" for part in CONV_OPS.values())
              + f" {'total':>9} {'share':>7}")
    lines += [header, "-" * len(header)]
    for kind, parts in sorted(convs.items(), key=lambda item: -sum(p.ms for p in item[1].values())):
        kind_ms = sum(part.ms for part in parts.values())
        layers = parts["forward"].calls if "forward" in parts else 0
        cells = " ".join(f"{parts[name].ms if name in parts else 0.0:>15.1f}" for name in CONV_OPS.values())
        lines.append(f"{kind:<16} {layers:>6.0f} {cells} {kind_ms:>9.1f} {kind_ms / total:>7.1%}")
    if KERNEL_KIND in convs:
        gradients = convs[KERNEL_KIND].get("gradients", OpTime("gradients", 0.0, 0.0))
        lines.append(f"* on the project's CPU kernel (Custom ops): its two gradients, {gradients.ms:.1f} ms, are in "
                     "the total only (the profiler files them under one layer)")
    return "\n".join(lines)


def report_profile(calls: dict[str, Callable[[], Any]], network: Any, steps: int) -> None:
    """Print the op tables of `steps` profiled train steps, or why there are none."""
    with tempfile.TemporaryDirectory(prefix="profile_train_step_") as temp:
        framework, wall_seconds = profile_train_steps(calls[STEP], steps, Path(temp))
        if framework is None:
            print("MindSpore profiler wrote no op table on this machine (see its messages above)")
            return
        print(format_ops(op_types(framework, steps), conv_times(framework, steps, conv_kinds(network)),
                         wall_seconds, steps))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"default {DEFAULT_CONFIG}; e.g. config/ssd300_demo_config_cpu.yaml")
    parser.add_argument("--batch_size", type=int, default=None, help="default: the config's batch_size")
    parser.add_argument("--steps", type=int, default=8, help="timed rounds of every stage (default 8)")
    parser.add_argument("--profile_steps", type=int, default=2,
                        help="train steps under MindSpore's profiler (default 2; 0: no profile)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.profile_steps < 0 or (args.batch_size is not None and args.batch_size < 1):
        parser.error("--steps and --batch_size must be at least 1, --profile_steps at least 0")
    try:
        config = load_config(args.config)
    except ConfigError as err:
        parser.error(str(err))
    print(cap_onednn_isa(config.device_target) or "device target is not CPU: no oneDNN cap")
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device(config.device_target)
    batch_size = args.batch_size or int(config.batch_size)
    print(describe_machine(), flush=True)
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"{config.model_name} {'x'.join(str(v) for v in config.img_shape)}, batch {batch_size}; "
          f"load average (1, 5, 15 min) at start: {load_average()}", flush=True)
    batch = synthetic_batch(config, batch_size, np.random.default_rng(0))
    calls, parts = stage_calls(config, batch, 1 + args.steps + args.profile_steps)
    print(f"... compiling {len(calls)} graphs, then {args.steps} rounds of them in turn", flush=True)
    timed = time_in_turn(calls, args.steps)
    with tempfile.TemporaryDirectory(prefix="profile_train_step_") as temp:
        mindrecord, description = data_mindrecord(Path(temp))
        data_seconds = data_seconds_per_batch(mindrecord, config, batch_size)
    print(f"\none training step, stage by stage (medians of {args.steps} rounds):")
    print(format_stages(timed, data_seconds, description))
    if args.profile_steps:
        print(flush=True)
        report_profile(calls, parts.network, args.profile_steps)
    print(f"load average (1, 5, 15 min) at the end: {load_average()}")


if __name__ == "__main__":
    main()
