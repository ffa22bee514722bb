"""A checkpoint carries its run: eval.py, predict.py and export.py find the config beside the model.

Fast tests drive ``src.model_utils.run_config`` on real files; the slow ones run the entry scripts
on the session's demo training run with and without ``--config_path`` and compare the results.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from src.model_utils.config import load_config, save_resolved_config
from src.model_utils.errors import UsageError
from src.model_utils.run_config import RUN_CONFIG_NAME, argv_with_model_config, check_model_config, config_beside
from tests.conftest import DEMO_CONFIG, EPOCHS, STEPS_PER_EPOCH, run_script

CPU_CONFIG = Path(__file__).resolve().parents[1] / "config" / "ssd300_config_cpu.yaml"


def _model_with_config(folder: Path, name: str = "ssd-1_1.ckpt") -> Path:
    """A (fake) model file with the demo config written beside it as train.py or export.py does."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / name
    model.write_bytes(b"not read by these tests")
    save_resolved_config(load_config(DEMO_CONFIG), config_beside(model))
    return model


def test_the_config_beside_a_checkpoint_or_an_exported_file(tmp_path):
    assert config_beside(tmp_path / "ckpt_0" / "best_map.ckpt") == tmp_path / "ckpt_0" / RUN_CONFIG_NAME
    assert config_beside(tmp_path / "ssd.onnx") == tmp_path / "ssd.onnx.config.yaml"
    assert config_beside(tmp_path / "ssd.mindir") == tmp_path / "ssd.mindir.config.yaml"


def test_the_config_beside_is_used_unless_config_path_is_given(tmp_path):
    model = _model_with_config(tmp_path / "ckpt_0")
    beside = str(tmp_path / "ckpt_0" / RUN_CONFIG_NAME)
    args = ["--checkpoint_file_path", str(model), "--device_target", "CPU"]

    assert argv_with_model_config(args, "checkpoint_file_path") == ["--config_path", beside, *args]
    assert argv_with_model_config(args, "model", model) == ["--config_path", beside, *args]
    explicit = ["--config_path", str(CPU_CONFIG), *args]
    assert argv_with_model_config(explicit, "checkpoint_file_path") == explicit
    missing = ["--checkpoint_file_path", str(tmp_path / "gone.ckpt")]
    assert argv_with_model_config(missing, "checkpoint_file_path") == missing  # the script names the missing file


def test_a_checkpoint_without_config_needs_config_path(tmp_path):
    model = tmp_path / "zoo.ckpt"
    model.write_bytes(b"x")
    with pytest.raises(UsageError, match=rf"no config.yaml beside --checkpoint_file_path {model} .*pass --config_path"):
        argv_with_model_config(["--checkpoint_file_path", str(model)], "checkpoint_file_path")


@pytest.mark.parametrize("overrides, key", [({}, "num_classes"), ({"img_shape": [320, 320]}, "img_shape")],
                         ids=["other config file", "img_shape on the command line"])
def test_a_config_that_disagrees_with_the_models_own_is_one_error_naming_both(tmp_path, overrides, key):
    model = _model_with_config(tmp_path / "ckpt_0")
    config_path = DEMO_CONFIG if overrides else CPU_CONFIG
    argv = ["--config_path", str(config_path), *[f"--{k}={v}" for k, v in overrides.items()]]
    config = load_config(config_path, overrides)
    with pytest.raises(UsageError) as raised:
        check_model_config(config, model, argv)
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{key} is ")
    assert str(config_path) in message and str(config_beside(model)) in message


def test_an_agreeing_config_is_logged_as_used(tmp_path):
    model = _model_with_config(tmp_path / "ckpt_0")
    beside = config_beside(model)
    assert check_model_config(load_config(beside), model, ["--config_path", str(beside)]) == (
        f"config {beside} (found beside the model)")
    assert check_model_config(load_config(DEMO_CONFIG), model, ["--config_path", str(DEMO_CONFIG)]) == (
        f"config {DEMO_CONFIG} (agrees with {beside})")


# ---- the entry scripts on a trained run ------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(trained_run) -> Path:
    return trained_run / "ckpt_0" / f"ssd-{EPOCHS}_{STEPS_PER_EPOCH}.ckpt"


def _data_args(demo_root: Path) -> list[str]:
    return ["--data_path", str(demo_root), "--coco_root", "coco", "--mindrecord_dir", "MindRecord"]


