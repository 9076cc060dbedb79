"""Client of the ``v2a-server``: one DEALER socket, driven by ``poll()``; no threads.

Contents:

* ``FoleyClient``: ``generate()`` / ``cancel()`` / ``status()`` / ``ping()`` return a request
  id at once; ``poll(timeout_s=0)`` sends heartbeats, receives replies, enforces per-request
  deadlines and server liveness, and returns ``Event``s. A Blender timer calls ``poll(0)``;
  a CLI calls ``wait()`` or ``generate_blocking()``.
* ``Event``: one thing that happened to a request (a reply, or a local timeout / server loss)
  or to the connection (``connected``, ``disconnected``).
* ``build_generate``: the ``generate`` message from Python values (validated before sending).
* Result helpers: ``result_audio_pcm`` (memoryviews, no numpy), ``result_audio_numpy`` (imports
  numpy lazily), ``wav_bytes`` (a float32 WAV file in memory, standard library only),
  ``merge_review`` (a 1.4 result and the ``review`` that follows it, as one result) and
  ``redraw_picture`` (the PNG of a ``redraw_reply``).

The review (1.4): a ``result`` that says ``review_follows`` ends the generate (``final``), and
the request stays open for its ``review`` event (same ``request_id``, final too): the review
data, or ``missing`` saying why there is none (also made here when it does not come within
``DEFAULT_TIMEOUTS_S["review"]`` or the server is lost; never an error: the take arrived).

Liveness (Paranoid-Pirate style heartbeat, Lazy-Pirate reconnect): the client pings every
``heartbeat_interval_s``; any message from the server counts as a sign of life. After
``liveness`` silent intervals every open request fails with a local ``server_lost`` error, the
socket is closed with LINGER 0 (dropping anything still queued for the dead server) and a new
one connects and says hello; the wait before giving up on the new socket doubles from
``RECONNECT_BACKOFF_MIN_S`` up to ``RECONNECT_BACKOFF_MAX_S`` while the server stays away.
Requests are never resent automatically: a lost generate is reported, and the caller decides.
Versions: hello announces ``PROTOCOL_MINOR``; the reply fixes the minor version both speak
(``protocol_minor``; a server that refuses the announcement is asked again without it and
speaks x.0). From then on nothing newer is sent: ``for_minor`` leaves out optional fields the
server's version lacks and refuses locally (``ProtocolError unsupported_version``) a message
type or value it lacks, e.g. ``prepare`` or frames encoding "source" to a 1.0 server; and
``server_info`` holds only what that version's hello_reply has.
Time during which the caller did not call ``poll`` (no pings went out) is not counted as
server silence, so a caller that blocks for a while does not see a false ``server_lost``.

Driving it from a timer (Blender: ``bpy.app.timers.register(poll_jobs)``)::

    client = FoleyClient("tcp://127.0.0.1:5555", client_name="blender", heartbeat_interval_s=5.0)
    jobs = {}                                      # request id -> what to do with the result

    def poll_jobs():
        for event in client.poll(0):               # never blocks
            if event.type == "connected":          # hello_reply: model_fps, sample_rate, limits
                fps = event.body["model_fps"]
            elif event.type == "progress":         # stage, queue_position, step/total_steps, eta_s
                ...
            elif event.type == "result":
                pcm = result_audio_pcm(event)[0]   # float32 LE, no numpy needed
                data = wav_bytes(pcm, event.body["audio"]["sample_rate"])
                jobs.pop(event.request_id)
            elif event.type == "error" and event.final:   # code, message, field
                jobs.pop(event.request_id, None)
        return 0.1 if jobs else None               # keep ticking while work is open

    jobs[client.generate(frames, frames_fps=fps, duration_s=4.0, caption="steps")] = ...
"""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass, field as dataclass_field
from typing import Any, Callable, Iterable, Mapping, Sequence

import zmq
import zmq.utils.monitor

from foley_protocol.protocol import (
    DEFAULT_ENDPOINT,
    DEFAULT_TIMEOUTS_S,
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_LIVENESS,
    MAX_FRAME_BYTES,
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    RECONNECT_BACKOFF_MAX_S,
    RECONNECT_BACKOFF_MIN_S,
    REVIEW_FIELDS,
    SUPPORTED_VERSIONS,
    LegacySignature,
    Message,
    ProtocolError,
    Signer,
    decode,
    encode,
    for_minor,
)

