"""MindRecord conversion with crash safety: a dataset is trusted only when its completion marker exists.

MindRecord files record their shard names inside, so shards are written under their final names
into a private `.partial-<prefix>-<pid>/` folder, moved into place, and only then is the marker
`<prefix>.done` (json: counts, shard list, source fingerprint) written atomically. A killed
conversion therefore leaves no marker and is rebuilt on the next run, instead of the seed's
behaviour of trusting any `<prefix>0` file, however truncated. In a distributed run rank 0
converts and the other ranks only wait for that marker (`ensure_mindrecord_for_rank`).

Rows follow the seed's schema: `img_id` int32 [1], `image` raw file bytes, `annotation` int32
[-1, 5] rows [ymin, xmin, ymax, xmax, class_index] in pixels. MindRecord cannot store an empty
(0, 5) array (it reads back as a garbage scalar), so an evaluation image without boxes gets one
padding row of -1; readers keep only rows with class_index >= 1 (`strip_padding_rows`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
from mindspore.mindrecord import FileWriter
from tqdm import tqdm

from src.data.annotations import (CORRUPT_IMAGE, ConversionReport, ImageRecord, read_coco, read_txt, read_voc,
                                  records_to_coco_dict)
from src.model_utils.files import write_json_atomic

#: The project's logger: the entry scripts send it to the console and to the per-rank log file.
logger = logging.getLogger("ssd")

TRAIN_PREFIX = "ssd.mindrecord"
EVAL_PREFIX = "ssd_eval.mindrecord"
GROUND_TRUTH_JSON = "ssd_eval_ground_truth.json"  # VOC / txt eval ground truth (outside the prefix globs)
NUM_SHARDS = 8
SCHEMA = {"img_id": {"type": "int32", "shape": [1]},
          "image": {"type": "bytes"},
          "annotation": {"type": "int32", "shape": [-1, 5]}}
PADDING_ROW = np.full((1, 5), -1, dtype=np.int32)
_ROWS_PER_SHARD_PER_WRITE = 16  # whole multiples of the shard count keep the shards balanced
#: How long the other ranks of a distributed run wait for rank 0's conversion (COCO train2017 takes minutes).
RANK_WAIT_SECONDS = 3600.0


def strip_padding_rows(annotation: np.ndarray) -> np.ndarray:
    """The real (K, 5) rows of a stored annotation: the writer's -1 padding row removed."""
    rows = np.asarray(annotation).reshape(-1, 5)
    return rows[rows[:, 4] >= 1]


def _marker_path(out_dir: Path, prefix: str) -> Path:
    return Path(out_dir) / f"{prefix}.done"


