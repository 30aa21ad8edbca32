"""A static HTTP server for a release tree, on 127.0.0.1 only, with what RAUC's streaming needs
(Range requests) and what the tests measure: bytes sent, requests, and injected failures.

Python's http.server answers Range requests with the whole file; RAUC refuses that ("range
requests not supported by server"), as it should. This adds single-range support and nothing
else. `flaky=N` drops every Nth range request without an answer, like a lossy link.
"""

from __future__ import annotations

import os
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bytes_sent = 0
        self.requests = 0
        self.dropped = 0

    def reset(self) -> None:
        with self.lock:
            self.bytes_sent = self.requests = self.dropped = 0


class _Handler(SimpleHTTPRequestHandler):
    stats: Stats
    flaky: int

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests print figures
        pass

    def _count(self, n: int) -> None:
        with self.stats.lock:
            self.stats.bytes_sent += n

    def do_GET(self) -> None:
        with self.stats.lock:
            self.stats.requests += 1
            number = self.stats.requests
        match = RANGE.match(self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if not match or not path.is_file():
            f = self.send_head()
            if f:
                data = f.read()
                f.close()
                self.wfile.write(data)
                self._count(len(data))
            return
        if self.flaky and number % self.flaky == 0:
            with self.stats.lock:
                self.stats.dropped += 1
            self.close_connection = True
            return  # no answer at all: the client sees the connection close
        size = path.stat().st_size
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            return
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with path.open("rb") as fh:
            fh.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = fh.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                self._count(len(chunk))
                remaining -= len(chunk)

    def do_HEAD(self) -> None:
        f = self.send_head()
        if f:
            f.close()

    def end_headers(self) -> None:
        if not self.headers.get("Range"):
            self.send_header("Accept-Ranges", "bytes")
        super().end_headers()


class ReleaseServer:
    def __init__(self, root: Path, flaky: int = 0) -> None:
        self.stats = Stats()
        self.handler = type("Handler", (_Handler,), {"stats": self.stats, "flaky": flaky})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                         partial(self.handler, directory=os.fspath(root)))
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def set_flaky(self, every: int) -> None:
        self.handler.flaky = every

    def __enter__(self) -> ReleaseServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
