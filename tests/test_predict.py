"""predict.py / run_predict.sh on the demo run's checkpoint and its exports; the drawing on synthetic images.

The inputs are 3 demo validation JPEGs as they are, a 4th one resized to 400x240 and saved as PNG
(a non-square size, and a file the annotation json does not list), a truncated JPEG and a text file.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from src.data.coco_reader import load_coco_quietly
from src.deploy.drawing import class_colour, draw_detections, label_origin, text_colour
from src.deploy.predict import (DEFAULT_DRAW_THRESHOLD, Detector, FilePredictor, PredictError, UnreadableImageError,
                                above, eval_preprocessor, list_input_files, load_detector, one_label_per_object,
                                output_image_path, prediction_options, read_image)
from src.eval.postprocess import Detections
from src.model_utils.config import load_config
from tests.conftest import DEMO_CONFIG, EPOCHS, PROJECT_ROOT, STEPS_PER_EPOCH, run_script

SCRIPT = PROJECT_ROOT / "scripts" / "run_predict.sh"
VAL_NAMES = ("000001.jpg", "000002.jpg", "000003.jpg")
WIDE_SIZE = (400, 240)  # (width, height)
RECORD_KEYS = {"image_id", "file_name", "category_id", "category_name", "bbox", "score"}
MAX_BOXES = 3  # the main run's --max_boxes: few enough boxes that part of each image stays undrawn


def demo_config(demo_root: Path, **overrides):
    return load_config(DEMO_CONFIG, {"data_path": str(demo_root), "coco_root": "coco", "mindrecord_dir": "MindRecord",
                                     "feature_extractor_base_param": "", "freeze_layer": "None", **overrides})


def predict(demo_root: Path, model: Path, inputs: list[str], output: Path, *extra: str) -> subprocess.CompletedProcess:
    done = run_script("predict.py", "--config_path", str(DEMO_CONFIG), "--data_path", str(demo_root), "--coco_root",
                      "coco", "--output_path", str(output), "--model", str(model), "--input", *inputs,
                      "--output_dir", str(output), *extra)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def load_records(output: Path) -> list[dict]:
    return json.loads((output / "detections.json").read_text())


def assert_same_detections(got: list[dict], want: list[dict], box_tol: float, score_tol: float) -> None:
    """Every wanted detection has its own close match (same image, file and category) among the got ones."""
    assert len(got) == len(want)
    unmatched = list(got)
    for record in want:
        match = next((other for other in unmatched
                      if (other["image_id"], other["file_name"], other["category_id"])
                      == (record["image_id"], record["file_name"], record["category_id"])
                      and np.abs(np.subtract(other["bbox"], record["bbox"])).max() <= box_tol
                      and abs(other["score"] - record["score"]) <= score_tol), None)
        assert match is not None, f"no match for {record}"
        unmatched.remove(match)


@pytest.fixture(scope="module", autouse=True)
def graph_mode():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)


@pytest.fixture(scope="module")
def inputs(demo_root, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("predict_inputs")
    val = demo_root / "coco" / "val2017"
    for name in VAL_NAMES:
        shutil.copy(val / name, folder / name)
    Image.open(val / "000004.jpg").resize(WIDE_SIZE, Image.BILINEAR).save(folder / "wide.png")
    (folder / "broken.jpg").write_bytes((val / "000005.jpg").read_bytes()[:2000])
    (folder / "notes.txt").write_text("not an image\n")
    return folder


@pytest.fixture(scope="module")
def checkpoint(trained_run) -> Path:
    return trained_run / "ckpt_0" / f"ssd-{EPOCHS}_{STEPS_PER_EPOCH}.ckpt"


@pytest.fixture(scope="module")
def predicted(demo_root, checkpoint, inputs, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """run_predict.sh over the inputs folder with the checkpoint, the config's thresholds and MAX_BOXES."""
    output = tmp_path_factory.mktemp("predicted")
    done = subprocess.run(["bash", str(SCRIPT), str(DEMO_CONFIG), str(checkpoint), str(inputs), str(output),
                           "--data_path", str(demo_root), "--coco_root", "coco", "--max_boxes", str(MAX_BOXES)],
                          capture_output=True, text=True, timeout=600, cwd=output)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return output, done


# ---- end to end with the checkpoint ---------------------------------------------------------------