def find_complete_mindrecord(out_dir: Path, prefix: str, source: dict | None = None) -> Path | None:
    """Shard 0 of a finished conversion, or None when the marker or any listed file is missing.

    With `source`, the marker must also record that same source fingerprint (so a changed class list
    or annotation file is not silently served from an old conversion).
    """
    out_dir = Path(out_dir)
    try:
        info = json.loads(_marker_path(out_dir, prefix).read_text(encoding="utf-8"))
        shards, files = list(info["shards"]), list(info["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not shards or not all((out_dir / name).is_file() for name in files + shards):
        return None
    if source is not None and info.get("source") != source:
        return None
    return out_dir / shards[0]


def _pid_alive(pid: int) -> bool:
    """Whether a process exists (signal 0 only checks; EPERM means it exists but is not ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_untrusted(out_dir: Path, prefix: str) -> None:
    """Delete the marker, every `<prefix>*` file and dead writers' partial folders before a rewrite."""
    for folder in out_dir.glob(f".partial-{prefix}-*"):
        pid_text = folder.name.rsplit("-", 1)[-1]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and _pid_alive(int(pid_text)):
            raise RuntimeError(f"{folder} is being written by process {pid_text}: wait for that conversion to "
                               f"finish, or delete the folder if no such process is converting data")
        shutil.rmtree(folder)
    _marker_path(out_dir, prefix).unlink(missing_ok=True)
    for pattern in (f"{prefix}*", f".{prefix}*"):
        for path in out_dir.glob(pattern):
            if path.is_file():
                path.unlink()


def _checked_bytes(path: Path) -> bytes | None:
    """The raw file bytes if the image decodes, else None.

    A 1/8-scale greyscale decode is the cheap check: it reads the whole JPEG stream (so truncated
    files fail as they would in the training pipeline's Decode) at a fraction of a full decode.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if not data:
        return None
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    return data if decoded is not None else None


def _row(record: ImageRecord, data: bytes) -> dict[str, Any]:
    """One MindRecord row: boxes rounded to int pixels, or the padding row when there are none."""
    if len(record.labels):
        annotation = np.concatenate([np.round(record.boxes), record.labels.reshape(-1, 1)], axis=1).astype(np.int32)
    else:
        annotation = PADDING_ROW
    return {"img_id": np.array([record.img_id], dtype=np.int32), "image": data, "annotation": annotation}


def _shard_names(prefix: str, count: int) -> list[str]:
    """FileWriter's naming: the bare prefix for one shard, else prefix0 .. prefix{count-1}."""
    return [prefix] if count == 1 else [f"{prefix}{i}" for i in range(count)]


def _check_ids(records: Sequence[ImageRecord]) -> None:
    """Evaluation matches predictions to ground truth by id: ids must be unique and fit int32."""
    ids = [int(r.img_id) for r in records]
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise ValueError(f"image ids must be unique, these repeat: {duplicates[:10]}; fix the annotation source")
    if ids and not (0 <= min(ids) and max(ids) < 2 ** 31):
        raise ValueError(f"image ids must fit int32 (0 .. 2**31-1), got {min(ids)} .. {max(ids)}")


def _write_shards(candidates: Sequence[ImageRecord], partial: Path, prefix: str, shard_count: int,
                  report: ConversionReport) -> list[ImageRecord]:
    """Write all readable candidates into `partial`; returns the records written."""
    writer = FileWriter(str(partial / prefix), shard_num=shard_count, overwrite=True)
    writer.add_schema(SCHEMA, "ssd_json")
    chunk = shard_count * _ROWS_PER_SHARD_PER_WRITE
    written: list[ImageRecord] = []
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool, \
            tqdm(total=len(candidates), desc=f"writing {prefix}", unit="img") as bar:
        for start in range(0, len(candidates), chunk):
            batch = candidates[start:start + chunk]
            rows = []
            for record, data in zip(batch, pool.map(_checked_bytes, [r.image_path for r in batch])):
                if data is None:
                    report.add(CORRUPT_IMAGE, record.image_path.name)
                else:
                    rows.append(_row(record, data))
                    written.append(record)
            if rows:
                writer.write_raw_data(rows)
            bar.update(len(batch))
    writer.commit()
    return written


def _write_all(candidates: Sequence[ImageRecord], partial: Path, prefix: str, num_shards: int,
               report: ConversionReport) -> tuple[list[ImageRecord], int]:
    """Fill `partial` with min(num_shards, images) shards; returns (records written, shard count)."""
    shard_count = min(num_shards, len(candidates))
    written = _write_shards(candidates, partial, prefix, shard_count, report)
    if not written:
        raise ValueError(f"none of the {len(candidates)} images of {prefix} could be read\n{report.summary()}")
    if len(written) < shard_count:  # a tiny set lost images: rewrite it so that no shard is empty
        shutil.rmtree(partial)
        partial.mkdir()
        shard_count = len(written)
        _write_shards(written, partial, prefix, shard_count, ConversionReport())
    return written, shard_count


def write_mindrecord(records: Sequence[ImageRecord], out_dir: Path, prefix: str, num_shards: int,
                     for_training: bool, report: ConversionReport, source: dict | None = None) -> Path:
    """Convert records into `out_dir/<prefix>*` shards and return shard 0's path.

    Training leaves out images without boxes; evaluation keeps every image. Unreadable images are
    skipped and counted in `report`. `source` (any json-able fingerprint) is stored in the marker
    for `find_complete_mindrecord`.
    """
    start = time.time()
    out_dir = Path(out_dir)
    candidates = [r for r in records if len(r.labels)] if for_training else list(records)
    _check_ids(candidates)
    if not candidates:
        raise ValueError(f"no image to write for {prefix}: {len(records)} images read, none with a valid box; "
                         f"check classes and the annotations\n{report.summary()}")
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_untrusted(out_dir, prefix)
    partial = out_dir / f".partial-{prefix}-{os.getpid()}"
    partial.mkdir()
    corrupt_before = report.counts[CORRUPT_IMAGE]
    try:
        written, shard_count = _write_all(candidates, partial, prefix, num_shards, report)
        files = sorted(path.name for path in partial.iterdir())
        for name in files:  # final names were used inside the files, so a rename is all it takes
            os.replace(partial / name, out_dir / name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    shards = _shard_names(prefix, shard_count)
    counts = {"images_read": len(records), "images_written": len(written),
              "left_out_without_box": len(records) - len(candidates),
              "skipped_unreadable": report.counts[CORRUPT_IMAGE] - corrupt_before}
    seconds = time.time() - start
    write_json_atomic({"prefix": prefix, "shards": shards, "files": files, "for_training": for_training,
                       "counts": counts, "problems": report.counts, "source": source,
                       "seconds": round(seconds, 1)}, _marker_path(out_dir, prefix))
    logger.info(report.summary())
    logger.info(f"{prefix}: wrote {len(written)} images in {shard_count} shard(s) to {out_dir}; left out "
                f"{counts['left_out_without_box']} without boxes, {counts['skipped_unreadable']} unreadable; "
                f"{seconds:.1f} s")
    return out_dir / shards[0]


# ---- orchestration from a config -------------------------------------------------------------------

@dataclass(frozen=True)
class _Source:
    """Where one split's annotations and images are, and which config keys to fix when they are not."""

    kind: str  # coco | voc | other
    annotations: Path  # COCO json, VOC split folder, or txt file
    images: Path
    keys: str

    def check(self, config: Any) -> None:
        """One clear error naming the missing path and the keys that locate it."""
        found = self.annotations.is_dir() if self.kind == "voc" else self.annotations.is_file()
        if not found:
            what = {"coco": "COCO annotation file", "voc": "VOC split folder", "other": "annotation list"}[self.kind]
            raise FileNotFoundError(f"{what} {self.annotations} not found; set the config keys {self.keys} "
                                    f"(data_path is {config.data_path!r})")
        if not self.images.is_dir():
            raise FileNotFoundError(f"image folder {self.images} not found; set the config keys {self.keys} "
                                    f"(data_path is {config.data_path!r})")

    def fingerprint(self, classes: Sequence[str]) -> dict:
        """What the conversion depends on; a different value means the MindRecord must be rebuilt."""
        if self.annotations.is_dir():
            xml_files = list(self.annotations.glob("*.xml")) + list(self.annotations.glob("Annotations/*.xml"))
            size = sum(path.stat().st_size for path in xml_files)
        else:
            size = self.annotations.stat().st_size
        # resolved, so that ./data and /abs/data name the same source
        return {"dataset": self.kind, "annotations": str(self.annotations.resolve()),
                "images": str(self.images.resolve()), "annotation_bytes": size,
                "classes": [str(name) for name in classes]}

    def read(self, classes: Sequence[str], report: ConversionReport) -> list[ImageRecord]:
        """All images of the split through the reader of its format."""
        if self.kind == "coco":
            return read_coco(self.annotations, self.images, classes, report)
        if self.kind == "voc":
            return read_voc(self.annotations, classes, report)
        return read_txt(self.annotations, self.images, classes, report)


def mindrecord_folder(config: Any) -> Path:
    """`mindrecord_dir` if absolute, else `<data_path>/<mindrecord_dir>`."""
    return Path(config.data_path) / config.mindrecord_dir


def _source(config: Any, for_training: bool) -> _Source:
    """The split's source per config.dataset; absolute roots are used as they are."""
    data_path = Path(config.data_path)
    if config.dataset == "coco":
        split = config.train_data_type if for_training else config.val_data_type
        coco_root = data_path / config.coco_root
        split_key = "train_data_type" if for_training else "val_data_type"
        return _Source("coco", coco_root / config.instances_set.format(split), coco_root / split,
                       f"coco_root={config.coco_root!r}, instances_set={config.instances_set!r}, "
                       f"{split_key}={split!r}")
    if config.dataset == "voc":
        folder = data_path / config.voc_root / ("train" if for_training else "eval")
        return _Source("voc", folder, folder, f"voc_root={config.voc_root!r} (a folder with train/ and eval/)")
    image_key, anno_key = "image_dir", "anno_path"
    if not for_training:
        image_key = "val_image_dir" if config.val_image_dir else image_key
        anno_key = "val_anno_path" if config.val_anno_path else anno_key
    image_dir, anno_path = getattr(config, image_key), getattr(config, anno_key)
    if not anno_path:
        raise ValueError(f"dataset {config.dataset!r} reads a text annotation list: set config key {anno_key} "
                         f"(and {image_key}), or choose dataset coco or voc")
    return _Source("other", data_path / anno_path, data_path / image_dir,
                   f"{anno_key}={anno_path!r}, {image_key}={image_dir!r}")


@contextlib.contextmanager
def _conversion_lock(out_dir: Path, prefix: str) -> Iterator[None]:
    """Serialise conversions of one prefix across processes (e.g. every rank of a distributed run):
    the first converts, the others wait and then reuse its result."""
    try:
        import fcntl
    except ImportError:  # no advisory locks (Windows): one process per dataset is then the user's job
        yield
        return
    # Named outside the `.<prefix>*` pattern that _remove_untrusted deletes: a lock must keep its inode.
    with open(out_dir / f".lock-{prefix}", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info(f"waiting for another process converting {out_dir / prefix} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _conversion_without_source(config: Any, source: _Source, out_dir: Path, prefix: str) -> Path | None:
    """None while the source data exists (it then decides what is current); without it, the complete
    conversion to use instead, or the missing-source error when there is none."""
    try:
        source.check(config)
    except FileNotFoundError:
        existing = find_complete_mindrecord(out_dir, prefix)
        if existing is None:
            raise
        logger.info(f"source data not found; using the existing conversion {existing}")
        return existing
    return None


def ensure_mindrecord(config: Any, for_training: bool) -> Path:
    """Shard 0 of the training or eval MindRecord, converting the source only when needed.

    Reused when its marker matches the current source (dataset, paths, annotation size, classes).
    If the source is gone but a complete conversion exists, that conversion is used. For VOC/txt
    evaluation the COCO-style ground truth is written alongside (see `ground_truth_json`).
    """
    out_dir = mindrecord_folder(config)
    prefix = TRAIN_PREFIX if for_training else EVAL_PREFIX
    source = _source(config, for_training)
    existing = _conversion_without_source(config, source, out_dir, prefix)
    if existing is not None:
        return existing
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = source.fingerprint(config.classes)
    with _conversion_lock(out_dir, prefix):
        existing = find_complete_mindrecord(out_dir, prefix, fingerprint)
        if existing is not None:
            return existing
        if find_complete_mindrecord(out_dir, prefix) is not None:
            logger.info(f"{out_dir / prefix} was converted from another source or class list; converting again")
        report = ConversionReport()
        records = source.read(config.classes, report)
        if not for_training and source.kind != "coco":
            write_json_atomic(records_to_coco_dict(records, config.classes), out_dir / GROUND_TRUTH_JSON)
        return write_mindrecord(records, out_dir, prefix, NUM_SHARDS, for_training, report, source=fingerprint)


def wait_for_mindrecord(config: Any, for_training: bool, timeout: float = RANK_WAIT_SECONDS,
                        poll_seconds: float = 1.0) -> Path:
    """Shard 0 of the conversion another process (rank 0) is making, once its marker matches the source.

    Only reads: it accepts exactly what `ensure_mindrecord` would reuse, so a stale conversion of
    another source or class list is not taken while rank 0 is rewriting it. Raises TimeoutError
    after `timeout` seconds with the way out (convert before launching).
    """
    out_dir = mindrecord_folder(config)
    prefix = TRAIN_PREFIX if for_training else EVAL_PREFIX
    source = _source(config, for_training)
    existing = _conversion_without_source(config, source, out_dir, prefix)
    if existing is not None:
        return existing
    fingerprint = source.fingerprint(config.classes)
    deadline = time.monotonic() + timeout
    found = find_complete_mindrecord(out_dir, prefix, fingerprint)
    if found is None:
        logger.info(f"waiting up to {timeout:.0f} s for rank 0 to convert {out_dir / prefix} ...")
    while found is None:
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{out_dir / prefix} was not completed within {timeout:.0f} s: no {prefix}.done marker for the "
                f"current source appeared in {out_dir}. Check rank 0's log for its conversion, or convert before "
                f"launching with `python train.py --only_create_dataset=True --config_path ...` (on every machine "
                f"when the ranks do not share a file system)")
        time.sleep(poll_seconds)
        found = find_complete_mindrecord(out_dir, prefix, fingerprint)
    return found


def ensure_mindrecord_for_rank(config: Any, for_training: bool, rank: int,
                               timeout: float = RANK_WAIT_SECONDS) -> Path:
    """The MindRecord for one rank of a distributed run: rank 0 converts, the others wait for its marker.

    One named writer rather than every rank queueing on the conversion lock: the lock would let
    whichever rank comes first convert and make the others wait without limit, while a bounded wait
    on the marker ends with a clear error when rank 0 never finishes (e.g. ranks on machines that
    do not share the data folder).
    """
    if rank == 0:
        return ensure_mindrecord(config, for_training)
    return wait_for_mindrecord(config, for_training, timeout)


def ground_truth_json(config: Any) -> Path:
    """The COCO-format ground truth of the eval split: COCO's own instances json, or for VOC/txt the
    json converted from the same records as the eval MindRecord (so image ids agree)."""
    source = _source(config, for_training=False)
    if source.kind == "coco":
        source.check(config)
        return source.annotations
    ensure_mindrecord(config, for_training=False)
    path = mindrecord_folder(config) / GROUND_TRUTH_JSON
    if not path.is_file():
        source.check(config)
        records = source.read(config.classes, ConversionReport())
        write_json_atomic(records_to_coco_dict(records, config.classes), path)
    return path
