"""Checkpoint loading that refuses a mismatch, filtering for transfer learning, atomic saving.

MindSpore's own loader silently skips parameters whose names do not fit and only warns; a user
who passes the checkpoint of another network would then evaluate random weights. Everything here
compares names and shapes first and raises one error that lists the first mismatches.

``read_checkpoint`` is the one door every ``.ckpt`` comes in by (eval, export, predict, resume,
--pre_trained, ImageNet backbones): it also refuses a file that is not a checkpoint and one whose
tensors hold NaN/Inf (a diverged run), which would otherwise evaluate to mAP 0 or train on NaN.

Given the run's config, ``load_network_weights`` first says in one line what the usual mismatches
are: a checkpoint of another network (found by its tensor names among the registry's networks) or
one trained for another class count (read from the shapes of the network's class tensors, which
the registry record names). ``drop`` entries are the model zoo's name fragments or fnmatch patterns
(the registry's ``class_tensors``, which ``--finetune True`` fills in).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Iterable, Sequence

import mindspore as ms
import numpy as np
from mindspore import nn

from src.model_utils.errors import SSDError, wrap_foreign_error
from src.model_utils.files import temporary_path
from src.models.registry import NETWORKS, NetworkRecord, build_ssd, network_record

#: How many mismatching tensors an error message lists before summarising the rest.
MAX_LISTED = 8
#: How many tensor names the NaN/Inf refusal lists.
MAX_NON_FINITE_LISTED = 3
_NOT_A_CHECKPOINT_FIX = ("pass a .ckpt written by train.py or mindspore.save_checkpoint (not an .onnx/.mindir file, "
                         "nor a truncated copy)")
_NUMPY_FLOATS = (ms.float16, ms.float32, ms.float64)


class CheckpointMismatchError(SSDError, ValueError):
    """A checkpoint's parameter names or shapes do not fit the network it is loaded into."""


class NonFiniteCheckpointError(SSDError):
    """A checkpoint whose tensors hold NaN or Inf: the run that wrote it had diverged."""


def read_checkpoint(path: str | Path) -> dict[str, ms.Parameter]:
    """Load a ``.ckpt`` file; an error names the file when it is missing, not a checkpoint, or holds NaN/Inf."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} "
                                "(check --checkpoint_file_path / --pre_trained / --resume)")
    params = _load_file(path)
    _refuse_non_finite(params, path)
    return params


def _load_file(path: Path) -> dict[str, ms.Parameter]:
    """MindSpore's loader, its errors wrapped with the file named (its own message may omit it)."""
    if path.stat().st_size == 0:
        raise wrap_foreign_error(path, "a MindSpore checkpoint", ValueError("the file is empty"), _NOT_A_CHECKPOINT_FIX)
    try:
        return ms.load_checkpoint(str(path))
    except (RuntimeError, ValueError, TypeError) as error:
        # A protobuf file of another kind (an .onnx) parses to no tensors; MindSpore then blames a filter.
        reason = ValueError("no tensors in it") if "dict is empty" in str(error) else error
        raise wrap_foreign_error(path, "a MindSpore checkpoint", reason, _NOT_A_CHECKPOINT_FIX) from error


def _holds_non_finite(value: object) -> bool:
    """True for a float tensor with a NaN or Inf; numpy cannot hold bfloat16 or float8, so those are widened first."""
    if not isinstance(value, ms.Tensor) or value.dtype not in ms.dtype.float_type:
        return False
    array = value.asnumpy() if value.dtype in _NUMPY_FLOATS else value.astype(ms.float32).asnumpy()
    return not np.isfinite(array).all()


def _refuse_non_finite(params: dict[str, ms.Parameter], path: Path) -> None:
    """Raise naming the first tensors with NaN/Inf: loading them gives NaN scores or a NaN loss, silently."""
    names = [name for name, value in params.items() if _holds_non_finite(value)]
    if not names:
        return
    listed = ", ".join(names[:MAX_NON_FINITE_LISTED]) + (", ..." if len(names) > MAX_NON_FINITE_LISTED else "")
    raise NonFiniteCheckpointError(f"checkpoint {path}: {len(names)} tensors hold NaN/Inf ({listed}); it is from a "
                                   f"diverged run, pick an earlier checkpoint")


