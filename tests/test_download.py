"""COCO download against a loopback HTTP server: full download, resume, corruption, offline, unpacking."""
from __future__ import annotations

import hashlib
import io
import re
import socket
import subprocess
import threading
import time
import zipfile
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from src.data import download
from download_dataset import main
from src.data.download import Archive, download_archives

PROJECT_ROOT = Path(__file__).resolve().parents[1]
IMAGE_BYTES = bytes(range(256)) * 200  # 51,200 bytes, stored uncompressed so a half file is a real prefix
ANNOTATION_BYTES = b'{"images": [], "annotations": [], "categories": []}'


def _tiny_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zip_file:
        for name, data in members.items():
            zip_file.writestr(name, data)
    return buffer.getvalue()


ZIP_BYTES = _tiny_zip({"val2017/000000000139.jpg": IMAGE_BYTES,
                       "annotations/instances_val2017.json": ANNOTATION_BYTES})
TINY = Archive("tiny.zip", "zips/tiny.zip", None, hashlib.md5(ZIP_BYTES).hexdigest(),
               ("val2017", "annotations/instances_val2017.json"))


@dataclass
class LoopbackServer:
    """Serves ``files`` on 127.0.0.1 with byte ranges; records (path, Range header, status) per request."""

    files: dict[str, bytes]
    support_range: bool = True
    cut_first_response_after: int | None = None  # send only this many body bytes, then hang up (once)
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "LoopbackServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                body = server.files.get(self.path.lstrip("/"))
                range_header = self.headers.get("Range")
                if body is None:
                    return self._reply(404, b"", {}, range_header)
                match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if match and server.support_range:
                    start = int(match.group(1))
                    if start >= len(body):
                        return self._reply(416, b"", {"Content-Range": f"bytes */{len(body)}"}, range_header)
                    content_range = f"bytes {start}-{len(body) - 1}/{len(body)}"
                    return self._reply(206, body[start:], {"Content-Range": content_range}, range_header)
                return self._reply(200, body, {}, range_header)

            def _reply(self, status: int, body: bytes, headers: dict, range_header: str | None) -> None:
                server.requests.append((self.path, range_header, status))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if server.cut_first_response_after is not None:
                    body, server.cut_first_response_after = body[:server.cut_first_response_after], None
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers: list[LoopbackServer] = []

    def start(files: dict[str, bytes] | None = None, **options) -> LoopbackServer:
        servers.append(LoopbackServer(files if files is not None else {TINY.url_path: ZIP_BYTES}, **options).start())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL nobody listens on: connections are refused, like a machine without network."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _assert_unpacked(target: Path) -> None:
    assert (target / "val2017" / "000000000139.jpg").read_bytes() == IMAGE_BYTES
    assert (target / "annotations" / "instances_val2017.json").read_bytes() == ANNOTATION_BYTES
    assert download.is_unpacked(target, TINY)


def test_full_download_unpacks_into_the_config_layout(tmp_path, serve):
    server = serve()
    summary = download_archives([TINY], tmp_path / "coco", server.base_url, timeout=5)

    assert summary.failures == {}
    assert summary.ready == ["tiny.zip"]
    assert summary.downloaded_bytes == len(ZIP_BYTES)
    assert server.requests == [("/zips/tiny.zip", None, 200)]
    assert (tmp_path / "coco" / "tiny.zip").read_bytes() == ZIP_BYTES
    assert not (tmp_path / "coco" / "tiny.zip.part").exists()
    _assert_unpacked(tmp_path / "coco")
    assert "1/1 archives ready" in summary.report(1, 0.1)


def test_second_run_skips_an_unpacked_archive_without_network(tmp_path, serve):
    server = serve()
    download_archives([TINY], tmp_path, server.base_url, timeout=5)
    requests_after_first_run = len(server.requests)

    summary = download_archives([TINY], tmp_path, server.base_url, timeout=5)

    assert summary.actions == {"tiny.zip": "already unpacked"}
    assert len(server.requests) == requests_after_first_run


