"""COCO evaluation of raw network outputs written by the offline (C++ / Ascend 310) runner.

The runner writes, per image file ``<stem>.<ext>`` it read, ``<stem>_0.bin`` (boxes N x 4 float32,
[ymin, xmin, ymax, xmax] in [0, 1]) and ``<stem>_1.bin`` (scores N x num_classes float32). These
are matched to the evaluation ground truth that eval.py uses by the images' ``file_name`` stems,
post-processed with eval.py's code and COCO-evaluated over the same images, so the runner and
eval.py print the same mAP for the same model.

Streaming: one image's outputs are in memory at a time and detections go straight to the results
file, so 5000 images cost what one image costs (the seed kept all of them and needed 70 GB+).

NaN/Inf in a result file (a diverged model, a broken export) would surface as NaN detections,
which JSON cannot store, or as a silent mAP 0: the boxes (anchors) holding them are left out
before post-processing, and the images, values and first files are counted and reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO
from tqdm import tqdm

from src.eval.coco import CocoEvalResult, CocoResultWriter, category_ids_by_name, coco_evaluate
from src.eval.postprocess import Detections, finite_rows, postprocess_with_config
from src.model_utils.errors import SSDError

_FLOAT32 = np.dtype("<f4")
#: How many missing or truncated result files the error lists (the count covers all of them).
MAX_LISTED_PROBLEMS = 20
#: How many result files holding NaN/Inf the summary names.
MAX_NON_FINITE_FILES = 5


class OfflineResultsError(SSDError, ValueError):
    """Result files that cannot be evaluated as they are; the message names them and the fix."""


@dataclass(frozen=True)
class ImageResult:
    """Where one ground-truth image's two output files should be."""

    image_id: int
    stem: str
    boxes_path: Path
    scores_path: Path


@dataclass
class NonFiniteOutputs:
    """NaN/Inf values met in the result files; the boxes holding them were left out before post-processing."""

    num_images: int = 0
    num_values: int = 0
    num_boxes: int = 0  # anchors left out: their box or one of their class scores was NaN/Inf
    num_files: int = 0
    files: list[str] = field(default_factory=list)  # the first MAX_NON_FINITE_FILES such files, by name

    def add(self, image: ImageResult, bad_boxes: np.ndarray, bad_scores: np.ndarray, num_boxes: int) -> None:
        """Count one image whose outputs hold NaN/Inf (``bad_*``: masks of the non-finite values)."""
        self.num_images += 1
        self.num_values += int(np.count_nonzero(bad_boxes) + np.count_nonzero(bad_scores))
        self.num_boxes += num_boxes
        named = [path.name for path, bad in ((image.boxes_path, bad_boxes), (image.scores_path, bad_scores))
                 if bad.any()]
        self.num_files += len(named)
        self.files.extend(named[:MAX_NON_FINITE_FILES - len(self.files)])

    def summary(self, result_path: Path) -> str:
        """The one line the user reads; empty when every value was finite."""
        if not self.num_images:
            return ""
        more = f" and {self.num_files - len(self.files)} more" if self.num_files > len(self.files) else ""
        return (f"{self.num_images} images' result files in {result_path} hold NaN/Inf ({self.num_values} values "
                f"in {', '.join(self.files)}{more}); their {self.num_boxes} boxes were dropped before post-processing "
                f"and are not in the detections json: the model or the runner produced non-finite outputs")


@dataclass(frozen=True)
class OfflineEvaluation:
    """The COCO result plus what the run had to tolerate."""

    result: CocoEvalResult
    num_scored: int  # images whose result files were read
    num_without_results: int  # images scored with no detections because of missing/truncated files (--missing_as_empty)
    num_dropped: int  # images left out by the seed's --drop protocol
    non_finite: NonFiniteOutputs  # NaN/Inf met in the result files


def expected_results(coco_gt: COCO, gt_json: Path, result_path: Path) -> list[ImageResult]:
    """The result files of every ground-truth image, in the annotation file's image order."""
    by_stem: dict[str, int] = {}
    results = []
    for image in coco_gt.dataset["images"]:
        stem = Path(str(image["file_name"])).stem
        if stem in by_stem:
            raise OfflineResultsError(f"{gt_json}: images {by_stem[stem]} and {image['id']} share the file name stem "
                                      f"{stem!r}, so their result files {stem}_0.bin / {stem}_1.bin would collide")
        by_stem[stem] = int(image["id"])
        results.append(ImageResult(int(image["id"]), stem, result_path / f"{stem}_0.bin",
                                   result_path / f"{stem}_1.bin"))
    return results


def seed_protocol_image_ids(coco_gt: COCO, classes: Sequence[str]) -> list[int]:
    """The images the seed's ``--drop=True`` kept: no crowd box and at least one box of a listed class."""
    known = {int(cid) for cid in category_ids_by_name(coco_gt, classes) if cid >= 0}
    kept = []
    for image_id in coco_gt.getImgIds():
        annotations = coco_gt.imgToAnns.get(image_id, [])
        if any(ann.get("iscrowd", 0) for ann in annotations):
            continue
        if any(ann["category_id"] in known for ann in annotations):
            kept.append(image_id)
    return kept


def _file_problem(path: Path, expected_bytes: int) -> str | None:
    if not path.is_file():
        return f"{path.name}: missing"
    size = path.stat().st_size
    if size == expected_bytes:
        return None
    why = "truncated" if size < expected_bytes else "too large: another model or config?"
    return f"{path.name}: {size} bytes, expected {expected_bytes} ({why})"


