"""``v2a-server``: the Foley generation server (ZeroMQ ROUTER + FIFO queue + model workers).

One thread runs the socket loop (``FoleyServer.run``): it decodes and validates every request
with ``foley_protocol.protocol.decode``, answers hello/ping/status/cancel at once, puts generate
jobs in a bounded FIFO (``v2a_server.jobs.JobQueue``; full -> ``busy``), reports queue positions,
and forwards what the model workers post (progress, results, errors). One ``ModelWorker``
thread per device runs the pipeline; the loop never waits for the model, so heartbeats,
status and queue positions stay live while a job runs.

Safety: per-frame ZMQ_MAXMSGSIZE and msgpack limits (in the codec); a non-loopback bind is
refused unless CURVE is configured (``v2a keys``); optional HMAC signing; no message field is
ever used as a path. A client silent for its heartbeat liveness has its jobs cancelled.
SIGTERM/SIGINT: waiting clients get ``shutting_down``, running jobs stop at the next step,
the process exits 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import queue
import signal
import socket
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import zmq

from foley_protocol.protocol import (
    DEFAULT_ENDPOINT,
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_LIVENESS,
    LIMITS,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Message,
    ProtocolError,
    Signer,
    decode,
    encode,
    error_from_exception,
    error_message,
    negotiate,
)
from v2a_server import __version__
from v2a_server.jobs import Job, JobQueue

logger = logging.getLogger("v2a_server")

SERVER_NAME = f"v2a-server {__version__}"
DEFAULT_MAX_QUEUE = 16
LOOP_TICK_S = 0.1  # liveness checks and shutdown progress at least this often
SHUTDOWN_GRACE_S = 10.0  # running jobs get this long to reach their next step
SEND_LINGER_MS = 2000  # flush final replies on exit
RECV_BATCH = 256  # requests handled per loop turn before worker events get their turn
JOB_TIME_SMOOTHING = 0.3  # exponential average of job run time, for queued ETAs

NO_LOCAL_FILES = ("this server does not read files named by clients (it is not on a loopback "
                  "address, or runs with --no-local-files)")


@dataclass
class ClientState:
    """What the server knows about one connection (ROUTER routing id)."""

    last_seen: float
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    name: str = ""
    jobs: dict[str, Job] = field(default_factory=dict)  # request id -> active job


class FoleyServer:
    """The socket loop. ``run()`` blocks until shutdown and returns the exit code.

    Args:
        endpoint: where to bind (loopback unless CURVE keys are given).
        model_dir: the model folder (``save_pretrained`` output).
        devices: one worker per entry ("cpu", "cuda", "cuda:1").
        dtype: "auto", "float32" or "float16".
        max_queue: waiting jobs beyond this get ``busy``.
        model_id: reported to clients; default: the model folder's name.
        curve_secret_key_file: ``server.key_secret`` from ``v2a keys``; enables CURVE.
        signing_key: HMAC key shared with clients (empty: unsigned).
        num_threads: torch CPU threads per CPU worker.
        read_local_files: accept frames as a file path (encoding "source"); None: when the
            endpoint is loopback, where client and server share a file system.
    """

    def __init__(self, endpoint: str, model_dir: str, devices: list[str], dtype: str = "auto",
                 max_queue: int = DEFAULT_MAX_QUEUE, model_id: str | None = None,
                 curve_secret_key_file: str | None = None, signing_key: bytes = b"",
                 num_threads: int | None = None, read_local_files: bool | None = None):
        self.endpoint = endpoint
        self.reads_local_files = (is_loopback_endpoint(endpoint) if read_local_files is None
                                  else bool(read_local_files))
        self.model_dir = model_dir
        self.devices = devices
        self.dtype = dtype
        self.model_id = model_id or os.path.basename(os.path.normpath(model_dir))
        self.curve_secret_key_file = curve_secret_key_file
        self.signer = Signer(signing_key)
        self.num_threads = num_threads
        self.jobs = JobQueue(max_queue)
        self.clients: dict[bytes, ClientState] = {}
        self.state = "loading"
        self.model_fps: float | None = None
        self.model_image_size: int | None = None
        self.sample_rate: int | None = None
        self.workers: list[Any] = []
        self.started_at = time.monotonic()
        self._events: queue.Queue[tuple] = queue.Queue()
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
        # prepare requests: movie frames read ahead of a generate, one file at a time, off the
        # socket loop (created on first use)
        self._source_reader: ThreadPoolExecutor | None = None

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
        sock.setsockopt(zmq.SNDHWM, 0)  # never drop a result for a slow reader
        sock.setsockopt(zmq.LINGER, SEND_LINGER_MS)
        if curve:
            public, secret = load_server_keys(self.curve_secret_key_file)
            sock.curve_server = True
            sock.curve_publickey = public
            sock.curve_secretkey = secret
        sock.bind(self.endpoint)
        self._socket = sock
        logger.info("%s listening on %s (%s, protocol %d, max queue %d)", SERVER_NAME,
                    self.endpoint, "CURVE" if curve else "plain loopback", PROTOCOL_VERSION,
                    self.jobs.max_length)

    def start_workers(self) -> None:
        from v2a_server.worker import ModelWorker

        for device in self.devices:
            worker = ModelWorker(self.model_dir, device, self.dtype, self.jobs, self.post,
                                 self.num_threads)
            self.workers.append(worker)
            worker.start()

    def post(self, event: tuple) -> None:
        """Hand an event to the socket loop (thread-safe; called by workers)."""
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
            ready = dict(poller.poll(int(LOOP_TICK_S * 1000)))
            if self._wake_r.fileno() in ready or self._wake_r in ready:
                self._drain_wake()
            if self._stop_requested and self.state != "stopping":
                self._begin_shutdown("the server received a stop signal")
            self._receive_all()
            self._handle_events()
            self._check_clients()
            if self.state == "stopping" and self._shutdown_done():
                break
        self._socket.close(linger=SEND_LINGER_MS)
        if self._source_reader is not None:
            self._source_reader.shutdown(wait=False, cancel_futures=True)
        for worker in self.workers:
            worker.join(timeout=1.0)
        logger.info("stopped (exit code %d)", self._exit_code)
        return self._exit_code

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _receive_all(self) -> None:
        assert self._socket is not None
        for _ in range(RECV_BATCH):  # then let worker events and liveness checks run
            try:
                frames = self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            identity = frames[0].bytes
            client = self.clients.get(identity)
            now = time.monotonic()
            if client is None:
                client = self.clients[identity] = ClientState(now)
            client.last_seen = now
            try:
                message = decode(frames[1:], self.signer, direction="request")
            except ProtocolError as exc:
                logger.info("client %s: rejected message: %s", identity.hex(), exc)
                self._send(identity, error_from_exception(exc))
                continue
            try:
                self._dispatch(identity, client, message)
            except Exception:  # a bug in one request must not stop the server
                logger.exception("client %s: %s %s failed", identity.hex(), message.type,
                                 message.id)
                self._send(identity, error_message("internal", f"the server failed on this "
                                                   f"{message.type}; see its log",
                                                   parent=message.id))

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
            client.heartbeat_interval_s = float(body.get("heartbeat_interval_s",
                                                         HEARTBEAT_INTERVAL_S))
            logger.info("client %s: hello from %r (heartbeat %.1f s)", identity.hex(),
                        client.name, client.heartbeat_interval_s)
            self._send(identity, Message("hello_reply", {
                **version, "server": SERVER_NAME, "state": self.state,
                "model_id": self.model_id if self.model_fps is not None else None,
                "model_fps": self.model_fps, "sample_rate": self.sample_rate,
                "model_image_size": self.model_image_size,
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
            self._prepare(identity, message)

    def _prepare(self, identity: bytes, message: Message) -> None:
        """Read a movie's frames now, so that a generate naming them finds them ready."""
        if not self.reads_local_files:
            self._send(identity, error_message("source_unavailable", NO_LOCAL_FILES,
                                               field="body.source", parent=message.id))
            return
        t0 = time.monotonic()
        future = self._read_source_soon(message.body["source"])
        future.add_done_callback(
            lambda done: self.post(("prepared", identity, message.id, done, time.monotonic() - t0)))

    def _read_source_soon(self, source: dict[str, Any]) -> Future:
        """Start reading source frames on the reader thread (the cache keeps them for the job;
        a job that gets there first waits for this read rather than reading twice)."""
        from v2a_server.source_frames import read_source_frames

        if self._source_reader is None:
            self._source_reader = ThreadPoolExecutor(1, thread_name_prefix="source-read")
        return self._source_reader.submit(read_source_frames, source)

    def _accept(self, identity: bytes, client: ClientState, message: Message) -> None:
        def refuse(code: str, text: str, field: str | None = None) -> None:
            self._send(identity, error_message(code, text, field=field, parent=message.id))

        if self.state == "stopping":
            return refuse("shutting_down", "the server is stopping and accepts no new jobs")
        if self.state == "failed":
            return refuse("model_unavailable", "the model failed to load; see the server log")
        if message.id in client.jobs:
            return refuse("duplicate_id", f"request id {message.id} is already in use by one of "
                          "your jobs", "header.id")
        if message.body["frames"]["encoding"] == "source" and not self.reads_local_files:
            return refuse("source_unavailable", f"{NO_LOCAL_FILES}: send the frames themselves",
                          "body.frames.source")
        job = Job(message.id, identity, message.body, list(message.buffers), self._next_seq)
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
            self._read_source_soon(job.body["frames"]["source"])
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
            job.cancel("cancelled", "cancelled by the client")
        logger.info("client %s: cancel %s (%s)", identity.hex(), target, was)
        self._send(identity, Message("cancel_reply", {"request_id": target, "was": was},
                                     parent=message.id))

    # ---- events from workers ------------------------------------------------------------

    def _handle_events(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            kind = event[0]
            if kind == "loaded":
                worker = event[1]
                self.model_fps, self.sample_rate = worker.model_fps, worker.sample_rate
                self.model_image_size = worker.image_size
                if self.state == "loading" and all(w.state != "loading" for w in self.workers):
                    self.state = "ready"
                    logger.info("ready: model %s on %s", self.model_id,
                                ", ".join(w.device for w in self.workers))
            elif kind == "load_failed":
                logger.error("worker %s could not load the model: %s", event[1].device, event[2])
                if self.state != "stopping":  # a server with a broken device is not usable
                    self._exit_code = 2
                    self._begin_shutdown(f"the model failed to load: {event[2]}",
                                         code="model_unavailable")
            elif kind == "started":
                self._positions.pop(event[1].key, None)
                self._send_positions()
            elif kind == "progress":
                job, body = event[1], event[2]
                if self._is_active(job):
                    self._send(job.client, Message("progress", body, parent=job.request_id))
            elif kind == "result":
                job, body, buffers = event[1], event[2], event[3]
                body["model_id"] = self.model_id
                # Server-clock times (s since start) let a client check FIFO order.
                body["timings_s"]["accepted_at_s"] = job.accepted_at - self.started_at
                body["timings_s"]["started_at_s"] = (job.started_at or job.accepted_at) - self.started_at
                run_s = time.monotonic() - (job.started_at or job.accepted_at)
                self._job_time_s = run_s if self._job_time_s is None else (
                    (1 - JOB_TIME_SMOOTHING) * self._job_time_s + JOB_TIME_SMOOTHING * run_s)
                self._finish(job, Message("result", body, parent=job.request_id,
                                          buffers=buffers))
            elif kind == "prepared":
                identity, request_id, done, seconds = event[1:5]
                self._send(identity, _prepare_reply(request_id, done, seconds))
            elif kind == "failed":
                job, code, text, field_name = event[1:5]
                self._finish(job, error_message(code, text, field=field_name,
                                                parent=job.request_id))

    def _is_active(self, job: Job) -> bool:
        client = self.clients.get(job.client)
        return client is not None and client.jobs.get(job.request_id) is job

    def _finish(self, job: Job, final: Message) -> None:
        """Send the job's final reply and forget it."""
        client = self.clients.get(job.client)
        if client is not None and client.jobs.get(job.request_id) is job:
            del client.jobs[job.request_id]
        self._positions.pop(job.key, None)
        self._send(job.client, final)

    def _send_positions(self) -> None:
        """Tell every waiting job its (new) 1-based queue position."""
        waiting = self.jobs.snapshot()
        n_workers = max(1, sum(w.state != "failed" for w in self.workers))
        for position, job in enumerate(waiting, start=1):
            if self._positions.get(job.key) == position:
                continue
            self._send_queued(job, position, n_workers)

    def _send_queued(self, job: Job, position: int, n_workers: int | None = None) -> None:
        """One "queued" progress event with the job's 1-based position and an ETA."""
        if n_workers is None:
            n_workers = max(1, sum(w.state != "failed" for w in self.workers))
        self._positions[job.key] = position
        eta = None
        if self._job_time_s is not None:
            eta = self._job_time_s * (1 + (position - 1) // n_workers)
        self._send(job.client, Message("progress", {
            "stage": "queued", "queue_position": position, "step": 0, "total_steps": 0,
            "eta_s": eta, "elapsed_s": time.monotonic() - job.accepted_at,
        }, parent=job.request_id))

    # ---- liveness and shutdown ----------------------------------------------------------

    def _check_clients(self) -> None:
        now = time.monotonic()
        for identity, client in list(self.clients.items()):
            silent_s = now - client.last_seen
            if silent_s <= HEARTBEAT_LIVENESS * client.heartbeat_interval_s:
                continue
            if not client.jobs:
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
                    job.cancel("cancelled", reason)
            self._send_positions()

    def _begin_shutdown(self, reason: str, code: str = "shutting_down") -> None:
        self.state = "stopping"
        self._stop_deadline = time.monotonic() + SHUTDOWN_GRACE_S
        waiting = self.jobs.drain()
        for job in waiting:
            self._finish(job, error_message(code, reason, parent=job.request_id))
        running = [job for c in self.clients.values() for job in c.jobs.values()]
        for job in running:
            job.cancel(code, reason)
        logger.info("stopping: %s (%d waiting jobs told, %d running jobs cancelled)", reason,
                    len(waiting), len(running))
        for worker in self.workers:
            worker.stop()

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

    def _send(self, identity: bytes, message: Message) -> None:
        assert self._socket is not None
        try:
            frames = encode(message, self.signer)
        except ProtocolError as exc:  # a server bug: say so instead of sending nonsense
            logger.exception("invalid %s reply to %s", message.type, message.parent)
            frames = encode(error_message("internal", f"the server built an invalid "
                                          f"{message.type}: {exc}", parent=message.parent),
                            self.signer)
        try:
            self._socket.send_multipart([identity, *frames], flags=zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                logger.debug("client %s is gone; dropped a %s", identity.hex(), message.type)
            else:
                logger.warning("client %s: could not send %s: %s", identity.hex(),
                               message.type, exc)

    def _status_body(self) -> dict[str, Any]:
        workers = []
        for worker in self.workers:
            used, total = worker.memory_bytes()
            job = worker.job
            workers.append({"device": worker.device, "state": worker.state,
                            "job_id": job.request_id if job is not None else None,
                            "memory_used_bytes": used, "memory_total_bytes": total})
        return {
            "state": self.state, "server": SERVER_NAME,
            "model_id": self.model_id if self.model_fps is not None else None,
            "model_fps": self.model_fps, "sample_rate": self.sample_rate,
            "model_image_size": self.model_image_size,
            "uptime_s": time.monotonic() - self.started_at,
            "queue_length": len(self.jobs), "queue_max": self.jobs.max_length,
            "clients": len(self.clients), "workers": workers,
        }


# ---- message helpers --------------------------------------------------------------------


def _prepare_reply(request_id: str, done: Future, seconds: float) -> Message:
    from v2a_server.source_frames import SourceUnavailable

    try:
        frames, cached = done.result()
    except SourceUnavailable as exc:
        return error_message("source_unavailable", str(exc), field="body.source",
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


# ---- security helpers -------------------------------------------------------------------


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


# ---- command line -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="v2a-server", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", metavar="DIR",
                        help="model folder (from `v2a create-model` or `v2a convert`), or "
                        "'default' for the embedded model")
    parser.add_argument("--bind", default=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                        help=f"ZeroMQ endpoint to bind (default {DEFAULT_ENDPOINT})")
    parser.add_argument("--device", action="append", default=None,
                        help="device for one model worker; repeat for more (default: cuda if "
                        "available, else cpu)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16"))
    parser.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                        help=f"waiting jobs before `busy` (default {DEFAULT_MAX_QUEUE})")
    parser.add_argument("--model-id", default=None, help="name reported to clients")
    parser.add_argument("--curve-secret-key", default=None, metavar="FILE",
                        help="server.key_secret from `v2a keys`: enables CURVE encryption")
    parser.add_argument("--signing-key-file", default=None, metavar="FILE",
                        help="file holding a shared HMAC key; clients must sign with it")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: cores - 1)")
    parser.add_argument("--no-local-files", action="store_true",
                        help="never read video files named by clients (by default a loopback "
                        "server does, which spares the client decoding and sending frames)")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def default_devices() -> list[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return ["cpu"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.max_queue < 1:
        raise SystemExit("v2a-server: --max-queue must be >= 1")
    from v2a_server.model_store import resolve_model_dir

    try:
        model_dir = str(resolve_model_dir(args.model))
    except FileNotFoundError as exc:
        raise SystemExit(f"v2a-server: {exc}") from None
    signing_key = b""
    if args.signing_key_file:
        with open(args.signing_key_file, "rb") as f:
            signing_key = f.read().strip()
        if not signing_key:
            raise SystemExit(f"v2a-server: {args.signing_key_file} is empty")
    # The embedded model is reported by the name users ask for it with.
    model_id = args.model_id or ("default" if args.model == "default" else None)
    server = FoleyServer(args.bind, model_dir, args.device or default_devices(), args.dtype,
                         args.max_queue, model_id, args.curve_secret_key, signing_key,
                         args.threads, read_local_files=False if args.no_local_files else None)
    context = zmq.Context()
    try:
        server.bind(context)
    except zmq.ZMQError as exc:
        raise SystemExit(f"v2a-server: cannot bind {args.bind}: {exc}") from None
    server.install_signal_handlers()
    server.start_workers()
    code = server.run()
    context.term()
    return code


if __name__ == "__main__":
    sys.exit(main())