logger = logging.getLogger(__name__)

RECONNECT_IVL_MS = 100  # libzmq TCP reconnect interval (first try)
RECONNECT_IVL_MAX_MS = 1000  # ... and its cap, so a restarted server is found within ~1 s


@dataclass
class Event:
    """Something that happened, as returned by ``FoleyClient.poll``.

    Attributes:
        type: a reply type ("progress", "result", "review", "error", "hello_reply",
            "status_reply", "cancel_reply", "redraw_reply", "pong", ...) or a connection event
            ("connected", "disconnected").
        request_id: the request this answers; None for connection events and for server
            errors about messages whose id could not be read.
        body: the reply body (see docs/protocol.md); for "connected" the hello_reply body;
            for "disconnected" {"code": "server_lost", "message": ...}.
        buffers: raw payloads of a result (memoryviews; valid as long as the event lives).
        final: True when this event ends ``request_id`` (no more events will follow for it).
        local: True when the client made the event itself (timeout, server_lost, connection).
    """

    type: str
    request_id: str | None
    body: dict[str, Any]
    buffers: list[Any] = dataclass_field(default_factory=list)
    final: bool = False
    local: bool = False


class RequestFailed(RuntimeError):
    """A request ended in an ``error`` (raised by the blocking helpers)."""

    def __init__(self, event: Event):
        body = event.body
        super().__init__(f"{body.get('code')}: {body.get('message')}"
                         + (f" (field {body['field']})" if body.get("field") else ""))
        self.code = body.get("code")
        self.message = body.get("message")
        self.field = body.get("field")
        self.request_id = event.request_id
        self.event = event


@dataclass
class _Pending:
    type: str
    deadline: float  # time.monotonic()
    internal: bool = False  # heartbeat pings and the automatic hello


