"""Remote reads: HTTP range requests, S3 (a moto server) and fsspec, each
against a server this test starts on loopback, with the requests and bytes
it served counted; and servers that lie about lengths or drop connections."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ztensor
from ztensor import FormatError, ZTensorFileNotFoundError, ZTensorIOError, ZTensorValueError

ROWS, COLS = 1024, 1024  # 4 MiB of f32: four 1 MiB zstd frames


class _Counts:
    """What a server served, reset per test step."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.heads = 0
        self.gets = 0
        self.bytes = 0

    def reset(self) -> None:
        with self.lock:
            self.heads = self.gets = self.bytes = 0


class _RangeServer(http.server.ThreadingHTTPServer):
    """Serves files of `root` with HEAD and single-range GET; `mode`
    makes it lie: 'short' (one byte fewer than the range, with a matching
    Content-Length), 'long' (one byte more), 'drop' (closes the connection
    mid-body), 'flip' (one byte of each body changed)."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.root = root
        self.counts = _Counts()
        self.mode = "honest"
        # Whether GETs with If-Match answer 412 when the entity tag differs
        # (some servers ignore the header; the reader checks the answer's
        # tag then).
        self.honor_if_match = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    server: _RangeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _file(self) -> bytes | None:
        path = self.server.root / self.path.lstrip("/")
        return path.read_bytes() if path.is_file() else None

    def _etag(self, data: bytes) -> str:
        return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'

    def do_HEAD(self) -> None:
        with self.server.counts.lock:
            self.server.counts.heads += 1
        data = self._file()
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", self._etag(data))
        self.end_headers()

    def do_GET(self) -> None:
        data = self._file()
        if data is None:
            self.send_error(404)
            return
        if_match = self.headers.get("If-Match")
        if self.server.honor_if_match and if_match and if_match != self._etag(data):
            self.send_response(412)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        header = self.headers.get("Range", "")
        if not header.startswith("bytes="):
            start, end = 0, len(data)
        else:
            first, _, last = header[len("bytes=") :].partition("-")
            start, end = int(first), min(int(last) + 1, len(data))
        body = data[start:end]
        mode = self.server.mode
        if mode == "short":
            body = body[:-1]
        elif mode == "long":
            body = body + b"\0"
        elif mode == "flip" and body:
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        with self.server.counts.lock:
            self.server.counts.gets += 1
            self.server.counts.bytes += len(body)
        self.send_response(206 if header else 200)
        self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", self._etag(data))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "drop":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


class _CountingProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to `upstream` (host, port) unchanged and
    records (method, path, Range header, body bytes) of each."""

    daemon_threads = True

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, str | None, int]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def take(self) -> list[tuple[str, str, str | None, int]]:
        with self.lock:
            out, self.log = self.log, []
        return out


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: _CountingProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        import http.client

        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        conn = http.client.HTTPConnection(*self.server.upstream, timeout=30)
        try:
            conn.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
            resp = conn.getresponse()
            data = resp.read()
            headers = resp.getheaders()
        finally:
            conn.close()
        with self.server.lock:
            self.server.log.append((self.command, self.path, self.headers.get("Range"), len(data)))
        self.send_response_only(resp.status, resp.reason)
        skip = {"transfer-encoding", "connection"}
        if self.command != "HEAD":
            skip.add("content-length")
            self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            if k.lower() not in skip:
                self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_HEAD = _forward


