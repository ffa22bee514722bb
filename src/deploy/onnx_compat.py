"""Rewrite MindSpore's ONNX export so that OpenCV 4.6's importer (Debian 12) accepts it.

MindSpore 2.10 writes opset 11 and turns every ReLU6 into an opset-11 ``Clip`` whose min/max
are *inputs*; OpenCV 4.6 only reads the older attribute form (it fails with
"node_proto.input_size() == 1"). Opset 10 is the newest opset whose ``Clip`` carries
attributes, so the graph is moved to opset 10: each Clip gets its bounds as attributes, and
negative ``Concat`` axes (legal only from opset 11) are made positive. onnxruntime gives
identical outputs for the rewritten file.

Downgrading an opset is only safe for operators whose meaning did not change between the two
versions, so the rewrite accepts exactly the operators MindSpore emits for the SSD networks
and refuses anything else instead of writing a file that might compute something different.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from src.model_utils.errors import SSDError
from src.model_utils.files import temporary_path

#: The opset OpenCV 4.6 reads and the newest one with attribute-form Clip.
TARGET_OPSET = 10
#: Opsets the rewrite was checked against (MindSpore 2.10 writes 11).
SOURCE_OPSETS = frozenset({10, 11})
#: Every operator of the five SSD inference graphs; each means the same at opset 10 and 11
#: except Clip (rewritten) and Concat (negative axes rewritten).
SUPPORTED_OPS = frozenset({
    "Add", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "Div", "Exp", "Max",
    "Min", "Mul", "Reshape", "Sigmoid", "Slice", "Sub", "Transpose",
})
_DEFAULT_DOMAINS = ("", "ai.onnx")


class OnnxCompatError(SSDError, ValueError):
    """The ONNX graph holds something the opset-10 rewrite cannot translate faithfully."""


def make_opencv_compatible(path: str | Path) -> None:
    """Rewrite the ONNX file at ``path`` in place (atomically) into the opset-10 form."""
    path = Path(path)
    save_onnx_atomically(rewrite_to_opset10(onnx.load(str(path)), str(path)), path)


def save_onnx_atomically(model: onnx.ModelProto, path: Path) -> None:
    """Write ``model`` to ``path`` through a temporary file, so no reader ever sees half of it."""
    partial = temporary_path(path)
    try:
        onnx.save(model, str(partial))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def rewrite_to_opset10(model: onnx.ModelProto, source: str = "<model>") -> onnx.ModelProto:
    """A checked opset-10 copy of ``model``: attribute-form Clip, non-negative Concat axes."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    _check_opset(model, source)
    _check_ops(model, source)
    ranks = _ranks(model)
    constants = _constant_values(model)
    bound_tensors: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "Clip":
            bound_tensors |= _clip_bounds_to_attributes(node, constants, source)
        elif node.op_type == "Concat":
            _positive_concat_axis(node, ranks, source)
    _remove_unread(model, bound_tensors)
    for opset in model.opset_import:
        if opset.domain in _DEFAULT_DOMAINS:
            opset.version = TARGET_OPSET
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise OnnxCompatError(f"{source}: the opset-{TARGET_OPSET} rewrite is not a valid ONNX model: {error}") from error
    return model


def _check_opset(model: onnx.ModelProto, source: str) -> None:
    versions = {opset.domain: opset.version for opset in model.opset_import}
    others = sorted(domain for domain in versions if domain not in _DEFAULT_DOMAINS)
    if others:
        raise OnnxCompatError(f"{source} imports operator domains {others}; only the default ONNX domain can be "
                              f"rewritten to opset {TARGET_OPSET}")
    version = next((versions[d] for d in _DEFAULT_DOMAINS if d in versions), None)
    if version not in SOURCE_OPSETS:
        raise OnnxCompatError(f"{source} uses opset {version}; the rewrite to opset {TARGET_OPSET} was checked for "
                              f"opsets {sorted(SOURCE_OPSETS)} only (operators changed meaning in later opsets)")


def _check_ops(model: onnx.ModelProto, source: str) -> None:
    unexpected = sorted({node.op_type for node in model.graph.node} - SUPPORTED_OPS)
    if unexpected:
        raise OnnxCompatError(
            f"{source} contains operators {unexpected} that the opset-{TARGET_OPSET} rewrite was not checked for "
            f"(supported: {sorted(SUPPORTED_OPS)}); check that they mean the same at opset {TARGET_OPSET} and add "
            f"them to src/deploy/onnx_compat.py SUPPORTED_OPS")


def _constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Tensors known at export time: initializers and the outputs of Constant nodes."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            attribute = node.attribute[0] if len(node.attribute) == 1 else None
            if attribute is None or attribute.name != "value":
                names = [a.name for a in node.attribute]
                raise OnnxCompatError(f"Constant node {node.name!r} uses attributes {names}; opset "
                                      f"{TARGET_OPSET} only has the dense 'value' form")
            values[node.output[0]] = numpy_helper.to_array(attribute.t)
    return values


def _clip_bounds_to_attributes(node: onnx.NodeProto, constants: dict[str, np.ndarray], source: str) -> set[str]:
    """Opset-11 Clip(x, min, max) -> opset-6 Clip(x) with float min/max attributes (absent bound = none).

    Returns the names of the bound tensors the node no longer reads."""
    bounds: dict[str, float] = {}
    for name, tensor_name in zip(("min", "max"), node.input[1:]):
        if not tensor_name:
            continue
        if tensor_name not in constants or constants[tensor_name].size != 1:
            raise OnnxCompatError(f"{source}: Clip node {node.name!r} takes its {name} from {tensor_name!r}, which is "
                                  f"not a scalar constant; it cannot become an opset-{TARGET_OPSET} attribute")
        bounds[name] = float(constants[tensor_name].reshape(()))
    if any(attribute.name not in bounds for attribute in node.attribute):
        raise OnnxCompatError(f"{source}: Clip node {node.name!r} has both bound inputs and attributes")
    bound_tensors = {name for name in node.input[1:] if name}
    del node.input[1:]
    del node.attribute[:]
    node.attribute.extend(helper.make_attribute(name, value) for name, value in bounds.items())
    return bound_tensors


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every tensor whose shape ONNX shape inference can tell."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = inferred.graph
    ranks = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        if value.type.tensor_type.HasField("shape"):
            ranks[value.name] = len(value.type.tensor_type.shape.dim)
    ranks.update({init.name: len(init.dims) for init in graph.initializer})
    return ranks


def _positive_concat_axis(node: onnx.NodeProto, ranks: dict[str, int], source: str) -> None:
    """Concat accepts a negative axis only from opset 11: replace it by axis + rank."""
    for attribute in node.attribute:
        if attribute.name == "axis" and attribute.i < 0:
            rank = ranks.get(node.input[0])
            if rank is None:
                raise OnnxCompatError(f"{source}: Concat node {node.name!r} has axis {attribute.i} and the rank of "
                                      f"its input {node.input[0]!r} is unknown")
            attribute.i += rank


def _remove_unread(model: onnx.ModelProto, candidates: set[str]) -> None:
    """Drop those ``candidates`` (former Clip bounds: initializers or Constant nodes) that nothing reads."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    removed = candidates - used
    kept_inits = [init for init in graph.initializer if init.name not in removed]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    kept_inputs = [value for value in graph.input if value.name not in removed]  # older IRs list initializers
    del graph.input[:]
    graph.input.extend(kept_inputs)
    kept_nodes = [node for node in graph.node if node.op_type != "Constant" or node.output[0] not in removed]
    del graph.node[:]
    graph.node.extend(kept_nodes)
