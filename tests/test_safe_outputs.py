"""Runs never destroy the user's files: predict.py's inputs and earlier outputs, another training run's
checkpoints and metrics, and a folder another process is writing; interrupted saves leave nothing behind.

The entry scripts run in-process under ``run_entry`` (as a user's command line would, one error line
on stderr) with a missing model file, so a refusal that comes after the model load would show as a
different error. Lock holders and ended writers are real processes.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import predict
import train
from src.deploy.predict import DETECTIONS_FILE, FilePredictor, LOCK_FILE, check_output_folder, prediction_options
from src.model_utils.config import load_config
from src.model_utils.errors import RUNTIME_EXIT, USAGE_EXIT, UsageError, run_entry
from src.model_utils.files import remove_stale_temporaries, temporary_path
from src.model_utils.run_lock import FolderInUseError, RunLock, this_host
from src.train.trainer import LOCK_FILE as TRAIN_LOCK_FILE
from src.train.trainer import check_output_is_free
from tests.conftest import DEMO_CONFIG, EPOCHS, PROJECT_ROOT, STEPS_PER_EPOCH, demo_args, read_metrics, run_script
from tests.test_predict import constant_detector

LOG = logging.getLogger("test_safe_outputs")
#: A process that takes the lock given as argument, says so, and sleeps until it is killed.
HOLD_LOCK = ("import logging, sys, time; from src.model_utils.run_lock import RunLock; "
             "RunLock(sys.argv[1], logging.getLogger('holder'), fix='stop').acquire(); print('locked', flush=True); "
             "time.sleep(120)")
#: A save interrupted between writing its temporary and the rename (os._exit skips every cleanup).
INTERRUPTED_SAVE = ("import os, sys; from src.model_utils.files import temporary_path; "
                    "temporary_path(sys.argv[1]).write_text('half'); os._exit(9)")


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    return path


def _predict(capsys, *args: str) -> tuple[int, str]:
    """predict.py's main under run_entry with a model file that does not exist: (exit status, stderr)."""
    status = run_entry(predict.main, "predict.py", ["--config_path", str(DEMO_CONFIG), "--model",
                                                    "no_such_model.ckpt", *args])
    return status, capsys.readouterr().err


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=PROJECT_ROOT, text=True, **kwargs)


@pytest.fixture()
def lock_holder(tmp_path):
    """(process, lock path) of a live process holding a lock in tmp_path/held; killed at the end."""
    lock = tmp_path / "held" / ".lock"
    process = _python(HOLD_LOCK, str(lock), stdout=subprocess.PIPE)
    assert process.stdout.readline().strip() == "locked"
    yield process, lock
    process.kill()
    process.wait()


def _dead_pid() -> int:
    process = _python("pass")
    process.wait()
    return process.pid


# ---- predict.py ---------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["is", "inside", "contains", "file_folder"])
def test_predict_never_writes_into_or_around_an_input_folder(where, tmp_path, capsys):
    photos = tmp_path / "photos"
    image = _image(photos / "cat.jpg")
    before = image.read_bytes()
    inputs = {"is": [str(photos)], "inside": [str(photos)], "contains": [str(photos)],
              "file_folder": [str(image)]}[where]
    output = {"is": photos, "inside": photos / "predict", "contains": tmp_path, "file_folder": photos}[where]
    status, err = _predict(capsys, "--input", *inputs, "--output_dir", str(output), "--output_path",
                           str(tmp_path / "run"))
    assert status == USAGE_EXIT
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("predict.py: error: ") and "--output_dir <another folder>" in err
    named = str(photos.resolve()) if where != "file_folder" else str(image)
    assert str(output.resolve()) in err and named in err, err
    assert "no_such_model" not in err, "the outputs are checked before the model is loaded"
    assert image.read_bytes() == before and sorted(p.name for p in photos.iterdir()) == ["cat.jpg"]


def test_predict_keeps_earlier_outputs_unless_exist_ok(tmp_path, capsys):
    image = _image(tmp_path / "photos" / "cat.jpg")
    output = tmp_path / "out"
    output.mkdir()
    (output / DETECTIONS_FILE).write_text("[]\n")
    args = ("--input", str(image), "--output_dir", str(output), "--output_path", str(tmp_path / "run"))
    status, err = _predict(capsys, *args)
    assert status == USAGE_EXIT and "--exist_ok" in err and str(output / DETECTIONS_FILE) in err, err
    assert (output / DETECTIONS_FILE).read_text() == "[]\n"
    _image(output / "cat.jpg")  # a drawing of an earlier run: named first, the json counted
    status, err = _predict(capsys, *args)
    assert status == USAGE_EXIT and f"{output / 'cat.jpg'} and 1 more outputs" in err, err
    status, err = _predict(capsys, *args, "--exist_ok")
    assert status == RUNTIME_EXIT and "no_such_model.ckpt not found" in err, "--exist_ok lets the run go on"


