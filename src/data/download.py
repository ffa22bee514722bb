"""Download, verify and unpack the COCO 2017 archives into the folder the configs read.

``<data_path>/<coco_root>`` ends up holding ``train2017/``, ``val2017/`` and
``annotations/instances_{train,val}2017.json``, which is what ``coco_root``, ``train_data_type``,
``val_data_type`` and ``instances_set`` point at. The archives are 19 GB together, so every step
can be repeated cheaply: a partial download continues from its ``.part`` file with an HTTP Range
request, an archive is trusted only after its size and MD5 (or, without a known MD5, every
member's CRC) check out, and a finished unpack leaves a marker so the next run skips it.
Without network access the run stops at the first connection attempt and says which files to
fetch elsewhere; archives placed in the folder by hand are then verified and unpacked offline.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from src.model_utils.errors import SSDError
from src.model_utils.files import write_json_atomic

#: The project's logger: the entry scripts send it to the console and to the log files.
logger = logging.getLogger("ssd")

COCO_BASE_URL = "http://images.cocodataset.org"
DEFAULT_TIMEOUT_S = 15.0
DEFAULT_RETRIES = 3
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One zip file of a dataset: where it lives on the server and what it must contain."""

    filename: str
    url_path: str                # relative to the base URL
    size: int | None             # bytes, when published; otherwise the server's Content-Length is used
    md5: str | None              # when published; otherwise every member's CRC is checked
    provides: tuple[str, ...]    # paths (relative to the target folder) that exist once it is unpacked


#: Smallest first, so a failing connection or a full disk shows up before the 18 GB download.
#: Sizes and MD5s are the values published for the images.cocodataset.org files.
COCO2017_ARCHIVES = (
    Archive("annotations_trainval2017.zip", "annotations/annotations_trainval2017.zip", 252_907_541,
            "f4bbac642086de4f52a3fdda2de5fa2c",
            ("annotations/instances_train2017.json", "annotations/instances_val2017.json")),
    Archive("val2017.zip", "zips/val2017.zip", 815_585_330, "442b8da7639aecaf257c1dceb8ba8c80", ("val2017",)),
    Archive("train2017.zip", "zips/train2017.zip", 19_336_861_798, "cced6f7f71b7629ddf16f17bbcfab6b2",
            ("train2017",)),
)

SUPPORTED_DATASETS = ("coco",)


class DownloadError(SSDError, RuntimeError):
    """An archive could not be made ready; the message names the file or URL and what to do."""


class ServerUnreachableError(DownloadError):
    """The first connection failed: offline, blocked or a wrong base URL (no point trying the rest)."""


@dataclass
class DownloadSummary:
    """What a run did, for the final line and for callers that check the outcome."""

    target: Path
    ready: list[str] = field(default_factory=list)
    downloaded_bytes: int = 0
    actions: dict[str, str] = field(default_factory=dict)    # filename -> what was done
    failures: dict[str, str] = field(default_factory=dict)   # filename -> reason

    def report(self, total: int, seconds: float) -> str:
        """One error paragraph per failed archive, then the one-line summary."""
        lines = [f"[download] ERROR {name}: {why}" for name, why in self.failures.items()]
        done = ", ".join(f"{name}: {action}" for name, action in self.actions.items())
        summary = (f"[download] {len(self.ready)}/{total} archives ready in {self.target} "
                   f"({done or 'nothing done'}; {_human(self.downloaded_bytes)} downloaded in {seconds:.1f} s)")
        if self.failures:
            summary += f"; failed: {', '.join(self.failures)}"
        return "\n".join(lines + [summary])


def _human(num_bytes: int) -> str:
    if num_bytes < 1024:
        return f"{num_bytes} B"
    value = num_bytes / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def archive_url(base_url: str, archive: Archive) -> str:
    return f"{base_url.rstrip('/')}/{archive.url_path}"


def _marker(target: Path, archive: Archive) -> Path:
    return target / f".{archive.filename}.unpacked"


def is_unpacked(target: Path, archive: Archive) -> bool:
    """True when an earlier run finished unpacking ``archive`` here and its output is still present."""
    return _marker(target, archive).is_file() and all((target / path).exists() for path in archive.provides)


# ---- verification ----------------------------------------------------------------------------------

