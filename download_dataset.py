"""Download COCO 2017 into ``<data_path>/<coco_root>``: ``python download_dataset.py --dataset coco --config_path ...``.

Resumes partial downloads, verifies size and MD5, unpacks into the layout the configs read, and
skips what an earlier run finished. Offline, it stops at once and lists the files to fetch
elsewhere; zips placed in the target folder by hand are then verified and unpacked.
"""
from __future__ import annotations

import sys

from src.data.download import main

if __name__ == "__main__":
    sys.exit(main())
