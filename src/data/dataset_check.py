"""The dataset check: what a split holds and whether the network's default boxes can match it.

Hours of training are lost to data that a minute of counting would have shown: images that do not
decode, classes without a box, duplicated photos, and objects the default boxes cannot reach, so
that they never get a proper positive anchor. ``check_dataset`` reads a split through the same
reader as the MindRecord conversion (``read_split``: any format), and reports images, boxes, boxes
per class, images without boxes, what the reader clipped, dropped or skipped and why, COCO size
buckets (small < 32^2, medium < 96^2 pixels of the original image, large above), and the anchor
coverage: the share of boxes whose best IoU with a default box reaches ``match_threshold``, with
concrete advice when it is below 90 %. With ``check_images`` it also reads every image file: found,
decodable by the writer's own check (and of the annotated size), duplicate content.

Coverage is measured on the plain resize to ``img_shape`` that evaluation uses (training adds random
crops and expansions around it). A resize scales both axes, which leaves IoU unchanged, so boxes
normalised by their image's height and width are compared with the normalised default boxes.

``train.py`` runs the cheap part (no image file is read) before converting: one summary line, and
a warning when the default boxes cover the data badly (``log_training_data_check``).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from src.boxes.anchors import default_boxes_from_config
from src.boxes.coverage import best_default_box_iou, distinct_sizes
from src.data.annotations import CROWD, IMAGE_SKIPS, NO_BOX, PROBLEM_DESCRIPTIONS, ConversionReport, ImageRecord
from src.data.annotations import check_image_bytes
from src.data.mindrecord import checked_image_bytes, read_split
from src.data.sources import resolve_classes
from src.model_utils.errors import SSDError, UsageError
from src.model_utils.files import temporary_path, write_json_atomic

logger = logging.getLogger("ssd")

CHECK_FOLDER = "dataset_check"
#: COCO's object size buckets: (name, smallest area, area bound) in pixels of the original image.
SIZE_BUCKETS = (("small", 0.0, 32.0 ** 2), ("medium", 32.0 ** 2, 96.0 ** 2), ("large", 96.0 ** 2, math.inf))
#: Below this share of covered boxes the check warns and suggests anchor or input-size changes.
COVERAGE_TARGET = 0.9
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: A share of the uncovered boxes above which one cause (too small, too large, too elongated) is named.
CAUSE_SHARE = 0.25
#: How far outside the default boxes' range a box must be to count as too small/large/elongated.
SIZE_SLACK, RATIO_SLACK = 1.25, 1.5
#: The picture draws at most this many ground-truth boxes (an even sample), so COCO stays quick to draw.
MAX_DRAWN_BOXES = 20000
MAX_LISTED = 10
#: Counted by the reader but not a defect of the data (images without boxes are reported on their own).
_NOT_PROBLEMS = (CROWD, NO_BOX)


@dataclass(frozen=True)
class BoxTable:
    """Every box of a split, one row each: pixel corners in its original image and that image's size."""

    corners: np.ndarray  # float64 (M, 4) [ymin, xmin, ymax, xmax]
    labels: np.ndarray  # int64 (M,)
    image_hw: np.ndarray  # float64 (M, 2)

    @classmethod
    def from_records(cls, records: Sequence[ImageRecord]) -> BoxTable:
        """Stack the records' boxes; records without boxes add no row."""
        boxes = [np.asarray(r.boxes, dtype=np.float64).reshape(-1, 4) for r in records]
        sizes = [np.tile([float(r.height), float(r.width)], (len(b), 1)) for r, b in zip(records, boxes)]
        labels = [np.asarray(r.labels, dtype=np.int64).reshape(-1) for r in records]
        if not boxes:
            return cls(np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros((0, 2)))
        return cls(np.concatenate(boxes), np.concatenate(labels), np.concatenate(sizes))

    def areas(self) -> np.ndarray:
        """Box areas in pixels of the original image (what COCO's size buckets are defined on)."""
        return (self.corners[:, 2] - self.corners[:, 0]) * (self.corners[:, 3] - self.corners[:, 1])

    def normalised(self) -> np.ndarray:
        """Corners divided by the image's height and width, as the pipeline gives them to the box coder."""
        return self.corners / np.tile(self.image_hw, 2)

    def input_wh(self, img_shape: Sequence[int]) -> np.ndarray:
        """(w, h) of each box in pixels of the network input, after the plain resize to ``img_shape``."""
        size = self.corners[:, 2:] - self.corners[:, :2]
        return np.stack([size[:, 1] / self.image_hw[:, 1] * img_shape[1],
                         size[:, 0] / self.image_hw[:, 0] * img_shape[0]], axis=1)