def build_generate(
    frames: Any,
    *,
    frames_fps: float,
    duration_s: float,
    caption: str,
    frame_encoding: str = "rgb24",
    frame_shape: Sequence[int] | None = None,
    start_time_s: float = 0.0,
    negative_caption: str = "",
    seed: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    sampler: str = "dpmpp",
    variations: int = 1,
    onset_hints_s: Iterable[float] | None = None,
    inpaint_audio: Any = None,
    inpaint_sample_rate: int | None = None,
    inpaint_range_s: tuple[float, float] | None = None,
    audio_format: str = "pcm_f32le",
    sync_picture_frame_rate: float | None = None,
    focus_region: Mapping[str, Any] | None = None,
) -> Message:
    """The ``generate`` request (validated by ``encode`` when sent).

    Args:
        frames: for "rgb24", one C-contiguous uint8 buffer of T*H*W*3 bytes (a numpy array
            works, its ``shape`` is used when ``frame_shape`` is None); for "jpeg"/"png", a list
            of encoded images, one per frame; for "source", the ``frames.source`` map (a file
            the server reads itself: path, size_bytes, mtime_ns, stream_index, source_fps,
            frame_indices, width, height). Not copied: leave it untouched until sent.
        frames_fps: frame rate of ``frames`` (use the server's ``model_fps`` to send least).
        duration_s: length of audio to generate; audio t=0 is the first frame.
        caption / negative_caption: what should (not) be heard.
        frame_encoding: "rgb24", "jpeg", "png" or "source" (only to a server whose hello says
            ``reads_local_files``).
        frame_shape: [T, H, W, 3] for rgb24 when ``frames`` has no ``shape``.
        start_time_s: where the first frame sits on the caller's timeline (echoed back).
        seed / steps / guidance: None lets the server choose (the seed used is returned).
        sampler: "dpmpp" (fast) or "ddpm" (reference).
        variations: takes to generate (1..4), one audio buffer each.
        onset_hints_s: times (s, from the first frame) where a sound should start.
        inpaint_audio: mono float32 samples (C-contiguous buffer) covering the clip from the
            first frame, to keep outside ``inpaint_range_s`` = (start_s, end_s).
        inpaint_sample_rate: sample rate of ``inpaint_audio``.
        audio_format: "pcm_f32le" (default; no decoder needed) or "flac".
        sync_picture_frame_rate: ask for one PNG sync picture per take, flagging onsets more
            than one frame of this timeline rate (frames/s) from the nearest motion event.
        focus_region: the sound's source on screen, ``{"boxes": [[x, y, w, h], ...],
            "times_s": [...]}`` (fractions of the frame, origin top left; ``times_s``, one per
            box from the first frame, only with several boxes). A server older than 1.6 cannot
            honour it: sending it there raises ``ProtocolError unsupported_version``.
    """
    buffers: list[Any] = []
    if frame_encoding == "rgb24":
        view = _byte_view(frames, "frames")
        shape = list(frame_shape if frame_shape is not None else getattr(frames, "shape", ()))
        body_frames: dict[str, Any] = {"encoding": "rgb24", "shape": [int(s) for s in shape],
                                       "buffers": [0]}
        buffers.append(view)
    elif frame_encoding == "source":
        body_frames = {"encoding": "source", "buffers": [], "source": dict(frames)}
    else:
        frames = list(frames)
        body_frames = {"encoding": frame_encoding, "buffers": list(range(len(frames)))}
        buffers.extend(_byte_view(f, f"frames[{i}]") for i, f in enumerate(frames))
    body_frames["fps"] = float(frames_fps)
    body_frames["start_time_s"] = float(start_time_s)
    body: dict[str, Any] = {
        "frames": body_frames,
        "duration_s": float(duration_s),
        "caption": caption,
        "negative_caption": negative_caption,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "sampler": sampler,
        "variations": int(variations),
        "audio_format": audio_format,
    }
    if onset_hints_s is not None:
        body["onset_hints_s"] = [float(t) for t in onset_hints_s]
    if sync_picture_frame_rate is not None:
        body["sync_picture"] = {"frame_rate": float(sync_picture_frame_rate)}
    if focus_region is not None:
        body["focus_region"] = {"boxes": [[float(v) for v in box] for box in focus_region["boxes"]]}
        if focus_region.get("times_s") is not None:
            body["focus_region"]["times_s"] = [float(t) for t in focus_region["times_s"]]
    if inpaint_audio is not None:
        if inpaint_range_s is None or inpaint_sample_rate is None:
            raise ValueError("inpaint_audio needs inpaint_range_s and inpaint_sample_rate")
        view = _byte_view(inpaint_audio, "inpaint_audio")
        body["inpaint"] = {"buffer": len(buffers), "sample_rate": int(inpaint_sample_rate),
                           "samples": view.nbytes // 4, "start_s": float(inpaint_range_s[0]),
                           "end_s": float(inpaint_range_s[1])}
        buffers.append(view)
    return Message("generate", body, buffers=buffers)


def _byte_view(data: Any, what: str) -> memoryview:
    view = memoryview(data)
    if not view.c_contiguous:
        raise ValueError(f"{what} must be C-contiguous")
    return view.cast("B") if (view.ndim != 1 or view.format != "B") else view