def test_exist_ok_run_replaces_the_earlier_outputs_and_holds_the_folder_lock(tmp_path):
    image = _image(tmp_path / "photos" / "cat.png")
    output = tmp_path / "out"
    _image(output / "cat.png")
    (output / DETECTIONS_FILE).write_text("old")
    with pytest.raises(UsageError, match="--exist_ok"):
        check_output_folder([str(image)], [image], output, exist_ok=False)
    check_output_folder([str(image)], [image], output, exist_ok=True)
    config = load_config(DEMO_CONFIG, {"data_path": str(tmp_path / "no_data")})
    predictor = FilePredictor(constant_detector(int(config.num_ssd_boxes), int(config.num_classes)), config,
                              prediction_options(config, None, None, None), output, LOG)
    with RunLock(output / LOCK_FILE, LOG, fix="wait"):  # this process is "another prediction" meanwhile
        with pytest.raises(FolderInUseError, match=f"{output} is in use: process {os.getpid()}"):
            predictor.run([image])
    summary = predictor.run([image])
    assert summary.num_images == 1 and (output / DETECTIONS_FILE).read_text().startswith("[")
    assert Image.open(output / "cat.png").size == (64, 48)
    assert sorted(p.name for p in output.iterdir()) == ["cat.png", DETECTIONS_FILE], "the lock is released"


# ---- train.py ------------------------------------------------------------------------------------

def _train(capsys, output: Path, demo_root: Path, mindrecord: Path) -> tuple[int, str, float]:
    """train.py's main under run_entry on the demo data, converting into ``mindrecord``: (status, stderr, s)."""
    args = demo_args(demo_root, output)
    args[args.index("--mindrecord_dir") + 1] = str(mindrecord)
    started = time.time()
    status = run_entry(train.main, "train.py", args)
    return status, capsys.readouterr().err, time.time() - started


def test_train_refuses_a_folder_with_another_runs_checkpoints(demo_root, tmp_path, capsys):
    mindrecord = tmp_path / "mindrecord"
    output = tmp_path / "run"
    (output / "ckpt_0").mkdir(parents=True)
    for epoch in (1, 2):
        (output / "ckpt_0" / f"ssd-{epoch}_6.ckpt").write_bytes(b"weights")
        time.sleep(0.01)
    status, err, seconds = _train(capsys, output, demo_root, mindrecord)
    assert status == USAGE_EXIT, err
    assert f"already holds another run's checkpoints (e.g. {output / 'ckpt_0' / 'ssd-2_6.ckpt'})" in err
    assert f"pass --resume {output / 'ckpt_0' / 'ssd-2_6.ckpt'} to continue that run, or a new --output_path" in err
    assert seconds < 20 and not mindrecord.exists(), "refused before any data conversion"
    assert not (output / TRAIN_LOCK_FILE.format(rank=0)).exists() and not (output / "ckpt_0" / "config.yaml").exists()
    shutil.rmtree(output / "ckpt_0")
    (output / "metrics_rank0.csv").write_text("step,epoch,loss\n1,1,9.0\n")
    status, err, _ = _train(capsys, output, demo_root, mindrecord)
    assert status == USAGE_EXIT and f"another run's metrics ({output / 'metrics_rank0.csv'}); that run saved no " \
        f"checkpoint, so nothing can be resumed: delete {output / 'metrics_rank0.csv'} or pass a new --output_path" \
        in err, err
    assert (output / "metrics_rank0.csv").read_text() == "step,epoch,loss\n1,1,9.0\n"


def test_only_a_resume_from_inside_the_folder_may_write_into_it(tmp_path):
    output = tmp_path / "run"
    (output / "ckpt_0").mkdir(parents=True)
    own = output / "ckpt_0" / "ssd-1_6.ckpt"
    own.write_bytes(b"weights")
    check_output_is_free(output, 0, str(own))
    check_output_is_free(output, 1, "")  # rank 1 has no files here
    with pytest.raises(UsageError, match=f"pass --resume {own}"):
        check_output_is_free(output, 0, str(tmp_path / "elsewhere" / "ssd-1_6.ckpt"))
    (output / "ckpt_0" / ".ssd-2_6.ckpt.tmp-host-1-t1.ckpt").write_bytes(b"half")  # a temporary is no checkpoint
    own.unlink()
    check_output_is_free(output, 0, "")


