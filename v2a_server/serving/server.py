"""The socket loop of the ``v2a-server`` (ZeroMQ ROUTER + FIFO queue + an engine).

One thread runs the loop (``FoleyServer.run``): it decodes and validates every request with
``foley_protocol.protocol.decode``, answers hello/ping/status/cancel at once, puts generate
jobs in a bounded FIFO (``v2a_server.serving.jobs.JobQueue``; full -> ``busy``), reports queue
positions, and forwards what the engine posts (``v2a_server.serving.events``: progress,
results, errors). The engine (``v2a_server.serving.engine``; today one model worker thread per
device) takes the jobs from the FIFO and runs them; the loop never waits for the model, so
heartbeats, status and queue positions stay live while a job runs.

Output: a finite send high-water mark per client; what a client that does not read leaves
waiting is bounded (``v2a_server.serving.outbox``: newest progress per job, results within a
per-client budget, beyond it in the result spool on disk, ``v2a_server.serving.spool``). A client
that names a ``client_key`` in hello has its jobs outlive the connection: their final replies are
spooled and a later connection with the key ``fetch``-es them.

Safety: per-frame ZMQ_MAXMSGSIZE, a total per message counted frame by frame while receiving
(the rest of a larger message is dropped unread), and msgpack limits (in the codec); a
non-loopback bind is refused unless CURVE is configured (``v2a keys``); optional HMAC signing;
the one path field (source frames) is read only as a regular file, off the loop, with a
deadline (``source_frames``). A client silent for its heartbeat liveness has its jobs cancelled.
SIGTERM/SIGINT: waiting clients get ``shutting_down``, running jobs stop at the next step,
the process exits 0.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

import zmq

from foley_protocol.protocol import (
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_LIVENESS,
    LIMITS,
    MAX_FRAME_BYTES,
    MAX_MESSAGE_BYTES,
    PROTOCOL_MINOR,
    PROTOCOL_VERSION,
    LegacySignature,
    Message,
    ProtocolError,
    Signer,
    decode,
    encode,
    error_from_exception,
    error_message,
    for_minor,
    negotiate,
)
from v2a_server import __version__
from v2a_server.serving.engine import Engine
from v2a_server.serving.events import (
    REQUEUED_STAGE,
    JobFailed,
    JobProgress,
    JobResult,
    JobReview,
    JobStarted,
    LoopEvent,
    Redrawn,
    SourcePrepared,
    WorkerFailed,
    WorkerLoaded,
)
from v2a_server.serving.jobs import Job, JobQueue
from v2a_server.serving.outbox import Outbox, Waiting, message_size
from v2a_server.serving.review import (
    REVIEW_STORE_MAX_BYTES,
    ReviewStore,
    redraw_soon,
    review_message_body,
    warm_review_soon,
)
from v2a_server.serving.security import (
    check_bind_allowed,
    is_ipv6_endpoint,
    is_loopback_endpoint,
    load_server_keys,
)
from v2a_server.serving.source_frames import SourceUnavailable, read_soon, set_media_roots
from v2a_server.serving.spool import ResultSpool

logger = logging.getLogger("v2a_server")

SERVER_NAME = f"v2a-server {__version__}"
DEFAULT_MAX_QUEUE = 16
LOOP_TICK_S = 0.1  # liveness checks and shutdown progress at least this often
SHUTDOWN_GRACE_S = 10.0  # running jobs get this long to reach their next step
SEND_LINGER_MS = 2000  # flush final replies on exit
RECV_BATCH = 256  # requests handled per loop turn before engine events get their turn
RCVHWM = 8  # whole messages libzmq queues per connection before it stops reading that one
JOB_TIME_SMOOTHING = 0.3  # exponential average of job run time, for queued ETAs
# Messages the socket holds for one client before a send fails with EAGAIN and the rest waits
# in the client's outbox: bounds the memory a client that does not read costs (with the budget).
SEND_HWM = 4
KEYED_CLIENT_FORGET_S = 600.0  # a silent keyed connection's state (its key) is kept this long
FLUSH_TICK_S = 0.02  # how soon the loop retries sending to a client whose pipe was full
# Final replies not worth keeping for a later fetch: the job did not fail, the server stopped;
# a fetch then says "unknown", as after a crash, and the client submits again.
NOT_SPOOLED_CODES = ("shutting_down",)
REVIEW_MINOR = 4  # from this minor on, a result's review data comes in a review message after it
REVIEW_LOST = ("the server stopped before this take's review data was ready: the take is "
               "complete; generate it again for its review")

# The minor version of what a client that agreed on none (no hello, or a hello without minor)
# is sent: 1.1's reply fields were sent to every client before minors were negotiated, and
# such clients read them; anything later goes only to a client that agreed to it in hello.
UNNEGOTIATED_REPLY_MINOR = 1

# What a client of an older minor gets instead of a value its version lacks (the nearest
# thing it knows): (message type, field, value) -> older value.
OLDER_VALUES = {
    ("progress", "stage", REQUEUED_STAGE): "queued",
    ("error", "code", "worker_lost"): "generation_failed",
}

NO_LOCAL_FILES = ("this server does not read files named by clients (it is not on a loopback "
                  "address, or runs with --no-local-files)")


@dataclass
class ClientState:
    """What the server knows about one connection (ROUTER routing id)."""

    last_seen: float
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    name: str = ""
    jobs: dict[str, Job] = field(default_factory=dict)  # request id -> active job
    minor: int | None = None  # agreed in hello (None: no hello with minor yet)
    key: str | None = None  # hello's client_key: the jobs outlive this connection
    preparing: set[str] = field(default_factory=set)  # ids of prepare requests not yet answered

    @property
    def reply_minor(self) -> int:
        """The newest minor version whose additions this client's replies may carry."""
        return max(self.minor or 0, UNNEGOTIATED_REPLY_MINOR)

    def is_open(self, request_id: str) -> bool:
        """An id this connection may not reuse yet (``duplicate_id``)."""
        return request_id in self.jobs or request_id in self.preparing


