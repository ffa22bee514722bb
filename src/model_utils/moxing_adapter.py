"""ModelArts: copy a job's inputs from OBS before the work and its outputs back after, once per node.

On ModelArts the data, checkpoints and results live in OBS (``obs://`` URLs) while the training
container works on local disks. With ``enable_modelarts: True`` an entry script wraps its work in
``modelarts_session``; before the work ``data_url -> data_path``, ``checkpoint_url -> load_path``
and ``train_url -> output_path`` are copied (each only when set), after it ``output_path ->
train_url`` (also when the work failed: the logs of a failed run matter most).

One process per node copies, the one with local rank 0; the others wait for its marker file.
Markers live in ``<output_path>/.modelarts_sync/<job token>/`` rather than under fixed ``/tmp``
names, so two jobs on one machine cannot release each other's waiters, and they are removed before
the upload. Before uploading, rank 0 also waits until every process that joined has finished, so
checkpoints written by other ranks are not left behind. The copy function is injectable:
``moxing.file.copy_parallel`` on ModelArts, a local folder copy in tests.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from src.model_utils.errors import SSDError
from src.model_utils.files import write_json_atomic

#: ``copy(source, destination)`` for two folders, one of them usually an ``obs://`` URL.
CopyFunction = Callable[[str, str], None]

#: How long a process waits for rank 0's copy (copying COCO from OBS takes a while).
DEFAULT_WAIT_S = 4 * 3600.0
_MARKER_ROOT = ".modelarts_sync"
_DEVICES_PER_NODE = 8

logger = logging.getLogger("ssd")


class ModelArtsError(SSDError, RuntimeError):
    """ModelArts syncing cannot start or did not complete; the message says why and what to do."""


def moxing_copy() -> CopyFunction:
    """``moxing.file.copy_parallel``, or a ModelArtsError saying how to run without it."""
    try:
        import moxing
    except ImportError as err:
        raise ModelArtsError(
            f"enable_modelarts is True but the 'moxing' package cannot be imported ({err}); moxing is "
            "ModelArts' OBS client and comes with ModelArts training images. Run the job on ModelArts, or "
            "set enable_modelarts False and put the data in data_path (and checkpoints in load_path) "
            "yourself") from err
    return moxing.file.copy_parallel


def local_rank_from_env(rank_info: Any) -> int:
    """This process's index on its node: ``DEVICE_ID`` modulo the devices per node.

    msrun and the rank-table launchers set ``DEVICE_ID`` to the device index on the node; a
    single-process run is always the copier.
    """
    if rank_info.group_size <= 1:
        return 0
    device_id = int(os.environ.get("DEVICE_ID", rank_info.rank))
    return device_id % min(rank_info.group_size, _DEVICES_PER_NODE)


def job_token(job_id: str | None = None) -> str:
    """A name shared by the processes of one job on one node and by nothing else.

    ``job_id``, else ``JOB_ID`` when the platform sets it, else the launcher process (msrun and
    the launch scripts start all of a node's workers from one parent), identified by its pid and
    start time so that a later launcher reusing the pid gets a different name.
    """
    job = job_id or os.environ.get("JOB_ID")
    if not job:
        parent = os.getppid()
        try:  # field 22 of /proc/<pid>/stat: start time in clock ticks since boot
            started = Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            started = "unknown"
        job = f"launcher{parent}-{started}"
    return f"{job}-{socket.gethostname()}"


@dataclass(frozen=True)
class _NodeSync:
    """Marker-file coordination between the processes of one node for one job."""

    folder: Path
    local_rank: int
    timeout_s: float
    poll_s: float

    @property
    def is_copier(self) -> bool:
        return self.local_rank == 0

    def once(self, step: str, description: str, action: Callable[[], None]) -> None:
        """Rank 0 runs ``action`` and leaves a marker; the others wait for it (or for its failure)."""
        done, failed = self.folder / f"{step}.done", self.folder / f"{step}.failed"
        if self.is_copier:
            try:
                action()
            except BaseException as err:
                write_json_atomic({"error": f"{type(err).__name__}: {err}"}, failed)
                raise
            write_json_atomic({"step": step}, done)
            return
        deadline = time.monotonic() + self.timeout_s
        while not done.exists():
            if failed.exists():
                error = json.loads(failed.read_text(encoding="utf-8"))["error"]
                raise ModelArtsError(f"local rank 0 could not {description}: {error}")
            if time.monotonic() > deadline:
                raise ModelArtsError(
                    f"local rank {self.local_rank} waited {self.timeout_s:.0f} s for local rank 0 to {description} "
                    f"(marker {done}); check rank 0's log, and that every process of the node uses the same "
                    "absolute output_path")
            time.sleep(self.poll_s)

    def mark(self, event: str) -> None:
        write_json_atomic({"local_rank": self.local_rank}, self.folder / f"{event}.rank{self.local_rank}")

    def _ranks_marked(self, event: str) -> set[int]:
        return {int(path.name.rsplit(".rank", 1)[1]) for path in self.folder.glob(f"{event}.rank*")}

    def wait_for_finished_ranks(self) -> None:
        """Rank 0 only: wait until every rank that joined has finished (warn, don't fail, on timeout)."""
        deadline = time.monotonic() + self.timeout_s
        while unfinished := self._ranks_marked("joined") - self._ranks_marked("finished"):
            if time.monotonic() > deadline:
                logger.warning(f"ModelArts: local ranks {sorted(unfinished)} did not finish within "
                               f"{self.timeout_s:.0f} s; uploading output_path without waiting for them")
                return
            time.sleep(self.poll_s)

    def remove_markers(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.parent.rmdir()  # only when no other job's markers are left in it


def _timed_copy(copy: CopyFunction, source: str, destination: str) -> None:
    started = time.monotonic()
    logger.info(f"ModelArts: copying {source} -> {destination}")
    copy(source, destination)
    logger.info(f"ModelArts: copied {source} -> {destination} in {time.monotonic() - started:.1f} s")


@contextlib.contextmanager
def modelarts_session(config: Any, rank_info: Any, copy: CopyFunction | None = None, *,
                      local_rank: int | None = None, job_id: str | None = None,
                      timeout_s: float = DEFAULT_WAIT_S, poll_s: float = 1.0) -> Iterator[None]:
    """Wrap a run's work: sync OBS -> local before, local -> OBS after; a no-op unless enable_modelarts.

    ``rank_info`` has ``rank`` and ``group_size`` (``device_adapter.ProcessInfo``). ``copy``
    defaults to moxing's; ``local_rank`` and ``job_id`` default to what the launcher set in the
    environment. Fails before any work when moxing is missing.
    """
    if not config.enable_modelarts:
        yield
        return
    copy = copy or moxing_copy()
    sync = _NodeSync(Path(config.output_path) / _MARKER_ROOT / job_token(job_id),
                     local_rank_from_env(rank_info) if local_rank is None else local_rank, timeout_s, poll_s)
    sync.folder.mkdir(parents=True, exist_ok=True)
    if not sync.is_copier:
        sync.mark("joined")
    inbound = (("data", config.data_url, config.data_path), ("checkpoint", config.checkpoint_url, config.load_path),
               ("output", config.train_url, config.output_path))
    # A failed copy also ends in the upload below, so the logs of the failure reach OBS; and every
    # process marks itself finished, so rank 0 never waits for one that has already given up.
    try:
        for step, url, local_path in inbound:
            if url:
                sync.once(f"copy_{step}", f"copy {url} to {local_path}",
                          lambda url=url, local_path=local_path: _timed_copy(copy, url, str(local_path)))
        yield
    finally:
        if not sync.is_copier:
            sync.mark("finished")
        else:
            sync.wait_for_finished_ranks()
            sync.remove_markers()
            if config.train_url:
                _timed_copy(copy, str(config.output_path), config.train_url)


@contextlib.contextmanager
def entry_session(config: Any, rank_info: Any, script: str) -> Iterator[None]:
    """``modelarts_session`` for an entry script: a ModelArts failure ends the script with one line."""
    try:
        with modelarts_session(config, rank_info):
            yield
    except ModelArtsError as err:
        raise SystemExit(f"{script}: error: {err}") from None
