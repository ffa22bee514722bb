"""A config is validated before any work: keys, types and ranges in every file and on the command line,
then (train.py) contradictions and the files later stages read, each a one-line error naming the key."""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest
import yaml

import train
from src.data.demo_data import generate_demo_dataset
from src.data.mindrecord import ensure_mindrecord
from src.model_utils import config as config_module
from src.model_utils.config import VALUE_RANGES, ConfigError, load_config, parse_args
from src.model_utils.errors import USAGE_EXIT, UsageError, run_entry
from src.train.preflight import check_training_run
from tests.conftest import DEMO_CONFIG

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
CPU = CONFIG_DIR / "ssd300_config_cpu.yaml"
ZOO_FILE = Path(__file__).resolve().parent / "data" / "zoo_format_ssd300_config.yaml"


def _child(tmp_path: Path, key: str, text: str) -> Path:
    """A user's file that inherits the CPU recipe and sets one key, written as a user types it."""
    path = tmp_path / "run.yaml"
    path.write_text(f"__BASE__: {CPU}\n{key}: {text}\n", encoding="utf-8")
    return path


def _full(tmp_path: Path, key: str, text: str) -> Path:
    """A self-contained one-document file (every key written out, like a copied zoo file) with one key edited."""
    values = config_module._read_config_file(CPU).values
    lines = yaml.safe_dump({k: v for k, v in values.items() if k != key}, sort_keys=False)
    path = tmp_path / "user.yaml"
    path.write_text(f"{lines}{key}: {text}\n", encoding="utf-8")
    return path


def _rejection(source: str, tmp_path: Path, capsys, key: str, text: str) -> str:
    """The one-line message with which the value ``text`` of ``key`` is refused, from a child file, a full
    file or the command line; it must name where the value came from."""
    if source == "cli":
        with pytest.raises(SystemExit) as exit_info:
            parse_args([f"--{key}", text], default_config_path=CPU)
        assert exit_info.value.code == USAGE_EXIT
        message = capsys.readouterr().err.strip()
        assert f"error: --{key}" in message
    else:
        path = (_child if source == "child" else _full)(tmp_path, key, text)
        with pytest.raises(ConfigError) as error:
            load_config(path)
        message = str(error.value)
        assert f"{path.name}: {key}" in message
    assert "\n" not in message and "Traceback" not in message
    return message


SOURCES = ["child", "full", "cli"]

# ---- types --------------------------------------------------------------------------------------------------

TYPE_ERRORS = [  # key, value as typed, what the message must say
    ("batch_size", "4.5", "expected an integer, got 4.5"),  # not silently int(4.5) == 4
    ("epoch_size", "[3]", "expected an integer, got [3]"),  # a list where a number belongs
    ("lr", "[0.1]", "expected a number, got [0.1]"),
    ("img_shape", "300", "expected a list like [300, 300], got 300"),  # a number where a list belongs
    ("steps", "16", "expected a list"),
    ("run_eval", "yes", "got 'yes'"),  # booleans only as true/false
    ("use_expand", "on", "got 'on'"),
    ("classes", "background", "expected a list"),
]


@pytest.mark.parametrize("source", ["child", "full"])
def test_yaml_null_for_a_string_key_says_how_to_write_none(tmp_path, capsys, source) -> None:
    message = _rejection(source, tmp_path, capsys, "freeze_layer", "null")
    assert "freeze_layer: expected a string, got YAML null; for the setting None write None" in message


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("key, text, expected", TYPE_ERRORS, ids=[case[0] for case in TYPE_ERRORS])
def test_a_value_of_the_wrong_type_is_refused_everywhere(tmp_path, capsys, source, key, text, expected) -> None:
    assert expected in _rejection(source, tmp_path, capsys, key, text)


@pytest.mark.parametrize("source", ["child", "full"])
def test_numbers_and_booleans_in_files_only_in_their_own_spelling(tmp_path, capsys, source) -> None:
    assert "expected True or False, got 1" in _rejection(source, tmp_path, capsys, "run_eval", "1")
    assert "expected a number, got '0.1'" in _rejection(source, tmp_path, capsys, "min_score", "'0.1'")
    write = _child if source == "child" else _full
    assert load_config(write(tmp_path, "run_eval", "true")).run_eval is True
    assert load_config(write(tmp_path, "use_expand", "False")).use_expand is False


def test_a_fraction_is_kept_where_it_means_something(tmp_path) -> None:
    """warmup_epochs (an integer in most files) may be 0.3 epochs, from a file as from the command line."""
    assert load_config(_child(tmp_path, "warmup_epochs", "0.5")).warmup_epochs == 0.5
    assert load_config(_full(tmp_path, "warmup_epochs", "0.5")).warmup_epochs == 0.5
    assert parse_args(["--warmup_epochs", "0.5"], default_config_path=CPU).warmup_epochs == 0.5
    assert load_config(CPU, {"warmup_epochs": 3}).warmup_epochs == 3