def test_train_stops_at_once_on_a_folder_another_process_trains_into(lock_holder, demo_root, tmp_path, capsys):
    holder, lock = lock_holder
    os.replace(lock, lock.parent / TRAIN_LOCK_FILE.format(rank=0))
    status, err, _ = _train(capsys, lock.parent, demo_root, tmp_path / "mindrecord")
    assert status == RUNTIME_EXIT, err
    assert f"{lock.parent} is in use: process {holder.pid} on {this_host()} is running" in err, err
    assert "pass another --output_path" in err and not (tmp_path / "mindrecord").exists()


# ---- the lock ------------------------------------------------------------------------------------

def test_a_live_owner_keeps_the_lock_and_a_dead_one_loses_it(lock_holder, caplog):
    holder, lock = lock_holder
    with pytest.raises(FolderInUseError, match=f"process {holder.pid} on {this_host()} is running"):
        RunLock(lock, LOG, fix="pass another --output_dir").acquire()
    holder.kill()
    holder.wait()
    assert lock.exists(), "a killed process leaves its lock"
    with caplog.at_level(logging.WARNING, logger=LOG.name), RunLock(lock, LOG, fix="x"):
        assert f'"pid": {os.getpid()}' in lock.read_text()
    assert f"took over the stale lock {lock} of process {holder.pid}, which no longer runs" in caplog.text
    assert not lock.exists()


def test_the_lock_is_released_on_exceptions_and_at_exit(tmp_path):
    lock = tmp_path / ".lock"
    with pytest.raises(KeyError), RunLock(lock, LOG, fix="x"):
        with pytest.raises(FolderInUseError, match=f"process {os.getpid()}"):
            RunLock(lock, LOG, fix="x").acquire()  # one process, one owner: no nested second acquire
        raise KeyError("boom")
    assert not lock.exists()
    exits = _python(HOLD_LOCK.replace("time.sleep(120)", "sys.exit(3)"), str(lock), stdout=subprocess.PIPE)
    assert exits.wait() == 3 and not lock.exists(), "released by the atexit hook"


def test_a_lock_of_another_host_or_an_earlier_process_with_our_pid(tmp_path, caplog):
    lock = tmp_path / ".lock"
    lock.write_text('{"pid": 1, "host": "other-machine", "since": "2024-01-01 00:00:00"}')
    with pytest.raises(FolderInUseError, match="on host other-machine, which cannot be checked .* delete the lock"):
        RunLock(lock, LOG, fix="x").acquire()
    lock.write_text(f'{{"pid": {os.getpid()}, "host": "{this_host()}"}}')  # e.g. a restarted container
    with caplog.at_level(logging.WARNING, logger=LOG.name), RunLock(lock, LOG, fix="x"):
        pass
    assert "took over the stale lock" in caplog.text and not lock.exists()


# ---- temporaries of interrupted saves ------------------------------------------------------------

