"""The project's CPU kernel for 3x3 depthwise convolutions (src/models/cpu_depthwise.py).

Real GRAPH_MODE graphs through MindSpore's aot Custom operator, against MindSpore's own Conv2D:
forward bit-identical (network outputs stay the model zoo's), gradients equal to float32 rounding,
every depthwise layer of the networks routed, and one clear line when no compiler is found.
"""
import logging
import shutil

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn, ops

from src.model_utils.config import load_config
from src.models.cpu_depthwise import SWITCH_VARIABLE, build_kernel_library, use_cpu_depthwise_kernels
from src.models.init_weights import init_network_weights
from src.models.layers import DepthwiseConv2d
from src.models.registry import build_ssd
from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="the kernel is compiled with g++")

LOG = logging.getLogger("test.cpu_depthwise")


class _Gradients(nn.Cell):
    """(dx, dweight) of sum(conv(x) * sens)."""

    def __init__(self, conv: nn.Cell) -> None:
        super().__init__()
        self.conv = conv
        self.grad = ops.GradOperation(get_all=True, get_by_list=True, sens_param=True)
        self.weights = ms.ParameterTuple(conv.trainable_params())

    def construct(self, x, sens):
        return self.grad(self.conv, self.weights)(x, sens)


def _conv_pair(channels: int, stride: int, seed: int) -> tuple[DepthwiseConv2d, DepthwiseConv2d]:
    weight = np.random.default_rng(seed).standard_normal((channels, 1, 3, 3)).astype(np.float32)
    mindspore_conv, kernel_conv = DepthwiseConv2d(channels, 3, stride), DepthwiseConv2d(channels, 3, stride)
    for conv in (mindspore_conv, kernel_conv):
        conv.weight.set_data(ms.Tensor(weight))
    holder = nn.SequentialCell([kernel_conv])
    assert use_cpu_depthwise_kernels(holder, False, LOG) == 1
    return mindspore_conv, kernel_conv


# (batch, channels, height, width, stride): odd and even sides (TF SAME pads bottom/right for stride 2),
# a 1x1 map, a non-square map and a plane wider than a vector.
SHAPES = [(2, 8, 9, 9, 1), (2, 8, 9, 9, 2), (1, 4, 10, 10, 2), (2, 3, 1, 1, 1), (2, 5, 2, 2, 2),
          (1, 6, 7, 12, 2), (2, 16, 38, 38, 1), (1, 12, 19, 19, 2)]


