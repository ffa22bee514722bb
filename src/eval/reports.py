"""The files eval.py, eval_onnx.py and postprocess.py leave behind, and the flag that places the detections.

Each script writes, named after itself so that two of them sharing an output_path keep both sets:

* ``<output_path>/<script>_detections.json``: the COCO results file COCOeval scored (what the
  seed left as predictions.json); ``--save_detections PATH`` writes it to PATH instead, e.g. to
  keep the results of several checkpoints side by side;
* ``<output_path>/<script>_per_class_ap.csv``: the per-class table the script printed
  (``write_per_class_csv``).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from src.eval.coco import ClassAP, CocoEvalResult
from src.model_utils.errors import UsageError


def _json_file(text: str) -> Path:
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give the json file to write, e.g. "
                                         f"{path / 'detections.json'}")
    return path


def evaluation_flags() -> argparse.ArgumentParser:
    """The evaluation scripts' own flags, which are not config keys: parse them with ``parse_known_args``
    and hand the rest to ``parse_args``. A script with more flags adds them to this parser."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--save_detections", type=_json_file, metavar="PATH")
    return parser


def detections_json_path(save_detections: Path | None, output_path: str | Path, script: str) -> Path:
    """``--save_detections`` when given, else ``<output_path>/<script>_detections.json``.

    The default file belongs to the script and is replaced by each run; a ``--save_detections``
    path must not exist, since it can name any file (the ground truth, the model being scored).
    """
    if save_detections is None:
        return Path(output_path) / f"{script}_detections.json"
    if save_detections.exists():
        raise UsageError(f"--save_detections {save_detections} exists; pass a new file name (it is never "
                         "overwritten, so that no input or earlier result can be replaced)")
    return save_detections


def publish_report(result: CocoEvalResult, output_path: str | Path, script: str) -> Path:
    """Write the per-class table of the COCO report to ``<output_path>/<script>_per_class_ap.csv``;
    returns the CSV's path for the log. The entry script prints ``format_report(result)`` itself."""
    csv_path = Path(output_path) / f"{script}_per_class_ap.csv"
    write_per_class_csv(result, csv_path)
    return csv_path


def classes_by_ap(per_class: Sequence[ClassAP]) -> list[ClassAP]:
    """Best AP first, classes without ground truth (nan AP) last: the printed table's and the CSV's order."""
    return sorted(per_class, key=lambda c: (np.isnan(c.ap), -np.nan_to_num(c.ap)))


def format_report(result: CocoEvalResult) -> str:
    """The 12 COCO lines, the mAP line, the crowd note, what the ground truth changed from the source
    annotations (when it says) and a per-class table (best AP first)."""
    lines = list(result.summary_lines)
    lines.append(f"mAP: {result.map}")
    lines.append(f"{result.num_images} images, {result.num_detections} detections; {result.num_crowd} crowd "
                 f"boxes handled by COCOeval as ignore regions")
    if result.ground_truth_note:
        lines.append(result.ground_truth_note)
    rows = classes_by_ap(result.per_class)
    width = max([len("class")] + [len(c.name) for c in rows])
    lines.append(f"{'class':<{width}}  {'AP':>6}  {'AP50':>6}  {'GT boxes':>8}")
    for c in rows:
        ap, ap50 = ("-", "-") if np.isnan(c.ap) else (f"{c.ap:.3f}", f"{c.ap50:.3f}")
        lines.append(f"{c.name:<{width}}  {ap:>6}  {ap50:>6}  {c.num_gt:>8}")
    return "\n".join(lines)


#: Columns of the per-class AP CSV (write_per_class_csv).
PER_CLASS_CSV_COLUMNS = ("class", "category_id", "AP", "AP50", "num_gt")


def write_per_class_csv(result: CocoEvalResult, path: Path) -> None:
    """``format_report``'s per-class table as CSV: same rows and order, AP and AP50 at full precision.

    A class without ground truth in the evaluated images has empty AP and AP50 cells: its AP is
    undefined rather than 0, and an empty cell is what spreadsheets and pandas read as missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(PER_CLASS_CSV_COLUMNS)
        for c in classes_by_ap(result.per_class):
            ap, ap50 = ("", "") if np.isnan(c.ap) else (str(float(c.ap)), str(float(c.ap50)))
            table.writerow([c.name, c.category_id, ap, ap50, c.num_gt])
