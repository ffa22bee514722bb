"""Streamed COCO result files and standard COCO evaluation of any detector.

pycocotools (or faster_coco_eval when installed); the network is reached only through a
``predict_batch`` callable, so the same code scores a MindSpore network, an exported MINDIR or an
onnxruntime session.

Differences from the seed's ``COCOMetrics`` (REFERENCE_SSD.md §6, §8 B8/B9), all deliberate:
* detections are streamed to the json file image by image instead of kept in one Python list,
  which is what made the seed's evaluation need tens of GB;
* every image of the annotation file is evaluated, crowd images included (crowd boxes are
  COCOeval's ignore regions); the seed dropped images with any crowd box.
"""
from __future__ import annotations

import io
import json
import logging
import warnings
from collections import Counter
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from src.data.annotations import describe_ground_truth_changes
from src.data.coco_reader import load_coco_quietly
from src.eval.postprocess import Detections, check_outputs, postprocess_with_config

#: Categories COCOeval evaluates per pass (see _evaluate_by_category_groups): bounds its memory.
CATEGORIES_PER_PASS = 8


@dataclass(frozen=True)
class ClassAP:
    """COCO AP of one category over the evaluated images (nan when it has no ground truth there)."""

    name: str
    category_id: int
    ap: float
    ap50: float
    num_gt: int


@dataclass(frozen=True)
class CocoEvalResult:
    """Everything COCOeval measured, returned instead of printed."""

    stats: np.ndarray  # the 12 COCO summary numbers
    summary_lines: list[str]  # the 12 lines COCOeval.summarize() prints
    map: float  # stats[0], AP@[.50:.95] all areas, maxDets 100
    per_class: list[ClassAP]
    num_images: int
    num_detections: int
    num_crowd: int  # crowd GT boxes in the evaluated images (ignore regions for COCOeval)
    ground_truth_note: str = ""  # what the scored ground truth changed from the source annotations, if it says


def category_ids_by_name(coco_gt: COCO, classes: Sequence[str]) -> np.ndarray:
    """COCO category_id of every training class index, matched by name; -1 when absent.

    Index 0 (background) and names the annotation file does not know map to -1, so their
    detections cannot be written (the writer drops and reports them).
    """
    by_name: dict[str, int] = {}
    for cat in coco_gt.dataset["categories"]:
        if cat["name"] in by_name:
            raise ValueError(f"category name '{cat['name']}' appears twice in the annotation file: "
                             f"class names must identify categories uniquely")
        by_name[cat["name"]] = int(cat["id"])
    ids = np.array([by_name.get(name, -1) for name in classes], dtype=np.int64)
    ids[0] = -1
    return ids


#: Classes named in the warning about dropped detections; the rest are counted.
MAX_DROPPED_LISTED = 10

