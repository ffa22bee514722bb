"""Config files, overrides and the command line: what a user types must either work or fail with one
clear message; the shipped files must hold the seed's recipe plus the documented new keys, each stating only
what differs from its base (``__BASE__``) while resolving to exactly the values it had when written in full."""
from __future__ import annotations

import copy
import importlib.util
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from src.model_utils import config as config_module
from src.model_utils.config import Config, ConfigError, MissingKeyError, load_config, parse_args, save_resolved_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
ASCEND = CONFIG_DIR / "ssd300_config.yaml"
GPU = CONFIG_DIR / "ssd300_config_gpu.yaml"
CPU = CONFIG_DIR / "ssd300_config_cpu.yaml"
SHIPPED_FILES = sorted(CONFIG_DIR.glob("*.yaml"))
DEFAULTS = CONFIG_DIR / "base" / "ssd_defaults.yaml"
TEST_DATA = Path(__file__).resolve().parent / "data"

# The seed's ssd300 keys in the seed's order (REFERENCE_SSD.md §1); ours must keep them and that order.
SEED_KEYS = """enable_modelarts data_url train_url checkpoint_url run_distribute enable_profiling data_path output_path
load_path device_target checkpoint_path checkpoint_file_path model_name img_shape num_ssd_boxes match_threshold
nms_threshold min_score max_boxes all_reduce_fusion_config lr_init lr_end_rate warmup_epochs momentum weight_decay
ssd_vgg_bn pretrain_vgg_bn num_default extras_in_channels extras_out_channels extras_strides extras_ratio
feature_size min_scale max_scale aspect_ratios steps prior_scaling gamma alpha dataset lr mode_sink device_id
device_num epoch_size batch_size loss_scale pre_trained pre_trained_epoch_size save_checkpoint_epochs
only_create_dataset eval_start_epoch eval_interval run_eval filter_weight freeze_layer save_best_ckpt result_path
img_path drop feature_extractor_base_param checkpoint_filter_list mindrecord_dir coco_root train_data_type
val_data_type instances_set classes num_classes voc_json voc_root image_dir anno_path file_name file_format""".split()

# Keys our code added; every shipped file has them with these values.
NEW_KEYS_SAME_VALUE = {
    "expand_max_ratio": 4.0, "weight_decay_bn_bias": False, "resume": "", "log_interval": 10,
    "keep_checkpoint_max": 5, "seed": 1, "num_parallel_workers": 4, "val_image_dir": "", "val_anno_path": "",
    "save_ckpt_all_ranks": False, "num_addition_layers": 4,
}

