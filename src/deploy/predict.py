"""Detections on the user's own image files with a checkpoint, MINDIR or ONNX model (``predict.py``).

Pre-processing runs the eval pipeline's MindSpore vision ops with its constants (src/data/dataset.py)
on the image as cv2 decodes it (pixel for pixel what the pipeline's Decode gives, without Decode's
habit of dropping a copy of every corrupt input into the working directory), and post-processing
is eval's ``postprocess_image``, so an image gets the detections eval.py would compute for it, up
to the thresholds chosen here. A file exported with NMS in its graph (export.py --export_nms True)
returns the detections itself, with the export's thresholds, which a run can only make stricter
(``check_options_fit_model``). Exported files have a fixed batch: the last batch is padded with
zeros and the padding's outputs dropped, so any number of images runs.
Outputs: each image with its detections drawn (src/deploy/drawing.py) and one COCO results json
(eval's CocoResultWriter, with each record's file_name and category_name). They never land on the
user's images: ``check_output_folder`` refuses an output folder that is, holds or lies in an input
folder (or holds an input file), and outputs of an earlier run unless the user allows replacing
them; all before a model is loaded. A lock keeps two predictions out of one folder.
"""
from __future__ import annotations

import glob
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import mindspore.dataset.transforms as transforms
import mindspore.dataset.vision as vision
import numpy as np
from PIL import Image
from tqdm import tqdm

from src.boxes.coding import pairwise_iou
from src.data.dataset import IMAGE_MEAN, IMAGE_STD, decode_rgb
from src.deploy.drawing import draw_detections
from src.deploy.nms_graph import NmsSettings, detections_from_outputs
from src.eval.coco import CocoResultWriter, category_ids_by_name
from src.eval.postprocess import Detections, check_outputs, finite_rows, postprocess_image
from src.model_utils.errors import SSDError, UsageError
from src.model_utils.files import remove_stale_temporaries
from src.model_utils.run_lock import RunLock

#: Suffixes of the files read as images (formats both cv2 and the eval pipeline's Decode read).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MODEL_SUFFIXES = (".ckpt", ".mindir", ".onnx", ".xml")
#: Model types run by MindSpore itself (the engine flags do not apply to them).
MINDSPORE_SUFFIXES = (".ckpt", ".mindir")
DETECTIONS_FILE = "detections.json"
#: Lock file of a prediction in its output folder (one prediction per folder at a time).
LOCK_FILE = ".predict.lock"
JPEG_QUALITY = 95
#: Drawn detections must score above this: the eval threshold (min_score, ~0.1) keeps dozens of low-score
#: boxes per image that help mAP but bury the real objects in a picture. detections.json keeps them all.
DEFAULT_DRAW_THRESHOLD = 0.3

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class PredictError(SSDError, ValueError):
    """Inputs, options or a model file that cannot be used as asked; the message says the fix."""


class UnreadableImageError(SSDError, ValueError):
    """A file with an image suffix that cannot be decoded (corrupt, truncated, empty)."""


@dataclass(frozen=True)
class Detector:
    """A model as a numpy function: normalised images (B, 3, H, W) -> boxes (B, N, 4), scores (B, N, C), or
    for a model with NMS in its graph (``in_model`` set) its four outputs (src/deploy/nms_graph.py)."""

    predict: Predict
    batch_size: int  # the number of images each call must be given
    engine: str  # what runs the model, for the log
    in_model: NmsSettings | None = None  # the thresholds an NMS model applied at export; None: post-process here


@dataclass(frozen=True)
class PredictOptions:
    """Post-processing settings: the config's unless the command line overrides them."""

    min_score: float
    nms_threshold: float
    max_boxes: int
    kept_classes: tuple[int, ...] | None  # training class indices to report; None = all
    draw_threshold: float  # detections drawn on the images score above this