@pytest.mark.slow
def test_eval_with_only_the_checkpoint_gives_the_same_map(demo_root, checkpoint, tmp_path):
    alone = run_script("eval.py", "--checkpoint_file_path", str(checkpoint), "--output_path", str(tmp_path / "a"))
    assert alone.returncode == 0, alone.stderr[-3000:]
    explicit = run_script("eval.py", "--config_path", str(DEMO_CONFIG), *_data_args(demo_root), "--eval_batch_size",
                          "8", "--checkpoint_file_path", str(checkpoint), "--output_path", str(tmp_path / "b"))
    assert explicit.returncode == 0, explicit.stderr[-3000:]
    map_line = [line for line in alone.stdout.splitlines() if line.startswith("mAP: ")]
    assert map_line and map_line == [line for line in explicit.stdout.splitlines() if line.startswith("mAP: ")]
    first, second = (json.loads((tmp_path / d / "eval_detections.json").read_text()) for d in "ab")
    assert first == second
    log = (tmp_path / "a" / "log" / "eval_rank0.log").read_text()
    assert f"config {checkpoint.parent / RUN_CONFIG_NAME} (found beside the model)" in log


@pytest.mark.slow
def test_a_mismatching_config_path_is_one_error_line(checkpoint, tmp_path):
    done = run_script("eval.py", "--checkpoint_file_path", str(checkpoint), "--config_path", str(CPU_CONFIG),
                      "--output_path", str(tmp_path))
    assert done.returncode == 2
    beside = checkpoint.parent / RUN_CONFIG_NAME
    assert done.stderr.strip().splitlines() == [
        (f"eval.py: error: num_classes is 81 in {CPU_CONFIG} (with the command line) but 5 in {beside}, the config "
         f"{checkpoint} was made with; drop --config_path and --num_classes to use {beside}, or pass the model "
         f"made with {CPU_CONFIG}")]


@pytest.mark.slow
def test_a_zoo_style_checkpoint_without_config_needs_config_path(checkpoint, tmp_path):
    """A checkpoint copied without its folder: an error naming --config_path; with it, eval works as before."""
    lone = tmp_path / "lone" / checkpoint.name
    lone.parent.mkdir()
    shutil.copy(checkpoint, lone)
    done = run_script("predict.py", "--model", str(lone), "--input", str(tmp_path))
    assert done.returncode == 2 and "pass --config_path" in done.stderr and len(done.stderr.splitlines()) == 1


@pytest.mark.slow
def test_predict_and_export_with_only_the_model(demo_root, checkpoint, tmp_path):
    """export.py writes the config beside the file; predict.py runs the .ckpt and the .onnx without --config_path."""
    images = sorted((demo_root / "coco" / "val2017").glob("*.jpg"))[:2]
    exported = tmp_path / "model" / "ssd"
    done = run_script("export.py", "--checkpoint_file_path", str(checkpoint), "--file_format", "ONNX",
                      "--file_name", str(exported), "--output_path", str(tmp_path / "export"))
    assert done.returncode == 0, done.stderr[-3000:]
    onnx = tmp_path / "model" / "ssd.onnx"
    export_keys = {"file_name", "file_format", "checkpoint_file_path", "output_path"}  # the export's own settings
    exported_config, run_config = (load_config(path).to_dict() for path in (config_beside(onnx),
                                                                             checkpoint.parent / RUN_CONFIG_NAME))
    assert exported_config["checkpoint_file_path"] == str(checkpoint)
    assert {k: v for k, v in exported_config.items() if k not in export_keys} == {
        k: v for k, v in run_config.items() if k not in export_keys}
    results = {}
    for model in (checkpoint, onnx):
        output = tmp_path / f"predict_{model.suffix[1:]}"
        done = run_script("predict.py", "--model", str(model), "--input", *map(str, images), "--output_dir",
                          str(output), "--output_path", str(tmp_path / "logs"))
        assert done.returncode == 0, done.stderr[-3000:]
        results[model.suffix] = json.loads((output / "detections.json").read_text())
    with_config = tmp_path / "predict_with_config"
    done = run_script("predict.py", "--config_path", str(DEMO_CONFIG), "--model", str(checkpoint), "--input",
                      *map(str, images), "--output_dir", str(with_config), "--output_path", str(tmp_path / "logs"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert results[".ckpt"] == json.loads((with_config / "detections.json").read_text())
    assert {r["file_name"] for r in results[".onnx"]} == {r["file_name"] for r in results[".ckpt"]}