# ---- the seed's recipe (REFERENCE_SSD.md §1) ----
# Keys with the same value in all ten seed files.
SEED_COMMON = {
    "match_threshold": 0.5, "nms_threshold": 0.6, "min_score": 0.1, "max_boxes": 100, "warmup_epochs": 2,
    "momentum": 0.9, "ssd_vgg_bn": False, "pretrain_vgg_bn": False, "extras_strides": [1, 1, 2, 2, 2, 2],
    "extras_ratio": [0.2, 0.2, 0.2, 0.25, 0.5, 0.25], "max_scale": 0.95, "prior_scaling": [0.1, 0.2],
    "gamma": 2.0, "dataset": "coco", "lr": 0.05, "mode_sink": "sink", "device_id": 0, "device_num": 1,
    "epoch_size": 500, "loss_scale": 1024, "pre_trained": "", "pre_trained_epoch_size": 0,
    "save_checkpoint_epochs": 10, "only_create_dataset": False, "eval_start_epoch": 40, "eval_interval": 1,
    "run_eval": False, "filter_weight": False, "freeze_layer": "None", "save_best_ckpt": True,
    "train_data_type": "train2017", "val_data_type": "val2017", "num_classes": 81, "file_name": "ssd",
    "file_format": "MINDIR", "data_path": "./data", "output_path": "./output",
}
_LADDER_ANCHORS = {  # the SSD scale ladder of the 300 px networks
    "img_shape": [300, 300], "num_default": [3, 6, 6, 6, 6, 6], "min_scale": 0.2,
    "aspect_ratios": [[], [2, 3], [2, 3], [2, 3], [2, 3], [2, 3]], "alpha": 0.75, "lr_init": 0.001,
    "lr_end_rate": 0.001, "weight_decay": 0.00015, "use_anchor_generator": False, "use_global_norm": False,
    "checkpoint_filter_list": ["multi_loc_layers", "multi_cls_layers"], "feature_extractor_base_param": "",
}
_FPN = {  # both 640 px FPN networks: grid anchors, global-norm clipping
    "img_shape": [640, 640], "num_ssd_boxes": 51150, "num_default": [6, 6, 6, 6, 6],
    "extras_in_channels": [256, 512, 1024, 256, 256], "extras_out_channels": [256, 256, 256, 256, 256],
    "feature_size": [80, 40, 20, 10, 5], "min_scale": 0.2, "aspect_ratios": [[2, 3]] * 6,
    "steps": [8, 16, 32, 64, 128], "alpha": 0.25, "lr_init": 0.01333, "lr_end_rate": 0.0,
    "use_anchor_generator": True, "use_global_norm": True,
    "checkpoint_filter_list": ["network.multi_box.cls_layers.0.weight", "network.multi_box.cls_layers.0.bias",
                               "network.multi_box.loc_layers.0.weight", "network.multi_box.loc_layers.0.bias"],
}
NETWORK_RECIPES = {
    "ssd300": {**_LADDER_ANCHORS, "num_ssd_boxes": 1917, "all_reduce_fusion_config": [29, 58, 89],
               "extras_in_channels": [256, 576, 1280, 512, 256, 256],
               "extras_out_channels": [576, 1280, 512, 256, 256, 128], "feature_size": [19, 10, 5, 3, 2, 1],
               "steps": [16, 32, 64, 100, 150, 300]},
    "ssd_mobilenet_v1": {**_LADDER_ANCHORS, "num_ssd_boxes": 1917, "all_reduce_fusion_config": [29, 58, 89],
                         "extras_in_channels": [256, 512, 1024, 512, 256, 256],
                         "extras_out_channels": [512, 1024, 512, 256, 256, 128],
                         "feature_size": [19, 10, 5, 3, 2, 1], "steps": [16, 32, 64, 100, 150, 300]},
    "ssd_vgg16": {**_LADDER_ANCHORS, "num_ssd_boxes": 7308, "all_reduce_fusion_config": [20, 41, 62],
                  "extras_in_channels": [256, 512, 1024, 512, 256, 256],
                  "extras_out_channels": [512, 1024, 512, 256, 256, 256], "feature_size": [38, 19, 10, 5, 3, 1],
                  "steps": [8, 16, 32, 64, 100, 300]},
    "ssd_mobilenet_v1_fpn": {**_FPN, "all_reduce_fusion_config": [29, 58, 89], "weight_decay": 4e-05,
                             "feature_extractor_base_param": "./checkpoint/mobilenet_v1.ckpt"},
    "ssd_resnet50_fpn": {**_FPN, "all_reduce_fusion_config": [90, 183, 279], "weight_decay": 0.0004,
                         "feature_extractor_base_param": "./checkpoint/resnet50.ckpt"},
}
# Seed file -> (model_name, the file's own values, the num_ssd_boxes it writes). The stated box count stays
# as the seed wrote it (-1 = derive) and must equal the derived one when given.
SEED_FILES = {
    "ssd300_config.yaml": ("ssd300", {"device_target": "Ascend", "batch_size": 32, "use_float16": False}, 1917),
    "ssd300_config_gpu.yaml": ("ssd300", {"device_target": "GPU", "batch_size": 32, "use_float16": True}, 1917),
    "ssd_mobilenet_v1_300_config_gpu.yaml": (
        "ssd_mobilenet_v1", {"device_target": "GPU", "batch_size": 32, "use_float16": True}, 1917),
    "ssd_mobilenet_v1_fpn_config.yaml": (
        "ssd_mobilenet_v1_fpn", {"device_target": "Ascend", "batch_size": 32, "use_float16": False}, -1),
    "ssd_mobilenet_v1_fpn_config_gpu.yaml": (
        "ssd_mobilenet_v1_fpn", {"device_target": "GPU", "batch_size": 16, "use_float16": False}, -1),
    "ssd_mobilenet_v1_fpn_ONNX_config.yaml": (
        "ssd_mobilenet_v1_fpn", {"device_target": "GPU", "batch_size": 1, "use_float16": False,
                                 "checkpoint_file_path": "./checkpoint/ssdmobilenetv1fpn.ckpt",
                                 "feature_extractor_base_param": ""}, -1),
    "ssd_resnet50_fpn_config.yaml": (
        "ssd_resnet50_fpn", {"device_target": "Ascend", "batch_size": 32, "use_float16": True}, -1),
    "ssd_resnet50_fpn_config_gpu.yaml": (
        "ssd_resnet50_fpn", {"device_target": "GPU", "batch_size": 16, "use_float16": False}, -1),
    "ssd_vgg16_config.yaml": ("ssd_vgg16", {"device_target": "Ascend", "batch_size": 32, "use_float16": False}, 7308),
    "ssd_vgg16_config_gpu.yaml": (
        "ssd_vgg16", {"device_target": "GPU", "batch_size": 32, "use_float16": False, "min_scale": 0.1,
                      "all_reduce_fusion_config": []}, 7308),
}

# ---- files derived from another shipped file: every differing key, with its value ----
_CPU = {"device_target": "CPU", "use_float16": False, "batch_size": 8, "epoch_size": 60, "mode_sink": "no_sink",
        "eval_start_epoch": 1, "eval_interval": 5, "save_checkpoint_epochs": 5, "use_expand": True,
        "color_jitter": [0.4, 0.4, 0.4, 0.05], "eval_batch_size": 8}