class FoleyClient:
    """Non-blocking client of one ``v2a-server``.

    Args:
        endpoint: e.g. "tcp://127.0.0.1:5555".
        server_public_key: the server's CURVE public key (z85, 40 characters, or the
            ``server.key`` file written by ``v2a keys``); None for a plain loopback server.
        signing_key: HMAC key shared with a server started with ``--signing-key-file``.
        client_name: shown in the server's log.
        heartbeat_interval_s: ping period; announced to the server, which cancels this
            client's jobs after ``HEARTBEAT_LIVENESS`` silent periods. A caller that may block
            for seconds (Blender rendering frames) should announce a longer period (<= 10 s).
        liveness: silent periods before the server counts as lost.
        context: a zmq.Context (default: the process-wide instance).
        client_key: a stable secret naming the caller's project (e.g. a uuid4 kept in the
            .blend), sent in hello: the server keeps this key's finished takes for ``fetch``,
            also from a later connection (protocol 1.3; an older server is greeted without it).
    """

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, *, server_public_key: Any = None,
                 signing_key: bytes = b"", client_name: str = "foley_protocol client",
                 heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
                 liveness: int = HEARTBEAT_LIVENESS, context: zmq.Context | None = None,
                 client_key: str | None = None):
        self.endpoint = endpoint
        self.client_name = client_name
        self.client_key = client_key
        self.heartbeat_interval_s = float(heartbeat_interval_s)
        self.liveness = int(liveness)
        self.server_info: dict[str, Any] | None = None  # the last hello_reply body
        self.protocol_minor: int | None = None  # agreed in hello on this socket; None: not yet
        self.state = "connecting"  # "connecting" | "ready" | "closed"
        self.bad_replies = 0  # replies that failed validation (logged and dropped)
        self._context = context or zmq.Context.instance()
        self._server_key = _load_public_key(server_public_key)
        self._signer = Signer(signing_key)
        self._pending: dict[str, _Pending] = {}
        self._backlog: list[Event] = []
        self._fetching: dict[str, str] = {}  # open fetch id -> the generate it asks for
        self._socket: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._backoff_s = RECONNECT_BACKOFF_MIN_S
        self._silence_limit_s = self.liveness * self.heartbeat_interval_s
        self._last_heard = self._last_ping = self._last_tick = time.monotonic()
        self._open_socket()

    # ---- public API ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True once the server has answered hello on the current socket."""
        return self.state == "ready"

    def generate(self, frames: Any, *, timeout_s: float | None = None, **kwargs: Any) -> str:
        """Submit a generate request (arguments of ``build_generate``); returns its id."""
        return self.send(build_generate(frames, **kwargs), timeout_s=timeout_s)

    def cancel(self, request_id: str, timeout_s: float | None = None) -> str:
        """Ask the server to stop ``request_id``; returns the cancel request's id.

        The generate request itself then ends with an ``error`` whose code is "cancelled".
        """
        return self.send(Message("cancel", {"request_id": request_id}), timeout_s=timeout_s)

    def prepare(self, source: dict[str, Any], timeout_s: float | None = None) -> str:
        """Ask a server that ``reads_local_files`` to read movie frames now (the ``source``
        map of a later generate with frame encoding "source"), so that generate finds them
        ready; answered by ``prepare_reply`` or ``error source_unavailable``."""
        return self.send(Message("prepare", {"source": dict(source)}), timeout_s=timeout_s)

    def fetch(self, request_id: str, timeout_s: float | None = None) -> str:
        """Ask for the final reply of an earlier generate ``request_id`` of this client key
        (e.g. sent before Blender was closed); returns the fetch request's id.

        Answered by ``fetch_reply`` (``was``): "done": the job's ``result`` or ``error``
        follows as the generate's own final event; "running"/"queued": its progress and final
        event follow on this connection; "unknown": the server has no such job (lost in a
        restart, expired, or never sent): submit it again. ``timeout_s`` bounds the wait for
        the generate's final event (default: a generate's).
        """
        job_timeout_s = DEFAULT_TIMEOUTS_S["generate"] if timeout_s is None else timeout_s
        fetch_id = self.send(Message("fetch", {"request_id": request_id}))
        if fetch_id in self._pending:
            self._pending[request_id] = _Pending("generate", time.monotonic() + job_timeout_s,
                                                 False)
            self._fetching[fetch_id] = request_id
        return fetch_id

    def redraw(self, request_id: str, take: int, marker_times_s: Sequence[float],
               frame_rate: float, timeout_s: float | None = None) -> str:
        """Ask for take ``take`` of the generate ``request_id``'s sync picture drawn again with
        ``marker_times_s`` (seconds from the first frame; the editor's edited markers) flagged
        at ``frame_rate``; returns the redraw request's id (protocol 1.4).

        Answered by ``redraw_reply`` (``redraw_picture(event)``: the PNG bytes), or an error:
        ``invalid_request`` when the server no longer keeps that take's review data.
        """
        return self.send(Message("redraw", {
            "request_id": request_id, "take": int(take),
            "marker_times_s": [float(t) for t in marker_times_s],
            "frame_rate": float(frame_rate)}), timeout_s=timeout_s)

    def status(self, timeout_s: float | None = None) -> str:
        """Ask for model, device, memory and queue; answered by ``status_reply``."""
        return self.send(Message("status", {}), timeout_s=timeout_s)

    def ping(self, timeout_s: float | None = None) -> str:
        """An explicit ping (heartbeats are automatic); answered by ``pong``."""
        return self.send(Message("ping", {}), timeout_s=timeout_s)

    def send(self, message: Message, timeout_s: float | None = None,
             _internal: bool = False) -> str:
        """Send any request; returns its id. Never blocks.

        A send that cannot be queued (server unreachable for a long time) does not raise: the
        request ends at the next ``poll`` with a local ``server_lost`` error.

        Raises:
            ProtocolError: the request breaks the protocol (nothing was sent).
            RuntimeError: the client is closed.
        """
        if self.state == "closed" or self._socket is None:
            raise RuntimeError("FoleyClient is closed")
        if self.protocol_minor is not None:  # before hello_reply the server refuses what's new
            message = for_minor(message, self.protocol_minor)
        frames = encode(message, self._signer)
        if timeout_s is None:
            timeout_s = DEFAULT_TIMEOUTS_S[message.type]
        self._pending[message.id] = _Pending(message.type, time.monotonic() + timeout_s,
                                             _internal)
        try:
            self._socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._pending.pop(message.id, None)
            if not _internal:
                self._backlog.append(self._local_error(
                    message.id, "server_lost", "the send queue is full: the server has not been "
                    f"reachable at {self.endpoint}"))
        return message.id

    def poll(self, timeout_s: float = 0.0) -> list[Event]:
        """Do the client's work and return what happened; waits at most ``timeout_s``.

        ``poll(0)`` never blocks (for a Blender timer). Call it at least every
        ``heartbeat_interval_s`` so heartbeats go out.
        """
        if self.state == "closed":
            return []
        deadline = time.monotonic() + max(0.0, timeout_s)
        events, self._backlog = self._backlog, []
        while True:
            self._receive_all(events)
            self._tick(events)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0 or self._socket is None:
                return events
            wait_s = min(remaining, self._next_tick_in())
            self._socket.poll(max(1, int(wait_s * 1000)), zmq.POLLIN)

    def wait(self, request_id: str, timeout_s: float | None = None,
             on_event: Callable[[Event], None] | None = None) -> Event:
        """Block until ``request_id`` ends; returns its final event (result, reply or error).

        Events of other requests are kept for the next ``poll``. ``on_event`` sees every
        event of ``request_id`` (progress included).

        Raises:
            TimeoutError: ``timeout_s`` passed first (the request stays open).
            KeyError: ``request_id`` is not an open request of this client.
        """
        if request_id not in self._pending and not any(
                e.request_id == request_id for e in self._backlog):
            raise KeyError(f"{request_id} is not an open request of this client")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        others: list[Event] = []
        try:
            while True:
                remaining = 0.25 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"request {request_id} did not end in {timeout_s} s")
                events = self.poll(min(remaining, 0.25))
                for i, event in enumerate(events):
                    if event.request_id != request_id:
                        others.append(event)
                        continue
                    if on_event is not None:
                        on_event(event)
                    if event.final:
                        others += events[i + 1:]  # e.g. the review that came with its result
                        return event
        finally:
            self._backlog = others + self._backlog

    def generate_blocking(self, frames: Any, *, timeout_s: float | None = None,
                          on_progress: Callable[[Event], None] | None = None,
                          with_review: bool = True, **kwargs: Any) -> Event:
        """Submit, wait, and return the ``result`` event (for CLIs and tests).

        ``with_review``: when the result says ``review_follows`` (1.4), wait for the review too
        and return the result with it merged in (``merge_review``), as servers before 1.4 sent
        it; otherwise return the result as soon as it arrives (its review comes to ``poll``).

        Raises:
            RequestFailed: the job ended in an error (also timeout or server_lost).
        """
        request_id = self.generate(frames, timeout_s=timeout_s, **kwargs)
        event = self.wait(request_id, on_event=on_progress)
        if event.type != "result":
            raise RequestFailed(event)
        if with_review and event.body.get("review_follows"):
            event = merge_review(event, self.wait(request_id))
        return event

    def close(self) -> None:
        """Close the socket (LINGER 0). Open requests are dropped without events."""
        self._close_socket()
        self._pending.clear()
        self._fetching.clear()
        self.state = "closed"

    def __enter__(self) -> "FoleyClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- internals ----------------------------------------------------------------------

    def _open_socket(self) -> None:
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        sock.setsockopt(zmq.IPV6, 1)  # tcp://[::1]:PORT; IPv4 endpoints connect as before
        if self._server_key is not None:
            public, secret = zmq.curve_keypair()
            sock.curve_publickey = public
            sock.curve_secretkey = secret
            sock.curve_serverkey = self._server_key
        # A server that restarts on the same address answers pings at once, but knows nothing of
        # this connection's requests (and replies to its new routing id): a closed connection
        # is a lost server, not only silence.
        self._monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        sock.connect(self.endpoint)
        self._socket = sock
        self.state = "connecting"
        self.protocol_minor = None  # perhaps another server: agree again
        self._announce_minor = True
        self._announce_key = True
        now = time.monotonic()
        self._last_heard = now
        self.send(Message("hello", self._hello_body()), timeout_s=self._silence_limit_s,
                  _internal=True)
        self._last_ping = now

    def _hello_body(self) -> dict[str, Any]:
        body = {"client": self.client_name[:128], "versions": list(SUPPORTED_VERSIONS),
                "heartbeat_interval_s": self.heartbeat_interval_s}
        if self._announce_minor:
            body["minor"] = PROTOCOL_MINOR
            if self.client_key is not None and self._announce_key:
                body["client_key"] = self.client_key
        return body

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.disable_monitor()
            self._socket.close(linger=0)
            self._socket = None
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None

    def _connection_closed(self) -> bool:
        """The TCP connection of a ready socket was closed (monitor event)."""
        closed = False
        while self._monitor is not None and self._monitor.poll(0):
            event = zmq.utils.monitor.recv_monitor_message(self._monitor)
            closed = closed or event["event"] == zmq.EVENT_DISCONNECTED
        return closed and self.state == "ready"

    def _receive_all(self, events: list[Event]) -> None:
        # Read what the server sent before it closed first: a server that stops says why
        # (shutting_down) and then closes, and both can be waiting here at once.
        closed = self._connection_closed()
        self._drain(events)
        if closed:
            self._server_lost(events, time.monotonic(), closed=True)

    def _drain(self, events: list[Event]) -> None:
        sock = self._socket
        while sock is not None:
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._last_heard = time.monotonic()
            try:
                message = decode(frames, self._signer, direction="reply")
            except ProtocolError as exc:
                self.bad_replies += 1
                logger.warning("dropped an invalid reply from %s: %s", self.endpoint, exc)
                if isinstance(exc, LegacySignature):
                    self._fail_pending(events, "auth_failed", "the server signs with the "
                                       "pre-1.3 scheme (frames without their lengths): update "
                                       "the server to protocol 1.3")
                elif exc.code == "auth_failed":
                    # Only the server can write to this connection: the keys differ, and no
                    # reply will ever verify. Say so now instead of timing out later.
                    self._fail_pending(events, "auth_failed", "a reply from the server failed "
                                       f"authentication ({exc.message}): the client's and the "
                                       "server's signing keys differ")
                continue
            self._handle(message, events)

    def _handle(self, message: Message, events: list[Event]) -> None:
        parent = message.parent
        pending = self._pending.get(parent) if parent is not None else None
        if message.type == "hello_reply":
            self.protocol_minor = message.body.get("minor", 0)
            # What the agreed version's hello_reply has: callers gate features on it.
            self.server_info = for_minor(message, self.protocol_minor).body
            self.state = "ready"
            self._backoff_s = RECONNECT_BACKOFF_MIN_S
            self._silence_limit_s = self.liveness * self.heartbeat_interval_s
            events.append(Event("connected", None, message.body, local=True))
        if pending is None:
            if message.type == "error" and parent is None:
                # The server could not read the id of something we sent.
                events.append(Event("error", None, message.body, final=False))
            return  # a late reply to a request that already ended (timeout, loss)
        final = message.type != "progress"
        if final:
            del self._pending[parent]
            if message.type == "result" and message.body.get("review_follows"):
                # the generate has ended; its review follows with the same parent (1.4)
                self._pending[parent] = _Pending("review", time.monotonic()
                                                 + DEFAULT_TIMEOUTS_S["review"])
            job_id = self._fetching.pop(parent, None)
            if job_id is not None and (message.type == "error"
                                       or message.body.get("was") == "unknown"):
                # nothing will follow for the job: the fetch's reply says why
                self._pending.pop(job_id, None)
        if (message.type == "pong" and self.server_info is not None
                and message.body["state"] != self.server_info.get("state")):
            # e.g. loading -> ready: say hello again to learn model_fps and sample_rate.
            self.server_info = {**self.server_info, "state": message.body["state"]}
            self.send(Message("hello", self._hello_body()), timeout_s=self._silence_limit_s,
                      _internal=True)
        if pending.internal:
            refused = (message.body["field"] if pending.type == "hello"
                       and message.type == "error" else None)
            if refused in ("body.client_key", "body.minor"):
                # An older server refuses a hello field it does not know: say hello without it
                # (before 1.3 no key: it keeps no takes; x.0 refuses the minor: speak x.0).
                if refused == "body.client_key":
                    self._announce_key = False
                else:
                    self._announce_minor = False
                self.send(Message("hello", self._hello_body()), timeout_s=self._silence_limit_s,
                          _internal=True)
            elif message.type == "error":
                logger.warning("server refused %s: %s", pending.type, message.body)
            return
        events.append(Event(message.type, parent, message.body, list(message.buffers), final))

    def _tick(self, events: list[Event]) -> None:
        now = time.monotonic()
        gap = now - self._last_tick
        self._last_tick = now
        if gap > self.heartbeat_interval_s:
            # The caller did not poll for a while (Blender busy on its main thread): no pings
            # went out, so that time is not silence of the server. Give it one interval.
            self._last_heard = min(now, self._last_heard + gap - self.heartbeat_interval_s)
        if now - self._last_heard > self._silence_limit_s:
            self._server_lost(events, now)
            return
        if now - self._last_ping >= self.heartbeat_interval_s:
            self._last_ping = now
            self.send(Message("ping", {}), timeout_s=self._silence_limit_s, _internal=True)
        for request_id, pending in list(self._pending.items()):
            if now < pending.deadline:
                continue
            del self._pending[request_id]
            if pending.internal:
                continue
            if pending.type == "generate":
                self.send(Message("cancel", {"request_id": request_id}), _internal=True)
            events.append(self._local_end(request_id, pending, "timeout", f"no final reply to "
                                          f"{pending.type} within its timeout"))

    def _next_tick_in(self) -> float:
        now = time.monotonic()
        next_ping = self._last_ping + self.heartbeat_interval_s - now
        next_loss = self._last_heard + self._silence_limit_s - now
        next_deadline = min((p.deadline for p in self._pending.values()), default=now + 1.0) - now
        return max(0.001, min(next_ping, next_loss, next_deadline))

    def _server_lost(self, events: list[Event], now: float, closed: bool = False) -> None:
        silent_s = now - self._last_heard
        message = (f"no reply from {self.endpoint} for {silent_s:.1f} s "
                   f"(liveness {self.liveness} x {self.heartbeat_interval_s} s)")
        if closed:
            message = (f"the connection to {self.endpoint} was closed: the server stopped or "
                       "restarted")
        was_ready = self.state == "ready"
        self._fail_pending(events, "server_lost", message)
        self._pending.clear()
        self._fetching.clear()
        if was_ready:
            events.append(Event("disconnected", None, {"code": "server_lost", "message": message},
                                local=True))
            logger.warning("%s; reconnecting", message)
        # Lazy Pirate: a fresh socket drops whatever was queued for the dead server.
        self._close_socket()
        self._silence_limit_s = max(self.liveness * self.heartbeat_interval_s, self._backoff_s)
        self._backoff_s = min(RECONNECT_BACKOFF_MAX_S, self._backoff_s * 2)
        self._open_socket()

    def _fail_pending(self, events: list[Event], code: str, message: str) -> None:
        """End every open request of the caller with a local error ``code``."""
        for request_id, pending in list(self._pending.items()):
            if not pending.internal:
                del self._pending[request_id]
                events.append(self._local_end(request_id, pending, code, message))

    @classmethod
    def _local_end(cls, request_id: str, pending: _Pending, code: str, message: str) -> Event:
        """A request ended here: an error, or for an awaited review (the take arrived
        already) a review that says why it has no data."""
        if pending.type == "review":
            return Event("review", request_id, {"missing": f"{code}: {message}"}, final=True,
                         local=True)
        return cls._local_error(request_id, code, message)

    @staticmethod
    def _local_error(request_id: str, code: str, message: str) -> Event:
        return Event("error", request_id, {"code": code, "message": message, "field": None},
                     final=True, local=True)


