"""Cached MindRecord data is trusted only while it matches what it was built from (issue 14, part 2).

Every test converts a small real demo set, changes one thing (an annotation byte, an image's mtime or
content, a config key, a shard) and checks that the next run rebuilds with one log line saying why,
or refuses a damaged shard with one line naming it, and that a change that does not shape the
records (img_shape) does not rebuild.
"""
import json
import os
import shutil
import time
from pathlib import Path

import mindspore.dataset as ds
import numpy as np
import pytest

from src.data.demo_data import DEMO_CLASSES, generate_demo_dataset
from src.data.mindrecord import (EVAL_PREFIX, MARKER_VERSION, TRAIN_PREFIX, conversion_status, ensure_mindrecord,
                                 open_mindrecord, wait_for_mindrecord)
from src.model_utils.config import load_config
from src.model_utils.errors import InputFileError, SSDError

CONFIG = "config/ssd300_config_cpu.yaml"
REBUILD = "converting again: "


@pytest.fixture()
def demo(tmp_path) -> Path:
    """6 train / 2 val images in COCO, VOC and txt layouts under tmp_path/demo (a fresh copy per test)."""
    return generate_demo_dataset(tmp_path / "demo", 6, 2, image_size=64, layouts=("coco", "voc", "txt"))


def _config(data_path: Path, **overrides):
    values = {"data_path": str(data_path), "mindrecord_dir": "mr", "coco_root": "demo",
              "classes": list(DEMO_CLASSES), "num_classes": 5}
    return load_config(CONFIG, overrides={**values, **overrides})


def _marker(config, prefix: str = TRAIN_PREFIX) -> Path:
    return Path(config.data_path) / config.mindrecord_dir / f"{prefix}.done"


def _rebuilds(lines: list[str]) -> list[str]:
    return [line.split(REBUILD, 1)[1] for line in lines if REBUILD in line]


def _images_by_id(path: Path) -> dict[int, bytes]:
    data = ds.MindDataset(str(path), columns_list=["img_id", "image"], shuffle=False)
    return {int(row["img_id"][0]): row["image"].tobytes()
            for row in data.create_dict_iterator(output_numpy=True, num_epochs=1)}


def _convert_then_reuse(config, ssd_log, for_training: bool = True) -> Path:
    """Convert, check a second call reuses it silently, and leave the log empty for the test's change."""
    path = ensure_mindrecord(config, for_training)
    stamp = _marker(config, TRAIN_PREFIX if for_training else EVAL_PREFIX).stat().st_mtime_ns
    assert ensure_mindrecord(config, for_training) == path
    assert _marker(config, TRAIN_PREFIX if for_training else EVAL_PREFIX).stat().st_mtime_ns == stamp
    assert not _rebuilds(ssd_log)
    ssd_log.clear()
    return path


def _edit_keeping_size(path: Path, old: bytes, new: bytes) -> None:
    """Replace the first `old` by a same-length `new`, keeping the file's size (and its validity)."""
    assert len(old) == len(new)
    content = path.read_bytes()
    assert old in content
    size = path.stat().st_size
    path.write_bytes(content.replace(old, new, 1))
    assert path.stat().st_size == size


def test_marker_records_content_fingerprint_and_shard_sizes(demo, tmp_path, ssd_log):
    config = _config(tmp_path)
    path = ensure_mindrecord(config, for_training=True)
    info = json.loads(_marker(config).read_text())
    assert info["version"] == MARKER_VERSION
    assert len(info["source"]["annotation_sha256"]) == 64 and info["source"]["classes"] == list(DEMO_CLASSES)
    assert info["files"] == {name: (path.parent / name).stat().st_size for name in info["files"]}
    assert set(info["shards"]) <= set(info["files"]) and any(name.endswith(".db") for name in info["files"])
    stamps = {name: (size, mtime) for name, size, mtime in info["images"]["files"]}
    assert len(stamps) == 6
    image = demo / "train2017" / "000001.jpg"
    assert stamps[str(image.relative_to(info["images"]["root"]))] == (image.stat().st_size,
                                                                       image.stat().st_mtime_ns)


