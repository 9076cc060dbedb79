"""foley_protocol: the STA-V2A Foley wire protocol (schema, codec, client).

Imported by the ``v2a-server`` and bundled by the Blender add-on; depends only on the standard
library, ``msgpack`` and ``pyzmq`` (no numpy, no torch). The specification in prose is
``docs/protocol.md``.
"""

from foley_protocol.protocol import (
    DEFAULT_ENDPOINT,
    ERROR_CODES,
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_LIVENESS,
    LIMITS,
    MINOR_ADDITIONS,
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Message,
    ProtocolError,
    Signer,
    decode,
    encode,
    for_minor,
    negotiate,
)

__all__ = [
    "DEFAULT_ENDPOINT",
    "ERROR_CODES",
    "HEARTBEAT_INTERVAL_S",
    "HEARTBEAT_LIVENESS",
    "LIMITS",
    "MINOR_ADDITIONS",
    "PROTOCOL_MINOR",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Message",
    "ProtocolError",
    "Signer",
    "decode",
    "encode",
    "for_minor",
    "negotiate",
]