def find_problems(images: Sequence[ImageResult], num_boxes: int, num_classes: int) -> dict[int, list[str]]:
    """Missing or wrongly sized result files, by image id (checked before any image is scored)."""
    sizes = (num_boxes * 4 * _FLOAT32.itemsize, num_boxes * num_classes * _FLOAT32.itemsize)
    problems: dict[int, list[str]] = {}
    for image in images:
        found = [p for p in (_file_problem(image.boxes_path, sizes[0]), _file_problem(image.scores_path, sizes[1]))
                 if p]
        if found:
            problems[image.image_id] = found
    return problems


def _problem_report(problems: dict[int, list[str]], images: Sequence[ImageResult], result_path: Path,
                    img_path: Path | None, num_boxes: int, num_classes: int) -> str:
    lines = [f"{sum(map(len, problems.values()))} result files of {len(problems)} images are missing or truncated "
             f"in {result_path} (each image needs <stem>_0.bin = {num_boxes} x 4 float32 and <stem>_1.bin = "
             f"{num_boxes} x {num_classes} float32):"]
    listed = [f"  {text}" for texts in problems.values() for text in texts]
    lines += listed[:MAX_LISTED_PROBLEMS]
    if len(listed) > MAX_LISTED_PROBLEMS:
        lines.append(f"  ... and {len(listed) - MAX_LISTED_PROBLEMS} more")
    if img_path is not None:
        on_disk = {path.stem for path in img_path.iterdir() if path.is_file()}
        absent = [image.stem for image in images if image.image_id in problems and image.stem not in on_disk]
        if absent:
            lines.append(f"{len(absent)} of those images are not in --img_path {img_path} either, so the runner never "
                         f"saw them: run it on the folder of the ground truth's images")
    lines.append(f"Re-run the inference for them, or pass --missing_as_empty (run_infer_cpp.sh: MISSING_AS_EMPTY=1) "
                 f"to score those {len(problems)} images as having no detections.")
    return "\n".join(lines)


def _read_outputs(image: ImageResult, num_boxes: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.fromfile(image.boxes_path, dtype=_FLOAT32).reshape(num_boxes, 4)
    scores = np.fromfile(image.scores_path, dtype=_FLOAT32).reshape(num_boxes, num_classes)
    return boxes, scores


def _finite_outputs(image: ImageResult, boxes: np.ndarray, scores: np.ndarray,
                    non_finite: NonFiniteOutputs) -> tuple[np.ndarray, np.ndarray]:
    """The outputs without the boxes (rows) holding NaN/Inf, which are counted in ``non_finite``.

    Dropping whole rows keeps the other boxes' ranking and NMS exactly as if the row had never
    been there, so valid boxes give the same detections either way.
    """
    bad_rows = ~finite_rows(boxes, scores)
    if not bad_rows.any():
        return boxes, scores
    bad_boxes, bad_scores = ~np.isfinite(boxes), ~np.isfinite(scores)
    non_finite.add(image, bad_boxes, bad_scores, int(np.count_nonzero(bad_rows)))
    return boxes[~bad_rows], scores[~bad_rows]


def _image_hw(coco_gt: COCO, image_id: int, gt_json: Path) -> tuple[int, int]:
    info = coco_gt.imgs[image_id]
    if "height" not in info or "width" not in info:
        raise OfflineResultsError(f"{gt_json}: image {image_id} has no height/width; boxes cannot be scaled to pixels")
    return int(info["height"]), int(info["width"])


def evaluate_offline_results(config: Any, coco_gt: COCO, gt_json: Path, result_path: Path, results_json: Path,
                             img_path: Path | None = None, drop: bool = False,
                             missing_as_empty: bool = False) -> OfflineEvaluation:
    """Post-process every ground-truth image's result files like eval.py and COCO-evaluate them.

    ``drop`` restricts the evaluation to the seed's image subset (``seed_protocol_image_ids``);
    otherwise every image of the ground truth counts, as in eval.py. Missing or truncated files
    raise OfflineResultsError listing all of them, unless ``missing_as_empty``. Boxes with NaN/Inf are
    left out and counted in the result's ``non_finite``.
    """
    result_path = Path(result_path)
    if not result_path.is_dir():
        raise OfflineResultsError(f"result folder {result_path} not found; pass the runner's result_Files folder "
                                  f"with --result_path")
    if img_path is not None and not Path(img_path).is_dir():
        raise OfflineResultsError(f"image folder {img_path} (--img_path) not found; pass the folder the runner read, "
                                  f"or leave --img_path out")
    num_boxes, num_classes = int(config.num_ssd_boxes), int(config.num_classes)
    images = expected_results(coco_gt, gt_json, result_path)
    kept_ids = seed_protocol_image_ids(coco_gt, config.classes) if drop else None
    if kept_ids is not None:
        kept = set(kept_ids)
        images = [image for image in images if image.image_id in kept]
    problems = find_problems(images, num_boxes, num_classes)
    if problems and not missing_as_empty:
        raise OfflineResultsError(_problem_report(problems, images, result_path, img_path, num_boxes, num_classes))
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    non_finite = NonFiniteOutputs()
    with CocoResultWriter(results_json, category_ids_by_name(coco_gt, config.classes), config.classes) as writer:
        for image in tqdm(images, desc="postprocess", unit="img"):
            if image.image_id in problems:
                writer.write(image.image_id, empty)
                continue
            boxes, scores = _finite_outputs(image, *_read_outputs(image, num_boxes, num_classes), non_finite)
            writer.write(image.image_id, postprocess_with_config(
                boxes, scores, _image_hw(coco_gt, image.image_id, gt_json), config))
    result = coco_evaluate(coco_gt, results_json, kept_ids, config.classes)
    return OfflineEvaluation(result, len(images) - len(problems), len(problems),
                             len(coco_gt.imgs) - len(images), non_finite)
