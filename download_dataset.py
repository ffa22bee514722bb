"""Download COCO 2017 into ``<data_path>/<coco_root>``: ``python download_dataset.py --dataset coco --config_path ...``.

Resumes partial downloads, verifies size and MD5, unpacks into the layout the configs read, and
skips what an earlier run finished. Offline, it stops at once and lists the files to fetch
elsewhere; zips placed in the target folder by hand are then verified and unpacked.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from src.data.download import (COCO2017_ARCHIVES, COCO_BASE_URL, DEFAULT_RETRIES, DEFAULT_TIMEOUT_S,
                               SUPPORTED_DATASETS, download_archives)
from src.model_utils.errors import run_entry


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="download_dataset.py",
        description="Download COCO 2017 (train/val images and annotations) into <data_path>/<coco_root> of a "
                    "config, resuming partial downloads, verifying size and MD5, and unpacking.")
    parser.add_argument("--dataset", default=None,
                        help="dataset to download; only 'coco' is supported (default: the config's dataset key)")
    parser.add_argument("--config_path", default="config/ssd300_config.yaml",
                        help="config whose data_path and coco_root give the target folder")
    parser.add_argument("--data_path", default=None, help="override the config's data_path")
    parser.add_argument("--coco_root", default=None, help="override the config's coco_root")
    parser.add_argument("--base_url", default=COCO_BASE_URL,
                        help=f"server holding zips/ and annotations/ (default {COCO_BASE_URL}; a mirror)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds to wait for a connection or for data before giving up")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES,
                        help="how often an interrupted transfer is resumed before the run gives up")
    parser.add_argument("--remove_archives", action="store_true",
                        help="delete each zip after it is unpacked (saves 19 GB; a later run then cannot re-verify)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``download_dataset.py``: 0 when every archive is ready, 1 on failure, 2 on bad usage."""
    args = _parse_args(argv)
    from src.model_utils.config import ConfigError, load_config

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)  # retries and resumes

    try:
        config = load_config(args.config_path)
    except ConfigError as err:
        print(f"download_dataset.py: error: {err}", file=sys.stderr)
        return 2
    dataset = args.dataset or config.dataset
    if dataset not in SUPPORTED_DATASETS:
        print(f"download_dataset.py: error: --dataset {dataset!r} is not downloadable; this script fetches "
              f"COCO 2017 only (--dataset coco). For Pascal VOC or a plain-text set, put the data under "
              f"<data_path>/<voc_root> or <data_path>/<image_dir> yourself as README.md 'Datasets' describes.",
              file=sys.stderr)
        return 2
    target = Path(args.data_path or config.data_path) / (args.coco_root or config.coco_root)
    print(f"[download] COCO 2017 from {args.base_url} into {target.resolve()}")
    started = time.monotonic()
    summary = download_archives(COCO2017_ARCHIVES, target, args.base_url, args.timeout, args.retries,
                                args.remove_archives)
    print(summary.report(len(COCO2017_ARCHIVES), time.monotonic() - started), flush=True)
    return 1 if summary.failures else 0


if __name__ == "__main__":
    sys.exit(run_entry(main, "download_dataset.py"))
