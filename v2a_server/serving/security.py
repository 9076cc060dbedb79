"""Who may reach the server: the bind check and the CURVE keys.

A non-loopback bind without CURVE keys is refused (anyone on the network could use the GPU);
the keys come from ``v2a keys``. A loopback endpoint also decides, by default, whether the
server reads movie files named by clients (client and server share a file system).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback address (127.0.0.0/8, ::1,
    localhost); False for wildcards, interface names and anything that resolves elsewhere."""
    parts = urlsplit(endpoint)
    if parts.scheme in ("ipc", "inproc"):
        return True
    if parts.scheme != "tcp":
        return False
    host = parts.hostname
    if not host or host == "*":
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def is_ipv6_endpoint(endpoint: str) -> bool:
    """True for a tcp:// endpoint whose host is an IPv6 address (``tcp://[::1]:5555``): the
    socket needs ZMQ_IPV6 to bind or connect it."""
    parts = urlsplit(endpoint)
    if parts.scheme != "tcp" or not parts.hostname:
        return False
    try:
        return ipaddress.ip_address(parts.hostname).version == 6
    except ValueError:
        return False


def check_bind_allowed(endpoint: str, curve: bool) -> None:
    """Refuse a non-loopback bind without CURVE keys (SystemExit with the reason)."""
    if not curve and not is_loopback_endpoint(endpoint):
        raise SystemExit(
            f"v2a-server: refusing to bind {endpoint}: it is not a loopback address and no "
            "CURVE keys are configured, so anyone on the network could use this GPU. Run "
            "`v2a keys --out DIR`, start the server with --curve-secret-key DIR/server.key_secret "
            "and give clients DIR/server.key (or bind tcp://127.0.0.1:PORT).")


def load_server_keys(path: str) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a ``*.key_secret`` file written by ``v2a keys``."""
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"v2a-server: cannot read CURVE keys from {path}: {exc}") from None
    if not secret:
        raise SystemExit(f"v2a-server: {path} holds no secret key; pass the *.key_secret file "
                         "written by `v2a keys`")
    return public, secret