@dataclass
class PredictSummary:
    """What one run did, for the final line and the tests."""

    output_dir: Path
    detections_json: Path
    num_images: int = 0
    num_detections: int = 0
    num_drawn: int = 0
    num_non_finite: int = 0  # anchors whose box or scores were NaN/Inf, left out before post-processing
    non_images: list[Path] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        skipped = f"skipped {len(self.non_images)} non-image and {len(self.unreadable)} unreadable files"
        non_finite = (f"; {self.num_non_finite} boxes with NaN/Inf outputs left out (the model produced "
                      f"non-finite values)" if self.num_non_finite else "")
        return (f"predicted {self.num_images} images, {self.num_detections} detections ({self.num_drawn} drawn) "
                f"in {self.seconds:.1f} s; "
                f"{skipped}; drawn images in {self.output_dir}, detections in {self.detections_json}{non_finite}")


class _LoadedImage(NamedTuple):
    path: Path
    image_rgb: np.ndarray  # original (H, W, 3) uint8
    network_input: np.ndarray  # (3, H, W) float32


# ---- models -------------------------------------------------------------------------------------

def load_detector(model_path: str | Path, config: Any, num_images: int, backend: str | None = None,
                  precision: str = "f32") -> Detector:
    """The model file as a Detector; the engine is chosen by the suffix (.ckpt and .mindir: MindSpore;
    .onnx: onnxruntime unless ``backend`` says openvino; .xml: OpenVINO IR).

    A checkpoint is fed batches of up to eval_batch_size images (one compiled shape per run); an
    exported file is fed its own batch size.
    """
    model_path = Path(model_path)
    suffix = model_path.suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise PredictError(f"--model {model_path}: unknown model type {suffix!r}; pass a train.py checkpoint (.ckpt) "
                           f"or a file written by export.py (.mindir, .onnx, OpenVINO .xml)")
    if not model_path.is_file():
        raise PredictError(f"--model {model_path} not found; pass the path of a .ckpt, .mindir, .onnx or .xml file")
    if suffix in MINDSPORE_SUFFIXES and (backend is not None or precision != "f32"):
        raise PredictError(f"--backend/--precision choose the engine of exported .onnx/.xml files; {model_path.name} "
                           f"runs in MindSpore (drop the flags, or export the model with python export.py)")
    free_batch = max(1, min(int(config.eval_batch_size), num_images))
    if suffix == ".ckpt":
        return _checkpoint_detector(model_path, config, free_batch)
    if suffix == ".mindir":
        return _mindir_detector(model_path, config)
    return _exported_detector(model_path, config, free_batch, backend, precision)


def _checkpoint_detector(path: Path, config: Any, batch_size: int) -> Detector:
    from src.eval.validation import predictor
    from src.models.registry import inference_network
    from src.weights.checkpoint import load_network_weights

    infer_net = inference_network(config)
    load_network_weights(path, infer_net, config=config)
    infer_net.set_train(False)
    return Detector(predictor(infer_net), batch_size, f"MindSpore ({config.model_name} checkpoint)")


def mindir_input_shape(path: Path) -> list[int]:
    """The (B, 3, H, W) input shape stored in a MINDIR file (nn.GraphCell does not report it)."""
    from mindspore.train import mind_ir_pb2

    model = mind_ir_pb2.ModelProto()
    try:
        model.ParseFromString(path.read_bytes())
    except Exception as err:  # protobuf's DecodeError has no stable import path across versions
        raise PredictError(f"{path} is not a MINDIR file MindSpore can read ({err}); export one with "
                           f"python export.py --file_format MINDIR") from err
    inputs = model.graph.input
    if len(inputs) != 1 or not inputs[0].tensor:
        raise PredictError(f"{path} has {len(inputs)} inputs; an SSD export has exactly one (the image batch)")
    return [int(dim) for dim in inputs[0].tensor[0].dims]


def _mindir_detector(path: Path, config: Any) -> Detector:
    import mindspore as ms
    from mindspore import nn

    from src.eval.validation import predictor

    shape = mindir_input_shape(path)
    expected = [3, *(int(v) for v in config.img_shape)]
    if len(shape) != 4 or shape[1:] != expected or shape[0] < 1:
        raise PredictError(f"{path}: input shape {shape} does not fit the config ({config.model_name}, img_shape "
                           f"{config.img_shape}, needs [B, {', '.join(map(str, expected))}]); pass the "
                           f"--config_path the file was exported with")
    return Detector(predictor(nn.GraphCell(ms.load(str(path)))), shape[0], "MindSpore MINDIR (nn.GraphCell)")