_CPU_640 = {**_CPU, "batch_size": 4, "eval_batch_size": 4, "feature_extractor_base_param": ""}
DERIVED_FILES = {  # file: (base file, changes); use_float16 is listed only where the base has it True
    "ssd300_config_gpu.yaml": ("ssd300_config.yaml", {"device_target": "GPU", "use_float16": True}),
    "ssd300_config_cpu.yaml": ("ssd300_config.yaml", {k: v for k, v in _CPU.items() if k != "use_float16"}),
    "ssd_mobilenet_v1_300_config_cpu.yaml": ("ssd_mobilenet_v1_300_config_gpu.yaml", _CPU),
    "ssd_vgg16_config_cpu.yaml": ("ssd_vgg16_config.yaml", {k: v for k, v in _CPU.items() if k != "use_float16"}),
    "ssd_mobilenet_v1_fpn_config_cpu.yaml": (
        "ssd_mobilenet_v1_fpn_config.yaml", {k: v for k, v in _CPU_640.items() if k != "use_float16"}),
    "ssd_resnet50_fpn_config_cpu.yaml": ("ssd_resnet50_fpn_config.yaml", _CPU_640),
    "ssd_mobilenet_v1_fpn_config_gpu.yaml": ("ssd_mobilenet_v1_fpn_config.yaml",
                                             {"device_target": "GPU", "batch_size": 16}),
    "ssd_mobilenet_v1_fpn_ONNX_config.yaml": (
        "ssd_mobilenet_v1_fpn_config_gpu.yaml",
        {"batch_size": 1, "checkpoint_file_path": "./checkpoint/ssdmobilenetv1fpn.ckpt",
         "feature_extractor_base_param": ""}),
    "ssd_resnet50_fpn_config_gpu.yaml": ("ssd_resnet50_fpn_config.yaml",
                                         {"device_target": "GPU", "batch_size": 16, "use_float16": False}),
    "ssd_vgg16_config_gpu.yaml": ("ssd_vgg16_config.yaml",
                                  {"device_target": "GPU", "min_scale": 0.1, "all_reduce_fusion_config": []}),
    "ssd300_demo_config_cpu.yaml": (  # its header comment lists these departures
        "ssd300_config_cpu.yaml",
        {"data_path": "./demo_data", "output_path": "./output/demo", "checkpoint_file_path": "",
         "freeze_layer": "backbone_stride8", "warmup_epochs": 0.3, "alpha": 0.25, "use_expand": False,
         "lr": 0.02, "epoch_size": 4, "save_checkpoint_epochs": 1,
         "feature_extractor_base_param": "demo_data/mobilenet_v2_imagenet.ckpt",
         "mindrecord_dir": "MindRecord", "coco_root": "coco",
         "classes": ["background", "circle", "square", "triangle", "plus"], "num_classes": 5}),
    "ssd300_demo_full_config_cpu.yaml": (  # the demo recipe, longer
        "ssd300_demo_config_cpu.yaml", {"output_path": "./output/demo_full", "epoch_size": 12}),
}


def _documents(path: Path) -> list:
    with open(path, encoding="utf-8") as stream:
        return list(yaml.safe_load_all(stream))


def _resolved_documents(path: Path) -> tuple[dict, dict, dict]:
    """(values, help lines, allowed values) of a file after its __BASE__ chain is merged in."""
    config_file = config_module._read_config_file(path)
    return copy.deepcopy(config_file.values), dict(config_file.help), copy.deepcopy(config_file.choices)


def _write_variant(tmp_path: Path, edit, base: Path = CPU, name: str = "variant.yaml",
                   help_lines: dict | None = None) -> Path:
    """A self-contained copy of ``base`` whose values were changed by ``edit`` (a user's own YAML): one
    document, or two when ``help_lines`` declares keys of the user's own."""
    values = _resolved_documents(base)[0]
    edit(values)
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all([values] + ([help_lines] if help_lines else []), sort_keys=False),
                    encoding="utf-8")
    return path


