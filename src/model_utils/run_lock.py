"""One process per output folder: a lock file that names its owner.

Two trainings (or two predictions) writing into one folder interleave their checkpoints, CSV rows and
drawings, and the result belongs to neither run. ``RunLock`` creates its lock file atomically
(``O_CREAT | O_EXCL``: of two processes exactly one succeeds) holding the owner's pid and host, so the
second process stops at once with a message naming the folder and the owner. A lock left by a process
that no longer runs on this host (killed, crashed) is stale: it is taken over with a log line. A lock of
another host cannot be checked from here; the message says how to remove it. The lock is released when
the run ends, on an exception too, and at interpreter exit as the last resort.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import time
from pathlib import Path

from src.model_utils.errors import SSDError

#: A lock file younger than this that cannot be parsed is being written by its creator right now.
UNREADABLE_LOCK_GRACE_SECONDS = 5.0

#: Lock files this process holds (a lock naming our pid that is not in here was left by an earlier
#: process that had the same pid, e.g. the first process of a restarted container).
_HELD: set[Path] = set()


class FolderInUseError(SSDError):
    """Another live process holds the lock of the output folder this run wants to write into."""


def this_host() -> str:
    """The host name recorded in lock files and temporary names (a pid means something only on its host)."""
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (signal 0 only checks; EPERM: it runs, not ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """The lock file ``path`` guarding its folder; ``fix`` ends the refusal message (e.g. 'pass another --output_path').

    Use as a context manager, or ``acquire()`` / ``release()`` when the lock outlives one block.
    """

    def __init__(self, path: str | Path, log: logging.Logger, fix: str) -> None:
        self.path = Path(path).absolute()
        self.log = log
        self.fix = fix

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self) -> "RunLock":
        """Create the lock file (and its folder), taking over a stale one; ``FolderInUseError`` if a live
        process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # the second try follows the removal of a stale lock
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._remove_if_stale()
                continue
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(self._owner()))
            _HELD.add(self.path)
            atexit.register(self.release)
            return self
        raise self._in_use(self._read_owner() or {}, "took it while the stale lock was being removed")

    def release(self) -> None:
        """Remove the lock file if this process holds it; safe to call more than once."""
        if self.path not in _HELD:
            return
        _HELD.discard(self.path)
        atexit.unregister(self.release)
        if self._read_owner() == self._owner_without_time():
            self.path.unlink(missing_ok=True)

    def _owner(self) -> dict:
        return {**self._owner_without_time(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}

    @staticmethod
    def _owner_without_time() -> dict:
        return {"pid": os.getpid(), "host": this_host()}

    def _read_owner(self) -> dict | None:
        """pid and host of the lock file (without its time), or None when it is missing or unreadable."""
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
            return {"pid": int(owner["pid"]), "host": str(owner["host"])}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _remove_if_stale(self) -> None:
        """Delete the existing lock file when its owner is gone; raise ``FolderInUseError`` when it may run."""
        owner = self._read_owner()
        if owner is None:
            if self._age() < UNREADABLE_LOCK_GRACE_SECONDS:
                raise self._in_use({}, "is creating it right now")
            self.log.warning(f"removed the unreadable lock file {self.path} (no owner recorded in it)")
        elif owner["host"] != this_host():
            raise FolderInUseError(f"{self.path.parent} is locked by process {owner['pid']} on host {owner['host']}, "
                                   f"which cannot be checked from {this_host()} (lock file {self.path}); "
                                   f"{self.fix}, or delete the lock file once that process has ended")
        elif self._owner_runs(owner["pid"]):
            raise self._in_use(owner, "is running")
        else:
            self.log.warning(f"took over the stale lock {self.path} of process {owner['pid']}, which no longer runs")
        if self._read_owner() == owner:  # not replaced by another process meanwhile
            self.path.unlink(missing_ok=True)

    def _owner_runs(self, pid: int) -> bool:
        if pid == os.getpid():
            return self.path in _HELD
        return pid_alive(pid)

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def _in_use(self, owner: dict, state: str) -> FolderInUseError:
        who = f"process {owner['pid']} on {owner['host']}" if owner else "another process"
        return FolderInUseError(f"{self.path.parent} is in use: {who} {state} (lock file {self.path}); "
                                f"wait for it to end or {self.fix}")
