"""MindRecord conversion: real files written and read back with MindDataset, crash safety, config wiring."""
import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import mindspore.dataset as ds
import numpy as np
import pytest
from pycocotools.coco import COCO

from src.data.annotations import CORRUPT_IMAGE, ConversionReport
from src.data.coco_reader import read_coco
from src.data.txt_reader import read_txt
from src.data.demo_data import DEMO_CLASSES, generate_demo_dataset
from src.data.mindrecord import (EVAL_PREFIX, GROUND_TRUTH_JSON, PADDING_ROW, TRAIN_PREFIX, _conversion_lock,
                                 ensure_mindrecord, find_complete_mindrecord, ground_truth_json, strip_padding_rows,
                                 write_mindrecord)
from src.model_utils.config import load_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONFIG = "config/ssd300_config_cpu.yaml"
NUM_TRAIN = 12


@pytest.fixture(scope="module")
def broken_demo(tmp_path_factory) -> Path:
    """12 train / 3 val images, each split + a corrupt .jpg (id n+1) and an image without objects (n+2)."""
    return generate_demo_dataset(tmp_path_factory.mktemp("broken") / "demo", NUM_TRAIN, 3, image_size=64,
                                 min_size=10, max_size=30, layouts=("coco", "voc", "txt"), inject_errors=True)


def _config(data_path: Path, **overrides):
    values = {"data_path": str(data_path), "mindrecord_dir": "mr", "classes": list(DEMO_CLASSES), "num_classes": 5}
    return load_config(CONFIG, overrides={**values, **overrides})


def _read_back(path: Path) -> dict[int, tuple[bytes, np.ndarray]]:
    data = ds.MindDataset(str(path), columns_list=["img_id", "image", "annotation"], shuffle=False)
    rows = {}
    for row in data.create_dict_iterator(output_numpy=True, num_epochs=1):
        img_id = int(row["img_id"][0])
        assert img_id not in rows
        rows[img_id] = (row["image"].tobytes(), row["annotation"])
    return rows


def _expected_rows(record) -> np.ndarray:
    return np.concatenate([np.round(record.boxes), record.labels[:, None]], axis=1).astype(np.int32).reshape(-1, 5)


def _read_demo(root: Path, split: str = "train2017", classes=DEMO_CLASSES, report=None):
    return read_coco(root / "annotations" / f"instances_{split}.json", root / split, classes,
                     report if report is not None else ConversionReport())


def test_eval_round_trip_keeps_images_without_boxes_and_skips_corrupt_ones(broken_demo, tmp_path):
    report = ConversionReport()
    records = _read_demo(broken_demo, report=report)
    path = write_mindrecord(records, tmp_path, EVAL_PREFIX, 8, for_training=False, report=report)
    assert path == tmp_path / f"{EVAL_PREFIX}0"
    rows = _read_back(path)
    assert sorted(rows) == [r.img_id for r in records if r.img_id != NUM_TRAIN + 1]
    for record in records:
        if record.img_id in rows:
            image, annotation = rows[record.img_id]
            assert image == record.image_path.read_bytes()
            np.testing.assert_array_equal(strip_padding_rows(annotation), _expected_rows(record))
    empty = rows[NUM_TRAIN + 2][1]
    np.testing.assert_array_equal(empty, PADDING_ROW)
    assert strip_padding_rows(empty).shape == (0, 5)
    assert report.counts[CORRUPT_IMAGE] == 1 and report.examples[CORRUPT_IMAGE] == [f"{NUM_TRAIN + 1:06d}.jpg"]
    marker = json.loads((tmp_path / f"{EVAL_PREFIX}.done").read_text())
    assert marker["counts"] == {"images_read": NUM_TRAIN + 2, "images_written": NUM_TRAIN + 1,
                                "left_out_without_box": 0, "skipped_unreadable": 1}
    assert marker["shards"] == [f"{EVAL_PREFIX}{i}" for i in range(8)]
    assert sorted(marker["files"]) == sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(EVAL_PREFIX)
                                             and not p.name.endswith(".done"))
    per_shard = [ds.MindDataset([str(tmp_path / name)], columns_list=["img_id"]).get_dataset_size()
                 for name in marker["shards"]]
    assert sum(per_shard) == NUM_TRAIN + 1 and min(per_shard) >= 1


def test_training_set_leaves_out_images_without_boxes(broken_demo, tmp_path):
    path = write_mindrecord(_read_demo(broken_demo), tmp_path, TRAIN_PREFIX, 8, for_training=True,
                            report=ConversionReport())
    assert sorted(_read_back(path)) == list(range(1, NUM_TRAIN + 1))
    counts = json.loads((tmp_path / f"{TRAIN_PREFIX}.done").read_text())["counts"]
    assert counts["left_out_without_box"] == 1 and counts["skipped_unreadable"] == 1