@pytest.mark.slow
def test_every_image_is_drawn_at_its_size_and_listed_in_the_coco_json(predicted, inputs, demo_root):
    output, _ = predicted
    drawn = sorted(p.name for p in output.iterdir() if p.suffix in (".jpg", ".png"))
    assert drawn == [*VAL_NAMES, "wide.png"]
    for name in drawn:
        assert Image.open(output / name).size == Image.open(inputs / name).size
    records = load_records(output)
    assert records and all(set(r) == RECORD_KEYS for r in records)
    assert max(Counter(r["file_name"] for r in records).values()) <= MAX_BOXES
    coco = load_coco_quietly(demo_root / "coco" / "annotations" / "instances_val2017.json")
    coco_ids = {img["file_name"]: img["id"] for img in coco.dataset["images"]}
    ids = {Path(r["file_name"]).name: r["image_id"] for r in records}
    assert {name: ids[name] for name in VAL_NAMES if name in ids} == \
        {name: coco_ids[name] for name in VAL_NAMES if name in ids}
    assert ids.get("wide.png", max(coco_ids.values()) + 1) == max(coco_ids.values()) + 1
    assert {r["category_id"] for r in records} <= set(coco.cats)
    for record in records:
        width, height = Image.open(record["file_name"]).size
        x, y, w, h = record["bbox"]
        assert 0 <= x and 0 <= y and w >= 0 and h >= 0 and x + w <= width + 0.01 and y + h <= height + 0.01
        assert record["score"] > 0.1  # the config's min_score
        assert coco.cats[record["category_id"]]["name"] == record["category_name"]


@pytest.mark.slow
def test_detections_are_those_eval_computes(predicted, checkpoint, demo_root, inputs):
    """Same weights through eval's dataset pipeline and post-processing: the same detections for the files."""
    from src.data.dataset import create_ssd_dataset
    from src.data.mindrecord import ensure_mindrecord, ground_truth_json
    from src.eval.coco import category_ids_by_name
    from src.eval.postprocess import postprocess_with_config
    from src.eval.validation import predictor
    from src.models.registry import inference_network
    from src.weights.checkpoint import load_network_weights

    config = demo_config(demo_root, max_boxes=MAX_BOXES)
    infer_net = inference_network(config)
    load_network_weights(checkpoint, infer_net)
    infer_net.set_train(False)
    coco = load_coco_quietly(ground_truth_json(config))
    category_ids = category_ids_by_name(coco, config.classes)
    output, _ = predicted
    wanted_ids = {coco.imgs[i]["file_name"]: i for i in coco.imgs if coco.imgs[i]["file_name"] in VAL_NAMES}
    expected = []
    dataset = create_ssd_dataset(ensure_mindrecord(config, for_training=False), config, 8, is_training=False)
    for batch in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):
        boxes, scores = predictor(infer_net)(batch["image"])
        for img_id, shape, image_boxes, image_scores in zip(batch["img_id"], batch["image_shape"], boxes, scores):
            name = coco.imgs[int(img_id[0])]["file_name"]
            if name not in wanted_ids:
                continue
            found = postprocess_with_config(image_boxes, image_scores, tuple(int(v) for v in shape), config)
            for (x1, y1, x2, y2), score, label in zip(found.boxes_xyxy.tolist(), found.scores.tolist(),
                                                      found.labels.tolist()):
                expected.append({"image_id": wanted_ids[name], "file_name": str(inputs / name), "bbox":
                                 [x1, y1, x2 - x1, y2 - y1], "score": score, "category_id": int(category_ids[label])})
    got = [r for r in load_records(output) if Path(r["file_name"]).name in VAL_NAMES]
    assert expected
    assert_same_detections(got, expected, box_tol=0.02, score_tol=1e-4)


def test_boxes_are_drawn_on_the_image_and_nowhere_else(predicted, inputs):
    output, _ = predicted
    records = load_records(output)
    for name in [*VAL_NAMES, "wide.png"]:
        before = np.asarray(Image.open(inputs / name).convert("RGB"), dtype=np.int16)
        after = np.asarray(Image.open(output / name).convert("RGB"), dtype=np.int16)
        change = np.abs(after - before).max(axis=2)
        mine = [r for r in records if Path(r["file_name"]).name == name and r["score"] > DEFAULT_DRAW_THRESHOLD]
        near_boxes = np.zeros(change.shape, dtype=bool)
        outline = np.zeros(change.shape, dtype=bool)
        for record in mine:
            x, y, w, h = (int(round(v)) for v in record["bbox"])
            near_boxes[max(y - 25, 0):y + h + 4, max(x - 4, 0):x + max(w, 120) + 4] = True  # box, label above or in
            outline[y:y + h, max(x, 0):max(x, 0) + 2] = True  # the left edge (never under the box's own label)
        if mine:
            assert change[outline].mean() > 40, name
        assert (~near_boxes).any() and change[~near_boxes].mean() < 3, name  # JPEG re-encoding noise only


