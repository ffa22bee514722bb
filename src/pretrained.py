"""ImageNet classification weights for an SSD backbone (``feature_extractor_base_param``).

Detection fine-tuned from an ImageNet backbone converges much faster than from scratch, but the
classification checkpoints name their tensors after the classification network, not after
the SSD backbone. Each ``model_name`` therefore registers a ``BackboneMapping`` in
``BACKBONE_MAPPINGS``: which sub-cell receives the weights, the classification-checkpoint key
of each of its parameters, and how a torchvision ``.pth`` is renamed to that checkpoint naming.
Only ``ssd300`` (MobileNetV2) is registered so far; MobileNetV1, ResNet-50 and VGG16 add an entry
with their own key function.

Both checkpoint kinds are accepted: a MindSpore ``.ckpt`` in the model zoo's naming and a
PyTorch file (read without torch by ``src.torch_pickle``). Loading is checked: the report counts
what was loaded and lists what was not, and a checkpoint that fits nothing, or whose shapes
disagree with the network, is an error rather than a silent from-scratch run.

ImageNet MobileNetV2s (torchvision and the zoo's classifier) use BatchNorm eps 1e-5, SSD's
backbone 1e-3. A third of the ImageNet channels have running variances below 1e-3, so copying
the statistics as they are shrinks those channels up to 10x and the features stop being
ImageNet features (the classifier on top no longer recognises a zebra). Each BN's gamma is
therefore rescaled by sqrt((var + eps_ssd) / (var + eps_imagenet)), which makes the layer
compute exactly what it computed in the classification network; all other tensors are copied.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import mindspore as ms
from mindspore import nn

from src.checkpoint import MAX_LISTED, CheckpointMismatchError, read_checkpoint
from src.mobilenet_v2 import FIRST_SPLIT_BLOCKS
from src.torch_pickle import is_torch_file, load_torch_state_dict

#: torch BatchNorm leaf names -> MindSpore ``BatchNorm2d`` parameter names.
TORCH_BN_LEAVES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                   "running_var": "moving_variance"}
#: torch bookkeeping tensors with no MindSpore counterpart.
TORCH_IGNORED_LEAVES = ("num_batches_tracked",)
#: Cells of the zoo's classification ``features`` before the SSD split: the stem + blocks 0..12.
MOBILENET_V2_SPLIT = FIRST_SPLIT_BLOCKS + 1


@dataclass
class BackboneLoadReport:
    """What ``load_backbone_weights`` did, for the training log."""

    path: str
    model_name: str
    loaded: int
    left_at_init: list[str]
    unused: list[str]
    mismatched: list[str]
    bn_eps_adjusted: int = 0

    def summary(self) -> str:
        """One headline line, then the (truncated) lists of what did not load."""
        lines = [f"backbone of {self.model_name}: loaded {self.loaded} tensors from {self.path}; "
                 f"{len(self.left_at_init)} left at initial values, {len(self.unused)} checkpoint tensors unused, "
                 f"{len(self.mismatched)} shape mismatches, {self.bn_eps_adjusted} BatchNorm gammas rescaled "
                 "for the eps difference"]
        for title, names in (("left at initial values", self.left_at_init), ("unused", self.unused),
                             ("shape mismatches", self.mismatched)):
            if names:
                shown = ", ".join(names[:MAX_LISTED])
                more = f" ... and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
                lines.append(f"  {title}: {shown}{more}")
        return "\n".join(lines)


@dataclass(frozen=True)
class BackboneMapping:
    """How one SSD model finds its backbone tensors in an ImageNet classification checkpoint.

    ``cell_path``: attribute path of the receiving sub-cell inside the SSD network.
    ``source_key``: parameter name relative to that cell -> key in the classification checkpoint
    (MindSpore model-zoo naming), or None for a parameter ImageNet training does not provide.
    ``from_torch``: renames a torchvision state dict into that model-zoo naming.
    """

    cell_path: str
    source_key: Callable[[str], str | None]
    from_torch: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    source_bn_eps: float = 1e-5  # BatchNorm eps the classification network was trained with


def rename_torch_batchnorm(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torch names -> MindSpore leaf names: BN weight/bias/running stats become gamma/beta/moving_*.

    A module is a BatchNorm iff it has ``running_mean`` (convolution weights keep ``weight``);
    ``num_batches_tracked`` is dropped.
    """
    bn_modules = {key.rsplit(".", 1)[0] for key in state if key.endswith(".running_mean")}
    renamed = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if leaf in TORCH_IGNORED_LEAVES:
            continue
        if module in bn_modules and leaf in TORCH_BN_LEAVES:
            leaf = TORCH_BN_LEAVES[leaf]
        renamed[f"{module}.{leaf}" if module else leaf] = value
    return renamed