def test_shard_count_never_exceeds_the_number_of_images(broken_demo, tmp_path):
    records = _read_demo(broken_demo)
    three = write_mindrecord(records[1:4], tmp_path / "three", TRAIN_PREFIX, 8, True, ConversionReport())
    shards = sorted(p.name for p in (tmp_path / "three").glob(f"{TRAIN_PREFIX}?"))
    assert shards == [f"{TRAIN_PREFIX}{i}" for i in range(3)]
    assert sorted(_read_back(three)) == [2, 3, 4]
    # 000013.jpg is corrupt: of 3 candidates 2 are written, into 2 shards (MindRecord warns about empty ones)
    report = ConversionReport()
    two = write_mindrecord(records[11:14], tmp_path / "two", EVAL_PREFIX, 8, False, report)
    assert json.loads((tmp_path / "two" / f"{EVAL_PREFIX}.done").read_text())["shards"] == [
        f"{EVAL_PREFIX}0", f"{EVAL_PREFIX}1"]
    assert sorted(_read_back(two)) == [12, 14] and report.counts[CORRUPT_IMAGE] == 1
    one = write_mindrecord(records[1:2], tmp_path / "one", TRAIN_PREFIX, 8, True, ConversionReport())
    assert one == tmp_path / "one" / TRAIN_PREFIX  # MindRecord names a single shard without a number
    assert find_complete_mindrecord(tmp_path / "one", TRAIN_PREFIX) == one
    assert sorted(_read_back(one)) == [2]


def test_only_a_complete_marker_makes_a_dataset_trusted(broken_demo, tmp_path):
    records = _read_demo(broken_demo)[:4]
    source = {"dataset": "coco", "classes": list(DEMO_CLASSES)}
    path = write_mindrecord(records, tmp_path, TRAIN_PREFIX, 2, True, ConversionReport(), source=source)
    assert find_complete_mindrecord(tmp_path, TRAIN_PREFIX) == path
    assert find_complete_mindrecord(tmp_path, TRAIN_PREFIX, source) == path
    assert find_complete_mindrecord(tmp_path, TRAIN_PREFIX, {**source, "classes": ["background"]}) is None
    (tmp_path / f"{TRAIN_PREFIX}1.db").unlink()
    assert find_complete_mindrecord(tmp_path, TRAIN_PREFIX) is None
    path = write_mindrecord(records, tmp_path, TRAIN_PREFIX, 2, True, ConversionReport())
    (tmp_path / f"{TRAIN_PREFIX}.done").unlink()
    assert path.is_file() and find_complete_mindrecord(tmp_path, TRAIN_PREFIX) is None


def test_rewrite_removes_untrusted_files_and_dead_partial_folders(broken_demo, tmp_path):
    (tmp_path / f"{TRAIN_PREFIX}0").write_bytes(b"half a shard")
    (tmp_path / f"{TRAIN_PREFIX}9.db").write_bytes(b"old index")
    dead = subprocess.Popen([sys.executable, "--version"], stdout=subprocess.DEVNULL)  # a pid that no longer runs
    dead.wait()
    stale = tmp_path / f".partial-{TRAIN_PREFIX}-{dead.pid}"
    stale.mkdir()
    (stale / f"{TRAIN_PREFIX}0").write_bytes(b"junk")
    path = write_mindrecord(_read_demo(broken_demo)[:3], tmp_path, TRAIN_PREFIX, 8, True, ConversionReport())
    assert not stale.exists() and not (tmp_path / f"{TRAIN_PREFIX}9.db").exists()
    assert sorted(_read_back(path)) == [1, 2, 3]
    busy = tmp_path / f".partial-{TRAIN_PREFIX}-{os.getppid()}"  # our parent process is alive
    busy.mkdir()
    with pytest.raises(RuntimeError, match="is being written by process"):
        write_mindrecord(_read_demo(broken_demo)[:3], tmp_path, TRAIN_PREFIX, 8, True, ConversionReport())


