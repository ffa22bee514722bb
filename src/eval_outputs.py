"""The files eval.py, eval_onnx.py and postprocess.py leave behind, and the flag that places the detections.

Each script writes, named after itself so that two of them sharing an output_path keep both sets:

* ``<output_path>/<script>_detections.json``: the COCO results file COCOeval scored (what the
  seed left as predictions.json); ``--save_detections PATH`` writes it to PATH instead, e.g. to
  keep the results of several checkpoints side by side;
* ``<output_path>/<script>_per_class_ap.csv``: the per-class table the script printed
  (src/eval_utils.py ``write_per_class_csv``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from src.eval_utils import CocoEvalResult, format_report, write_per_class_csv


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
    """``--save_detections`` when given, else ``<output_path>/<script>_detections.json``."""
    return save_detections if save_detections is not None else Path(output_path) / f"{script}_detections.json"


def publish_report(result: CocoEvalResult, output_path: str | Path, script: str) -> Path:
    """Print the COCO report and write its per-class table to ``<output_path>/<script>_per_class_ap.csv``;
    returns the CSV's path for the log."""
    print(format_report(result), flush=True)
    csv_path = Path(output_path) / f"{script}_per_class_ap.csv"
    write_per_class_csv(result, csv_path)
    return csv_path