class CocoResultWriter:
    """Streams one image's detections at a time into a COCO results json file.

    Memory stays flat however many images are written (the seed's list of all detections needed
    tens of GB on val2017). The file is a valid json array once the writer is closed, also
    after an exception. Detections whose class has no category (category id -1) are dropped,
    counted in ``num_dropped`` and reported by one summary warning when the writer closes (an
    81-class model on a 4-class set would otherwise print 77 warnings). Detections with a NaN/Inf
    box or score (a diverged model) are dropped too, counted in ``num_non_finite`` and reported by
    one log line: JSON cannot store NaN, and the file is written with ``allow_nan=False``.

    ``category_names`` adds each detection's class name (``category_name``) and ``write``'s
    ``file_name`` the image file to the records: predict.py's json names the user's files, which
    have no COCO ids. COCO tools ignore the extra keys.
    """

    def __init__(self, path: Path, category_ids: np.ndarray, classes: Sequence[str] | None = None,
                 category_names: bool = False):
        if category_names and classes is None:
            raise ValueError("CocoResultWriter(category_names=True) needs the class names (classes)")
        self.path = Path(path)
        self._category_ids = np.asarray(category_ids, dtype=np.int64)
        self._classes = classes
        self._category_names = category_names
        self._dropped_by_label: Counter = Counter()
        self._file: io.TextIOWrapper | None = None
        self._separator = ""
        self.num_images = 0
        self.num_detections = 0
        self.num_dropped = 0
        self.num_non_finite = 0

    def __enter__(self) -> "CocoResultWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8")
        self._file.write("[")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._file is not None:
            self._file.write("\n]\n")
            self._file.close()
            self._file = None
        self._warn_dropped()
        self._warn_non_finite()

    def write(self, image_id: int, detections: Detections, file_name: str | None = None) -> None:
        """Append one image's detections (boxes rounded to 0.01 px, scores to 1e-5)."""
        if self._file is None:
            raise RuntimeError("CocoResultWriter.write called outside its 'with' block")
        finite = np.isfinite(detections.scores) & np.isfinite(detections.boxes_xyxy).all(axis=1)
        self.num_non_finite += int(np.count_nonzero(~finite))
        category = self._category_ids[detections.labels]
        self._report_dropped(detections.labels[finite & (category < 0)])
        valid = finite & (category >= 0)
        xyxy = detections.boxes_xyxy[valid].astype(np.float64)
        xywh = np.round(np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1), 2)
        scores = np.round(detections.scores[valid].astype(np.float64), 5)
        records = []
        for cat, label, box, score in zip(category[valid].tolist(), detections.labels[valid].tolist(),
                                          xywh.tolist(), scores.tolist()):
            record: dict[str, Any] = {"image_id": int(image_id)}
            if file_name is not None:
                record["file_name"] = file_name
            record["category_id"] = cat
            if self._category_names:
                record["category_name"] = self._classes[label]
            record["bbox"], record["score"] = box, score
            records.append(record)
        if records:
            self._file.write(self._separator + "\n" + json.dumps(records, allow_nan=False)[1:-1])
            self._separator = ","
        self.num_images += 1
        self.num_detections += len(records)

    def _report_dropped(self, labels: np.ndarray) -> None:
        self.num_dropped += labels.size
        self._dropped_by_label.update(labels.tolist())

    def _warn_dropped(self) -> None:
        if not self._dropped_by_label:
            return
        names = [f"'{self._classes[label] if self._classes is not None else f'#{label}'}' ({count})"
                 for label, count in self._dropped_by_label.most_common()]
        shown = ", ".join(names[:MAX_DROPPED_LISTED])
        more = f" and {len(names) - MAX_DROPPED_LISTED} more" if len(names) > MAX_DROPPED_LISTED else ""
        warnings.warn(f"{self.num_dropped} detections of {len(names)} classes dropped, no category of that name "
                      f"in the annotation file: {shown}{more}", stacklevel=3)
        self._dropped_by_label.clear()

    def _warn_non_finite(self) -> None:
        if self.num_non_finite:
            logging.getLogger("ssd").warning(
                f"{self.num_non_finite} detections with a NaN/Inf box or score were dropped from {self.path}: the "
                f"model's outputs are not finite; check the checkpoint or exported model it was run with")


def _load_results(coco_gt: COCO, results_json: Path) -> tuple[COCO, int]:
    """Detections as a pycocotools object; an empty file gives an empty one (loadRes cannot)."""
    with open(results_json, encoding="utf-8") as handle:
        detections = json.load(handle)
    unknown = {det["image_id"] for det in detections} - set(coco_gt.imgs)
    if unknown:
        raise ValueError(f"{results_json} has detections for {len(unknown)} image ids that the annotation "
                         f"file does not contain (e.g. {sorted(unknown)[:5]}): evaluate with the json the "
                         f"dataset was built from")
    with redirect_stdout(io.StringIO()):
        if detections:
            return coco_gt.loadRes(detections), len(detections)
        empty = COCO()
        empty.dataset = {"images": list(coco_gt.dataset["images"]),
                         "categories": list(coco_gt.dataset["categories"]), "annotations": []}
        empty.createIndex()
    return empty, 0


def _evaluated_categories(coco_gt: COCO, classes: Sequence[str] | None) -> list[tuple[int, str]]:
    """(category_id, name) pairs to evaluate: all of the file, or those named in ``classes``."""
    if classes is None:
        return sorted((cid, cat["name"]) for cid, cat in coco_gt.cats.items())
    ids = category_ids_by_name(coco_gt, classes)
    return sorted((int(cid), name) for cid, name in zip(ids, classes) if cid >= 0)


def _gt_counts(coco_gt: COCO, img_ids: Sequence[int], cat_ids: set[int]) -> tuple[Counter, int]:
    """Non-crowd GT boxes per category and the number of crowd boxes in the evaluated set."""
    counts: Counter = Counter()
    crowd = 0
    for img_id in img_ids:
        for ann in coco_gt.imgToAnns.get(img_id, []):
            if ann["category_id"] not in cat_ids:
                continue
            if ann.get("iscrowd", 0):
                crowd += 1
            else:
                counts[ann["category_id"]] += 1
    return counts, crowd


