"""Real object-storage servers for the tests, on 127.0.0.1, behind a proxy that logs every request and injects
faults (throttling, errors, a PUT that never completes): moto's standalone S3 server, and gcp-storage-emulator for
GCS (with a local OAuth token endpoint, so that pyarrow's GCS client takes credentials from the standard chain).

Both come from PyPI and need nothing else; MinIO's server is not in the package registries here. The connector
talks to them through pyarrow's S3 and GCS file systems, exactly as in production.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import requests

from .helpers import free_port

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
INTERNAL = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
            b"<Message>We encountered an internal error. Please try again.</Message></Error>")


@dataclass
class Faults:
    """What the proxy does to the next requests."""

    throttle: int = 0  # answer this many requests 503 SlowDown
    fail: int = 0  # answer this many requests 500 InternalError
    hold_puts: bool = False  # take PUT bodies of hour files and never forward them
    held: threading.Event = field(default_factory=threading.Event)  # set once a PUT is held
    release: threading.Event = field(default_factory=threading.Event)  # then the held PUT is dropped
    pause_uploads: bool = False  # hold the next request that opens an upload of a .arrow file (S3's multipart
    paused: threading.Event = field(default_factory=threading.Event)  # start, GCS's resumable session): set then
    resume: threading.Event = field(default_factory=threading.Event)  # then it is forwarded and answered
    down: bool = False  # answer nothing: drop every connection without an answer (a store that went away)


class S3Proxy:
    """moto's S3 server and a logging, fault-injecting proxy in front of it; ``endpoint`` is the proxy."""

    def __init__(self) -> None:
        self.port = free_port()
        self.backend = free_port()
        self.log: list[tuple[str, str, int]] = []
        self.faults = Faults()
        self._lock = threading.Lock()
        self._moto: subprocess.Popen | None = None
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def uri(self, bucket: str, prefix: str) -> str:
        return f"s3://{bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http&region=us-east-1"

    #: The backend server's command (the port is appended) and its name, for errors.
    server = ("-m", "moto.server", "-H", "127.0.0.1", "-p")
    server_name = "moto's S3 server"

    def start(self) -> None:
        self._moto = subprocess.Popen([sys.executable, *self.server, str(self.backend)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"http://127.0.0.1:{self.backend}/", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or self._moto.poll() is not None:
                    raise RuntimeError(f"{self.server_name} did not start") from None
                time.sleep(0.1)
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._moto is not None:
            self._moto.terminate()
            self._moto.wait(10)

    def create_bucket(self, bucket: str) -> None:
        requests.put(f"http://127.0.0.1:{self.backend}/{bucket}", timeout=10).raise_for_status()

    def keys(self, bucket: str) -> dict[str, int]:
        """Every object of ``bucket`` and its size, straight from moto (not through the proxy)."""
        body = requests.get(f"http://127.0.0.1:{self.backend}/{bucket}?list-type=2&max-keys=100000", timeout=10).text
        namespace = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
        return {item.findtext("s3:Key", namespaces=namespace): int(item.findtext("s3:Size", namespaces=namespace))
                for item in ElementTree.fromstring(body).findall("s3:Contents", namespace)}

    def get_object(self, bucket: str, key: str) -> bytes:
        response = requests.get(f"http://127.0.0.1:{self.backend}/{bucket}/{key}", timeout=10)
        response.raise_for_status()
        return response.content

    def requests_made(self, method: str | None = None, contains: str = "") -> list[tuple[str, str, int]]:
        with self._lock:
            return [entry for entry in self.log if (method is None or entry[0] == method) and contains in entry[1]]

    def clear_log(self) -> None:
        with self._lock:
            self.log.clear()

    def _decide(self, method: str, path: str) -> bytes | None:
        """The fault to answer with, if any (consumed)."""
        with self._lock:
            if self.faults.throttle:
                self.faults.throttle -= 1
                return SLOW_DOWN
            if self.faults.fail:
                self.faults.fail -= 1
                return INTERNAL
        return None


def _opens_upload(method: str, path: str) -> bool:
    """Whether a request starts the upload of a .arrow file: S3's CreateMultipartUpload (``POST …?uploads``), or
    a GCS resumable upload session (``POST …?uploadType=resumable&name=…``)."""
    return method == "POST" and ".arrow" in path and ("?uploads" in path or "uploadType=resumable" in path)


def _handler(proxy: S3Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", ""):
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    chunk = self.rfile.read(size + 2)[:size]
                    if not size:
                        break
                    chunks.append(chunk)
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _forward(self) -> None:
            if proxy.faults.down:
                with proxy._lock:
                    proxy.log.append((self.command, self.path, 0))
                self.close_connection = True
                return
            body = self._body()
            if proxy.faults.pause_uploads and _opens_upload(self.command, self.path):
                proxy.faults.pause_uploads = False
                proxy.faults.paused.set()
                proxy.faults.resume.wait(120)
            fault = proxy._decide(self.command, self.path)
            if self.command == "PUT" and proxy.faults.hold_puts and ".arrow" in self.path:
                proxy.faults.held.set()  # the client is killed meanwhile: the store never sees the PUT complete
                proxy.faults.release.wait(120)
                self.close_connection = True
                return
            status = 503 if fault is SLOW_DOWN else 500 if fault is INTERNAL else None
            if status is not None:
                self._reply(status, {"Content-Type": "application/xml"}, fault)
            else:
                connection = http.client.HTTPConnection("127.0.0.1", proxy.backend, timeout=60)
                headers = {name: value for name, value in self.headers.items() if name.lower() not in HOP_BY_HOP}
                headers["Content-Length"] = str(len(body))
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
                status = response.status
                self._reply(status, {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP},
                            payload)
                connection.close()
            with proxy._lock:
                proxy.log.append((self.command, self.path, status))

        def _reply(self, status: int, headers: dict[str, str], payload: bytes) -> None:
            self.send_response(status)
            length = str(len(payload))
            for name, value in headers.items():
                if name.lower() == "content-length":
                    length = value if self.command == "HEAD" else length  # HEAD: the object's size, no body
                else:
                    self.send_header(name, value)
            self.send_header("Content-Length", length)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class GcsProxy(S3Proxy):
    """gcp-storage-emulator (GCS's JSON API) behind the same proxy; ``credentials`` is a file for
    ``GOOGLE_APPLICATION_CREDENTIALS`` whose OAuth tokens come from a local endpoint (``token_requests`` counts
    them)."""

    server = ("-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--in-memory", "--port")
    server_name = "gcp-storage-emulator"

    def __init__(self, credentials: Path) -> None:
        super().__init__()
        self.credentials = credentials
        self.token_requests = 0
        self._tokens: ThreadingHTTPServer | None = None

    def uri(self, bucket: str, prefix: str) -> str:
        """A ``gs://`` store URI; pyarrow's GCS client retries a failing request for 3 s at most."""
        return f"gs://{bucket}/{prefix}?endpoint_override={self.endpoint}&scheme=http&retry_limit_seconds=3"

    def start(self) -> None:
        proxy = self

        class Tokens(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"access_token": "test-gcs-token", "expires_in": 3600,
                                   "token_type": "Bearer"}).encode()
                proxy.token_requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._tokens = ThreadingHTTPServer(("127.0.0.1", 0), Tokens)
        threading.Thread(target=self._tokens.serve_forever, daemon=True).start()
        self.credentials.write_text(json.dumps({
            "type": "authorized_user", "client_id": "test-client", "client_secret": "test-gcs-client-secret",
            "refresh_token": "test-refresh-token", "token_uri": f"http://127.0.0.1:{self._tokens.server_port}/token"}))
        super().start()

    def stop(self) -> None:
        super().stop()
        if self._tokens is not None:
            self._tokens.shutdown()
            self._tokens.server_close()

    def create_bucket(self, bucket: str) -> None:
        requests.post(f"http://127.0.0.1:{self.backend}/storage/v1/b?project=test", json={"name": bucket},
                      timeout=10).raise_for_status()

    def keys(self, bucket: str) -> dict[str, int]:
        """Every object of ``bucket`` and its size, straight from the emulator (not through the proxy)."""
        response = requests.get(f"http://127.0.0.1:{self.backend}/storage/v1/b/{bucket}/o", timeout=10)
        response.raise_for_status()
        return {item["name"]: int(item["size"]) for item in response.json().get("items", [])}

    def get_object(self, bucket: str, key: str) -> bytes:
        response = requests.get(f"http://127.0.0.1:{self.backend}/download/storage/v1/b/{bucket}/o/"
                                f"{quote(key, safe='')}?alt=media", timeout=10)
        response.raise_for_status()
        return response.content
