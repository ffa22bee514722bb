"""MindRecord conversion with crash safety: a dataset is trusted only when its completion marker exists.

MindRecord files record their shard names inside, so shards are written under their final names
into a private `.partial-<prefix>-<pid>/` folder, moved into place, and only then is the marker
`<prefix>.done` written atomically. A killed conversion therefore leaves no marker and is rebuilt on
the next run, instead of the seed's behaviour of trusting any `<prefix>0` file, however truncated.
In a distributed run rank 0 converts and the other ranks only wait for that marker
(`ensure_mindrecord_for_rank`).

The marker fingerprints what the records were built from, by content, so cached data is reused only
while it matches (`conversion_status` says why not, in one line that is logged before a rebuild):
the sha256 of the annotation file(s), each image's size and mtime_ns (a stat, not a hash: cheap for
COCO's 118k images, and any rewrite of a file changes its mtime), the config that shapes the records
(dataset kind, the resolved annotation and image paths, classes) and each written file's name and
size, so a truncated shard is found before MindSpore fails on it mid-run with no file named. A
same-size in-place corruption of a shard's data pages is not detected: MindRecord has no checksums
and hashing every shard (COCO: ~19 GB) on each start would not be cheap; MindSpore itself refuses a
damaged header, which `open_mindrecord` turns into one line naming the file.

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
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import mindspore.dataset as ds
import numpy as np
from mindspore.mindrecord import FileWriter
from tqdm import tqdm

from src.data.annotations import CORRUPT_IMAGE, ConversionReport, ImageRecord, check_image_bytes
from src.data.sources import DataSource, data_source, evaluation_ground_truth
from src.model_utils.errors import SSDError, wrap_foreign_error
from src.model_utils.files import write_json_atomic
from src.model_utils.run_lock import pid_alive

#: The project's logger: the entry scripts send it to the console and to the per-rank log file.
logger = logging.getLogger("ssd")

TRAIN_PREFIX = "ssd.mindrecord"
EVAL_PREFIX = "ssd_eval.mindrecord"
GROUND_TRUTH_JSON = "ssd_eval_ground_truth.json"  # the cleaned eval ground truth (outside the prefix globs)
OFFLINE_GROUND_TRUTH_JSON = "ssd_offline_ground_truth.json"  # the same, cleaned without the images (postprocess.py)
NUM_SHARDS = 8
SCHEMA = {"img_id": {"type": "int32", "shape": [1]},
          "image": {"type": "bytes"},
          "annotation": {"type": "int32", "shape": [-1, 5]}}
PADDING_ROW = np.full((1, 5), -1, dtype=np.int32)
_ROWS_PER_SHARD_PER_WRITE = 16  # whole multiples of the shard count keep the shards balanced
#: Bumped whenever the marker's fingerprint or the written rows change, so older conversions are rebuilt.
MARKER_VERSION = 2
#: How the rebuild line names a changed source key, most telling first; "{old}"/"{new}" are the values.
_SOURCE_CHANGES = {"dataset": "config key dataset changed ({old} -> {new})",
                   "annotations": "annotation path changed ({old} -> {new})",
                   "images": "image folder changed ({old} -> {new})",
                   "classes": "config key classes changed",
                   "annotation_sha256": "annotations changed (sha256 differs)"}
#: How long the other ranks of a distributed run wait for rank 0's conversion (COCO train2017 takes minutes).
RANK_WAIT_SECONDS = 3600.0


def strip_padding_rows(annotation: np.ndarray) -> np.ndarray:
    """The real (K, 5) rows of a stored annotation: the writer's -1 padding row removed."""
    rows = np.asarray(annotation).reshape(-1, 5)
    return rows[rows[:, 4] >= 1]


def _marker_path(out_dir: Path, prefix: str) -> Path:
    return Path(out_dir) / f"{prefix}.done"


def _read_marker(out_dir: Path, prefix: str) -> tuple[dict | None, str]:
    """(marker content, "") or (None, why there is no usable marker)."""
    marker = _marker_path(out_dir, prefix)
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"no {marker.name} marker (no finished conversion)"
    except (OSError, ValueError) as error:
        return None, f"marker {marker} is unreadable ({error})"
    if not isinstance(info, dict) or not info.get("shards") or not isinstance(info.get("files"), (dict, list)):
        return None, f"marker {marker} lacks its shard list"
    return info, ""