def test_ensure_mindrecord_converts_once_and_again_for_a_new_class_list(tmp_path):
    generate_demo_dataset(tmp_path / "demo", 10, 4, image_size=64)
    config = _config(tmp_path, coco_root="demo")
    path = ensure_mindrecord(config, for_training=True)
    marker = tmp_path / "mr" / f"{TRAIN_PREFIX}.done"
    stamp = marker.stat().st_mtime_ns
    assert ensure_mindrecord(config, for_training=True) == path and marker.stat().st_mtime_ns == stamp
    reordered = ["background", "plus", "triangle", "square", "circle"]
    path = ensure_mindrecord(_config(tmp_path, coco_root="demo", classes=reordered), for_training=True)
    assert marker.stat().st_mtime_ns != stamp
    rows = _read_back(path)
    for record in _read_demo(tmp_path / "demo", classes=reordered):
        np.testing.assert_array_equal(rows[record.img_id][1], _expected_rows(record))
    eval_path = ensure_mindrecord(config, for_training=False)
    assert eval_path == tmp_path / "mr" / f"{EVAL_PREFIX}0" and sorted(_read_back(eval_path)) == [1, 2, 3, 4]
    assert ground_truth_json(config, as_given=True) == tmp_path / "demo" / "annotations" / "instances_val2017.json"
    assert ground_truth_json(config) == tmp_path / "mr" / GROUND_TRUTH_JSON  # the cleaned one evaluation scores


def test_missing_sources_name_the_path_and_the_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere.*coco_root='nowhere'"):
        ensure_mindrecord(_config(tmp_path, coco_root="nowhere"), for_training=True)
    with pytest.raises(FileNotFoundError, match=r"VOC split folder .*no_voc/eval.*voc_root='no_voc'"):
        ensure_mindrecord(_config(tmp_path, dataset="voc", voc_root="no_voc"), for_training=False)
    with pytest.raises(ValueError, match="set config key anno_path"):
        ensure_mindrecord(_config(tmp_path, dataset="other"), for_training=True)


def test_existing_conversion_is_used_when_the_source_is_gone(tmp_path):
    generate_demo_dataset(tmp_path / "demo", 3, 1, image_size=64)
    config = _config(tmp_path, coco_root="demo")
    path = ensure_mindrecord(config, for_training=True)
    (tmp_path / "demo").rename(tmp_path / "moved")
    assert ensure_mindrecord(config, for_training=True) == path


def test_voc_and_txt_eval_sets_come_with_matching_ground_truth(broken_demo, tmp_path):
    voc = _config(broken_demo, dataset="voc", voc_root=str(broken_demo / "voc"), mindrecord_dir=str(tmp_path / "voc"))
    txt = _config(broken_demo, dataset="other", image_dir="txt", anno_path="txt/train.txt",
                  val_anno_path="txt/val.txt", mindrecord_dir=str(tmp_path / "txt"))
    for config, expected_ids in ((voc, [1, 2, 3, 5]), (txt, [0, 1, 2, 4])):  # val: 3 images, corrupt, empty
        rows = _read_back(ensure_mindrecord(config, for_training=False))
        gt_path = ground_truth_json(config)
        assert gt_path == Path(config.mindrecord_dir) / GROUND_TRUTH_JSON
        gt = COCO(str(gt_path))
        assert sorted(rows) == expected_ids
        assert set(rows) <= set(gt.getImgIds())
        assert gt.getAnnIds(imgIds=expected_ids[-1]) == []  # the image without objects stays for evaluation
        for img_id, (_, annotation) in rows.items():
            boxes = [a["bbox"] for a in gt.loadAnns(gt.getAnnIds(imgIds=img_id))]
            stored = strip_padding_rows(annotation)
            assert sorted(boxes) == sorted([float(x1), float(y1), float(x2 - x1), float(y2 - y1)]
                                           for y1, x1, y2, x2, _ in stored.tolist())
    gt_path = ground_truth_json(voc)
    content = gt_path.read_bytes()
    gt_path.unlink()
    assert ground_truth_json(voc) == gt_path and gt_path.read_bytes() == content
    train = _read_back(ensure_mindrecord(txt, for_training=True))
    records = read_txt(broken_demo / "txt" / "train.txt", broken_demo / "txt", DEMO_CLASSES, ConversionReport())
    assert sorted(train) == [r.img_id for r in records if len(r.labels)]


def test_conversion_reports_through_the_project_logger(tmp_path, ssd_log):
    generate_demo_dataset(tmp_path / "demo", 3, 1, image_size=64)
    ensure_mindrecord(_config(tmp_path, coco_root="demo"), for_training=True)

    assert any(line.startswith(f"{TRAIN_PREFIX}: wrote 3 images") for line in ssd_log), ssd_log


