"""Chaos run (issue 14), in the spirit of the ZeroMQ guide's crashing and stalling servers.

A bounded run: N jobs from several clients (each with its own client key, a few jobs open at
a time) against a real ``v2a-server`` with a tiny model and few steps, while the server is
killed (SIGKILL) and restarted at random points and one client stops reading for a while. Each
client acts as the add-on does: on a reconnect it ``fetch``-es every job it has no final
reply for, places what comes back once (by job), and submits again, same seed, what the server
no longer knows (``unknown``). At the end every job must have exactly one final reply, and
every take the server finished must have been delivered exactly once.

Prints: jobs, kills, max server RSS, worst time to final reply, lost takes, duplicate
deliveries. Exit code 1 when a take is lost or delivered twice or a job has no final reply.

    python bench/bench_chaos.py --jobs 24 --clients 3 --kills 3
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from foley_protocol.client import FoleyClient

RETRY_CODES = ("server_lost", "shutting_down", "timeout")  # the job may be re-asked for


@dataclass
class ChaosJob:
    """One take the editor asked for; its request id changes when it is submitted again."""

    number: int
    seed: int
    request_id: str | None = None
    first_sent_at: float | None = None
    final: str | None = None  # "placed" or an error code the editor can act on
    final_at: float | None = None
    placed: int = 0
    attempts: int = 0
    awaiting_fetch: bool = False


@dataclass
class ChaosClient:
    """An add-on-like client: a few jobs open at a time, fetch on reconnect, retry unknown."""

    index: int
    endpoint: str
    jobs: list[ChaosJob]
    steps: int
    open_limit: int = 2
    client: FoleyClient = field(init=False)
    by_request: dict[str, ChaosJob] = field(default_factory=dict)
    fetches: dict[str, ChaosJob] = field(default_factory=dict)
    received: Counter = field(default_factory=Counter)  # request id -> results received
    duplicates: int = 0
    stalled_until: float = 0.0

    def __post_init__(self) -> None:
        self.key = f"chaos-{self.index}-{os.getpid()}"
        self.client = FoleyClient(self.endpoint, client_name=f"chaos {self.index}",
                                  client_key=self.key)
        self.frames = np.random.default_rng(self.index).integers(0, 256, (2, 32, 32, 3),
                                                                 dtype=np.uint8)

    def done(self) -> bool:
        return all(job.final is not None for job in self.jobs)

    def step(self, now: float) -> None:
        if now < self.stalled_until:
            return  # not reading, not pinging: the server sees a silent, full connection
        for event in self.client.poll(0.0):
            self._on_event(event, time.monotonic())
        if not self.client.connected:
            return
        open_jobs = [j for j in self.jobs if j.request_id is not None and j.final is None]
        for job in self.jobs:
            if len(open_jobs) >= self.open_limit:
                break
            if job.request_id is None:
                self._submit(job)
                open_jobs.append(job)

    def _submit(self, job: ChaosJob) -> None:
        job.request_id = self.client.generate(
            self.frames, frames_fps=4.0, duration_s=1.0, caption=f"chaos {job.number}",
            steps=self.steps, guidance=1.0, seed=job.seed, timeout_s=300.0)
        job.first_sent_at = job.first_sent_at or time.monotonic()
        job.attempts += 1
        job.awaiting_fetch = False
        self.by_request[job.request_id] = job

    def _on_event(self, event, now: float) -> None:
        if event.type == "connected":
            for job in self.jobs:
                if job.awaiting_fetch and job.final is None:
                    job.awaiting_fetch = False
                    self.fetches[self.client.fetch(job.request_id, timeout_s=300.0)] = job
            return
        if event.request_id in self.fetches:
            job = self.fetches.pop(event.request_id)
            if event.type == "fetch_reply" and event.body["was"] == "unknown":
                self._submit(job)  # lost with the server: the same settings and seed again
            elif event.type == "error":
                job.awaiting_fetch = True  # ask again on the next connection
            return
        job = self.by_request.get(event.request_id)
        if job is None or not event.final or event.type == "review":
            return  # a review (1.4) follows a take placed already
        if event.type == "result":
            self.received[event.request_id] += 1
            if job.placed:
                self.duplicates += 1
                return
            job.placed += 1
            job.final, job.final_at = "placed", now
        elif event.body["code"] in RETRY_CODES:
            if event.request_id == job.request_id and job.final is None:
                job.awaiting_fetch = True
        elif job.final is None:
            job.final, job.final_at = event.body["code"], now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model_dir: Path, work: Path):
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.spool = work / "spool"
        self.log_path = work / "server.log"
        self.command = [sys.executable, "-m", "v2a_server.commands.serve", "--model",
                        str(model_dir), "--bind", self.endpoint, "--threads", "1",
                        "--max-queue", "64", "--spool-dir", str(self.spool)]
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    def ready_count(self) -> int:
        return self.log_path.read_text(errors="replace").count(" ready: model")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def rss(self) -> int:
        try:
            return psutil.Process(self.proc.pid).memory_info().rss if self.proc else 0
        except psutil.Error:
            return 0


def build_tiny_model(folder: Path) -> Path:
    from v2a_server.configs import build_pipeline

    build_pipeline("tiny", seed=0).save_pretrained(str(folder))
    return folder


def spooled_request_ids(spool: Path, key: str) -> set[str]:
    """The request ids of every take the server finished for ``key`` (its spool)."""
    from v2a_server.serving.spool import ResultSpool

    index = ResultSpool(spool, max_bytes=2**40, ttl_s=1e9)
    owner = f"key:{key}"
    return {job_id for (o, job_id) in index._index if o == owner}


def run(model_dir: Path | None = None, n_jobs: int = 24, n_clients: int = 3, kills: int = 3,
        steps: int = 2, seed: int = 0, stall_s: float = 5.0, deadline_s: float = 300.0,
        work: Path | None = None, out=print) -> dict:
    """One chaos run; returns its figures (also printed through ``out``)."""
    rng = random.Random(seed)
    work = Path(work or tempfile.mkdtemp(prefix="v2a-chaos-"))
    model_dir = model_dir or build_tiny_model(work / "tiny-model")
    server = Server(model_dir, work)
    server.start()
    jobs = [ChaosJob(n, seed=rng.randrange(2**31)) for n in range(n_jobs)]
    clients = [ChaosClient(i, server.endpoint, jobs[i::n_clients], steps)
               for i in range(n_clients)]
    kills_done, max_rss = 0, 0
    started = time.monotonic()
    next_kill: float | None = None
    stall_at = started + rng.uniform(3.0, 10.0)
    stalled = False
    restart_at: float | None = None
    try:
        while not all(c.done() for c in clients):
            now = time.monotonic()
            if now - started > deadline_s:
                break
            if restart_at is not None and now >= restart_at:
                server.start()
                restart_at = None
            finals = sum(j.final is not None for j in jobs)
            due = finals >= (kills_done + 1) * n_jobs / (kills + 1)  # kills spread over the run
            if next_kill is None and restart_at is None and due \
                    and server.ready_count() == server.starts:
                next_kill = now + rng.uniform(0.0, 0.5)  # a random point of a job
            if (next_kill is not None and now >= next_kill and kills_done < kills
                    and restart_at is None):
                server.kill()
                kills_done += 1
                next_kill = None
                restart_at = now + rng.uniform(0.0, 1.5)
            if not stalled and now >= stall_at:
                clients[0].stalled_until = now + stall_s
                stalled = True
            for client in clients:
                client.step(now)
            max_rss = max(max_rss, server.rss())
            time.sleep(0.01)
    finally:
        for client in clients:
            client.client.close()
        server.kill()
    lost = 0
    for client in clients:
        # a take the server finished and kept, for a job the client never got a final reply for
        finished = spooled_request_ids(server.spool, client.key)
        open_ids = {job.request_id for job in client.jobs if job.final is None}
        lost += len(finished & open_ids)
        lost += sum(1 for rid in finished if client.received[rid] == 0
                    and client.by_request[rid].final != "placed")
    figures = {
        "jobs": n_jobs,
        "clients": n_clients,
        "kills": kills_done,
        "resubmitted": sum(j.attempts - 1 for j in jobs),
        "max_rss_mb": round(max_rss / 2**20, 1),
        "worst_final_s": round(max(((j.final_at or time.monotonic()) - (j.first_sent_at or started)
                                    for j in jobs), default=0.0), 2),
        "no_final_reply": sum(j.final is None for j in jobs),
        "placed": sum(j.final == "placed" for j in jobs),
        "final_errors": sorted(j.final for j in jobs if j.final not in (None, "placed")),
        "lost_takes": lost,
        "duplicate_deliveries": sum(c.duplicates for c in clients)
                                + sum(n - 1 for c in clients for n in c.received.values() if n > 1),
        "duplicate_placements": sum(max(0, j.placed - 1) for j in jobs),
        "seconds": round(time.monotonic() - started, 1),
        # times a client's pipe was full and its replies waited in its outbox (server log)
        "outbox_waits": server.log_path.read_text(errors="replace").count("is not reading"),
    }
    for name, value in figures.items():
        out(f"{name:22s} {value}")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: a "
                        "freshly built tiny model)")
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stall-s", type=float, default=5.0,
                        help="how long one client stops reading")
    args = parser.parse_args(argv)
    figures = run(args.model, args.jobs, args.clients, args.kills, args.steps, args.seed,
                  args.stall_s)
    bad = figures["lost_takes"] or figures["duplicate_deliveries"] or figures["no_final_reply"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