def _describe(problems: list[str], total: int) -> str:
    listed = "\n  ".join(problems[:MAX_LISTED])
    more = f"\n  ... and {total - MAX_LISTED} more" if total > MAX_LISTED else ""
    return f"  {listed}{more}"


def check_fits(params: dict[str, ms.Parameter], cell: nn.Cell, path: str | Path, prefix: str = "network.",
               allow_missing: Iterable[str] = ()) -> None:
    """Raise unless every ``prefix`` parameter of ``cell`` is in ``params`` with the same shape.

    Checkpoint entries outside ``prefix`` (optimiser moments, learning rate) are ignored;
    ``allow_missing`` names parameters the caller deliberately removed (filtered heads).
    """
    expected = {p.name: tuple(p.shape) for p in cell.get_parameters() if p.name.startswith(prefix)}
    given = {name: tuple(p.shape) for name, p in params.items() if name.startswith(prefix)}
    allowed = set(allow_missing)
    missing = sorted(set(expected) - set(given) - allowed)
    unexpected = sorted(set(given) - set(expected))
    wrong_shape = sorted(n for n in set(expected) & set(given) if expected[n] != given[n])
    if not (missing or unexpected or wrong_shape):
        return
    problems = [f"shape {list(given[n])} in the checkpoint, {list(expected[n])} in the network: {n}"
                for n in wrong_shape]
    problems += [f"missing from the checkpoint: {n}" for n in missing]
    problems += [f"not in the network: {n}" for n in unexpected]
    raise CheckpointMismatchError(
        f"{path} does not fit this network ({len(wrong_shape)} shape mismatches, {len(missing)} missing, "
        f"{len(unexpected)} unexpected tensors); was it trained with another model_name or num_classes?\n"
        + _describe(problems, len(problems)))


@dataclass
class PartialLoad:
    """What ``load_network_weights`` loaded: the training log's "loaded K of N tensors" line."""

    path: str
    total: int
    dropped: list[str]
    new: list[str]
    patterns: list[str]

    def summary(self) -> str:
        """One line; the dropped tensors by the patterns that dropped them, the new ones by name."""
        line = f"loaded {self.total - len(self.new)} of {self.total} tensors from {self.path}"
        if not self.dropped:
            return line
        return (f"{line}, dropped: {len(self.dropped)} tensors matching {', '.join(self.patterns)}, "
                f"new: {_listed(self.new)}")


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "") if names else "none"


def matches_drop(name: str, drop: Sequence[str]) -> bool:
    """True when an entry of ``drop`` names ``name``: an fnmatch pattern (has * ? [) or else a name fragment."""
    return any(fnmatchcase(name, key) if any(c in key for c in "*?[") else key in name for key in drop)


def load_network_weights(path: str | Path, cell: nn.Cell, prefix: str = "network.", drop: Sequence[str] = (),
                         config: Any = None) -> PartialLoad:
    """Load the ``prefix`` tensors of a checkpoint into ``cell`` after checking they fit.

    ``drop`` lists tensors to leave at their initial values (``matches_drop``), e.g. the class heads
    when fine-tuning to another number of classes. With the run's ``config`` a checkpoint of another
    network or class count is refused in one line naming both. Returns what was loaded and dropped.
    """
    params = read_checkpoint(path)
    if config is not None:
        check_same_network(params, cell, path, config, prefix)
    dropped = [name for name in params if matches_drop(name, drop)]
    for name in dropped:
        del params[name]
    if config is not None:
        check_class_count(params, cell, path, config)
    check_fits(params, cell, path, prefix, allow_missing=dropped)
    ms.load_param_into_net(cell, {n: p for n, p in params.items() if n.startswith(prefix)}, strict_load=True)
    names = [p.name for p in cell.get_parameters() if p.name.startswith(prefix)]
    new = [name for name in names if name not in params]
    return PartialLoad(str(path), len(names), dropped, new, [key for key in drop if any(
        matches_drop(name, [key]) for name in dropped)])