def test_non_images_and_unreadable_images_are_reported_and_skipped(predicted, inputs):
    output, done = predicted
    assert f"skipped {inputs / 'broken.jpg'}: cannot be decoded" in done.stdout
    assert f"skipped {inputs / 'notes.txt'}: not an image file" in done.stdout
    assert "predicted 4 images" in done.stdout and "skipped 1 non-image and 1 unreadable files" in done.stdout
    assert {Path(r["file_name"]).name for r in load_records(output)} <= {*VAL_NAMES, "wide.png"}
    assert (output / "log" / "predict_rank0.log").is_file()


@pytest.mark.slow
def test_class_filter_and_score_threshold(demo_root, checkpoint, inputs, tmp_path):
    """Uncut reference run, then one class above a score: exactly the reference's detections of that class
    above that score (filtered classes cannot suppress or crowd out the kept one)."""
    no_cut = ("--max_boxes", "2000")
    predict(demo_root, checkpoint, [str(inputs)], tmp_path / "all", *no_cut)
    reference = load_records(tmp_path / "all")
    names = [r["category_name"] for r in reference]
    kept = max(set(names), key=names.count)
    # halfway between two neighbouring scores near the median: the json's scores are rounded to 1e-5, so a
    # threshold equal to one of them could fall on either side of the exact score the run compares
    distinct = sorted({r["score"] for r in reference if r["category_name"] == kept})
    threshold = (distinct[len(distinct) // 2 - 1] + distinct[len(distinct) // 2]) / 2
    predict(demo_root, checkpoint, [str(inputs)], tmp_path / "some", *no_cut, "--classes", kept,
            "--score_threshold", f"{threshold}")
    expected = [r for r in reference if r["category_name"] == kept and r["score"] > threshold]
    assert 0 < len(expected) < len(reference)
    assert load_records(tmp_path / "some") == expected


@pytest.mark.slow
@pytest.mark.parametrize("file_format", ["ONNX", "MINDIR"])
def test_exported_models_give_the_checkpoint_detections(file_format, predicted, demo_root, checkpoint, inputs,
                                                        tmp_path):
    from src.deploy.export import export_inference_model

    model = export_inference_model(demo_config(demo_root), checkpoint, file_format, 3, tmp_path / "ssd")
    # 4 images at batch 3: one padded batch
    predict(demo_root, model, [str(inputs / "*")], tmp_path / "out", "--max_boxes", str(MAX_BOXES))
    output, _ = predicted
    assert_same_detections(load_records(tmp_path / "out"), load_records(output), box_tol=0.02, score_tol=1e-4)
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix in (".jpg", ".png")) == \
        [*VAL_NAMES, "wide.png"]


@pytest.mark.slow
def test_a_run_without_any_readable_image_fails(demo_root, checkpoint, inputs, tmp_path):
    done = run_script("predict.py", "--config_path", str(DEMO_CONFIG), "--data_path", str(demo_root),
                      "--output_path", str(tmp_path), "--model", str(checkpoint),
                      "--input", str(inputs / "notes.txt"), str(inputs / "broken.jpg"))
    assert done.returncode == 1
    assert "predicted 0 images" in done.stdout and "skipped 1 non-image and 1 unreadable files" in done.stdout
    assert load_records(tmp_path / "predict") == []


def test_command_line_mistakes_fail_with_the_fix(demo_root, tmp_path):
    missing = run_script("predict.py", "--config_path", str(DEMO_CONFIG), "--input", "x.jpg")
    assert missing.returncode == 2 and "--model and --input are required" in missing.stderr
    wrong_class = run_script("predict.py", "--config_path", str(DEMO_CONFIG), "--output_path", str(tmp_path),
                             "--model", "m.ckpt", "--input", str(DEMO_CONFIG), "--classes", "circle,hexagon")
    assert wrong_class.returncode != 0
    assert "--classes: ['hexagon'] not among the config's classes" in wrong_class.stderr
    run_dir = tmp_path / "script"
    run_dir.mkdir()
    for count in (0, 2, 5):
        done = subprocess.run(["bash", str(SCRIPT), *[f"arg{i}" for i in range(count)]], capture_output=True,
                              text=True, cwd=run_dir)
        assert done.returncode == 2 and done.stderr.startswith("Usage: bash scripts/run_predict.sh")
    assert not list(run_dir.iterdir()), "nothing may be created before the arguments are checked"


# ---- units ----------------------------------------------------------------------------------------

def test_inputs_from_files_folders_and_globs(tmp_path):
    for name in ("b.jpg", "a.png", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.jpg").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    assert list_input_files([str(tmp_path)]) == [tmp_path / n for n in ("a.png", "b.jpg", "c.txt")]
    assert list_input_files([str(tmp_path / "*.jpg"), str(tmp_path / "b.jpg"), str(tmp_path / "**" / "d.jpg")]) \
        == [tmp_path / "b.jpg", tmp_path / "sub" / "d.jpg"]
    with pytest.raises(PredictError, match="no file matches it as a glob pattern"):
        list_input_files([str(tmp_path / "*.bmp")])
    with pytest.raises(PredictError, match="the folder has no files"):
        list_input_files([str(tmp_path / "empty")])


def test_options_and_model_types_are_checked(demo_root, tmp_path):
    config = demo_config(demo_root)
    options = prediction_options(config, None, None, None)
    assert (options.min_score, options.nms_threshold, options.max_boxes, options.kept_classes,
            options.draw_threshold) == (0.1, 0.6, 100, None, DEFAULT_DRAW_THRESHOLD)
    options = prediction_options(config, 0.5, 7, ["plus", "circle"], 0.8)
    assert (options.min_score, options.max_boxes, options.kept_classes, options.draw_threshold) == (0.5, 7, (1, 4), 0.8)
    found = Detections(np.arange(12, dtype=np.float32).reshape(3, 4), np.array([0.9, 0.3, 0.31], np.float32),
                       np.array([2, 1, 3]))
    drawn = above(found, 0.3)
    assert drawn.labels.tolist() == [2, 3] and drawn.boxes_xyxy.tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]]
    with pytest.raises(PredictError, match="unknown model type '.pt'"):
        load_detector(tmp_path / "model.pt", config, 1)
    with pytest.raises(PredictError, match="model.onnx not found"):
        load_detector(tmp_path / "model.onnx", config, 1)
    taken: set[str] = set()
    assert [output_image_path(tmp_path, Path(p), taken).name for p in ("a/x.jpg", "b/x.jpg", "x.bmp", "y.JPEG")] \
        == ["x.jpg", "x_1.jpg", "x.png", "y.JPEG"]


