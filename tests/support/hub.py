"""A hub-compatible file server on 127.0.0.1 for tests: the real huggingface_hub client and
the daemon's downloader talk to it through HF_ENDPOINT.

Serves the metadata API (`/api/models/{repo}/revision/{rev}`) and file resolution
(`/{repo}/resolve/{rev}/{file}`, HEAD and GET with Range), and logs every request. A link's
bandwidth can be set (`rate_bps`), and `close()` cuts the transfers under way, as a dropped
connection does.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Repo:
    commit: str
    files: dict[str, Path]
    sha256: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, path in self.files.items():
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
            self.sha256[name] = digest.hexdigest()


class HubServer:
    def __init__(self, port: int = 0) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.throttle_s = 0.0  # sleep per 64 KiB sent, to make a download slow enough to kill
        self.rate_bps = 0.0  # bytes per second of the whole link, shared by its transfers; 0: free
        self._link = threading.Lock()
        self._link_free_at = 0.0  # when the link has sent what was queued on it
        self._cut = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def add(self, repo: str, files: dict[str, Path], commit: str | None = None) -> Repo:
        commit = commit or hashlib.sha1(repo.encode()).hexdigest()
        self.repos[repo] = Repo(commit, files)
        return self.repos[repo]

    def close(self) -> None:
        """Stop answering: new connections are refused and transfers under way are cut."""
        self._cut.set()
        self._server.shutdown()
        self._server.server_close()

    def _pace(self, sent: int) -> None:
        """Hold a block until a link of `rate_bps` would have carried it."""
        if not self.rate_bps:
            return
        with self._link:
            now = time.monotonic()
            self._link_free_at = max(self._link_free_at, now) + sent / self.rate_bps
            wait = self._link_free_at - now
        time.sleep(wait)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _json(self, payload: object, status: int = 200) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                hub.requests.append((self.command, self.path, self.headers.get("Range")))
                path = self.path.split("?")[0]
                api = re.match(r"^/api/models/([^/]+/[^/]+)/revision/([^/]+)$", path)
                if api:
                    repo = hub.repos.get(api.group(1))
                    if repo is None:
                        return self._json({"error": "Repository not found"}, 404)
                    return self._json(
                        {
                            "id": api.group(1),
                            "modelId": api.group(1),
                            "sha": repo.commit,
                            "siblings": [
                                {
                                    "rfilename": n,
                                    "size": p.stat().st_size,
                                    "lfs": {
                                        "sha256": repo.sha256[n],
                                        "size": p.stat().st_size,
                                        "pointerSize": 134,
                                    },
                                }
                                for n, p in repo.files.items()
                            ],
                        }
                    )
                resolve = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
                repo = hub.repos.get(resolve.group(1)) if resolve else None
                if not resolve or repo is None or resolve.group(3) not in repo.files:
                    return self._json({"error": "Entry not found"}, 404)
                name = resolve.group(3)
                file = repo.files[name]
                size = file.stat().st_size
                start, end = 0, size - 1
                rng = self.headers.get("Range")
                if rng:  # "bytes=START-" or "bytes=START-END", as the hub's CDN honours them
                    first, last = re.match(r"bytes=(\d+)-(\d*)", rng).groups()
                    start, end = int(first), min(int(last), size - 1) if last else size - 1
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(end + 1 - start))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{repo.sha256[name]}"')
                self.send_header("X-Linked-Etag", f'"{repo.sha256[name]}"')
                self.send_header("X-Linked-Size", str(size))
                self.send_header("X-Repo-Commit", repo.commit)
                self.end_headers()
                if not body:
                    return
                with file.open("rb") as handle:
                    handle.seek(start)
                    left = end + 1 - start
                    while left > 0 and (block := handle.read(min(64 * 1024, left))):
                        left -= len(block)
                        if hub._cut.is_set():
                            self.close_connection = True  # the client sees a short body
                            return
                        hub._pace(len(block))
                        try:
                            self.wfile.write(block)
                        except OSError:
                            return
                        if hub.throttle_s:
                            time.sleep(hub.throttle_s)

        return Handler
