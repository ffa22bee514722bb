"""Training curves: curves.png from synthetic metrics CSVs and from the real demo run (drawn by the trainer)."""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.train.curves import CURVES_FILE, draw_curves_after_training, moving_average, read_metrics_csv, write_curves
from src.train.trainer import METRICS_COLUMNS
from tests.conftest import EPOCHS, STEPS_PER_EPOCH, run_script

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = 60


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...] = METRICS_COLUMNS) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({key: row.get(key, "") for key in columns} for row in rows)
    return path


def synthetic_rows(with_map: bool) -> list[dict]:
    """A falling noisy loss, a warm-up + decay lr, an overflow step (inf loss) and, optionally, mAP rows
    as the trainer writes them (map only, other columns empty) at epochs 2 and 4."""
    rng = np.random.default_rng(0)
    rows = []
    for step in range(1, STEPS + 1):
        epoch = (step - 1) // 15 + 1
        box = 2 * math.exp(-step / 40) + rng.uniform(0, 0.2)
        loss = "inf" if step == 17 else f"{8 * math.exp(-step / 30) + rng.uniform(0, 0.5):.6f}"
        rows.append({"step": step, "epoch": epoch, "loss": loss, "class_loss": f"{float(loss) - box:.6f}",
                     "box_loss": f"{box:.6f}", "lr": f"{min(step / 10, 1) * 0.01:.8f}",
                     "img_per_s": "12.5" if step % 5 == 0 else ""})
        if with_map and step % 30 == 0:
            rows.append({"step": step, "epoch": epoch, "map": f"{0.1 * epoch:.6f}"})
    return rows


def assert_valid_png(path: Path, height: int) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size == (800, height)
        pixels = np.asarray(image.convert("L"))
    assert 10_000 < path.stat().st_size < 1_000_000
    assert pixels.std() > 10, "the plot is blank"


def test_curves_with_map_have_a_third_panel(tmp_path):
    csv_path = write_csv(tmp_path / "metrics_rank0.csv", synthetic_rows(with_map=True))
    curves = read_metrics_csv(csv_path)
    assert curves.steps.tolist() == list(range(1, STEPS + 1))
    assert curves.map_epochs.tolist() == [2, 4] and curves.maps.tolist() == [0.2, 0.4]
    assert math.isinf(curves.losses[16])
    png = write_curves(csv_path)
    assert png == tmp_path / CURVES_FILE
    assert_valid_png(png, height=900)


LOSS_PARTS = ("class_loss", "box_loss")


@pytest.mark.parametrize("columns", [METRICS_COLUMNS, tuple(c for c in METRICS_COLUMNS if c != "map"),
                                     tuple(c for c in METRICS_COLUMNS if c not in LOSS_PARTS)],
                         ids=["empty map values", "no map column", "CSV from before the loss parts"])
def test_curves_without_map_have_two_panels(tmp_path, columns):
    csv_path = write_csv(tmp_path / "metrics.csv", synthetic_rows(with_map=False), columns)
    curves = read_metrics_csv(csv_path)
    assert curves.maps.size == 0 and curves.map_epochs.size == 0
    assert np.isfinite(curves.box_losses).all() == ("box_loss" in columns)
    assert_valid_png(write_curves(csv_path, tmp_path / "out" / "plot.png"), height=650)


def test_moving_average_skips_non_finite_losses():
    values = np.array([1.0, 3.0, np.inf, 5.0, np.nan, 7.0])
    assert moving_average(values, 3).tolist() == [1.0, 2.0, 2.0, 4.0, 5.0, 6.0]
    assert moving_average(values, 1)[[0, 1, 3, 5]].tolist() == [1.0, 3.0, 5.0, 7.0]
    assert np.isnan(moving_average(np.array([np.nan]), 3)[0])


def test_unusable_csvs_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"lacks the columns \['lr'\]"):
        read_metrics_csv(write_csv(tmp_path / "a.csv", [], ("step", "epoch", "loss")))
    with pytest.raises(ValueError, match="has no training steps yet"):
        read_metrics_csv(write_csv(tmp_path / "b.csv", []))
    with pytest.raises(FileNotFoundError, match="c.csv not found"):
        read_metrics_csv(tmp_path / "c.csv")


def test_a_drawing_failure_is_a_warning_not_an_exception(tmp_path):
    records: list[logging.LogRecord] = []
    logger = logging.getLogger("test_curves")
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        draw_curves_after_training(tmp_path / "metrics_rank0.csv", tmp_path / CURVES_FILE, logger)
    finally:
        logger.removeHandler(handler)
    assert [r.levelno for r in records] == [logging.WARNING]
    assert "could not draw the training curves" in records[0].getMessage()
    assert not (tmp_path / CURVES_FILE).exists()


@pytest.mark.slow
def test_the_trainer_draws_curves_of_the_real_run(trained_run):
    png = trained_run / CURVES_FILE
    assert_valid_png(png, height=650)  # the demo config does not evaluate during training
    curves = read_metrics_csv(trained_run / "metrics_rank0.csv")
    assert curves.steps.size == EPOCHS * STEPS_PER_EPOCH
    assert (curves.class_losses > 0).all() and (curves.box_losses > 0).all()
    np.testing.assert_allclose(curves.class_losses + curves.box_losses, curves.losses, rtol=1e-5, atol=2e-6)
    assert f"training curves drawn in {png}" in (trained_run / "log" / "train_rank0.log").read_text()


@pytest.mark.slow
def test_plot_curves_script_redraws_a_run(trained_run, tmp_path):
    target = tmp_path / "again.png"
    done = run_script("plot_curves.py", str(trained_run), "--output", str(target))
    assert done.returncode == 0, done.stderr
    assert_valid_png(target, height=650)
    missing = run_script("plot_curves.py", str(tmp_path / "no_run"))
    assert missing.returncode == 1 and "no_run not found" in missing.stderr
    assert run_script("plot_curves.py").returncode == 2
