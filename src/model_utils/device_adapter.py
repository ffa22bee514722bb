"""Device set-up shared by the entry scripts: CPU speed flag, MindSpore context, ranks, logs.

``prepare_process`` must run before the first MindSpore op: oneDNN reads its ISA cap once.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.model_utils.errors import UsageError

#: Set by the launchers MindSpore's init() works with: msrun / dynamic cluster, HCCL rank table, mpirun.
DISTRIBUTED_LAUNCH_VARIABLES = ("MS_ROLE", "RANK_TABLE_FILE", "OMPI_COMM_WORLD_SIZE")
#: oneDNN's reference kernels are ~7x slower for NCHW 3x3 convs on AVX-512/AMX CPUs; AVX2 is fast.
ONEDNN_ISA_VARIABLE = "ONEDNN_MAX_CPU_ISA"
ONEDNN_ISA_VALUE = "AVX2"


class DeviceUnavailableError(UsageError, RuntimeError):
    """The config asks for a device (GPU, Ascend) that this MindSpore build or machine does not have."""


class DistributedLaunchError(UsageError, RuntimeError):
    """run_distribute=True in a process that no distributed launcher started."""


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process sits in a (possibly distributed) job."""

    rank: int
    group_size: int
    isa_note: str | None = None


def cap_onednn_isa(device_target: str) -> str | None:
    """On CPU set ``ONEDNN_MAX_CPU_ISA=AVX2`` unless the user chose a value; returns what was done."""
    if device_target != "CPU":
        return None
    if ONEDNN_ISA_VARIABLE in os.environ:
        return f"{ONEDNN_ISA_VARIABLE}={os.environ[ONEDNN_ISA_VARIABLE]} kept as set by the user"
    os.environ[ONEDNN_ISA_VARIABLE] = ONEDNN_ISA_VALUE
    return (f"set {ONEDNN_ISA_VARIABLE}={ONEDNN_ISA_VALUE}: oneDNN's default kernels are several times "
            "slower for 3x3 convolutions on this CPU (export the variable yourself to override)")


def prepare_process(config: Any) -> ProcessInfo:
    """Cap oneDNN, set the MindSpore context, and join the communication group when distributed.

    The ISA note is returned rather than logged: the per-rank log only exists once the rank is known.
    """
    isa_note = cap_onednn_isa(config.device_target)
    import mindspore as ms  # imported here so that the ISA cap above is in place first

    ms.set_context(mode=ms.GRAPH_MODE)
    _set_device(config)
    ms.set_seed(int(config.seed))
    if not config.run_distribute:
        return ProcessInfo(rank=0, group_size=1, isa_note=isa_note)
    rank, group_size = _join_data_parallel_group(config)
    return ProcessInfo(rank=rank, group_size=group_size, isa_note=isa_note)


def _set_device(config: Any) -> None:
    """The config's device, or one clear error when this MindSpore build cannot use it."""
    import mindspore as ms

    try:
        if config.device_target == "CPU" or config.run_distribute:
            ms.set_device(config.device_target)  # distributed launchers assign the device id per rank
        else:
            ms.set_device(config.device_target, int(config.device_id))
    except RuntimeError as err:
        if "runtime has been initialized" in str(err) and ms.get_context("device_target") == config.device_target:
            return  # an earlier run in this process (a test, a notebook) already runs on that device
        if "Unsupported device target" not in str(err):
            raise
        raise DeviceUnavailableError(
            f"device_target {config.device_target} is not available in this MindSpore installation "
            f"(MindSpore {ms.__version__}; its message is above); use a config or --device_target for a device "
            "it has (e.g. CPU), or install MindSpore's build for that device") from err


def _join_data_parallel_group(config: Any) -> tuple[int, int]:
    """init() (HCCL, NCCL or MindSpore's CPU collectives, as the launcher set up), then DATA_PARALLEL with
    averaged gradients; returns (rank, group size). Batch size and learning rate are left as given."""
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    try:
        init()
    except RuntimeError as err:
        if any(name in os.environ for name in DISTRIBUTED_LAUNCH_VARIABLES):
            raise
        raise DistributedLaunchError(
            "run_distribute=True needs a distributed launcher to start this process: use "
            "scripts/run_distribute_train_cpu.sh or _gpu.sh (msrun), scripts/run_distribute_train.sh "
            "(Ascend, HCCL rank table or msrun), or msrun itself; MindSpore's message is above") from err
    group_size = get_group_size()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=group_size)
    if config.all_reduce_fusion_config:  # gradient all-reduce split points (parameter indices), as in the seed
        ms.set_auto_parallel_context(all_reduce_fusion_config=list(config.all_reduce_fusion_config))
    return get_rank(), group_size


class _ProgressBarSafeHandler(logging.StreamHandler):
    """Console handler that prints above an active tqdm bar instead of through the middle of it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stdout)


class _WarningToStderrHandler(logging.Handler):
    """Console side of a captured ``warnings.warn``: the text Python itself would print, on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(record.getMessage() + "\n")


def _strip_trailing_newline(record: logging.LogRecord) -> bool:
    """``warnings.formatwarning`` ends its text with a newline; the handlers add their own."""
    record.msg, record.args = record.getMessage().rstrip("\n"), ()
    return True


def _replace_handlers(logger: logging.Logger, handlers: list[logging.Handler]) -> None:
    """Swap in this run's handlers; the previous run's are closed so that their log files are released."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    for handler in handlers:
        logger.addHandler(handler)
    logger.propagate = False


def setup_logger(output_path: str | Path, rank: int, name: str = "train") -> logging.Logger:
    """Log to the console and to ``<output_path>/log/<name>_rank<rank>.log`` (one file per rank).

    Library modules log on the "ssd" logger configured here. Python warnings raised by library code (e.g.
    COCO evaluation dropping detections) go to the rank's file too, and still to stderr as Python prints them.
    """
    if Path(output_path).exists() and not Path(output_path).is_dir():
        raise UsageError(f"output_path {output_path} is a file, not a folder; pass a folder for the run's outputs")
    log_dir = Path(output_path) / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("ssd")
    logger.setLevel(logging.INFO)
    formatter = logging.Formatter(f"%(asctime)s [rank {rank}] %(message)s", "%Y-%m-%d %H:%M:%S")
    console, log_file = _ProgressBarSafeHandler(), logging.FileHandler(log_dir / f"{name}_rank{rank}.log")
    for handler in (console, log_file):
        handler.setFormatter(formatter)
    _replace_handlers(logger, [console, log_file])
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.addFilter(_strip_trailing_newline)
    _replace_handlers(warnings_logger, [_WarningToStderrHandler(), log_file])
    return logger


def start_run(argv: list[str] | None, description: str, log_name: str) -> tuple[Any, ProcessInfo, logging.Logger]:
    """What every entry script does first: parse the config, prepare the device, open the rank's log."""
    from src.model_utils.config import parse_args

    config = parse_args(argv, description=description)
    process = prepare_process(config)
    logger = setup_logger(config.output_path, process.rank, log_name)
    if process.isa_note:
        logger.info(process.isa_note)
    return config, process, logger
