"""Detection post-processing, streamed COCO result files and standard COCO evaluation.

Pure numpy + pycocotools (or faster_coco_eval when installed): the network is reached only through a
``predict_batch`` callable, so the same code scores a MindSpore network, an exported MINDIR or an
onnxruntime session.

Differences from the seed's ``COCOMetrics`` (REFERENCE_SSD.md §6, §8 B8/B9), all deliberate:
* at most ``max_boxes`` detections per IMAGE (the COCO protocol; COCOeval reads only the 100
  best per image anyway), instead of 100 per class (up to 8000 per image);
* detections are streamed to the json file image by image instead of kept in one Python list,
  which is what made the seed's evaluation need tens of GB;
* every image of the annotation file is evaluated, crowd images included (crowd boxes are
  COCOeval's ignore regions); the seed dropped images with any crowd box.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import warnings
from collections import Counter
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from src.annotations import load_coco_quietly
from src.box_utils import box_areas

# Candidates kept per class before NMS: bounds the greedy loop on 51150-anchor FPN outputs while
# staying far above the 100 detections an image may finally keep.
PRE_NMS_TOP_K = 400
# postprocess_image first runs NMS on only the best CANDIDATES_PER_DETECTION * max_boxes candidates of the
# image (enough for nearly every image: noise boxes rarely overlap) and continues over a PREFIX_GROWTH times
# longer ranked prefix while too few detections survive and more candidates exist.
CANDIDATES_PER_DETECTION = 4
PREFIX_GROWTH = 4
#: Candidates batched_nms examines per vectorised step (plus those kept so far): bounds its pair arrays.
NMS_WINDOW = 256
#: Categories COCOeval evaluates per pass (see _evaluate_by_category_groups): bounds its memory.
CATEGORIES_PER_PASS = 8


class Detections(NamedTuple):
    """Final detections of one image, best score first."""

    boxes_xyxy: np.ndarray  # (K, 4) float32 pixels [xmin, ymin, xmax, ymax]
    scores: np.ndarray  # (K,) float32
    labels: np.ndarray  # (K,) int64 training class index 1..C-1


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


def _paired_iou(boxes: np.ndarray, areas: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Continuous-area IoU of boxes[first[i]] with boxes[second[i]]; 0 when both boxes have no area."""
    box_a, box_b = boxes[first], boxes[second]
    inter_w = np.clip(np.minimum(box_a[:, 2], box_b[:, 2]) - np.maximum(box_a[:, 0], box_b[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(box_a[:, 3], box_b[:, 3]) - np.maximum(box_a[:, 1], box_b[:, 1]), 0, None)
    inter = inter_w * inter_h
    union = areas[first] + areas[second] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _same_label_pairs(sorted_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j), i < j, of equal entries of a sorted label array, ordered by i.

    Enumerated without a (n, n) matrix: entry i pairs with the rest of its run of equal labels,
    so the memory is the number of same-label pairs, not the square of the number of boxes.
    """
    run_end = np.searchsorted(sorted_labels, sorted_labels, side="right")
    partners = run_end - np.arange(sorted_labels.size) - 1
    first = np.repeat(np.arange(sorted_labels.size), partners)
    pair_starts = np.repeat(np.cumsum(partners) - partners, partners)
    return first, first + 1 + np.arange(first.size) - pair_starts


def _greedy_keep(boxes: np.ndarray, labels: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Greedy class-aware NMS of boxes already in descending score order: the first ``limit`` kept positions.

    Boxes of different labels never interact, so the boxes are regrouped by label (stable, so
    each group stays in score order), the IoU of every same-label pair is computed in one
    vectorised step, and the only Python loop is the sequential scan that greedy NMS needs:
    a box survives unless an earlier kept box of its group overlaps it.
    """
    by_label = np.argsort(labels, kind="stable")
    first, second = _same_label_pairs(labels[by_label])
    overlapping = _paired_iou(boxes, box_areas(boxes), by_label[first], by_label[second]) > iou_threshold
    first, second = first[overlapping], second[overlapping]
    bounds = np.searchsorted(first, np.arange(labels.size + 1)).tolist()
    suppressed = np.zeros(labels.size, dtype=bool)
    for position in range(labels.size):
        if not suppressed[position] and bounds[position] < bounds[position + 1]:
            suppressed[second[bounds[position]:bounds[position + 1]]] = True
    return np.sort(by_label[~suppressed])[:limit]


def batched_nms(boxes_xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Class-aware greedy NMS of all classes at once; returns kept indices, best score first.

    A box is suppressed by a higher-scoring kept box of the same label when their IoU is
    > iou_threshold; equal scores are ranked in input order. Because suppression only ever
    removes lower-scored boxes, the first ``max_keep`` picks in descending score order are exactly
    the ``max_keep`` best boxes the full NMS would keep: the candidates are examined
    ``NMS_WINDOW`` at a time in score order, each window together with the boxes kept so far
    (which never suppress each other), until ``max_keep`` are kept. Computed in float64 so the
    decisions do not depend on the caller's dtype.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    labels = np.asarray(labels)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    limit = order.size if max_keep is None else max_keep
    keep = order[:0]
    for start in range(0, order.size, NMS_WINDOW):
        if keep.size >= limit:
            break
        window = np.concatenate([keep, order[start:start + NMS_WINDOW]])
        keep = window[_greedy_keep(boxes[window], labels[window], iou_threshold, limit)]
    return keep


def _foreground_above(scores: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (ascending) into the (N, C) score matrix of the foreground scores > min_score, and those scores.

    One comparison and one nonzero over the whole matrix; the background column is cleared in the
    mask by a strided write, so no column slice of a 16 MB FPN score matrix is ever copied.
    """
    flat_scores = np.ascontiguousarray(scores).reshape(-1)
    passed = flat_scores > min_score
    passed[::scores.shape[1]] = False
    flat_index = np.flatnonzero(passed)
    return flat_index, flat_scores[flat_index]


def _best_first(values: np.ndarray, count: int) -> np.ndarray:
    """Positions of the ``count`` highest values plus any tied with the count-th, highest first, ties by position.

    An O(n) partition finds the count-th value, so only the chosen few are sorted; taking every
    tie of the bar keeps the result a prefix of the full stable ranking.
    """
    if count < values.size:
        bar = np.partition(values, values.size - count)[values.size - count]
        chosen = np.flatnonzero(values >= bar)
    else:
        chosen = np.arange(values.size)
    return chosen[np.argsort(-values[chosen], kind="stable")]


def _first_k_per_label(labels: np.ndarray, top_k: int) -> np.ndarray:
    """Mask of the entries that are among the first ``top_k`` of their label (entries in ranking order)."""
    by_label = np.argsort(labels, kind="stable")
    sorted_labels = labels[by_label]
    rank = np.empty_like(by_label)
    rank[by_label] = np.arange(labels.size) - np.searchsorted(sorted_labels, sorted_labels)
    return rank < top_k


def _without_capped_classes(flat_index: np.ndarray, flat_scores: np.ndarray, ranked: np.ndarray,
                            ranked_labels: np.ndarray, num_classes: int, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """The candidates minus those of classes that already have ``top_k`` in the ranked prefix.

    The per-class cap excludes those anyway; dropping them before a longer prefix is ranked keeps
    images where NMS leaves fewer than max_boxes (e.g. every class's boxes in one cluster) from
    ranking all of their millions of candidates again and again.
    """
    capped = np.bincount(ranked_labels, minlength=num_classes) >= top_k
    outside_prefix = np.ones(flat_index.size, dtype=bool)
    outside_prefix[ranked] = False
    kept = ~(outside_prefix & capped[flat_index % num_classes])
    return flat_index[kept], flat_scores[kept]


def _ranked_candidates(scores: np.ndarray, min_score: float, top_k: int,
                       first_count: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(anchor index, class, score) of the NMS candidates in ranking order, in batches of growing size.

    Candidates: foreground scores > min_score, ranked by descending score, equal scores by anchor
    index then class; a class contributes only its first ``top_k``. A candidate's rank in its class
    depends only on higher-ranked candidates, so each batch is the rest of a ranked prefix
    ``PREFIX_GROWTH`` times longer than the last, and only that prefix is ever sorted.
    """
    num_classes = scores.shape[1]
    flat_index, flat_scores = _foreground_above(scores, min_score)
    count, ranked_before = first_count, 0
    while True:
        ranked = _best_first(flat_scores, count)
        anchor_idx, labels = np.divmod(flat_index[ranked], num_classes)
        fresh = _first_k_per_label(labels, top_k)
        fresh[:ranked_before] = False
        yield anchor_idx[fresh], labels[fresh], flat_scores[ranked[fresh]]
        flat_index, flat_scores = _without_capped_classes(flat_index, flat_scores, ranked, labels, num_classes, top_k)
        if ranked.size == flat_scores.size:
            return
        count, ranked_before = count * PREFIX_GROWTH, ranked.size


def _pixel_xyxy(boxes_yxyx: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """Normalised [ymin, xmin, ymax, xmax] -> float64 pixel [xmin, ymin, xmax, ymax]."""
    height, width = image_hw
    ymin, xmin, ymax, xmax = (boxes_yxyx.astype(np.float64) * [height, width, height, width]).T
    return np.stack([xmin, ymin, xmax, ymax], axis=1)


def postprocess_image(boxes_yxyx: np.ndarray, scores: np.ndarray, image_hw: tuple[int, int],
                      min_score: float, nms_threshold: float, max_boxes: int,
                      pre_nms_top_k: int = PRE_NMS_TOP_K) -> Detections:
    """Turn one image's decoded network output into at most ``max_boxes`` pixel detections.

    boxes_yxyx: (N, 4) normalised [ymin, xmin, ymax, xmax]; scores: (N, C) sigmoid scores with
    the background in column 0 (ignored). Candidates are the (anchor, class) pairs scoring
    > min_score (strict, as the seed), ranked by descending score, equal scores by anchor index,
    then class. Per class: its ``pre_nms_top_k`` first candidates, class-aware NMS (IoU >
    nms_threshold suppressed); then the ``max_boxes`` first survivors of the image.

    Greedy NMS decides each candidate from higher-ranked ones only, so it runs on the ranked
    candidates batch by batch (see _ranked_candidates), each batch after the survivors so far,
    and stops once ``max_boxes`` survive: an FPN image has ~300k candidates at min_score 0.01, yet
    its first ``CANDIDATES_PER_DETECTION * max_boxes`` nearly always suffice.

    IoU uses continuous areas (x2 - x1) * (y2 - y1), not the seed's +1-pixel areas: the +1 comes
    from Pascal VOC's inclusive integer pixel indices, while these boxes are continuous
    coordinates and COCOeval scores them with continuous areas; the +1 also inflates the IoU of
    small boxes, so NMS would disagree with the metric exactly where boxes are small.
    """
    boxes_yxyx = np.asarray(boxes_yxyx)
    scores = np.asarray(scores)
    if boxes_yxyx.ndim != 2 or boxes_yxyx.shape[1] != 4 or scores.ndim != 2 \
            or scores.shape[0] != boxes_yxyx.shape[0] or scores.shape[1] == 0:
        raise ValueError(f"postprocess_image expects boxes (N, 4) and scores (N, C) for the same N, "
                         f"got {boxes_yxyx.shape} and {scores.shape}")
    kept_boxes, kept_scores, kept_labels = np.zeros((0, 4)), np.zeros(0, scores.dtype), np.zeros(0, np.int64)
    for anchor_idx, labels, cand_scores in _ranked_candidates(scores, min_score, pre_nms_top_k,
                                                              CANDIDATES_PER_DETECTION * max(max_boxes, 1)):
        cand_boxes = np.concatenate([kept_boxes, _pixel_xyxy(boxes_yxyx[anchor_idx], image_hw)])
        cand_scores = np.concatenate([kept_scores, cand_scores])
        cand_labels = np.concatenate([kept_labels, labels])
        keep = batched_nms(cand_boxes, cand_scores, cand_labels, nms_threshold, max_boxes)
        kept_boxes, kept_scores, kept_labels = cand_boxes[keep], cand_scores[keep], cand_labels[keep]
        if keep.size == max_boxes:
            break
    return Detections(kept_boxes.astype(np.float32), kept_scores.astype(np.float32), kept_labels)


def postprocess_with_config(boxes_yxyx: np.ndarray, scores: np.ndarray, image_hw: tuple[int, int],
                            config: Any) -> Detections:
    """``postprocess_image`` with the config's thresholds: the one call eval.py, eval_onnx.py and
    postprocess.py share, so the three cannot drift apart."""
    return postprocess_image(boxes_yxyx, scores, image_hw, float(config.min_score), float(config.nms_threshold),
                             int(config.max_boxes))


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
    81-class model on a 4-class set would otherwise print 77 warnings).

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

    def write(self, image_id: int, detections: Detections, file_name: str | None = None) -> None:
        """Append one image's detections (boxes rounded to 0.01 px, scores to 1e-5)."""
        if self._file is None:
            raise RuntimeError("CocoResultWriter.write called outside its 'with' block")
        category = self._category_ids[detections.labels]
        self._report_dropped(detections.labels[category < 0])
        valid = category >= 0
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
            self._file.write(self._separator + "\n" + json.dumps(records)[1:-1])
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
    instead of 21 s) and gives the same numbers (tests/test_eval_utils.py compares the two); it is
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
                  classes: Sequence[str] | None) -> CocoEvalResult:
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
                          num_images=len(img_ids), num_detections=num_detections, num_crowd=num_crowd)


def coco_evaluate(gt_json: Path | COCO, results_json: Path, img_ids: Sequence[int] | None = None,
                  classes: Sequence[str] | None = None) -> CocoEvalResult:
    """Standard COCO bbox evaluation of a results file against an annotation file or its loaded COCO.

    img_ids defaults to EVERY image of the annotation file: images without detections count
    (their ground truth is missed), and images with crowd boxes stay in (COCOeval treats crowd
    boxes as ignore regions). ``classes`` restricts the evaluated categories to those named
    (e.g. a model trained on a subset); None evaluates every category of the file.
    """
    coco_gt = gt_json if isinstance(gt_json, COCO) else load_coco_quietly(gt_json)
    return _run_cocoeval(coco_gt, results_json, img_ids, classes)


def check_outputs(boxes: np.ndarray, scores: np.ndarray, batch_size: int, num_classes: int,
                  num_boxes: int | None = None) -> None:
    """A model's batch output fits the config: shapes (B, N, 4) / (B, N, C), C = num_classes and, when
    given, N = num_boxes (predict.py gives it: a file exported from another network has another N)."""
    if boxes.ndim != 3 or boxes.shape[0] != batch_size or boxes.shape[2] != 4 \
            or scores.ndim != 3 or scores.shape[:2] != boxes.shape[:2]:
        raise ValueError(f"the model must return boxes (B, N, 4) and scores (B, N, C) for B={batch_size}, "
                         f"got {boxes.shape} and {scores.shape}")
    if scores.shape[2] != num_classes:
        raise ValueError(f"the network scores {scores.shape[2]} classes but the class list has {num_classes} "
                         f"names: use the config the model was trained or exported with")
    if num_boxes is not None and boxes.shape[1] != num_boxes:
        raise ValueError(f"the model returns {boxes.shape[1]} boxes per image but the config's anchors give "
                         f"{num_boxes}: use the config the model was trained or exported with")


def _write_detections(predict_batch: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], dataset: Any,
                      coco_gt: COCO, gt_json: Path, writer: CocoResultWriter, num_classes: int,
                      config: Any) -> set[int]:
    """Run the network over the dataset and stream every image's detections; returns the image ids."""
    seen: set[int] = set()
    batches = dataset.create_dict_iterator(output_numpy=True, num_epochs=1)
    for batch in tqdm(batches, total=dataset.get_dataset_size(), desc="eval", unit="batch"):
        images = batch["image"]
        boxes, scores = (np.asarray(out) for out in predict_batch(images))
        check_outputs(boxes, scores, images.shape[0], num_classes)
        for i in range(images.shape[0]):
            img_id = int(np.asarray(batch["img_id"][i]).reshape(-1)[0])
            if img_id not in coco_gt.imgs:
                raise ValueError(f"image id {img_id} of the eval dataset is not in {gt_json}: build the eval "
                                 f"dataset (mindrecord) from that annotation file")
            if img_id in seen:
                raise ValueError(f"image id {img_id} appears twice in the eval dataset: build it without "
                                 f"repeat or padding so every image is scored once")
            seen.add(img_id)
            height, width = (int(v) for v in batch["image_shape"][i])
            writer.write(img_id, postprocess_with_config(boxes[i], scores[i], (height, width), config))
    return seen


def evaluate_detector(predict_batch: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], dataset: Any,
                      gt_json: Path, classes: Sequence[str], config: Any, results_json: Path) -> CocoEvalResult:
    """Predict, post-process, stream to ``results_json`` and COCO-evaluate over ALL images of gt_json.

    ``dataset`` offers ``get_dataset_size`` and ``create_dict_iterator`` with columns img_id (B, 1),
    image (B, 3, H, W) and image_shape (B, 2) = original (h, w); ``predict_batch(images)`` returns
    decoded normalised yxyx boxes (B, N, 4) and sigmoid scores (B, N, C). Images the dataset did not cover still count
    (with no detections) and a warning says how many: a partial dataset cannot silently shrink
    the evaluation set (the seed's B8/B9).
    """
    coco_gt = load_coco_quietly(gt_json)
    with CocoResultWriter(results_json, category_ids_by_name(coco_gt, classes), classes) as writer:
        seen = _write_detections(predict_batch, dataset, coco_gt, gt_json, writer, len(classes), config)
    missing = len(coco_gt.imgs) - len(seen)
    if missing:
        warnings.warn(f"the eval dataset covered {len(seen)} of the {len(coco_gt.imgs)} images of {gt_json}; "
                      f"the other {missing} are evaluated with no detections", stacklevel=2)
    return _run_cocoeval(coco_gt, results_json, None, classes)


