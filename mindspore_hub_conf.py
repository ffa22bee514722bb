"""MindSpore Hub entry: ``create_network(name, **config_overrides)`` -> an SSD inference network.

Each network is built from its default config (the registry record's ``config_file``, the same
file a user would train it with), so ``mindspore_hub.load`` gets the layout that the published
checkpoints of that network fit. Importing this module reads no command line and builds
nothing; MindSpore is imported on the first ``create_network`` call.
"""
from __future__ import annotations

from typing import Any


def create_network(name: str, *args: Any, **kwargs: Any):
    """The inference network ``name`` (image -> boxes, sigmoid scores), in inference mode.

    Keyword arguments override keys of the network's default config, e.g.
    ``create_network("ssd300", num_classes=3, classes=["background", "cat", "dog"])``; they are
    checked like command-line overrides (the key must exist, the type must match).
    """
    from src.model_utils.config import load_config
    from src.models.registry import NETWORKS, inference_network

    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; mindspore_hub_conf.create_network knows: {', '.join(NETWORKS)}")
    if kwargs.get("model_name", name) != name:
        raise ValueError(f"create_network({name!r}, model_name={kwargs['model_name']!r}) names two networks; "
                         f"call create_network({kwargs['model_name']!r}) instead")
    if args:
        raise TypeError(f"create_network({name!r}, ...) takes config overrides as keyword arguments only "
                        f"(key=value), got positional {args!r}")
    config = load_config(NETWORKS[name].config_path, kwargs)
    network = inference_network(config)
    network.set_train(False)
    return network