def _file_problem(out_dir: Path, info: dict) -> str | None:
    """A listed file that is missing or (new markers only) not of its recorded size."""
    files = info["files"]
    sizes = files if isinstance(files, dict) else dict.fromkeys(files)
    for name in list(sizes) + [name for name in info["shards"] if name not in sizes]:
        path = out_dir / name
        if not path.is_file():
            return f"{path} is missing"
        expected = sizes.get(name)
        if expected is not None and path.stat().st_size != expected:
            return f"shard {path} is {path.stat().st_size} bytes, expected {expected} (truncated or damaged)"
    return None


def _stamp(path: Path) -> list[int | None]:
    """[size, mtime_ns] of a file, [None, None] when it cannot be stat()ed."""
    try:
        status = path.stat()
    except OSError:
        return [None, None]
    return [status.st_size, status.st_mtime_ns]


def _image_stamps(paths: Sequence[Path]) -> dict:
    """Size and mtime_ns of each image, named relative to their common folder to keep the marker small."""
    absolute = [Path(path).absolute() for path in paths]
    root = Path(os.path.commonpath([str(path.parent) for path in absolute])) if absolute else Path.cwd()
    return {"root": str(root), "files": [[str(path.relative_to(root)), *_stamp(path)] for path in absolute]}


def _changed_images(stamps: dict) -> list[str]:
    """The recorded images whose size or mtime differs now (or that appeared or vanished)."""
    root = Path(stamps["root"])
    return [name for name, size, mtime in stamps["files"] if _stamp(root / name) != [size, mtime]]


def _source_problem(info: dict, source: dict) -> str | None:
    """The first way the recorded fingerprint differs from `source`: config, annotations, then images."""
    recorded = info.get("source") or {}
    for key in list(_SOURCE_CHANGES) + sorted(set(recorded) | set(source) - set(_SOURCE_CHANGES)):
        if recorded.get(key) != source.get(key):
            return _SOURCE_CHANGES.get(key, "{key} changed").format(key=key, old=recorded.get(key), new=source.get(key))
    changed = _changed_images(info.get("images") or {"root": "", "files": []})
    if changed:
        return f"{len(changed)} image(s) changed since the conversion (size or mtime), e.g. {changed[0]}"
    return None


def conversion_status(out_dir: Path, prefix: str, source: dict | None = None) -> tuple[Path | None, str]:
    """(shard 0, "") when the conversion `out_dir/<prefix>*` can be used, else (None, why not).

    With `source` (a `DataSource.fingerprint`) the marker must be of this code's version and record
    that same fingerprint, and the images it lists must be unchanged. Without it (the source data is
    gone, nothing to compare) an older marker is still accepted as it was before fingerprints; the
    files it lists must exist and, when it records sizes, have them.
    """
    out_dir = Path(out_dir)
    info, problem = _read_marker(out_dir, prefix)
    if info is None:
        return None, problem
    version = info.get("version", 1)
    if source is not None and version != MARKER_VERSION:
        return None, (f"marker {_marker_path(out_dir, prefix)} is from an older version of this code (marker "
                      f"version {version}, this code writes {MARKER_VERSION}) and has no content fingerprint")
    problem = _file_problem(out_dir, info) or (_source_problem(info, source) if source is not None else None)
    return (None, problem) if problem else (out_dir / info["shards"][0], "")


def find_complete_mindrecord(out_dir: Path, prefix: str, source: dict | None = None) -> Path | None:
    """Shard 0 of a finished conversion that `conversion_status` accepts, else None."""
    return conversion_status(out_dir, prefix, source)[0]


def _remove_untrusted(out_dir: Path, prefix: str) -> None:
    """Delete the marker, every `<prefix>*` file and dead writers' partial folders before a rewrite."""
    for folder in out_dir.glob(f".partial-{prefix}-*"):
        pid_text = folder.name.rsplit("-", 1)[-1]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and pid_alive(int(pid_text)):
            raise RuntimeError(f"{folder} is being written by process {pid_text}: wait for that conversion to "
                               f"finish, or delete the folder if no such process is converting data")
        shutil.rmtree(folder)
    _marker_path(out_dir, prefix).unlink(missing_ok=True)
    for pattern in (f"{prefix}*", f".{prefix}*"):
        for path in out_dir.glob(pattern):
            if path.is_file():
                path.unlink()


