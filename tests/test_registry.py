"""The network registry: each record agrees with its configs and with the network it builds."""
from __future__ import annotations

from fnmatch import fnmatchcase

import pytest

from src.model_utils.config import load_config
from src.models.registry import NETWORKS, build_ssd, network_record
from src.models.ssd import backbone_cell


@pytest.mark.parametrize("model_name", list(NETWORKS))
def test_record_agrees_with_both_of_its_configs(model_name: str) -> None:
    record = NETWORKS[model_name]
    for path in (record.config_path, record.cpu_config_path):
        config = load_config(path)
        assert config.model_name == model_name, path
        assert tuple(config.img_shape) == record.input_size, path


@pytest.mark.parametrize("model_name", list(NETWORKS))
def test_class_tensors_are_exactly_the_tensors_whose_shape_follows_num_classes(model_name: str) -> None:
    """Fine-tuning to another class count drops these and nothing else; the zoo's filter list covers them."""
    record = NETWORKS[model_name]
    coco = load_config(record.cpu_config_path)
    two_classes = load_config(record.cpu_config_path, {"num_classes": 3, "classes": ["background", "a", "b"]})
    shapes = {f"network.{name}": param.shape for name, param in build_ssd(coco).parameters_and_names()}
    changed = {f"network.{name}" for name, param in build_ssd(two_classes).parameters_and_names()
               if shapes[f"network.{name}"] != param.shape}
    matched = {name for name in shapes if any(fnmatchcase(name, pattern) for pattern in record.class_tensors)}

    assert changed and matched == changed
    assert all(any(fragment in name for fragment in coco.checkpoint_filter_list) for name in changed)


@pytest.mark.parametrize("model_name", list(NETWORKS))
def test_backbone_path_of_the_built_network_exists(model_name: str) -> None:
    network = build_ssd(load_config(NETWORKS[model_name].cpu_config_path))

    assert list(backbone_cell(network).trainable_params())


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="unknown model_name 'ssd512'.*ssd300.*ssd_vgg16"):
        network_record("ssd512")


def test_fpn_head_refuses_levels_with_different_anchor_counts() -> None:
    config = load_config(NETWORKS["ssd_mobilenet_v1_fpn"].cpu_config_path)
    config.num_default = [6, 6, 6, 6, 9]
    with pytest.raises(ValueError, match=r"num_default \[6, 6, 6, 6, 9\] must give the same anchor count"):
        build_ssd(config)
