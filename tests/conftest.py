"""Shared pytest set-up: CPU speed flag before MindSpore loads, project root on sys.path, shared data,
and the short demo training run that the training, export and post-processing tests reuse."""
import csv
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# oneDNN picks a reference kernel for NCHW 3x3 convolutions on these CPUs unless capped at AVX2
# (a 7x slower training step); it must be set before MindSpore runs its first op.
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SHARED_DOCS = PROJECT_ROOT.parent / "shared" / "docs"
sys.path.insert(0, str(PROJECT_ROOT))


@pytest.fixture(scope="session")
def coco128_root() -> Path:
    """The 128 real COCO images beside the checkout; skipped on a user's machine without ../shared."""
    root = SHARED_DATA / "coco128"
    if not (root / "annotations" / "instances_train2017.json").is_file():
        pytest.skip(f"real COCO sample not found at {root} (it lives in ../shared beside the checkout)")
    return root


@pytest.fixture(scope="session")
def checkpoint_layout_dir() -> Path:
    """The model zoo's checkpoint parameter tables; skipped when ../shared is absent."""
    layout = SHARED_DOCS / "checkpoint_layout"
    if not layout.is_dir():
        pytest.skip(f"checkpoint layout tables not found at {layout} (they live in ../shared)")
    return layout


DEMO_CONFIG = PROJECT_ROOT / "config" / "ssd300_demo_config_cpu.yaml"
EPOCHS, STEPS_PER_EPOCH = 3, 6


def run_script(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run an entry script the way a user does; the output is kept for assertion messages."""
    return subprocess.run([sys.executable, str(PROJECT_ROOT / script), *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def demo_args(data_root: Path, output: Path, *extra: str) -> list[str]:
    return ["--config_path", str(DEMO_CONFIG), "--data_path", str(data_root), "--coco_root", "coco",
            "--mindrecord_dir", "MindRecord", "--output_path", str(output), "--epoch_size", str(EPOCHS),
            "--batch_size", "8", "--eval_batch_size", "8", "--save_checkpoint_epochs", "1",
            "--log_interval", "1", "--warmup_epochs", "1", "--lr", "0.01", "--feature_extractor_base_param", "",
            "--freeze_layer", "None", *extra]


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """16 validation and 48 training images of the synthetic demo set, in COCO layout under coco/."""
    from src.data.demo_data import generate_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(root / "coco", num_train=48, num_val=16, seed=3, min_size=60, max_objects=3)
    return root


@pytest.fixture(scope="session")
def trained_run(demo_root, tmp_path_factory) -> Path:
    """train.py for EPOCHS x STEPS_PER_EPOCH steps on the demo set (about 40 s); its output folder."""
    output = tmp_path_factory.mktemp("run")
    done = run_script("train.py", *demo_args(demo_root, output))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return output


@pytest.fixture(autouse=True)
def restore_project_loggers():
    """Undo what an entry script run in-process did to the "ssd" and "py.warnings" loggers.

    setup_logger gives them file handlers and stops propagation, and captures warnings; left in
    place, a later test's caplog would see records twice or not at all, depending on test order.
    """
    loggers = [logging.getLogger(name) for name in ("ssd", "py.warnings")]
    saved = [(logger.handlers[:], logger.propagate, logger.level, logger.filters[:]) for logger in loggers]
    yield
    logging.captureWarnings(False)
    for logger, (handlers, propagate, level, filters) in zip(loggers, saved):
        for handler in logger.handlers:
            if handler not in handlers and isinstance(handler, logging.FileHandler):
                handler.close()  # the run's log file
        logger.handlers[:], logger.filters[:] = handlers, filters
        logger.propagate, logger.level = propagate, level


class _Messages(logging.Handler):
    """Collects the messages of the records it is given."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture()
def ssd_log():
    """The messages the library logs on the project's "ssd" logger during the test, whatever handlers (or
    propagation) an earlier entry-script run left on it."""
    logger, handler = logging.getLogger("ssd"), _Messages()
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(previous_level)


@pytest.fixture()
def graph_mode():
    """GRAPH_MODE for one test (how training and export run), restoring the previous mode after."""
    import mindspore as ms

    previous = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=previous)


def read_layout(layout_dir: Path, model_name: str) -> list[tuple[str, tuple[int, ...], bool]]:
    """The ``network.*`` rows of the zoo's checkpoint table: (name, shape, requires_grad), in table order."""
    rows = []
    for line in (layout_dir / f"{model_name}.tsv").read_text().splitlines():
        if line.startswith("network."):
            name, shape, _dtype, grad = line.split("\t")
            rows.append((name, tuple(int(d) for d in shape.strip("[]").split(",")), grad == "True"))
    return rows


def read_metrics(output: Path) -> list[dict]:
    """The rows of a run's metrics_rank0.csv that carry a training loss."""
    with (output / "metrics_rank0.csv").open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["loss"]]


def synthetic_train_inputs(num_boxes: int, positives: int, label: int, seed: int) -> list:
    """A batch of 2 for a train step or loss cell: random 300x300 images and box targets, the first
    ``positives`` anchors of each image labelled ``label``."""
    import mindspore as ms

    rng = np.random.default_rng(seed)
    labels = np.zeros((2, num_boxes), np.int32)
    labels[:, :positives] = label
    return [ms.Tensor(rng.normal(size=(2, 3, 300, 300)).astype(np.float32)),
            ms.Tensor(rng.normal(0, 0.5, (2, num_boxes, 4)).astype(np.float32)),
            ms.Tensor(labels), ms.Tensor(np.full((2, 1), positives, np.int32))]


def randomise_batch_norm(network, rng: np.random.Generator) -> None:
    """Non-trivial BN statistics and affine parameters: an export must carry them, not the defaults.

    Kept mild: a random ssd300 already differs by ~5e-5 between MindSpore and onnxruntime (float32
    rounding amplified by untrained weights; a trained checkpoint differs by ~4e-6), and wider
    ranges push that noise past the 1e-4 bound without testing anything more.
    """
    import mindspore as ms

    ranges = {"moving_mean": (-0.1, 0.1), "moving_variance": (0.8, 1.2), "gamma": (0.9, 1.1), "beta": (-0.1, 0.1)}
    for param in network.get_parameters():
        for suffix, (low, high) in ranges.items():
            if param.name.endswith(suffix):
                param.set_data(ms.Tensor(rng.uniform(low, high, param.shape).astype(np.float32)))