def checked_image_bytes(path: Path) -> bytes | None:
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
            for record, data in zip(batch, pool.map(checked_image_bytes, [r.image_path for r in batch])):
                if check_image_bytes(record, data, report):  # decoded, and of the annotated size
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
                     for_training: bool, report: ConversionReport, source: dict | None = None,
                     images: Sequence[Path] | None = None) -> Path:
    """Convert records into `out_dir/<prefix>*` shards and return shard 0's path.

    Training leaves out images without boxes; evaluation keeps every image. Unreadable images are
    skipped and counted in `report`. `source` (any json-able fingerprint) is stored in the marker
    for `find_complete_mindrecord`, with the size and mtime of `images` (default: the records'
    images), taken before they are read so that an edit during the conversion shows up next time.
    """
    start = time.time()
    out_dir = Path(out_dir)
    stamps = _image_stamps([record.image_path for record in records] if images is None else images)
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
        files = {path.name: path.stat().st_size for path in sorted(partial.iterdir())}
        for name in files:  # final names were used inside the files, so a rename is all it takes
            os.replace(partial / name, out_dir / name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    shards = _shard_names(prefix, shard_count)
    counts = {"images_read": len(records), "images_written": len(written),
              "left_out_without_box": len(records) - len(candidates),
              "skipped_unreadable": report.counts[CORRUPT_IMAGE] - corrupt_before}
    seconds = time.time() - start
    # Written last: a conversion killed before this line has no marker and is never trusted.
    write_json_atomic({"version": MARKER_VERSION, "prefix": prefix, "shards": shards, "files": files,
                       "for_training": for_training, "counts": counts, "problems": report.counts, "source": source,
                       "images": stamps, "seconds": round(seconds, 1)}, _marker_path(out_dir, prefix))
    logger.info(report.summary())
    logger.info(f"{prefix}: wrote {len(written)} images in {shard_count} shard(s) to {out_dir}; left out "
                f"{counts['left_out_without_box']} without boxes, {counts['skipped_unreadable']} unreadable; "
                f"{seconds:.1f} s")
    return out_dir / shards[0]


# ---- orchestration from a config -------------------------------------------------------------------

def mindrecord_folder(config: Any) -> Path:
    """`mindrecord_dir` if absolute, else `<data_path>/<mindrecord_dir>`."""
    return Path(config.data_path) / config.mindrecord_dir


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


def _conversion_without_source(config: Any, source: DataSource, out_dir: Path, prefix: str) -> Path | None:
    """None while the source data exists (it then decides what is current); without it, the complete
    conversion to use instead, or the missing-source error when there is none."""
    try:
        source.check(config)
    except FileNotFoundError:
        existing, problem = _stand_in_conversion(out_dir, prefix, source, config.classes)
        if existing is None:
            logger.info(f"{out_dir / prefix}: no usable conversion either: {problem}")
            raise
        logger.info(f"source data not found; using the existing conversion {existing}")
        return existing
    return None


def _stand_in_conversion(out_dir: Path, prefix: str, source: DataSource,
                         classes: Sequence[str]) -> tuple[Path | None, str]:
    """(shard 0, "") of a finished conversion of `source` that may stand in for its missing files, else (None, why)."""
    existing, problem = conversion_status(out_dir, prefix)
    problem = problem or _other_source(out_dir, prefix, source, classes)
    return (None, problem) if problem else (existing, "")


def _other_source(out_dir: Path, prefix: str, source: DataSource, classes: Sequence[str]) -> str | None:
    """Why a finished conversion cannot stand in for `source` whose files are gone, or None.

    Without the files nothing can be hashed, but the marker records which dataset, paths and
    classes it was built from: a conversion of another dataset that happens to sit in the same
    mindrecord_dir must not be trained on or scored in its place (a mistyped coco_root would
    otherwise silently train on the old data). Markers from before fingerprints are accepted.
    """
    recorded = (_read_marker(out_dir, prefix)[0] or {}).get("source")
    if not recorded:
        return None
    wanted = {"dataset": source.kind, "annotations": str(source.annotations.resolve()),
              "images": str(source.images.resolve()), "classes": [str(name) for name in classes]}
    for key, value in wanted.items():
        if recorded.get(key) != value:
            return (f"it was built from another source ({_SOURCE_CHANGES[key].format(old=recorded.get(key), new=value)})"
                    f"; fix the config keys that locate the data, or delete {out_dir} to convert anew")
    return None


def ensure_mindrecord(config: Any, for_training: bool) -> Path:
    """Shard 0 of the training or eval MindRecord, converting the source only when needed.

    Reused when its marker matches the current source (see `conversion_status`); otherwise one
    line says why it is converted again. If the source is gone but a complete conversion exists,
    that conversion is used. For evaluation the cleaned COCO-style ground truth is written alongside
    (see `ground_truth_json`).
    """
    out_dir = mindrecord_folder(config)
    prefix = TRAIN_PREFIX if for_training else EVAL_PREFIX
    source = data_source(config, for_training)
    existing = _conversion_without_source(config, source, out_dir, prefix)
    if existing is not None:
        return existing
    out_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = source.fingerprint(config.classes)
    with _conversion_lock(out_dir, prefix):
        existing, problem = conversion_status(out_dir, prefix, fingerprint)
        if existing is not None:
            return existing
        if _marker_path(out_dir, prefix).exists() or any(out_dir.glob(f"{prefix}*")):
            logger.info(f"{out_dir / prefix}: converting again: {problem}")
        report = ConversionReport()
        records = source.read(config.classes, report)
        ground_truth = out_dir / GROUND_TRUTH_JSON
        if not for_training:  # never left from an older conversion if this one is killed
            ground_truth.unlink(missing_ok=True)
        path = write_mindrecord(records, out_dir, prefix, NUM_SHARDS, for_training, report, source=fingerprint,
                                images=source.image_paths(records))
        if not for_training:  # after the writer: the images it refused are left out (report.skipped_images)
            write_json_atomic(evaluation_ground_truth(source.kind, source.annotations, records, config.classes, report),
                              ground_truth)
        return path


def wait_for_mindrecord(config: Any, for_training: bool, timeout: float = RANK_WAIT_SECONDS,
                        poll_seconds: float = 1.0) -> Path:
    """Shard 0 of the conversion another process (rank 0) is making, once its marker matches the source.

    Only reads: it accepts exactly what `ensure_mindrecord` would reuse, so a stale conversion of
    another source or class list is not taken while rank 0 is rewriting it. Raises TimeoutError
    after `timeout` seconds with the way out (convert before launching).
    """
    out_dir = mindrecord_folder(config)
    prefix = TRAIN_PREFIX if for_training else EVAL_PREFIX
    source = data_source(config, for_training)
    existing = _conversion_without_source(config, source, out_dir, prefix)
    if existing is not None:
        return existing
    fingerprint = source.fingerprint(config.classes)
    deadline = time.monotonic() + timeout
    found, problem = conversion_status(out_dir, prefix, fingerprint)
    if found is None:
        logger.info(f"waiting up to {timeout:.0f} s for rank 0 to convert {out_dir / prefix} ...")
    while found is None:
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{out_dir / prefix} was not completed within {timeout:.0f} s: no {prefix}.done marker for the "
                f"current source appeared in {out_dir} (last seen: {problem}). Check rank 0's log for its "
                f"conversion, or convert before launching with `python train.py --only_create_dataset=True "
                f"--config_path ...` (on every machine when the ranks do not share a file system)")
        time.sleep(poll_seconds)
        found, problem = conversion_status(out_dir, prefix, fingerprint)
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