def _load_public_key(key: Any) -> bytes | None:
    """A z85 CURVE public key from a 40-character string/bytes or a ``*.key`` file."""
    if key is None:
        return None
    if isinstance(key, str) and len(key) == 40:
        return key.encode("ascii")
    if isinstance(key, bytes) and len(key) == 40:
        return key
    import zmq.auth  # a certificate file written by `v2a keys`

    public, _secret = zmq.auth.load_certificate(str(key))
    return public


# ---- result helpers --------------------------------------------------------------------


def result_audio_pcm(event: Event) -> list[memoryview]:
    """The audio buffers of a pcm_f32le ``result``: one float32 little-endian view per
    variation (interleaved when channels > 1)."""
    audio = event.body["audio"]
    if audio["encoding"] != "pcm_f32le":
        raise ValueError(f"result audio is {audio['encoding']}, not pcm_f32le")
    return [memoryview(event.buffers[i]).cast("B") for i in audio["buffers"]]


def result_audio_numpy(event: Event) -> list[Any]:
    """The result's variations as float32 numpy arrays [samples] (or [samples, channels]).

    Imports numpy (and soundfile for FLAC) only when called.
    """
    import numpy as np

    audio = event.body["audio"]
    arrays = []
    for index in audio["buffers"]:
        if audio["encoding"] == "pcm_f32le":
            array = np.frombuffer(event.buffers[index], dtype="<f4")
        else:
            import io

            import soundfile

            array, _rate = soundfile.read(io.BytesIO(bytes(event.buffers[index])),
                                          dtype="float32", always_2d=False)
        if audio["channels"] > 1 and array.ndim == 1:
            array = array.reshape(-1, audio["channels"])
        arrays.append(array)
    return arrays


