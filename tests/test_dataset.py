"""The MindSpore training and eval pipelines on a tiny real MindRecord file written per test module.

Each training image holds one red rectangle on a grey background, so after the whole chain (zoom-out,
crop, resize, flip, encode, normalise) the encoded box can be decoded and compared with where the red
pixels ended up.
"""
import io
from pathlib import Path

import cv2
import mindspore.dataset as ds
import numpy as np
import pytest
from mindspore.mindrecord import FileWriter
from PIL import Image

from src.boxes.anchors import default_boxes_from_config
from src.boxes.coding import BoxCoder, pairwise_iou
from src.data.dataset import (IMAGE_MEAN, IMAGE_STD, TrainTransform, _decode_training_image, create_ssd_dataset,
                              decode_rgb)
from src.data.mindrecord import PADDING_ROW, SCHEMA
from src.model_utils.config import load_config

RED = (220, 20, 20)
NUM_IMAGES = 5


def write_mindrecord(path: Path, rows: list[dict]) -> Path:
    writer = FileWriter(str(path), shard_num=1, overwrite=True)
    writer.add_schema(SCHEMA, "ssd_json")
    for row in rows:
        writer.write_raw_data([row])
    writer.commit()
    return path


def jpeg(image_rgb: np.ndarray) -> bytes:
    rgb_or_grey = image_rgb if image_rgb.ndim == 2 else image_rgb[..., ::-1]
    return cv2.imencode(".jpg", rgb_or_grey, [cv2.IMWRITE_JPEG_QUALITY, 98])[1].tobytes()