def _marker_listing(shard: Path) -> tuple[str, dict | None]:
    """(prefix, marker content) of the conversion a shard belongs to; (name without shard number, None)
    for a MindRecord made elsewhere, without a marker."""
    for marker in sorted(shard.parent.glob("*.done")):
        prefix = marker.name.removesuffix(".done")
        info, _ = _read_marker(shard.parent, prefix)
        if info is not None and shard.name in info["shards"]:
            return prefix, info
    return shard.name.rstrip("0123456789"), None


def _mindspore_detail(error: BaseException) -> str:
    """The line of a MindSpore pipeline error that says what is wrong (its first line never does)."""
    lines = [line.strip() for line in str(error).splitlines()]
    return next((line.removeprefix("[ERROR]").strip() for line in lines if line.startswith("[ERROR]")),
                next((line for line in lines if line), type(error).__name__))


def open_mindrecord(path: str | Path, columns: list[str], **options: Any) -> ds.MindDataset:
    """`ds.MindDataset(path, columns, **options)`, refusing a damaged conversion with one line naming the file.

    MindSpore reports a truncated shard only once the pipeline runs, as "Failed to read file" with
    no file named, so the shards' sizes are first checked against their marker; a header it cannot
    parse shows up in a cheap probe (the dataset size, read from the headers) on a separate
    dataset object, so the returned pipeline is built exactly as before.
    """
    path = Path(path)
    prefix, info = _marker_listing(path)
    fix = (f"delete the folder {path.parent} (or its {prefix}* files and {prefix}.done) and run again to convert "
           f"the source data anew")
    problem = _file_problem(path.parent, info) if info is not None else None
    if problem:
        raise SSDError(f"{problem}; {fix}")
    try:
        ds.MindDataset(str(path), columns_list=columns[:1], shuffle=False).get_dataset_size()
    except RuntimeError as error:
        raise wrap_foreign_error(path, "MindRecord", RuntimeError(_mindspore_detail(error)), fix) from None
    return ds.MindDataset(str(path), columns_list=columns, **options)


