"""Export: the checkpoint, its MINDIR (nn.GraphCell) and its ONNX (onnxruntime) give the same detections.

ssd300 and ssd_mobilenet_v1_fpn with random weights (random BatchNorm statistics too, so a file
that dropped or re-initialised them would differ) saved as train.py saves them (``network.*``),
exported at batch 1 and 2 and run on two different inputs each. The ONNX files must be the
opset-10 form OpenCV 4.6 reads. Also: re-export over MindSpore's read-only files, AIR refused on
CPU, a foreign checkpoint refused, and the export.py / run_export.sh batch-size rules.
"""
from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import mindspore as ms
import numpy as np
import onnx
import pytest
from mindspore import nn
from onnx import TensorProto, helper

from src.deploy.engines import create_session
from src.deploy.export import ExportError, export_inference_model
from src.deploy.onnx_compat import OnnxCompatError, rewrite_to_opset10
from src.model_utils.config import command_line_keys, load_config
from src.models.init_weights import init_network_weights
from src.models.registry import build_ssd, inference_network
from src.train.loss import SSDWithLossCell
from src.weights.checkpoint import CheckpointMismatchError, load_network_weights
from tests.conftest import PROJECT_ROOT, randomise_batch_norm, run_script

# Exports real networks: the full suite only.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("graph_mode")]

CONFIGS = {"ssd300": PROJECT_ROOT / "config" / "ssd300_config_cpu.yaml",
           "ssd_mobilenet_v1_fpn": PROJECT_ROOT / "config" / "ssd_mobilenet_v1_fpn_config_cpu.yaml"}
TOLERANCE = 1e-4






@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A random-weight train.py-style checkpoint (``network.*`` names) per model."""
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for seed, (name, config_path) in enumerate(CONFIGS.items()):
        config = load_config(config_path)
        network = build_ssd(config)
        init_network_weights(network, config.num_classes)
        randomise_batch_norm(network, np.random.default_rng(seed))
        paths[name] = folder / f"{name}.ckpt"
        ms.save_checkpoint(SSDWithLossCell(network, config.gamma, config.alpha), str(paths[name]))
    return paths


def max_difference(got: tuple, want: tuple) -> float:
    return max(float(np.abs(np.asarray(g) - np.asarray(w)).max()) for g, w in zip(got, want))


def assert_opencv_form(path: Path, batch: int, height: int, width: int) -> None:
    """Opset 10, every Clip in attribute form, valid per the ONNX checker, batch fixed in the input."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 10)]
    clips = [node for node in model.graph.node if node.op_type == "Clip"]
    assert clips and all(len(node.input) == 1 and {a.name for a in node.attribute} == {"min", "max"}
                         for node in clips)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [batch, 3, height, width]


@pytest.mark.parametrize("model_name", list(CONFIGS))
def test_checkpoint_mindir_and_onnx_agree(model_name, checkpoints, tmp_path):
    config = load_config(CONFIGS[model_name])
    height, width = config.img_shape
    rng = np.random.default_rng(7)
    inputs = [rng.normal(0, 1, (2, 3, height, width)).astype(np.float32) for _ in range(2)]

    reference_net = inference_network(config)
    load_network_weights(checkpoints[model_name], reference_net)
    reference_net.set_train(False)
    references = [tuple(out.asnumpy() for out in reference_net(ms.Tensor(x))) for x in inputs]
    assert references[0][0].shape == (2, config.num_ssd_boxes, 4)
    assert references[0][1].shape == (2, config.num_ssd_boxes, config.num_classes)
    assert max_difference(references[0], references[1]) > 1e-2, "the two inputs must give different outputs"

    for batch in (1, 2):
        mindir = export_inference_model(config, checkpoints[model_name], "MINDIR", batch, tmp_path / f"b{batch}")
        onnx_file = export_inference_model(config, checkpoints[model_name], "ONNX", batch, tmp_path / f"b{batch}")
        assert (mindir.name, onnx_file.name) == (f"b{batch}.mindir", f"b{batch}.onnx")
        assert_opencv_form(onnx_file, batch, height, width)
        graph_cell = nn.GraphCell(ms.load(str(mindir)))
        session = create_session(onnx_file, "CPU")
        for x, reference in zip(inputs, references):
            want = tuple(out[:batch] for out in reference)
            from_mindir = tuple(out.asnumpy() for out in graph_cell(ms.Tensor(x[:batch])))
            from_onnx = tuple(session.run(None, {session.get_inputs()[0].name: x[:batch]}))
            assert max_difference(from_mindir, want) <= TOLERANCE, f"MINDIR batch {batch}"
            assert max_difference(from_onnx, want) <= TOLERANCE, f"ONNX batch {batch}"