def test_an_annotation_edit_that_keeps_the_file_size_rebuilds(demo, tmp_path, ssd_log):
    config = _config(tmp_path)
    _convert_then_reuse(config, ssd_log)
    anno = demo / "annotations" / "instances_train2017.json"
    data = json.loads(anno.read_text())
    first = data["annotations"][0]
    old_x = int(first["bbox"][0])
    new_x = old_x + 1 if old_x % 10 != 9 else old_x - 1  # same number of digits, so the same file size
    _edit_keeping_size(anno, f'"bbox": [{old_x}'.encode(), f'"bbox": [{new_x}'.encode())
    assert json.loads(anno.read_text())["annotations"][0]["bbox"][0] == new_x
    path = ensure_mindrecord(config, for_training=True)
    assert _rebuilds(ssd_log) == ["annotations changed (sha256 differs)"]
    assert json.loads(_marker(config).read_text())["source"]["annotation_sha256"] != ""
    ssd_log.clear()
    assert ensure_mindrecord(config, for_training=True) == path and not _rebuilds(ssd_log)


def test_a_voc_xml_edit_that_keeps_the_size_rebuilds(demo, tmp_path, ssd_log):
    config = _config(tmp_path, dataset="voc", voc_root=str(demo / "voc"))
    _convert_then_reuse(config, ssd_log, for_training=False)
    xml = sorted((demo / "voc" / "eval").rglob("*.xml"))[0]
    text = xml.read_bytes()
    start = text.index(b"<xmin>") + len(b"<xmin>")
    digit = text[start:start + 1]
    _edit_keeping_size(xml, b"<xmin>" + digit, b"<xmin>" + (b"2" if digit != b"2" else b"3"))
    ensure_mindrecord(config, for_training=False)
    assert _rebuilds(ssd_log) == ["annotations changed (sha256 differs)"]


def test_a_touched_or_replaced_image_rebuilds(demo, tmp_path, ssd_log):
    config = _config(tmp_path)
    _convert_then_reuse(config, ssd_log)
    touched = demo / "train2017" / "000002.jpg"
    status = touched.stat()
    os.utime(touched, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))
    ensure_mindrecord(config, for_training=True)
    assert _rebuilds(ssd_log) == ["1 image(s) changed since the conversion (size or mtime), e.g. 000002.jpg"]
    ssd_log.clear()
    replaced = demo / "train2017" / "000003.jpg"
    new_bytes = (demo / "train2017" / "000004.jpg").read_bytes()
    replaced.write_bytes(new_bytes)
    path = ensure_mindrecord(config, for_training=True)
    assert len(_rebuilds(ssd_log)) == 1 and "e.g. 000003.jpg" in _rebuilds(ssd_log)[0]
    assert _images_by_id(path)[3] == new_bytes


def test_a_fixed_image_the_txt_reader_skipped_rebuilds(tmp_path, ssd_log):
    """The txt reader makes no record for an unreadable image, yet fixing it must rebuild."""
    demo = generate_demo_dataset(tmp_path / "demo", 6, 2, image_size=64, layouts=("txt",), inject_errors=True)
    config = _config(tmp_path, dataset="other", image_dir="demo/txt", anno_path="demo/txt/train.txt")
    path = _convert_then_reuse(config, ssd_log)
    names = [line.split()[0] for line in (demo / "txt" / "train.txt").read_text().splitlines() if line.strip()]
    corrupt = next(demo / "txt" / name for name in names if not (demo / "txt" / name).read_bytes().startswith(b"\xff"))
    assert len(_images_by_id(path)) == 6
    shutil.copyfile(demo / "txt" / names[0], corrupt)
    path = ensure_mindrecord(config, for_training=True)
    assert len(_rebuilds(ssd_log)) == 1 and "1 image(s) changed" in _rebuilds(ssd_log)[0]
    assert len(_images_by_id(path)) == 7


def test_config_keys_that_shape_records_rebuild_and_others_do_not(demo, tmp_path, ssd_log):
    config = _config(tmp_path)
    path = _convert_then_reuse(config, ssd_log)
    stamp = _marker(config).stat().st_mtime_ns
    assert ensure_mindrecord(_config(tmp_path, img_shape=[320, 320]), for_training=True) == path
    assert _marker(config).stat().st_mtime_ns == stamp and not _rebuilds(ssd_log)
    reordered = ["background", "square", "circle", "triangle", "plus"]  # labels 1 and 2 swap (a rename is an error)
    ensure_mindrecord(_config(tmp_path, classes=reordered), for_training=True)
    assert _rebuilds(ssd_log) == ["config key classes changed"]
    ssd_log.clear()
    ensure_mindrecord(_config(tmp_path, dataset="other", image_dir="demo/txt", anno_path="demo/txt/train.txt"),
                      for_training=True)
    assert _rebuilds(ssd_log) == ["config key dataset changed (coco -> other)"]