def _write_model(path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    tensors = {
        "big": rng.standard_normal((ROWS, COLS)).astype(np.float32),
        # Sixteen levels: compresses to about a third, so its frames and
        # seek table lie outside the 64 KiB tail fetched at open.
        "packed": rng.integers(0, 16, (ROWS, COLS)).astype(np.float32),
        "small": np.arange(10, dtype=np.int64),
    }
    with ztensor.Writer(path) as w:
        w.add_tensor("big", tensors["big"])
        w.add_tensor("packed", tensors["packed"], compress=True)
        w.add_tensor("small", tensors["small"])
    return tensors


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[_RangeServer, dict[str, np.ndarray]]]:
    """A model file and an HTTP server with Range support serving it."""
    tensors = _write_model(tmp_path / "model.zt")
    server = _RangeServer(tmp_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, tensors
    finally:
        server.shutdown()
        server.server_close()


class TestHttp:
    def test_open_costs_a_bounded_number_of_requests(self, served: Any) -> None:
        server, tensors = served
        r = ztensor.open(f"{server.url}/model.zt")
        # The size (HEAD), then head and tail in one concurrent batch; the
        # manifest of this file lies in the 64 KiB tail.
        assert (server.counts.heads, server.counts.gets) == (1, 2)
        assert server.counts.bytes <= 64 + 64 * 1024
        assert sorted(r.keys()) == ["big", "packed", "small"]
        assert server.counts.gets == 2, "listing names costs no request"

    def test_a_raw_tensor_costs_its_bytes(self, served: Any) -> None:
        server, tensors = served
        r = ztensor.open(f"{server.url}/model.zt")
        server.counts.reset()
        big = r.read_tensor("big")
        np.testing.assert_array_equal(big, tensors["big"])
        assert server.counts.gets == 1
        assert server.counts.bytes == tensors["big"].nbytes
        server.counts.reset()
        rows = r.get_slice("big")[10:20]
        np.testing.assert_array_equal(rows, tensors["big"][10:20])
        assert (server.counts.gets, server.counts.bytes) == (1, 10 * COLS * 4)

    def test_a_compressed_row_range_fetches_only_its_frames(self, served: Any) -> None:
        server, tensors = served
        r = ztensor.open(f"{server.url}/model.zt")
        stored = os.path.getsize(server.root / "model.zt")
        server.counts.reset()
        rows = r.get_slice("packed")[300:310]  # inside the second 1 MiB frame
        np.testing.assert_array_equal(rows, tensors["packed"][300:310])
        # The seek table (the part's tail), then the one covering frame.
        assert server.counts.gets == 2
        server.counts.reset()
        np.testing.assert_array_equal(r.read_tensor("packed"), tensors["packed"])
        assert server.counts.gets == 1 and server.counts.bytes < stored

    def test_digests_are_verified_as_locally(self, served: Any) -> None:
        server, _ = served
        r = ztensor.open(f"{server.url}/model.zt")
        assert r.verify()["digests_checked"] >= 3
        server.mode = "honest"
        local = ztensor.open(server.root / "model.zt").verify()
        assert r.verify() == local

    def test_a_missing_file_is_file_not_found(self, served: Any) -> None:
        server, _ = served
        with pytest.raises(ZTensorFileNotFoundError):
            ztensor.open(f"{server.url}/absent.zt")


class TestLyingServers:
    @pytest.mark.parametrize("mode", ["short", "long", "drop"])
    def test_wrong_lengths_and_dropped_connections_are_errors(self, served: Any, mode: str) -> None:
        server, _ = served
        r = ztensor.open(f"{server.url}/model.zt")
        server.mode = mode
        with pytest.raises(ZTensorIOError):
            r.read_tensor("big")
        with pytest.raises(ZTensorIOError):
            r.get_slice("packed")[0:4]
        with pytest.raises(ZTensorIOError):
            ztensor.open(f"{server.url}/model.zt")

    def test_changed_bytes_fail_their_digest(self, served: Any) -> None:
        server, _ = served
        r = ztensor.open(f"{server.url}/model.zt")
        server.mode = "flip"
        with pytest.raises(FormatError):  # a digest mismatch, or a broken zstd frame
            r.verify()


class TestChangedObjects:
    @pytest.mark.parametrize("honor_if_match", [True, False])
    def test_a_replaced_file_is_an_error_not_a_mix(
        self, served: Any, tmp_path: Path, honor_if_match: bool
    ) -> None:
        server, _ = served
        server.honor_if_match = honor_if_match
        r = ztensor.open(f"{server.url}/model.zt")
        path = tmp_path / "model.zt"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same length, other bytes: a new version
        path.write_bytes(bytes(data))
        with pytest.raises(ZTensorIOError, match="changed|412|[Pp]recondition"):
            r.read_tensor("big")

    def test_signed_links_are_refused_not_stripped(self, served: Any) -> None:
        server, _ = served
        with pytest.raises(ZTensorValueError, match="query"):
            ztensor.open(f"{server.url}/model.zt?sig=abc")
        assert server.counts.heads == 0 and server.counts.gets == 0


class TestS3:
    def test_read_from_an_s3_api_server(self, tmp_path: Path) -> None:
        moto_server = pytest.importorskip("moto.server")
        boto3 = pytest.importorskip("boto3")
        tensors = _write_model(tmp_path / "model.zt")
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            creds = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
            s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **creds)
            s3.create_bucket(Bucket="models")
            s3.upload_file(str(tmp_path / "model.zt"), "models", "m/model.zt")
            options = {
                "endpoint_url": endpoint,
                "region": "us-east-1",
                "access_key_id": "test",
                "secret_access_key": "test",
                "allow_http": True,
            }
            r = ztensor.open("s3://models/m/model.zt", storage_options=options)
            np.testing.assert_array_equal(r.read_tensor("big"), tensors["big"])
            np.testing.assert_array_equal(
                r.get_slice("packed")[500:700], tensors["packed"][500:700]
            )
            np.testing.assert_array_equal(r.read_tensor("small"), tensors["small"])
            assert r.verify()["digests_checked"] >= 3
            with pytest.raises(ZTensorFileNotFoundError):
                ztensor.open("s3://models/absent.zt", storage_options=options)
        finally:
            server.stop()

    def test_s3_reads_cost_the_requests_of_spec_22(self, tmp_path: Path) -> None:
        moto_server = pytest.importorskip("moto.server")
        boto3 = pytest.importorskip("boto3")
        tensors = _write_model(tmp_path / "model.zt")
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        proxy: _CountingProxy | None = None
        try:
            host, port = server.get_host_and_port()
            creds = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
            s3 = boto3.client(
                "s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1", **creds
            )
            s3.create_bucket(Bucket="models")
            s3.upload_file(str(tmp_path / "model.zt"), "models", "m/model.zt")
            # The reader talks to moto through a proxy that logs each request.
            proxy = _CountingProxy((host, port))
            threading.Thread(target=proxy.serve_forever, daemon=True).start()
            options = {
                "endpoint_url": proxy.url,
                "region": "us-east-1",
                "access_key_id": "test",
                "secret_access_key": "test",
                "allow_http": True,
                "virtual_hosted_style_request": False,
            }
            r = ztensor.open("s3://models/m/model.zt", storage_options=options)
            log = proxy.take()
            # The size (HEAD), then head and tail in one batch (§22).
            assert [m for m, *_ in log] == ["HEAD", "GET", "GET"], log
            assert all(p == "/models/m/model.zt" for _, p, _, _ in log), log
            assert sum(n for *_, n in log) <= 64 + 64 * 1024

            np.testing.assert_array_equal(r.read_tensor("big"), tensors["big"])
            log = proxy.take()
            assert [(m, n) for m, _, _, n in log] == [("GET", tensors["big"].nbytes)], log

            rows = r.get_slice("packed")[300:310]
            np.testing.assert_array_equal(rows, tensors["packed"][300:310])
            log = proxy.take()
            # The part's seek table, then the one frame covering the rows.
            assert [m for m, *_ in log] == ["GET", "GET"], log
            assert all(rng and rng.startswith("bytes=") for _, _, rng, _ in log), log
        finally:
            if proxy is not None:
                proxy.shutdown()
                proxy.server_close()
            server.stop()


class TestFsspec:
    def test_memory_filesystem_by_url_and_by_object(self, tmp_path: Path) -> None:
        fsspec = pytest.importorskip("fsspec")
        from fsspec.implementations.memory import MemoryFileSystem

        tensors = _write_model(tmp_path / "model.zt")
        data = (tmp_path / "model.zt").read_bytes()
        calls: list[int] = []

        class Counting(MemoryFileSystem):  # type: ignore[misc]
            def cat_ranges(self, paths: list[str], *args: Any, **kwargs: Any) -> Any:
                calls.append(len(paths))
                return super().cat_ranges(paths, *args, **kwargs)

        fs = Counting()
        fs.pipe("/zt/model.zt", data)
        r = ztensor.open("/zt/model.zt", filesystem=fs)
        assert len(calls) == 1, "open: one batch (head and tail)"
        np.testing.assert_array_equal(r.read_tensor("big"), tensors["big"])
        np.testing.assert_array_equal(r.get_slice("packed")[1:3], tensors["packed"][1:3])
        assert len(calls) == 4
        by_url = ztensor.open("memory://zt/model.zt")
        np.testing.assert_array_equal(by_url.read_tensor("small"), tensors["small"])
        assert fsspec.filesystem("memory").exists("/zt/model.zt")
