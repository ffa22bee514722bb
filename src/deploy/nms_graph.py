"""Non-maximum suppression inside the exported ONNX graph (``export.py --file_format ONNX --export_nms True``).

The plain export returns every anchor's decoded box and class scores, and its users run the
Python post-processing (src/eval/postprocess.py). ``append_nms`` extends that decode model into an
end-to-end detector for deployments that have no such code (a C++ or web service, a model
server): the same thresholds, computed by ONNX operators, with these outputs (B free, named
``batch``; K = min(max_boxes, N * (C - 1))):

* ``boxes`` (B, K, 4) float32: normalised [xmin, ymin, xmax, ymax] in [0, 1] of the network input,
  i.e. of the whole image (the graph does not know each image's size): multiply by the image's
  width, height, width, height for pixels;
* ``scores`` (B, K) float32, best first;
* ``labels`` (B, K) int64: training class index 1..C-1 (0 is the background, never returned);
* ``num_detections`` (B,) int64: rows past it are padding (zeros).

Same detections as ``postprocess_image``: candidates are the foreground scores > min_score (strict);
each class keeps its ``pre_nms_top_k`` best; greedy NMS per class (ONNX NonMaxSuppression) drops
boxes whose IoU with a kept box of the class is > nms_threshold; the image keeps its max_boxes best
survivors. Equal scores are ordered as in Python (lower anchor first, then lower class) also where
an engine does not: OpenVINO's TopK puts equal values in any order, so TopK only finds each cut's
bar value and the ties at the bar are chosen by integer keys (``_first_k``), and the final
detections are sorted by explicit comparison (``_sort_ranks``). NonMaxSuppression itself visits
equal scores lower box first in onnxruntime and OpenVINO (tests/test_nms_graph.py checks both).
IoU: Python computes it in float64 on pixel boxes, the graph in float32 on normalised boxes. IoU
does not change when an axis is scaled, so both decide alike except when an IoU lies within
float32 rounding of nms_threshold (rare; a box may then be kept by one and suppressed by the other).
OpenVINO's NonMaxSuppression also suppresses at an IoU exactly equal to nms_threshold (ONNX, onnxruntime
and Python only above it), a float32 coincidence that real boxes hardly ever meet.

The graph stays at opset 10, that of the decode model (src/deploy/onnx_compat.py): TopK with k as
an input and NonMaxSuppression exist from 10, and Scatter is opset 10's way to write into a tensor.
onnxruntime and OpenVINO run it; OpenCV's DNN importer has no NonMaxSuppression (use the plain
export there). MindSpore exports a fixed batch; the rewrite frees it (``_free_batch``, checked by
running the decode model in onnxruntime at another batch size), so one file serves any batch. The
thresholds are written into the file's metadata (``METADATA_KEYS``), where eval_onnx.py and
predict.py read them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from src.deploy.engines import ModelSession, check_model_fits_config
from src.deploy.onnx_compat import save_onnx_atomically
from src.eval.postprocess import PRE_NMS_TOP_K, Detections
from src.model_utils.errors import SSDError

#: Output names of a model with NMS in its graph (a plain export has boxes and scores of every anchor).
NMS_OUTPUT_NAMES = ("boxes", "scores", "labels", "num_detections")
#: Name of the free batch dimension of the NMS model's input and outputs.
BATCH_AXIS = "batch"
#: Metadata keys (ONNX metadata_props) holding the thresholds the graph applies.
METADATA_KEYS = {"min_score": "ssd_nms.min_score", "nms_threshold": "ssd_nms.nms_threshold",
                 "max_boxes": "ssd_nms.max_boxes", "pre_nms_top_k": "ssd_nms.pre_nms_top_k"}
#: Metadata key of the class count (background included) the graph was built for.
NUM_CLASSES_KEY = "ssd_nms.num_classes"
#: The tie-breaking keys of ``_first_k`` are float32 integers up to 2 * N * (C - 1): exact below 2**24.
_EXACT_FLOAT_INTEGERS = 2 ** 24


class NmsGraphError(SSDError, ValueError):
    """The model cannot be given NMS in its graph, or an NMS model does not fit; the message says the fix."""


@dataclass(frozen=True)
class NmsSettings:
    """The post-processing thresholds an NMS model applies (src/eval/postprocess.py's meaning)."""

    min_score: float
    nms_threshold: float
    max_boxes: int
    pre_nms_top_k: int = PRE_NMS_TOP_K

    @classmethod
    def from_config(cls, config: Any) -> "NmsSettings":
        """The config's min_score, nms_threshold and max_boxes (what eval.py applies in Python)."""
        return cls(float(config.min_score), float(config.nms_threshold), int(config.max_boxes))

    @classmethod
    def from_metadata(cls, recorded: dict[str, str]) -> "NmsSettings | None":
        """The settings ``append_nms`` wrote into a file's metadata; None when they are not all there."""
        if not all(key in recorded for key in METADATA_KEYS.values()):
            return None
        return cls(float(recorded[METADATA_KEYS["min_score"]]), float(recorded[METADATA_KEYS["nms_threshold"]]),
                   int(recorded[METADATA_KEYS["max_boxes"]]), int(recorded[METADATA_KEYS["pre_nms_top_k"]]))

    def describe(self) -> str:
        return (f"score > {self.min_score}, NMS IoU {self.nms_threshold}, at most {self.max_boxes} boxes per image, "
                f"{self.pre_nms_top_k} candidates per class")


# ---- graph surgery ------------------------------------------------------------------------------

def add_nms_to_file(path: str | Path, settings: NmsSettings) -> None:
    """Rewrite the decode model at ``path`` in place (atomically) into the NMS model."""
    path = Path(path)
    save_onnx_atomically(append_nms(onnx.load(str(path)), settings, str(path)), path)


def append_nms(model: onnx.ModelProto, settings: NmsSettings, source: str = "<model>") -> onnx.ModelProto:
    """A checked copy of the decode ``model`` (boxes (B, N, 4) yxyx, scores (B, N, C)) ending in NMS, batch free."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    num_boxes, num_classes = _decode_outputs(model, source)
    if 2 * num_boxes * (num_classes - 1) >= _EXACT_FLOAT_INTEGERS:
        raise NmsGraphError(f"{source}: {num_boxes} anchors x {num_classes - 1} classes are too many for the NMS "
                            f"graph's float32 tie-breaking (2 * anchors * classes must stay below 2**24); export "
                            f"without --export_nms and post-process in Python")
    _free_batch(model, source)
    for output in model.graph.output:
        if output.name in NMS_OUTPUT_NAMES:  # the NMS outputs take these names
            _rename_tensor(model.graph, output.name, f"decode/{output.name}")
    boxes, scores = (output.name for output in model.graph.output)
    tail = _nms_tail(boxes, scores, num_boxes, num_classes, settings)
    model.graph.node.extend(tail.nodes)
    model.graph.initializer.extend(tail.initializers)
    del model.graph.output[:]
    model.graph.output.extend(_nms_outputs(min(settings.max_boxes, num_boxes * (num_classes - 1))))
    helper.set_model_props(model, {**{prop.key: prop.value for prop in model.metadata_props},
                                   **{key: str(getattr(settings, field)) for field, key in METADATA_KEYS.items()},
                                   NUM_CLASSES_KEY: str(num_classes)})
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise NmsGraphError(f"{source}: the model with NMS appended is not a valid ONNX model ({error}); "
                            f"export without --export_nms and report this") from error
    return model


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [dim.dim_param or dim.dim_value for dim in value.type.tensor_type.shape.dim]


def _decode_outputs(model: onnx.ModelProto, source: str) -> tuple[int, int]:
    """(N, C) of a decode model's two outputs boxes (B, N, 4) and scores (B, N, C); refuses anything else."""
    graph = model.graph
    shapes = [_dims(value) for value in graph.output]
    if len(graph.input) != 1 or len(shapes) != 2 or len(shapes[0]) != 3 or shapes[0][2] != 4 \
            or len(shapes[1]) != 3 or shapes[1][:2] != shapes[0][:2] or not isinstance(shapes[1][2], int) \
            or shapes[1][2] < 2:
        raise NmsGraphError(f"{source}: NMS is appended to export.py's decode model (one input, outputs boxes "
                            f"(B, N, 4) and scores (B, N, C)), but this one has outputs {shapes}; export it "
                            f"again with python export.py --file_format ONNX")
    return int(shapes[0][1]), int(shapes[1][2])


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor wherever the graph writes or reads it (nodes, outputs)."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in graph.output:
        if value.name == old:
            value.name = new


#: Operators whose outputs are folded when all their inputs are constants (MindSpore computes Slice ends so).
_FOLDED = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}
#: A Slice end past any dimension: "to the end".
_TO_THE_END = np.iinfo(np.int64).max


