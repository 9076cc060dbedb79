"""A Hugging Face Hub stand-in on 127.0.0.1 for the files of a few fake repositories.

It answers ``HEAD``/``GET /{repo_id}/resolve/{revision}/{path}`` the way huggingface_hub's
``file_download.py`` expects: ``X-Repo-Commit``; ``ETag`` = the git blob sha1 for small files and,
for LFS-like files (weights), ``X-Linked-Etag`` = sha256 + ``X-Linked-Size``; ``Content-Length``;
``Range: bytes=N-`` → 206 + ``Content-Range``; 404 with ``X-Error-Code: EntryNotFound`` /
``RepoNotFound``; 401 for a refused token. It can drop the connection once in the middle of a
file (after a given number of bytes), and records every request.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

LFS_SUFFIXES = (".bin", ".ckpt", ".safetensors", ".model")
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")


class FakeHub:
    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.commits = {repo: hashlib.sha1(repo.encode()).hexdigest() for repo in repos}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.drop_once: dict[tuple[str, str], int] = {}  # (repo, path) → bytes sent before the cut
        self.refused_token: str | None = None
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def gets(self, path_suffix: str) -> list[str | None]:
        """The Range headers of the GETs of a file (None = the whole file)."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.endswith(path_suffix)]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def _empty(self, code: int, headers: dict[str, str]) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _answer(self, with_body: bool) -> None:
                with hub._lock:
                    hub.requests.append((self.command, self.path, self.headers.get("Range")))
                if hub.refused_token and self.headers.get("Authorization") == f"Bearer {hub.refused_token}":
                    return self._empty(401, {"X-Error-Message": "Invalid credentials in Authorization header"})
                m = RESOLVE.match(self.path.split("?")[0])
                if not m or m["repo"] not in hub.repos:
                    return self._empty(404, {"X-Error-Code": "RepoNotFound",
                                             "X-Error-Message": "Repository not found"})
                repo, path = m["repo"], unquote(m["path"])
                commit = hub.commits[repo]
                data = hub.repos[repo].get(path)
                if data is None:
                    return self._empty(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit,
                                             "X-Error-Message": "Entry not found"})
                headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
                if path.endswith(LFS_SUFFIXES):
                    sha = hashlib.sha256(data).hexdigest()
                    headers.update({"ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))})
                else:
                    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                    headers["ETag"] = f'"{blob}"'
                start, code = 0, 200
                rng = self.headers.get("Range")
                if rng and with_body:
                    start, code = int(re.match(r"bytes=(\d+)-$", rng).group(1)), 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                body = data[start:]
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not with_body:
                    return
                if (repo, path) in hub.drop_once and start == 0:
                    self.wfile.write(body[: hub.drop_once.pop((repo, path))])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def do_HEAD(self):
                self._answer(with_body=False)

            def do_GET(self):
                self._answer(with_body=True)

        return Handler