# ---- ranges -------------------------------------------------------------------------------------------------

RANGE_ERRORS = [  # key, value as typed, the allowed range the message must state
    ("batch_size", "0", "batch_size must be >= 1"),
    ("eval_batch_size", "0", "eval_batch_size must be >= 1"),
    ("epoch_size", "0", "epoch_size must be >= 1"),
    ("lr", "0", "lr must be > 0"),
    ("lr", "-0.05", "lr must be > 0"),
    ("lr_init", "-0.001", "lr_init must be >= 0"),
    ("lr_end_rate", "1.5", "lr_end_rate must be >= 0 and <= 1"),
    ("warmup_epochs", "-1", "warmup_epochs must be >= 0"),
    ("momentum", "1.0", "momentum must be >= 0 and < 1"),
    ("weight_decay", "-0.0001", "weight_decay must be >= 0"),
    ("loss_scale", "0", "loss_scale must be > 0"),
    ("save_checkpoint_epochs", "0", "save_checkpoint_epochs must be >= 1"),
    ("keep_checkpoint_max", "0", "keep_checkpoint_max must be >= 1"),
    ("eval_interval", "0", "eval_interval must be >= 1"),
    ("log_interval", "0", "log_interval must be >= 1"),
    ("device_num", "0", "device_num must be >= 1"),
    ("seed", "-1", "seed must be >= 0"),
    ("num_parallel_workers", "0", "num_parallel_workers must be >= 1"),
    ("nms_threshold", "0", "nms_threshold must be > 0 and <= 1"),
    ("nms_threshold", "1.5", "nms_threshold must be > 0 and <= 1"),
    ("min_score", "1.0", "min_score must be >= 0 and < 1"),
    ("min_score", "-0.1", "min_score must be >= 0 and < 1"),
    ("max_boxes", "0", "max_boxes must be >= 1"),
    ("match_threshold", "0", "match_threshold must be > 0 and <= 1"),
    ("num_classes", "1", "num_classes must be >= 2"),
    ("img_shape", "[300, 0]", "each entry of img_shape must be >= 1"),
    ("img_shape", "[300]", "has the wrong length; img_shape needs exactly 2 entries, each >= 1"),
    ("steps", "[16, 32, 64, 100, 150, 0]", "each entry of steps must be >= 1"),
    ("aspect_ratios", "[[], [2, 3], [2, 3], [2, 3], [2, 3], [0, 3]]", "each entry of aspect_ratios must be > 0"),
    ("prior_scaling", "[0.1, -0.2]", "each entry of prior_scaling must be > 0"),
    ("color_jitter", "[0.4, -0.1, 0.4, 0.0]", "each entry of color_jitter must be >= 0"),
    ("min_scale", "0", "min_scale must be > 0 and <= 1"),
    ("alpha", "1.5", "alpha must be >= 0 and <= 1"),
    ("expand_max_ratio", "0.5", "expand_max_ratio must be >= 1"),
]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("key, text, rule", RANGE_ERRORS, ids=[f"{c[0]}={c[1]}" for c in RANGE_ERRORS])
def test_a_value_out_of_range_names_key_value_and_range(tmp_path, capsys, source, key, text, rule) -> None:
    message = _rejection(source, tmp_path, capsys, key, text)
    assert rule in message
    assert repr(yaml.safe_load(text)) in message or text in message  # the value as given


def test_range_boundaries_are_allowed() -> None:
    config = load_config(CPU, {"nms_threshold": 1.0, "min_score": 0.0, "lr_init": 0.0, "eval_start_epoch": 0,
                               "num_classes": 2, "classes": ["background", "cat"], "all_reduce_fusion_config": [],
                               "lr_end_rate": 0.0, "warmup_epochs": 0, "pre_trained_epoch_size": 0})
    assert (config.nms_threshold, config.min_score, config.num_classes) == (1.0, 0.0, 2)


def test_every_numeric_key_of_the_defaults_has_a_range() -> None:
    """The range table covers the whole reference file, so a new numeric key cannot slip in unchecked."""
    reference = config_module._reference_values()
    numeric = {key for key, value in reference.items() if config_module._numbers(value)}
    assert numeric - set(VALUE_RANGES) == {"num_ssd_boxes"}  # derived from the anchor keys instead
    assert set(VALUE_RANGES) <= set(reference)


# ---- unknown and retired keys -----------------------------------------------------------------------------

