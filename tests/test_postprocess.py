"""postprocess.py and eval_onnx.py against eval.py on the demo validation set, as users run them.

The reference is eval.py's printed COCO table for the checkpoint of the session's short training
run (conftest.py ``trained_run``): the same network's outputs written as the C++ runner writes them
(``<stem>_0.bin`` / ``<stem>_1.bin``) must give postprocess.py the same table, and the ONNX export
of that checkpoint (batch 3, so the last of the 16 images is a padded batch) must give eval_onnx.py
the same table; all three write that table as the same per-class CSV. Also: --save_detections, missing/truncated result files named (or tolerated with --missing_as_empty),
the seed's --drop subset, clear errors for a wrong model or provider, and the memory-bounded
COCOeval in category groups equal to one pass.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import mindspore as ms
import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from src.data.coco_reader import load_coco_quietly
from src.data.dataset import create_ssd_dataset
from src.data.mindrecord import ensure_mindrecord, ground_truth_json
from src.deploy.engines import OnnxModelError, create_session
from src.eval.coco import CATEGORIES_PER_PASS, coco_evaluate, new_cocoeval
from src.eval.offline import seed_protocol_image_ids
from src.eval.reports import classes_by_ap
from src.model_utils.config import load_config
from src.models.registry import inference_network
from src.weights.checkpoint import load_network_weights
from tests.conftest import DEMO_CONFIG, EPOCHS, PROJECT_ROOT, STEPS_PER_EPOCH, demo_args, run_script


def coco_table(stdout: str) -> tuple[list[str], float]:
    """The 12 COCO summary lines and the full-precision mAP an entry script printed."""
    lines = [line for line in stdout.splitlines() if line.lstrip().startswith(("Average Precision", "Average Recall"))]
    found = re.findall(r"^mAP: ([0-9.eE+-]+)$", stdout, flags=re.MULTILINE)
    assert len(lines) == 12 and len(found) == 1, stdout[-3000:]
    return lines, float(found[0])


@pytest.fixture(scope="module")
def checkpoint(trained_run) -> Path:
    return trained_run / "ckpt_0" / f"ssd-{EPOCHS}_{STEPS_PER_EPOCH}.ckpt"


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


@pytest.fixture(scope="module")
def eval_py_run(demo_root, trained_run, checkpoint, tmp_path_factory) -> tuple[Path, Path, str]:
    """eval.py on the checkpoint with --save_detections outside its output folder: (output folder, saved json,
    stdout)."""
    output = trained_run / "eval_reference"
    saved = tmp_path_factory.mktemp("saved") / "submission" / "ssd_val_results.json"
    done = run_script("eval.py", *demo_args(demo_root, output, "--checkpoint_file_path", str(checkpoint),
                                            "--save_detections", str(saved)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return output, saved, done.stdout


@pytest.fixture(scope="module")
def eval_py_table(eval_py_run) -> tuple[list[str], float]:
    lines, map_value = coco_table(eval_py_run[2])
    assert map_value > 0, "the reference run must detect something for the comparison to mean anything"
    return lines, map_value


def write_runner_outputs(config, checkpoint: Path, folder: Path) -> int:
    """The MindSpore network's outputs for every eval image, as the C++ runner's .bin files."""
    stems = {image["id"]: Path(image["file_name"]).stem
             for image in json.loads(ground_truth_json(config).read_text())["images"]}
    infer_net = inference_network(config)
    load_network_weights(checkpoint, infer_net)
    infer_net.set_train(False)
    dataset = create_ssd_dataset(ensure_mindrecord(config, for_training=False), config, 8, is_training=False)
    folder.mkdir(parents=True)
    written = 0
    for batch in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):
        boxes, scores = (out.asnumpy() for out in infer_net(ms.Tensor(batch["image"])))
        for img_id, image_boxes, image_scores in zip(batch["img_id"].reshape(-1), boxes, scores):
            image_boxes.astype(np.float32).tofile(folder / f"{stems[int(img_id)]}_0.bin")
            image_scores.astype(np.float32).tofile(folder / f"{stems[int(img_id)]}_1.bin")
            written += 1
    return written


@pytest.fixture(scope="module")
def runner_outputs(demo_root, trained_run, checkpoint, tmp_path_factory) -> Path:
    config = load_config(DEMO_CONFIG, {
        "data_path": str(demo_root), "coco_root": "coco", "mindrecord_dir": "MindRecord"})
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    folder = tmp_path_factory.mktemp("runner") / "result_Files"
    try:
        assert write_runner_outputs(config, checkpoint, folder) == 16
    finally:
        ms.set_context(mode=previous)
    return folder


def postprocess(demo_root: Path, output: Path, result_path: Path, *extra: str, img_path: Path | None = None):
    img_path = img_path or demo_root / "coco" / "val2017"
    return run_script("postprocess.py", *demo_args(demo_root, output, "--result_path", str(result_path),
                                                   "--img_path", str(img_path), *extra))


@pytest.mark.slow
def test_eval_py_writes_the_per_class_csv_and_the_detections_where_asked(demo_root, eval_py_run):
    output, saved, stdout = eval_py_run
    assert not (output / "eval_detections.json").exists(), "--save_detections replaces the default file"
    config = load_config(DEMO_CONFIG, {"data_path": str(demo_root), "coco_root": "coco"})
    coco_gt = load_coco_quietly(ground_truth_json(config))
    with redirect_stdout(io.StringIO()):
        assert len(coco_gt.loadRes(str(saved)).anns) > 0
    rescored = coco_evaluate(coco_gt, saved, classes=config.classes)
    assert f"mAP: {rescored.map}\n" in stdout  # the saved file is the one eval.py scored
    csv_path = output / "eval_per_class_ap.csv"
    assert f"detections written to {saved}, per-class AP to {csv_path}" in stdout
    header, *rows = csv_rows(csv_path)
    assert header == ["class", "category_id", "AP", "AP50", "num_gt"]
    expected = classes_by_ap(rescored.per_class)
    assert [(name, int(cid), int(num_gt)) for name, cid, _, _, num_gt in rows] == \
        [(c.name, c.category_id, c.num_gt) for c in expected]
    np.testing.assert_array_equal([float(ap or "nan") for _, _, ap, _, _ in rows], [c.ap for c in expected])
    np.testing.assert_array_equal([float(ap50 or "nan") for _, _, _, ap50, _ in rows], [c.ap50 for c in expected])


@pytest.mark.slow
def test_postprocess_prints_eval_py_table(demo_root, tmp_path, runner_outputs, eval_py_table, eval_py_run):
    saved = tmp_path / "saved" / "runner.json"
    done = postprocess(demo_root, tmp_path, runner_outputs, "--save_detections", str(saved))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert coco_table(done.stdout) == eval_py_table
    assert "16 images" in done.stdout
    assert csv_rows(tmp_path / "postprocess_per_class_ap.csv") == csv_rows(eval_py_run[0] / "eval_per_class_ap.csv")
    assert json.loads(saved.read_text()) and not (tmp_path / "postprocess_detections.json").exists()


@pytest.mark.slow
def test_missing_and_truncated_results_are_named(demo_root, tmp_path, runner_outputs, eval_py_table):
    broken = tmp_path / "result_Files"
    shutil.copytree(runner_outputs, broken)
    (broken / "000003_0.bin").unlink()
    truncated = broken / "000007_1.bin"
    truncated.write_bytes(truncated.read_bytes()[:1000])

    images_read = tmp_path / "images_read"  # the runner's folder lacked 000003.jpg
    shutil.copytree(demo_root / "coco" / "val2017", images_read)
    (images_read / "000003.jpg").unlink()

    refused = postprocess(demo_root, tmp_path / "refused", broken, img_path=images_read)
    assert refused.returncode != 0
    assert "2 result files of 2 images are missing or truncated" in refused.stderr
    assert "000003_0.bin: missing" in refused.stderr
    assert "000007_1.bin: 1000 bytes, expected 38340 (truncated)" in refused.stderr  # 1917 x 5 x 4
    assert f"1 of those images are not in --img_path {images_read} either" in refused.stderr
    assert "--missing_as_empty" in refused.stderr
    assert "Traceback" not in refused.stderr

    tolerated = postprocess(demo_root, tmp_path / "tolerated", broken, "--missing_as_empty")
    assert tolerated.returncode == 0, tolerated.stdout[-3000:] + tolerated.stderr[-3000:]
    assert "2 images had missing or truncated result files and were scored with no detections" in tolerated.stdout
    assert "16 images" in tolerated.stdout
    lines, map_value = coco_table(tolerated.stdout)
    assert map_value <= eval_py_table[1]
    # recall over all 16 images can only drop when two images lose their detections
    assert float(lines[8].rsplit("=", 1)[1]) < float(eval_py_table[0][8].rsplit("=", 1)[1])


@pytest.mark.slow
def test_postprocess_needs_existing_folders(demo_root, tmp_path, runner_outputs):
    missing = postprocess(demo_root, tmp_path, tmp_path / "nowhere")
    assert missing.returncode != 0
    assert f"result folder {tmp_path / 'nowhere'} not found" in missing.stderr
    wrong_images = postprocess(demo_root, tmp_path, runner_outputs, img_path=tmp_path / "no_images")
    assert wrong_images.returncode != 0
    assert f"image folder {tmp_path / 'no_images'} (--img_path) not found" in wrong_images.stderr


def test_drop_keeps_the_seeds_image_subset(tmp_path):
    gt = {"images": [{"id": i, "file_name": f"{i}.jpg", "height": 10, "width": 10} for i in (1, 2, 3, 4)],
          "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "zebra"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0},
              {"id": 2, "image_id": 2, "category_id": 7, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0},
              {"id": 3, "image_id": 2, "category_id": 7, "bbox": [5, 5, 5, 5], "area": 25, "iscrowd": 1},
              {"id": 4, "image_id": 4, "category_id": 9, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    coco = load_coco_quietly(tmp_path / "gt.json")
    # 2 has a crowd box, 3 has no box, 4 only a class the model does not know
    assert seed_protocol_image_ids(coco, ["background", "cat"]) == [1]
    assert seed_protocol_image_ids(coco, ["background", "cat", "zebra"]) == [1, 4]


@pytest.mark.slow
def test_eval_onnx_prints_eval_py_table(demo_root, trained_run, checkpoint, tmp_path, eval_py_table, eval_py_run):
    """Through scripts/run_eval_onnx.sh with the seed's argument list; batch 3 pads the last of 16 images."""
    onnx_file = tmp_path / "ssd_b3.onnx"
    exported = run_script("export.py", "--config_path", str(DEMO_CONFIG),
                          "--checkpoint_file_path", str(checkpoint), "--file_format", "ONNX",
                          "--file_name", str(tmp_path / "ssd_b3"), "--batch_size", "3",
                          "--output_path", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]
    done = subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "run_eval_onnx.sh"), str(demo_root), "coco",
                           str(onnx_file), "annotations/instances_{}.json", "CPU", str(DEMO_CONFIG),
                           "--mindrecord_dir", "MindRecord"], env={**os.environ, "SSD_RUN_DIR": str(tmp_path)},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "batch 3" in done.stdout
    assert coco_table(done.stdout) == eval_py_table
    assert coco_table((tmp_path / "eval_onnx" / "log.txt").read_text()) == eval_py_table
    assert csv_rows(tmp_path / "eval_onnx" / "eval_onnx_per_class_ap.csv") == \
        csv_rows(eval_py_run[0] / "eval_per_class_ap.csv")
    assert (tmp_path / "eval_onnx" / "eval_onnx_detections.json").is_file()  # the default place