def red_rectangle_rows() -> list[dict]:
    """120x160 images with one known red box each; the last one also carries a -1 padding row."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(NUM_IMAGES):
        image = np.full((120, 160, 3), 90, dtype=np.uint8)
        top, left = int(rng.integers(0, 60)), int(rng.integers(0, 80))
        bottom, right = top + int(rng.integers(25, 60)), left + int(rng.integers(25, 80))
        image[top:bottom, left:right] = RED
        annotation = np.array([[top, left, bottom, right, 1 + index % 3]], dtype=np.int32)
        if index == NUM_IMAGES - 1:
            annotation = np.concatenate([annotation, PADDING_ROW])
        rows.append({"img_id": np.array([100 + index], dtype=np.int32), "image": jpeg(image),
                     "annotation": annotation})
    return rows


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    return write_mindrecord(tmp_path_factory.mktemp("train") / "train.mindrecord", red_rectangle_rows())


@pytest.fixture(scope="module")
def eval_rows() -> list[dict]:
    """Four colour images and a grey 70x90 one, to check channel expansion and original sizes."""
    rows = red_rectangle_rows()
    grey = np.random.default_rng(1).integers(0, 255, (70, 90), dtype=np.uint8)
    rows[2] = {"img_id": np.array([7], dtype=np.int32), "image": jpeg(grey),
               "annotation": np.array([[1, 2, 30, 40, 1]], dtype=np.int32)}
    return rows


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory, eval_rows) -> Path:
    return write_mindrecord(tmp_path_factory.mktemp("eval") / "eval.mindrecord", eval_rows)


@pytest.fixture()
def seed():
    """Tests set the pipeline seed; put the previous one back so other tests are unaffected."""
    previous = ds.config.get_seed()
    yield ds.config.set_seed
    ds.config.set_seed(previous)


def cpu_config(**overrides):
    return load_config("config/ssd300_config_cpu.yaml", overrides=overrides)


def collect(dataset: ds.Dataset, epochs: int = 1) -> list[dict]:
    iterator = dataset.create_dict_iterator(num_epochs=epochs, output_numpy=True)
    return [batch for _ in range(epochs) for batch in iterator]


def test_train_batches_have_the_network_shapes_and_positives(train_file):
    config = cpu_config()
    batches = collect(create_ssd_dataset(train_file, config, 2, is_training=True, num_parallel_workers=2))
    assert len(batches) == NUM_IMAGES // 2  # the incomplete last batch is dropped in training
    for batch in batches:
        assert list(batch) == ["image", "box", "label", "num_match"]
        assert batch["image"].shape == (2, 3, 300, 300) and batch["image"].dtype == np.float32
        assert batch["box"].shape == (2, 1917, 4) and batch["box"].dtype == np.float32
        assert batch["label"].shape == (2, 1917) and batch["label"].dtype == np.int32
        assert batch["num_match"].shape == (2, 1) and batch["num_match"].dtype == np.int32
        positives = batch["label"] > 0
        np.testing.assert_array_equal(positives.sum(axis=1), batch["num_match"][:, 0])
        assert (batch["num_match"] >= 1).all()
        assert set(np.unique(batch["label"])) <= {0, 1, 2, 3}
        assert np.isfinite(batch["box"]).all() and not batch["box"][~positives].any()


def test_train_boxes_follow_the_object_pixels_through_all_augmentations(train_file):
    """Decoded targets must frame the red pixels after zoom-out, crop, resize and flip."""
    config = cpu_config(color_jitter=[0.0, 0.0, 0.0, 0.0])
    coder = BoxCoder(default_boxes_from_config(config), config.prior_scaling, config.match_threshold)
    mean, std = np.array(IMAGE_MEAN)[:, None, None], np.array(IMAGE_STD)[:, None, None]
    batches = collect(create_ssd_dataset(train_file, config, 2, is_training=True, num_parallel_workers=1), epochs=6)
    checked = set()
    for batch in batches:
        for image, loc, label in zip(batch["image"], batch["box"], batch["label"]):
            rgb = image * std + mean
            rows, cols = np.nonzero((rgb[0] > 155) & (rgb[1] < 90))
            drawn = np.array([[rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]]) / 300.0
            decoded = coder.decode(loc)[label > 0]
            np.testing.assert_allclose(decoded, np.repeat(decoded[:1], len(decoded), 0), atol=1e-5)
            assert pairwise_iou(decoded[:1].astype(np.float64), drawn)[0, 0] > 0.9
            checked.add(round(float(drawn[0, 2] - drawn[0, 0]), 2))
    assert len(checked) > 4  # the object really changed size between samples


def test_train_is_reproducible_per_seed_for_any_worker_count_and_differs_between_seeds_and_epochs(train_file, seed):
    config = cpu_config()  # zoom-out and colour jitter on: every random draw must follow the seed

    def run(value: int, workers: int, processes: bool = False) -> list[dict]:
        seed(value)
        return collect(create_ssd_dataset(train_file, config, 2, True, num_parallel_workers=workers,
                                          python_multiprocessing=processes), epochs=2)

    first = run(3, 2)
    for other_run in (run(3, 2), run(3, 1), run(3, 2, processes=True)):
        for key in first[0]:
            for a, b in zip(first, other_run, strict=True):
                np.testing.assert_array_equal(a[key], b[key])
    other = run(4, 2)
    assert any(not np.array_equal(a["box"], b["box"]) for a, b in zip(first, other))
    assert any(not np.array_equal(a["image"], b["image"]) for a, b in zip(first, other))
    half = len(first) // 2
    assert any(not np.array_equal(a["image"], b["image"]) for a, b in zip(first[:half], first[half:]))


def test_train_transform_depends_only_on_seed_rank_and_row():
    config = cpu_config()
    coder = BoxCoder(default_boxes_from_config(config), config.prior_scaling, config.match_threshold)
    row = red_rectangle_rows()[0]
    encoded = np.frombuffer(row["image"], dtype=np.uint8)

    def outputs(seed_value: int, rank: int) -> list[tuple]:
        transform = TrainTransform(config, coder, seed_value, rank)
        return [transform(np.array([index]), encoded, row["annotation"]) for index in range(8)]

    reference = outputs(3, 0)
    for a, b in zip(reference, outputs(3, 0)):
        for column_a, column_b in zip(a, b):
            np.testing.assert_array_equal(column_a, column_b)
    for other in (outputs(4, 0), outputs(3, 1)):
        assert any(not np.array_equal(a[1], b[1]) for a, b in zip(reference, other))
        assert any(not np.array_equal(a[0], b[0]) for a, b in zip(reference, other))
    assert any(not np.array_equal(reference[0][1], b[1]) for b in reference[1:])
    image, loc, labels, num_match = reference[0]
    assert image.shape == (300, 300, 3) and image.dtype == np.uint8
    assert loc.shape == (1917, 4) and labels.shape == (1917,) and num_match[0] == (labels > 0).sum() >= 1


def test_decode_gives_rgb_with_three_channels_and_names_the_fix_for_bad_bytes():
    colour = np.zeros((8, 10, 3), dtype=np.uint8)
    colour[..., 0] = 250  # red in RGB
    decoded = decode_rgb(np.frombuffer(jpeg(colour), dtype=np.uint8))
    assert decoded.shape == (8, 10, 3) and decoded[..., 0].min() > 200 and decoded[..., 2].max() < 50
    grey = decode_rgb(np.frombuffer(jpeg(np.full((6, 7), 77, dtype=np.uint8)), dtype=np.uint8))
    assert grey.shape == (6, 7, 3) and np.abs(grey.astype(int) - 77).max() <= 2
    with pytest.raises(ValueError, match="cannot be decoded"):
        decode_rgb(np.frombuffer(b"not an image", dtype=np.uint8))
    with pytest.raises(ValueError, match="MindRecord file train.mindrecord0 cannot be decoded.*only_create_dataset"):
        _decode_training_image(np.frombuffer(b"not an image", dtype=np.uint8), "train.mindrecord0")


def test_decode_keeps_the_stored_pixel_grid_of_an_exif_rotated_jpeg():
    """Boxes are annotated on the stored pixels (as COCO's and MindSpore's Decode see them)."""
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :10] = (250, 0, 0)  # a red band on the left of the stored image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="JPEG", quality=98, exif=exif)
    decoded = decode_rgb(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    assert decoded.shape == (20, 40, 3)
    assert decoded[:, :8, 0].min() > 200 and decoded[:, 12:, 0].max() < 50


def test_eval_yields_every_image_once_with_its_id_and_original_size(eval_file, eval_rows):
    config = cpu_config()
    batches = collect(create_ssd_dataset(eval_file, config, 2, is_training=False, num_parallel_workers=2))
    assert [len(b["img_id"]) for b in batches] == [2, 2, 1]
    assert list(batches[0]) == ["img_id", "image", "image_shape"]
    ids = np.concatenate([b["img_id"] for b in batches])
    shapes = np.concatenate([b["image_shape"] for b in batches])
    images = np.concatenate([b["image"] for b in batches])
    assert ids.dtype == np.int32 and ids.shape == (NUM_IMAGES, 1)
    assert shapes.dtype == np.float32 and images.dtype == np.float32 and images.shape == (NUM_IMAGES, 3, 300, 300)
    np.testing.assert_array_equal(ids[:, 0], [int(r["img_id"][0]) for r in eval_rows])
    for row, shape, image in zip(eval_rows, shapes, images):
        decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(row["image"], np.uint8), cv2.IMREAD_COLOR),
                               cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(shape, decoded.shape[:2])
        expected = (cv2.resize(decoded, (300, 300), interpolation=cv2.INTER_LINEAR) - IMAGE_MEAN) / IMAGE_STD
        np.testing.assert_allclose(image, expected.transpose(2, 0, 1), atol=0.05)


def test_sharded_training_splits_the_images_between_ranks(train_file):
    config = cpu_config(color_jitter=[0.0, 0.0, 0.0, 0.0], use_expand=False)
    counts = [sum(len(b["num_match"]) for b in collect(
        create_ssd_dataset(train_file, config, 1, True, device_num=2, rank=rank, num_parallel_workers=1)))
        for rank in (0, 1)]
    assert counts == [3, 3]  # 5 images over 2 ranks: MindDataset pads the shards to equal length


def test_missing_mindrecord_names_the_file(tmp_path):
    missing = tmp_path / "absent.mindrecord"
    with pytest.raises(FileNotFoundError, match="absent.mindrecord"):
        create_ssd_dataset(missing, cpu_config(), 2, is_training=True)