def test_an_unknown_key_in_a_full_file_is_an_error_with_a_suggestion(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"user.yaml: batch_sise: unknown key \(did you mean 'batch_size'\?\)"):
        load_config(_full(tmp_path, "batch_sise", "8"))
    far = _full(tmp_path, "optimizer", "sgd")
    with pytest.raises(ConfigError, match=r"optimizer: unknown key \(neither in config/base/ssd_defaults.yaml nor a "
                                          r"model-zoo key\); .* help line in the file's second document") as error:
        load_config(far)
    assert "did you mean" not in str(error.value)  # no far-fetched guess
    far.write_text(far.read_text() + "---\noptimizer: the optimiser of my fork\n")
    assert load_config(far).optimizer == "sgd"  # a key declared with a help line is the user's own


def test_a_copied_zoo_file_with_the_zoo_only_global_step_still_loads(tmp_path, caplog) -> None:
    """The zoo's ONNX config has global_step, which nothing reads: dropped with a warning, not an error."""
    documents = list(yaml.safe_load_all(ZOO_FILE.read_text(encoding="utf-8")))
    documents[0]["global_step"] = 0
    copied = tmp_path / "ssd_mobilenet_v1_fpn_ONNX_config.yaml"
    copied.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")
    logger = logging.getLogger("ssd")
    logger.addHandler(caplog.handler)
    try:
        config = load_config(copied)
    finally:
        logger.removeHandler(caplog.handler)
    assert "global_step" not in config and config.to_dict() == load_config(ZOO_FILE).to_dict()
    assert "global_step: ignored, a model-zoo key this code does not read" in caplog.text


@pytest.mark.parametrize("source", ["child", "cli"])
def test_the_retired_zoo_key_is_named_with_what_replaced_it(tmp_path, capsys, source) -> None:
    if source == "cli":
        with pytest.raises(SystemExit):
            parse_args(["--global_step", "0"], default_config_path=CPU)
        message = capsys.readouterr().err
    else:
        with pytest.raises(ConfigError) as error:
            load_config(_child(tmp_path, "global_step", "0"))
        message = str(error.value)
    assert "global_step is a model-zoo key this code does not read" in message
    assert "pre_trained_epoch_size" in message and "remove it" in message


# ---- train.py pre-flight: contradictions and files ----------------------------------------------------------

def _coco(root: Path, *splits: str) -> Path:
    """A COCO layout with the annotation file and image folder of each split (contents are not read here)."""
    for split in splits:
        (root / "coco" / split).mkdir(parents=True, exist_ok=True)
        (root / "coco" / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "coco" / "annotations" / f"instances_{split}.json").write_text("{}")
    return root


def _run_config(tmp_path: Path, **overrides):
    """The demo recipe on a data folder with both splits and a weights file named ckpt.ckpt."""
    data = _coco(tmp_path / "data", "train2017", "val2017")
    (tmp_path / "ckpt.ckpt").write_bytes(b"weights")
    values = {"data_path": str(data), "coco_root": "coco", "output_path": str(tmp_path / "out"),
              "feature_extractor_base_param": "", "freeze_layer": "None", "epoch_size": 6, **overrides}
    return load_config(DEMO_CONFIG, values)


def test_a_complete_run_passes_the_preflight(tmp_path) -> None:
    check_training_run(_run_config(tmp_path, run_eval=True, pre_trained=str(tmp_path / "ckpt.ckpt"),
                                   feature_extractor_base_param=str(tmp_path / "ckpt.ckpt")))
    check_training_run(_run_config(tmp_path, resume=str(tmp_path / "ckpt.ckpt")))
    check_training_run(_run_config(tmp_path, freeze_layer="backbone",
                                   feature_extractor_base_param=str(tmp_path / "ckpt.ckpt")))


CONTRADICTIONS = [
    ({"resume": "CKPT", "pre_trained": "CKPT"}, r"--resume .*ckpt.ckpt and --pre_trained .*ckpt.ckpt are both set"),
    ({"filter_weight": True}, r"--filter_weight True needs --pre_trained"),
    ({"pre_trained_epoch_size": 3}, r"--pre_trained_epoch_size 3 needs --pre_trained"),
    ({"pre_trained": "CKPT", "pre_trained_epoch_size": 6}, r"--pre_trained_epoch_size 6 leaves nothing to train "
                                                           r"with --epoch_size 6"),
    ({"run_eval": True, "eval_start_epoch": 7}, r"--run_eval True never evaluates: --eval_start_epoch 7"),
    ({"freeze_layer": "backbone_stride8"}, r"--freeze_layer backbone_stride8 would keep backbone layers at their "
                                           r"random initial values"),
]


@pytest.mark.parametrize("overrides, message", CONTRADICTIONS, ids=["resume+pre_trained", "filter_weight",
                                                                    "pre_trained_epoch_size", "nothing_left",
                                                                    "eval_never", "frozen_random_backbone"])