def test_reexport_replaces_the_read_only_file(checkpoints, tmp_path):
    config = load_config(CONFIGS["ssd300"])
    tmp_path.chmod(0o755)
    first = export_inference_model(config, checkpoints["ssd300"], "MINDIR", 1, tmp_path / "ssd")
    assert stat.S_IMODE(first.stat().st_mode) == 0o400  # what MindSpore writes
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755, "MindSpore's chmod 0700 of the user's folder undone"
    before = first.stat()
    again = export_inference_model(config, checkpoints["ssd300"], "MINDIR", 1, tmp_path / "ssd.mindir")
    assert again == first and again.stat().st_ino != before.st_ino  # a new file, not an error or a partial write
    ms.load(str(again))  # raises on an unreadable file


def test_air_is_refused_on_cpu_before_any_work(tmp_path):
    config = load_config(CONFIGS["ssd300"])
    with pytest.raises(ExportError, match="AIR export needs MindSpore's Ascend backend, but device_target is 'CPU'"):
        export_inference_model(config, tmp_path / "not_read.ckpt", "AIR", 1, tmp_path / "ssd")
    assert not list(tmp_path.iterdir())


def test_checkpoint_of_another_network_is_refused(checkpoints, tmp_path):
    config = load_config(CONFIGS["ssd300"])
    with pytest.raises(CheckpointMismatchError, match="holds the weights of ssd_mobilenet_v1_fpn but the config builds "
                                                      "ssd300"):
        export_inference_model(config, checkpoints["ssd_mobilenet_v1_fpn"], "ONNX", 1, tmp_path / "ssd")
    assert not list(tmp_path.iterdir())


def onnx_input_shape(path: Path) -> list[int]:
    return [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]


def test_export_batch_is_one_unless_given_on_the_command_line(checkpoints, tmp_path):
    """The config's batch_size (8, the training batch) must not leak into the export (the seed's B11)."""
    assert load_config(CONFIGS["ssd300"]).batch_size == 8
    default = subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "run_export.sh"), str(CONFIGS["ssd300"]),
                              "ONNX", str(checkpoints["ssd300"])], cwd=tmp_path, capture_output=True, text=True)
    assert default.returncode == 0, default.stdout[-3000:] + default.stderr[-3000:]
    assert onnx_input_shape(tmp_path / "ssd.onnx") == [1, 3, 300, 300]

    given = run_script("export.py", "--config_path", str(CONFIGS["ssd300"]), "--checkpoint_file_path",
                       str(checkpoints["ssd300"]), "--file_format", "ONNX", "--file_name", str(tmp_path / "b3"),
                       "--batch_size=3", "--output_path", str(tmp_path / "out"))
    assert given.returncode == 0, given.stdout[-3000:] + given.stderr[-3000:]
    assert onnx_input_shape(tmp_path / "b3.onnx") == [3, 3, 300, 300]
    assert "input 3x3x300x300" in given.stdout


def test_run_export_sh_checks_its_arguments(tmp_path):
    done = subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "run_export.sh"), "config.yaml", "ONNX"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0
    assert "Usage: bash scripts/run_export.sh [CONFIG_PATH] [FILE_FORMAT] [CKPT] [BATCH_SIZE]" in done.stderr


def test_command_line_keys():
    argv = ["--config_path", "c.yaml", "--batch_size=4", "--run_eval", "--lr", "0.1"]
    assert command_line_keys(argv) == {"config_path", "batch_size", "run_eval", "lr"}
    assert "batch_size" not in command_line_keys(["--eval_batch_size", "4"])


def tiny_model(nodes: list, initializers: list, opset: int = 11) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def scalar(name: str, value: float) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.FLOAT, [], [value])


def test_clip_rewrite_keeps_the_bounds_and_drops_their_tensors():
    model = tiny_model([helper.make_node("Clip", ["x", "", "hi"], ["y"])], [scalar("hi", 6.0), scalar("unused", 1.0)])
    rewritten = rewrite_to_opset10(model)
    (clip,) = rewritten.graph.node
    assert list(clip.input) == ["x"]
    assert [(a.name, a.f) for a in clip.attribute] == [("max", 6.0)]
    assert [init.name for init in rewritten.graph.initializer] == ["unused"]  # only the Clip's bound is removed
    assert rewritten.opset_import[0].version == 10


def test_rewrite_refuses_what_it_cannot_translate():
    unknown = tiny_model([helper.make_node("Relu", ["x"], ["y"])], [])
    with pytest.raises(OnnxCompatError, match=r"operators \['Relu'\]"):
        rewrite_to_opset10(unknown)
    computed = tiny_model([helper.make_node("Exp", ["x"], ["e"]), helper.make_node("Clip", ["x", "e"], ["y"])], [])
    with pytest.raises(OnnxCompatError, match="not a scalar constant"):
        rewrite_to_opset10(computed)
    newer = tiny_model([helper.make_node("Clip", ["x", "lo"], ["y"])], [scalar("lo", 0.0)], opset=13)
    with pytest.raises(OnnxCompatError, match="uses opset 13"):
        rewrite_to_opset10(newer)
