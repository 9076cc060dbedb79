"""``v2a-server``: the Foley generation server (ZeroMQ ROUTER + FIFO queue + model workers).

The command line of the server: parses the options, builds the engine (``--engine local``: one
model worker per device in this process; ``--engine ray``: one replica per GPU of a Ray Serve
cluster, docs/cluster.md) and the socket loop (``v2a_server.serving``), binds, and runs until a
stop signal.
Not a ``v2a`` sub-command: it is the ``v2a-server`` script (``python -m
v2a_server.commands.serve``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import zmq

from foley_protocol.protocol import DEFAULT_ENDPOINT
from v2a_server.model_store import DTYPE_NAMES, OFFLOAD_MODES
from v2a_server.serving.engine import Engine, LocalEngine
from v2a_server.serving.outbox import DEFAULT_CLIENT_BUDGET_MB
from v2a_server.serving.review import REVIEW_STORE_MAX_BYTES
from v2a_server.serving.server import DEFAULT_MAX_QUEUE, FoleyServer
from v2a_server.serving.spool import (
    DEFAULT_SPOOL_MAX_MB,
    DEFAULT_SPOOL_TTL_H,
    ResultSpool,
    default_spool_dir,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="v2a-server", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", metavar="NAME|DIR",
                        help="model folder (from `v2a create-model` or `v2a convert`), the name of "
                        "an installed model (`v2a model pull sta-v2a`), or 'default' for the embedded model")
    parser.add_argument("--bind", default=DEFAULT_ENDPOINT, metavar="ENDPOINT",
                        help=f"ZeroMQ endpoint to bind (default {DEFAULT_ENDPOINT})")
    parser.add_argument("--engine", default="local", choices=("local", "ray"),
                        help="where jobs run: 'local' (model workers in this process, one per "
                        "--device) or 'ray' (one replica per GPU of a Ray cluster; needs "
                        "pip install -e '.[cluster]', docs/cluster.md)")
    parser.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                        help="with --engine ray: the Ray cluster's head (its GCS address); "
                        "default: start a single-node Ray on this machine, on 127.0.0.1")
    parser.add_argument("--replicas", type=int, default=None,
                        help="with --engine ray: replicas to run (default: one per GPU of the "
                        "cluster; one without a GPU)")
    parser.add_argument("--stub-step-sleep-s", type=float, default=0.0,
                        help=argparse.SUPPRESS)  # bench/bench_cluster.py: GPU time stand-in
    parser.add_argument("--device", action="append", default=None,
                        help="device for one model worker; repeat for more (default: cuda if "
                        "available, else cpu)")
    parser.add_argument("--dtype", default="auto", choices=DTYPE_NAMES,
                        help="precision of the model (default auto: float16 on a GPU, float32 "
                        "on CPU; bfloat16 for cards that have it)")
    parser.add_argument("--offload", default="none", choices=OFFLOAD_MODES,
                        help="'model': keep the components in RAM and move one at a time to the "
                        "GPU (for cards smaller than the model; slower)")
    parser.add_argument("--text-encoder-cpu", action="store_true",
                        help="run the text encoder on the CPU (float32), sparing GPU memory")
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
    parser.add_argument("--media-root", action="append", default=[], metavar="DIR",
                        help="read only files inside DIR (repeatable); default: any file this "
                        "server's user can read (docs/protocol.md section 8)")
    parser.add_argument("--client-budget-mb", type=float, default=DEFAULT_CLIENT_BUDGET_MB,
                        help="memory the replies waiting for one client that does not read may "
                        "hold; its further results wait in the spool on disk (default "
                        f"{DEFAULT_CLIENT_BUDGET_MB})")
    parser.add_argument("--spool-dir", default=None, metavar="DIR",
                        help="where finished takes wait for a fetch: results of clients with a "
                        f"client key, and overflow (default {default_spool_dir()})")
    parser.add_argument("--spool-max-mb", type=float, default=DEFAULT_SPOOL_MAX_MB,
                        help="the spool's size; the oldest takes are deleted beyond it "
                        f"(default {DEFAULT_SPOOL_MAX_MB})")
    parser.add_argument("--spool-ttl-h", type=float, default=DEFAULT_SPOOL_TTL_H,
                        help="hours a take waits in the spool before it is deleted "
                        f"(default {DEFAULT_SPOOL_TTL_H:g})")
    parser.add_argument("--review-store-mb", type=float, default=REVIEW_STORE_MAX_BYTES / 2**20,
                        help="memory the newest takes' review data may hold so that a redraw "
                        "of their sync picture needs no new job; the oldest leave first "
                        f"(default {REVIEW_STORE_MAX_BYTES / 2**20:g})")
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


def build_engine(args: argparse.Namespace, model_dir: str, devices: list[str]) -> Engine:
    if args.engine == "local":
        return LocalEngine(model_dir, devices, args.dtype, args.threads, offload=args.offload,
                           text_encoder_cpu=args.text_encoder_cpu)
    if args.device:
        raise SystemExit("v2a-server: --device is for --engine local; a Ray replica uses the "
                         "GPU Ray gives it")
    from v2a_server.serving.ray_engine import (
        RayEngine,
        driver_environment,
        is_loopback_address,
        loopback_environment,
    )

    driver_environment()
    if args.ray_address is None or is_loopback_address(args.ray_address):
        loopback_environment()  # read by Ray when imported
    try:
        import ray.serve  # noqa: F401  (the optional extra: say so now, not in a thread)
    except ImportError as exc:
        raise SystemExit(f"v2a-server: --engine ray needs Ray Serve: pip install -e "
                         f"'.[cluster]' ({exc})") from None
    return RayEngine(model_dir, args.ray_address, replicas=args.replicas, dtype=args.dtype,
                     num_threads=args.threads, offload=args.offload,
                     text_encoder_cpu=args.text_encoder_cpu,
                     stub_step_sleep_s=args.stub_step_sleep_s)


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
    model_id = args.model_id or ("default" if args.model == "default"
                                 else os.path.basename(os.path.normpath(model_dir)))
    if args.client_budget_mb <= 0 or args.spool_max_mb <= 0 or args.spool_ttl_h <= 0:
        raise SystemExit("v2a-server: --client-budget-mb, --spool-max-mb and --spool-ttl-h "
                         "must be > 0")
    if args.review_store_mb < 0:
        raise SystemExit("v2a-server: --review-store-mb must be >= 0 (0: no redraws)")
    if args.engine != "ray" and (args.ray_address or args.replicas or args.stub_step_sleep_s):
        raise SystemExit("v2a-server: --ray-address, --replicas and --stub-step-sleep-s need "
                         "--engine ray")
    if args.replicas is not None and args.replicas < 1:
        raise SystemExit("v2a-server: --replicas must be >= 1")
    devices = args.device or (["cuda"] if args.engine == "ray" else default_devices())
    if args.offload != "none" and "cpu" in devices:
        raise SystemExit("v2a-server: --offload model needs a GPU device (--device cuda): on the "
                         "CPU the whole model already lives in main memory")
    try:
        spool = ResultSpool(args.spool_dir or default_spool_dir(),
                            int(args.spool_max_mb * 2**20), args.spool_ttl_h * 3600.0)
    except OSError as exc:
        raise SystemExit(f"v2a-server: cannot use the spool folder: {exc}") from None
    engine = build_engine(args, model_dir, devices)
    server = FoleyServer(args.bind, engine, args.max_queue, model_id, args.curve_secret_key,
                         signing_key, read_local_files=False if args.no_local_files else None,
                         media_roots=tuple(args.media_root), spool=spool,
                         client_budget_bytes=int(args.client_budget_mb * 2**20),
                         review_store_bytes=int(args.review_store_mb * 2**20))
    context = zmq.Context()
    try:
        server.bind(context)
    except zmq.ZMQError as exc:
        raise SystemExit(f"v2a-server: cannot bind {args.bind}: {exc}") from None
    server.install_signal_handlers()
    server.start_engine()
    code = server.run()
    context.term()
    return code


if __name__ == "__main__":
    sys.exit(main())
