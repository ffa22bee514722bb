"""MindSpore Hub entry: ``create_network(name, **config_overrides)`` -> an SSD inference network.

Each network is built from its default config (the same file a user would train it with), so
``mindspore_hub.load`` gets the layout that the published checkpoints of that network fit.
Importing this module reads no command line and builds nothing; MindSpore is imported on the
first ``create_network`` call.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

_CONFIG_DIR = Path(__file__).resolve().parent / "config"

#: model_name -> its default config file.
DEFAULT_CONFIGS = {
    "ssd300": "ssd300_config.yaml",
    "ssd_mobilenet_v1": "ssd_mobilenet_v1_300_config_gpu.yaml",
    "ssd_vgg16": "ssd_vgg16_config.yaml",
    "ssd_mobilenet_v1_fpn": "ssd_mobilenet_v1_fpn_config.yaml",
    "ssd_resnet50_fpn": "ssd_resnet50_fpn_config.yaml",
}


def create_network(name: str, *args: Any, **kwargs: Any):
    """The inference network ``name`` (image -> boxes, sigmoid scores), in inference mode.

    Keyword arguments override keys of the network's default config, e.g.
    ``create_network("ssd300", num_classes=3, classes=["background", "cat", "dog"])``; they are
    checked like command-line overrides (the key must exist, the type must match).
    """
    if name not in DEFAULT_CONFIGS:
        raise ValueError(f"unknown network {name!r}; mindspore_hub_conf.create_network knows: "
                         f"{', '.join(DEFAULT_CONFIGS)}")
    if kwargs.get("model_name", name) != name:
        raise ValueError(f"create_network({name!r}, model_name={kwargs['model_name']!r}) names two networks; "
                         f"call create_network({kwargs['model_name']!r}) instead")
    if args:
        raise TypeError(f"create_network({name!r}, ...) takes config overrides as keyword arguments only "
                        f"(key=value), got positional {args!r}")
    from src.eval.validation import build_inference_network
    from src.model_utils.config import load_config
    from src.models.ssd import build_ssd

    config = load_config(_CONFIG_DIR / DEFAULT_CONFIGS[name], kwargs)
    network = build_inference_network(build_ssd(config), config)
    network.set_train(False)
    return network
