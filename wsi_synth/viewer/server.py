"""The viewer's local web server: the page and OpenSeadragon (vendored in `static/`, no CDN), the slides' metadata,
Deep Zoom tiles of their images and masks, and their outlines. Standard library only (`http.server`), bound to
127.0.0.1 unless asked otherwise; one thread per request.

    GET /                                   the page (static/index.html)
    GET /static/…                           the page's script, style and OpenSeadragon
    GET /api/slides                         [{name, width, height, tile, max_level, mpp, mask, classes, outlines}]
    GET /api/slides/I/outlines              the GeoJSON outlines of slide I as rings of level-0 px
    GET /tiles/I/image/LEVEL/COL_ROW.jpg    Deep Zoom tile of slide I's image
    GET /tiles/I/mask/LEVEL/COL_ROW.png     Deep Zoom tile of slide I's class map in its classes' colours
"""

from __future__ import annotations

import json
import mimetypes
import re
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from wsi_synth.viewer.sources import ViewedSlide

STATIC = Path(__file__).resolve().parent / "static"
TILE_PATH = re.compile(r"^/tiles/(\d+)/(image|mask)/(\d+)/(\d+)_(\d+)\.(jpg|png)$")
OUTLINES_PATH = re.compile(r"^/api/slides/(\d+)/outlines$")


def make_server(slides: Sequence[ViewedSlide], *, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A server for `slides` on `host`:`port` (0: any free port); `server.server_address` says which."""
    locks = [threading.Lock() for _ in slides]  # OpenSlide handles and zarr stores are read one request at a time

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            try:
                self._route(path)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _route(self, path: str) -> None:
            if path in ("/", "/index.html"):
                return self._file(STATIC / "index.html")
            if path.startswith("/static/"):
                return self._file(STATIC / path[len("/static/") :])
            if path == "/api/slides":
                return self._send(json.dumps([s.info() for s in slides]).encode(), "application/json")
            if match := OUTLINES_PATH.match(path):
                i = int(match[1])
                if i < len(slides):
                    return self._send(json.dumps(slides[i].outlines).encode(), "application/json")
            if match := TILE_PATH.match(path):
                i, kind, level, col, row = int(match[1]), match[2], int(match[3]), int(match[4]), int(match[5])
                if i < len(slides):
                    with locks[i]:
                        slide = slides[i]
                        data = (
                            slide.image_tile(level, col, row) if kind == "image" else slide.mask_tile(level, col, row)
                        )
                    if data is not None:
                        return self._send(data, "image/jpeg" if kind == "image" else "image/png", cache=True)
            self.send_error(HTTPStatus.NOT_FOUND)

        def _file(self, file: Path) -> None:
            file = file.resolve()
            if not file.is_file() or STATIC not in file.parents:  # nothing outside static/
                return self.send_error(HTTPStatus.NOT_FOUND)
            kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            self._send(file.read_bytes(), kind, cache=file.name != "index.html")

        def _send(self, data: bytes, kind: str, *, cache: bool = False) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
            pass  # a viewer's requests are not news

    return ThreadingHTTPServer((host, port), Handler)


class Viewer:
    """A running viewer: `url`, and `close()` (or a `with` block) to stop it. `serve_forever()` blocks until Ctrl-C."""

    def __init__(self, slides: Sequence[ViewedSlide], *, host: str, port: int) -> None:
        import errno

        from wsi_synth.errors import BadArgumentError

        try:
            self.server = make_server(slides, host=host, port=port)
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be opened ({exc.strerror})"
            raise BadArgumentError(f"--port {port} on {host} {why}: pass another --port (0: any free one)") from exc
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where the page is: http://HOST:PORT/."""
        host, port = self.server.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}/"

    def start(self) -> Viewer:
        """Serve in a background thread (notebooks, tests)."""
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C, then release the port."""
        try:
            self.server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.server.server_close()

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