def read_split(config: Any, for_training: bool) -> tuple[list[ImageRecord], ConversionReport]:
    """The split's records as its reader gives them to the MindRecord writer, and what the reader counted.

    For work that needs the annotations but no MindRecord (a dataset check, a ground truth for
    results computed elsewhere). The writer's own image check (decode, header size) is not run.
    """
    source = data_source(config, for_training)
    source.check(config)
    report = ConversionReport()
    return source.read(config.classes, report), report


def ground_truth_json(config: Any, as_given: bool = False, convert: bool = True) -> Path:
    """The COCO-format ground truth evaluation scores: built from the same reading as the eval MindRecord
    (so image ids agree, and boxes the conversion dropped or clipped are dropped or clipped there too;
    see `annotations.evaluation_ground_truth`). `as_given` (COCO only) returns the instances json
    itself without converting anything, for a file-name -> image id lookup.

    `convert=False` is for results computed outside this pipeline (postprocess.py: the C++ runner
    read the image files themselves, possibly on another machine): a finished eval conversion's
    ground truth when there is one, else the reader's cleaning alone (bad numbers, boxes outside the
    image, duplicates), without converting or decoding any image."""
    source = data_source(config, for_training=False)
    if source.kind == "coco" and as_given:
        source.check(config)
        return source.annotations
    if not convert and find_complete_mindrecord(mindrecord_folder(config), EVAL_PREFIX,
                                                source.fingerprint(config.classes)) is None:
        records, report = read_split(config, for_training=False)
        path = mindrecord_folder(config) / OFFLINE_GROUND_TRUTH_JSON
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(evaluation_ground_truth(source.kind, source.annotations, records, config.classes, report),
                          path)
        return path
    ensure_mindrecord(config, for_training=False)
    path = mindrecord_folder(config) / GROUND_TRUTH_JSON
    if not path.is_file():
        source.check(config)
        report = ConversionReport()
        records = source.read(config.classes, report)
        for record in records:  # the writer's check again (rare: the json was deleted), so the same images are out
            check_image_bytes(record, checked_image_bytes(record.image_path), report)
        write_json_atomic(evaluation_ground_truth(source.kind, source.annotations, records, config.classes, report),
                          path)
    return path


def check_split_data(config: Any, for_training: bool) -> None:
    """Raise now the error that converting the split (or, for evaluation, reading its ground truth) would
    raise later: FileNotFoundError naming the missing path and its keys, or ValueError for a text dataset
    without an annotation list. Only looks at paths, so a training run can call it before any work.

    Missing source data is fine when a complete conversion stands in for it (as in `ensure_mindrecord`),
    except that COCO evaluation always reads its instances json, and VOC/txt evaluation then needs the
    ground truth written beside the eval MindRecord.
    """
    source = data_source(config, for_training)
    try:
        source.check(config)
    except FileNotFoundError:
        out_dir = mindrecord_folder(config)
        prefix = TRAIN_PREFIX if for_training else EVAL_PREFIX
        converted = _stand_in_conversion(out_dir, prefix, source, config.classes)[0] is not None
        has_ground_truth = for_training or (source.kind != "coco" and (out_dir / GROUND_TRUTH_JSON).is_file())
        if not (converted and has_ground_truth):
            raise