@dataclass
class DatasetCheck:
    """What the check found: the json-able report, its fatal problems and warnings, and the picture's data."""

    report: dict
    fatal: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    gt_wh: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    covered: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    default_wh: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


def size_bucket_index(areas: np.ndarray) -> np.ndarray:
    """Index into SIZE_BUCKETS of each area."""
    bounds = [bound for _, _, bound in SIZE_BUCKETS[:-1]]
    return np.searchsorted(bounds, areas, side="right")


def _share(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if mask.size else None


def _quantiles(values: np.ndarray) -> dict[str, float] | None:
    if values.size == 0:
        return None
    return {f"q{round(q * 100):02d}": round(float(v), 3) for q, v in zip(QUANTILES, np.quantile(values, QUANTILES))}


def _class_name(classes: Sequence[str], label: int) -> str:
    return str(classes[label]) if 0 <= label < len(classes) else f"class {label}"


def _box_statistics(records: Sequence[ImageRecord], table: BoxTable, classes: Sequence[str]) -> dict:
    """Boxes in all, per class (every class of the config, zeros included), per COCO size bucket."""
    counts = np.bincount(table.labels, minlength=len(classes)) if table.labels.size else np.zeros(len(classes), int)
    per_class = {_class_name(classes, label): int(n) for label, n in enumerate(counts) if label > 0}
    buckets = np.bincount(size_bucket_index(table.areas()), minlength=len(SIZE_BUCKETS))
    return {"total": int(table.labels.size), "per_class": per_class,
            "classes_without_boxes": [name for name, n in per_class.items() if n == 0],
            "images_without_boxes": sum(1 for r in records if len(r.labels) == 0),
            "size_buckets": {name: int(n) for (name, _, _), n in zip(SIZE_BUCKETS, buckets)}}


def _problems(report: ConversionReport) -> dict:
    """The reader's (and image check's) counted problems: count, meaning and up to 5 examples per kind."""
    return {kind: {"count": report.counts[kind], "description": description, "examples": report.examples[kind]}
            for kind, description in PROBLEM_DESCRIPTIONS.items() if report.counts[kind]}


def _default_boxes(config: Any) -> np.ndarray:
    try:
        return default_boxes_from_config(config)
    except ValueError as error:
        raise UsageError(f"cannot build the default boxes: {error}") from None


# ---- anchor coverage ------------------------------------------------------------------------------

def _outside_share(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """(share below low, share above high) of values."""
    return float(np.mean(values < low)), float(np.mean(values > high))


def _min_scale_sets_smallest(config: Any, smallest_px: float) -> bool:
    """Whether min_scale is the size of the smallest default box (not so for the grid anchors, nor for
    the model zoo's fixed 0.1 box on level 0 when aspect_ratios[0] is empty)."""
    if getattr(config, "use_anchor_generator", False):
        return False
    side = math.sqrt(float(config.img_shape[0]) * float(config.img_shape[1]))
    return math.isclose(smallest_px / side, float(config.min_scale), rel_tol=1e-3)


def _size_advice(config: Any, sizes: np.ndarray, anchor_sizes: np.ndarray) -> list[str]:
    """Advice when many uncovered boxes are smaller or larger than every default box (sizes: sqrt(w*h) px)."""
    advice = []
    smallest, largest = float(anchor_sizes.min()), float(anchor_sizes.max())
    too_small, too_large = _outside_share(sizes, smallest / SIZE_SLACK, largest * SIZE_SLACK)
    height, width = (int(v) for v in config.img_shape)
    if too_small >= CAUSE_SHARE:
        small = sizes[sizes < smallest / SIZE_SLACK]
        factor = smallest / max(float(np.median(small)), 1e-6)
        grid = getattr(config, "use_anchor_generator", False)
        multiple = max(int(v) for v in config.steps) if grid else 32
        bigger = [int(math.ceil(side * factor / multiple) * multiple) for side in (height, width)]
        follow = f"a multiple of {multiple}" if grid else "set feature_size and steps to the new feature maps too"
        text = (f"{too_small:.0%} of the uncovered boxes are smaller than the smallest default box ({smallest:.0f} px "
                f"in the {height}x{width} input; their median is {np.median(small):.1f} px): a larger img_shape, about "
                f"{bigger} (x{factor:.1f}; {follow}), makes them bigger in the network input")
        if _min_scale_sets_smallest(config, smallest):
            text += f", or a smaller min_scale (now {config.min_scale})"
        advice.append(text)
    if too_large >= CAUSE_SHARE:
        text = (f"{too_large:.0%} of the uncovered boxes are larger than the largest default box ({largest:.0f} px): ")
        text += ("a smaller img_shape" if getattr(config, "use_anchor_generator", False)
                 else f"raise max_scale (now {config.max_scale})")
        advice.append(text)
    return advice


def _ratio_advice(config: Any, ratios: np.ndarray, anchor_ratios: np.ndarray) -> list[str]:
    """Advice when many uncovered boxes are more elongated than every default box (ratios: w / h)."""
    low, high = float(anchor_ratios.min()), float(anchor_ratios.max())
    too_tall, too_wide = _outside_share(ratios, low / RATIO_SLACK, high * RATIO_SLACK)
    if too_tall + too_wide < CAUSE_SHARE:
        return []
    elongated = ratios[(ratios < low / RATIO_SLACK) | (ratios > high * RATIO_SLACK)]
    wanted = round(float(np.median(np.maximum(elongated, 1.0 / elongated))), 1)
    observed = ", ".join(f"{v:.2f}" for v in np.quantile(ratios, QUANTILES))
    text = (f"{too_tall + too_wide:.0%} of the uncovered boxes are more elongated than every default box (w/h "
            f"quantiles 5-95 % of the uncovered boxes: {observed}; the default boxes span {low:.2f} .. {high:.2f}): ")
    if getattr(config, "use_anchor_generator", False):
        text += ("the FPN grid anchors' ratios are fixed (0.5, 1, 2); ssd300, ssd_mobilenet_v1 and ssd_vgg16 take "
                 f"extra aspect_ratios (e.g. {wanted})")
    else:
        text += f"add {wanted} to the aspect_ratios lists (each r adds r:1 and 1:r boxes; num_default follows)"
    return [text]


def coverage_advice(config: Any, gt_wh: np.ndarray, covered: np.ndarray, default_wh: np.ndarray) -> list[str]:
    """Concrete changes (img_shape, scales, aspect ratios) that would let more boxes reach the threshold.

    ``gt_wh`` and ``default_wh`` are (w, h) in network-input pixels. The advice names the cause that
    most uncovered boxes share; boxes inside the default boxes' size and shape range that still miss
    fall between the sizes, and the advice says that.
    """
    missed = gt_wh[~covered]
    if missed.size == 0:
        return []
    sizes, ratios = np.sqrt(missed[:, 0] * missed[:, 1]), missed[:, 0] / missed[:, 1]
    anchor_sizes, anchor_ratios = np.sqrt(default_wh[:, 0] * default_wh[:, 1]), default_wh[:, 0] / default_wh[:, 1]
    advice = _size_advice(config, sizes, anchor_sizes) + _ratio_advice(config, ratios, anchor_ratios)
    if not advice:
        advice.append(f"the uncovered boxes lie between the default boxes' sizes and shapes: more aspect ratios per "
                      f"level, or a lower match_threshold (now {config.match_threshold})")
    return advice


def default_box_wh(default_boxes: np.ndarray, img_shape: Sequence[int]) -> np.ndarray:
    """The distinct (w, h) of the default boxes in network-input pixels."""
    return distinct_sizes(default_boxes)[:, ::-1] * np.asarray(img_shape, dtype=np.float64)[::-1]


def anchor_coverage(config: Any, table: BoxTable, default_boxes: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    """(report section, gt (w, h) in input pixels, covered mask) for the default boxes of the config."""
    threshold = float(config.match_threshold)
    best = best_default_box_iou(table.normalised(), default_boxes)
    covered = best >= threshold
    gt_wh = table.input_wh(config.img_shape)
    default_wh = default_box_wh(default_boxes, config.img_shape)
    default_sizes = np.sqrt(default_wh[:, 0] * default_wh[:, 1])
    buckets = size_bucket_index(table.areas())
    share = _share(covered)
    section = {
        "match_threshold": threshold, "boxes": int(best.size), "covered": share,
        "per_size_bucket": {name: _share(covered[buckets == index]) for index, (name, _, _) in enumerate(SIZE_BUCKETS)},
        "best_iou_quantiles": _quantiles(best),
        "img_shape": [int(v) for v in config.img_shape], "default_boxes": len(default_boxes),
        "gt_aspect_ratio_quantiles": _quantiles(gt_wh[:, 0] / gt_wh[:, 1]),
        "default_box_aspect_ratios": sorted({round(float(w / h), 3) for w, h in default_wh}),
        "gt_size_px_quantiles": _quantiles(np.sqrt(gt_wh[:, 0] * gt_wh[:, 1])),
        "default_box_size_px_range": [round(float(default_sizes.min()), 1), round(float(default_sizes.max()), 1)],
        "advice": coverage_advice(config, gt_wh, covered, default_wh) if share is not None and share < COVERAGE_TARGET
        else []}
    return section, gt_wh, covered


# ---- image files ----------------------------------------------------------------------------------

def _probe_image(record: ImageRecord) -> tuple[bool, str | None, ConversionReport]:
    """(file exists, sha256 of its bytes when the writer would store it, what the writer's check counted).

    The decode and the size check are the MindRecord writer's own (``checked_image_bytes``,
    ``check_image_bytes``), so an image that fails here is one the conversion would skip.
    """
    report = ConversionReport()
    found = Path(record.image_path).is_file()
    data = checked_image_bytes(record.image_path) if found else None
    usable = check_image_bytes(record, data, report)
    return found, hashlib.sha256(data).hexdigest() if usable else None, report


def check_image_files(records: Sequence[ImageRecord], report: ConversionReport) -> dict:
    """Read and decode every image (with a progress bar): found, decodable, duplicate content."""
    digests: dict[str, list[str]] = defaultdict(list)
    found = usable = 0
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool, \
            tqdm(total=len(records), desc="checking images", unit="img") as bar:
        for record, (exists, digest, image_report) in zip(records, pool.map(_probe_image, records)):
            found += exists
            report.merge(image_report)
            if digest is not None:
                usable += 1
                digests[digest].append(str(record.image_path))
            bar.update(1)
    groups = [paths for paths in digests.values() if len(paths) > 1]
    return {"found": found, "decodable_and_of_annotated_size": usable,
            "duplicate_images": sum(len(paths) - 1 for paths in groups),
            "duplicate_examples": [paths[:MAX_LISTED] for paths in groups[:5]]}


# ---- the check ------------------------------------------------------------------------------------

def read_checked_split(config: Any, for_training: bool) -> tuple[list[ImageRecord], ConversionReport]:
    """``read_split`` with a missing path or a wrong dataset key as one usage error; ``classes: []`` is first
    filled in from the training data, as train.py does."""
    try:
        resolve_classes(config)
        return read_split(config, for_training)
    except SSDError:
        raise
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(f"cannot read the {'training' if for_training else 'validation'} data: {error}") from None


def _images_section(records: Sequence[ImageRecord], reader_report: ConversionReport) -> dict:
    skipped = sum(reader_report.counts[kind] for kind in IMAGE_SKIPS)
    return {"listed": len(records) + skipped, "skipped_by_reader": skipped, "usable": len(records)}


def _fatal_problems(report: dict) -> list[str]:
    images, boxes, files = report["images"], report["boxes"], report.get("image_files")
    fatal = []
    if images["usable"] == 0:
        fatal.append(f"no usable image: {images['listed']} listed, {images['skipped_by_reader']} skipped by the "
                     f"reader (see problems); check the annotations and the image paths")
    elif boxes["total"] == 0:
        fatal.append(f"no box at all in {images['usable']} images; check that the config's classes name the "
                     f"annotations' classes")
    if files is not None and images["usable"] and files["decodable_and_of_annotated_size"] == 0:
        fatal.append(f"none of the {images['usable']} images can be used ({files['found']} found, none decodable "
                     f"and of the annotated size); see problems for the reasons")
    return fatal


def _warnings(report: dict) -> list[str]:
    warnings = []
    coverage, boxes, files = report["anchor_coverage"], report["boxes"], report.get("image_files")
    if coverage["covered"] is not None and coverage["covered"] < COVERAGE_TARGET:
        buckets = ", ".join(f"{name} {share:.0%}" for name, share in coverage["per_size_bucket"].items()
                            if share is not None)
        warnings.append(f"anchor coverage {coverage['covered']:.1%} is below {COVERAGE_TARGET:.0%}: only that share of "
                        f"the boxes has a default box with IoU >= {coverage['match_threshold']} ({buckets}); "
                        + "; ".join(coverage["advice"]))
    if boxes["classes_without_boxes"] and boxes["total"]:
        names = boxes["classes_without_boxes"]
        warnings.append(f"{len(names)} of {len(boxes['per_class'])} classes have no box: "
                        f"{', '.join(names[:MAX_LISTED])}{' ...' if len(names) > MAX_LISTED else ''}")
    problems = sum(entry["count"] for kind, entry in report["problems"].items() if kind not in _NOT_PROBLEMS)
    if problems:
        warnings.append(f"{problems} annotation or image problems were counted (clipped, dropped or skipped; see "
                        f"problems in the report)")
    if files is not None and files["duplicate_images"]:
        warnings.append(f"{files['duplicate_images']} images are byte-identical copies of another image of the split, "
                        f"e.g. {', '.join(Path(p).name for p in files['duplicate_examples'][0])}")
    return warnings


def check_dataset(config: Any, for_training: bool = True, check_images: bool = True) -> DatasetCheck:
    """Check one split of the config's dataset; ``check_images`` also reads and decodes every image file."""
    start = time.time()
    records, problems = read_checked_split(config, for_training)
    table = BoxTable.from_records(records)
    default_boxes = _default_boxes(config)
    coverage, gt_wh, covered = anchor_coverage(config, table, default_boxes)
    report = {"split": "train" if for_training else "val", "dataset": str(config.dataset),
              "model_name": str(config.model_name), "images": _images_section(records, problems),
              "boxes": _box_statistics(records, table, config.classes), "anchor_coverage": coverage}
    if check_images:
        report["image_files"] = check_image_files(records, problems)
    report["problems"] = _problems(problems)
    check = DatasetCheck(report, _fatal_problems(report), _warnings(report), gt_wh, covered,
                         default_box_wh(default_boxes, config.img_shape))
    report.update(fatal=check.fatal, warnings=check.warnings, seconds=round(time.time() - start, 2))
    return check


def summary_line(check: DatasetCheck) -> str:
    """One line: images, boxes, classes, size buckets, coverage (and decodable images when checked)."""
    report = check.report
    images, boxes, coverage = report["images"], report["boxes"], report["anchor_coverage"]
    with_boxes = sum(1 for n in boxes["per_class"].values() if n)
    buckets = " ".join(f"{name} {n}" for name, n in boxes["size_buckets"].items())
    line = (f"dataset check ({report['split']}): {images['usable']} images ({images['skipped_by_reader']} skipped), "
            f"{boxes['total']} boxes in {with_boxes} of {len(boxes['per_class'])} classes, "
            f"{boxes['images_without_boxes']} images without boxes; sizes {buckets}")
    if coverage["covered"] is not None:
        line += f"; anchor coverage {coverage['covered']:.1%} at IoU >= {coverage['match_threshold']}"
    files = report.get("image_files")
    if files is not None:
        line += (f"; {files['decodable_and_of_annotated_size']} of {images['usable']} images usable, "
                 f"{files['duplicate_images']} duplicates")
    return line


# ---- outputs --------------------------------------------------------------------------------------

def draw_box_sizes(check: DatasetCheck, png_path: Path, title: str) -> Path:
    """Scatter of the ground-truth (w, h) against the default boxes' distinct (w, h), input pixels, log axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 6.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    drawn = np.linspace(0, len(check.gt_wh) - 1, min(len(check.gt_wh), MAX_DRAWN_BOXES)).astype(int)
    for mask, colour, label in ((check.covered[drawn], "tab:blue", "ground truth, covered"),
                                (~check.covered[drawn], "tab:red", "ground truth, not covered")):
        points = check.gt_wh[drawn][mask]
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.4, color=colour, label=f"{label} ({mask.sum()})")
    ax.scatter(check.default_wh[:, 0], check.default_wh[:, 1], s=60, marker="x", color="black",
               label=f"default box sizes ({len(check.default_wh)})")
    ax.set(xscale="log", yscale="log", xlabel="width (network input pixels)", ylabel="height (network input pixels)",
           title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left")
    png_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(png_path)
    figure.savefig(temporary)
    os.replace(temporary, png_path)
    return png_path


def write_check_outputs(check: DatasetCheck, folder: Path) -> tuple[Path, Path]:
    """``report.json`` and ``box_sizes.png`` for the train split (``_val`` names for the other) in ``folder``."""
    suffix = "" if check.report["split"] == "train" else f"_{check.report['split']}"
    folder.mkdir(parents=True, exist_ok=True)
    report_path = folder / f"report{suffix}.json"
    write_json_atomic(check.report, report_path)
    coverage = check.report["anchor_coverage"]
    share = "-" if coverage["covered"] is None else f"{coverage['covered']:.1%}"
    title = (f"{check.report['split']}: {coverage['boxes']} boxes, {share} with IoU >= {coverage['match_threshold']}\n"
             f"{check.report['model_name']} at {coverage['img_shape']}, {coverage['default_boxes']} default boxes")
    return report_path, draw_box_sizes(check, folder / f"box_sizes{suffix}.png", title)


def log_check(check: DatasetCheck) -> None:
    """The report in a few lines for the console and log: problems, coverage by bucket, warnings."""
    report = check.report
    coverage = report["anchor_coverage"]
    if coverage["covered"] is not None:
        buckets = ", ".join(f"{name} {'-' if share is None else f'{share:.1%}'}"
                            for name, share in coverage["per_size_bucket"].items())
        logger.info(f"anchor coverage by size: {buckets}; ground-truth w/h at 5/25/50/75/95 %: "
                    f"{list(coverage['gt_aspect_ratio_quantiles'].values())} vs default boxes' "
                    f"{coverage['default_box_aspect_ratios']}; ground-truth sqrt(w*h) in input pixels: "
                    f"{list(coverage['gt_size_px_quantiles'].values())} vs default boxes' "
                    f"{coverage['default_box_size_px_range'][0]} .. {coverage['default_box_size_px_range'][1]}")
    for entry in report["problems"].values():
        logger.info(f"{entry['count']:>7d}  {entry['description']}: {', '.join(entry['examples'])}")
    for warning in check.warnings:
        logger.warning(f"warning: {warning}")


def log_training_data_check(config: Any) -> None:
    """train.py's cheap check before converting: one summary line, a warning when the anchors fit badly.

    No image file is read. Without the source data (a finished conversion stands in for it) there is
    nothing to check and nothing is logged.
    """
    try:
        records, problems = read_split(config, for_training=True)
    except FileNotFoundError:
        return
    table = BoxTable.from_records(records)
    coverage, _, _ = anchor_coverage(config, table, _default_boxes(config))
    check = DatasetCheck({"split": "train", "images": _images_section(records, problems),
                          "boxes": _box_statistics(records, table, config.classes), "anchor_coverage": coverage})
    logger.info(summary_line(check) + " (details: python check_dataset.py)")
    if coverage["covered"] is not None and coverage["covered"] < COVERAGE_TARGET:
        logger.warning(f"warning: anchor coverage is below {COVERAGE_TARGET:.0%}: " + "; ".join(coverage["advice"]))