def _per_class_ap(precision: np.ndarray, categories: list[tuple[int, str]], counts: Counter) -> list[ClassAP]:
    """AP and AP50 per category from COCOeval's precision[T, R, K, area, maxDets] (all areas, 100 dets)."""
    result = []
    for k, (cat_id, name) in enumerate(categories):
        curve = precision[:, :, k, 0, -1]
        valid = curve[curve > -1]
        ap = float(valid.mean()) if valid.size else float("nan")
        ap50 = float(curve[0][curve[0] > -1].mean()) if valid.size else float("nan")
        result.append(ClassAP(name, cat_id, ap, ap50, counts[cat_id]))
    return result


def _evaluate_by_category_groups(evaluator: COCOeval, cat_ids: list[int]) -> None:
    """``evaluate()`` + ``accumulate()`` over ``cat_ids``, ``CATEGORIES_PER_PASS`` categories at a time.

    COCOeval keeps per-(image, category, area) matching state that grows with the detections:
    one pass over 5000 images x 100 detections took 2 GB. Everything it computes (matching, the
    per-image maxDets cut, precision/recall) is per category, so groups evaluated separately and
    stitched along the category axis leave the evaluator exactly as one pass would, ready for
    ``summarize()``, at a fraction of the memory.
    """
    parts: dict[str, list[np.ndarray]] = {"precision": [], "recall": [], "scores": []}
    for start in range(0, len(cat_ids), CATEGORIES_PER_PASS):
        evaluator.params.catIds = cat_ids[start:start + CATEGORIES_PER_PASS]
        with redirect_stdout(io.StringIO()):
            evaluator.evaluate()
            evaluator.accumulate()
        for key, arrays in parts.items():
            arrays.append(evaluator.eval[key])
        evaluator.evalImgs, evaluator.ious = [], {}  # release this group's state before the next one
    evaluator.params.catIds = list(cat_ids)
    precision = np.concatenate(parts["precision"], axis=2)  # [T, R, K, A, M]
    evaluator.eval = {"params": evaluator.params, "counts": list(precision.shape), "precision": precision,
                      "recall": np.concatenate(parts["recall"], axis=1),  # [T, K, A, M]
                      "scores": np.concatenate(parts["scores"], axis=2)}


def new_cocoeval(coco_gt: COCO, coco_dt: COCO) -> COCOeval:
    """A bbox COCOeval: faster_coco_eval's when it is installed, else pycocotools'.

    faster_coco_eval does the matching and accumulation in C++ (5000 images x ~30 detections: 4 s
    instead of 21 s) and gives the same numbers (tests/test_eval_coco.py compares the two); it is
    optional, so a plain pycocotools install evaluates too. The log names the backend that ran.
    """
    try:
        from faster_coco_eval import COCOeval_faster
    except ImportError:
        backend, evaluator = "pycocotools", COCOeval(coco_gt, coco_dt, iouType="bbox")
    else:  # print_function=print: its summary goes to stdout, where _run_cocoeval collects it
        backend, evaluator = "faster_coco_eval", COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=print)
    logging.getLogger("ssd").info(f"COCO evaluation backend: {backend}")
    return evaluator


def _run_cocoeval(coco_gt: COCO, results_json: Path, img_ids: Sequence[int] | None,
                  classes: Sequence[str] | None, gt_json: Path | None) -> CocoEvalResult:
    coco_dt, num_detections = _load_results(coco_gt, Path(results_json))
    img_ids = sorted(coco_gt.getImgIds()) if img_ids is None else sorted(int(i) for i in img_ids)
    categories = _evaluated_categories(coco_gt, classes)
    if not categories:
        raise ValueError("none of the class names appears among the annotation file's categories: "
                         "check config.classes against the json")
    evaluator = new_cocoeval(coco_gt, coco_dt)
    evaluator.params.imgIds = img_ids
    _evaluate_by_category_groups(evaluator, [cat_id for cat_id, _ in categories])
    printed = io.StringIO()
    with redirect_stdout(printed):
        evaluator.summarize()
    counts, num_crowd = _gt_counts(coco_gt, img_ids, {cat_id for cat_id, _ in categories})
    stats = np.asarray(evaluator.stats, dtype=np.float64)
    # [:12]: faster_coco_eval also prints AR at IoU 0.50 and 0.75, which are not among the 12 stats
    return CocoEvalResult(stats=stats, summary_lines=printed.getvalue().splitlines()[:12], map=float(stats[0]),
                          per_class=_per_class_ap(evaluator.eval["precision"], categories, counts),
                          num_images=len(img_ids), num_detections=num_detections, num_crowd=num_crowd,
                          ground_truth_note=describe_ground_truth_changes(coco_gt.dataset, gt_json))