def _cli_error(capsys, argv: list[str]) -> str:
    """The single stderr line of a rejected command line (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv, default_config_path=CPU)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


# ---- the shipped files -------------------------------------------------------------------------------

def _same(actual: Any, expected: Any) -> bool:
    """Equal and of the same type, element by element (True is not 1, and 0.0001 is not the string '1e-4')."""
    if isinstance(expected, list):
        return isinstance(actual, list) and len(actual) == len(expected) and all(map(_same, actual, expected))
    return type(actual) is type(expected) and actual == expected


def _mismatches(values: dict, expected: dict) -> dict:
    return {key: (values.get(key, "<missing>"), want) for key, want in expected.items()
            if not _same(values.get(key), want)}


def test_every_shipped_file_is_a_seed_file_or_a_documented_variant() -> None:
    assert {path.name for path in SHIPPED_FILES} == set(SEED_FILES) | set(DERIVED_FILES)
    cpu_models = {load_config(path).model_name for path in SHIPPED_FILES
                  if path.name.endswith("_config_cpu.yaml") and "demo" not in path.name}
    assert cpu_models == set(NETWORK_RECIPES)  # one CPU variant per network


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.name)
def test_shipped_file_loads_with_seed_keys_in_order_and_full_help(path: Path) -> None:
    cfg = load_config(path)
    keys = list(cfg.to_dict())
    assert [key for key in keys if key in SEED_KEYS] == SEED_KEYS
    values, help_doc, choices = _resolved_documents(path)
    assert list(help_doc) == list(values), "every key needs exactly one help line, in file order"
    assert all(isinstance(text, str) and text.strip() and "\n" not in text for text in help_doc.values())
    assert all(cfg.help(key) == help_doc[key] for key in keys)
    assert choices["device_target"] == ["Ascend", "GPU", "CPU"]
    assert choices["dataset"] == ["coco", "voc", "other", "yolo"]
    assert choices["freeze_layer"] == ["None", "backbone", "backbone_stride4", "backbone_stride8", "backbone_stride16"]
    for key, value in values.items():
        if isinstance(value, str):
            assert not value.startswith("/"), f"{key} = {value!r}: shipped paths must be relative"
    assert _mismatches(cfg.to_dict(), NEW_KEYS_SAME_VALUE) == {}
    assert "global_step" not in values  # unused by the code; the ONNX file's header says it was left out


def test_shipped_files_share_keys_key_order_help_and_choices() -> None:
    """One key set everywhere, so that --config_path can switch networks and every key has the same meaning."""
    reference_values, reference_help, reference_choices = _resolved_documents(ASCEND)
    for path in SHIPPED_FILES:
        values, help_doc, choices = _resolved_documents(path)
        assert list(values) == list(reference_values), path.name
        assert help_doc == reference_help, path.name
        assert choices == reference_choices, path.name


@pytest.mark.parametrize("name", SEED_FILES)
def test_seed_file_holds_the_seed_recipe(name: str) -> None:
    model_name, file_values, stated_boxes = SEED_FILES[name]
    cfg = load_config(CONFIG_DIR / name)
    values = cfg.to_dict()
    assert cfg.model_name == model_name
    assert _mismatches(values, {**SEED_COMMON, **NETWORK_RECIPES[model_name], **file_values}) == {}
    assert _resolved_documents(CONFIG_DIR / name)[0]["num_ssd_boxes"] == stated_boxes
    assert cfg.classes[:3] == ["background", "person", "bicycle"] and cfg.classes[-1] == "toothbrush"
    assert len(set(cfg.classes)) == len(cfg.classes) == 81


def test_ssd_ladder_box_count_is_the_sum_over_levels() -> None:
    """The 300 px counts of REFERENCE_SSD.md §1.2, written out: cells per level times boxes per cell."""
    for name, expected in (("ssd300_config.yaml", 1917), ("ssd_vgg16_config.yaml", 7308)):
        cfg = load_config(CONFIG_DIR / name)
        assert sum(f * f * n for f, n in zip(cfg.feature_size, cfg.num_default)) == cfg.num_ssd_boxes == expected
    fpn = load_config(CONFIG_DIR / "ssd_resnet50_fpn_config.yaml")
    assert sum((640 // step) ** 2 * 6 for step in fpn.steps) == fpn.num_ssd_boxes == 51150


@pytest.mark.parametrize("name", DERIVED_FILES)
def test_derived_file_differs_from_its_base_only_where_documented(name: str) -> None:
    base_name, changes = DERIVED_FILES[name]
    base = load_config(CONFIG_DIR / base_name).to_dict()
    derived = load_config(CONFIG_DIR / name).to_dict()
    assert list(derived) == list(base)
    assert {key for key in base if not _same(derived[key], base[key])} == set(changes)
    assert _mismatches(derived, changes) == {}


# ---- inheritance: shipped files state only what differs; the help and allowed values live once ----------

def _strictly_equal(actual: Any, expected: Any) -> bool:
    """Equal with the same types all the way down (2 is not 2.0, True is not 1)."""
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and list(actual) == list(expected)
                and all(_strictly_equal(actual[key], expected[key]) for key in expected))
    return _same(actual, expected)


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.name)
def test_shipped_file_resolves_to_the_values_it_had_before_inheritance(path: Path) -> None:
    """tests/data/resolved_configs.json: every shipped file's values when each file was written out in full.

    The fixture's keys are sorted (the key order is checked against the zoo-format copy below). The help lines
    were then the same in all sixteen files, so the zoo-format copy's help document is each file's help from
    before."""
    before = json.loads((TEST_DATA / "resolved_configs.json").read_text(encoding="utf-8"))[path.name]
    config = load_config(path)
    assert _strictly_equal(json.loads(json.dumps(config.to_dict(), sort_keys=True)), before)
    help_before = _documents(TEST_DATA / "zoo_format_ssd300_config.yaml")[1]
    assert {key: config.help(key) for key in before} == help_before
    assert all(text.strip() for text in help_before.values())


def test_help_and_allowed_values_live_only_in_the_defaults_file() -> None:
    assert len(_documents(DEFAULTS)) == 3
    for path in SHIPPED_FILES:
        documents = _documents(path)
        assert len(documents) == 1 and "__BASE__" in documents[0], path.name


def test_a_full_model_zoo_file_still_loads_unchanged() -> None:
    """Users copy and edit self-contained zoo files: the one that shipped before inheritance gives the same config."""
    zoo_file = TEST_DATA / "zoo_format_ssd300_config.yaml"
    assert len(_documents(zoo_file)) == 3 and "__BASE__" not in zoo_file.read_text(encoding="utf-8")
    zoo, shipped = load_config(zoo_file), load_config(ASCEND)
    assert _strictly_equal(zoo.to_dict(), shipped.to_dict())
    assert all(zoo.help(key) == shipped.help(key) for key in shipped.to_dict())


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: p.name)
def test_resolved_config_file_is_self_contained_and_reloads_to_the_same_values(path: Path, tmp_path: Path) -> None:
    config = load_config(path, {"batch_size": 3})
    saved = save_resolved_config(config, tmp_path / "resolved.yaml")
    assert len(_documents(saved)) == 3 and "__BASE__" not in saved.read_text(encoding="utf-8")
    again = load_config(saved)
    assert _strictly_equal(again.to_dict(), config.to_dict())
    assert all(again.help(key) == config.help(key) for key in config.to_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["resolved.yaml"]  # no temporary file left behind


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_child_overrides_its_base_and_later_bases_win(tmp_path: Path) -> None:
    _write(tmp_path / "fast.yaml", "__BASE__: base.yaml\nbatch_size: 2\nlr: 0.1\n")
    (tmp_path / "nested").mkdir()
    _write(tmp_path / "base.yaml", f"__BASE__: {CPU}\nepoch_size: 3\n")
    child = _write(tmp_path / "nested" / "run.yaml", "__BASE__: [../base.yaml, ../fast.yaml]\nlr: 0.2\n")
    config = load_config(child)
    assert (config.epoch_size, config.batch_size, config.lr) == (3, 2, 0.2)
    assert config.help("lr") == load_config(CPU).help("lr") and config.model_name == "ssd300"


@pytest.mark.parametrize("text, message", [
    ("__BASE__: base.yaml\nbatch_sise: 2\n", r"run.yaml \(values document\): unknown key batch_sise .* closest "
                                               r"valid key is batch_size"),
    ("__BASE__: missing.yaml\n", r"run.yaml: __BASE__ file missing.yaml not found"),
    ("__BASE__: base.yaml\nbatch_size: [2]\n", r"run.yaml: batch_size"),
    ("__BASE__: base.yaml\nuse_expand: 1\n", r"run.yaml: use_expand"),
    ("__BASE__: base.yaml\ndevice_target: TPU\n", r"'TPU' is not an allowed value of device_target"),
    ("__BASE__: 7\n", r"run.yaml: __BASE__ must be a file name or a list of file names"),
])
def test_inheritance_mistakes_are_one_error_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    _write(tmp_path / "base.yaml", f"__BASE__: {CPU}\n")
    with pytest.raises(ConfigError, match=message) as error:
        load_config(_write(tmp_path / "run.yaml", text))
    assert "\n" not in str(error.value)


def test_child_numbers_are_checked_like_command_line_values(tmp_path: Path) -> None:
    _write(tmp_path / "base.yaml", f"__BASE__: {CPU}\n")
    config = load_config(_write(tmp_path / "run.yaml", "__BASE__: base.yaml\nlr: 1\nwarmup_epochs: 0.5\n"))
    assert config.lr == 1.0 and type(config.lr) is float  # as --lr 1 gives
    assert config.warmup_epochs == 0.5  # a float may replace an integer, as the demo's 0.3 replaces 2


def test_a_mapping_value_replaces_the_base_mapping_whole(tmp_path: Path) -> None:
    base = _write_variant(tmp_path, lambda v: v.update(optimizer={"name": "momentum", "momentum": 0.9}),
                          name="base.yaml", help_lines={"optimizer": "a key of the user's own"})
    child = _write(tmp_path / "run.yaml", "__BASE__: base.yaml\noptimizer: {momentum: 1, nesterov: true}\n")
    assert load_config(child).to_dict()["optimizer"] == {"momentum": 1, "nesterov": True}
    assert load_config(base).optimizer.name == "momentum"
    _write(child, "__BASE__: base.yaml\noptimizer: {momentum: fast}\n")
    with pytest.raises(ConfigError, match=r"run.yaml: optimizer.momentum: expected a number, got 'fast'"):
        load_config(child)
    _write(child, "__BASE__: base.yaml\noptimizer: sgd\n")
    with pytest.raises(ConfigError, match=r"run.yaml: optimizer: expected a mapping"):
        load_config(child)


def test_a_base_cycle_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "__BASE__: b.yaml\nbatch_size: 2\n")
    _write(tmp_path / "b.yaml", "__BASE__: a.yaml\nbatch_size: 3\n")
    with pytest.raises(ConfigError, match=r"__BASE__ makes a cycle \(.*a.yaml -> .*b.yaml -> .*a.yaml\)"):
        load_config(tmp_path / "a.yaml")


# ---- command-line overrides ----------------------------------------------------------------------------

def test_cli_overrides_scalars_bools_lists_and_strings() -> None:
    cfg = parse_args(["--batch_size", "4", "--lr", "1", "--lr_init=1e-4", "--run_eval", "true",
                      "--use_expand=0", "--img_shape", "[320, 320]", "--prior_scaling", "[1, 2]",
                      "--checkpoint_file_path", "123", "--data_path=/tmp/coco", "--freeze_layer", "backbone",
                      "--steps", "(16, 32, 64, 100, 150, 320)"], default_config_path=CPU)
    assert cfg.batch_size == 4 and type(cfg.batch_size) is int
    assert cfg.lr == 1.0 and type(cfg.lr) is float  # an int may stand in for a float, which stays float
    assert cfg.lr_init == 1e-4 and type(cfg.lr_init) is float
    assert cfg.run_eval is True and cfg.use_expand is False
    assert cfg.img_shape == [320, 320]
    assert cfg.prior_scaling == [1.0, 2.0] and all(type(v) is float for v in cfg.prior_scaling)
    assert cfg.checkpoint_file_path == "123"  # string keys take the text as is
    assert cfg.data_path == "/tmp/coco" and cfg.freeze_layer == "backbone"
    assert cfg.steps == [16, 32, 64, 100, 150, 320]
    assert cfg.device_target == "CPU"  # everything else still comes from the chosen default file


@pytest.mark.parametrize("text, expected", [("True", True), ("False", False), ("true", True), ("false", False),
                                            ("1", True), ("0", False)])
def test_cli_bool_spellings(text: str, expected: bool) -> None:
    assert parse_args(["--run_distribute", text], default_config_path=CPU).run_distribute is expected
    assert parse_args([f"--run_distribute={text}"], default_config_path=CPU).run_distribute is expected


def test_bare_bool_flag_means_true_and_config_path_picks_the_file() -> None:
    cfg = parse_args(["--config_path", str(GPU), "--run_eval", "--batch_size=2"])
    assert cfg.run_eval is True and cfg.batch_size == 2 and cfg.device_target == "GPU"
    assert parse_args([f"--config_path={ASCEND}"]).device_target == "Ascend"


def test_cli_anchor_override_rederives_num_ssd_boxes() -> None:
    cfg = parse_args(["--feature_size", "[20, 10, 5, 3, 2, 1]"], default_config_path=CPU)
    assert cfg.num_ssd_boxes == 20 * 20 * 3 + (10 * 10 + 5 * 5 + 3 * 3 + 2 * 2 + 1) * 6 == 2034


def test_unknown_key_names_closest_key(capsys) -> None:
    err = _cli_error(capsys, ["--batchsize", "4"])
    assert "--batchsize" in err and "--batch_size" in err


@pytest.mark.parametrize("argv, named", [
    (["--batch_size", "abc"], "--batch_size"),
    (["--batch_size", "2.5"], "--batch_size"),
    (["--img_shape", "300"], "--img_shape"),
    (["--img_shape", "[300, a]"], "--img_shape[1]"),
    (["--aspect_ratios", "[[], [2.5]]"], "--aspect_ratios[1][0]"),
    (["--run_eval", "maybe"], "--run_eval"),
    (["--lr", "True"], "--lr"),
    (["--lr", "fast"], "--lr"),
    (["--batch_size"], "--batch_size"),
])
def test_wrong_type_is_one_error_naming_the_key(capsys, argv: list[str], named: str) -> None:
    err = _cli_error(capsys, argv)
    assert f"error: {named}" in err


def test_value_outside_choices_is_an_error(capsys) -> None:
    err = _cli_error(capsys, ["--dataset", "cocoo"])
    assert "--dataset" in err and "'cocoo'" in err and "['coco', 'voc', 'other', 'yolo']" in err
    err = _cli_error(capsys, ["--device_target=TPU"])
    assert "--device_target" in err and "Ascend" in err


def test_stray_argument_and_missing_file_are_one_line_errors(capsys) -> None:
    assert "'train'" in _cli_error(capsys, ["train"])
    err = _cli_error(capsys, ["--config_path", "no_such_config.yaml"])
    assert "no_such_config.yaml" in err and "--config_path" in err


def test_help_lists_every_key_with_help_and_default(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--batch_size", "not-checked-under-help", "--help"], default_config_path=CPU,
                   description="Train SSD300.")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "Train SSD300." in out and "--config_path" in out
    values, help_doc, _ = _resolved_documents(CPU)
    lines = out.splitlines()
    for key in values:
        flag_line = next(i for i, line in enumerate(lines) if line.strip().startswith(f"--{key} "))
        assert help_doc[key] in lines[flag_line + 1], key
    assert "Training batch size per device (default: 8)" in out
    assert "choices: coco, voc, other" in out
    assert "(81 items)" in out  # the class list is shortened, not dumped


def test_help_shows_the_file_chosen_by_config_path(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(["-h", "--config_path", str(ASCEND)], default_config_path=CPU)
    assert "Training batch size per device (default: 32)" in capsys.readouterr().out


# ---- load_config overrides and derived keys --------------------------------------------------------------

def test_load_config_overrides_are_checked_like_cli_values() -> None:
    cfg = load_config(CPU, overrides={"batch_size": 2, "lr": 1, "img_shape": (64, 64), "run_eval": True})
    assert cfg.batch_size == 2 and cfg.lr == 1.0 and type(cfg.lr) is float
    assert cfg.img_shape == [64, 64] and cfg.run_eval is True
    with pytest.raises(ConfigError, match=r"batch_size.*integer.*'2'"):
        load_config(CPU, overrides={"batch_size": "2"})
    with pytest.raises(ConfigError, match=r"True or False"):
        load_config(CPU, overrides={"run_eval": 1})
    with pytest.raises(ConfigError, match=r"closest valid key is num_classes"):
        load_config(CPU, overrides={"num_class": 3})
    with pytest.raises(ConfigError, match=r"'other'"):
        load_config(CPU, overrides={"dataset": "others"})


def test_overridden_list_does_not_alias_the_callers_object() -> None:
    shape = [64, 64]
    cfg = load_config(CPU, overrides={"img_shape": shape})
    shape.append(3)
    assert cfg.img_shape == [64, 64]


def test_class_count_must_match_class_names() -> None:
    cfg = load_config(CPU, overrides={"classes": ["background", "cat", "dog"], "num_classes": 3})
    assert cfg.classes[2] == "dog" and cfg.num_classes == 3
    with pytest.raises(ConfigError, match=r"num_classes is 3 but classes lists 81 names"):
        load_config(CPU, overrides={"num_classes": 3})


def test_num_ssd_boxes_minus_one_or_matching_is_fine_else_error(tmp_path: Path) -> None:
    assert load_config(CPU, overrides={"num_ssd_boxes": -1}).num_ssd_boxes == 1917
    assert load_config(CPU, overrides={"num_ssd_boxes": 1917}).num_ssd_boxes == 1917
    derived_file = _write_variant(tmp_path, lambda v: v.update(num_ssd_boxes=-1))
    assert load_config(derived_file).num_ssd_boxes == 1917
    without_key = _write_variant(tmp_path, lambda v: v.pop("num_ssd_boxes"), name="no_count.yaml")
    assert load_config(without_key).num_ssd_boxes == 1917
    wrong = _write_variant(tmp_path, lambda v: v.update(num_ssd_boxes=1000), name="wrong.yaml")
    with pytest.raises(ValueError) as error:
        load_config(wrong)
    message = str(error.value)
    assert "wrong.yaml" in message and "num_ssd_boxes" in message and "1000" in message and "1917" in message
    assert "-1" in message
    with pytest.raises(ValueError, match=r"num_ssd_boxes is 5 .* 1917"):
        load_config(CPU, overrides={"num_ssd_boxes": 5})


def test_inconsistent_anchor_keys_name_the_file(tmp_path: Path) -> None:
    broken = _write_variant(tmp_path, lambda v: v.update(num_default=[3, 6, 6]))
    with pytest.raises(ConfigError, match=r"variant.yaml.*num_default"):
        load_config(broken)


# ---- user files: missing keys, YAML details ---------------------------------------------------------------

def test_missing_required_key_names_key_file_and_fix(tmp_path: Path) -> None:
    no_shape = _write_variant(tmp_path, lambda v: v.pop("img_shape"), name="my_ssd.yaml")
    with pytest.raises(MissingKeyError) as error:
        load_config(no_shape)  # deriving num_ssd_boxes needs img_shape
    message = str(error.value)
    assert "'img_shape'" in message and "my_ssd.yaml" in message and "img_shape: <value>" in message

    no_batch = _write_variant(tmp_path, lambda v: v.pop("batch_size"), name="no_batch.yaml")
    cfg = load_config(no_batch)
    with pytest.raises(AttributeError, match=r"'batch_size' is missing from .*no_batch.yaml"):
        cfg.batch_size
    with pytest.raises(KeyError):
        cfg.batch_size
    assert getattr(cfg, "batch_size", 7) == 7 and "batch_size" not in cfg


def test_misspelt_attribute_suggests_the_key() -> None:
    cfg = load_config(CPU)
    with pytest.raises(MissingKeyError, match=r"did you mean 'batch_size'"):
        cfg.batchsize
    with pytest.raises(MissingKeyError, match=r"'batchsize'"):
        cfg.help("batchsize")


def test_single_document_user_file_without_help_or_choices(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, lambda v: v.update(weight_decay="4e-5"))
    path.write_text(path.read_text().replace("'4e-5'", "4e-5"))  # as a user would type it
    cfg = load_config(path)
    assert cfg.weight_decay == 4e-5 and type(cfg.weight_decay) is float  # PyYAML alone would give a string
    assert cfg.help("batch_size") == ""
    with pytest.raises(ConfigError, match="'anything' is not an allowed value of dataset"):
        load_config(path, overrides={"dataset": "anything"})  # no choices document: the code's allowed values hold


def test_duplicate_key_and_bad_documents_are_rejected(tmp_path: Path) -> None:
    text = (TEST_DATA / "zoo_format_ssd300_config.yaml").read_text()
    duplicated = tmp_path / "dup.yaml"
    duplicated.write_text(text.replace("batch_size: 32\n", "batch_size: 32\nbatch_size: 16\n", 1))
    with pytest.raises(ConfigError, match=r"duplicate key 'batch_size'"):
        load_config(duplicated)
    bad_choice = tmp_path / "choice.yaml"
    bad_choice.write_text(text.replace('dataset: "coco"', 'dataset: "cocoo"', 1))
    with pytest.raises(ConfigError, match=r"choice.yaml: 'cocoo' is not an allowed value of dataset"):
        load_config(bad_choice)
    reserved = _write_variant(tmp_path, lambda v: v.update(to_dict=1), name="reserved.yaml")
    with pytest.raises(ConfigError, match=r"'to_dict' cannot be a config key"):
        load_config(reserved)
    four_docs = tmp_path / "four.yaml"
    four_docs.write_text(text + "\n---\na: 1\n")
    with pytest.raises(ConfigError, match=r"4 YAML documents"):
        load_config(four_docs)


def test_mapping_values_become_configs_and_merge_on_override(tmp_path: Path, capsys) -> None:
    path = _write_variant(tmp_path, lambda v: v.update(optimizer={"name": "momentum", "momentum": 0.9}),
                          help_lines={"optimizer": "a key of the user's own"})
    cfg = parse_args(["--optimizer", "{momentum: 1}"], default_config_path=path)
    assert isinstance(cfg.optimizer, Config)
    assert cfg.optimizer.name == "momentum" and cfg.optimizer.momentum == 1.0
    assert cfg.to_dict()["optimizer"] == {"name": "momentum", "momentum": 1.0}
    with pytest.raises(SystemExit):
        parse_args(["--optimizer", "{momentun: 1}"], default_config_path=path)
    assert "'momentum'" in capsys.readouterr().err


def test_relative_path_resolves_from_the_repo_anywhere(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config("config/ssd300_config_cpu.yaml").device_target == "CPU"


# ---- the Config object ----------------------------------------------------------------------------------

def test_config_object_behaviour() -> None:
    cfg = load_config(CPU)
    as_dict = cfg.to_dict()
    as_dict["img_shape"].append(3)
    assert cfg.img_shape == [300, 300]  # to_dict hands out copies
    cfg.rank = 1
    assert cfg.rank == 1 and cfg.to_dict()["rank"] == 1
    text = repr(cfg)
    assert str(CPU) in text and "  batch_size: 8" in text and "'toothbrush'" in text
    assert "batch_size" in dir(cfg)
    restored = pickle.loads(pickle.dumps(cfg))  # dataset worker processes receive the config pickled
    assert restored.to_dict() == cfg.to_dict() and restored.help("lr") == cfg.help("lr")
    assert copy.deepcopy(cfg).to_dict() == cfg.to_dict()
    with pytest.raises(MissingKeyError, match="in-memory"):
        Config({"a": 1}).b


# ---- no work at import ---------------------------------------------------------------------------------------

def test_import_reads_no_argv_and_no_file(monkeypatch) -> None:
    """Importing the module must not parse sys.argv or YAML (the seed's import-time singleton did)."""
    monkeypatch.setattr(sys, "argv", ["train.py", "--batchsize", "abc", "--help"])
    yaml_reads = []
    monkeypatch.setattr(yaml, "load_all", lambda *a, **k: yaml_reads.append(a) or iter(()))
    spec = importlib.util.spec_from_file_location("fresh_config_copy", config_module.__file__)
    fresh = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, fresh)  # dataclasses look their module up while defining
    spec.loader.exec_module(fresh)  # would exit or raise if it parsed the argv above
    assert yaml_reads == []
    assert not any(isinstance(value, fresh.Config) for value in vars(fresh).values())


def test_parse_args_reads_sys_argv_only_when_called(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", "--batch_size", "3"])
    assert parse_args(default_config_path=CPU).batch_size == 3


def test_a_saved_run_config_older_than_the_later_keys_takes_their_defaults(tmp_path: Path) -> None:
    """config.yaml files beside older checkpoints (and model-zoo files) lack the keys added since; they still load."""
    from src.model_utils.config import LATER_KEYS

    config = load_config(ASCEND, {"batch_size": 3})
    saved = save_resolved_config(config, tmp_path / "config.yaml")
    documents = _documents(saved)
    for document in documents:
        for key in LATER_KEYS:
            document.pop(key, None)
    documents[2]["file_format"] = ["MINDIR", "AIR", "ONNX"]  # the allowed values of its day
    saved.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")
    old = load_config(saved)
    assert _strictly_equal(dict(sorted(old.to_dict().items())), dict(sorted(config.to_dict().items())))
    assert old.help("quantize") == config.help("quantize")
    with pytest.raises(ConfigError, match="quantize"):
        load_config(saved, {"quantize": "int4"})  # the allowed values came along
    assert load_config(saved, {"file_format": "OPENVINO"}).file_format == "OPENVINO"  # today's allowed values