def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as stream, _bar(path.stat().st_size, f"md5 {path.name}") as bar:
        for chunk in iter(lambda: stream.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def verification_problem(path: Path, archive: Archive, expected_size: int | None) -> str | None:
    """Why ``path`` is not the archive (size, MD5, or a zip that fails its CRC test); None when it is.

    A matching MD5 already proves the bytes, so the slower CRC pass over every member only runs
    when no MD5 is published.
    """
    actual_size = path.stat().st_size
    if expected_size is not None and actual_size != expected_size:
        return f"size mismatch: {actual_size} bytes, expected {expected_size}"
    if archive.md5 is not None:
        actual_md5 = _md5(path)
        return None if actual_md5 == archive.md5 else f"MD5 mismatch: {actual_md5}, expected {archive.md5}"
    try:
        with zipfile.ZipFile(path) as zip_file:
            bad_member = zip_file.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        return f"not a readable zip file ({err})"
    return None if bad_member is None else f"corrupt zip member {bad_member!r} (CRC check failed)"


# ---- downloading ------------------------------------------------------------------------------------

def _bar(total: int | None, desc: str, initial: int = 0) -> tqdm:
    # disable=None: no bar when the output is not a terminal (logs, tests).
    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=None, leave=False)


def _content_range_start_and_total(header: str | None, url: str) -> tuple[int, int | None]:
    match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", (header or "").strip())
    if match is None:
        raise DownloadError(f"{url}: the server answered a range request with Content-Range {header!r}, "
                            "which this script cannot use; delete the .part file and run again")
    total = match.group(2)
    return int(match.group(1)), None if total == "*" else int(total)


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "ssd-download-dataset"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


@dataclass
class _Transfer:
    """Running count of the bytes one ``fetch`` received, kept across its attempts and their errors."""

    received: int = 0


def _stream_once(url: str, part: Path, expected_size: int | None, timeout: float, label: str,
                 transfer: _Transfer) -> int | None:
    """One HTTP request appending to ``part`` (or rewriting it when the server cannot resume).

    Returns the full file size when the server states it. Network errors propagate for ``fetch``
    to classify; an answer that cannot be used raises DownloadError.
    """
    offset = part.stat().st_size if part.exists() else 0
    with _open(url, offset, timeout) as response:
        if response.status == 206:
            start, total = _content_range_start_and_total(response.headers.get("Content-Range"), url)
            if start != offset:
                raise DownloadError(f"{url}: asked to resume at byte {offset} but the server sent bytes from "
                                    f"{start}; delete {part} and run again")
            mode = "ab"
        else:  # 200: a fresh download, or a server that ignores Range: start from the beginning
            if offset:
                logger.info(f"[download] {url} does not support resuming; downloading {label} from the start")
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
            offset, mode = 0, "wb"
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(f"{url}: the server offers {total} bytes but {label} is {expected_size} "
                                "bytes; the URL or mirror is wrong (check --base_url)")
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, mode) as out, _bar(total, label, offset) as bar:
            for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                out.write(chunk)
                transfer.received += len(chunk)
                bar.update(len(chunk))
    return total


def fetch(url: str, part: Path, expected_size: int | None, timeout: float, retries: int) -> tuple[int, int | None]:
    """Download ``url`` into ``part``, resuming what is there; returns (bytes received, full size if known).

    A first connection that fails before any byte arrives raises ServerUnreachableError at once
    (an offline machine should not sit through retries); a transfer that breaks off later is
    resumed up to ``retries`` times.
    """
    label = part.name.removesuffix(".part")
    transfer = _Transfer()
    known_size, failures = expected_size, 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if known_size is not None and have == known_size:
            return transfer.received, known_size
        if known_size is not None and have > known_size:
            part.unlink()  # longer than the archive, so not a prefix of it
            continue
        try:
            total = _stream_once(url, part, expected_size, timeout, label, transfer)
            reason = "the server closed the connection early"
        except urllib.error.HTTPError as err:
            if err.code != 416 or not have:
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
            # Range not satisfiable: the .part is already the whole file ("bytes */<size>"), or longer.
            if err.headers.get("Content-Range", "").strip() == f"bytes */{have}":
                return transfer.received, have
            part.unlink()
            reason = f"{part.name} did not fit the file on the server, restarting"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            if failures == 0 and transfer.received == 0:
                raise ServerUnreachableError(f"cannot reach {url} ({getattr(err, 'reason', err)})") from err
            reason = f"transfer interrupted ({err})"
        else:
            known_size = known_size if known_size is not None else total
            if known_size is None or part.stat().st_size >= known_size:
                return transfer.received, known_size
        failures += 1
        if failures > retries:
            raise DownloadError(f"{url}: gave up after {retries} resumed attempts ({reason}); run again to "
                                f"continue from {part}")
        logger.info(f"[download] {label}: {reason}; resuming (attempt {failures} of {retries})")
        time.sleep(min(2.0 ** (failures - 1), 30.0))


# ---- unpacking ----------------------------------------------------------------------------------------