class FoleyServer:
    """The socket loop. ``run()`` blocks until shutdown and returns the exit code.

    Args:
        endpoint: where to bind (loopback unless CURVE keys are given).
        engine: runs the accepted jobs (``v2a_server.serving.engine``, e.g. ``LocalEngine``).
        max_queue: waiting jobs beyond this get ``busy``.
        model_id: reported to clients.
        curve_secret_key_file: ``server.key_secret`` from ``v2a keys``; enables CURVE.
        signing_key: HMAC key shared with clients (empty: unsigned).
        read_local_files: accept frames as a file path (encoding "source"); None: when the
            endpoint is loopback, where client and server share a file system.
        media_roots: folders the source files must lie in (empty: any folder).
        spool: where final replies wait on disk (None: a temporary folder, nothing survives
            a restart).
        client_budget_bytes: memory a client that does not read may hold in waiting replies.
        review_store_bytes: memory the newest reviews' picture data may hold for redraws.
    """

    def __init__(self, endpoint: str, engine: Engine, max_queue: int, model_id: str,
                 curve_secret_key_file: str | None = None, signing_key: bytes = b"",
                 read_local_files: bool | None = None, media_roots: tuple[str, ...] = (),
                 spool: ResultSpool | None = None, client_budget_bytes: int = 64 * 2**20,
                 review_store_bytes: int = REVIEW_STORE_MAX_BYTES):
        self.endpoint = endpoint
        self.reads_local_files = (is_loopback_endpoint(endpoint) if read_local_files is None
                                  else bool(read_local_files))
        set_media_roots(media_roots)
        self.engine = engine
        self.model_id = model_id
        self.curve_secret_key_file = curve_secret_key_file
        self.signer = Signer(signing_key)
        self.jobs = JobQueue(max_queue)
        self.clients: dict[bytes, ClientState] = {}
        if spool is None:
            import tempfile

            spool = ResultSpool(tempfile.mkdtemp(prefix="v2a-spool-"), 2**30, 24 * 3600.0)
        self.spool = spool
        self.client_budget_bytes = int(client_budget_bytes)
        self._outboxes: dict[bytes, Outbox] = {}  # clients whose pipe was full
        # results sent whose review is still being computed, by (review owner, job id)
        self._reviews_pending: dict[tuple[str, str], Job] = {}
        self.reviews = ReviewStore(max_bytes=review_store_bytes)  # what a redraw draws from
        self.state = "loading"
        self.model_fps: float | None = None
        self.model_image_size: int | None = None
        self.model_scope: str | None = None
        self.sample_rate: int | None = None
        self.started_at = time.monotonic()
        self._events: queue.Queue[LoopEvent] = queue.Queue()
        self._positions: dict[tuple[bytes, str], int] = {}
        self._next_seq = 1
        self._job_time_s: float | None = None
        self._stop_requested = False
        self._stop_deadline: float | None = None
        self._exit_code = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._socket: zmq.Socket | None = None

    # ---- start and stop -----------------------------------------------------------------

    def bind(self, context: zmq.Context) -> None:
        """Create and bind the ROUTER socket.

        Raises:
            SystemExit: a non-loopback endpoint without CURVE, or unreadable keys.
        """
        curve = self.curve_secret_key_file is not None
        check_bind_allowed(self.endpoint, curve)
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a vanished client is an error, not a no-op
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        if is_ipv6_endpoint(self.endpoint):
            sock.setsockopt(zmq.IPV6, 1)  # tcp://[::1]:PORT does not bind without it
        # finite: a client that does not read fills its pipe, the send fails with EAGAIN
        # (ROUTER_MANDATORY) and the rest waits in its bounded outbox
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        sock.setsockopt(zmq.LINGER, SEND_LINGER_MS)
        if curve:
            public, secret = load_server_keys(self.curve_secret_key_file)
            sock.curve_server = True
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        sock.bind(self.endpoint)
        self._socket = sock
        logger.info("%s listening on %s (%s, protocol %d.%d, max queue %d)", SERVER_NAME,
                    self.endpoint, "CURVE" if curve else "plain loopback", PROTOCOL_VERSION,
                    PROTOCOL_MINOR, self.jobs.max_length)

    def start_engine(self) -> None:
        """Let the engine load the model and take jobs from the queue (and the review's
        libraries load beside it)."""
        warm_review_soon()
        self.engine.start(self.jobs, self.post)

    def post(self, event: LoopEvent) -> None:
        """Hand an event to the socket loop (thread-safe; called by the engine's threads)."""
        self._events.put(event)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the wake-up pipe is full: the loop is already due to wake

    def request_stop(self, *_args: Any) -> None:
        """Signal handler: begin a clean shutdown; a second signal exits at once."""
        if self._stop_requested:
            os._exit(1)
        self._stop_requested = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)

    # ---- the loop -----------------------------------------------------------------------

    def run(self) -> int:
        assert self._socket is not None, "bind() first"
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        while True:
            tick_s = FLUSH_TICK_S if self._outboxes else LOOP_TICK_S
            ready = dict(poller.poll(int(tick_s * 1000)))
            if self._wake_r.fileno() in ready or self._wake_r in ready:
                self._drain_wake()
            if self._stop_requested and self.state != "stopping":
                self._begin_shutdown("the server received a stop signal")
            self._receive_all()
            self._handle_events()
            self._flush_outboxes()
            self._check_clients()
            if self.state == "stopping" and self._shutdown_done():
                break
        self._socket.close(linger=SEND_LINGER_MS)
        self.engine.join(timeout_s=1.0)
        logger.info("stopped (exit code %d)", self._exit_code)
        return self._exit_code

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _receive_all(self) -> None:
        for _ in range(RECV_BATCH):  # then let worker events and liveness checks run
            frames = self._receive_one()
            if frames is None:
                return
            identity = frames[0].bytes
            client = self.clients.get(identity)
            now = time.monotonic()
            if client is None:
                client = self.clients[identity] = ClientState(now)
            client.last_seen = now
            if len(frames) == 1:  # over the limit: only the routing id was kept
                logger.info("client %s: dropped a message over %d bytes", identity.hex(),
                            MAX_MESSAGE_BYTES)
                self._send(identity, error_message(
                    "too_large", f"the message is larger than max_message_bytes = "
                    f"{MAX_MESSAGE_BYTES} bytes (all frames together); it was not read",
                    field="frames"))
                continue
            try:
                message = decode(frames[1:], self.signer, direction="request")
            except LegacySignature as exc:  # answered in the old scheme, so the client reads why
                logger.info("client %s: rejected message: %s", identity.hex(), exc)
                self._send(identity, error_from_exception(exc), legacy_signature=True)
                continue
            except ProtocolError as exc:
                logger.info("client %s: rejected message: %s", identity.hex(), exc)
                self._send(identity, error_from_exception(exc))
                continue
            if client.is_open(message.id):
                self._send(identity, error_message(
                    "duplicate_id", f"request id {message.id} is already in use by one of your "
                    "open requests", field="header.id", parent=message.id))
                continue
            try:
                self._dispatch(identity, client, message)
            except Exception:  # a bug in one request must not stop the server
                logger.exception("client %s: %s %s failed", identity.hex(), message.type,
                                 message.id)
                self._send(identity, error_message("internal", f"the server failed on this "
                                                   f"{message.type}; see its log",
                                                   parent=message.id))

    def _receive_one(self) -> list[zmq.Frame] | None:
        """The next message's frames (routing id first), read one frame at a time; a message
        whose frames together pass ``MAX_MESSAGE_BYTES`` is dropped frame by frame as read,
        leaving only the routing id. None: nothing waiting."""
        assert self._socket is not None
        try:
            first = self._socket.recv(flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        frames, total, over = [first], 0, False
        more = first.more
        while more:  # the rest of a message is there already: libzmq delivers whole messages
            frame = self._socket.recv(copy=False)
            more = frame.more
            total += len(frame)
            if total > MAX_MESSAGE_BYTES:
                over = True
                del frames[1:]  # released now, not after the last frame
            if not over:
                frames.append(frame)
        return frames

    def _dispatch(self, identity: bytes, client: ClientState, message: Message) -> None:
        body = message.body
        if message.type == "ping":
            self._send(identity, Message("pong", {"state": self.state,
                                                  "queue_length": len(self.jobs)},
                                         parent=message.id))
        elif message.type == "hello":
            try:
                version = negotiate(message)  # {"version": major[, "minor": minor]}
            except ProtocolError as exc:
                self._send(identity, error_from_exception(exc))
                return
            client.name = body["client"]
            client.minor = version.get("minor")
            client.key = body.get("client_key")
            client.heartbeat_interval_s = float(body.get("heartbeat_interval_s",
                                                         HEARTBEAT_INTERVAL_S))
            logger.info("client %s: hello from %r (heartbeat %.1f s)", identity.hex(),
                        client.name, client.heartbeat_interval_s)
            self._send(identity, Message("hello_reply", {
                **version, "server": SERVER_NAME, "state": self.state,
                "model_id": self.model_id if self.model_fps is not None else None,
                "model_fps": self.model_fps, "sample_rate": self.sample_rate,
                "model_image_size": self.model_image_size,
                "model_scope": self.model_scope,
                "heartbeat_interval_s": HEARTBEAT_INTERVAL_S,
                "heartbeat_liveness": HEARTBEAT_LIVENESS,
                "limits": {**LIMITS, "max_queue": self.jobs.max_length},
                "reads_local_files": self.reads_local_files,
            }, parent=message.id))
        elif message.type == "status":
            self._send(identity, Message("status_reply", self._status_body(), parent=message.id))
        elif message.type == "cancel":
            self._cancel(identity, client, message)
        elif message.type == "generate":
            self._accept(identity, client, message)
        elif message.type == "prepare":
            self._prepare(identity, client, message)
        elif message.type == "fetch":
            self._fetch(identity, client, message)
        elif message.type == "redraw":
            self._redraw(identity, client, message)

    def _prepare(self, identity: bytes, client: ClientState, message: Message) -> None:
        """Read a movie's frames now, so that a generate naming them finds them ready."""
        if not self.reads_local_files:
            self._send(identity, error_message("source_unavailable", NO_LOCAL_FILES,
                                               field="body.source", parent=message.id))
            return
        t0 = time.monotonic()
        client.preparing.add(message.id)
        # read on a reader thread (the cache keeps the frames for the job; a job that gets
        # there first waits for this read rather than reading twice)
        future = read_soon(message.body["source"])
        future.add_done_callback(
            lambda done: self.post(SourcePrepared(identity, message.id, done,
                                                  time.monotonic() - t0)))

    def _accept(self, identity: bytes, client: ClientState, message: Message) -> None:
        def refuse(code: str, text: str, field: str | None = None) -> None:
            self._send(identity, error_message(code, text, field=field, parent=message.id))

        if self.state == "stopping":
            return refuse("shutting_down", "the server is stopping and accepts no new jobs")
        if self.state == "failed":
            return refuse("model_unavailable", "the model failed to load; see the server log")
        if message.body["frames"]["encoding"] == "source" and not self.reads_local_files:
            return refuse("source_unavailable", f"{NO_LOCAL_FILES}: send the frames themselves",
                          "body.frames.source")
        job = Job(message.id, identity, message.body, list(message.buffers), self._next_seq,
                  owner=spool_owner(client.key),
                  review_follows=client.reply_minor >= REVIEW_MINOR)
        # A job's first event is "queued": send it before the job becomes visible to a
        # worker, which may take it at once (only this thread adds jobs, so the length holds).
        if len(self.jobs) < self.jobs.max_length:
            self._send_queued(job, len(self.jobs) + 1)
        if not self.jobs.put(job):
            logger.info("client %s: %s refused: queue full (%d)", identity.hex(), message.id,
                        self.jobs.max_length)
            return refuse("busy", f"the job queue is full ({self.jobs.max_length} waiting "
                          "jobs); try again later")
        self._next_seq += 1
        client.jobs[job.request_id] = job
        if job.body["frames"]["encoding"] == "source":
            # While earlier jobs generate, this one's frames are read (errors: the job's own
            # read raises them again, then).
            read_soon(job.body["frames"]["source"])
        logger.info("%s: queued (%.1f s of audio, %d frames, %s)", job.label,
                    job.body["duration_s"], frame_count(job.body["frames"]),
                    job.body["frames"]["encoding"])
        self._send_positions()

    def _cancel(self, identity: bytes, client: ClientState, message: Message) -> None:
        target = message.body["request_id"]
        job = client.jobs.get(target)
        if job is None:
            was = "unknown"
        elif self.jobs.remove(job):
            was = "queued"
            self._finish(job, error_message("cancelled", "cancelled while queued",
                                            parent=job.request_id))
            self._send_positions()
        else:
            was = "running"
            self.engine.cancel(job, "cancelled", "cancelled by the client")
        logger.info("client %s: cancel %s (%s)", identity.hex(), target, was)
        self._send(identity, Message("cancel_reply", {"request_id": target, "was": was},
                                     parent=message.id))

    def _fetch(self, identity: bytes, client: ClientState, message: Message) -> None:
        """A job's final reply for the client key that submitted it: from the spool ("done",
        the reply follows), or the job still runs or waits and is now this connection's."""
        target = message.body["request_id"]
        owner = spool_owner(client.key)
        job = self._find_job(identity, owner, target)
        final: Message | None = None
        outbox = self._outboxes.get(identity)
        if job is not None:
            was = "queued" if job in self.jobs.snapshot() else "running"
            self._attach(job, identity, client)
        elif outbox is not None and outbox.has_final(target):
            was = "done"  # already on its way to this connection, ahead of this reply
        elif owner is not None and (final := self.spool.get(owner, target)) is not None:
            was = "done"
        else:
            was = "unknown"
        logger.info("client %s: fetch %s (%s)", identity.hex(), target, was)
        self._send(identity, Message("fetch_reply", {"request_id": target, "was": was},
                                     parent=message.id))
        if final is not None:
            self._send(identity, final, final_of=(owner, target), spooled=(owner, target))
            if final.type == "result" and final.body.get("review_follows") \
                    and client.reply_minor >= REVIEW_MINOR:  # an older one: the take alone
                self._fetch_review(identity, owner, target, len(final.body["audio"]["buffers"]))
        if was == "queued":
            self._send_positions(force=job)

    def _fetch_review(self, identity: bytes, owner: str, job_id: str, takes: int) -> None:
        """After a fetched result that said ``review_follows``: its review, from the spool, or
        when it is ready (it is being computed), or a review that says it was lost."""
        spooled = review_spool_key(owner, job_id)
        review = self.spool.get(*spooled)
        if review is not None:
            self._send(identity, review, final_of=spooled, spooled=spooled)
            return
        job = self._reviews_pending.get((owner, job_id))
        if job is not None:
            job.client = identity  # it goes to this connection when ready
            return
        self._send(identity, Message("review", {"takes": takes, "missing": REVIEW_LOST},
                                     parent=job_id))

    def _redraw(self, identity: bytes, client: ClientState, message: Message) -> None:
        """Draw a take's sync picture again with the markers sent (on the review thread)."""
        body = message.body
        target, take = body["request_id"], body["take"]
        pictures = self.reviews.get((review_owner(client.key, identity), target))
        if pictures is None:
            self._send(identity, error_message(
                "invalid_request", f"this server keeps no review data of {target} (its "
                f"{self.reviews.max_entries} newest reviews are kept, per client key or "
                "connection; or the server restarted): generate the take again to review it",
                field="body.request_id", parent=message.id))
            return
        if take >= len(pictures):
            self._send(identity, error_message(
                "out_of_range", f"{target} has {len(pictures)} take(s); take {take} is not one",
                field="body.take", parent=message.id))
            return
        done = redraw_soon(pictures[take], body["marker_times_s"], body["frame_rate"])
        done.add_done_callback(lambda drawn: self.post(Redrawn(identity, message.id, target,
                                                               take, drawn)))

    def _find_job(self, identity: bytes, owner: str | None, request_id: str) -> Job | None:
        """The open job ``request_id`` of this connection, or of any connection of ``owner``."""
        own = self.clients[identity].jobs.get(request_id)
        if own is not None or owner is None:
            return own
        for other in self.clients.values():
            job = other.jobs.get(request_id)
            if job is not None and job.owner == owner:
                return job
        return None

    def _attach(self, job: Job, identity: bytes, client: ClientState) -> None:
        """Send the job's progress and final reply to ``identity`` from now on."""
        if job.client == identity:
            return
        old = self.clients.get(job.client)
        if old is not None:
            old.jobs.pop(job.request_id, None)
        self._positions.pop(job.key, None)
        job.client = identity
        client.jobs[job.request_id] = job

    # ---- events from the engine ---------------------------------------------------------

    def _handle_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if isinstance(event, JobProgress):
                if self._is_active(event.job):
                    # a job whose worker was lost is first in the queue again
                    position = 1 if event.stage == REQUEUED_STAGE else 0
                    if position:
                        self._positions[event.job.key] = position
                    self._send(event.job.client, Message("progress", progress_body(
                        event.stage, position, event.step, event.total_steps, event.eta_s,
                        event.elapsed_s), parent=event.job.request_id))
            elif isinstance(event, JobStarted):
                self._positions.pop(event.job.key, None)
                self._send_positions()
            elif isinstance(event, JobResult):
                self._send_result(event)
            elif isinstance(event, JobReview):
                self._send_review(event)
            elif isinstance(event, Redrawn):
                self._send(event.client, _redraw_reply(event))
            elif isinstance(event, JobFailed):
                self._finish(event.job, error_message(event.code, event.message,
                                                      field=event.field,
                                                      parent=event.job.request_id))
            elif isinstance(event, SourcePrepared):
                client = self.clients.get(event.client)
                if client is not None:
                    client.preparing.discard(event.request_id)
                self._send(event.client, _prepare_reply(event.request_id, event.done,
                                                        event.seconds))
            elif isinstance(event, WorkerLoaded):
                self.model_fps, self.sample_rate = event.model_fps, event.sample_rate
                self.model_image_size = event.image_size
                self.model_scope = event.scope
                workers = self.engine.workers()
                if self.state == "loading" and all(w.state != "loading" for w in workers):
                    self.state = "ready"
                    logger.info("ready: model %s on %s", self.model_id,
                                ", ".join(w.device for w in workers))
            elif isinstance(event, WorkerFailed):
                logger.error("worker %s could not load the model: %s", event.device,
                             event.message)
                if self.state != "stopping":  # a server with a broken device is not usable
                    self._exit_code = 2
                    self._begin_shutdown(f"the model failed to load: {event.message}",
                                         code="model_unavailable")

    def _send_result(self, event: JobResult) -> None:
        job, body = event.job, event.body
        body["model_id"] = self.model_id
        # Server-clock times (s since start) let a client check FIFO order.
        body["timings_s"]["accepted_at_s"] = job.accepted_at - self.started_at
        body["timings_s"]["started_at_s"] = (job.started_at or job.accepted_at) - self.started_at
        run_s = time.monotonic() - (job.started_at or job.accepted_at)
        self._job_time_s = run_s if self._job_time_s is None else (
            (1 - JOB_TIME_SMOOTHING) * self._job_time_s + JOB_TIME_SMOOTHING * run_s)
        if body.get("review_follows"):
            self._reviews_pending[(review_owner_of(job), job.request_id)] = job
        self._finish(job, Message("result", body, parent=job.request_id, buffers=event.buffers))
        if event.review is not None:  # the review after the result, never before it
            event.review.add_done_callback(lambda done: self.post(JobReview(job, done)))

    def _send_review(self, event: JobReview) -> None:
        """The review of a result sent before: kept for redraws, spooled for a keyed job (a
        later fetch finds it), sent to the job's (perhaps new) connection."""
        job = event.job
        owner = review_owner_of(job)
        self._reviews_pending.pop((owner, job.request_id), None)
        body, buffers = review_message_body(event.done, int(job.body.get("variations", 1)))
        if "missing" not in body:
            self.reviews.put((owner, job.request_id), event.done.result().pictures)
        review = Message("review", body, parent=job.request_id, buffers=buffers)
        spooled = None
        if job.owner is not None and self.spool.put(*review_spool_key(job.owner,
                                                                      job.request_id), review):
            spooled = review_spool_key(job.owner, job.request_id)
        client = self.clients.get(job.client)
        if client is not None and client.reply_minor < REVIEW_MINOR:
            return  # the key's new connection speaks an older minor: it may fetch later
        self._send(job.client, review, final_of=(job.owner, job.request_id), spooled=spooled)

    def _is_active(self, job: Job) -> bool:
        client = self.clients.get(job.client)
        return client is not None and client.jobs.get(job.request_id) is job

    def _finish(self, job: Job, final: Message) -> None:
        """Send the job's final reply and forget it; a keyed job's reply is spooled first, so
        that it survives the client (and this server)."""
        client = self.clients.get(job.client)
        if client is not None and client.jobs.get(job.request_id) is job:
            del client.jobs[job.request_id]
        self._positions.pop(job.key, None)
        spooled = None
        if job.owner is not None and not (final.type == "error"
                                          and final.body["code"] in NOT_SPOOLED_CODES):
            if self.spool.put(job.owner, job.request_id, final):
                spooled = (job.owner, job.request_id)
        self._send(job.client, final, final_of=(job.owner, job.request_id), spooled=spooled)

    def _send_positions(self, force: Job | None = None) -> None:
        """Tell every waiting job its (new) 1-based queue position (``force``: even if known)."""
        waiting = self.jobs.snapshot()
        n_workers = self._usable_workers()
        for position, job in enumerate(waiting, start=1):
            if self._positions.get(job.key) == position and job is not force:
                continue
            self._send_queued(job, position, n_workers)

    def _send_queued(self, job: Job, position: int, n_workers: int | None = None) -> None:
        """One "queued" progress event with the job's 1-based position and an ETA."""
        if n_workers is None:
            n_workers = self._usable_workers()
        self._positions[job.key] = position
        eta = None
        if self._job_time_s is not None:
            eta = self._job_time_s * (1 + (position - 1) // n_workers)
        self._send(job.client, Message("progress", progress_body(
            "queued", position, 0, 0, eta, time.monotonic() - job.accepted_at),
            parent=job.request_id))

    def _usable_workers(self) -> int:
        """Workers that run (or will run) jobs, at least 1: queued ETAs divide by it."""
        return max(1, sum(w.state != "failed" for w in self.engine.workers()))

    # ---- liveness and shutdown ----------------------------------------------------------

    def _check_clients(self) -> None:
        now = time.monotonic()
        for identity, client in list(self.clients.items()):
            silent_s = now - client.last_seen
            if silent_s <= HEARTBEAT_LIVENESS * client.heartbeat_interval_s:
                continue
            if client.key is not None:
                # its jobs run on, their replies wait (outbox, spool); a stalled client that
                # reads again is still this connection, with its key, for a while
                if not client.jobs and silent_s > KEYED_CLIENT_FORGET_S:
                    del self.clients[identity]
                continue
            if not client.jobs and not client.preparing:
                # what waits in its outbox stays until sent or the connection is gone
                del self.clients[identity]
                continue
            reason = (f"no heartbeat from the client for {silent_s:.1f} s "
                      f"(liveness {HEARTBEAT_LIVENESS} x {client.heartbeat_interval_s} s)")
            for job in list(client.jobs.values()):
                if job.cancel_event.is_set():
                    continue
                logger.info("%s: cancelling, %s", job.label, reason)
                if self.jobs.remove(job):
                    self._finish(job, error_message("cancelled", reason, parent=job.request_id))
                else:
                    self.engine.cancel(job, "cancelled", reason)
            self._send_positions()

    def _begin_shutdown(self, reason: str, code: str = "shutting_down") -> None:
        self.state = "stopping"
        self._stop_deadline = time.monotonic() + SHUTDOWN_GRACE_S
        waiting = self.jobs.drain()
        for job in waiting:
            self._finish(job, error_message(code, reason, parent=job.request_id))
        running = [job for c in self.clients.values() for job in c.jobs.values()]
        for job in running:
            self.engine.cancel(job, code, reason)
        logger.info("stopping: %s (%d waiting jobs told, %d running jobs cancelled)", reason,
                    len(waiting), len(running))
        self.engine.stop()

    def _shutdown_done(self) -> bool:
        busy = any(c.jobs for c in self.clients.values())
        if not busy:
            return True
        if self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
            for client in self.clients.values():
                for job in list(client.jobs.values()):
                    logger.warning("%s: still running after %.0f s; giving up on it", job.label,
                                   SHUTDOWN_GRACE_S)
                    self._finish(job, error_message(job.cancel_code, "the server stopped before "
                                                    "the job reached its next step",
                                                    parent=job.request_id))
            return True
        return False

    # ---- sending ------------------------------------------------------------------------

    def _send(self, identity: bytes, message: Message,
              final_of: tuple[str | None, str] | None = None,
              spooled: tuple[str, str] | None = None, legacy_signature: bool = False) -> None:
        """Send now, or let it wait in the client's outbox if its pipe is full.

        ``final_of`` (owner, job id): ``message`` is that job's final reply, never dropped;
        ``spooled``: it is in the spool already (a keyed job), so it may wait there;
        ``legacy_signature``: signed the pre-1.3 way (the one refusal an old signed client must
        still be able to read; sent now or never, it waits in no outbox).
        """
        if legacy_signature:
            self._send_now(identity, message, legacy_signature=True)
            return
        outbox = self._outboxes.get(identity)
        if outbox is None:
            outcome = self._send_now(identity, message)
            if outcome == "sent":
                return
            if outcome == "gone":
                self._undeliverable(identity, message, spooled)
                return
            logger.info("client %s is not reading: its replies wait (at most %d MB in memory)",
                        identity.hex(), self.client_budget_bytes // 2**20)
            outbox = self._outboxes[identity] = Outbox(self.client_budget_bytes)
        self._wait(identity, outbox, message, final_of, spooled)

    def _send_now(self, identity: bytes, message: Message, legacy_signature: bool = False) -> str:
        """"sent", "full" (the client's pipe is at its high-water mark) or "gone". The message
        goes as the client's agreed version has it (newer optional fields left out)."""
        assert self._socket is not None
        client = self.clients.get(identity)
        try:
            message = for_client_minor(message, client.reply_minor if client is not None
                                       else UNNEGOTIATED_REPLY_MINOR)
            frames = encode(message, self.signer, legacy=legacy_signature)
        except ProtocolError as exc:  # a server bug: say so instead of sending nonsense
            logger.exception("invalid %s reply to %s", message.type, message.parent)
            frames = encode(error_message("internal", f"the server built an invalid "
                                          f"{message.type}: {exc}", parent=message.parent),
                            self.signer)
        try:
            self._socket.send_multipart([identity, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return "full"
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return "gone"
            logger.warning("client %s: could not send %s: %s", identity.hex(), message.type, exc)
        return "sent"

    def _wait(self, identity: bytes, outbox: Outbox, message: Message,
              final_of: tuple[str | None, str] | None,
              spooled: tuple[str, str] | None) -> None:
        size = message_size(message)
        if message.type == "progress":
            outbox.add(Waiting(message, size, progress_of=message.parent))
        elif final_of is not None:
            job_id = final_of[1]
            if outbox.fits(size):
                outbox.add(Waiting(message, size, final_of=job_id, spooled=spooled))
            elif spooled is not None:
                outbox.add(Waiting(None, size, final_of=job_id, spooled=spooled))
            else:  # a client without a key: the spool holds it only until it is sent
                owner = connection_owner(identity)
                if message.type == "review":  # beside its result, which may wait there too
                    owner = review_spool_key(owner, job_id)[0]
                if self.spool.put(owner, job_id, message):
                    outbox.add(Waiting(None, size, final_of=job_id, spooled=(owner, job_id),
                                       drop_spooled=True))
                else:  # the disk refused: memory, over budget, rather than lose a take
                    outbox.add(Waiting(message, size, final_of=job_id))
        elif outbox.fits(size):
            outbox.add(Waiting(message, size))
        else:
            logger.warning("client %s is not reading: dropped a %s (%d bytes wait for it)",
                           identity.hex(), message.type, outbox.bytes)

    def _flush_outboxes(self) -> None:
        """Send what waits, in order, until each client's pipe is full again."""
        for identity, outbox in list(self._outboxes.items()):
            while (waiting := outbox.head()) is not None:
                message = waiting.message
                if message is None:
                    assert waiting.spooled is not None
                    message = self.spool.get(*waiting.spooled)
                    if message is None:
                        logger.error("client %s: the spooled reply of %s is gone (expired?)",
                                     identity.hex(), waiting.final_of)
                        outbox.pop()
                        continue
                outcome = self._send_now(identity, message)
                if outcome == "full":
                    break
                if outcome == "gone":
                    self._client_gone(identity)
                    break
                outbox.pop()
                if waiting.drop_spooled and waiting.spooled is not None:
                    self.spool.remove(*waiting.spooled)
            if not outbox and identity in self._outboxes:
                del self._outboxes[identity]

    def _client_gone(self, identity: bytes) -> None:
        """The client's connection is gone: what waited for it is undeliverable."""
        outbox = self._outboxes.pop(identity, None)
        if outbox is None:
            return
        for waiting in outbox.drain():
            if waiting.message is not None:
                self._undeliverable(identity, waiting.message, waiting.spooled)
            elif waiting.drop_spooled and waiting.spooled is not None:
                logger.info("client %s is gone: the result of %s is dropped (no client key)",
                            identity.hex(), waiting.final_of)
                self.spool.remove(*waiting.spooled)

    def _undeliverable(self, identity: bytes, message: Message,
                       spooled: tuple[str, str] | None) -> None:
        if spooled is not None:
            logger.info("client %s is gone; its %s of %s waits in the spool for a fetch",
                        identity.hex(), message.type, spooled[1])
        elif message.type in ("result", "error") and message.parent is not None:
            logger.info("client %s is gone (no client key): its %s of %s is dropped",
                        identity.hex(), message.type, message.parent)
        else:
            logger.debug("client %s is gone; dropped a %s", identity.hex(), message.type)

    def _status_body(self) -> dict[str, Any]:
        workers = [asdict(w) for w in self.engine.workers(with_memory=True)]
        # what the workers posted before this look (a result of a worker now idle) is sent
        # before this reply: a client told "idle" has its results on the way, and a fetch
        # after it is told "done", not "running"
        self._handle_events()
        return {
            "state": self.state, "server": SERVER_NAME,
            "model_id": self.model_id if self.model_fps is not None else None,
            "model_fps": self.model_fps, "sample_rate": self.sample_rate,
            "model_image_size": self.model_image_size, "model_scope": self.model_scope,
            "uptime_s": time.monotonic() - self.started_at,
            "queue_length": len(self.jobs), "queue_max": self.jobs.max_length,
            "clients": len(self.clients), "workers": workers,
        }


# ---- message helpers --------------------------------------------------------------------


def for_client_minor(message: Message, minor: int) -> Message:
    """``message`` as a client of ``minor`` may receive it (``for_minor``), a value its version
    lacks replaced by its older equivalent (``OLDER_VALUES``).

    Raises:
        ProtocolError: the message cannot be said in ``minor`` at all.
    """
    try:
        return for_minor(message, minor)
    except ProtocolError:
        for (mtype, name, value), older in OLDER_VALUES.items():
            if message.type == mtype and message.body.get(name) == value:
                body = {**message.body, name: older}
                return for_minor(Message(message.type, body, message.id, message.parent,
                                         message.buffers, message.version), minor)
        raise


def spool_owner(client_key: str | None) -> str | None:
    """Whose spooled replies a client may fetch: its key's (None: no key, nothing kept)."""
    return None if client_key is None else f"key:{client_key}"


def connection_owner(identity: bytes) -> str:
    """The spool owner of one key-less connection's overflow (never fetched by another)."""
    return f"conn:{identity.hex()}"


def review_owner(client_key: str | None, identity: bytes) -> str:
    """Who may redraw a take: the client key's connections, or the one key-less connection."""
    return spool_owner(client_key) or connection_owner(identity)


def review_owner_of(job: Job) -> str:
    return job.owner or connection_owner(job.client)


def review_spool_key(owner: str, job_id: str) -> tuple[str, str]:
    """Where a job's review waits in the spool: its own owner ("/" is in no client key), so
    that the owner's entries are its final replies only."""
    return f"{owner}/review", job_id


def _redraw_reply(event: Redrawn) -> Message:
    try:
        png = event.done.result()
    except Exception as exc:
        logger.error("redraw of %s take %d failed: %s", event.job_id, event.take, exc,
                     exc_info=exc)
        return error_message("internal", f"the sync picture could not be drawn: "
                             f"{type(exc).__name__}: {exc}", parent=event.request_id)
    from v2a_server.evaluation.sync_picture import HEIGHT_PX, WIDTH_PX

    return Message("redraw_reply", {
        "request_id": event.job_id, "take": event.take,
        "picture": {"encoding": "png", "width_px": WIDTH_PX, "height_px": HEIGHT_PX,
                    "buffer": 0}}, parent=event.request_id, buffers=[png])


def progress_body(stage: str, queue_position: int, step: int, total_steps: int,
                  eta_s: float | None, elapsed_s: float) -> dict[str, Any]:
    """A ``progress`` body: queued (position >= 1, step 0 of 0) or running (position 0)."""
    return {"stage": stage[:32], "queue_position": queue_position, "step": step,
            "total_steps": total_steps,
            "eta_s": None if eta_s is None else max(0.0, float(eta_s)),
            "elapsed_s": max(0.0, float(elapsed_s))}


def _prepare_reply(request_id: str, done: Future, seconds: float) -> Message:
    try:
        frames, cached = done.result()
    except SourceUnavailable as exc:
        logger.info("prepare %s: source frames unavailable: %s", request_id, exc)
        return error_message("source_unavailable", exc.client_text, field="body.source",
                             parent=request_id)
    except Exception as exc:  # a bug in reading: the client renders instead
        logger.exception("prepare %s failed", request_id)
        return error_message("internal", f"{type(exc).__name__}: {exc}", parent=request_id)
    logger.info("prepared %d frames for %s in %.2f s%s", len(frames), request_id, seconds,
                " (cached)" if cached else "")
    return Message("prepare_reply", {"frames": len(frames), "cached": cached,
                                     "read_s": 0.0 if cached else seconds}, parent=request_id)


def frame_count(frames: dict[str, Any]) -> int:
    """How many video frames a validated generate body's ``frames`` carries or names."""
    if frames["encoding"] == "rgb24":
        return int(frames["shape"][0])
    if frames["encoding"] == "source":
        return len(frames["source"]["frame_indices"])
    return len(frames["buffers"])