def test_partial_file_is_resumed_with_a_range_request(tmp_path, serve):
    server = serve()
    (tmp_path / "tiny.zip.part").write_bytes(ZIP_BYTES[:20_000])

    summary = download_archives([TINY], tmp_path, server.base_url, timeout=5)

    assert summary.failures == {}
    assert server.requests == [("/zips/tiny.zip", "bytes=20000-", 206)]
    assert summary.downloaded_bytes == len(ZIP_BYTES) - 20_000
    assert summary.actions["tiny.zip"].startswith("downloaded (resumed at byte 20000)")
    assert (tmp_path / "tiny.zip").read_bytes() == ZIP_BYTES
    _assert_unpacked(tmp_path)


def test_complete_part_file_of_unknown_size_is_kept_on_416(tmp_path, serve):
    server = serve()
    (tmp_path / "tiny.zip.part").write_bytes(ZIP_BYTES)

    summary = download_archives([TINY], tmp_path, server.base_url, timeout=5)

    assert summary.failures == {}
    assert server.requests == [("/zips/tiny.zip", f"bytes={len(ZIP_BYTES)}-", 416)]
    assert summary.downloaded_bytes == 0
    _assert_unpacked(tmp_path)


def test_connection_dropped_mid_transfer_is_resumed(tmp_path, serve):
    server = serve(cut_first_response_after=15_000)

    summary = download_archives([TINY], tmp_path, server.base_url, timeout=5, retries=2)

    assert summary.failures == {}
    assert server.requests == [("/zips/tiny.zip", None, 200), ("/zips/tiny.zip", "bytes=15000-", 206)]
    assert summary.downloaded_bytes == len(ZIP_BYTES)
    _assert_unpacked(tmp_path)


def test_server_without_range_support_restarts_instead_of_appending(tmp_path, serve):
    server = serve(support_range=False)
    (tmp_path / "tiny.zip.part").write_bytes(ZIP_BYTES[:20_000])

    summary = download_archives([TINY], tmp_path, server.base_url, timeout=5)

    assert summary.failures == {}
    assert server.requests == [("/zips/tiny.zip", "bytes=20000-", 200)]
    assert (tmp_path / "tiny.zip").read_bytes() == ZIP_BYTES


def test_md5_mismatch_is_reported_and_the_download_removed(tmp_path, serve):
    server = serve()
    wrong_md5 = replace(TINY, md5="0" * 32)

    summary = download_archives([wrong_md5], tmp_path, server.base_url, timeout=5)

    assert summary.ready == []
    assert "MD5 mismatch" in summary.failures["tiny.zip"]
    assert "run again" in summary.failures["tiny.zip"]
    assert not (tmp_path / "tiny.zip.part").exists() and not (tmp_path / "tiny.zip").exists()
    assert not (tmp_path / "val2017").exists()


def test_size_announced_by_the_server_must_match_the_known_size(tmp_path, serve):
    server = serve()
    wrong_size = replace(TINY, size=len(ZIP_BYTES) + 1)

    summary = download_archives([wrong_size], tmp_path, server.base_url, timeout=5)

    expected = f"the server offers {len(ZIP_BYTES)} bytes but tiny.zip is {len(ZIP_BYTES) + 1}"
    assert expected in summary.failures["tiny.zip"]
    assert not (tmp_path / "tiny.zip").exists()


def test_corrupt_zip_without_md5_is_detected_by_the_zip_check(tmp_path, serve):
    server = serve({TINY.url_path: b"<html>not a zip</html>" * 100})

    summary = download_archives([replace(TINY, md5=None)], tmp_path, server.base_url, timeout=5)

    assert "not a readable zip file" in summary.failures["tiny.zip"]
    assert not download.is_unpacked(tmp_path, TINY)


def test_flipped_byte_in_a_member_fails_the_crc_check(tmp_path, serve):
    corrupted = bytearray(ZIP_BYTES)
    corrupted[ZIP_BYTES.index(IMAGE_BYTES[:64]) + 1000] ^= 0xFF
    server = serve({TINY.url_path: bytes(corrupted)})

    summary = download_archives([replace(TINY, md5=None)], tmp_path, server.base_url, timeout=5)

    assert "corrupt zip member 'val2017/000000000139.jpg'" in summary.failures["tiny.zip"]