def coco_evaluate(gt_json: Path | COCO, results_json: Path, img_ids: Sequence[int] | None = None,
                  classes: Sequence[str] | None = None) -> CocoEvalResult:
    """Standard COCO bbox evaluation of a results file against an annotation file or its loaded COCO.

    img_ids defaults to EVERY image of the annotation file: images without detections count
    (their ground truth is missed), and images with crowd boxes stay in (COCOeval treats crowd
    boxes as ignore regions). ``classes`` restricts the evaluated categories to those named
    (e.g. a model trained on a subset); None evaluates every category of the file.
    """
    if isinstance(gt_json, COCO):
        return _run_cocoeval(gt_json, results_json, img_ids, classes, None)
    return _run_cocoeval(load_coco_quietly(gt_json), results_json, img_ids, classes, Path(gt_json))


#: One batch's model outputs and the images' original (height, width) rows -> each image's detections.
BatchPostprocess = Callable[[Sequence[np.ndarray], np.ndarray], list[Detections]]


def _python_postprocess(config: Any, num_classes: int) -> BatchPostprocess:
    """eval's post-processing (the config's thresholds) of decoded boxes (B, N, 4) and scores (B, N, C)."""

    def postprocess(outputs: Sequence[np.ndarray], image_hw: np.ndarray) -> list[Detections]:
        boxes, scores = (np.asarray(out) for out in outputs)
        check_outputs(boxes, scores, len(image_hw), num_classes)
        return [postprocess_with_config(boxes[i], scores[i], (int(height), int(width)), config)
                for i, (height, width) in enumerate(image_hw)]

    return postprocess


def _write_detections(predict_batch: Callable[[np.ndarray], Sequence[np.ndarray]], dataset: Any, coco_gt: COCO,
                      gt_json: Path, writer: CocoResultWriter, postprocess: BatchPostprocess) -> set[int]:
    """Run the network over the dataset and stream every image's detections; returns the image ids."""
    seen: set[int] = set()
    batches = dataset.create_dict_iterator(output_numpy=True, num_epochs=1)
    for batch in tqdm(batches, total=dataset.get_dataset_size(), desc="eval", unit="batch"):
        images = batch["image"]
        detections = postprocess(predict_batch(images), np.asarray(batch["image_shape"]))
        for i, image_detections in enumerate(detections):
            img_id = int(np.asarray(batch["img_id"][i]).reshape(-1)[0])
            if img_id not in coco_gt.imgs:
                raise ValueError(f"image id {img_id} of the eval dataset is not in {gt_json}: build the eval "
                                 f"dataset (mindrecord) from that annotation file")
            if img_id in seen:
                raise ValueError(f"image id {img_id} appears twice in the eval dataset: build it without "
                                 f"repeat or padding so every image is scored once")
            seen.add(img_id)
            writer.write(img_id, image_detections)
    return seen


def evaluate_detector(predict_batch: Callable[[np.ndarray], Sequence[np.ndarray]], dataset: Any,
                      gt_json: Path, classes: Sequence[str], config: Any, results_json: Path,
                      postprocess: BatchPostprocess | None = None) -> CocoEvalResult:
    """Predict, post-process, stream to ``results_json`` and COCO-evaluate over ALL images of gt_json.

    ``dataset`` offers ``get_dataset_size`` and ``create_dict_iterator`` with columns img_id (B, 1),
    image (B, 3, H, W) and image_shape (B, 2) = original (h, w); ``predict_batch(images)`` returns
    decoded normalised yxyx boxes (B, N, 4) and sigmoid scores (B, N, C), post-processed with the config's
    thresholds, unless ``postprocess`` turns its outputs into detections (a model with NMS in its graph:
    src/deploy/nms_graph.py ``detections_from_outputs``). Images the dataset did not cover still count
    (with no detections) and a warning says how many: a partial dataset cannot silently shrink
    the evaluation set (the seed's B8/B9). When ``gt_json`` is the cleaned ground truth of the
    conversion (``ground_truth_json``), the log and ``ground_truth_note`` say what it changed.
    """
    coco_gt = load_coco_quietly(gt_json)
    note = describe_ground_truth_changes(coco_gt.dataset, gt_json)
    if note:
        logging.getLogger("ssd").info(note)
    with CocoResultWriter(results_json, category_ids_by_name(coco_gt, classes), classes) as writer:
        seen = _write_detections(predict_batch, dataset, coco_gt, gt_json, writer,
                                 postprocess or _python_postprocess(config, len(classes)))
    missing = len(coco_gt.imgs) - len(seen)
    if missing:
        warnings.warn(f"the eval dataset covered {len(seen)} of the {len(coco_gt.imgs)} images of {gt_json}; "
                      f"the other {missing} are evaluated with no detections", stacklevel=2)
    return _run_cocoeval(coco_gt, results_json, None, classes, Path(gt_json))