@pytest.mark.parametrize("batch, channels, height, width, stride", SHAPES)
def test_kernel_matches_mindspore_conv2d(graph_mode, batch, channels, height, width, stride):
    rng = np.random.default_rng(height * 10 + stride)
    mindspore_conv, kernel_conv = _conv_pair(channels, stride, seed=channels)
    x = ms.Tensor(rng.standard_normal((batch, channels, height, width)).astype(np.float32))
    expected_y, kernel_y = mindspore_conv(x).asnumpy(), kernel_conv(x).asnumpy()
    assert kernel_y.shape == (batch, channels, -(-height // stride), -(-width // stride))
    np.testing.assert_array_equal(kernel_y, expected_y)  # bit for bit: the taps are summed in oneDNN's order
    sens = ms.Tensor(rng.standard_normal(expected_y.shape).astype(np.float32))
    (expected_dx,), (expected_dw,) = _Gradients(mindspore_conv)(x, sens)
    (kernel_dx,), (kernel_dw,) = _Gradients(kernel_conv)(x, sens)
    for expected, got in ((expected_dx.asnumpy(), kernel_dx.asnumpy()), (expected_dw.asnumpy(), kernel_dw.asnumpy())):
        scale = max(float(np.abs(expected).max()), 1e-6)
        np.testing.assert_allclose(got / scale, expected / scale, rtol=0, atol=2e-6)


def _depthwise_weights_in_layout(layout_tsv) -> int:
    """The model zoo's depthwise 3x3 weights, shape [C, 1, 3, 3], in its checkpoint table."""
    rows = [line.split("\t") for line in layout_tsv.read_text().splitlines() if not line.startswith("#")]
    return sum(1 for row in rows if len(row) > 1 and not row[0].startswith("moments.")
               and row[1].endswith(", 1, 3, 3]"))


@pytest.mark.slow
@pytest.mark.parametrize("config_name, layout_name", [("ssd300_config_cpu.yaml", "ssd300.tsv"),
                                                      ("ssd_mobilenet_v1_300_config_cpu.yaml", "ssd_mobilenet_v1.tsv")])
def test_network_outputs_stay_bit_identical(graph_mode, checkpoint_layout_dir, config_name, layout_name):
    """Every depthwise layer of the checkpoints (33 in ssd300, 25 in ssd_mobilenet_v1) is routed, and in
    inference mode the network's outputs with the kernel equal those without it, bit for bit."""
    depthwise_layers = _depthwise_weights_in_layout(checkpoint_layout_dir / layout_name)
    assert depthwise_layers > 20
    config = load_config(PROJECT_ROOT / "config" / config_name)
    network = build_ssd(config)
    init_network_weights(network, int(config.num_classes))
    network.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((1, 3, 300, 300)).astype(np.float32))
    expected = [output.asnumpy() for output in network(x)]
    routed = build_ssd(config)
    ms.load_param_into_net(routed, {param.name: param for param in network.get_parameters()})
    routed.set_train(False)
    assert use_cpu_depthwise_kernels(routed, False, LOG) == depthwise_layers
    convs = [cell for _, cell in routed.cells_and_names() if isinstance(cell, nn.Conv2d) and cell.group > 1]
    assert len(convs) == depthwise_layers and all(conv.cpu_kernel is not None for conv in convs)
    for want, got in zip(expected, routed(x)):
        np.testing.assert_array_equal(got.asnumpy(), want)


@pytest.mark.slow
def test_training_gradients_match_mindspore_kernels(graph_mode):
    """The loss and every parameter's gradient of the demo network, with and without the kernel, from
    the same weights: the loss is bit-identical (the forward is), the gradients equal to float32 noise.
    (Whole training runs drift apart after a few steps, as any change of summation order makes them.)"""
    from src.train.loss import SSDWithLossCell
    from tests.conftest import DEMO_CONFIG, synthetic_train_inputs

    config = load_config(DEMO_CONFIG)
    inputs = synthetic_train_inputs(config.num_ssd_boxes, positives=12, label=2, seed=1)
    initial = None
    results = {}
    for with_kernel in (False, True):
        network = build_ssd(config)
        init_network_weights(network, int(config.num_classes))
        initial = initial or {param.name: param.asnumpy().copy() for param in network.get_parameters()}
        for param in network.get_parameters():
            param.set_data(ms.Tensor(initial[param.name]))
        if with_kernel:
            assert use_cpu_depthwise_kernels(network, False, LOG) == 33
        loss_cell = SSDWithLossCell(network, config.gamma, config.alpha)
        loss_cell.set_train(True)
        weights = ms.ParameterTuple(loss_cell.trainable_params())
        loss = loss_cell(*inputs).asnumpy()
        grads = ops.GradOperation(get_by_list=True)(loss_cell, weights)(*inputs)
        results[with_kernel] = (loss, {w.name: g.asnumpy() for w, g in zip(weights, grads)})
    np.testing.assert_array_equal(results[True][0], results[False][0])
    assert len(results[True][1]) == 255
    # Gradients that cancel to almost nothing (a BatchNorm beta followed by another BatchNorm: its true
    # gradient is 0) are rounding noise either way, so the tolerance has a floor from the network's largest.
    largest = max(float(np.abs(grad).max()) for grad in results[False][1].values())
    for name, expected in results[False][1].items():
        tolerance = 1e-4 * float(np.abs(expected).max()) + 1e-5 * largest
        np.testing.assert_allclose(results[True][1][name], expected, rtol=0, atol=tolerance, err_msg=name)


def test_library_is_built_once_per_machine(tmp_path):
    first = build_kernel_library(tmp_path)
    built_at = first.stat().st_mtime_ns
    again = build_kernel_library(tmp_path)
    assert again == first and again.stat().st_mtime_ns == built_at
    assert [path.name for path in first.parent.iterdir()] == [first.name]  # no temporary left behind


def _network_with_depthwise() -> nn.Cell:
    return nn.SequentialCell([DepthwiseConv2d(4, 3, 1), DepthwiseConv2d(4, 3, 2)])


def test_without_a_compiler_the_layers_stay_on_mindspore_kernels(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-g++"))
    network = _network_with_depthwise()
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert use_cpu_depthwise_kernels(network, False, LOG) == 0
    assert all(cell.cpu_kernel is None for cell in network.cells())
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "no C++ compiler" in record.message and "install g++" in record.message and SWITCH_VARIABLE in record.message


def test_switch_and_white_list(monkeypatch, caplog, tmp_path):
    network = _network_with_depthwise()
    monkeypatch.setenv(SWITCH_VARIABLE, "0")
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert use_cpu_depthwise_kernels(network, False, LOG) == 0
    assert "use MindSpore's kernels" in caplog.records[-1].message
    monkeypatch.delenv(SWITCH_VARIABLE)
    monkeypatch.setenv("MS_CUSTOM_AOT_WHITE_LIST", str(tmp_path))
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert use_cpu_depthwise_kernels(network, False, LOG) == 0
    assert "MS_CUSTOM_AOT_WHITE_LIST" in caplog.records[-1].message and "XDG_CACHE_HOME" in caplog.records[-1].message
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert use_cpu_depthwise_kernels(network, True, LOG) == 0  # float16 cells: the kernel is float32 only
    assert "use_float16: the 2 depthwise convolutions use MindSpore's kernels" in caplog.records[-1].message
    assert all(cell.cpu_kernel is None for cell in network.cells())


def test_a_failing_compiler_and_an_unknown_switch_value_are_reported(monkeypatch, caplog, tmp_path):
    compiler = tmp_path / "broken-g++"
    compiler.write_text("#!/bin/sh\necho 'depthwise3x3_cpu.cc:1:1: error: this compiler is broken' >&2\nexit 3\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    network = _network_with_depthwise()
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert use_cpu_depthwise_kernels(network, False, LOG) == 0
    message = caplog.records[-1].message
    assert "exit code 3" in message and "this compiler is broken" in message
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # the failed build leaves no temporary file
    monkeypatch.delenv("CXX")
    monkeypatch.setenv(SWITCH_VARIABLE, "maybe")
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert use_cpu_depthwise_kernels(network, False, LOG) == 2
    assert "'maybe' is neither 0 nor 1" in caplog.records[-2].message


def test_a_damaged_cached_library_is_built_again(tmp_path):
    """A truncated library makes the loader fault: it is checked in a child process, then built again."""
    library = build_kernel_library(tmp_path)
    size = library.stat().st_size
    for damage in (b"\x7fELF truncated by a full disk", library.read_bytes()[:size // 2]):
        library.write_bytes(damage)
        rebuilt = build_kernel_library(tmp_path)
        assert rebuilt == library and rebuilt.stat().st_size == size


@pytest.mark.parametrize("setting, expected", [
    ({"XDG_CACHE_HOME": "{tmp}/a:b"}, "':' in the path"),
    ({"MS_CUSTOM_AOT_WHITE_LIST": ""}, "MS_CUSTOM_AOT_WHITE_LIST='' is not a folder"),
    ({"CXX": "{tmp}/not-a-program"}, "cannot run"),
    ({"CXX": "true g++"}, "does not load"),  # `true` "compiles" nothing: an empty library
])
def test_settings_that_mindspore_would_fail_on_fall_back_with_one_line(monkeypatch, caplog, tmp_path, setting,
                                                                         expected):
    (tmp_path / "not-a-program").write_bytes(b"\x00\x01 not an executable format")
    (tmp_path / "not-a-program").chmod(0o755)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name, value in setting.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    network = _network_with_depthwise()
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert use_cpu_depthwise_kernels(network, False, LOG) == 0
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and expected in record.message, record.message