def unpack(zip_path: Path, target: Path, archive: Archive) -> None:
    """Extract every member into ``target``, then write the completion marker.

    Members already present with their final size are skipped (each file is written to a temporary
    name and renamed, so a present file is a complete one); that makes an interrupted unpack cheap
    to resume. Member names that would land outside ``target`` are refused.
    """
    root = target.resolve()
    with zipfile.ZipFile(zip_path) as zip_file:
        members = zip_file.infolist()
        with _bar(sum(m.file_size for m in members), f"unzip {zip_path.name}") as bar:
            for member in members:
                destination = (root / member.filename).resolve()
                if destination != root and root not in destination.parents:
                    raise DownloadError(f"{zip_path}: member {member.filename!r} would be written outside "
                                        f"{target}; the archive is not the expected one")
                if member.is_dir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                if not (destination.is_file() and destination.stat().st_size == member.file_size):
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    temporary = destination.with_name(f".{destination.name}.unzipping")
                    with zip_file.open(member) as source, open(temporary, "wb") as out:
                        shutil.copyfileobj(source, out, _CHUNK_BYTES)
                    os.replace(temporary, destination)
                bar.update(member.file_size)
    missing = [path for path in archive.provides if not (target / path).exists()]
    if missing:
        raise DownloadError(f"{zip_path} unpacked but {', '.join(missing)} did not appear in {target}; "
                            "the archive is not the expected one")
    write_json_atomic({"archive": archive.filename, "bytes": zip_path.stat().st_size, "members": len(members)},
                      _marker(target, archive))


# ---- one archive, then all of them -------------------------------------------------------------------

def prepare_archive(archive: Archive, target: Path, base_url: str, timeout: float = DEFAULT_TIMEOUT_S,
                    retries: int = DEFAULT_RETRIES, remove_archive: bool = False) -> tuple[str, int]:
    """Make ``archive`` unpacked in ``target``; returns (what was done, bytes downloaded).

    A zip already in the folder (placed by hand, or left by an earlier run) is verified, never
    deleted: if it is bad the error says so and the user decides. Only a fresh download that
    fails verification is removed, since resuming from corrupt bytes would fail again.
    """
    if is_unpacked(target, archive):
        return "already unpacked", 0
    zip_path = target / archive.filename
    downloaded = 0
    if zip_path.is_file():
        problem = verification_problem(zip_path, archive, archive.size)
        if problem:
            raise DownloadError(f"{zip_path} is not a good copy ({problem}); delete or replace it and run again")
        action = "verified local zip, unpacked"
    else:
        url = archive_url(base_url, archive)
        part = zip_path.with_name(zip_path.name + ".part")
        resumed_from = part.stat().st_size if part.exists() else 0
        downloaded, size = fetch(url, part, archive.size, timeout, retries)
        problem = verification_problem(part, archive, size)
        if problem:
            part.unlink()
            raise DownloadError(f"downloaded {url} but it failed verification ({problem}); the partial file was "
                                "removed, run again to download it afresh")
        os.replace(part, zip_path)
        action = f"downloaded (resumed at byte {resumed_from}), unpacked" if resumed_from else "downloaded, unpacked"
    unpack(zip_path, target, archive)
    if remove_archive:
        zip_path.unlink()
        action += ", zip removed"
    return action, downloaded


def download_archives(archives: Sequence[Archive], target: Path, base_url: str = COCO_BASE_URL,
                      timeout: float = DEFAULT_TIMEOUT_S, retries: int = DEFAULT_RETRIES,
                      remove_archives: bool = False) -> DownloadSummary:
    """Prepare every archive; a bad archive does not stop the others, an unreachable server does."""
    summary = DownloadSummary(Path(target).resolve())
    for index, archive in enumerate(archives):
        try:
            action, downloaded = prepare_archive(archive, summary.target, base_url, timeout, retries, remove_archives)
        except ServerUnreachableError as err:
            pending = [a for a in archives[index:] if not is_unpacked(summary.target, a)]
            summary.failures[archive.filename] = _offline_advice(str(err), pending, base_url, summary.target)
            break
        except DownloadError as err:
            summary.failures[archive.filename] = str(err)
            continue
        summary.ready.append(archive.filename)
        summary.actions[archive.filename] = action
        summary.downloaded_bytes += downloaded
    return summary


def _offline_advice(reason: str, pending: Sequence[Archive], base_url: str, target: Path) -> str:
    urls = "\n".join(f"    {archive_url(base_url, archive)}" for archive in pending)
    return (f"{reason}. This machine looks offline (or the server is blocked). Download these files on a "
            f"machine with internet access:\n{urls}\n  and put them in {target.resolve()}; running this "
            "script again then verifies and unpacks them without the network")


# ---- command line --------------------------------------------------------------------------------------
