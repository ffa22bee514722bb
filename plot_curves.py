"""Draw a training run's curves: ``python plot_curves.py RUN [--output curves.png]``.

RUN is a train.py output folder (its metrics_rank0.csv is read) or a metrics CSV itself. Writes
curves.png beside the CSV unless --output is given: the loss over steps (raw and smoothed), the
learning rate over steps and, when the run evaluated, the mAP over epochs. train.py draws the
same file at the end of a run; this script redraws it for a run in progress or another rank.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from src.model_utils.errors import run_entry

METRICS_FILE = "metrics_rank0.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help=f"train.py output folder (reads its {METRICS_FILE}) or a metrics CSV")
    parser.add_argument("--output", type=Path, help="PNG to write (default: curves.png beside the CSV)")
    args = parser.parse_args(argv)
    if args.output is not None and args.output.suffix.lower() != ".png":  # never over a photo or a document
        parser.error(f"--output {args.output} must be a .png file")
    from src.train.curves import write_curves

    csv_path = args.run / METRICS_FILE if args.run.is_dir() else args.run
    try:
        png_path = write_curves(csv_path, args.output)
    except (FileNotFoundError, ValueError) as error:
        print(f"plot_curves.py: error: {error}", file=sys.stderr)
        return 1
    print(f"training curves of {csv_path} drawn in {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main, "plot_curves.py"))
