"""ImageNet classification weights for an SSD backbone (``feature_extractor_base_param``).

Detection fine-tuned from an ImageNet backbone converges much faster than from scratch, but the
classification checkpoints name their tensors after the classification network, not after
the SSD backbone. Each backbone kind (the registry record's ``backbone``) therefore has a
``BackboneMapping`` (``backbone_mapping``):
the classification-checkpoint key of each backbone parameter and how a torchvision ``.pth`` is
renamed to that checkpoint naming. The receiving cell is the network's own ``backbone_cell``.

  * ssd300: the zoo's MobileNetV2 (``features.{i}``, split after block 13) or torchvision mobilenet_v2;
  * ssd_mobilenet_v1, ssd_mobilenet_v1_fpn: the zoo's MobileNetV1 (``network.{0..26}.{0,1}``), same names;
  * ssd_resnet50_fpn: the zoo's ResNet-50 (``conv1``, ``layer1.0.down_sample_layer.0`` ...), same names,
    or torchvision resnet50;
  * ssd_vgg16: the zoo's VGG16 (``layers.{i}``, the 13 convolutions of a flat list) or torchvision
    vgg16 / vgg16_bn; which indices hold convolutions depends on ``pretrain_vgg_bn`` (source) and
    ``ssd_vgg_bn`` (SSD side), and BatchNorm tensors load only when both sides have BatchNorm.

Both checkpoint kinds are accepted: a MindSpore ``.ckpt`` in the model zoo's naming and a
PyTorch file (read without torch by ``src.weights.torch_pickle``). Loading is checked: the report counts
what was loaded and lists what was not, and a checkpoint that fits nothing, or whose shapes
disagree with the network, is an error rather than a silent from-scratch run.

ImageNet networks (torchvision and the zoo's classifiers) use BatchNorm eps 1e-5, while SSD's
MobileNetV2 and ResNet-50 use 1e-3. A third of the ImageNet MobileNetV2 channels have running
variances below 1e-3, so copying the statistics as they are shrinks those channels up to 10x and
the features stop being ImageNet features (the classifier on top no longer recognises a zebra).
Each BN's gamma is therefore rescaled by sqrt((var + eps_ssd) / (var + eps_imagenet)), which
makes the layer compute exactly what it computed in the classification network; all other
tensors are copied.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import mindspore as ms
import numpy as np
from mindspore import nn

from src.models.backbones.mobilenet_v2 import FIRST_SPLIT_BLOCKS
from src.models.backbones.vgg16 import VGG16_BLOCKS
from src.models.registry import NETWORKS
from src.models.ssd import backbone_cell
from src.weights.checkpoint import MAX_LISTED, CheckpointMismatchError, read_checkpoint
from src.weights.torch_pickle import is_torch_file, load_torch_state_dict

#: torch BatchNorm leaf names -> MindSpore ``BatchNorm2d`` parameter names.
TORCH_BN_LEAVES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                   "running_var": "moving_variance"}
BN_LEAVES = tuple(TORCH_BN_LEAVES.values())
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

    ``source_key``: parameter name relative to the network's ``backbone_cell`` -> key in the
    classification checkpoint (MindSpore model-zoo naming), or None for a parameter ImageNet
    training does not provide.
    ``from_torch``: renames a torchvision state dict into that model-zoo naming; None when
    torchvision has no such network.
    ``expected``: the checkpoint that fits, for error messages.
    """

    source_key: Callable[[str], str | None]
    from_torch: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None
    expected: str
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


def _replace_prefix(key: str, old: str, new: str) -> str:
    return new + key[len(old):] if key.startswith(old) else key