def test_stale_temporaries_of_ended_processes_are_removed(tmp_path, caplog):
    target = tmp_path / "ssd-1_6.ckpt"
    crashed = _python(INTERRUPTED_SAVE, str(target))
    assert crashed.wait() == 9
    left = [p for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(f".ssd-1_6.ckpt.tmp-{this_host()}-{crashed.pid}-t")
    assert left[0].suffix == ".ckpt"
    ours = temporary_path(tmp_path / "config.yaml")  # a write of this (live) process
    ours.write_text("in progress")
    other_host = tmp_path / ".metrics_rank0.csv.tmp-other-machine-12-t3.csv"
    other_host.write_text("x")
    user_file = tmp_path / ".notes.tmp-1"
    user_file.write_text("mine")
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert remove_stale_temporaries(tmp_path, LOG) == 1
    assert not left[0].exists() and ours.exists() and other_host.exists() and user_file.exists()
    assert f"removed 1 temporary files that ended processes left in {tmp_path}" in caplog.text
    assert remove_stale_temporaries(tmp_path / "missing", LOG) == 0


@pytest.mark.slow
def test_a_resumed_run_keeps_the_checkpoints_that_existed_before_it(trained_run, demo_root, tmp_path):
    output = tmp_path / "run"
    shutil.copytree(trained_run, output)
    checkpoints = output / "ckpt_0"
    earlier = {path.name: path.read_bytes() for path in checkpoints.glob("ssd-*.ckpt")}
    assert len(earlier) == EPOCHS
    crashed = _python(INTERRUPTED_SAVE, str(checkpoints / f"ssd-{EPOCHS + 1}_{STEPS_PER_EPOCH}.ckpt"))
    assert crashed.wait() == 9
    last = checkpoints / f"ssd-{EPOCHS}_{STEPS_PER_EPOCH}.ckpt"
    args = demo_args(demo_root, output, "--resume", str(last), "--keep_checkpoint_max", "1")
    args[args.index("--epoch_size") + 1] = str(EPOCHS + 2)
    done = run_script("train.py", *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    names = sorted(path.name for path in checkpoints.iterdir())
    assert {name: (checkpoints / name).read_bytes() for name in earlier} == earlier, "earlier checkpoints kept"
    assert f"ssd-{EPOCHS + 2}_{STEPS_PER_EPOCH}.ckpt" in names
    assert f"ssd-{EPOCHS + 1}_{STEPS_PER_EPOCH}.ckpt" not in names, "keep_checkpoint_max prunes the run's own"
    assert not [name for name in names if name.startswith(".")], names
    assert "removed 1 temporary files that ended processes left in" in done.stdout
    assert [int(row["step"]) for row in read_metrics(output)] == list(range(1, (EPOCHS + 2) * STEPS_PER_EPOCH + 1))


def test_the_backbone_converter_never_replaces_a_file(tmp_path, capsys):
    """MindSpore appends .ckpt to other names, so '--output notes.txt' used to write notes.txt.ckpt and delete
    notes.txt; an existing output (the input itself included) is refused before anything is read."""
    import convert_torchvision_backbone

    pth = convert_torchvision_backbone.packaged_weights()
    if pth is None:
        pytest.skip("the packaged torchvision MobileNetV2 weights are not installed")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    existing = tmp_path / "old.ckpt"
    existing.write_bytes(b"an earlier conversion")
    for output, message in ((notes, "must end in .ckpt"), (existing, "exists; delete it first"),
                            (Path(pth), "must end in .ckpt")):
        with pytest.raises(SystemExit) as stopped:
            convert_torchvision_backbone.main(["--pth", str(pth), "--output", str(output)])
        assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert notes.read_text() == "mine" and existing.read_bytes() == b"an earlier conversion" and Path(pth).is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt", "old.ckpt"]


@pytest.mark.slow
def test_a_refused_resume_keeps_the_runs_config_and_checkpoints(trained_run, demo_root, tmp_path):
    """A --resume that does not fit (another batch size) stops with one line and leaves the run as it was."""
    output = tmp_path / "run"
    shutil.copytree(trained_run, output)
    before = {path.name: path.read_bytes() for path in (output / "ckpt_0").iterdir()}
    last = output / "ckpt_0" / f"ssd-{EPOCHS}_{STEPS_PER_EPOCH}.ckpt"
    args = demo_args(demo_root, output, "--resume", str(last), "--lr", "0.5")
    args[args.index("--batch_size") + 1] = "4"
    args[args.index("--epoch_size") + 1] = str(EPOCHS + 1)
    done = run_script("train.py", *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "steps per epoch" in done.stderr
    assert {path.name: path.read_bytes() for path in (output / "ckpt_0").iterdir()} == before


def test_resuming_with_another_freeze_layer_names_the_setting(trained_run, demo_root, tmp_path):
    """The run trained every layer: resuming it with layers frozen would change what the optimizer state covers."""
    output = tmp_path / "run"
    shutil.copytree(trained_run, output)
    last = output / "ckpt_0" / f"ssd-{EPOCHS}_{STEPS_PER_EPOCH}.ckpt"
    args = demo_args(demo_root, output, "--resume", str(last), "--freeze_layer", "backbone_stride8")
    args[args.index("--epoch_size") + 1] = str(EPOCHS + 1)
    done = run_script("train.py", *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert (f"{last} was trained with other layers frozen: it trained 255 tensors, --freeze_layer backbone_stride8 "
            "trains 201; resume with that run's freeze_layer") in done.stderr


@pytest.mark.parametrize("script", ["eval.py", "eval_onnx.py", "postprocess.py"])
def test_save_detections_never_replaces_a_file(tmp_path, capsys, script):
    """--save_detections can name any file (the ground truth, the model being scored): an existing one is refused
    before any work."""
    import importlib

    ground_truth = tmp_path / "instances_val2017.json"
    ground_truth.write_text('{"images": []}')
    main = importlib.import_module(script[:-3]).main
    status = run_entry(main, script, ["--config_path", str(DEMO_CONFIG), "--output_path", str(tmp_path / "out"),
                                      "--checkpoint_file_path", str(tmp_path / "none.ckpt"), "--file_name",
                                      str(tmp_path / "none.onnx"), "--result_path", str(tmp_path),
                                      "--save_detections", str(ground_truth)])
    err = capsys.readouterr().err
    assert status == USAGE_EXIT and f"--save_detections {ground_truth} exists" in err, err
    assert ground_truth.read_text() == '{"images": []}'
