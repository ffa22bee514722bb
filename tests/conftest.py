"""Shared pytest set-up: CPU speed flag before MindSpore loads, project root on sys.path, shared data."""
import os
import sys
from pathlib import Path

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