def _truncate_half(path: Path) -> tuple[int, int]:
    size = path.stat().st_size
    os.truncate(path, size // 2)
    return size // 2, size


def test_a_truncated_shard_is_named_and_rebuilt(demo, tmp_path, ssd_log):
    config = _config(tmp_path)
    path = _convert_then_reuse(config, ssd_log)
    shard = path.with_name(f"{TRAIN_PREFIX}1")
    now, expected = _truncate_half(shard)
    message = f"shard {shard} is {now} bytes, expected {expected} (truncated or damaged)"
    with pytest.raises(SSDError, match="delete the folder") as caught:  # what the training pipeline opens
        open_mindrecord(path, ["img_id", "image", "annotation"], shuffle=True)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    with pytest.raises(TimeoutError, match="truncated or damaged"):  # another rank does not take it
        wait_for_mindrecord(config, for_training=True, timeout=0.2, poll_seconds=0.1)
    rebuilt = ensure_mindrecord(config, for_training=True)
    assert _rebuilds(ssd_log) == [message]
    assert shard.stat().st_size == expected and sorted(_images_by_id(rebuilt)) == list(range(1, 7))
    open_mindrecord(rebuilt, ["img_id"])


def test_a_truncated_shard_without_its_source_is_not_used(demo, tmp_path, ssd_log):
    config = _config(tmp_path)
    path = _convert_then_reuse(config, ssd_log)
    _truncate_half(path)
    shutil.rmtree(demo)
    with pytest.raises(FileNotFoundError, match="coco_root='demo'"):
        ensure_mindrecord(config, for_training=True)
    assert any("no usable conversion either: shard" in line for line in ssd_log), ssd_log


def test_a_conversion_of_another_source_never_stands_in_for_missing_data(demo, tmp_path, ssd_log):
    """A mistyped coco_root next to an older conversion of other data must not train on that data."""
    config = _config(tmp_path)
    path = ensure_mindrecord(config, for_training=True)
    mistyped = _config(tmp_path, coco_root="demo_typo")
    with pytest.raises(FileNotFoundError, match="coco_root='demo_typo'"):
        ensure_mindrecord(mistyped, for_training=True)
    assert any("no usable conversion either: it was built from another source (annotation path changed" in line
               for line in ssd_log), ssd_log
    shutil.rmtree(demo)  # the same source, deleted after its conversion: the conversion still stands in for it
    assert ensure_mindrecord(config, for_training=True) == path


def test_a_damaged_shard_header_of_the_same_size_is_named_at_open(demo, tmp_path):
    """MindSpore refuses a header it cannot parse; the error names the shard and says how to rebuild.
    (Damage in the data pages is not detectable without hashing every shard: MindRecord has no checksum.)"""
    config = _config(tmp_path)
    path = ensure_mindrecord(config, for_training=True)
    shard = path.with_name(f"{TRAIN_PREFIX}1")
    size = shard.stat().st_size
    with open(shard, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff" * 64)
    assert shard.stat().st_size == size
    with pytest.raises(InputFileError) as caught:
        open_mindrecord(path, ["img_id", "image", "annotation"])
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot read it as MindRecord (")
    assert str(shard) in message and "failed to parse header" in message and "delete the folder" in message
    assert "\n" not in message


def test_a_marker_from_the_older_format_rebuilds_with_a_line(demo, tmp_path, ssd_log):
    config = _config(tmp_path)
    path = _convert_then_reuse(config, ssd_log)
    marker = _marker(config)
    info = json.loads(marker.read_text())
    old_source = {key: value for key, value in info["source"].items() if key != "annotation_sha256"}
    old = {"prefix": info["prefix"], "shards": info["shards"], "files": sorted(info["files"]),
           "for_training": True, "counts": info["counts"], "problems": info["problems"],
           "source": {**old_source, "annotation_bytes": 1234}, "seconds": 0.1}
    marker.write_text(json.dumps(old))
    assert conversion_status(marker.parent, TRAIN_PREFIX) == (path, "")  # without a source to compare: as before
    ensure_mindrecord(config, for_training=True)
    assert len(_rebuilds(ssd_log)) == 1
    assert "is from an older version of this code (marker version 1" in _rebuilds(ssd_log)[0]
    assert json.loads(marker.read_text())["version"] == MARKER_VERSION


def test_fingerprint_check_is_cheap(demo, tmp_path):
    """Reuse costs a hash of the annotations and a stat per image: far below a second here."""
    config = _config(tmp_path)
    path = ensure_mindrecord(config, for_training=True)
    started = time.perf_counter()
    for _ in range(5):
        assert ensure_mindrecord(config, for_training=True) == path
    assert (time.perf_counter() - started) / 5 < 0.5
    np.testing.assert_array_equal(sorted(_images_by_id(path)), np.arange(1, 7))
