"""The STA-V2A Foley wire protocol: the one module that owns the wire.

Contents, in order:

* constants: ``PROTOCOL_VERSION`` (major) and ``PROTOCOL_MINOR``, supported versions, default
  endpoint, heartbeat and retry numbers, size limits (``LIMITS``), error codes;
* the message schema: one table of fields per message type (``REQUEST_SCHEMAS``,
  ``REPLY_SCHEMAS``), with type, range and size for every field;
* ``Message`` (one decoded message) and ``ProtocolError`` (what a check raises: code, message,
  field, and the request id when it could be read);
* ``encode(message, key)`` -> list of ZeroMQ frames, and its inverse ``decode(frames, key,
  direction)``, which authenticates, unpacks with msgpack limits and validates every field and
  every raw buffer before anything else sees the message;
* ``Signer``: HMAC-SHA256 sign/verify with a bounded replay history;
* minor versions: ``MINOR_ADDITIONS`` (what each minor version added), ``negotiate`` (the
  version a server answers a hello with) and ``for_minor`` (a message as a peer of an older
  minor may receive it).

Wire layout (a DEALER sends these frames; a ROUTER sees its routing id in front)::

    frame 0   signature  b"s2:" + HMAC-SHA256 hex of frames 1..n with their lengths (1.3; see
                         ``Signer``), or b"" when no key is configured
    frame 1   header     msgpack map {"v", "type", "id", "parent", "body"}
    frame 2.. buffers    raw bytes referenced by index from the body (0 = frame 2)

Only the standard library and msgpack are imported here: the Blender add-on bundles this
package, so no numpy, no torch. ``docs/protocol.md`` is the same specification in prose.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import uuid
from collections import deque
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Iterable, Mapping, Sequence

import msgpack

# --------------------------------------------------------------------------------------------
# Versions, endpoint, liveness
# --------------------------------------------------------------------------------------------

# Versions are major.minor. The major is header "v" and hello's "versions": a change an old
# peer cannot safely refuse. A minor version adds what an older peer refuses cleanly (an unknown
# type, field or value is an error naming it); peers agree on one in hello (``negotiate``) and
# send nothing newer (``for_minor``). What each minor added: ``MINOR_ADDITIONS``.
PROTOCOL_VERSION = 1
PROTOCOL_MINOR = 6  # the highest minor of PROTOCOL_VERSION this code speaks
SUPPORTED_VERSIONS = (1,)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"

HEARTBEAT_INTERVAL_S = 1.0  # a client pings this often; the server answers each ping with pong
HEARTBEAT_LIVENESS = 3  # silent intervals before the peer counts as gone (both directions)
MIN_HEARTBEAT_INTERVAL_S = 0.1  # bounds for the interval a client may announce in hello
MAX_HEARTBEAT_INTERVAL_S = 10.0
RECONNECT_BACKOFF_MIN_S = 1.0  # Lazy Pirate: first wait before recreating the socket
RECONNECT_BACKOFF_MAX_S = 8.0  # the wait doubles up to this

# Per-request timeouts a client uses unless told otherwise (seconds).
DEFAULT_TIMEOUTS_S = {
    "hello": 5.0,
    "ping": 5.0,
    "status": 5.0,
    "cancel": 5.0,
    "generate": 900.0,
    "prepare": 120.0,
    "fetch": 5.0,
    "redraw": 60.0,  # drawn on the review thread, after any review it is busy with
    # after a result that says review_follows: how long a client waits for the review
    "review": 300.0,
}

# --------------------------------------------------------------------------------------------
# Limits (every one is checked by decode(); the server reports them in hello_reply.limits)
# --------------------------------------------------------------------------------------------

MiB = 1 << 20

MAX_HEADER_BYTES = 256 * 1024  # frame 1 (msgpack header)
MAX_BUFFERS = 4096  # frames 2.. in one message
MAX_DURATION_S = 60.0  # generated audio length
MAX_FRAME_COUNT = 3600  # video frames in one request (60 s at 60 fps)
MAX_FRAME_SIDE_PX = 2048  # height and width of one video frame
MAX_RAW_FRAMES_BYTES = 256 * MiB  # T*H*W*3 for encoding "rgb24"
MAX_ENCODED_FRAME_BYTES = 8 * MiB  # one JPEG or PNG frame
MAX_ENCODED_FRAMES_BYTES = 256 * MiB  # all JPEG/PNG frames of one request
MAX_FPS = 240.0
MAX_PATH_CHARS = 4096  # a source file's path (encoding "source")
MAX_SOURCE_FRAME_INDEX = 100_000_000  # a frame number inside a source file
MAX_START_TIME_S = 1.0e7  # |time of the first frame| on the caller's timeline
MAX_CAPTION_CHARS = 1000
MAX_VARIATIONS = 4
MAX_STEPS = 1000
MAX_GUIDANCE = 30.0
MAX_SEED = 2**32 - 1
MAX_ONSET_HINTS = 1024
# An inpainted range is blended into the kept audio over this many seconds on each side; the
# result equals the inpaint source exactly outside [start_s - margin, end_s + margin].
INPAINT_MARGIN_S = 0.2
MIN_AUDIO_SAMPLE_RATE = 8000
MAX_AUDIO_SAMPLE_RATE = 192000
MAX_AUDIO_CHANNELS = 2
MAX_AUDIO_BUFFER_BYTES = 64 * MiB  # one audio buffer (inpaint source or one result variation)
MAX_TEXT_CHARS = 2000  # free text in replies (error messages, server names)
MAX_MAP_ENTRIES = 64  # free-form maps (timings_s, limits)
MAX_LIST_FLOATS = 60000  # onset curves etc. in replies
MAX_ID_CHARS = 64
MAX_PICTURE_BYTES = 8 * MiB  # one sync picture (PNG) in a result
MAX_PICTURE_SIDE_PX = 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_LEVEL_DBFS = -120.0  # a take's level in a result: digital silence reads as this
MAX_LEVEL_DBFS = 60.0
MAX_MEMORY_BYTES = 2**62

# The largest single ZeroMQ frame a server accepts (ZMQ_MAXMSGSIZE is per frame).
MAX_FRAME_BYTES = max(MAX_RAW_FRAMES_BYTES, MAX_AUDIO_BUFFER_BYTES, MAX_HEADER_BYTES) + 4096
# All frames of one request together: the largest valid generate (raw frames, inpaint audio,
# header) fits; the server counts while receiving and drops the rest of a larger one.
MAX_MESSAGE_BYTES = MAX_RAW_FRAMES_BYTES + MAX_AUDIO_BUFFER_BYTES + MAX_HEADER_BYTES + 4096

LIMITS: dict[str, float] = {
    "max_header_bytes": MAX_HEADER_BYTES,
    "max_buffers": MAX_BUFFERS,
    "max_frame_bytes": MAX_FRAME_BYTES,
    "max_message_bytes": MAX_MESSAGE_BYTES,
    "max_duration_s": MAX_DURATION_S,
    "max_frame_count": MAX_FRAME_COUNT,
    "max_frame_side_px": MAX_FRAME_SIDE_PX,
    "max_raw_frames_bytes": MAX_RAW_FRAMES_BYTES,
    "max_encoded_frame_bytes": MAX_ENCODED_FRAME_BYTES,
    "max_encoded_frames_bytes": MAX_ENCODED_FRAMES_BYTES,
    "max_fps": MAX_FPS,
    "max_caption_chars": MAX_CAPTION_CHARS,
    "max_variations": MAX_VARIATIONS,
    "max_steps": MAX_STEPS,
    "max_guidance": MAX_GUIDANCE,
    "max_seed": MAX_SEED,
    "max_onset_hints": MAX_ONSET_HINTS,
    "max_audio_buffer_bytes": MAX_AUDIO_BUFFER_BYTES,
}

# --------------------------------------------------------------------------------------------
# Error codes
# --------------------------------------------------------------------------------------------

ERROR_CODES = {
    # the message itself
    "bad_message": "frames missing, header not msgpack, header not a map, bad id",
    "auth_failed": "signature missing, wrong, replayed or of the pre-1.3 scheme",
    "unsupported_version": "header.v is not a version this peer speaks",
    "unknown_type": "header.type is not a request (or reply) type",
    "missing_field": "a required field is absent",
    "unknown_field": "a field that this version does not define",
    "wrong_type": "a field has the wrong type",
    "out_of_range": "a value outside its allowed range or set (a number, a string choice, a "
                    "list too short)",
    "too_large": "a length exceeds a size limit (string, list, header, frame count, one frame, "
                 "the whole message, a declared size)",
    "bad_buffer": "raw buffers: missing, extra, referenced twice, or of the wrong size",
    "bad_media": "a JPEG/PNG frame does not decode or has the wrong size",
    "source_unavailable": "the server cannot read the source file as the client sees it "
                          "(another machine, a changed file, another frame rate or shape): "
                          "send the frames themselves instead",
    "duplicate_id": "a request id still open on this connection (any request type)",
    # the server's state
    "busy": "the job queue is full; try again later",
    "shutting_down": "the server is stopping",
    "model_unavailable": "the model failed to load",
    # the job
    "cancelled": "the job was cancelled by a cancel request",
    "invalid_request": "well-formed but refused by the model (e.g. an impossible combination)",
    "generation_failed": "the model raised an error while generating",
    "worker_lost": "the job's worker (a cluster machine or process) was lost twice while "
                   "running it; no audio was made (1.5; older clients get generation_failed)",
    "internal": "a server bug; the message says more",
    # produced locally by the client, never sent
    "timeout": "no final reply before the request's deadline",
    "server_lost": "no sign of life from the server for liveness x interval",
}

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ProtocolError(ValueError):
    """A message broke the protocol.

    Attributes:
        code: one of ``ERROR_CODES``.
        message: a human sentence naming the value and the limit.
        field: where: ``"frames"``, ``"header"``, ``"header.v"``, ``"body.frames.shape[0]"``,
            ``"buffers[3]"`` ..., or None.
        request_id: the offending message's id when it could be read, else None.
    """

    def __init__(self, code: str, message: str, field: str | None = None,
                 request_id: str | None = None):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.code = code
        self.message = message
        self.field = field
        self.request_id = request_id


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------

_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,%d}$" % MAX_ID_CHARS)


@dataclass(frozen=True)
class Field:
    """One field of a message body.

    kind: "int", "float" (ints accepted), "str", "bool", "id", "object" (nested ``fields``),
    "list" (items are ``item``), "num_map" (str -> finite number, free keys).
    A number must lie in [lo, hi] (``lo_open`` makes the lower bound exclusive); a string or
    list must have at most ``max_len`` items and, for strings, be one of ``choices`` if set.
    """

    kind: str
    required: bool = True
    nullable: bool = False
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    max_len: int | None = None
    min_len: int = 0
    choices: tuple[str, ...] | None = None
    fields: Mapping[str, "Field"] | None = None
    item: "Field | None" = None
    doc: str = ""


def _opt(f: Field) -> Field:
    return Field(**{**f.__dict__, "required": False})


_F_FINITE = Field("float", lo=-1e300, hi=1e300)
_BUFFER_INDEX = Field("int", lo=0, hi=MAX_BUFFERS - 1)

# "source": no pixels travel; the server reads the listed frames from a file both sides see
# (only a server whose hello_reply says reads_local_files accepts it).
FRAME_ENCODINGS = ("rgb24", "jpeg", "png", "source")
AUDIO_ENCODINGS = ("pcm_f32le", "flac")
SAMPLERS = ("dpmpp", "ddpm")
SERVER_STATES = ("loading", "ready", "stopping", "failed")
WORKER_STATES = ("loading", "idle", "busy", "failed")
CANCEL_OUTCOMES = ("queued", "running", "unknown")
# what a fetch found: the final reply follows ("done"); the job runs or waits and its replies now
# come to this connection ("running", "queued"); no such job of this client key ("unknown":
# never submitted, expired, or lost when the server stopped: submit it again)
FETCH_OUTCOMES = ("done", "running", "queued", "unknown")

# frames encoding "source" and the prepare request: a movie file the server reads itself
SOURCE_FIELD = Field("object", fields={
    "path": Field("str", min_len=1, max_len=MAX_PATH_CHARS,
                  doc="absolute path of a movie file, as the client sees it"),
    "size_bytes": Field("int", lo=0, hi=2**62,
                        doc="the file's size: the server checks it sees the same"),
    "mtime_ns": Field("int", lo=-2**62, hi=2**62, doc="the file's mtime, likewise"),
    "stream_index": Field("int", lo=0, hi=64, doc="which video stream"),
    "source_fps": Field("float", lo=0.0, lo_open=True, hi=MAX_FPS,
                        doc="the stream's frame rate the indices count in"),
    "frame_indices": Field("list", min_len=1, max_len=MAX_FRAME_COUNT,
                           item=Field("int", lo=0, hi=MAX_SOURCE_FRAME_INDEX),
                           doc="0-based frame numbers in presentation order, one "
                           "per frame sent"),
    "width": Field("int", lo=1, hi=MAX_FRAME_SIDE_PX),
    "height": Field("int", lo=1, hi=MAX_FRAME_SIDE_PX),
    "scale": Field("float", lo=0.0, lo_open=True, hi=100.0,
                   doc="frame pixels per file pixel: the file's picture must fill "
                   "width x height at this scale, to within a pixel"),
}, doc="the frames to read from a movie file both sides see, scaled to width x height")

REQUEST_SCHEMAS: dict[str, dict[str, Field]] = {
    "hello": {
        "client": Field("str", max_len=128, doc="free text naming the client and its version"),
        "versions": Field("list", min_len=1, max_len=16, item=Field("int", lo=1, hi=1000),
                          doc="protocol versions the client speaks"),
        "heartbeat_interval_s": Field("float", required=False, lo=MIN_HEARTBEAT_INTERVAL_S,
                                      hi=MAX_HEARTBEAT_INTERVAL_S),
        "minor": Field("int", required=False, lo=0, hi=1000,
                       doc="the highest minor version the client speaks of the highest major in "
                       "versions; absent: 0"),
        "client_key": Field("id", required=False,
                            doc="a stable, secret key of the client's project (e.g. a uuid4 per "
                            ".blend): its jobs outlive the connection, their final replies are "
                            "kept in the server's spool, and a later connection with the same key "
                            "may fetch them"),
    },
    "generate": {
        "frames": Field("object", fields={
            "encoding": Field("str", choices=FRAME_ENCODINGS),
            "shape": Field("list", required=False, min_len=4, max_len=4,
                           item=Field("int", lo=1, hi=max(MAX_FRAME_COUNT, MAX_FRAME_SIDE_PX))),
            "buffers": Field("list", max_len=MAX_FRAME_COUNT, item=_BUFFER_INDEX,
                             doc="one per frame (jpeg, png), one in all (rgb24), none (source)"),
            "source": _opt(SOURCE_FIELD),
            "fps": Field("float", lo=0.0, lo_open=True, hi=MAX_FPS),
            "start_time_s": Field("float", required=False, lo=-MAX_START_TIME_S,
                                  hi=MAX_START_TIME_S),
        }),
        "duration_s": Field("float", lo=0.0, lo_open=True, hi=MAX_DURATION_S),
        "caption": Field("str", max_len=MAX_CAPTION_CHARS),
        "negative_caption": Field("str", required=False, max_len=MAX_CAPTION_CHARS),
        "seed": Field("int", required=False, nullable=True, lo=0, hi=MAX_SEED),
        "steps": Field("int", required=False, nullable=True, lo=1, hi=MAX_STEPS),
        "guidance": Field("float", required=False, nullable=True, lo=1.0, hi=MAX_GUIDANCE),
        "sampler": Field("str", required=False, choices=SAMPLERS),
        "variations": Field("int", required=False, lo=1, hi=MAX_VARIATIONS),
        "onset_hints_s": Field("list", required=False, max_len=MAX_ONSET_HINTS,
                               item=Field("float", lo=0.0, hi=MAX_DURATION_S)),
        "inpaint": Field("object", required=False, nullable=True, fields={
            "buffer": _BUFFER_INDEX,
            "sample_rate": Field("int", lo=MIN_AUDIO_SAMPLE_RATE, hi=MAX_AUDIO_SAMPLE_RATE),
            "samples": Field("int", lo=1, hi=MAX_AUDIO_BUFFER_BYTES // 4),
            "start_s": Field("float", lo=0.0, hi=MAX_DURATION_S),
            "end_s": Field("float", lo=0.0, hi=MAX_DURATION_S),
        }),
        "audio_format": Field("str", required=False, choices=AUDIO_ENCODINGS),
        "sync_picture": Field("object", required=False, nullable=True, fields={
            "frame_rate": Field("float", lo=0.0, lo_open=True, hi=MAX_FPS,
                                doc="the caller's timeline rate: offsets > 1 frame are flagged"),
        }, doc="ask for one PNG sync picture per take in the result"),
        "focus_region": Field("object", required=False, nullable=True, fields={
            "boxes": Field("list", min_len=1, max_len=MAX_FRAME_COUNT,
                           item=Field("list", min_len=4, max_len=4,
                                      item=Field("float", lo=0.0, hi=1.0)),
                           doc="[x, y, w, h] fractions of the frame, origin top left"),
            "times_s": Field("list", required=False, max_len=MAX_FRAME_COUNT,
                             item=Field("float", lo=0.0, hi=MAX_DURATION_S),
                             doc="one ascending key time per box (s from the first frame); "
                             "absent: one box for the whole clip"),
        }, doc="the sound's source on screen: the take follows its motion only"),
    },
    "cancel": {"request_id": Field("id")},
    "fetch": {"request_id": Field("id", doc="the generate request whose final reply is wanted")},
    "redraw": {
        "request_id": Field("id", doc="the generate request whose take is redrawn"),
        "take": Field("int", lo=0, hi=MAX_VARIATIONS - 1, doc="which take of its result"),
        "marker_times_s": Field("list", max_len=MAX_ONSET_HINTS,
                                item=Field("float", lo=0.0, hi=MAX_DURATION_S),
                                doc="the take's onset markers as the editor has them now, "
                                "seconds from the first frame"),
        "frame_rate": Field("float", lo=0.0, lo_open=True, hi=MAX_FPS,
                            doc="the caller's timeline rate: offsets > 1 frame are flagged"),
    },
    "ping": {},
    "status": {},
    "prepare": {"source": SOURCE_FIELD},
}

# What the server says of its model, in hello_reply and status_reply (nil while loading).
_MODEL_INFO: dict[str, Field] = {
    "model_id": Field("str", nullable=True, max_len=MAX_TEXT_CHARS),
    "model_fps": Field("float", nullable=True, lo=0.0, lo_open=True, hi=MAX_FPS),
    "sample_rate": Field("int", nullable=True, lo=1, hi=MAX_AUDIO_SAMPLE_RATE),
    "model_image_size": Field("int", required=False, nullable=True, lo=1, hi=MAX_FRAME_SIDE_PX,
                              doc="side of the square images the model's video encoder reads: "
                              "frames need not be larger (absent from older servers)"),
    "model_scope": Field("str", required=False, nullable=True, max_len=MAX_TEXT_CHARS,
                         doc="what the model knows, as its folder states it (e.g. \"synthetic "
                         "impacts only\"); nil: not stated, or while loading"),
}

# The sync review of a result's takes: inside the result (to a client before 1.4) or in the
# review message that follows it (1.4). One table, so both carry the same fields.
REVIEW_FIELDS: dict[str, Field] = {
    "motion": Field("object", required=False, fields={
        "fps": Field("float", lo=0.0, lo_open=True, hi=MAX_FPS),
        "energy": Field("list", max_len=MAX_FRAME_COUNT, item=Field("float", lo=0.0,
                                                                    hi=1e6)),
        "times_s": Field("list", max_len=MAX_FRAME_COUNT,
                         item=Field("float", lo=0.0, hi=MAX_DURATION_S)),
        "strengths": Field("list", max_len=MAX_FRAME_COUNT, item=Field("float", lo=0.0,
                                                                       hi=1.0)),
    }, doc="visual motion events of the frames received (AV-Align's optical-flow peaks)"),
    "contacts": Field("object", required=False, fields={
        "times_s": Field("list", max_len=MAX_FRAME_COUNT,
                         item=Field("float", lo=0.0, hi=MAX_DURATION_S)),
        "strengths": Field("list", max_len=MAX_FRAME_COUNT, item=Field("float", lo=0.0,
                                                                       hi=1.0)),
    }, doc="visual contact events of the frames received (1.4): where motion stops or "
           "reverses abruptly, what the sync review pairs onsets with"),
    "audio_onsets": Field("list", required=False, max_len=MAX_VARIATIONS, item=Field(
        "object", fields={
            "times_s": Field("list", max_len=MAX_LIST_FLOATS,
                             item=Field("float", lo=0.0, hi=MAX_DURATION_S)),
            "strengths": Field("list", max_len=MAX_LIST_FLOATS,
                               item=Field("float", lo=0.0, hi=1.0)),
        }), doc="librosa onsets of each generated take (AA-Align's), one entry per take"),
    "sync_pictures": Field("object", required=False, fields={
        "encoding": Field("str", choices=("png",)),
        "width_px": Field("int", lo=1, hi=MAX_PICTURE_SIDE_PX),
        "height_px": Field("int", lo=1, hi=MAX_PICTURE_SIDE_PX),
        "buffers": Field("list", min_len=1, max_len=MAX_VARIATIONS, item=_BUFFER_INDEX),
    }, doc="one PNG per take, when the request asked for sync_picture"),
}

REPLY_SCHEMAS: dict[str, dict[str, Field]] = {
    "hello_reply": {
        "version": Field("int", lo=1, hi=1000),
        "minor": Field("int", required=False, lo=0, hi=1000,
                       doc="the minor version chosen; sent only to a hello that had minor"),
        "server": Field("str", max_len=MAX_TEXT_CHARS),
        "state": Field("str", choices=SERVER_STATES),
        **_MODEL_INFO,
        "heartbeat_interval_s": Field("float", lo=MIN_HEARTBEAT_INTERVAL_S,
                                      hi=MAX_HEARTBEAT_INTERVAL_S),
        "heartbeat_liveness": Field("int", lo=1, hi=100),
        "limits": Field("num_map"),
        "reads_local_files": Field("bool", required=False,
                                   doc="frames may come as encoding source (a file on this "
                                   "machine); absent from older servers: false"),
    },
    "progress": {
        "stage": Field("str", max_len=32),
        "queue_position": Field("int", lo=0, hi=1_000_000),
        "step": Field("int", lo=0, hi=1_000_000),
        "total_steps": Field("int", lo=0, hi=1_000_000),
        "eta_s": Field("float", nullable=True, lo=0.0, hi=1e9),
        "elapsed_s": Field("float", lo=0.0, hi=1e9),
    },
    "result": {
        "audio": Field("object", fields={
            "encoding": Field("str", choices=AUDIO_ENCODINGS),
            "sample_rate": Field("int", lo=1, hi=MAX_AUDIO_SAMPLE_RATE),
            "channels": Field("int", lo=1, hi=MAX_AUDIO_CHANNELS),
            "samples": Field("int", lo=0, hi=MAX_AUDIO_BUFFER_BYTES // 4),
            "buffers": Field("list", min_len=1, max_len=MAX_VARIATIONS, item=_BUFFER_INDEX),
        }),
        "duration_s": Field("float", lo=0.0, hi=MAX_DURATION_S),
        "start_time_s": Field("float", lo=-MAX_START_TIME_S, hi=MAX_START_TIME_S),
        "onset_times_s": Field("list", max_len=MAX_LIST_FLOATS, item=Field("float", lo=0.0,
                                                                           hi=MAX_DURATION_S)),
        "onset_probabilities": Field("list", max_len=MAX_LIST_FLOATS,
                                     item=Field("float", lo=0.0, hi=1.0)),
        "onset_curve": Field("object", fields={
            "rate_hz": Field("float", lo=0.0, lo_open=True, hi=1e6),
            "values": Field("list", max_len=MAX_LIST_FLOATS, item=Field("float", lo=0.0, hi=1.0)),
        }),
        "seed": Field("int", lo=0, hi=MAX_SEED),
        "steps": Field("int", lo=0, hi=MAX_STEPS),
        "sampler": Field("str", max_len=32),
        "guidance": Field("float", required=False, lo=0.0, hi=MAX_GUIDANCE,
                          doc="CFG scale used (the model's default when the request had none)"),
        "model_id": Field("str", max_len=MAX_TEXT_CHARS),
        "timings_s": Field("num_map"),
        "warnings": Field("list", max_len=16, item=Field("str", max_len=MAX_TEXT_CHARS)),
        # Sync review (optional: servers before it did not send them; from 1.4 they come in
        # the review message instead, to a client that agreed on 1.4).
        **REVIEW_FIELDS,
        "review_follows": Field("bool", required=False,
                                doc="the review data of this result comes in a review message "
                                "after it (1.4)"),
        "audio_levels": Field("list", required=False, max_len=MAX_VARIATIONS, item=Field(
            "object", fields={
                "rms_dbfs": Field("float", lo=MIN_LEVEL_DBFS, hi=MAX_LEVEL_DBFS),
                "peak_dbfs": Field("float", lo=MIN_LEVEL_DBFS, hi=MAX_LEVEL_DBFS),
                "loudest_dbfs": Field("float", lo=MIN_LEVEL_DBFS, hi=MAX_LEVEL_DBFS),
                "near_silent": Field("bool"),
            }), doc="each take's level; near_silent: the model made only its noise floor"),
    },
    "error": {
        "code": Field("str", choices=tuple(ERROR_CODES)),
        "message": Field("str", max_len=MAX_TEXT_CHARS),
        "field": Field("str", nullable=True, max_len=256),
    },
    "cancel_reply": {
        "request_id": Field("id"),
        "was": Field("str", choices=CANCEL_OUTCOMES),
    },
    "fetch_reply": {
        "request_id": Field("id"),
        "was": Field("str", choices=FETCH_OUTCOMES),
    },
    "review": {
        "takes": Field("int", lo=1, hi=MAX_VARIATIONS, doc="takes of the result reviewed"),
        **REVIEW_FIELDS,
        "missing": Field("str", required=False, max_len=MAX_TEXT_CHARS,
                         doc="why there is no review data (or only part of it); the take "
                         "itself is in the result"),
        "timings_s": Field("num_map", required=False, doc="seconds the review took"),
    },
    "redraw_reply": {
        "request_id": Field("id"),
        "take": Field("int", lo=0, hi=MAX_VARIATIONS - 1),
        "picture": Field("object", fields={
            "encoding": Field("str", choices=("png",)),
            "width_px": Field("int", lo=1, hi=MAX_PICTURE_SIDE_PX),
            "height_px": Field("int", lo=1, hi=MAX_PICTURE_SIDE_PX),
            "buffer": _BUFFER_INDEX,
        }, doc="the sync picture drawn with the markers sent"),
    },
    "prepare_reply": {
        "frames": Field("int", lo=1, hi=MAX_FRAME_COUNT, doc="frames now ready on the server"),
        "cached": Field("bool", doc="they were ready already"),
        "read_s": Field("float", lo=0.0, hi=1e9, doc="time spent reading them"),
    },
    "pong": {
        "state": Field("str", choices=SERVER_STATES),
        "queue_length": Field("int", lo=0, hi=1_000_000),
    },
    "status_reply": {
        "state": Field("str", choices=SERVER_STATES),
        "server": Field("str", max_len=MAX_TEXT_CHARS),
        **_MODEL_INFO,
        "uptime_s": Field("float", lo=0.0, hi=1e12),
        "queue_length": Field("int", lo=0, hi=1_000_000),
        "queue_max": Field("int", lo=0, hi=1_000_000),
        "clients": Field("int", lo=0, hi=1_000_000),
        "workers": Field("list", max_len=64, item=Field("object", fields={
            "device": Field("str", max_len=64),
            "state": Field("str", choices=WORKER_STATES),
            "job_id": Field("id", nullable=True),
            "memory_used_bytes": Field("int", nullable=True, lo=0, hi=MAX_MEMORY_BYTES),
            "memory_total_bytes": Field("int", nullable=True, lo=0, hi=MAX_MEMORY_BYTES),
            "job_peak_memory_bytes": Field("int", required=False, nullable=True, lo=0,
                                           hi=MAX_MEMORY_BYTES,
                                           doc="the running job's peak memory so far"),
            "last_job_id": Field("id", required=False, nullable=True,
                                 doc="the last job this worker finished (or failed)"),
            "last_job_peak_memory_bytes": Field("int", required=False, nullable=True, lo=0,
                                                hi=MAX_MEMORY_BYTES,
                                                doc="that job's peak memory"),
            "node": Field("str", required=False, nullable=True, max_len=256,
                          doc="a cluster worker's machine (address and node id); nil: the "
                          "server's own machine"),
            "pid": Field("int", required=False, nullable=True, lo=0, hi=2**31,
                         doc="a cluster worker's process id on its machine; nil: the server's"),
        })),
    },
}

REQUEST_TYPES = tuple(REQUEST_SCHEMAS)
REPLY_TYPES = tuple(REPLY_SCHEMAS)
# Requests answered by one final reply of this type (besides "error").
FINAL_REPLY = {"hello": "hello_reply", "generate": "result", "cancel": "cancel_reply",
               "ping": "pong", "status": "status_reply", "prepare": "prepare_reply",
               "fetch": "fetch_reply", "redraw": "redraw_reply"}

_HEADER_KEYS = ("v", "type", "id", "parent", "body")

# What each minor version of major 1 added to 1.0 (the first schema, 2026-11-22 commit 4c322f5);
# docs/protocol.md's changelog says the same in prose. An entry is a message type ("prepare"),
# a field ("result.motion"; nested: "generate.frames.source") or one value of a string field
# ("generate.frames.encoding=source").
MINOR_ADDITIONS: dict[int, tuple[str, ...]] = {
    1: (
        # the sync review
        "generate.sync_picture", "result.motion", "result.audio_onsets", "result.sync_pictures",
        # the guidance a result used, the model's image size
        "result.guidance", "hello_reply.model_image_size", "status_reply.model_image_size",
        # frames read by the server from a movie file, and reading them ahead
        "generate.frames.encoding=source", "generate.frames.source",
        "hello_reply.reads_local_files", "error.code=source_unavailable",
        "prepare", "prepare_reply",
        # the minor version itself
        "hello.minor", "hello_reply.minor",
    ),
    2: (
        # what the model knows, said where the editor looks
        "hello_reply.model_scope", "status_reply.model_scope",
        # each take's level, and whether it is near-silent
        "result.audio_levels",
        # peak memory per job
        "status_reply.workers.job_peak_memory_bytes", "status_reply.workers.last_job_id",
        "status_reply.workers.last_job_peak_memory_bytes",
    ),
    3: (
        # finished takes outlive the client: a client key, the result spool and fetch
        "hello.client_key", "fetch", "fetch_reply",
    ),
    4: (
        # the take first, its review data after it; sync pictures redrawn on request
        "result.review_follows", "review", "redraw", "redraw_reply",
        # the sync review pairs onsets with the picture's contact events
        "result.contacts",
    ),
    5: (
        # a cluster of workers: a job whose worker was lost runs again, or ends saying so;
        # status names each worker's machine and process
        "progress.stage=requeued", "error.code=worker_lost",
        "status_reply.workers.node", "status_reply.workers.pid",
    ),
    6: (
        # a focus region: the take follows the marked source's motion only
        "generate.focus_region",
    ),
}
# Optional fields that change what a request means: ``for_minor`` refuses them to an older
# peer instead of leaving them out (without its region a take would silently follow the
# whole frame).
NEVER_LEFT_OUT: frozenset[str] = frozenset({"generate.focus_region"})

# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def new_id() -> str:
    """A fresh message id: 32 lowercase hex digits (uuid4)."""
    return uuid.uuid4().hex


@dataclass
class Message:
    """One protocol message.

    Attributes:
        type: a key of ``REQUEST_SCHEMAS`` or ``REPLY_SCHEMAS``.
        body: the validated body (plain dict of msgpack types).
        id: this message's id (requests: chosen by the client; replies: by the server).
        parent: for replies, the id of the request answered; None for requests.
        buffers: raw payloads (bytes or memoryview) referenced by index from ``body``.
        version: the protocol version written in the header.
    """

    type: str
    body: dict[str, Any]
    id: str = dataclass_field(default_factory=new_id)
    parent: str | None = None
    buffers: list[Any] = dataclass_field(default_factory=list)
    version: int = PROTOCOL_VERSION


def error_message(code: str, message: str, *, field: str | None = None,
                  parent: str | None = None) -> Message:
    """The ``error`` reply for ``code`` (a key of ``ERROR_CODES``)."""
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    return Message("error", {"code": code, "message": message[:MAX_TEXT_CHARS], "field": field},
                   parent=parent)


def error_from_exception(exc: ProtocolError) -> Message:
    """The ``error`` reply that answers a message which failed ``decode``."""
    return error_message(exc.code, exc.message, field=exc.field, parent=exc.request_id)


# --------------------------------------------------------------------------------------------
# Signing
# --------------------------------------------------------------------------------------------

REPLAY_HISTORY = 1 << 16
SIGNATURE_PREFIX = b"s2:"  # the 1.3 scheme: frame lengths signed too
_SIGNATURE_DOMAIN = b"foley-protocol-signature-2\0"


class LegacySignature(ProtocolError):
    """A message signed with the pre-1.3 scheme (frames concatenated without their lengths)."""


class Signer:
    """HMAC-SHA256 over the header and buffer frames; an empty key disables signing.

    The signature (1.3) is ``b"s2:"`` + the hex HMAC of a domain tag, the frame count and each
    frame preceded by its length (8 bytes, big-endian), so frames re-split at other boundaries
    do not verify. The pre-1.3 scheme (bare hex over the frames concatenated) is refused with a
    ``LegacySignature`` that says so. ``verify`` also rejects a signature seen before (bounded
    history of ``REPLAY_HISTORY``).
    """

    def __init__(self, key: bytes = b""):
        self.key = bytes(key)
        self._seen: set[bytes] = set()
        self._order: deque[bytes] = deque()

    def sign(self, parts: Sequence[Any]) -> bytes:
        if not self.key:
            return b""
        mac = hmac.new(self.key, _SIGNATURE_DOMAIN, digestmod=hashlib.sha256)
        mac.update(len(parts).to_bytes(8, "big"))
        for part in parts:
            mac.update(memoryview(part).nbytes.to_bytes(8, "big"))
            mac.update(part)
        return SIGNATURE_PREFIX + mac.hexdigest().encode("ascii")

    def sign_legacy(self, parts: Iterable[Any]) -> bytes:
        """The pre-1.3 signature: only to answer a pre-1.3 peer's message with an error it can
        verify (it says to update), never to accept one."""
        if not self.key:
            return b""
        mac = hmac.new(self.key, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(part)
        return mac.hexdigest().encode("ascii")

    def verify(self, signature: Any, parts: Sequence[Any]) -> None:
        signature = bytes(signature)
        if not self.key:
            if signature:
                raise ProtocolError("auth_failed", "message is signed but this peer has no "
                                    "signing key configured", "frames[0]")
            return
        if not signature:
            raise ProtocolError("auth_failed", "message is not signed (frame 0 is empty) but "
                                "a signing key is configured", "frames[0]")
        if not signature.startswith(SIGNATURE_PREFIX):
            if hmac.compare_digest(signature, self.sign_legacy(parts)):
                raise LegacySignature(
                    "auth_failed", "signed with the pre-1.3 scheme (frames without their "
                    "lengths), which this peer no longer accepts: update the other side to "
                    "protocol 1.3", "frames[0]")
            raise ProtocolError("auth_failed", "signature does not match", "frames[0]")
        if not hmac.compare_digest(signature, self.sign(parts)):
            raise ProtocolError("auth_failed", "signature does not match", "frames[0]")
        if signature in self._seen:
            raise ProtocolError("auth_failed", "replayed message (signature seen before)",
                                "frames[0]")
        self._seen.add(signature)
        self._order.append(signature)
        if len(self._order) > REPLAY_HISTORY:
            self._seen.discard(self._order.popleft())


# --------------------------------------------------------------------------------------------
# Minor versions
# --------------------------------------------------------------------------------------------


def negotiate(hello: Message) -> dict[str, int]:
    """The version fields of the hello_reply that answers ``hello``: ``version``, the highest
    major both speak, and ``minor``, of it the lower of the two minors; ``minor`` only when the
    hello had one (a hello without it speaks x.0, and an x.0 client refuses the field).

    Raises:
        ProtocolError: ``unsupported_version`` (field ``body.versions``): no common major.
    """
    versions = hello.body["versions"]
    common = set(versions) & set(SUPPORTED_VERSIONS)
    if not common:
        raise ProtocolError("unsupported_version", f"no common protocol version: client speaks "
                            f"{versions}, server speaks {list(SUPPORTED_VERSIONS)}",
                            "body.versions", hello.id)
    major = max(common)
    if "minor" not in hello.body:
        return {"version": major}
    # The client's minor is of its highest major; of a lower one it may speak only x.0.
    client_minor = hello.body["minor"] if major == max(versions) else 0
    return {"version": major, "minor": min(client_minor, PROTOCOL_MINOR)}


def for_minor(message: Message, minor: int) -> Message:
    """``message`` as a peer speaking ``minor`` (of this major) may receive it: the optional
    fields added after ``minor`` left out (the message itself when nothing is). The caller's
    body is not changed.

    Raises:
        ProtocolError: ``unsupported_version``: the message cannot be said in ``minor`` (its
            type, a value it uses, or a required field was added later); ``field`` names it.
    """
    later = [entry for version, entries in MINOR_ADDITIONS.items() if version > minor
             for entry in entries]

    def refuse(what: str, field: str, version: str) -> ProtocolError:
        return ProtocolError("unsupported_version", f"{what} was added in protocol "
                             f"{PROTOCOL_VERSION}.{version}; the peer speaks "
                             f"{PROTOCOL_VERSION}.{minor}", field, message.id)

    if message.type in later:
        raise refuse(f"the {message.type} message", "header.type", _added_in(message.type))
    schemas = REQUEST_SCHEMAS if message.type in REQUEST_SCHEMAS else REPLY_SCHEMAS
    body = message.body
    for entry in later:
        mtype, _, path = entry.partition(".")
        if mtype != message.type or not path:
            continue
        path, _, value = path.partition("=")
        *parents, name = path.split(".")

        def refuse_entry(path=path, value=value, entry=entry) -> ProtocolError:
            what = f"{path} {value!r}" if value else f"the field {path}"
            return refuse(what, f"body.{path}", _added_in(entry))

        body = _without(body, schemas[mtype], parents, name, value, refuse_entry,
                        entry in NEVER_LEFT_OUT)
    return message if body is message.body else Message(
        message.type, body, message.id, message.parent, message.buffers, message.version)


def _added_in(entry: str) -> str:
    return str(next(v for v, entries in MINOR_ADDITIONS.items() if entry in entries))


def _without(holder: Any, fields: Mapping[str, Field], parents: list[str], name: str,
             value: str, refuse, never_left_out: bool = False) -> Any:
    """``holder`` without the optional field ``parents...name`` (in every item of a list on
    the way); only the maps and lists on the way are copied, and only where something goes.
    With ``value``: unchanged, but ``refuse()`` is raised where the field has that value; a
    required field, or one ``never_left_out`` that is set (not nil), is refused likewise."""
    if isinstance(holder, list):
        items = [_without(item, fields, parents, name, value, refuse, never_left_out)
                 for item in holder]
        return holder if all(a is b for a, b in zip(items, holder)) else items
    if not isinstance(holder, dict):
        return holder
    if parents:
        key = parents[0]
        if key not in holder:
            return holder
        spec = fields[key]
        inner = spec.fields if spec.fields is not None else spec.item.fields  # type: ignore
        child = _without(holder[key], inner or {}, parents[1:], name, value, refuse,
                         never_left_out)
        return holder if child is holder[key] else {**holder, key: child}
    if name not in holder:
        return holder
    if value:
        if holder[name] == value:
            raise refuse()
        return holder
    if fields[name].required or (never_left_out and holder[name] is not None):
        raise refuse()
    return {key: item for key, item in holder.items() if key != name}


# --------------------------------------------------------------------------------------------
# Codec
# --------------------------------------------------------------------------------------------


def _packer_check() -> None:
    """Round-trip a header once at import: a broken msgpack fails loudly, here."""
    sample = {"v": PROTOCOL_VERSION, "type": "ping", "id": "x", "parent": None, "body": {}}
    packed = msgpack.packb(sample, use_bin_type=True)
    if not isinstance(packed, bytes) or _unpack(packed) != sample:
        raise RuntimeError("msgpack.packb/unpackb do not round-trip a protocol header")


def _unpack(data: Any) -> Any:
    return msgpack.unpackb(
        data, raw=False, strict_map_key=True, use_list=True,
        max_str_len=MAX_HEADER_BYTES, max_bin_len=MAX_HEADER_BYTES,
        max_array_len=MAX_BUFFERS, max_map_len=MAX_MAP_ENTRIES, max_ext_len=0,
    )


def encode(message: Message, signer: Signer | None = None, legacy: bool = False) -> list[Any]:
    """Frames for ``message``: ``[signature, header, *buffers]``.

    The body is validated first (the same checks as ``decode``), so a client finds its own
    mistakes before anything is sent. ``legacy``: sign with the pre-1.3 scheme (only the error
    that answers a pre-1.3 signed message).

    Raises:
        ProtocolError: the message does not satisfy the schema.
    """
    header = {"v": message.version, "type": message.type, "id": message.id,
              "parent": message.parent, "body": message.body}
    direction = "request" if message.type in REQUEST_SCHEMAS else "reply"
    _validate_header(header, direction)
    sizes = [_nbytes(b) for b in message.buffers]
    _validate_buffers(message.type, message.body, sizes, message.id)
    packed = msgpack.packb(header, use_bin_type=True)
    if len(packed) > MAX_HEADER_BYTES:
        raise ProtocolError("too_large", f"header is {len(packed)} bytes, the limit is "
                            f"{MAX_HEADER_BYTES}", "header", message.id)
    parts = [packed, *message.buffers]
    signer = signer or Signer()
    signature = signer.sign_legacy(parts) if legacy else signer.sign(parts)
    return [signature, *parts]


def decode(frames: Sequence[Any], signer: Signer | None = None,
           direction: str = "request") -> Message:
    """Inverse of ``encode``: authenticate, unpack and validate ``frames``.

    Args:
        frames: ``[signature, header, *buffers]`` as bytes, memoryview or zmq.Frame (the ROUTER
            routing id already removed).
        signer: the same key as the sender's; None means unsigned.
        direction: "request" (a server decoding) or "reply" (a client decoding).

    Returns:
        The message; buffers are memoryviews over the received frames (no copy).

    Raises:
        ProtocolError: naming the code, the field and (if readable) the request id.
    """
    if len(frames) < 2:
        raise ProtocolError("bad_message", f"a message has at least 2 frames (signature, "
                            f"header); got {len(frames)}", "frames")
    if len(frames) > 2 + MAX_BUFFERS:
        raise ProtocolError("too_large", f"{len(frames)} frames; at most {2 + MAX_BUFFERS}",
                            "frames")
    views = [_view(f) for f in frames]
    header_view = views[1]
    if header_view.nbytes > MAX_HEADER_BYTES:
        raise ProtocolError("too_large", f"header frame is {header_view.nbytes} bytes; the "
                            f"limit is {MAX_HEADER_BYTES}", "header")
    (signer or Signer()).verify(views[0], views[1:])
    try:
        header = _unpack(header_view)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError, UnicodeDecodeError) as exc:
        raise ProtocolError("bad_message", f"header is not a valid msgpack map within the "
                            f"limits: {type(exc).__name__}: {exc}", "header") from None
    except Exception as exc:  # msgpack raises a few odd types on hostile input
        raise ProtocolError("bad_message", f"header does not unpack: {type(exc).__name__}",
                            "header") from None
    _validate_header(header, direction)
    buffers = views[2:]
    _validate_buffers(header["type"], header["body"], [b.nbytes for b in buffers], header["id"])
    return Message(header["type"], header["body"], header["id"], header["parent"], buffers,
                   header["v"])


def _view(frame: Any) -> memoryview:
    if hasattr(frame, "buffer") and not isinstance(frame, (bytes, bytearray, memoryview)):
        frame = frame.buffer  # zmq.Frame
    view = memoryview(frame)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def _nbytes(buffer: Any) -> int:
    return memoryview(buffer).nbytes


def _validate_header(header: Any, direction: str) -> None:
    if not isinstance(header, dict):
        raise ProtocolError("bad_message", f"header must be a msgpack map, got "
                            f"{_typename(header)}", "header")
    raw_id = header.get("id")
    request_id = raw_id if isinstance(raw_id, str) and _ID_RE.match(raw_id) else None
    for key in _HEADER_KEYS:
        if key not in header:
            raise ProtocolError("missing_field", f"header has no {key!r}", f"header.{key}",
                                request_id)
    for key in header:
        if key not in _HEADER_KEYS:
            raise ProtocolError("unknown_field", f"header field {str(key)[:40]!r} is not "
                                f"defined; header fields are {list(_HEADER_KEYS)}",
                                f"header.{str(key)[:40]}", request_id)
    version = header["v"]
    if not _is_int(version):
        raise ProtocolError("wrong_type", f"version must be an integer, got "
                            f"{_typename(version)}", "header.v", request_id)
    if version not in SUPPORTED_VERSIONS:
        raise ProtocolError("unsupported_version", f"protocol version {version} is not "
                            f"supported; supported: {list(SUPPORTED_VERSIONS)}", "header.v",
                            request_id)
    if request_id is None:
        raise ProtocolError("bad_message", f"id must be 1..{MAX_ID_CHARS} characters of "
                            f"[A-Za-z0-9_.:-], got {_describe(raw_id)}", "header.id")
    schemas = REQUEST_SCHEMAS if direction == "request" else REPLY_SCHEMAS
    mtype = header["type"]
    if not isinstance(mtype, str):
        raise ProtocolError("wrong_type", f"type must be a string, got {_typename(mtype)}",
                            "header.type", request_id)
    if mtype not in schemas:
        raise ProtocolError("unknown_type", f"unknown message type {mtype[:40]!r}; "
                            f"{direction}s are {list(schemas)}", "header.type", request_id)
    parent = header["parent"]
    if direction == "request":
        if parent is not None:
            raise ProtocolError("wrong_type", "a request's parent must be nil",
                                "header.parent", request_id)
    elif parent is not None and not (isinstance(parent, str) and _ID_RE.match(parent)):
        raise ProtocolError("wrong_type", "parent must be nil or an id", "header.parent",
                            request_id)
    _validate_object(header["body"], schemas[mtype], "body", request_id)


def _validate_object(value: Any, fields: Mapping[str, Field], path: str,
                     request_id: str | None) -> None:
    if not isinstance(value, dict):
        raise ProtocolError("wrong_type", f"{path} must be a map, got {_typename(value)}",
                            path, request_id)
    for key in value:
        if key not in fields:
            raise ProtocolError("unknown_field", f"{path} has no field {str(key)[:40]!r}; "
                                f"known: {sorted(fields)}", f"{path}.{str(key)[:40]}",
                                request_id)
    for name, spec in fields.items():
        if name not in value:
            if spec.required:
                raise ProtocolError("missing_field", f"{path}.{name} is required",
                                    f"{path}.{name}", request_id)
            continue
        _validate_value(value[name], spec, f"{path}.{name}", request_id)


def _validate_value(value: Any, spec: Field, path: str, request_id: str | None) -> None:
    if value is None:
        if spec.nullable:
            return
        raise ProtocolError("wrong_type", f"{path} must not be nil", path, request_id)
    kind = spec.kind
    if kind == "int":
        if not _is_int(value):
            raise ProtocolError("wrong_type", f"{path} must be an integer, got "
                                f"{_typename(value)}", path, request_id)
        _check_range(value, spec, path, request_id)
    elif kind == "float":
        if not (_is_int(value) or isinstance(value, float)):
            raise ProtocolError("wrong_type", f"{path} must be a number, got "
                                f"{_typename(value)}", path, request_id)
        if not math.isfinite(value):
            raise ProtocolError("out_of_range", f"{path} must be finite, got {value}", path,
                                request_id)
        _check_range(value, spec, path, request_id)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise ProtocolError("wrong_type", f"{path} must be a boolean, got "
                                f"{_typename(value)}", path, request_id)
    elif kind in ("str", "id"):
        if not isinstance(value, str):
            raise ProtocolError("wrong_type", f"{path} must be a string, got "
                                f"{_typename(value)}", path, request_id)
        if kind == "id" and not _ID_RE.match(value):
            raise ProtocolError("out_of_range", f"{path} must be 1..{MAX_ID_CHARS} characters "
                                f"of [A-Za-z0-9_.:-], got {_describe(value)}", path, request_id)
        if spec.max_len is not None and len(value) > spec.max_len:
            raise ProtocolError("too_large", f"{path} has {len(value)} characters; the limit "
                                f"is {spec.max_len}", path, request_id)
        if len(value) < spec.min_len:
            raise ProtocolError("out_of_range", f"{path} has {len(value)} characters; at least "
                                f"{spec.min_len} are required", path, request_id)
        if spec.choices is not None and value not in spec.choices:
            raise ProtocolError("out_of_range", f"{path} must be one of {list(spec.choices)}, "
                                f"got {_describe(value)}", path, request_id)
    elif kind == "list":
        if not isinstance(value, list):
            raise ProtocolError("wrong_type", f"{path} must be a list, got {_typename(value)}",
                                path, request_id)
        if spec.max_len is not None and len(value) > spec.max_len:
            raise ProtocolError("too_large", f"{path} has {len(value)} items; the limit is "
                                f"{spec.max_len}", path, request_id)
        if len(value) < spec.min_len:
            raise ProtocolError("out_of_range", f"{path} has {len(value)} items; at least "
                                f"{spec.min_len} are required", path, request_id)
        assert spec.item is not None
        for i, item in enumerate(value):
            _validate_value(item, spec.item, f"{path}[{i}]", request_id)
    elif kind == "object":
        assert spec.fields is not None
        _validate_object(value, spec.fields, path, request_id)
    elif kind == "num_map":
        if not isinstance(value, dict):
            raise ProtocolError("wrong_type", f"{path} must be a map, got {_typename(value)}",
                                path, request_id)
        if len(value) > MAX_MAP_ENTRIES:
            raise ProtocolError("too_large", f"{path} has {len(value)} entries; the limit is "
                                f"{MAX_MAP_ENTRIES}", path, request_id)
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > 64:
                raise ProtocolError("wrong_type", f"{path} keys must be strings of at most 64 "
                                    "characters", path, request_id)
            _validate_value(item, _F_FINITE, f"{path}.{key}", request_id)
    else:  # pragma: no cover - schema bug
        raise AssertionError(f"unknown field kind {kind}")


def _check_range(value: float, spec: Field, path: str, request_id: str | None) -> None:
    lo, hi = spec.lo, spec.hi
    if lo is not None and (value < lo or (spec.lo_open and value == lo)):
        bound = f"> {lo}" if spec.lo_open else f">= {lo}"
        raise ProtocolError("out_of_range", f"{path} must be {bound}, got {value}", path,
                            request_id)
    if hi is not None and value > hi:
        raise ProtocolError("out_of_range", f"{path} must be <= {hi}, got {value}", path,
                            request_id)


def _validate_buffers(mtype: str, body: dict[str, Any], sizes: Sequence[int],
                      request_id: str) -> None:
    """Check that every raw buffer is referenced exactly once and has the declared size."""
    refs: dict[int, str] = {}

    def claim(index: int, path: str) -> int:
        if index >= len(sizes):
            raise ProtocolError("bad_buffer", f"{path} refers to buffer {index} but the message "
                                f"has {len(sizes)} buffer(s)", path, request_id)
        if index in refs:
            raise ProtocolError("bad_buffer", f"{path} refers to buffer {index}, already used "
                                f"by {refs[index]}", path, request_id)
        refs[index] = path
        return sizes[index]

    if mtype == "generate":
        _check_generate_buffers(body, claim, request_id)
    elif mtype == "prepare":
        _check_source_size(body["source"], "body.source", request_id)
    elif mtype == "result":
        audio = body["audio"]
        for i, index in enumerate(audio["buffers"]):
            path = f"body.audio.buffers[{i}]"
            size = claim(index, path)
            if size > MAX_AUDIO_BUFFER_BYTES:
                raise ProtocolError("too_large", f"audio buffer {index} is {size} bytes; the "
                                    f"limit is {MAX_AUDIO_BUFFER_BYTES}", path, request_id)
            if audio["encoding"] == "pcm_f32le":
                expected = audio["samples"] * audio["channels"] * 4
                if size != expected:
                    raise ProtocolError("bad_buffer", f"audio buffer {index} is {size} bytes; "
                                        f"samples*channels*4 = {expected}", path, request_id)
        _check_review(body, len(audio["buffers"]), claim, request_id)
    elif mtype == "review":
        _check_review(body, body["takes"], claim, request_id)
    elif mtype == "redraw_reply":
        size = claim(body["picture"]["buffer"], "body.picture.buffer")
        if size > MAX_PICTURE_BYTES:
            raise ProtocolError("too_large", f"the sync picture is {size} bytes; the limit is "
                                f"{MAX_PICTURE_BYTES}", "body.picture.buffer", request_id)
    for index in range(len(sizes)):
        if index not in refs:
            raise ProtocolError("bad_buffer", f"buffer {index} (frame {index + 2}) is not "
                                f"referenced by any field; a {mtype} message carries "
                                f"{len(refs)} buffer(s)", f"buffers[{index}]", request_id)


def _check_review(body: dict[str, Any], takes: int, claim, request_id: str) -> None:
    """The optional sync review fields of a result or review: one entry / picture per take."""
    motion = body.get("motion")
    if motion is not None and len(motion["strengths"]) != len(motion["times_s"]):
        raise ProtocolError("out_of_range", f"body.motion has {len(motion['times_s'])} times but "
                            f"{len(motion['strengths'])} strengths", "body.motion.strengths",
                            request_id)
    contacts = body.get("contacts")
    if contacts is not None and len(contacts["strengths"]) != len(contacts["times_s"]):
        raise ProtocolError("out_of_range", f"body.contacts has {len(contacts['times_s'])} times "
                            f"but {len(contacts['strengths'])} strengths",
                            "body.contacts.strengths", request_id)
    onsets = body.get("audio_onsets")
    if onsets is not None:
        if len(onsets) != takes:
            raise ProtocolError("out_of_range", f"body.audio_onsets has {len(onsets)} entries for "
                                f"{takes} audio take(s)", "body.audio_onsets", request_id)
        for i, entry in enumerate(onsets):
            if len(entry["strengths"]) != len(entry["times_s"]):
                raise ProtocolError("out_of_range", f"body.audio_onsets[{i}] has "
                                    f"{len(entry['times_s'])} times but "
                                    f"{len(entry['strengths'])} strengths",
                                    f"body.audio_onsets[{i}].strengths", request_id)
    pictures = body.get("sync_pictures")
    if pictures is not None:
        if len(pictures["buffers"]) != takes:
            raise ProtocolError("out_of_range", f"body.sync_pictures has "
                                f"{len(pictures['buffers'])} buffers for {takes} audio take(s)",
                                "body.sync_pictures.buffers", request_id)
        for i, index in enumerate(pictures["buffers"]):
            path = f"body.sync_pictures.buffers[{i}]"
            size = claim(index, path)
            if size > MAX_PICTURE_BYTES:
                raise ProtocolError("too_large", f"sync picture {i} is {size} bytes; the limit "
                                    f"is {MAX_PICTURE_BYTES}", path, request_id)


def _check_source_size(source: dict[str, Any], path: str, request_id: str) -> None:
    pixels = len(source["frame_indices"]) * source["width"] * source["height"] * 3
    if pixels > MAX_RAW_FRAMES_BYTES:
        raise ProtocolError("too_large", f"the source frames would be {pixels} bytes; the limit "
                            f"is {MAX_RAW_FRAMES_BYTES}", path, request_id)


def _check_generate_buffers(body: dict[str, Any], claim, request_id: str) -> None:
    frames = body["frames"]
    encoding = frames["encoding"]
    indices = frames["buffers"]
    if encoding != "source" and "source" in frames:
        raise ProtocolError("unknown_field", f"body.frames.source is only for encoding source, "
                            f"not {encoding}", "body.frames.source", request_id)
    if encoding != "source" and not indices:
        raise ProtocolError("missing_field", f"{encoding} frames need at least one buffer",
                            "body.frames.buffers", request_id)
    if encoding == "source":
        if "source" not in frames:
            raise ProtocolError("missing_field", "body.frames.source is required for encoding "
                                "source", "body.frames.source", request_id)
        if indices or "shape" in frames:
            raise ProtocolError("unknown_field", "source frames carry no buffers and no shape: "
                                "the server reads them from the file",
                                "body.frames.buffers" if indices else "body.frames.shape",
                                request_id)
        _check_source_size(frames["source"], "body.frames.source", request_id)
    elif encoding == "rgb24":
        if "shape" not in frames:
            raise ProtocolError("missing_field", "body.frames.shape [T, H, W, 3] is required "
                                "for encoding rgb24", "body.frames.shape", request_id)
        count, height, width, channels = frames["shape"]
        if count > MAX_FRAME_COUNT:
            raise ProtocolError("too_large", f"{count} frames; the limit is {MAX_FRAME_COUNT}",
                                "body.frames.shape[0]", request_id)
        for i, side in ((1, height), (2, width)):
            if side > MAX_FRAME_SIDE_PX:
                raise ProtocolError("too_large", f"frame side {side} px; the limit is "
                                    f"{MAX_FRAME_SIDE_PX}", f"body.frames.shape[{i}]",
                                    request_id)
        if channels != 3:
            raise ProtocolError("out_of_range", f"frames must have 3 channels (RGB), got "
                                f"{channels}", "body.frames.shape[3]", request_id)
        expected = count * height * width * 3
        if expected > MAX_RAW_FRAMES_BYTES:
            raise ProtocolError("too_large", f"raw frames would be {expected} bytes; the limit "
                                f"is {MAX_RAW_FRAMES_BYTES}", "body.frames.shape", request_id)
        if len(indices) != 1:
            raise ProtocolError("bad_buffer", f"rgb24 frames travel in exactly 1 buffer, got "
                                f"{len(indices)} indices", "body.frames.buffers", request_id)
        size = claim(indices[0], "body.frames.buffers[0]")
        if size != expected:
            raise ProtocolError("bad_buffer", f"frames buffer is {size} bytes; shape "
                                f"{frames['shape']} needs {expected}", "body.frames.buffers[0]",
                                request_id)
    else:
        if "shape" in frames:
            raise ProtocolError("unknown_field", f"body.frames.shape is only for rgb24; "
                                f"{encoding} frames carry their own size",
                                "body.frames.shape", request_id)
        total = 0
        for i, index in enumerate(indices):
            path = f"body.frames.buffers[{i}]"
            size = claim(index, path)
            if size > MAX_ENCODED_FRAME_BYTES:
                raise ProtocolError("too_large", f"{encoding} frame {i} is {size} bytes; the "
                                    f"limit is {MAX_ENCODED_FRAME_BYTES}", path, request_id)
            if size == 0:
                raise ProtocolError("bad_buffer", f"{encoding} frame {i} is empty", path,
                                    request_id)
            total += size
        if total > MAX_ENCODED_FRAMES_BYTES:
            raise ProtocolError("too_large", f"{encoding} frames total {total} bytes; the limit "
                                f"is {MAX_ENCODED_FRAMES_BYTES}", "body.frames.buffers",
                                request_id)
    duration_s = body["duration_s"]
    for i, t in enumerate(body.get("onset_hints_s") or ()):
        if t > duration_s:
            raise ProtocolError("out_of_range", f"onset hint {t} s is after the end of the clip "
                                f"({duration_s} s)", f"body.onset_hints_s[{i}]", request_id)
    inpaint = body.get("inpaint")
    if inpaint is not None:
        if not inpaint["start_s"] < inpaint["end_s"] <= duration_s:
            raise ProtocolError("out_of_range", f"inpaint range must satisfy 0 <= start_s < "
                                f"end_s <= duration_s ({duration_s}); got [{inpaint['start_s']}, "
                                f"{inpaint['end_s']}]", "body.inpaint.end_s", request_id)
        size = claim(inpaint["buffer"], "body.inpaint.buffer")
        expected = inpaint["samples"] * 4
        if size != expected:
            raise ProtocolError("bad_buffer", f"inpaint audio buffer is {size} bytes; samples*4 "
                                f"= {expected} (mono float32)", "body.inpaint.buffer",
                                request_id)
        if inpaint["samples"] > (duration_s + 1.0) * inpaint["sample_rate"]:
            raise ProtocolError("too_large", f"inpaint audio has {inpaint['samples']} samples, "
                                f"more than duration_s + 1 s at {inpaint['sample_rate']} Hz",
                                "body.inpaint.samples", request_id)
    if body.get("focus_region") is not None:
        _check_focus_region(body["focus_region"], request_id)


def _check_focus_region(region: dict[str, Any], request_id: str) -> None:
    """Boxes inside the frame, and one ascending key time per box (or one box, no times)."""
    boxes, times = region["boxes"], region.get("times_s")
    for i, (x, y, w, h) in enumerate(boxes):
        if not (x < 1.0 and y < 1.0 and w > 0.0 and h > 0.0 and x + w <= 1.0 + 1e-6
                and y + h <= 1.0 + 1e-6):
            raise ProtocolError("out_of_range", f"focus box {[x, y, w, h]} must lie inside the "
                                "frame: x, y < 1, w, h > 0, x + w <= 1, y + h <= 1",
                                f"body.focus_region.boxes[{i}]", request_id)
    if times is None:
        if len(boxes) != 1:
            raise ProtocolError("out_of_range", f"{len(boxes)} focus boxes need times_s (one "
                                "per box)", "body.focus_region.times_s", request_id)
        return
    if len(times) != len(boxes):
        raise ProtocolError("out_of_range", f"{len(times)} times_s for {len(boxes)} focus "
                            "boxes", "body.focus_region.times_s", request_id)
    for i in range(1, len(times)):
        if not times[i] > times[i - 1]:
            raise ProtocolError("out_of_range", "focus_region.times_s must be strictly "
                                f"ascending; [{i}] = {times[i]} follows {times[i - 1]}",
                                f"body.focus_region.times_s[{i}]", request_id)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _typename(value: Any) -> str:
    return {dict: "map", list: "list", str: "string", bytes: "binary", bool: "boolean",
            int: "integer", float: "float", type(None): "nil"}.get(type(value),
                                                                   type(value).__name__)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_packer_check()
