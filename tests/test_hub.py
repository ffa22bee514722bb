"""mindspore_hub_conf: every model name builds its inference network; importing it has no side effects."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

import mindspore_hub_conf as hub
from src.model_utils.config import ConfigError
from src.models.registry import NETWORKS
from src.models.ssd import SsdInferWithDecoder

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BOXES = {"ssd300": 1917, "ssd_mobilenet_v1": 1917, "ssd_vgg16": 7308, "ssd_mobilenet_v1_fpn": 51150,
         "ssd_resnet50_fpn": 51150}


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=600)


def test_every_network_of_the_registry_has_its_expected_box_count_here():
    assert set(BOXES) == set(NETWORKS)


@pytest.mark.slow
def test_create_network_works_from_a_fresh_interpreter_for_every_registered_network():
    # The acceptance command, once per name, in one interpreter (MindSpore's import dominates the time).
    names = ", ".join(repr(name) for name in NETWORKS)
    result = _python("import mindspore_hub_conf as h\n"
                     f"for name in ({names}):\n"
                     "    net = h.create_network(name)\n"
                     "    print(name, type(net).__name__, net.decoder.anchor_yx.shape[0], net.training)\n")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    for name, boxes in BOXES.items():
        assert f"{name} SsdInferWithDecoder {boxes} False" in lines


def test_import_reads_no_command_line_and_builds_nothing():
    result = _python("import sys\n"
                     "sys.argv[1:] = ['--no_such_flag', 'x']\n"
                     "import mindspore_hub_conf\n"
                     "modules = ('mindspore', 'src.models.registry', 'src.models.ssd', 'src.model_utils.config')\n"
                     "print(sorted(m for m in modules if m in sys.modules))")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ssd300", "ssd_mobilenet_v1"])
def test_network_is_in_inference_mode_and_returns_boxes_and_scores(name):
    network = hub.create_network(name)

    assert isinstance(network, SsdInferWithDecoder)
    assert not any(cell.training for _, cell in network.cells_and_names())
    boxes, scores = network(ms.Tensor(np.random.default_rng(0).random((1, 3, 300, 300), dtype=np.float32)))
    assert boxes.shape == (1, BOXES[name], 4) and scores.shape == (1, BOXES[name], 81)
    boxes, scores = boxes.asnumpy(), scores.asnumpy()
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0
    assert scores.min() >= 0.0 and scores.max() <= 1.0  # sigmoid scores, not training-mode logits


@pytest.mark.slow
def test_keyword_arguments_override_config_keys():
    classes = ["background", "cat", "dog"]
    network = hub.create_network("ssd_mobilenet_v1", num_classes=3, classes=classes)

    boxes, scores = network(ms.Tensor(np.zeros((2, 3, 300, 300), np.float32)))
    assert scores.shape == (2, 1917, 3)


def test_bad_overrides_are_refused_with_the_key_named():
    with pytest.raises(ConfigError, match="num_classes is 3 but classes lists 81 names"):
        hub.create_network("ssd300", num_classes=3)
    with pytest.raises(ConfigError, match="unknown key num_class .* closest valid key is num_classes"):
        hub.create_network("ssd300", num_class=3)
    with pytest.raises(ValueError, match="names two networks"):
        hub.create_network("ssd300", model_name="ssd_vgg16")
    with pytest.raises(TypeError, match="keyword arguments only"):
        hub.create_network("ssd300", 81)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as caught:
        hub.create_network("ssd512")

    message = str(caught.value)
    assert "unknown network 'ssd512'" in message
    for name in BOXES:
        assert name in message
