"""Training curves from a run's per-step CSV (``metrics_rank<r>.csv``, written by src/train/trainer.py).

curves.png has the loss over steps (raw and a moving average, since single steps are noisy), the
learning rate over steps, and the mAP of each evaluation over epochs when the run evaluated.
Drawn with matplotlib's object API on the Agg canvas: no display and no pyplot global state, so
it is safe inside a training process.
"""
from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CURVES_FILE = "curves.png"
REQUIRED_COLUMNS = ("step", "loss", "lr")
#: The moving average spans this share of the run's steps, at least MIN_SMOOTHING_STEPS.
SMOOTHING_SHARE = 0.05
MIN_SMOOTHING_STEPS = 3
FIGURE_DPI = 100


@dataclass(frozen=True)
class TrainingCurves:
    """The series of one metrics CSV; ``map_epochs`` / ``maps`` are empty when the run never evaluated,
    ``class_losses`` / ``box_losses`` are NaN in a CSV written before the loss was logged in parts."""

    steps: np.ndarray
    losses: np.ndarray
    class_losses: np.ndarray
    box_losses: np.ndarray
    lrs: np.ndarray
    map_epochs: np.ndarray
    maps: np.ndarray


def _number(text: str | None) -> float:
    return float(text) if text not in (None, "") else math.nan


def read_metrics_csv(csv_path: str | Path) -> TrainingCurves:
    """Loss rows (those with a loss value) and evaluation rows (those with a map value) of the CSV."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"metrics file {csv_path} not found; train.py writes <output_path>/metrics_rank0.csv")
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in REQUIRED_COLUMNS if name not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path} lacks the columns {missing}; it is not a train.py metrics file")
        rows = list(reader)
    try:
        loss_rows = [(int(row["step"]), _number(row["loss"]), _number(row.get("class_loss")),
                      _number(row.get("box_loss")), _number(row["lr"])) for row in rows if row["loss"]]
        map_rows = [(_number(row.get("epoch")), _number(row["map"])) for row in rows if row.get("map")]
    except ValueError as err:
        raise ValueError(f"{csv_path} has a value that is not a number ({err})") from err
    if not loss_rows:
        raise ValueError(f"{csv_path} has no training steps yet")
    steps, losses, class_losses, box_losses, lrs = (np.asarray(column, dtype=np.float64) for column in zip(*loss_rows))
    map_epochs, maps = (np.asarray(column, dtype=np.float64) for column in zip(*map_rows)) if map_rows \
        else (np.empty(0), np.empty(0))
    return TrainingCurves(steps, losses, class_losses, box_losses, lrs, map_epochs, maps)


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` finite values at each position (fewer at the start);
    NaN/Inf losses of overflow-skipped steps are left out instead of poisoning the average."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    ends = np.arange(1, values.size + 1)
    starts = np.maximum(ends - max(int(window), 1), 0)
    count = counts[ends] - counts[starts]
    return np.divide(sums[ends] - sums[starts], count, out=np.full(values.size, np.nan), where=count > 0)


def draw_curves(curves: TrainingCurves, png_path: str | Path, title: str = "") -> Path:
    """Write the loss / lr (/ mAP) panels to ``png_path``; returns it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    has_map = curves.maps.size > 0
    figure = Figure(figsize=(8, 9 if has_map else 6.5), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(3 if has_map else 2, 1)
    loss_ax, lr_ax = axes[0], axes[1]
    window = min(curves.steps.size, max(MIN_SMOOTHING_STEPS, round(curves.steps.size * SMOOTHING_SHARE)))
    loss_ax.plot(curves.steps, curves.losses, color="tab:blue", alpha=0.35, linewidth=0.8, label="loss per step")
    loss_ax.plot(curves.steps, moving_average(curves.losses, window), color="tab:blue", linewidth=2,
                 label=f"mean of the last {window} steps")
    for part, values, colour in (("class", curves.class_losses, "tab:red"), ("box", curves.box_losses, "tab:purple")):
        if np.isfinite(values).any():
            loss_ax.plot(curves.steps, moving_average(values, window), color=colour, linewidth=1.2,
                         linestyle="--", label=f"{part} part (mean)")
    loss_ax.set(xlabel="step", ylabel="loss", title="training loss")
    loss_ax.legend(loc="upper right")
    lr_ax.plot(curves.steps, curves.lrs, color="tab:orange")
    lr_ax.set(xlabel="step", ylabel="learning rate", title="learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if has_map:
        axes[2].plot(curves.map_epochs, curves.maps, "o-", color="tab:green")
        axes[2].set(xlabel="epoch", ylabel="mAP@[.50:.95]", title="validation mAP")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    suffix = "" if has_map else " (no mAP: the run did not evaluate)"
    figure.suptitle((title + suffix).strip())
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path)
    return png_path


def write_curves(csv_path: str | Path, png_path: str | Path | None = None) -> Path:
    """curves.png (beside the CSV unless ``png_path`` is given) from a metrics CSV; returns the PNG path."""
    csv_path = Path(csv_path)
    target = Path(png_path) if png_path else csv_path.with_name(CURVES_FILE)
    return draw_curves(read_metrics_csv(csv_path), target, title=f"{csv_path.parent.name}/{csv_path.name}")


def draw_curves_after_training(csv_path: Path, png_path: Path, log: logging.Logger) -> None:
    """The trainer's end-of-run call: a plot that cannot be drawn is a warning, never a failed training."""
    try:
        log.info(f"training curves drawn in {write_curves(csv_path, png_path)}")
    except Exception as err:  # noqa: BLE001 - the trained weights matter more than any plotting error
        log.warning(f"could not draw the training curves from {csv_path}: {type(err).__name__}: {err} "
                    f"(draw them later with python plot_curves.py {csv_path.parent})")