def test_contradicting_settings_are_refused(tmp_path, overrides, message) -> None:
    checkpoint = str(tmp_path / "ckpt.ckpt")
    config = _run_config(tmp_path, **{k: checkpoint if v == "CKPT" else v for k, v in overrides.items()})
    with pytest.raises(UsageError, match=message) as error:
        check_training_run(config)
    assert "\n" not in str(error.value)


MISSING_FILES = [  # overrides (TMP = the test's folder), key and path the message must name
    ({"pre_trained": "TMP/no.ckpt"}, "--pre_trained TMP/no.ckpt: not found"),
    ({"resume": "TMP/no.ckpt"}, "--resume TMP/no.ckpt: not found"),
    ({"resume": "TMP/data"}, "--resume TMP/data: is a folder, not a checkpoint file"),
    ({"feature_extractor_base_param": "no_backbone.ckpt"}, "feature_extractor_base_param) not found; tried: "),
    ({"feature_extractor_base_param": "no_backbone.ckpt", "freeze_layer": "backbone_stride8"},
     'or "" with --freeze_layer None to start the backbone from random weights'),
    ({"data_path": "TMP/no_data"}, "data_path TMP/no_data is not a folder; pass --data_path"),
    ({"train_data_type": "train2014"}, "training data missing: COCO annotation file "
                                       "TMP/data/coco/annotations/instances_train2014.json not found"),
    ({"run_eval": True, "val_data_type": "val2014"},
     "run_eval is True but the validation data is missing: COCO annotation file "
     "TMP/data/coco/annotations/instances_val2014.json"),
    ({"dataset": "other"}, "training data missing: dataset 'other' reads a text annotation list: set config key "
                           "anno_path"),
]


@pytest.mark.parametrize("overrides, expected", MISSING_FILES, ids=lambda case: str(case)[:40])
def test_a_missing_input_is_named_before_any_work(tmp_path, overrides, expected) -> None:
    config = _run_config(tmp_path, **{k: v.replace("TMP", str(tmp_path)) if isinstance(v, str) else v
                                      for k, v in overrides.items()})
    with pytest.raises(UsageError) as error:
        check_training_run(config)
    assert expected.replace("TMP", str(tmp_path)) in str(error.value)
    assert not (tmp_path / "data" / "MindRecord").exists()


def test_only_create_dataset_checks_only_the_training_data(tmp_path) -> None:
    check_training_run(_run_config(tmp_path, only_create_dataset=True, resume=str(tmp_path / "gone.ckpt")))


def test_a_finished_conversion_stands_in_for_missing_source_data(tmp_path) -> None:
    """Users who keep only the MindRecord files (the images deleted) can still train: no false alarm."""
    data = tmp_path / "data"
    generate_demo_dataset(data / "coco", num_train=4, num_val=2, seed=1, min_size=40, max_objects=1)
    config = load_config(DEMO_CONFIG, {"data_path": str(data), "coco_root": "coco", "mindrecord_dir": "MindRecord",
                                       "feature_extractor_base_param": "", "freeze_layer": "None"})
    ensure_mindrecord(config, for_training=True)
    shutil.rmtree(data / "coco" / "train2017")
    check_training_run(config)
    shutil.rmtree(data / "MindRecord")
    with pytest.raises(UsageError, match="train2017 not found"):
        check_training_run(config)


def test_train_py_stops_at_a_missing_validation_file_before_any_conversion(tmp_path, capsys) -> None:
    import mindspore  # noqa: F401 - loaded before the clock starts: the check itself must be quick

    data = _coco(tmp_path / "data", "train2017")
    started = time.time()
    status = run_entry(train.main, "train.py", ["--config_path", str(DEMO_CONFIG), "--data_path", str(data),
                                                "--output_path", str(tmp_path / "out"), "--run_eval", "True",
                                                "--feature_extractor_base_param", "", "--freeze_layer", "None"])
    seconds = time.time() - started
    err = capsys.readouterr().err.strip()
    assert status == USAGE_EXIT and err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("train.py: error: run_eval is True but the validation data is missing")
    assert str(data / "coco" / "annotations" / "instances_val2017.json") in err and "--run_eval False" in err
    assert seconds < 5, f"the check took {seconds:.1f} s"
    assert not (data / "MindRecord").exists() and not list(tmp_path.rglob("*.mindrecord*"))


@pytest.mark.parametrize("classes, message", [
    (["circle", "square"], "classes must start with 'background' (label 0), got 'circle' first"),
    (["background", "circle", "circle"], "classes lists 'circle' more than once"),
])
def test_a_class_list_that_would_mislabel_is_refused(classes: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(DEMO_CONFIG, {"classes": classes, "num_classes": len(classes)})
    assert message in str(refused.value)
