"""`mindspore.dataset` pipelines that turn the SSD MindRecord files into training and eval batches.

Training: one Python map (`TrainTransform`, threads or processes) decodes with OpenCV, draws the
zoom-out, IoU crop and flip on rectangles, renders the result once at the input size, jitters the
colours and encodes the boxes; MindSpore's C++ ops normalise and transpose. Every random draw comes
from a per-row generator, so a seed gives the same batches for any worker count. The Python map
holds the GIL only between OpenCV/numpy calls, which release it for the pixel work. Eval: MindSpore's
C++ decode, resize and normalisation. MindRecord rows: `img_id` int32 (1,), `image` raw JPEG/PNG bytes,
`annotation` int32 (K, 5) rows [ymin, xmin, ymax, xmax, class_index] in pixels.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import mindspore.dataset as ds
import mindspore.dataset.vision as vision
import numpy as np

from src.boxes.anchors import default_boxes_from_config
from src.boxes.coding import BoxCoder
from src.data.augment import drop_degenerate, normalise_boxes, random_colour_jitter, random_geometry
from src.data.mindrecord import open_mindrecord, strip_padding_rows

#: RGB normalisation of every SSD checkpoint of the model zoo (ImageNet statistics, 0-255 scale).
IMAGE_MEAN = (123.675, 116.28, 103.53)
IMAGE_STD = (58.395, 57.12, 57.375)

TRAIN_COLUMNS = ["image", "box", "label", "num_match"]
EVAL_COLUMNS = ["img_id", "image", "image_shape"]


class RowCounter:
    """Numbers rows in pipeline order, continuing across epochs (a fresh pipeline restarts at 0).

    It runs as a one-worker map, so the numbering does not depend on thread timing; the parallel
    augmentation seeds its generators from it.
    """

    def __init__(self) -> None:
        self._next = 0

    def __call__(self, img_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        index = self._next
        self._next += 1
        return img_id, np.array([index], dtype=np.int64)


def decode_rgb(encoded: np.ndarray) -> np.ndarray:
    """JPEG/PNG bytes -> HWC uint8 RGB (grey images get three channels), EXIF orientation ignored.

    OpenCV's libjpeg-turbo decode takes about half the CPU time of mindspore.dataset's Decode on
    COCO images (1.9 vs 4.0 ms for 640x480), the largest single cost of the training pipeline.
    Like that Decode (and COCO's annotations) it keeps the stored pixel grid: rotating by the EXIF
    tag would move the pixels away from the boxes.
    A ValueError says the bytes do not decode; the caller adds where they came from.
    """
    image = cv2.imdecode(np.frombuffer(encoded, dtype=np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ValueError("cannot be decoded (corrupt or truncated image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _decode_training_image(encoded: np.ndarray, source: str) -> np.ndarray:
    try:
        return decode_rgb(encoded)
    except ValueError as err:
        raise ValueError(f"a training image in the MindRecord file {source} {err}: convert the dataset again "
                         "(train.py --only_create_dataset=True) to drop unreadable images") from None


class TrainTransform:
    """Training augmentation and box encoding of one row, as one picklable callable for `map`.

    Each row gets its own generator seeded by (pipeline seed, rank, row number): results do not
    depend on which worker (thread or process) runs it, every epoch differs, and ranks differ.
    """

    def __init__(self, config: Any, coder: BoxCoder, seed: int, rank: int = 0, source: str = "") -> None:
        self.img_shape = tuple(int(v) for v in config.img_shape)
        # A ratio of 1 is no zoom-out at all.
        self.expand_max_ratio = float(config.expand_max_ratio) if bool(config.use_expand) else 1.0
        self.color_jitter = tuple(float(v) for v in config.color_jitter)  # brightness, contrast, saturation, hue
        self.coder = coder
        self.seed = int(seed)
        self.rank = int(rank)
        self.source = source  # the MindRecord file, named when an image in it does not decode

    def __call__(self, row_index: np.ndarray, encoded_image: np.ndarray, annotation: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(row number, raw image bytes, annotation) -> (HWC uint8 image, loc, labels, num_match)."""
        rng = np.random.default_rng([self.seed, self.rank, int(np.asarray(row_index).reshape(-1)[0])])
        rows = strip_padding_rows(annotation)
        boxes, labels = drop_degenerate(rows[:, :4].astype(np.float32), rows[:, 4].astype(np.int32))
        image = _decode_training_image(encoded_image, self.source)
        image, boxes, labels = random_geometry(image, boxes, labels, rng, self.img_shape, self.expand_max_ratio,
                                               IMAGE_MEAN)
        image = random_colour_jitter(image, rng, *self.color_jitter)
        loc, anchor_labels, num_match = self.coder.encode(normalise_boxes(boxes, *self.img_shape), labels)
        return image, loc, anchor_labels, num_match


def _with_original_shape(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep (height, width) before resizing: eval maps boxes back to the original image."""
    return image, np.array(image.shape[:2], dtype=np.float32)


def _check_file(mindrecord_file: str | Path) -> str:
    path = Path(mindrecord_file)
    if not path.is_file():
        raise FileNotFoundError(f"MindRecord file {path} not found; create it first "
                                "(train.py --only_create_dataset=True or src/data/mindrecord.py)")
    return str(path)


def create_ssd_dataset(mindrecord_file: str | Path, config: Any, batch_size: int, is_training: bool,
                       device_num: int = 1, rank: int = 0, num_parallel_workers: int | None = None,
                       python_multiprocessing: bool = False, with_img_id: bool = False) -> ds.Dataset:
    """Batched SSD dataset: training targets per anchor, or eval images with their ids and sizes.

    Train columns: image float32 (B,3,H,W), box float32 (B,N,4), label int32 (B,N),
    num_match int32 (B,1); incomplete last batch dropped. Eval columns: img_id int32 (B,1),
    image float32 (B,3,H,W), image_shape float32 (B,2) original (height, width); every image is
    kept, so the last batch may be smaller. `with_img_id` appends the training images' img_id
    int32 (B,1) as a last column, so a run can record which images each rank consumed.

    Training is reproducible under `ds.config.set_seed` for any worker count, with threads or
    (`python_multiprocessing`, for the Python augmentation map only) processes. Threads are the
    default: the map spends its time in OpenCV and numpy calls that release the GIL, and on 2 cores
    processes measured no faster (coco128, 300 px, 2 workers: about 410 img/s with threads, 390
    with processes; equal within noise next to a running training) while adding shared-memory
    copies and forked workers. With `device_num > 1` MindDataset pads the shards to equal length
    by repeating images, so an eval run sharded over ranks sees some img_ids twice.
    """
    # MindSpore refuses more workers than cores, so a config written for a big host still runs here.
    workers = min(num_parallel_workers or 6, os.cpu_count() or 1)
    shards = {"num_shards": device_num, "shard_id": rank} if device_num > 1 else {}
    columns = ["img_id", "image", "annotation"] if is_training else ["img_id", "image"]
    data = open_mindrecord(_check_file(mindrecord_file), columns, num_parallel_workers=workers, shuffle=is_training,
                           **shards)
    normalise = [vision.Normalize(mean=list(IMAGE_MEAN), std=list(IMAGE_STD)), vision.HWC2CHW()]
    if is_training:
        coder = BoxCoder(default_boxes_from_config(config), config.prior_scaling, config.match_threshold)
        transform = TrainTransform(config, coder, ds.config.get_seed(), rank, str(mindrecord_file))
        data = data.map(operations=RowCounter(), input_columns=["img_id"],
                        output_columns=["img_id", "row_index"], num_parallel_workers=1)
        data = data.map(operations=transform, input_columns=["row_index", "image", "annotation"],
                        output_columns=TRAIN_COLUMNS, num_parallel_workers=workers,
                        python_multiprocessing=python_multiprocessing)
        data = data.map(operations=normalise, input_columns=["image"], num_parallel_workers=workers)
        output = TRAIN_COLUMNS + (["img_id"] if with_img_id else [])
        return data.project(output).batch(batch_size, drop_remainder=True)
    data = data.map(operations=vision.Decode(), input_columns=["image"], num_parallel_workers=workers)
    data = data.map(operations=_with_original_shape, input_columns=["image"],
                    output_columns=["image", "image_shape"], num_parallel_workers=workers)
    resize = vision.Resize([int(v) for v in config.img_shape], vision.Inter.LINEAR)
    data = data.map(operations=[resize] + normalise, input_columns=["image"], num_parallel_workers=workers)
    return data.project(EVAL_COLUMNS).batch(batch_size, drop_remainder=False)
