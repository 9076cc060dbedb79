"""`v2a-server --engine ray` on a local Ray cluster: scaling, latencies, worker loss, memory.

Starts its own cluster in this process (``ray.cluster_utils.Cluster`` on 127.0.0.1 only: a
head and two worker nodes with one logical GPU each), a real front-end subprocess per
configuration, and measures with the real ``FoleyClient``, all in one run:

- jobs/s with 1 and 2 replicas, and the scaling ratio 2 vs 1 (target >= 1.8), for
  ``stub``: the tiny model with a sleep added to every denoising step (``--stub-step-sleep-s``,
  a stand-in for GPU time: this machine's two shared cores cannot run two CPU-bound replicas
  side by side, a GPU node would), and ``tiny``: the tiny model as it is (CPU-bound here);
- queue wait p50/p95 and first-progress latency (submit -> first running progress);
- cancel latency p50/p95 (cancel sent -> ``cancelled`` received), beside one denoising step;
- worker loss: SIGKILL of the replica running a job -> ``requeued`` seen (detection), ->
  result (recovery), -> two replicas idle again; whether the job still returned its result;
- RSS per Ray node (its raylet and every process under it), of the front-end, in all;
- the front-end's overhead as a fraction of job time (client round trip - time on the
  replica), beside the same figure for ``--engine local`` (target <= 5 %).

No GPU was available where this was written (docs/cluster.md says what was measured).

    python bench/bench_cluster.py [--json OUT] [--jobs 8] [--steps 10] [--sleep-s 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
DURATION_S = 0.5  # seconds of audio per job: the tiny model's CPU time per step stays small


def loopback_env() -> None:
    """Ray on 127.0.0.1 only (it reads the first variable when imported); workers import this
    checkout."""
    from v2a_server.serving.ray_engine import loopback_environment

    loopback_environment()
    paths = [str(REPO), str(REPO / "shared"), *filter(None, os.environ.get(
        "PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))


sys.path[:0] = [str(REPO), str(REPO / "shared")]
loopback_env()

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from foley_protocol.client import FoleyClient  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


class Front:
    """A front-end subprocess; ``stop`` ends it cleanly (which deletes the deployment)."""

    def __init__(self, model_dir: str, log_dir: str, *extra: str):
        self.endpoint = f"tcp://{LOOPBACK}:{free_port()}"
        self.log_path = Path(log_dir) / f"front-{self.endpoint.rsplit(':', 1)[1]}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "v2a_server.commands.serve", "--model", model_dir,
                 "--bind", self.endpoint, "--threads", "1", "--max-queue", "64", *extra],
                stdout=log, stderr=subprocess.STDOUT)
        self.client = FoleyClient(self.endpoint, client_name="bench")
        deadline = time.monotonic() + 300
        while not (self.client.connected and self.client.server_info["state"] == "ready"):
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "front-end not ready in 300 s"
            self.client.poll(0.1)

    def status(self) -> dict:
        return self.client.wait(self.client.status(), timeout_s=10).body

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def run_jobs(client: FoleyClient, n: int, steps: int) -> dict:
    """Submit ``n`` jobs at once; wall time, per-job queue wait, first progress, round trip,
    time on the replica."""
    t0 = time.monotonic()
    sent = {client.generate(frames(), frames_fps=4.0, duration_s=DURATION_S, caption="rain",
                            steps=steps, guidance=3.0, seed=i, timeout_s=600): time.monotonic()
            for i in range(n)}
    first, done, bodies, step_gaps = {}, {}, {}, []
    last_elapsed: dict[str, float] = {}
    while len(done) < n:
        assert time.monotonic() - t0 < 900, "jobs did not finish in 900 s"
        for event in client.poll(0.05):
            rid = event.request_id
            if rid not in sent:
                continue
            stage = event.body.get("stage")
            if event.type == "progress" and stage not in ("queued", None):
                first.setdefault(rid, time.monotonic() - sent[rid])
                if stage == "denoise":
                    if rid in last_elapsed:
                        step_gaps.append(event.body["elapsed_s"] - last_elapsed[rid])
                    last_elapsed[rid] = event.body["elapsed_s"]
            if event.final:
                assert event.type == "result", event.body
                done[rid], bodies[rid] = time.monotonic() - sent[rid], event.body
    wall = time.monotonic() - t0
    timings = [b["timings_s"] for b in bodies.values()]
    return {"jobs": n, "wall_s": wall, "jobs_per_s": n / wall,
            "queue_wait_p50_s": percentile([t["queue_s"] for t in timings], 50),
            "queue_wait_p95_s": percentile([t["queue_s"] for t in timings], 95),
            "first_progress_p50_s": percentile(list(first.values()), 50),
            "step_s": statistics.median(step_gaps) if step_gaps else None,
            "round_trip_s": list(done.values()),
            "replica_s": [t.get("replica_s", t.get("total_s")) for t in timings]}


def overhead(client: FoleyClient, steps: int, repeats: int) -> tuple[float, float]:
    """One job at a time (medians): the front-end's overhead, (client round trip - time on
    the worker) / round trip, and the first-progress latency (submit -> first running
    progress) on an idle engine."""
    fractions, firsts = [], []
    for i in range(repeats):
        t0 = time.monotonic()
        first: list[float] = []

        def on_progress(event, first=first) -> None:
            if not first and event.body.get("stage") not in ("queued", None):
                first.append(time.monotonic() - t0)

        event = client.generate_blocking(frames(), frames_fps=4.0, duration_s=DURATION_S,
                                          caption="rain", steps=steps, guidance=3.0, seed=i,
                                          timeout_s=600, on_progress=on_progress)
        round_trip = time.monotonic() - t0
        worker = event.body["timings_s"].get("replica_s", event.body["timings_s"]["total_s"]
                                             - event.body["timings_s"]["queue_s"])
        fractions.append((round_trip - worker) / round_trip)
        firsts += first
    return statistics.median(fractions), statistics.median(firsts)


def wait_stage(client: FoleyClient, rid: str, stage: str, step: int = 1) -> None:
    deadline = time.monotonic() + 300
    while True:
        assert time.monotonic() < deadline, f"no {stage} {step}"
        for event in client.poll(0.02):
            if event.request_id == rid:
                assert not event.final, event.body
                if event.body.get("stage") == stage and event.body.get("step", 0) >= step:
                    return


def cancel_latencies(front: Front, repeats: int, steps: int) -> list[float]:
    client, found = front.client, []
    for i in range(repeats):
        rid = client.generate(frames(), frames_fps=4.0, duration_s=DURATION_S, caption="rain",
                              steps=steps, guidance=3.0, seed=100 + i, timeout_s=600)
        wait_stage(client, rid, "denoise", 2)
        t0 = time.monotonic()
        client.cancel(rid)
        final = client.wait(rid, timeout_s=120)
        found.append(time.monotonic() - t0)
        assert final.type == "error" and final.body["code"] == "cancelled", final.body
    return found


def idle_replicas(front: Front) -> int:
    return sum(w["state"] == "idle" for w in front.status()["workers"])


def worker_loss(front: Front, steps: int) -> dict:
    client = front.client
    while idle_replicas(front) < 2:
        time.sleep(0.2)
    rid = client.generate(frames(), frames_fps=4.0, duration_s=DURATION_S, caption="rain",
                          steps=steps, guidance=3.0, seed=5, timeout_s=600)
    wait_stage(client, rid, "denoise", 1)
    victim = next(w for w in front.status()["workers"] if w["job_id"] == rid)
    t_kill = time.monotonic()
    os.kill(victim["pid"], signal.SIGKILL)
    detected = result_at = None
    final = None
    while final is None:
        assert time.monotonic() - t_kill < 300, "no final reply after the kill"
        for event in client.poll(0.02):
            if event.request_id != rid:
                continue
            if event.body.get("stage") == "requeued" and detected is None:
                detected = time.monotonic() - t_kill
            if event.final:
                final, result_at = event, time.monotonic() - t_kill
    while idle_replicas(front) < 2:
        assert time.monotonic() - t_kill < 300, "not back to 2 replicas"
        time.sleep(0.1)
    rerun_s = final.body["timings_s"].get("replica_s") if final.type == "result" else None
    return {"worker_loss_detection_s": detected, "worker_loss_recovery_s": result_at,
            "worker_loss_result": final.type == "result",
            # what the loss cost beyond running the job again from the start
            "worker_loss_beyond_rerun_s": None if rerun_s is None else result_at - rerun_s,
            "full_strength_after_kill_s": time.monotonic() - t_kill}


def tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return 0


def node_memory(cluster) -> dict:
    nodes = [("head", cluster.head_node), *[(f"worker{i}", n) for i, n in
                                             enumerate(cluster.worker_nodes)]]
    found = {}
    for name, node in nodes:
        pids = {p.process.pid for procs in node.all_processes.values() for p in procs}
        found[name] = sum(tree_rss(pid) for pid in pids)
    return found


def all_ray_rss(cluster) -> tuple[int, int]:
    session = cluster.head_node.get_session_dir_path()
    procs = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(session in part for part in proc.info["cmdline"] or []) or \
                    (proc.info["cmdline"] or [""])[0].startswith("ray::"):
                procs.append(proc)
        except psutil.Error:
            continue
    rss = 0
    for proc in procs:
        try:
            rss += proc.memory_info().rss
        except psutil.Error:
            pass
    return rss, len(procs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default=None, metavar="OUT")
    parser.add_argument("--jobs", type=int, default=8, help="jobs per scaling run")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per job")
    parser.add_argument("--sleep-s", type=float, default=0.5,
                        help="the stub's sleep per denoising step (GPU time stand-in)")
    parser.add_argument("--cancels", type=int, default=8)
    args = parser.parse_args(argv)

    import ray
    import torch
    from ray.cluster_utils import Cluster

    from v2a_server.configs import build_pipeline

    torch.set_num_threads(1)
    work = tempfile.mkdtemp(prefix="bench-cluster-")
    model_dir = os.path.join(work, "tiny-model")
    build_pipeline("tiny", seed=0).save_pretrained(model_dir)
    report: dict = {"gpu": torch.cuda.is_available(), "steps": args.steps,
                    "stub_step_sleep_s": args.sleep_s, "jobs": args.jobs,
                    "cpu_count": os.cpu_count()}
    t0 = time.monotonic()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": LOOPBACK, "include_dashboard": False,
        "object_store_memory": 80 * 2**20})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, num_gpus=1, node_ip_address=LOOPBACK,
                             object_store_memory=80 * 2**20)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, _node_ip_address=LOOPBACK, logging_level="WARNING")
        addresses = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
        assert addresses == {LOOPBACK}, f"a Ray node off loopback: {addresses}"
        report["cluster_start_s"] = time.monotonic() - t0
        ray_args = ["--engine", "ray", "--ray-address", cluster.address]
        for kind, extra in (("stub", ["--stub-step-sleep-s", str(args.sleep_s)]),
                            ("tiny", [])):
            for replicas in (1, 2):
                t_deploy = time.monotonic()
                front = Front(model_dir, work, *ray_args, "--replicas", str(replicas), *extra)
                try:
                    report[f"{kind}_deploy_{replicas}_s"] = time.monotonic() - t_deploy
                    run_jobs(front.client, 2, args.steps)  # warm-up
                    result = run_jobs(front.client, args.jobs, args.steps)
                    report[f"{kind}_{replicas}"] = {k: v for k, v in result.items()
                                                   if not isinstance(v, list)}
                    print(kind, replicas, report[f"{kind}_{replicas}"], flush=True)
                    if kind == "tiny" and replicas == 1:
                        (report["frontend_overhead_fraction"],
                         report["first_progress_idle_s"]) = overhead(front.client,
                                                                     args.steps, 5)
                    if kind == "stub" and replicas == 2:
                        report["cancel_latencies_s"] = cancel_latencies(
                            front, args.cancels, 200)
                        report.update(worker_loss(front, args.steps))
                        report["rss_per_node_bytes"] = node_memory(cluster)
                        rss, count = all_ray_rss(cluster)
                        report["ray_rss_bytes"], report["ray_processes"] = rss, count
                        report["frontend_rss_bytes"] = tree_rss(front.proc.pid)
                finally:
                    front.stop()
            report[f"scaling_ratio_2{'' if kind == 'stub' else '_tiny'}"] = (
                report[f"{kind}_2"]["jobs_per_s"] / report[f"{kind}_1"]["jobs_per_s"])
    finally:
        ray.shutdown()
        cluster.shutdown()
    # the local engine's overhead, the baseline for the front-end's
    local = Front(model_dir, work)
    try:
        (report["local_overhead_fraction"],
         report["local_first_progress_idle_s"]) = overhead(local.client, args.steps, 5)
    finally:
        local.stop()
    cancels = report["cancel_latencies_s"]
    report["cancel_latency_p50_s"] = percentile(cancels, 50)
    report["cancel_latency_p95_s"] = percentile(cancels, 95)
    report["step_s"] = report["tiny_1"]["step_s"]  # one denoising step of the tiny model
    report["stub_step_s"] = report["stub_1"]["step_s"]
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