def _exported_detector(path: Path, config: Any, free_batch: int, backend: str | None, precision: str) -> Detector:
    from src.deploy.engines import OnnxModelError, backend_for, open_session, session_predictor
    from src.deploy.nms_graph import NmsGraphError, in_model_postprocessing

    try:
        session = open_session(path, backend_for(path, backend), config.device_target, precision)
        in_model = in_model_postprocessing(session, config)
    except (OnnxModelError, NmsGraphError) as err:
        raise PredictError(str(err)) from err
    engine = session.description if in_model is None else f"{session.description}, NMS in the model"
    return Detector(session_predictor(session), session.batch_size or free_batch, engine, in_model)


# ---- inputs and options ---------------------------------------------------------------------------

def list_input_files(specs: Sequence[str]) -> list[Path]:
    """Files named by each spec: a file, a folder's files (sub-folders are not searched) or a glob; in order,
    each folder and glob sorted, duplicates removed."""
    files: dict[Path, None] = {}
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file())
            if not found:
                raise PredictError(f"--input {spec}: the folder has no files")
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not found:
                raise PredictError(f"--input {spec}: no such file or folder, and no file matches it as a glob "
                                   f"pattern (quote patterns: --input 'images/*.jpg')")
        files.update(dict.fromkeys(found))
    return list(files)


