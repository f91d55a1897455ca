"""A small HTTP file server on 127.0.0.1 for download tests: Range, drops, 5xx on demand."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Behaviour:
    """What the server does; tests change it between requests.

    Attributes:
        files: URL path -> content.
        fail_first: answer this many requests with HTTP 500 first.
        drop_after: on the next full-body answer, close the connection after this many bytes
            (once), as a flaky network would.
        ignore_range: answer 200 with the whole body even when asked for a range.
        requests: every request seen, ``"GET /path bytes=N-"``.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    fail_first: int = 0
    drop_after: int | None = None
    ignore_range: bool = False
    requests: list[str] = field(default_factory=list)


def _handler(behaviour: Behaviour) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            range_header = self.headers.get("Range", "")
            behaviour.requests.append(f"GET {self.path} {range_header}".strip())
            if behaviour.fail_first > 0:
                behaviour.fail_first -= 1
                self._empty(500)
                return
            body = behaviour.files.get(self.path)
            if body is None:
                self._empty(404)
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", range_header)
            if match and not behaviour.ignore_range:
                start = int(match.group(1))
                if start >= len(body):
                    self._empty(416)
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if behaviour.drop_after is not None and behaviour.drop_after < len(payload):
                self.wfile.write(payload[: behaviour.drop_after])
                self.wfile.flush()
                behaviour.drop_after = None
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(payload)

        def _empty(self, code: int) -> None:
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serve(behaviour: Behaviour) -> Iterator[str]:
    """Run the server in a thread; yields its base URL ``http://127.0.0.1:<port>``."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(behaviour))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