def test_offline_fails_fast_and_says_what_to_do(tmp_path, closed_port_url):
    started = time.monotonic()
    summary = download_archives(download.COCO2017_ARCHIVES, tmp_path / "coco", closed_port_url, timeout=3)
    elapsed = time.monotonic() - started

    assert elapsed < 3
    assert summary.ready == []
    message = summary.failures["annotations_trainval2017.zip"]
    assert f"cannot reach {closed_port_url}/annotations/annotations_trainval2017.zip" in message
    for archive in download.COCO2017_ARCHIVES:
        assert f"{closed_port_url}/{archive.url_path}" in message
    assert f"put them in {(tmp_path / 'coco').resolve()}" in message
    assert list(summary.failures) == ["annotations_trainval2017.zip"]  # stopped at the first archive


def test_zip_placed_by_hand_is_verified_and_unpacked_offline(tmp_path, closed_port_url):
    (tmp_path / "tiny.zip").write_bytes(ZIP_BYTES)

    summary = download_archives([TINY], tmp_path, closed_port_url, timeout=3)

    assert summary.actions == {"tiny.zip": "verified local zip, unpacked"}
    _assert_unpacked(tmp_path)


def test_bad_zip_placed_by_hand_is_reported_and_kept(tmp_path, closed_port_url):
    (tmp_path / "tiny.zip").write_bytes(ZIP_BYTES[:-100])

    summary = download_archives([replace(TINY, size=len(ZIP_BYTES))], tmp_path, closed_port_url, timeout=3)

    message = summary.failures["tiny.zip"]
    assert f"{tmp_path / 'tiny.zip'} is not a good copy (size mismatch: {len(ZIP_BYTES) - 100} bytes" in message
    assert "delete or replace it" in message
    assert (tmp_path / "tiny.zip").exists()


def test_interrupted_unpack_resumes_and_remove_archives_deletes_the_zip(tmp_path, closed_port_url):
    (tmp_path / "tiny.zip").write_bytes(ZIP_BYTES)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_bytes(ANNOTATION_BYTES)  # left by a killed unpack

    summary = download_archives([TINY], tmp_path, closed_port_url, timeout=3, remove_archives=True)

    assert summary.actions == {"tiny.zip": "verified local zip, unpacked, zip removed"}
    assert not (tmp_path / "tiny.zip").exists()
    _assert_unpacked(tmp_path)


def test_member_escaping_the_target_is_refused(tmp_path, serve):
    evil = _tiny_zip({"../escaped.txt": b"x", "val2017/a.jpg": b"y"})
    server = serve({TINY.url_path: evil})

    summary = download_archives([replace(TINY, md5=None)], tmp_path / "coco", server.base_url, timeout=5)

    assert "would be written outside" in summary.failures["tiny.zip"]
    assert not (tmp_path / "escaped.txt").exists()


def test_cli_downloads_into_data_path_and_coco_root_and_checks_the_published_sizes(tmp_path, serve, capsys):
    # The real COCO table: the loopback server's tiny zip cannot pass for the 241 MB annotations archive.
    server = serve({"annotations/annotations_trainval2017.zip": ZIP_BYTES})

    code = main(["--dataset", "coco", "--config_path", "config/ssd300_config_cpu.yaml", "--data_path",
                 str(tmp_path), "--coco_root", "coco2017", "--base_url", server.base_url, "--timeout", "5"])

    out = capsys.readouterr().out
    assert code == 1
    assert f"into {tmp_path / 'coco2017'}" in out
    assert f"the server offers {len(ZIP_BYTES)} bytes but annotations_trainval2017.zip is 252907541 bytes" in out
    assert "val2017.zip: HTTP 404" in out
    assert out.strip().splitlines()[-1].startswith(f"[download] 0/3 archives ready in {tmp_path / 'coco2017'}")


def test_cli_refuses_voc_and_names_what_is_supported(capsys):
    code = main(["--dataset", "voc", "--config_path", "config/ssd300_config_cpu.yaml"])

    assert code == 2
    assert "COCO 2017 only (--dataset coco)" in capsys.readouterr().err


def test_shell_script_prints_usage_on_wrong_arguments():
    result = subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "run_download_dataset.sh"), "coco"],
                            capture_output=True, text=True, timeout=30)

    assert result.returncode != 0
    assert "Usage: bash scripts/run_download_dataset.sh [DATASET] [CONFIG_FILE]" in result.stderr