def prediction_options(config: Any, score_threshold: float | None, max_boxes: int | None,
                       class_filter: Sequence[str] | None, draw_threshold: float | None = None) -> PredictOptions:
    """The config's min_score / nms_threshold / max_boxes and DEFAULT_DRAW_THRESHOLD, with the command-line
    overrides (None = not given); class names checked."""
    kept = None
    if class_filter:
        known = list(config.classes)
        unknown = [name for name in class_filter if name not in known[1:]]
        if unknown:
            raise PredictError(f"--classes: {unknown} not among the config's classes; choose from {known[1:]}")
        kept = tuple(sorted(known.index(name) for name in class_filter))
    return PredictOptions(min_score=float(config.min_score if score_threshold is None else score_threshold),
                          nms_threshold=float(config.nms_threshold),
                          max_boxes=int(config.max_boxes if max_boxes is None else max_boxes), kept_classes=kept,
                          draw_threshold=float(DEFAULT_DRAW_THRESHOLD if draw_threshold is None else draw_threshold))


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, the pixels the eval pipeline's Decode gives (EXIF orientation ignored, as there).

    cv2 rather than MindSpore's Decode: Decode writes every file it fails on to abnormal_image.jpg in
    the working directory, a side effect a user's folder of photos should not have.
    """
    data = np.fromfile(path, dtype=np.uint8)
    if data.size == 0:
        raise UnreadableImageError("the file is empty")
    try:
        return decode_rgb(data)
    except ValueError as err:
        raise UnreadableImageError(str(err)) from None


def eval_preprocessor(img_shape: Sequence[int]) -> Callable[[np.ndarray], np.ndarray]:
    """RGB (H, W, 3) uint8 -> (3, h, w) float32 network input: the eval pipeline's resize (bilinear),
    normalisation and layout, with the same constants."""
    return transforms.Compose([vision.Resize([int(v) for v in img_shape], vision.Inter.LINEAR),
                               vision.Normalize(mean=list(IMAGE_MEAN), std=list(IMAGE_STD)), vision.HWC2CHW()])


def detect(boxes_yxyx: np.ndarray, scores: np.ndarray, image_hw: tuple[int, int],
           options: PredictOptions) -> Detections:
    """One image's detections: eval's post-processing, over the kept classes only (the others' scores are
    zeroed first, so the max_boxes cut counts only kept classes)."""
    if options.kept_classes is not None:
        mask = np.zeros(scores.shape[1], dtype=scores.dtype)
        mask[list(options.kept_classes)] = 1
        scores = scores * mask
    return postprocess_image(boxes_yxyx, scores, image_hw, options.min_score, options.nms_threshold,
                             options.max_boxes)


def check_options_fit_model(options: PredictOptions, in_model: NmsSettings) -> None:
    """A model with NMS in its graph applied its thresholds at export: a run can only be stricter."""
    if options.min_score < in_model.min_score or options.max_boxes > in_model.max_boxes \
            or options.nms_threshold != in_model.nms_threshold:
        raise PredictError(f"the model applies NMS in its graph, fixed at export ({in_model.describe()}), but this run "
                           f"asks for score > {options.min_score}, NMS IoU {options.nms_threshold}, at most "
                           f"{options.max_boxes} boxes; pass --score_threshold >= {in_model.min_score} and --max_boxes "
                           f"<= {in_model.max_boxes} with the config it was exported with, or export it again with "
                           f"other values (python export.py --export_nms True --min_score ... --max_boxes ...)")


def within_options(detections: Detections, options: PredictOptions) -> Detections:
    """An NMS model's detections cut to the run's options: score above min_score, kept classes, max_boxes.

    The same detections as ``detect`` for a higher score threshold or fewer boxes (``check_options_fit_model``
    allows no other change). A class filter keeps the model's detections of those classes, which the
    model chose among all classes: ``detect`` gives the kept classes all max_boxes places instead.
    """
    keep = detections.scores > options.min_score
    if options.kept_classes is not None:
        keep &= np.isin(detections.labels, options.kept_classes)
    index = np.flatnonzero(keep)[:options.max_boxes]
    return Detections(detections.boxes_xyxy[index], detections.scores[index], detections.labels[index])


def above(detections: Detections, threshold: float) -> Detections:
    """The detections scoring above ``threshold``."""
    keep = detections.scores > threshold
    return Detections(detections.boxes_xyxy[keep], detections.scores[keep], detections.labels[keep])


#: Drawn boxes of other classes overlapping a better one at least this much are taken for the same object.
SAME_OBJECT_IOU = 0.6


def one_label_per_object(detections: Detections) -> Detections:
    """The detections to draw: each best first, without the weaker boxes of *other* classes that cover
    the same object (IoU >= SAME_OBJECT_IOU). Per-class NMS keeps a circle's 0.33 "triangle" beside
    its 0.79 "circle", right for mAP but a misleading picture; same-class boxes were already NMSed."""
    order = np.argsort(-detections.scores, kind="stable")
    boxes, labels = detections.boxes_xyxy[order], detections.labels[order]
    overlaps = pairwise_iou(boxes, boxes)
    kept: list[int] = []
    for index in range(len(order)):
        if not any(labels[other] != labels[index] and overlaps[index, other] >= SAME_OBJECT_IOU for other in kept):
            kept.append(index)
    chosen = order[kept]
    return Detections(detections.boxes_xyxy[chosen], detections.scores[chosen], detections.labels[chosen])


# ---- outputs ------------------------------------------------------------------------------------

class ImageIds:
    """image_id of each predicted file: its COCO id when the annotation file lists its name, else a running
    number starting above the file's largest id (so the two kinds never collide)."""

    def __init__(self, ids_by_file_name: dict[str, int]) -> None:
        self._by_name = ids_by_file_name
        self._next = max(ids_by_file_name.values(), default=0) + 1

    def __call__(self, path: Path) -> int:
        if path.name in self._by_name:
            return self._by_name[path.name]
        self._next += 1
        return self._next - 1