def _wrap_conv_bn_relu(key: str) -> str:
    """``a.3.0.weight`` -> ``a.3.features.0.weight``.

    torchvision's conv+BN+ReLU6 unit is a plain ``Sequential`` (children 0 conv, 1 BN) while
    the zoo wraps it in a ``ConvBNReLU`` cell holding it as ``features``; so wherever an index
    is directly followed by another index, the zoo has ``features`` between them. Plain conv/BN
    children of an inverted-residual block (``conv.2.weight``) keep their names.
    """
    parts = key.split(".")
    out = []
    for part, following in zip(parts, parts[1:] + [""]):
        out.append(part)
        if part.isdigit() and following.isdigit():
            out.append("features")
    return ".".join(out)


def torchvision_mobilenet_v2_to_zoo(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torchvision MobileNetV2 state dict -> the zoo's MobileNetV2 classification checkpoint names.

    ``features.{i}`` keeps its index (both nets list stem, 17 blocks, last 1x1 conv in order);
    the classifier ``classifier.1`` (after dropout) becomes the zoo head's dense ``head.1``.
    """
    zoo = {}
    for key, value in rename_torch_batchnorm(state).items():
        key = _wrap_conv_bn_relu(key)
        if key.startswith("classifier.1."):
            key = "head.1." + key[len("classifier.1."):]
        zoo[key] = value
    return zoo


def ssd300_source_key(name: str) -> str | None:
    """``MobileNetV2Backbone`` parameter -> zoo MobileNetV2 classification key.

    ``features_1.i`` is ``features.i`` (i < 14) and ``features_2.j`` is ``features.(j + 14)``.
    ``expand_layer_conv_13`` re-creates the expansion conv+BN of block 13 (``features.14.conv.0``),
    so it starts from those ImageNet weights too.
    """
    cell, _, rest = name.partition(".")
    index, _, leaf = rest.partition(".")
    if cell == "features_1" and index.isdigit():
        return f"features.{int(index)}.{leaf}"
    if cell == "features_2" and index.isdigit():
        return f"features.{int(index) + MOBILENET_V2_SPLIT}.{leaf}"
    if cell == "expand_layer_conv_13":
        return f"features.{MOBILENET_V2_SPLIT}.conv.0.{rest}"
    return None


#: ``config.model_name`` -> how its backbone is filled from an ImageNet checkpoint.
BACKBONE_MAPPINGS: dict[str, BackboneMapping] = {
    "ssd300": BackboneMapping("backbone", ssd300_source_key, torchvision_mobilenet_v2_to_zoo),
}


def resolve_weights_path(path: str | Path, search_dirs: Sequence[str | Path] = ()) -> Path:
    """An absolute path as given; a relative one against the current directory, then each of ``search_dirs``."""
    path = Path(path)
    candidates = [path] if path.is_absolute() else [Path.cwd() / path] + [Path(d) / path for d in search_dirs]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"backbone checkpoint (feature_extractor_base_param) not found; tried: "
                            f"{', '.join(str(c) for c in candidates)}")


def read_classification_weights(path: Path, mapping: BackboneMapping) -> dict[str, np.ndarray]:
    """A MindSpore ``.ckpt`` as stored, or a torch file renamed by ``mapping.from_torch``."""
    if is_torch_file(path):
        return mapping.from_torch(load_torch_state_dict(path))
    return {name: param.asnumpy() for name, param in read_checkpoint(path).items()}


def _mapping_for(model_name: str) -> BackboneMapping:
    if model_name not in BACKBONE_MAPPINGS:
        raise ValueError(f"no ImageNet backbone mapping for model_name {model_name!r} (known: "
                         f"{', '.join(sorted(BACKBONE_MAPPINGS))}); leave feature_extractor_base_param empty")
    return BACKBONE_MAPPINGS[model_name]


def _sub_cell(network: nn.Cell, cell_path: str) -> nn.Cell:
    cell = network
    for attribute in cell_path.split("."):
        cell = getattr(cell, attribute)
    return cell


def plan_backbone_load(weights: Mapping[str, np.ndarray], backbone: nn.Cell, mapping: BackboneMapping,
                       path: str, model_name: str) -> tuple[dict[str, np.ndarray], BackboneLoadReport]:
    """Match checkpoint tensors to backbone parameters by key and shape, without changing anything.

    Returns the values to set (backbone-relative name -> array) and the report; one checkpoint
    tensor may feed several parameters (``expand_layer_conv_13`` and block 13's expansion).
    """
    values, left, mismatched, used = {}, [], [], set()
    for name, param in backbone.parameters_and_names():
        key = mapping.source_key(name)
        if key is None or key not in weights:
            left.append(name)
            continue
        used.add(key)
        if tuple(weights[key].shape) != tuple(param.shape):
            mismatched.append(f"{name} {list(param.shape)} <- {key} {list(weights[key].shape)}")
            continue
        values[name] = weights[key]
    unused = [key for key in weights if key not in used]
    return values, BackboneLoadReport(str(path), model_name, len(values), left, unused, mismatched)


def adapt_batchnorm_eps(values: dict[str, np.ndarray], backbone: nn.Cell, source_eps: float) -> int:
    """Rescale each loaded BN gamma so the layer's output is unchanged under the backbone's own eps.

    ``gamma * (x - mean) / sqrt(var + eps_src)`` equals ``gamma' * (x - mean) / sqrt(var + eps)``
    for ``gamma' = gamma * sqrt((var + eps) / (var + eps_src))``: exact with moving statistics, and
    close with batch statistics of similar data. Updates ``values``; returns how many BNs changed.
    """
    adjusted = 0
    for cell_name, cell in backbone.cells_and_names():
        gamma, variance = f"{cell_name}.gamma", f"{cell_name}.moving_variance"
        if isinstance(cell, nn.BatchNorm2d) and cell.eps != source_eps and gamma in values and variance in values:
            var = values[variance].astype(np.float64)
            scale = np.sqrt((var + cell.eps) / (var + source_eps))
            values[gamma] = (values[gamma] * scale).astype(values[gamma].dtype)
            adjusted += 1
    return adjusted


def load_backbone_weights(network: nn.Cell, path: str | Path, model_name: str,
                          search_dirs: Sequence[str | Path] = ()) -> BackboneLoadReport:
    """Fill the backbone of an SSD ``network`` from an ImageNet classification checkpoint.

    ``path`` is a MindSpore ``.ckpt`` in the model zoo's classification naming or a PyTorch
    (torchvision) file; a relative path is looked up in the current directory, then in each
    of ``search_dirs`` (the trainer passes ``config.load_path``). Parameters the checkpoint does
    not provide keep their values; BN gammas are adapted to the backbone's eps
    (``adapt_batchnorm_eps``). Raises ``CheckpointMismatchError`` (a ``ValueError``) naming
    the file when any shape disagrees or when nothing at all fits.
    """
    mapping = _mapping_for(model_name)
    resolved = resolve_weights_path(path, search_dirs)
    backbone = _sub_cell(network, mapping.cell_path)
    values, report = plan_backbone_load(read_classification_weights(resolved, mapping), backbone, mapping,
                                        str(resolved), model_name)
    if report.mismatched or report.loaded == 0:
        problems = report.mismatched or [f"expected keys like {mapping.source_key(name)}"
                                         for name in report.left_at_init[:3]]
        found = f"; the file holds e.g. {', '.join(report.unused[:3])}" if report.unused else ""
        raise CheckpointMismatchError(
            f"{resolved} does not fit the {model_name} backbone ({len(report.mismatched)} shape mismatches, "
            f"{report.loaded} tensors loadable{found}); pass an ImageNet classification checkpoint of the "
            f"{model_name} backbone network:\n  " + "\n  ".join(problems[:MAX_LISTED]))
    report.bn_eps_adjusted = adapt_batchnorm_eps(values, backbone, mapping.source_bn_eps)
    params = dict(backbone.parameters_and_names())
    for name, value in values.items():
        params[name].set_data(ms.Tensor(value, dtype=params[name].dtype))
    return report
