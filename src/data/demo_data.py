"""Built-in synthetic detection set: filled shapes (circle, square, triangle, plus) on cluttered,
noisy backgrounds, so the whole pipeline (conversion, training, evaluation, export) can be tried and
tested without downloading COCO.

Generation is deterministic: image i of a split depends only on (seed, split, i) and the drawing
parameters, never on how many images are generated. The same scenes can be written as a COCO, VOC
or txt dataset; `inject_errors` adds one of each annotation problem the readers must count.

Boxes are the tight bounds of the drawn pixels: corners [ymin, xmin, ymax, xmax] with exclusive
max, i.e. COCO [x, y, w, h] with w = number of pixel columns the shape covers.

The four shapes are labelled with their own names by default (the demo config's class list). With
`class_names` (CLI `--coco_names`) they carry four COCO category names instead, so that the
81-class COCO configs of every network train and evaluate on the same synthetic scenes.
"""
from __future__ import annotations

import argparse
import json
import shutil
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from src.model_utils.files import write_json_atomic

DEMO_CLASSES = ("background", "circle", "square", "triangle", "plus")
#: COCO categories standing in for circle, square, triangle and plus (in that order), chosen by outline:
#: a ball is round, a screen is a rectangle, a delta kite is a triangle, an airplane seen from above
#: is a cross. Only the names matter (the networks learn whatever is drawn); the look-alikes make a
#: COCO-named demo detection read sensibly.
COCO_SHAPE_NAMES = ("sports ball", "tv", "kite", "airplane")
LAYOUTS = ("coco", "voc", "txt")
JPEG_QUALITY = 95
MAX_STRETCH = 1.6  # longest/shortest side of a shape
MAX_IOU = 0.3  # between two objects of one image
MAX_COVER = 0.5  # largest share of the smaller box another box may cover: no full occlusion
MIN_CONTRAST = 120.0  # RGB distance between a shape's fill and the mean background under it
UNKNOWN_CLASS_NAME = "hexagon"  # injected error: a class the config does not know
_SPLITS = {"train": 0, "val": 1}
_COCO_FOLDERS = {"train": "train2017", "val": "val2017"}
_VOC_FOLDERS = {"train": "train", "val": "eval"}


@dataclass
class DemoParams:
    """Everything that determines the generated files (stored in the completion marker)."""

    num_train: int
    num_val: int
    seed: int
    image_size: int
    min_objects: int
    max_objects: int
    min_size: int
    max_size: int
    layouts: list[str]
    inject_errors: bool
    class_names: list[str]  # labels of circle, square, triangle, plus


@dataclass
class Annotation:
    """One box as written to the annotation files: COCO-style pixel [x, y, w, h]."""

    name: str
    bbox: tuple[int, int, int, int]
    iscrowd: int = 0