def annotation_lookup(config: Any, log: logging.Logger) -> tuple[ImageIds, np.ndarray]:
    """(ImageIds, category id of each training class) from the config's eval annotation file when it exists;
    without it (or when it lacks some class names) category ids are the training class indices."""
    from src.data.mindrecord import GROUND_TRUTH_JSON, ground_truth_json, mindrecord_folder

    class_indices = np.arange(len(config.classes), dtype=np.int64)
    if config.dataset == "coco":
        try:
            gt_json: Path | None = ground_truth_json(config, as_given=True)
        except FileNotFoundError:
            gt_json = None
    else:  # VOC / txt: the json an evaluation converted, if any (converting here would be a dataset build)
        gt_json = mindrecord_folder(config) / GROUND_TRUTH_JSON
        gt_json = gt_json if gt_json.is_file() else None
    if gt_json is None:
        log.info("no annotation file of the config's eval split found: image_id is a running number and "
                 "category_id the training class index")
        return ImageIds({}), class_indices
    from src.data.coco_reader import load_coco_quietly

    coco = load_coco_quietly(gt_json)
    image_ids = ImageIds({Path(img["file_name"]).name: int(img["id"]) for img in coco.dataset["images"]})
    category_ids = category_ids_by_name(coco, config.classes)
    if (category_ids[1:] < 0).any():
        log.warning(f"{gt_json} lacks some of the config's class names: category_id is the training class index")
        return image_ids, class_indices
    log.info(f"image and category ids from {gt_json} (files it does not list get running numbers)")
    return image_ids, category_ids


def output_image_path(output_dir: Path, source: Path, taken: set[str]) -> Path:
    """JPEG inputs keep their name (written as JPEG), others become PNG; a clash of names gets _1, _2, ..."""
    suffix = source.suffix if source.suffix.lower() in (".jpg", ".jpeg") else ".png"
    name, counter = source.stem + suffix, 1
    while name in taken:
        name, counter = f"{source.stem}_{counter}{suffix}", counter + 1
    taken.add(name)
    return output_dir / name


def output_image_paths(files: Sequence[Path], output_dir: Path) -> dict[Path, Path]:
    """Where each image file's drawing goes, fixed before the run so the outputs can be checked first
    (an unreadable image keeps its name reserved: the names do not depend on which files decode)."""
    taken: set[str] = set()
    return {path: output_image_path(output_dir, path, taken) for path in files
            if path.suffix.lower() in IMAGE_SUFFIXES}


def check_output_folder(specs: Sequence[str], files: Sequence[Path], output_dir: Path, exist_ok: bool) -> None:
    """Refuse outputs that would land on the user's files; ``UsageError`` naming both paths and the fix.

    The output folder may not be an input folder, lie inside one or contain one (drawings would mix
    with, and a later run read, the user's images), nor be the folder of an input file (a JPEG's
    drawing has its name). Drawings and detections.json of an earlier run are replaced only with
    ``exist_ok``.
    """
    output = Path(output_dir).resolve()
    other = "pass --output_dir <another folder> outside the inputs"
    for spec in specs:
        folder = Path(spec).expanduser().resolve()
        if not folder.is_dir():
            continue
        relation = ("is" if output == folder else "is inside" if output.is_relative_to(folder)
                    else "contains" if folder.is_relative_to(output) else "")
        if relation:
            raise UsageError(f"the output folder {output} {relation} the input folder {folder}: the drawings would "
                             f"mix with your images; {other}")
    for path in files:
        if path.resolve().parent == output:
            raise UsageError(f"the output folder {output} holds the input {path}: drawings would be written over "
                             f"or among your images; {other}")
    if exist_ok:
        return
    planned = [*output_image_paths(files, Path(output_dir)).values(), Path(output_dir) / DETECTIONS_FILE]
    existing = [path for path in planned if path.exists()]
    if existing:
        more = f" and {len(existing) - 1} more outputs" if len(existing) > 1 else ""
        raise UsageError(f"{existing[0]}{more} of an earlier prediction already exist in {output}; pass --exist_ok "
                         f"to replace them, or --output_dir <another folder>")


# ---- the run ------------------------------------------------------------------------------------