def constant_detector(num_boxes: int, num_classes: int) -> Detector:
    """A stand-in model without detections (all scores 0), for tests of reading and writing files."""
    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.zeros((len(images), num_boxes, 4), np.float32),
                np.zeros((len(images), num_boxes, num_classes), np.float32))

    return Detector(predict, 2, "constant")


def test_corrupt_images_in_a_folder_are_skipped_without_files_in_the_cwd(demo_root, tmp_path, monkeypatch, caplog):
    """MindSpore's Decode wrote every file it failed on to ./abnormal_image.jpg; the cv2 decoder reports and
    skips it, leaving the working directory alone."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    folder = tmp_path / "photos"
    folder.mkdir()
    val = demo_root / "coco" / "val2017"
    shutil.copy(val / "000001.jpg", folder / "good.jpg")
    (folder / "corrupt.jpg").write_bytes((val / "000002.jpg").read_bytes()[:3000])
    (folder / "empty.png").write_bytes(b"")
    config = demo_config(demo_root)
    log = logging.getLogger("test_predict.corrupt")
    with caplog.at_level(logging.WARNING, logger=log.name):
        summary = FilePredictor(constant_detector(int(config.num_ssd_boxes), int(config.num_classes)), config,
                                prediction_options(config, None, None, None), tmp_path / "out", log
                                ).run(list_input_files([str(folder)]))
    assert summary.num_images == 1 and summary.unreadable == [folder / "corrupt.jpg", folder / "empty.png"]
    assert f"skipped {folder / 'corrupt.jpg'}: cannot be decoded (corrupt or truncated image)" in caplog.text
    assert f"skipped {folder / 'empty.png'}: the file is empty" in caplog.text
    assert list(cwd.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["detections.json", "good.jpg"]
    with pytest.raises(UnreadableImageError, match="cannot be decoded"):
        read_image(folder / "corrupt.jpg")
    assert list(cwd.iterdir()) == []


def test_model_outputs_that_do_not_fit_the_config_are_refused(demo_root, tmp_path):
    config = demo_config(demo_root)
    image = tmp_path / "in.jpg"
    shutil.copy(demo_root / "coco" / "val2017" / "000001.jpg", image)
    for num_boxes, num_classes, message in ((1916, 5, "returns 1916 boxes per image but the config's anchors give 1917"),
                                            (1917, 81, "scores 81 classes but the class list has 5 names")):
        predictor = FilePredictor(constant_detector(num_boxes, num_classes), config,
                                  prediction_options(config, None, None, None), tmp_path / "out",
                                  logging.getLogger("test_predict.shapes"))
        with pytest.raises(PredictError, match=f"ssd300 config: the .*{message}"):
            predictor.run([image])


def test_preprocessing_is_the_eval_pipeline(demo_root):
    from src.data.dataset import create_ssd_dataset
    from src.data.mindrecord import ensure_mindrecord, ground_truth_json

    config = demo_config(demo_root)
    coco = load_coco_quietly(ground_truth_json(config))
    dataset = create_ssd_dataset(ensure_mindrecord(config, for_training=False), config, 1, is_training=False)
    row = next(dataset.create_dict_iterator(output_numpy=True, num_epochs=1))
    path = demo_root / "coco" / "val2017" / coco.imgs[int(row["img_id"][0, 0])]["file_name"]
    image = read_image(path)
    assert list(image.shape[:2]) == row["image_shape"][0].tolist()
    np.testing.assert_array_equal(eval_preprocessor(config.img_shape)(image), row["image"][0])


# ---- drawing ---------------------------------------------------------------------------------------

CLASSES = ("background", "circle", "a rather long class name", "triangle")


def test_labels_stay_inside_the_image():
    height, width = 120, 200
    # no room above a box at the top border: the label goes just inside its top edge
    assert label_origin((0, 0, 50, 40), 60, 14, width, height) == (0, 0)
    # room above: the label sits on top of the box
    assert label_origin((30, 50, 80, 90), 60, 14, width, height) == (30, 36)
    # right border: moved left; bottom border with a tall label: moved up
    assert label_origin((190, 110, 200, 120), 80, 14, width, height) == (120, 96)
    assert label_origin((-5, 118, 10, 125), 30, 30, width, height) == (0, 88)


def test_a_label_never_covers_a_better_detections_label_when_there_is_another_place():
    width, height = 200, 120
    best = label_origin((30, 50, 80, 90), 60, 14, width, height)
    assert best == (30, 36)
    taken = [(30, 36, 90, 50)]
    # a neighbour 20 px to the right: above would cover the best label, so it goes just inside its top edge
    assert label_origin((50, 52, 100, 90), 60, 14, width, height, taken) == (50, 52)
    # also that one taken: below the box
    assert label_origin((50, 52, 100, 90), 60, 14, width, height, taken + [(50, 52, 110, 66)]) == (50, 90)
    # every place overlaps: the one that overlaps least (inside the bottom edge, 4 rows shared)
    crowded = taken + [(50, 52, 110, 66), (50, 90, 110, 104), (40, 70, 110, 80)]
    assert label_origin((50, 52, 100, 90), 60, 14, width, height, crowded) == (50, 76)


def test_drawing_on_a_synthetic_image():
    grey = np.full((120, 200, 3), 128, dtype=np.uint8)
    boxes = np.array([[0, 0, 60, 50], [150, 80, 200, 120]], dtype=np.float32)  # top-left and bottom-right corners
    drawn = draw_detections(grey, boxes, np.array([0.9, 0.75], np.float32), np.array([1, 2]), CLASSES)
    assert drawn.shape == grey.shape and drawn.dtype == np.uint8
    assert (grey == 128).all(), "the input must not be modified"
    changed = (drawn != 128).any(axis=2)
    assert not changed[90:, :140].any() and not changed[55:62].any(), "pixels away from boxes and labels changed"
    # each box's outline in its class colour
    assert (drawn[25, 0] == class_colour(1)).all() and (drawn[100, 199] == class_colour(2)).all()
    # first label: inside the box's top edge (no room above), filled with the class colour, with text in it
    label = drawn[0:12, 0:40]
    assert ((label == class_colour(1)).all(axis=2)).mean() > 0.4
    assert ((np.abs(label.astype(int) - text_colour(class_colour(1))).sum(axis=2) < 60)).any()
    # second label: wider than its box, moved left so that it ends at the right border, above the box
    rows = np.flatnonzero((drawn[:, :, :] == class_colour(2)).all(axis=2).sum(axis=1) > 60)
    assert rows.size and rows.max() < 80, "the label sits above the box"
    columns = np.flatnonzero((drawn[rows] == class_colour(2)).all(axis=2).any(axis=0))
    assert columns.max() == 199 and columns.min() < 150


def test_colours_are_distinct_and_text_contrasts():
    colours = [class_colour(label) for label in range(1, 81)]
    assert len(set(colours)) == 80
    assert all(0 <= channel <= 255 for colour in colours for channel in colour)
    assert text_colour((255, 225, 25)) == (0, 0, 0) and text_colour((0, 0, 128)) == (255, 255, 255)
    assert text_colour((60, 180, 75)) == (0, 0, 0) and text_colour((145, 30, 180)) == (255, 255, 255)


def test_nan_outputs_are_left_out_counted_and_the_rest_detected(demo_root, tmp_path):
    """A broken export's NaN rows neither crash the drawing nor reach detections.json; finite rows still count."""
    config = demo_config(demo_root)
    num_boxes, num_classes = int(config.num_ssd_boxes), int(config.num_classes)

    def predict(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes = np.tile(np.array([0.1, 0.1, 0.5, 0.5], np.float32), (len(images), num_boxes, 1))
        scores = np.zeros((len(images), num_boxes, num_classes), np.float32)
        scores[:, 0, 1] = 0.9  # one confident finite detection per image
        boxes[:, 1:4] = np.nan
        scores[:, 4, 2] = np.inf
        return boxes, scores

    image = tmp_path / "in.jpg"
    shutil.copy(demo_root / "coco" / "val2017" / "000001.jpg", image)
    summary = FilePredictor(Detector(predict, 2, "nan"), config, prediction_options(config, None, None, None),
                            tmp_path / "out", logging.getLogger("test_predict.nan")).run([image])
    assert (summary.num_images, summary.num_detections, summary.num_non_finite) == (1, 1, 4)
    assert "4 boxes with NaN/Inf outputs left out" in summary.line()
    detections = json.loads((tmp_path / "out" / "detections.json").read_text(),
                            parse_constant=lambda constant: pytest.fail(f"{constant} in the json"))
    assert [d["category_id"] for d in detections] == [1] and all(np.isfinite(d["bbox"]).all() for d in detections)


def test_a_drawing_shows_one_label_per_object():
    """Per-class NMS leaves a weak "triangle" on a strong "circle" (the demo drew both); the drawing keeps
    the circle only. Boxes of one class (already NMSed) and boxes of other classes elsewhere stay."""
    boxes = np.array([[10, 10, 60, 60],     # circle 0.79
                      [12, 11, 61, 58],     # triangle 0.33 on the same object: dropped
                      [30, 10, 80, 60],     # circle 0.5, IoU 0.43 with the first: same class, kept
                      [100, 100, 150, 150],  # square 0.35 elsewhere: kept
                      [102, 100, 150, 152]], np.float32)  # plus 0.36 on the square: kept (better), square dropped
    scores = np.array([0.79, 0.33, 0.5, 0.35, 0.36], np.float32)
    labels = np.array([1, 3, 1, 2, 4])
    drawn = one_label_per_object(Detections(boxes, scores, labels))
    assert drawn.scores.tolist() == pytest.approx([0.79, 0.5, 0.36])
    assert drawn.labels.tolist() == [1, 1, 4]
    np.testing.assert_array_equal(drawn.boxes_xyxy, boxes[[0, 2, 4]])
    empty = one_label_per_object(Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int)))
    assert len(empty.scores) == 0
