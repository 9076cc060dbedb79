"""The result spool: jobs' final replies kept on disk, fetchable by the client that asked.

Two uses (docs/protocol.md, "Result spool and fetch"):

* a client that stays connected but stops reading: its results beyond the per-client memory
  budget wait here instead of in memory (``v2a_server.serving.outbox``), and are sent from
  here when the client reads again;
* takes that outlive the client: a client that sent a ``client_key`` in hello has every final
  reply of its jobs (result or error) written here before it is sent, so a later connection
  with the same key (Blender reopened, the connection back, the server restarted) can
  ``fetch`` it.

One file per reply, ``<dir>/<sha256(owner, job id)>.spool``: a msgpack map of the owner, the
job id, the wall-clock time it was written and the message (type, parent, body, buffers). Files
are written under a temporary name and renamed, so a server killed mid-write leaves no half
entry; the index is rebuilt from the folder at start. Entries expire after ``ttl_s`` and, oldest
first, when the folder is over ``max_bytes``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from foley_protocol.protocol import Message

logger = logging.getLogger("v2a_server")

DEFAULT_SPOOL_MAX_MB = 2048
DEFAULT_SPOOL_TTL_H = 48.0
SUFFIX = ".spool"


def default_spool_dir() -> Path:
    """``$XDG_CACHE_HOME/v2a-server/spool`` (``~/.cache/...`` when unset)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "v2a-server" / "spool"


@dataclass
class SpoolEntry:
    path: Path
    size: int
    written_at: float  # wall clock (time.time): it must survive a restart


class ResultSpool:
    """Final replies on disk, keyed by (owner, job id).

    Args:
        folder: created (mode 0700: results are the clients' private data) when absent.
        max_bytes: the folder's size budget; the oldest entries go first beyond it.
        ttl_s: an entry older than this is deleted.
    """

    def __init__(self, folder: str | os.PathLike, max_bytes: int, ttl_s: float):
        self.folder = Path(folder)
        self.max_bytes = int(max_bytes)
        self.ttl_s = float(ttl_s)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._index: dict[tuple[str, str], SpoolEntry] = {}
        self._total = 0
        self._load()

    # ---- public -------------------------------------------------------------------------

    def put(self, owner: str, job_id: str, message: Message) -> bool:
        """Write ``message`` (a job's final reply) as (owner, job_id); False if it failed
        (disk full, unwritable): the caller then keeps it in memory or drops it."""
        record = {"owner": owner, "job_id": job_id, "written_at": time.time(),
                  "type": message.type, "parent": message.parent, "body": message.body,
                  "buffers": [bytes(memoryview(b)) for b in message.buffers]}
        path = self.folder / (_file_stem(owner, job_id) + SUFFIX)
        temporary = path.with_suffix(".tmp")
        try:
            data = msgpack.packb(record, use_bin_type=True)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(temporary, path)
        except (OSError, ValueError, TypeError) as exc:
            logger.error("spool: could not write the %s of %s: %s", message.type, job_id, exc)
            with contextlib.suppress(OSError):
                temporary.unlink()
            return False
        self._forget(owner, job_id, delete=False)
        self._index[(owner, job_id)] = SpoolEntry(path, len(data), record["written_at"])
        self._total += len(data)
        self.expire()
        return (owner, job_id) in self._index

    def get(self, owner: str, job_id: str) -> Message | None:
        """The spooled reply of (owner, job_id), or None (never spooled, expired, unreadable)."""
        entry = self._index.get((owner, job_id))
        if entry is None:
            return None
        if self._expired(entry, time.time()):
            self._forget(owner, job_id)
            return None
        record = _read(entry.path)
        if record is None:
            self._forget(owner, job_id)
            return None
        return Message(record["type"], record["body"], parent=record["parent"],
                       buffers=list(record["buffers"]))

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._index

    def remove(self, owner: str, job_id: str) -> None:
        self._forget(owner, job_id)

    @property
    def total_bytes(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._index)

    def expire(self) -> None:
        """Delete entries past the TTL, then the oldest until the folder fits ``max_bytes``."""
        now = time.time()
        for key, entry in list(self._index.items()):
            if self._expired(entry, now):
                logger.info("spool: %s expired (older than %.1f h)", key[1], self.ttl_s / 3600)
                self._forget(*key)
        if self._total > self.max_bytes:
            for key, _ in sorted(self._index.items(), key=lambda item: item[1].written_at):
                logger.warning("spool: %s deleted unfetched: the spool is over its %d MB budget",
                               key[1], self.max_bytes // 2**20)
                self._forget(*key)
                if self._total <= self.max_bytes:
                    break

    # ---- internals ----------------------------------------------------------------------

    def _expired(self, entry: SpoolEntry, now: float) -> bool:
        return now - entry.written_at > self.ttl_s

    def _forget(self, owner: str, job_id: str, delete: bool = True) -> None:
        entry = self._index.pop((owner, job_id), None)
        if entry is None:
            return
        self._total -= entry.size
        if delete:
            with contextlib.suppress(OSError):
                entry.path.unlink()

    def _load(self) -> None:
        for temporary in self.folder.glob("*.tmp"):  # a write cut short by a kill
            with contextlib.suppress(OSError):
                temporary.unlink()
        for path in self.folder.glob("*" + SUFFIX):
            record = _read(path)
            if record is None:
                logger.warning("spool: %s is unreadable; deleted", path.name)
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            size = path.stat().st_size
            self._index[(record["owner"], record["job_id"])] = SpoolEntry(
                path, size, float(record["written_at"]))
            self._total += size
        self.expire()
        if self._index:
            logger.info("spool %s: %d replies kept (%.1f MB)", self.folder, len(self._index),
                        self._total / 2**20)


def _file_stem(owner: str, job_id: str) -> str:
    # hashed: neither the key nor the id ever becomes a path
    return hashlib.sha256(f"{owner}\0{job_id}".encode()).hexdigest()[:40]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = msgpack.unpackb(path.read_bytes(), raw=False)
        if not isinstance(record, dict) or not {"owner", "job_id", "written_at", "type",
                                                "parent", "body", "buffers"} <= record.keys():
            return None
        return record
    except (OSError, ValueError, msgpack.UnpackException):
        return None