class FilePredictor:
    """Reads, batches, predicts, draws and records the files of one run."""

    def __init__(self, detector: Detector, config: Any, options: PredictOptions, output_dir: Path,
                 log: logging.Logger) -> None:
        self.detector = detector
        self.config = config
        self.options = options
        self.output_dir = Path(output_dir)
        self.log = log
        self.preprocess = eval_preprocessor(config.img_shape)
        self.image_ids, self.category_ids = annotation_lookup(config, log)
        self._targets: dict[Path, Path] = {}
        if detector.in_model is not None:
            check_options_fit_model(options, detector.in_model)

    def run(self, files: Sequence[Path]) -> PredictSummary:
        """Predict every image of ``files``, holding the output folder's lock; non-image and unreadable
        files are logged, counted and skipped."""
        with RunLock(self.output_dir / LOCK_FILE, self.log, fix="pass another --output_dir"):
            remove_stale_temporaries(self.output_dir, self.log)
            return self._run(files)

    def _run(self, files: Sequence[Path]) -> PredictSummary:
        started = time.time()
        self._targets = output_image_paths(files, self.output_dir)
        summary = PredictSummary(self.output_dir, self.output_dir / DETECTIONS_FILE)
        pending: list[_LoadedImage] = []
        with CocoResultWriter(summary.detections_json, self.category_ids, self.config.classes,
                              category_names=True) as writer:
            for path in tqdm(files, desc="predict", unit="file", disable=len(files) < 2):
                loaded = self._load(path, summary)
                if loaded is not None:
                    pending.append(loaded)
                if len(pending) == self.detector.batch_size:
                    self._predict_batch(pending, writer, summary)
                    pending = []
            if pending:
                self._predict_batch(pending, writer, summary)
        summary.seconds = time.time() - started
        return summary

    def _load(self, path: Path, summary: PredictSummary) -> _LoadedImage | None:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            summary.non_images.append(path)
            self.log.warning(f"skipped {path}: not an image file (image suffixes: {', '.join(IMAGE_SUFFIXES)})")
            return None
        try:
            image = read_image(path)
        except UnreadableImageError as err:
            summary.unreadable.append(path)
            self.log.warning(f"skipped {path}: {err}")
            return None
        return _LoadedImage(path, image, self.preprocess(image))

    def _predict_batch(self, batch: list[_LoadedImage], writer: CocoResultWriter, summary: PredictSummary) -> None:
        inputs = np.stack([item.network_input for item in batch])
        padding = self.detector.batch_size - len(batch)
        if padding:
            inputs = np.concatenate([inputs, np.zeros((padding, *inputs.shape[1:]), dtype=inputs.dtype)])
        for item, detections in zip(batch, self._detections(self.detector.predict(inputs), batch, summary)):
            drawn = one_label_per_object(above(detections, self.options.draw_threshold))
            self._save_drawing(item, drawn)
            writer.write(self.image_ids(item.path), detections, file_name=str(item.path))
            summary.num_images += 1
            summary.num_detections += len(detections.scores)
            summary.num_drawn += len(drawn.scores)

    def _detections(self, outputs: Sequence[np.ndarray], batch: list[_LoadedImage],
                    summary: PredictSummary) -> list[Detections]:
        """Each image's detections: the model's own when it has NMS in its graph, else eval's post-processing."""
        if self.detector.in_model is not None:
            found = detections_from_outputs([np.asarray(out)[:len(batch)] for out in outputs],
                                            np.array([item.image_rgb.shape[:2] for item in batch]))
            return [within_options(detections, self.options) for detections in found]
        boxes, scores = (np.asarray(out) for out in outputs)
        try:
            check_outputs(boxes, scores, self.detector.batch_size, int(self.config.num_classes),
                          int(self.config.num_ssd_boxes))
        except ValueError as err:
            raise PredictError(f"{self.config.model_name} config: {err}") from err
        result = []
        for item, image_boxes, image_scores in zip(batch, boxes, scores):
            finite = finite_rows(image_boxes, image_scores)
            summary.num_non_finite += int(np.count_nonzero(~finite))
            result.append(detect(image_boxes[finite], image_scores[finite], item.image_rgb.shape[:2], self.options))
        return result

    def _save_drawing(self, item: _LoadedImage, detections: Detections) -> None:
        drawn = draw_detections(item.image_rgb, detections.boxes_xyxy, detections.scores, detections.labels,
                                self.config.classes)
        target = self._targets[item.path]
        Image.fromarray(drawn).save(target, **({"quality": JPEG_QUALITY} if target.suffix != ".png" else {}))