def classes_by_ap(per_class: Sequence[ClassAP]) -> list[ClassAP]:
    """Best AP first, classes without ground truth (nan AP) last: the printed table's and the CSV's order."""
    return sorted(per_class, key=lambda c: (np.isnan(c.ap), -np.nan_to_num(c.ap)))


def format_report(result: CocoEvalResult) -> str:
    """The 12 COCO lines, the mAP line, the crowd note and a per-class table (best AP first)."""
    lines = list(result.summary_lines)
    lines.append(f"mAP: {result.map}")
    lines.append(f"{result.num_images} images, {result.num_detections} detections; {result.num_crowd} crowd "
                 f"boxes handled by COCOeval as ignore regions")
    rows = classes_by_ap(result.per_class)
    width = max([len("class")] + [len(c.name) for c in rows])
    lines.append(f"{'class':<{width}}  {'AP':>6}  {'AP50':>6}  {'GT boxes':>8}")
    for c in rows:
        ap, ap50 = ("-", "-") if np.isnan(c.ap) else (f"{c.ap:.3f}", f"{c.ap50:.3f}")
        lines.append(f"{c.name:<{width}}  {ap:>6}  {ap50:>6}  {c.num_gt:>8}")
    return "\n".join(lines)


#: Columns of the per-class AP CSV (write_per_class_csv).
PER_CLASS_CSV_COLUMNS = ("class", "category_id", "AP", "AP50", "num_gt")


def write_per_class_csv(result: CocoEvalResult, path: Path) -> None:
    """``format_report``'s per-class table as CSV: same rows and order, AP and AP50 at full precision.

    A class without ground truth in the evaluated images has empty AP and AP50 cells: its AP is
    undefined rather than 0, and an empty cell is what spreadsheets and pandas read as missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(PER_CLASS_CSV_COLUMNS)
        for c in classes_by_ap(result.per_class):
            ap, ap50 = ("", "") if np.isnan(c.ap) else (str(float(c.ap)), str(float(c.ap50)))
            table.writerow([c.name, c.category_id, ap, ap50, c.num_gt])