def result_sync_pictures(event: Event) -> list[bytes]:
    """The result's sync pictures (PNG bytes, one per take); [] when none were asked for."""
    pictures = event.body.get("sync_pictures")
    if not pictures:
        return []
    return [bytes(event.buffers[index]) for index in pictures["buffers"]]


def redraw_picture(event: Event) -> bytes:
    """The PNG bytes of a ``redraw_reply``."""
    return bytes(event.buffers[event.body["picture"]["buffer"]])



def merge_review(result: Event, review: Event) -> Event:
    """``result`` with ``review``'s data in it, as a result before 1.4 carried it (the review's
    picture buffers after the audio); a review without data adds its reason to ``warnings``."""
    body = {k: v for k, v in result.body.items() if k != "review_follows"}
    buffers = list(result.buffers)
    if review.type != "review":  # an error instead (should not happen): keep the take
        review = Event("review", review.request_id, {"missing": str(review.body)})
    first = len(buffers)
    for name, value in review.body.items():
        if name in REVIEW_FIELDS:
            body[name] = value
    if "sync_pictures" in body and "sync_pictures" in review.body:
        body["sync_pictures"] = {**body["sync_pictures"], "buffers": [
            first + i for i in body["sync_pictures"]["buffers"]]}
    buffers.extend(review.buffers)
    body["timings_s"] = {**body.get("timings_s", {}), **review.body.get("timings_s", {})}
    if review.body.get("missing"):
        body["warnings"] = (list(body.get("warnings", []))
                            + [str(review.body["missing"])[:2000]])[-16:]
    return Event("result", result.request_id, body, buffers, final=True, local=result.local)


def wav_bytes(pcm_f32le: Any, sample_rate: int, channels: int = 1) -> bytes:
    """A WAV file (IEEE float 32-bit) holding ``pcm_f32le``; standard library only."""
    data = memoryview(pcm_f32le).cast("B")
    block_align = 4 * channels
    fmt = struct.pack("<HHIIHH", 3, channels, sample_rate, sample_rate * block_align,
                      block_align, 32)
    fact = struct.pack("<I", data.nbytes // block_align)
    size = 4 + (8 + len(fmt)) + (8 + len(fact)) + (8 + data.nbytes)
    return b"".join([b"RIFF", struct.pack("<I", size), b"WAVE",
                     b"fmt ", struct.pack("<I", len(fmt)), fmt,
                     b"fact", struct.pack("<I", len(fact)), fact,
                     b"data", struct.pack("<I", data.nbytes), bytes(data)])


__all__ = [
    "Event",
    "FoleyClient",
    "RequestFailed",
    "build_generate",
    "merge_review",
    "redraw_picture",
    "result_audio_numpy",
    "result_audio_pcm",
    "wav_bytes",
    "PROTOCOL_MINOR",
    "PROTOCOL_VERSION",
]