def test_a_second_caller_waits_for_the_running_conversion(tmp_path, ssd_log):
    """What ranks of a distributed run do: the conversion lock (held here as if by another process)
    makes a second caller wait, then reuse the finished conversion."""
    generate_demo_dataset(tmp_path / "demo", 3, 1, image_size=64)
    config = _config(tmp_path, coco_root="demo")
    (tmp_path / "mr").mkdir()
    results = []
    with _conversion_lock(tmp_path / "mr", TRAIN_PREFIX):
        waiter = threading.Thread(target=lambda: results.append(ensure_mindrecord(config, for_training=True)))
        waiter.start()
        deadline = time.monotonic() + 60
        while not any("waiting for another process" in line for line in list(ssd_log)):
            assert time.monotonic() < deadline and waiter.is_alive()
            time.sleep(0.02)
        assert not results and find_complete_mindrecord(tmp_path / "mr", TRAIN_PREFIX) is None
    waiter.join(timeout=120)
    assert results == [tmp_path / "mr" / f"{TRAIN_PREFIX}0"]


HELPER = """\
import json
import sys

sys.path.insert(0, sys.argv[1])
from src.model_utils.config import load_config
from src.data.mindrecord import ensure_mindrecord

ensure_mindrecord(load_config(sys.argv[2], overrides=json.loads(sys.argv[3])), for_training=True)
print("conversion finished")
"""


def _wait_for_reader(fifo: Path, process: subprocess.Popen, log: Path) -> int:
    """Block until the converter has opened the FIFO (it is then stuck mid-way); returns our write end."""
    deadline = time.monotonic() + 300
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            assert err.errno == errno.ENXIO, err  # ENXIO: nobody reads the FIFO yet
        assert process.poll() is None, f"converter exited early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"converter never reached the FIFO:\n{log.read_text()}"
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_conversion_is_not_trusted_and_is_rebuilt(tmp_path):
    """SIGKILL a converter mid-way; a named pipe standing in for image 150 of 300 holds it there (it
    blocks reading it) so the kill can never race the end of the conversion."""
    demo = generate_demo_dataset(tmp_path / "demo", 300, 1, image_size=32)
    overrides = {"data_path": str(tmp_path), "mindrecord_dir": "mr", "coco_root": "demo",
                 "classes": list(DEMO_CLASSES), "num_classes": 5}
    blocked = demo / "train2017" / "000150.jpg"
    original = blocked.read_bytes()
    blocked.unlink()
    os.mkfifo(blocked)
    (tmp_path / "helper.py").write_text(HELPER)
    log = tmp_path / "helper.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen([sys.executable, str(tmp_path / "helper.py"), str(PROJECT_ROOT), CONFIG,
                                    json.dumps(overrides)], stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        write_end = _wait_for_reader(blocked, process, log)
        partial = tmp_path / "mr" / f".partial-{TRAIN_PREFIX}-{process.pid}"
        assert any(partial.glob(f"{TRAIN_PREFIX}*")), "shards are written in the private folder"
    finally:
        process.kill()
        process.wait()
    os.close(write_end)
    assert "conversion finished" not in log.read_text()
    out_dir = tmp_path / "mr"
    assert find_complete_mindrecord(out_dir, TRAIN_PREFIX) is None
    assert not list(out_dir.glob(f"{TRAIN_PREFIX}*")) and partial.is_dir()

    blocked.unlink()
    blocked.write_bytes(original)
    path = ensure_mindrecord(load_config(CONFIG, overrides=overrides), for_training=True)
    assert find_complete_mindrecord(out_dir, TRAIN_PREFIX) == path and not partial.exists()
    rows = _read_back(path)
    records = [r for r in _read_demo(demo) if len(r.labels)]
    assert sorted(rows) == [r.img_id for r in records] and len(rows) > 290
    for record in records:
        np.testing.assert_array_equal(rows[record.img_id][1], _expected_rows(record))
    assert rows[150][0] == original


def test_coco128_eval_keeps_every_image_and_training_those_with_boxes(coco128_root, tmp_path):
    config = load_config(CONFIG, overrides={"data_path": str(tmp_path), "mindrecord_dir": "mr",
                                            "coco_root": str(coco128_root), "train_data_type": "train2017",
                                            "val_data_type": "train2017"})
    eval_rows = _read_back(ensure_mindrecord(config, for_training=False))
    assert len(eval_rows) == 128
    gt = COCO(str(ground_truth_json(config)))
    assert sorted(eval_rows) == sorted(gt.getImgIds())
    crowd_images = {a["image_id"] for a in gt.dataset["annotations"] if a["iscrowd"]}
    assert crowd_images <= set(eval_rows)  # unlike the seed (B9), images with crowd boxes stay
    train = ds.MindDataset(str(ensure_mindrecord(config, for_training=True)), columns_list=["img_id"])
    assert train.get_dataset_size() == 126
