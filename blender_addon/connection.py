"""The add-on's one connection to a Foley server: the client, what its hello said, and the
server status shown in the panel (refreshed every few seconds while connected)."""

from __future__ import annotations

import time
from typing import Any

import bpy
from foley_protocol.client import FoleyClient

from . import messages

STATUS_PERIOD_S = 2.0  # how often to refresh the server status shown in the panel
# Announced to the server, which cancels our jobs after 3 x this of silence: long enough for
# Blender to save a big file or rebuild its undo step on the UI thread (no polls meanwhile);
# the price is that a dead server is noticed after 12 s.
HEARTBEAT_INTERVAL_S = 4.0


class Connection:
    """One client at a time, for one (endpoint, public key)."""

    def __init__(self):
        self.client: FoleyClient | None = None
        self.key: tuple[str, str] | None = None  # (endpoint, public key) of ``client``
        self.server_status: dict[str, Any] | None = None  # the last status reply
        self._status_request: str | None = None
        self._last_status_at = 0.0

    def ensure(self, endpoint: str, public_key: str, busy: bool,
               client_key: str | None = None) -> FoleyClient:
        """The client for ``endpoint``; a changed address or key makes a new one unless
        ``busy`` (jobs still run on the current server). ``client_key``: the .blend's
        (``recovery``); another .blend's makes a new client too."""
        key = (endpoint, public_key)
        if self.client is not None and not busy and (
                self.key != key or self.client.client_key != client_key):
            self.close()
        if self.client is None:
            self.client = FoleyClient(
                endpoint, server_public_key=public_key or None,
                client_name=f"Blender {bpy.app.version_string} Foley add-on",
                heartbeat_interval_s=HEARTBEAT_INTERVAL_S, client_key=client_key)
            self.key = key
            self.server_status = None
            self._status_request = None
        return self.client

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        self.key = None
        self.server_status = None
        self._status_request = None

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    @property
    def server_info(self) -> dict[str, Any] | None:
        """The server's hello reply while connected, else None."""
        return self.client.server_info if self.connected else None

    @property
    def ready(self) -> bool:
        """Connected to a server that has loaded its model (it told us the model's rate)."""
        return bool(self.connected and (self.client.server_info or {}).get("model_fps"))

    @property
    def uses_key(self) -> bool:
        return bool(self.key and self.key[1])

    def request_status(self) -> None:
        """Refresh the server status at the next tick."""
        self._last_status_at = 0.0

    def refresh_status(self, now: float) -> None:
        """Ask for the server status when the last answer is old (one request at a time)."""
        if self.connected and self._status_request is None \
                and now - self._last_status_at > STATUS_PERIOD_S:
            self._status_request = self.client.status()
            self._last_status_at = now

    def on_event(self, event) -> bool:
        """Take a disconnect or a status reply; False for every other event."""
        if event.type == "disconnected":
            self.server_status = None
            return True
        if event.request_id is not None and event.request_id == self._status_request:
            if event.final:
                self._status_request = None
            if event.type == "status_reply":
                self.server_status = event.body
            return True
        return False

    def text(self) -> str:
        """One line for the panel: connected / connecting / not connected."""
        if self.client is None:
            return messages.connection(None, False, False)
        loading = (self.client.server_info or {}).get("state") == "loading"
        return messages.connection(self.client.endpoint, self.client.connected, loading)

    def waited_too_long(self, created_at: float, job_timeout_s: float,
                        connect_deadline: float) -> str | None:
        """Why a job still waiting for a ready server fails now, or None while it may wait
        (a server that answered but is still loading its model gets the job timeout)."""
        now = time.monotonic()
        limit = created_at + job_timeout_s if self.connected else connect_deadline
        if now <= limit:
            return None
        loading = self.connected and (self.client.server_info or {}).get("state") == "loading"
        return messages.unreachable(self.client.endpoint, now - created_at, loading,
                                    self.uses_key)