def _network_names(cell: nn.Cell, prefix: str) -> set[str]:
    return {p.name for p in cell.get_parameters() if p.name.startswith(prefix)}


def check_same_network(params: dict[str, ms.Parameter], cell: nn.Cell, path: str | Path, config: Any,
                       prefix: str = "network.") -> None:
    """Raise naming both networks when the checkpoint's tensor names are those of another registry network.

    Only when the names differ from ``cell``'s: the other networks are then built (from their CPU
    configs) to find the one whose names the checkpoint has; a checkpoint of none keeps
    ``check_fits``' detailed list.
    """
    given = {name for name in params if name.startswith(prefix)}
    if given <= _network_names(cell, prefix):
        return
    for name, record in NETWORKS.items():
        if name != config.model_name and given == _record_tensor_names(record):
            raise CheckpointMismatchError(f"{path} holds the weights of {name} but the config builds "
                                          f"{config.model_name}; pass a {config.model_name} checkpoint, or the "
                                          f"config of {name} (--config_path {record.config_path.name} or its run's "
                                          "config.yaml)")


def _record_tensor_names(record: NetworkRecord) -> set[str]:
    """The ``network.*`` names of a registry network (built from its CPU config: names do not depend on it)."""
    from src.model_utils.config import load_config  # only on this error path

    return {f"network.{name}" for name, _ in build_ssd(load_config(record.cpu_config_path)).parameters_and_names()}


def checkpoint_class_count(params: dict[str, ms.Parameter], cell: nn.Cell, config: Any) -> int | None:
    """The class count a checkpoint was trained for, from its class tensors (None when it has none of them).

    A class tensor's leading dimension is anchors per location x num_classes; the network built
    from ``config`` gives the anchors per location of the same tensor.
    """
    patterns = network_record(config.model_name).class_tensors
    shapes = {p.name: tuple(p.shape) for p in cell.get_parameters()}
    for name, value in params.items():
        if name in shapes and any(fnmatchcase(name, pattern) for pattern in patterns):
            anchors = shapes[name][0] // int(config.num_classes)
            return int(value.shape[0]) // anchors if anchors and value.shape[0] % anchors == 0 else None
    return None


def check_class_count(params: dict[str, ms.Parameter], cell: nn.Cell, path: str | Path, config: Any) -> None:
    """Raise in one line when the checkpoint was trained for another class count than ``config.num_classes``."""
    trained = checkpoint_class_count(params, cell, config)
    if trained is None or trained == int(config.num_classes):
        return
    raise CheckpointMismatchError(f"{path} was trained for {trained} classes (background included) but the config "
                                  f"has num_classes {config.num_classes}; pass the config it was trained with "
                                  "(--config_path), or to train from it for other classes --pre_trained it with "
                                  "--finetune True")


def load_train_state(params: dict[str, ms.Parameter], train_net: nn.Cell, path: str | Path) -> None:
    """Load weights, optimiser moments, global step and loss-scale state into a train step cell.

    The per-step ``learning_rate`` array is not taken from the file: the caller rebuilds the same
    full-run schedule from the config, and a changed schedule should follow the config.
    """
    params = {name: p for name, p in params.items() if name != "learning_rate"}
    check_fits(params, train_net, path, prefix="network.")
    check_fits(params, train_net, path, prefix="moments.")
    not_loaded, _ = ms.load_param_into_net(train_net, params, strict_load=True)
    missing = [name for name in not_loaded if name != "learning_rate"]
    if missing:
        raise CheckpointMismatchError(f"{path} lacks training state for {len(missing)} tensors, e.g. {missing[:5]}; "
                                      "--resume needs a checkpoint written by train.py")


def save_atomically(cell: nn.Cell, path: str | Path, append_dict: dict | None = None) -> Path:
    """Write a checkpoint under a temporary name and rename it, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = temporary_path(path)  # ends in .ckpt: MindSpore appends ".ckpt" to any other name
    ms.save_checkpoint(cell, str(partial), append_dict=append_dict)
    os.replace(partial, path)
    return path
