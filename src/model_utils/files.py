"""File helpers shared by every stage: writes that readers never see half-done, and their leftovers.

Every atomic write in src/ goes through a temporary file named by ``temporary_path`` and is renamed into
place. A process killed between the two leaves that temporary behind; since the name records the
writer's host and pid, ``remove_stale_temporaries`` can tell leftovers of ended processes from files
being written right now, and the trainer and the predictor clear them from their output folders.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from pathlib import Path

from src.model_utils.errors import SSDError
from src.model_utils.run_lock import pid_alive, this_host

#: ``.<name>.tmp-<host>-<pid>-t<thread><suffix of name>``: the pattern ``temporary_path`` writes.
_TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.tmp-(?P<host>.+)-(?P<pid>\d+)-t\d+(?P<suffix>\.[^.]*)?")


def temporary_path(path: str | Path) -> Path:
    """The hidden name ``path`` is written under before the rename into place.

    It keeps ``path``'s suffix at the end because writers pick the format from it (MindSpore appends
    ``.ckpt`` to any other name, onnx and yaml tools look at it) and records this host and pid so the
    cleaner knows whose file it is; the thread too, so that two threads of one process (the ranks of a
    ModelArts session, say) writing the same file never share a temporary.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{this_host()}-{os.getpid()}-t{threading.get_ident()}{path.suffix}")


def write_json_atomic(data: dict, path: Path) -> None:
    """Write json through a temporary file + os.replace so readers never see half a file.

    NaN and Infinity are refused (``allow_nan=False``): Python would write them, but they are not
    JSON and other readers (jq, browsers, COCO tools in other languages) reject the whole file.
    """
    path = Path(path)
    try:
        text = json.dumps(data, allow_nan=False)
    except ValueError as error:
        raise SSDError(f"{path}: not written: {error} (JSON cannot store NaN or Infinity); "
                       f"this is a bug, please report it") from error
    tmp = temporary_path(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _stale_temporary(path: Path) -> bool:
    """Whether ``path`` is a ``temporary_path`` file left by a process of this host that no longer runs."""
    match = _TEMPORARY_NAME.fullmatch(path.name)
    if match is None or (match["suffix"] or "") != Path(match["name"]).suffix or match["host"] != this_host():
        return False
    pid = int(match["pid"])
    return pid != os.getpid() and not pid_alive(pid)


def remove_stale_temporaries(folder: str | Path, log: logging.Logger) -> int:
    """Delete the temporaries that ended processes left in ``folder`` (not its sub-folders); returns how many.

    Temporaries of live processes and of other hosts (whose pids cannot be checked here) are left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = [path for path in folder.iterdir() if path.is_file() and _stale_temporary(path)]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info(f"removed {len(stale)} temporary files that ended processes left in {folder} "
                 f"(interrupted saves), e.g. {stale[0].name}")
    return len(stale)