def torchvision_mobilenet_v2_to_zoo(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torchvision MobileNetV2 state dict -> the zoo's MobileNetV2 classification checkpoint names.

    ``features.{i}`` keeps its index (both nets list stem, 17 blocks, last 1x1 conv in order);
    the classifier ``classifier.1`` (after dropout) becomes the zoo head's dense ``head.1``.
    """
    return {_replace_prefix(_wrap_conv_bn_relu(key), "classifier.1.", "head.1."): value
            for key, value in rename_torch_batchnorm(state).items()}


def torchvision_resnet50_to_zoo(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torchvision ResNet-50 state dict -> the zoo's ResNet-50 names.

    The module trees agree (both are v1.5 with the stride on the 3x3 convolution); only the
    projection shortcut (``downsample`` -> ``down_sample_layer``) and the classifier
    (``fc`` -> ``end_point``) are named differently.
    """
    return {_replace_prefix(key.replace(".downsample.", ".down_sample_layer."), "fc.", "end_point."): value
            for key, value in rename_torch_batchnorm(state).items()}


def torchvision_vgg16_to_zoo(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torchvision vgg16 / vgg16_bn state dict -> the zoo's VGG16 names.

    Both list conv(+BN)+ReLU and max pools in one flat sequence with the same indices; torchvision
    calls it ``features``, the zoo ``layers``. The classifier (``classifier.{0,3,6}``) is named alike.
    """
    return {_replace_prefix(key, "features.", "layers."): value for key, value in rename_torch_batchnorm(state).items()}


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


def same_name(name: str) -> str:
    """The SSD backbone is the classification network's own module tree minus its classifier."""
    return name


def vgg16_conv_indices(with_bn: bool) -> list[int]:
    """Positions of the 13 convolutions in a flat VGG16 layer list.

    Each convolution takes two slots (conv, ReLU) or three with BatchNorm (conv, BN, ReLU), and
    every block ends with a max pool: 0, 2, 5, 7, 10, ... without BN, 0, 3, 7, 10, 14, ... with.
    """
    slots = 3 if with_bn else 2
    indices, position = [], 0
    for widths in VGG16_BLOCKS:
        for _ in widths:
            indices.append(position)
            position += slots
        position += 1  # the block's max pool
    return indices


def vgg16_source_keys(source_has_bn: bool, ssd_has_bn: bool) -> dict[str, str]:
    """SSD ``VGG16`` parameter -> key in the zoo's VGG16 classification checkpoint.

    The n-th convolution of the SSD backbone (``b{block}.{slot}``, blocks are SequentialCells)
    takes the n-th convolution of the classification net's ``layers``; only the weight, since
    the SSD convolutions have no bias. BatchNorm follows its convolution on both sides and is
    mapped only when both have it.
    """
    ssd_slots = 3 if ssd_has_bn else 2
    ssd_convs = [(block, position * ssd_slots) for block, widths in enumerate(VGG16_BLOCKS, start=1)
                 for position in range(len(widths))]
    keys = {}
    for (block, slot), source in zip(ssd_convs, vgg16_conv_indices(source_has_bn)):
        keys[f"b{block}.{slot}.weight"] = f"layers.{source}.weight"
        if source_has_bn and ssd_has_bn:
            keys.update({f"b{block}.{slot + 1}.{leaf}": f"layers.{source + 1}.{leaf}" for leaf in BN_LEAVES})
    return keys


MOBILENET_V2_MAPPING = BackboneMapping(
    ssd300_source_key, torchvision_mobilenet_v2_to_zoo,
    "MobileNetV2 (the model zoo's features.{0..18}.* or torchvision's mobilenet_v2 .pth)")
MOBILENET_V1_MAPPING = BackboneMapping(
    same_name, None, "MobileNetV1 (the model zoo's network.{0..26}.{0,1}.*; torchvision has no MobileNetV1)")
RESNET50_MAPPING = BackboneMapping(
    same_name, torchvision_resnet50_to_zoo,
    "ResNet-50 (the model zoo's conv1.*, bn1.*, layer{1..4}.* or torchvision's resnet50 .pth)")


def vgg16_mapping(source_has_bn: bool, ssd_has_bn: bool) -> BackboneMapping:
    """The VGG16 mapping for the ``pretrain_vgg_bn`` / ``ssd_vgg_bn`` combination."""
    if source_has_bn:
        expected = ("VGG16 with BatchNorm (pretrain_vgg_bn: True; the model zoo's layers.{0,3,7,...,40}.* or "
                    "torchvision's vgg16_bn .pth; set pretrain_vgg_bn: False for a VGG16 without BatchNorm)")
    else:
        expected = ("VGG16 without BatchNorm (pretrain_vgg_bn: False; the model zoo's layers.{0,2,5,...,28}.* or "
                    "torchvision's vgg16 .pth; set pretrain_vgg_bn: True for a VGG16-BN)")
    return BackboneMapping(vgg16_source_keys(bool(source_has_bn), bool(ssd_has_bn)).get, torchvision_vgg16_to_zoo,
                           expected)


#: Backbone kind (``NetworkRecord.backbone``) -> the mapping for a config (VGG16 depends on two of its flags).
BACKBONE_MAPPINGS: dict[str, Callable[[Any], BackboneMapping]] = {
    "mobilenet_v2": lambda config: MOBILENET_V2_MAPPING,
    "mobilenet_v1": lambda config: MOBILENET_V1_MAPPING,
    "resnet50": lambda config: RESNET50_MAPPING,
    "vgg16": lambda config: vgg16_mapping(config.pretrain_vgg_bn, config.ssd_vgg_bn),
}


def backbone_mapping(config: Any) -> BackboneMapping:
    """The mapping for the backbone of ``config.model_name``; ValueError for a model without one."""
    if config.model_name not in NETWORKS:
        raise ValueError(f"no ImageNet backbone mapping for model_name {config.model_name!r} (known: "
                         f"{', '.join(sorted(NETWORKS))}); leave feature_extractor_base_param empty")
    return BACKBONE_MAPPINGS[NETWORKS[config.model_name].backbone](config)


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
        if mapping.from_torch is None:
            raise CheckpointMismatchError(
                f"{path} is a PyTorch file, but this backbone has no torchvision counterpart to convert from; "
                f"pass a MindSpore .ckpt of an ImageNet {mapping.expected}")
        return mapping.from_torch(load_torch_state_dict(path))
    return {name: param.asnumpy() for name, param in read_checkpoint(path).items()}


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


def load_backbone_weights(network: nn.Cell, path: str | Path, config: Any,
                          search_dirs: Sequence[str | Path] = ()) -> BackboneLoadReport:
    """Fill ``backbone_cell(network)`` from an ImageNet classification checkpoint.

    ``config`` is the one the network was built from: ``model_name`` picks the key mapping
    (``backbone_mapping``; VGG16 also reads ``pretrain_vgg_bn`` and ``ssd_vgg_bn``). ``path`` is a
    MindSpore ``.ckpt`` in the model zoo's classification naming or a PyTorch (torchvision) file;
    a relative path is looked up in the current directory, then in each of ``search_dirs`` (the
    trainer passes ``config.load_path``). Parameters the checkpoint does not provide keep their
    values; BN gammas are adapted to the backbone's eps (``adapt_batchnorm_eps``). Raises
    ``CheckpointMismatchError`` (a ``ValueError``) naming the file when any shape disagrees or
    when nothing at all fits.
    """
    mapping = backbone_mapping(config)
    model_name = config.model_name
    resolved = resolve_weights_path(path, search_dirs)
    backbone = backbone_cell(network)
    values, report = plan_backbone_load(read_classification_weights(resolved, mapping), backbone, mapping,
                                        str(resolved), model_name)
    if report.mismatched or report.loaded == 0:
        problems = report.mismatched or [f"expected keys like {mapping.source_key(name)}"
                                         for name in report.left_at_init[:3]]
        found = f"; the file holds e.g. {', '.join(report.unused[:3])}" if report.unused else ""
        raise CheckpointMismatchError(
            f"{resolved} does not fit the {model_name} backbone ({len(report.mismatched)} shape mismatches, "
            f"{report.loaded} tensors loadable{found}); pass an ImageNet classification checkpoint of "
            f"{mapping.expected}:\n  " + "\n  ".join(problems[:MAX_LISTED]))
    report.bn_eps_adjusted = adapt_batchnorm_eps(values, backbone, mapping.source_bn_eps)
    params = dict(backbone.parameters_and_names())
    for name, value in values.items():
        params[name].set_data(ms.Tensor(value, dtype=params[name].dtype))
    return report
