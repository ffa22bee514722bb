"""File helpers shared by every stage: writes that readers never see half-done."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_json_atomic(data: dict, path: Path) -> None:
    """Write json through a temporary file + os.replace so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