@pytest.mark.slow
def test_eval_onnx_refuses_a_model_of_another_config(demo_root, trained_run, tmp_path):
    """An 81-class ssd300 export evaluated with the 5-class demo config: one clear error, no traceback."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 300, 300])
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 1917, 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1917, 81])
    graph = helper.make_graph([helper.make_node("Constant", [], ["boxes"], value=helper.make_tensor(
        "b", TensorProto.FLOAT, [1, 1917, 4], np.zeros(1917 * 4).tolist())), helper.make_node(
        "Constant", [], ["scores"], value=helper.make_tensor("s", TensorProto.FLOAT, [1, 1917, 81],
                                                            np.zeros(1917 * 81).tolist()))], "g", [x], [boxes, scores])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)]), str(tmp_path / "other.onnx"))
    done = run_script("eval_onnx.py", *demo_args(demo_root, tmp_path, "--file_name", str(tmp_path / "other.onnx")))
    assert done.returncode != 0
    assert "scores (B, N, C) has shape ['B', 1917, 81]" in done.stderr
    assert "Traceback" not in done.stderr


def test_gpu_without_cuda_provider_is_a_clear_error(tmp_path):
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the refusal cannot be observed here")
    model = tmp_path / "identity.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])),
              str(model))
    with pytest.raises(OnnxModelError, match="needs onnxruntime's CUDAExecutionProvider.*install onnxruntime-gpu"):
        create_session(model, "GPU")
    with pytest.raises(FileNotFoundError, match="export one with"):
        create_session(tmp_path / "absent.onnx", "CPU")


@pytest.mark.parametrize("backend", ["installed", "pycocotools"])
def test_cocoeval_in_category_groups_equals_one_pass(tmp_path, backend, monkeypatch):
    """postprocess.py and eval.py evaluate CATEGORIES_PER_PASS categories at a time to bound memory;
    the numbers must be exactly those of one COCOeval pass over all categories, with faster-coco-eval
    (when installed) and with the pycocotools fallback."""
    if backend == "pycocotools":
        monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # import fails -> pycocotools
    rng = np.random.default_rng(0)
    num_categories = 2 * CATEGORIES_PER_PASS + 3
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 200, "width": 300} for i in range(1, 31)]
    annotations, detections = [], []
    for image in images:
        for _ in range(int(rng.integers(1, 6))):
            x, y, w, h = (float(v) for v in (*rng.uniform(0, 150, 2), *rng.uniform(10, 80, 2)))
            category = int(rng.integers(1, num_categories + 1))
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": category,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(rng.uniform() < 0.05)})
            for _ in range(3):  # a near hit, sometimes of another category, and false positives
                jitter = rng.normal(0, 6, 4)
                detections.append({"image_id": image["id"], "score": float(rng.uniform(0.1, 1)),
                                   "category_id": category if rng.uniform() < 0.7 else int(rng.integers(1, num_categories + 1)),
                                   "bbox": [x + jitter[0], y + jitter[1], max(w + jitter[2], 1), max(h + jitter[3], 1)]})
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [
        {"id": c, "name": f"class{c}"} for c in range(1, num_categories + 1)]}))
    (tmp_path / "dt.json").write_text(json.dumps(detections))

    grouped = coco_evaluate(gt_path, tmp_path / "dt.json")
    coco_gt = load_coco_quietly(gt_path)
    with redirect_stdout(io.StringIO()):
        one_pass = new_cocoeval(coco_gt, coco_gt.loadRes(str(tmp_path / "dt.json")))  # the backend coco_evaluate uses
        one_pass.evaluate()
        one_pass.accumulate()
        one_pass.summarize()
    assert grouped.map > 0.1
    assert grouped.stats.tolist() == list(one_pass.stats)
    curves = [one_pass.eval["precision"][:, :, k, 0, -1] for k in range(num_categories)]
    expected_ap = [float(curve[curve > -1].mean()) if (curve > -1).any() else np.nan for curve in curves]
    np.testing.assert_array_equal([class_ap.ap for class_ap in grouped.per_class], expected_ap)