def _constant_arrays(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Every tensor known before the graph runs: initializers, Constant outputs, and Add/Sub/Mul of those."""
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            arrays[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type in _FOLDED and all(name in arrays for name in node.input):
            arrays[node.output[0]] = _FOLDED[node.op_type](*(arrays[name] for name in node.input))
    return arrays


def _free_batch(model: onnx.ModelProto, source: str) -> None:
    """Make the fixed export batch a free ``batch`` dimension.

    MindSpore writes the batch into Reshape targets ([B, -1], [B, N, -1]) and into the ends of Slices
    that cover the batch axis (the FPN's upsampling: begin + size, size [B, C, H, W]). A Reshape target
    whose first entry is the batch, on a tensor whose first dimension is the batch, copies it (0)
    instead; a Slice from 0 to the batch on axis 0 runs to the end instead. onnxruntime then runs the
    rewritten graph at another batch size, which catches whatever else fixes it.
    """
    graph = model.graph
    batch = graph.input[0].type.tensor_type.shape.dim[0].dim_value
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    first_dims = {value.name: _dims(value)[:1] for value in [*inferred.input, *inferred.value_info]}
    constants = _constant_arrays(graph)
    for node in graph.node:
        if node.op_type == "Reshape" and first_dims.get(node.input[0]) == [batch]:
            _replace_constant_input(graph, node, 1, constants, lambda target: _batch_copied(target, batch))
        elif node.op_type == "Slice" and node.input[1] in constants:
            starts = constants[node.input[1]]
            axes = constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(starts.size)
            _replace_constant_input(graph, node, 2, constants,
                                    lambda ends: _batch_to_the_end(starts, ends, axes, batch))
    _prune_unread(graph)
    for value in [graph.input[0], *graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_AXIS
    del graph.value_info[:]
    _check_free_batch(model, batch + 1, source)


def _batch_copied(target: np.ndarray, batch: int) -> np.ndarray | None:
    """A Reshape target that copies the input's first dimension instead of the fixed ``batch``."""
    if target.size == 0 or target[0] != batch:
        return None
    copied = target.copy()
    copied[0] = 0
    return copied


def _batch_to_the_end(starts: np.ndarray, ends: np.ndarray, axes: np.ndarray, batch: int) -> np.ndarray | None:
    """Slice ends that run to the end on axis 0 where the Slice took the whole fixed ``batch`` (0 to batch)."""
    on_batch = axes == 0
    if not on_batch.any() or starts[on_batch][0] != 0 or ends[on_batch][0] != batch:
        return None
    freed = ends.copy()
    freed[on_batch] = _TO_THE_END
    return freed


def _replace_constant_input(graph: onnx.GraphProto, node: onnx.NodeProto, index: int,
                            constants: dict[str, np.ndarray],
                            rewrite: Callable[[np.ndarray], np.ndarray | None]) -> None:
    """Point input ``index`` of ``node`` at a new initializer holding ``rewrite(value)`` when that is not None."""
    value = constants.get(node.input[index])
    rewritten = None if value is None else rewrite(value)
    if rewritten is not None:
        name = f"{node.name or node.output[0]}/free_batch"
        graph.initializer.append(numpy_helper.from_array(rewritten.astype(value.dtype), name))
        node.input[index] = name


def _prune_unread(graph: onnx.GraphProto) -> None:
    """Drop the nodes and initializers nothing reads any more (the constants the rewrite replaced)."""
    while True:
        read = {name for node in graph.node for name in node.input} | {value.name for value in graph.output}
        unread = [node for node in graph.node if not any(name in read for name in node.output)]
        for node in unread:
            graph.node.remove(node)
        if not unread:
            break
    kept = [init for init in graph.initializer if init.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _check_free_batch(model: onnx.ModelProto, batch: int, source: str) -> None:
    """Run the rewritten decode model at ``batch`` images in onnxruntime: the outputs must have that many rows."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    dims = [dim.dim_value for dim in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        rows = [output.shape[0] for output in session.run(None, {model.graph.input[0].name:
                                                                    np.zeros((batch, *dims), np.float32)})]
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own unexported exception types
        rows = [f"an error ({str(error).splitlines()[0][:200]})"]
    if rows != [batch] * len(model.graph.output):
        raise NmsGraphError(f"{source}: the decode model still fixes its batch after the rewrite (a batch of {batch} "
                            f"gave {rows}); export without --export_nms (a fixed-batch decode model) and report this")


class _Tail:
    """The nodes and constants appended after the decode model, each named under ``nms/``."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, values: Any, dtype: Any) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), f"nms/{name}"))
        return f"nms/{name}"

    def op(self, op_type: str, inputs: Sequence[str], name: str, outputs: int = 1, **attributes: Any) -> Any:
        """Add a node; returns its output name (a list of them when ``outputs`` > 1)."""
        names = [f"nms/{name}" if outputs == 1 else f"nms/{name}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=f"nms/{name}", **attributes))
        return names[0] if outputs == 1 else names

    def output(self, op_type: str, inputs: Sequence[str], name: str, **attributes: Any) -> None:
        """Add a node whose single output is the graph output ``name``."""
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=f"nms/{name}", **attributes))


def _nms_tail(boxes: str, scores: str, num_boxes: int, num_classes: int, settings: NmsSettings) -> _Tail:
    """The operators from the decode outputs to the four NMS outputs (see the module docstring)."""
    tail = _Tail()
    foreground = num_classes - 1
    candidates = min(settings.pre_nms_top_k, num_boxes)
    class_scores = tail.op("Slice", [scores, tail.constant("fg_start", [1], np.int64),
                                     tail.constant("fg_end", [num_classes], np.int64),
                                     tail.constant("fg_axis", [2], np.int64)], "foreground")  # (B, N, C-1)
    anchor_numbers = tail.constant("anchor_numbers", np.arange(num_boxes), np.float32)
    min_score = tail.constant("min_score", settings.min_score, np.float32)
    by_class = tail.op("Transpose", [class_scores], "by_class", perm=[0, 2, 1])  # (B, C-1, N)
    top_keys, top_anchors = _first_k(tail, by_class, anchor_numbers, candidates, num_boxes, 2, "candidates")
    in_top = tail.op("Greater", [tail.op("Scatter", [_filled(tail, by_class, 0.0, "no_candidates"), top_anchors,
                                                     top_keys], "top_keys", axis=2),
                                 tail.constant("zero", 0.0, np.float32)], "in_top")
    is_candidate = tail.op("And", [in_top, tail.op("Greater", [by_class, min_score], "passed")], "is_candidate")
    nms_input = tail.op("Where", [is_candidate, by_class, tail.constant("not_candidate", -1.0, np.float32)],
                        "nms_input")  # non-candidates below any score threshold, however an engine compares
    per_class = tail.constant("per_class", [min(candidates, settings.max_boxes)], np.int64)
    selected = tail.op("NonMaxSuppression", [boxes, nms_input, per_class,
                                             tail.constant("iou", [settings.nms_threshold], np.float32),
                                             tail.constant("score_threshold", [settings.min_score], np.float32)],
                       "selected", center_point_box=0)  # (S, 3): image, class - 1, anchor
    survivors = _survivor_scores(tail, class_scores, selected, num_boxes, foreground)  # (B, N * (C-1))
    _best_survivors(tail, survivors, boxes, anchor_numbers, num_boxes, foreground, settings)
    return tail


def _filled(tail: _Tail, like: str, value: float, name: str) -> str:
    """A float tensor of ``like``'s (run-time) shape holding ``value`` everywhere."""
    return tail.op("ConstantOfShape", [tail.op("Shape", [like], f"{name}_shape")], name,
                   value=numpy_helper.from_array(np.full(1, value, np.float32)))


def _equal(tail: _Tail, first: str, second: str, name: str) -> str:
    """Float equality: opset 10's Equal takes integers only, so neither greater nor less."""
    return tail.op("Not", [tail.op("Or", [tail.op("Greater", [first, second], f"{name}_greater"),
                                          tail.op("Less", [first, second], f"{name}_less")], f"{name}_differ")], name)


def _first_k(tail: _Tail, values: str, numbers: str, count: int, length: int, axis: int,
             name: str) -> list[str]:
    """(keys, indices) of the ``count`` largest ``values`` along ``axis``, equal values: lower ``numbers`` first.

    TopK's own tie order cannot be relied on (OpenVINO's CPU TopK does not put the lower index first,
    as ONNX asks), so TopK only finds the count-th largest value, the bar; a second TopK then picks
    from integer keys that cannot tie: every value above the bar (fewer than ``count``, all taken),
    then the values at the bar by ``numbers`` (0..length-1 along the axis). Keys are exact in float32
    while 2 * length < 2**24 (append_nms checks). The result is the right set in no particular order;
    the chosen keys are > 0.
    """
    top_values = tail.op("TopK", [values, tail.constant(f"{name}_count", [count], np.int64)], f"{name}_top",
                         outputs=2, axis=axis)[0]
    bar = tail.op("Slice", [top_values, tail.constant(f"{name}_last", [count - 1], np.int64),
                            tail.constant(f"{name}_end", [count], np.int64),
                            tail.constant(f"{name}_axis", [axis], np.int64)], f"{name}_bar")
    tie_keys = tail.op("Sub", [tail.constant(f"{name}_length", length, np.float32), numbers], f"{name}_tie_keys")
    keys = tail.op("Where", [tail.op("Greater", [values, bar], f"{name}_above"),
                             tail.constant(f"{name}_above_key", 2 * length, np.float32),
                             tail.op("Where", [_equal(tail, values, bar, f"{name}_at_bar"), tie_keys,
                                               tail.constant(f"{name}_below_key", -1.0, np.float32)],
                                     f"{name}_tie_or_below")], f"{name}_keys")
    return tail.op("TopK", [keys, tail.constant(f"{name}_key_count", [count], np.int64)], f"{name}_chosen",
                   outputs=2, axis=axis)


def _survivor_scores(tail: _Tail, class_scores: str, selected: str, num_boxes: int, foreground: int) -> str:
    """(B, N * (C-1)): the foreground scores of the NMS survivors, -1 elsewhere (anchor-major, as the scores)."""
    strides = tail.constant("strides", [[num_boxes * foreground, 1, foreground]], np.int64)  # image, class, anchor
    positions = tail.op("ReduceSum", [tail.op("Mul", [selected, strides], "strided")], "positions", axes=[1],
                        keepdims=0)  # (S,) into the flat (B, N, C-1) scores
    flat_scores = tail.op("Reshape", [class_scores, tail.constant("flat", [-1], np.int64)], "flat_scores")
    kept = tail.op("Scatter", [_filled(tail, flat_scores, -1.0, "unset"), positions,
                               tail.op("Gather", [flat_scores, positions], "kept_scores")], "kept_flat", axis=0)
    return tail.op("Reshape", [kept, tail.constant("per_image", [-1, num_boxes * foreground], np.int64)], "kept")


def _best_survivors(tail: _Tail, survivors: str, boxes: str, anchor_numbers: str, num_boxes: int, foreground: int,
                    settings: NmsSettings) -> None:
    """The four graph outputs: each image's max_boxes best survivors in Python's order, padding zeroed."""
    length = num_boxes * foreground
    count = min(settings.max_boxes, length)
    position_numbers = tail.op("Reshape", [tail.op("Add", [
        tail.op("Mul", [tail.op("Unsqueeze", [anchor_numbers], "anchor_column", axes=[1]),
                        tail.constant("classes_per_anchor", foreground, np.float32)], "anchor_starts"),
        tail.constant("class_numbers", np.arange(foreground), np.float32)], "position_grid"),
        tail.constant("flat_positions", [-1], np.int64)], "position_numbers")  # anchor * (C-1) + class - 1
    chosen = _first_k(tail, survivors, position_numbers, count, length, 1, "best")[1]  # (B, K), unordered
    images = _image_numbers(tail, chosen)
    flat_survivors = tail.op("Reshape", [survivors, tail.constant("flat_survivors_shape", [-1], np.int64)],
                             "flat_survivors")
    chosen_scores = tail.op("Gather", [flat_survivors, _row_offsets(tail, images, chosen, length, "chosen")],
                            "chosen_scores")
    ranks = _sort_ranks(tail, chosen_scores, chosen)
    # the ranks are a permutation of each row, so every slot is written and the data input only gives the shape
    best = tail.op("Scatter", [chosen_scores, ranks, chosen_scores], "best_scores", axis=1)
    positions = tail.op("Scatter", [chosen, ranks, chosen], "best_positions", axis=1)
    found = tail.op("Greater", [best, tail.constant("found_above", settings.min_score, np.float32)], "found")
    foreground_count = tail.constant("num_foreground", foreground, np.int64)
    anchors = tail.op("Div", [positions, foreground_count], "anchors")
    labels = tail.op("Add", [tail.op("Mod", [positions, foreground_count], "class_offsets"),
                             tail.constant("one", 1, np.int64)], "class_labels")
    tail.output("ReduceSum", [tail.op("Cast", [found], "found_int", to=TensorProto.INT64)], "num_detections",
                axes=[1], keepdims=0)
    flat_boxes = tail.op("Reshape", [boxes, tail.constant("box_rows_shape", [-1, 4], np.int64)], "flat_boxes")
    yxyx = tail.op("Gather", [flat_boxes, _row_offsets(tail, images, anchors, num_boxes, "box")], "chosen_yxyx")
    xyxy = tail.op("Gather", [yxyx, tail.constant("yxyx_to_xyxy", [1, 0, 3, 2], np.int64)], "xyxy", axis=2)
    found_rows = tail.op("Unsqueeze", [found], "found_rows", axes=[2])
    tail.output("Where", [found_rows, xyxy, tail.constant("no_box", 0.0, np.float32)], "boxes")
    tail.output("Where", [found, best, tail.constant("no_score", 0.0, np.float32)], "scores")
    tail.output("Where", [found, labels, tail.constant("no_label", 0, np.int64)], "labels")


def _sort_ranks(tail: _Tail, scores: str, positions: str) -> str:
    """(B, K) int64 place of each entry in the order score descending, equal scores lower position first.

    Counts, for each entry, the entries that come before it (K x K comparisons per image, K = max_boxes):
    TopK cannot be trusted with the order of equal scores (see _first_k).
    """
    def pair(name: str, tensor: str) -> tuple[str, str]:
        return (tail.op("Unsqueeze", [tensor], f"{name}_own", axes=[2]),  # (B, K, 1): the entry
                tail.op("Unsqueeze", [tensor], f"{name}_other", axes=[1]))  # (B, 1, K): the others

    own_score, other_score = pair("rank_scores", scores)
    own_position, other_position = pair("rank_positions", positions)
    tie_before = tail.op("And", [_equal(tail, other_score, own_score, "rank_tie"),
                                 tail.op("Less", [other_position, own_position], "rank_lower")], "rank_tie_before")
    before = tail.op("Or", [tail.op("Greater", [other_score, own_score], "rank_higher"), tie_before], "rank_before")
    return tail.op("ReduceSum", [tail.op("Cast", [before], "rank_before_int", to=TensorProto.INT64)], "ranks",
                   axes=[2], keepdims=0)


def _image_numbers(tail: _Tail, per_image: str) -> str:
    """(B, 1) int64 0..B-1, B being the first dimension of ``per_image``.

    Opset 10 has neither Range nor a batched gather (both opset 11): NonZero of a (B,) tensor of ones
    numbers the images, which offset the rows of flattened per-image tensors.
    """
    batch = tail.op("Slice", [tail.op("Shape", [per_image], "per_image_shape"), tail.constant("first", [0], np.int64),
                              tail.constant("second", [1], np.int64)], "batch_size")
    ones = tail.op("ConstantOfShape", [batch], "image_ones", value=numpy_helper.from_array(np.ones(1, np.int64)))
    return tail.op("Reshape", [tail.op("NonZero", [ones], "image_numbers"),
                               tail.constant("column", [-1, 1], np.int64)], "images")


def _row_offsets(tail: _Tail, images: str, indices: str, row_length: int, name: str) -> str:
    """``indices`` (B, K) into each image's rows as indices into all images' rows flattened: image * length + index."""
    return tail.op("Add", [tail.op("Mul", [images, tail.constant(f"{name}_row_length", row_length, np.int64)],
                                   f"{name}_first_rows"), indices], f"{name}_rows")


def _nms_outputs(count: int) -> list[onnx.ValueInfoProto]:
    return [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [BATCH_AXIS, count, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [BATCH_AXIS, count]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, [BATCH_AXIS, count]),
            helper.make_tensor_value_info("num_detections", TensorProto.INT64, [BATCH_AXIS])]


# ---- running an NMS model ----------------------------------------------------------------------

def in_model_postprocessing(session: ModelSession, config: Any) -> NmsSettings | None:
    """Check a loaded model against ``config`` and tell who post-processes its outputs.

    None for a plain export (boxes and scores of every anchor, checked by engines'
    ``check_model_fits_config``): the caller runs the Python post-processing. For an NMS model
    (outputs ``NMS_OUTPUT_NAMES``) the thresholds baked into it: from its ONNX metadata, or for a
    file without them (an OpenVINO IR converted from it) the config's, which is the export's when
    it is the config written beside the file.
    """
    if tuple(session.output_names) != NMS_OUTPUT_NAMES:
        check_model_fits_config(session, config)
        return None
    recorded = _recorded_metadata(Path(session.path))
    expected = [3, *(int(v) for v in config.img_shape)]
    if list(session.input_shape[1:]) != expected or int(recorded.get(NUM_CLASSES_KEY, config.num_classes)) \
            != int(config.num_classes):
        raise NmsGraphError(f"{session.path}: an NMS model with input {['B', *session.input_shape[1:]]} for "
                            f"{recorded.get(NUM_CLASSES_KEY, '?')} classes, but the config ({config.model_name}, "
                            f"img_shape {config.img_shape}, {config.num_classes} classes) needs input "
                            f"{['B', *expected]}; pass the --config_path the model was exported with")
    return NmsSettings.from_metadata(recorded) or NmsSettings.from_config(config)


def postprocessing_note(in_model: NmsSettings | None, config: Any) -> str:
    """One line for the log and the report: who post-processed the detections, with which thresholds."""
    if in_model is None:
        return f"post-processing: Python, {NmsSettings.from_config(config).describe()} (the config's)"
    return (f"post-processing: NMS in the model, {in_model.describe()} (fixed at export; the config's min_score, "
            f"nms_threshold and max_boxes are not applied)")


def _recorded_metadata(path: Path) -> dict[str, str]:
    """An ONNX file's metadata_props; empty for other files (OpenVINO's IR does not keep them)."""
    if path.suffix.lower() != ".onnx":
        return {}
    return {prop.key: prop.value for prop in onnx.load(str(path), load_external_data=False).metadata_props}


def detections_from_outputs(outputs: Sequence[np.ndarray], image_hw: np.ndarray) -> list[Detections]:
    """Each image's detections from an NMS model's batch outputs, boxes in pixels of its original (height, width).

    Scaled in float64 and rounded to float32 as ``postprocess_image`` scales its boxes, so an NMS model
    and the Python post-processing of the same decoded boxes give the same pixel values.
    """
    boxes, scores, labels, counts = (np.asarray(output) for output in outputs)
    if counts.shape != (len(image_hw),) or boxes.shape[:1] != counts.shape:
        raise NmsGraphError(f"an NMS model returned detections for {counts.shape} images (boxes {boxes.shape}) "
                            f"for a batch of {len(image_hw)}: export the model again with python export.py")
    detections = []
    for image, (height, width) in enumerate(np.asarray(image_hw, dtype=np.float64)):
        count = int(counts[image])
        pixels = boxes[image, :count].astype(np.float64) * [width, height, width, height]
        detections.append(Detections(pixels.astype(np.float32), scores[image, :count].astype(np.float32),
                                     labels[image, :count].astype(np.int64)))
    return detections