@dataclass
class Scene:
    """One image file and its annotations, ready for any layout writer."""

    img_id: int
    jpeg: bytes
    height: int
    width: int
    annotations: list[Annotation]

    @property
    def file_name(self) -> str:
        return f"{self.img_id:06d}.jpg"


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour field plus clutter that is none of the classes: thin lines, scribbles, soft blobs."""
    coarse = rng.uniform(30, 225, size=(4, 4, 3)).astype(np.float32)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(int(rng.integers(3, 9))):
        start, end = rng.integers(0, size, 2), rng.integers(0, size, 2)
        cv2.line(image, (int(start[0]), int(start[1])), (int(end[0]), int(end[1])),
                 rng.uniform(0, 255, 3).tolist(), int(rng.integers(1, 3)), cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 4))):
        points = (rng.integers(0, size, 2) + rng.normal(0, size / 10, (5, 2))).astype(np.int32)
        cv2.polylines(image, [points], False, rng.uniform(0, 255, 3).tolist(), 1, cv2.LINE_AA)
    blobs = np.zeros_like(image)
    for _ in range(int(rng.integers(1, 4))):
        centre = rng.integers(0, size, 2)
        radius = int(rng.integers(size // 30 + 1, size // 8 + 2))
        cv2.circle(blobs, (int(centre[0]), int(centre[1])), radius, rng.uniform(-60, 60, 3).tolist(), -1)
    sigma = max(size / 40.0, 1.0)
    return np.clip(image + cv2.GaussianBlur(blobs, (0, 0), sigma), 0, 255)


def _shape_mask(label: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean (h, w) mask of a filled shape touching all four sides of its box."""
    if label == 1:  # circle (ellipse when stretched)
        yy, xx = np.mgrid[0:h, 0:w]
        return ((yy + 0.5 - h / 2) / (h / 2)) ** 2 + ((xx + 0.5 - w / 2) / (w / 2)) ** 2 <= 1.0
    if label == 2:  # square (rectangle when stretched)
        return np.ones((h, w), dtype=bool)
    if label == 3:  # triangle with its apex on a random side
        apex = rng.uniform(0.2, 0.8)
        corners = {0: [(apex * (w - 1), 0), (0, h - 1), (w - 1, h - 1)],
                   1: [(apex * (w - 1), h - 1), (0, 0), (w - 1, 0)],
                   2: [(0, apex * (h - 1)), (w - 1, 0), (w - 1, h - 1)],
                   3: [(w - 1, apex * (h - 1)), (0, 0), (0, h - 1)]}[int(rng.integers(0, 4))]
        mask = np.zeros((h, w), dtype=np.uint8)
        cv2.fillPoly(mask, [np.round(np.array(corners)).astype(np.int32)], 1)
        return mask.astype(bool)
    thickness = rng.uniform(0.28, 0.4)  # plus
    band_h, band_w = max(1, round(h * thickness)), max(1, round(w * thickness))
    mask = np.zeros((h, w), dtype=bool)
    mask[(h - band_h) // 2:(h - band_h) // 2 + band_h, :] = True
    mask[:, (w - band_w) // 2:(w - band_w) // 2 + band_w] = True
    return mask


def _overlap_ok(a: Sequence[int], b: Sequence[int]) -> bool:
    """Partial overlap is fine; a high IoU or one box mostly covering the other is not."""
    inter_h = min(a[2], b[2]) - max(a[0], b[0])
    inter_w = min(a[3], b[3]) - max(a[1], b[1])
    if inter_h <= 0 or inter_w <= 0:
        return True
    inter = inter_h * inter_w
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter) <= MAX_IOU and inter / min(area_a, area_b) <= MAX_COVER


def _place_boxes(rng: np.random.Generator, params: DemoParams) -> list[tuple[int, int, int, int]]:
    """Random boxes (top, left, bottom, right) by rejection sampling; hard-to-place objects are dropped."""
    size = params.image_size
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(int(rng.integers(params.min_objects, params.max_objects + 1))):
        for _attempt in range(50):
            long_side = rng.uniform(params.min_size, min(params.max_size, size))
            short_side = max(2.0, long_side / rng.uniform(1.0, MAX_STRETCH))
            h, w = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
            h, w = int(round(h)), int(round(w))
            top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            box = (top, left, top + h, left + w)
            if all(_overlap_ok(box, other) for other in boxes):
                boxes.append(box)
                break
    return boxes


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random fill colour far from the mean colour it is painted over (best of 20 draws)."""
    mean = under.reshape(-1, 3).mean(axis=0)
    candidates = rng.uniform(0, 255, size=(20, 3))
    distances = np.linalg.norm(candidates - mean, axis=1)
    good = np.flatnonzero(distances >= MIN_CONTRAST)
    return candidates[good[0]] if len(good) else candidates[int(np.argmax(distances))]


def render_scene(rng: np.random.Generator, params: DemoParams) -> tuple[np.ndarray, list[Annotation]]:
    """Draw one image (uint8 HxWx3) and return it with the tight boxes of its shapes."""
    image = _background(rng, params.image_size)
    annotations = []
    for top, left, bottom, right in _place_boxes(rng, params):
        label = int(rng.integers(1, len(DEMO_CLASSES)))  # the shape; its name comes from params.class_names
        mask = _shape_mask(label, bottom - top, right - left, rng)
        region = image[top:bottom, left:right]
        region[mask] = _contrasting_colour(rng, region[mask])
        ys, xs = np.nonzero(mask)
        x, y = left + int(xs.min()), top + int(ys.min())
        bbox = (x, y, int(xs.max()) - int(xs.min()) + 1, int(ys.max()) - int(ys.min()) + 1)
        annotations.append(Annotation(params.class_names[label - 1], bbox))
    noisy = image + rng.normal(0, 6, image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), annotations


def _encode(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG image")
    return data.tobytes()


def make_scenes(params: DemoParams, split: str) -> list[Scene]:
    """All scenes of one split (ids from 1), plus the broken ones when errors are injected."""
    count = params.num_train if split == "train" else params.num_val
    scenes = []
    for index in range(count):
        rng = np.random.default_rng([params.seed, _SPLITS[split], index])
        image, annotations = render_scene(rng, params)
        scenes.append(Scene(index + 1, _encode(image), image.shape[0], image.shape[1], annotations))
    if params.inject_errors:
        _inject_errors(scenes, params)
    return scenes


def _inject_errors(scenes: list[Scene], params: DemoParams) -> None:
    """Add one of each problem: clipped, zero-width, unknown-class and crowd boxes on the first image,
    then a corrupt .jpg (with a box) and a valid image without objects as the last two images."""
    size = params.image_size
    circle, square = params.class_names[:2]
    scenes[0].annotations += [
        Annotation(circle, (size - 10, 5, 30, 20)),  # partly outside: clipped to 10 px wide
        Annotation(square, (20, 20, 0, 15)),  # zero width: dropped
        Annotation(UNKNOWN_CLASS_NAME, (10, 10, 20, 20)),  # unknown class: skipped
        Annotation(circle, (0, 0, size // 2, size // 2), iscrowd=1),  # crowd (COCO layout only)
    ]
    next_id = scenes[-1].img_id + 1 if scenes else 1
    corrupt = b"this is not a JPEG image, only text with a .jpg name"
    scenes.append(Scene(next_id, corrupt, size, size, [Annotation(circle, (5, 5, 20, 20))]))
    empty = _background(np.random.default_rng([params.seed, 99, next_id]), size).astype(np.uint8)
    scenes.append(Scene(next_id + 1, _encode(empty), size, size, []))


def _write_coco(root: Path, split: str, scenes: list[Scene], class_names: Sequence[str]) -> None:
    """`train2017/`, `val2017/` images and `annotations/instances_<split>2017.json` (category ids 1..4)."""
    image_dir = root / _COCO_FOLDERS[split]
    image_dir.mkdir(parents=True, exist_ok=True)
    names = list(class_names)
    images, annotations = [], []
    for scene in scenes:
        (image_dir / scene.file_name).write_bytes(scene.jpeg)
        images.append({"id": scene.img_id, "file_name": scene.file_name, "height": scene.height, "width": scene.width})
        for ann in scene.annotations:
            if ann.name not in names:
                names.append(ann.name)
            x, y, w, h = ann.bbox
            annotations.append({"id": len(annotations) + 1, "image_id": scene.img_id,
                                "category_id": names.index(ann.name) + 1, "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": ann.iscrowd, "segmentation": []})
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(names)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    write_json_atomic({"info": {"description": "synthetic shapes (src.data.demo_data)"}, "licenses": [],
                       "images": images, "annotations": annotations, "categories": categories},
                      root / "annotations" / f"instances_{_COCO_FOLDERS[split]}.json")


def _voc_xml(scene: Scene) -> ET.ElementTree:
    """VOC xml; every corner is written +1 (VOC is 1-based) so the readers' -1 gives back our corners."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = scene.file_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", scene.width), ("height", scene.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for ann in scene.annotations:
        if ann.iscrowd:
            continue
        x, y, w, h = ann.bbox
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = ann.name
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", x), ("ymin", y), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(box, tag).text = str(value + 1)
    return ET.ElementTree(root)


def _write_voc(root: Path, split: str, scenes: list[Scene], class_names: Sequence[str]) -> None:
    """`voc/train/` and `voc/eval/`: each image beside its xml (objects carry their names, so
    `class_names` is not needed here; it is in the signature all writers share)."""
    folder = root / "voc" / _VOC_FOLDERS[split]
    folder.mkdir(parents=True, exist_ok=True)
    for scene in scenes:
        (folder / scene.file_name).write_bytes(scene.jpeg)
        _voc_xml(scene).write(folder / f"{Path(scene.file_name).stem}.xml", encoding="utf-8")


def _write_txt(root: Path, split: str, scenes: list[Scene], class_names: Sequence[str]) -> None:
    """`txt/<split>.txt` lines `<split>/name.jpg x1,y1,x2,y2,cls ...` (x first) + `txt/<split>/` images.

    `cls` indexes ("background", *class_names), the class list of a config made for these names.
    """
    classes = ("background", *class_names)
    folder = root / "txt"
    (folder / split).mkdir(parents=True, exist_ok=True)
    lines = []
    for scene in scenes:
        (folder / split / scene.file_name).write_bytes(scene.jpeg)
        tokens = [f"{split}/{scene.file_name}"]
        for ann in scene.annotations:
            if ann.iscrowd:
                continue
            x, y, w, h = ann.bbox
            cls = classes.index(ann.name) if ann.name in classes else len(classes) + 2
            tokens.append(f"{x},{y},{x + w},{y + h},{cls}")
        lines.append(" ".join(tokens))
    (folder / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


_WRITERS = {"coco": _write_coco, "voc": _write_voc, "txt": _write_txt}
_OUTPUTS = ("train2017", "val2017", "annotations", "voc", "txt")


def _clear_previous(root: Path) -> None:
    """Remove an earlier generation's files; refuse to touch folders this generator did not make."""
    ours = (root / ".complete").is_file() or (root / ".generating").is_file()
    existing = [name for name in _OUTPUTS if (root / name).exists()]
    if existing and not ours:
        raise FileExistsError(f"{root} already holds {existing} not written by the demo generator; "
                              f"pass an empty or new folder as the demo root")
    for name in existing:
        shutil.rmtree(root / name)
    (root / ".complete").unlink(missing_ok=True)


def _check_class_names(class_names: Sequence[str]) -> None:
    """Four distinct, non-empty names; none may be the background or the injected unknown class."""
    names = [class_names] if isinstance(class_names, str) else list(class_names)
    shapes = len(DEMO_CLASSES) - 1
    reserved = {DEMO_CLASSES[0], UNKNOWN_CLASS_NAME}
    if (len(names) != shapes or len(set(names)) != shapes or reserved & set(names)
            or not all(isinstance(n, str) and n.strip() for n in names)):
        raise ValueError(f"class_names must be {shapes} distinct non-empty names for "
                         f"{', '.join(DEMO_CLASSES[1:])} (not {' or '.join(sorted(reserved))}), got {names}")


def generate_demo_dataset(root: Path, num_train: int, num_val: int, seed: int = 0, image_size: int = 300,
                          min_objects: int = 1, max_objects: int = 4, min_size: int | None = None,
                          max_size: int | None = None, layouts: Sequence[str] = ("coco",),
                          inject_errors: bool = False, class_names: Sequence[str] = DEMO_CLASSES[1:]) -> Path:
    """Write the synthetic set under `root` (idempotent) and return `root`.

    Sizes are the longest side of a shape in pixels and default to 10 % .. 50 % of the image
    (30..150 px at 300 px). `class_names` label circle, square, triangle and plus (e.g.
    COCO_SHAPE_NAMES for the COCO configs); the drawn pixels do not depend on them. A `root/.complete`
    marker with the parameters (names included) makes a repeated call with the same parameters a
    no-op; other parameters regenerate everything.
    """
    unknown = sorted(set(layouts) - set(LAYOUTS))
    if unknown:
        raise ValueError(f"unknown demo layouts {unknown}; choose from {LAYOUTS}")
    if num_train < 1 or num_val < 1:
        raise ValueError(f"need at least one train and one val image, got {num_train} and {num_val}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    _check_class_names(class_names)
    params = DemoParams(num_train, num_val, seed, image_size, min_objects, max_objects,
                        min_size if min_size is not None else max(4, image_size // 10),
                        max_size if max_size is not None else image_size // 2,
                        sorted(set(layouts)), inject_errors, list(class_names))
    if not 2 <= params.min_size <= params.max_size <= image_size:
        raise ValueError(f"need 2 <= min_size <= max_size <= image_size, got {params.min_size}, "
                         f"{params.max_size}, {image_size}")
    root = Path(root)
    marker = root / ".complete"
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == asdict(params):
        return root
    root.mkdir(parents=True, exist_ok=True)
    _clear_previous(root)
    (root / ".generating").write_text("generation in progress or interrupted\n", encoding="utf-8")
    for split in _SPLITS:
        scenes = make_scenes(params, split)
        for layout in params.layouts:
            _WRITERS[layout](root, split, scenes, params.class_names)
    write_json_atomic(asdict(params), marker)
    (root / ".generating").unlink()
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: python -m src.data.demo_data --root DIR --num_train N --num_val M."""
    parser = argparse.ArgumentParser(description="Generate the synthetic shapes detection dataset.")
    parser.add_argument("--root", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--num_train", type=int, required=True)
    parser.add_argument("--num_val", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image_size", type=int, default=300)
    parser.add_argument("--min_objects", type=int, default=1)
    parser.add_argument("--max_objects", type=int, default=4)
    parser.add_argument("--min_size", type=int, default=None, help="shortest long side (default 10%% of image)")
    parser.add_argument("--max_size", type=int, default=None, help="longest long side (default 50%% of image)")
    parser.add_argument("--layouts", nargs="+", default=["coco"], choices=LAYOUTS)
    parser.add_argument("--inject_errors", action="store_true", help="add broken annotations (for reader tests)")
    parser.add_argument("--coco_names", action="store_true",
                        help=f"label the shapes {', '.join(COCO_SHAPE_NAMES)} (COCO categories) so that the "
                             "81-class COCO configs can train on the coco or voc layout (txt lines keep "
                             "class indices 1..4)")
    args = parser.parse_args(argv)
    class_names = COCO_SHAPE_NAMES if args.coco_names else DEMO_CLASSES[1:]
    root = generate_demo_dataset(args.root, args.num_train, args.num_val, args.seed, args.image_size,
                                 args.min_objects, args.max_objects, args.min_size, args.max_size,
                                 args.layouts, args.inject_errors, class_names)
    print(f"demo dataset ready in {root} (classes {', '.join(class_names)}; layouts {', '.join(args.layouts)})")


if __name__ == "__main__":
    main()
