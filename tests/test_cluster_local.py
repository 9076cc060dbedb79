"""`v2a-server --engine ray` with no address: the front-end starts a single-node Ray itself, on
127.0.0.1, serves through the same code path as on a cluster, and leaves no Ray process
behind when it stops. (A module of its own: it runs after tests/test_cluster.py has shut its
cluster down, so two Rays never share this small machine.)"""

from __future__ import annotations

import os
import re
import signal
import time

import psutil
import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before any import of ray
pytest.importorskip("ray.serve", reason="the cluster extra (pip install -e '.[cluster]') is "
                                        "not installed")

from foley_protocol.client import FoleyClient  # noqa: E402
from tests.test_server import (  # noqa: E402
    ServerProcess,
    idle_looks_before_the_result,
    small_frames,
    status,
    wait_ready,
)

pytestmark = pytest.mark.cluster


def processes_of(session: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(session in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_without_an_address_the_front_end_starts_a_local_ray_and_stops_it(tiny_model_dir,
                                                                           tmp_path):
    proc = ServerProcess(tiny_model_dir, tmp_path, "--engine", "ray").start()
    try:
        with FoleyClient(proc.endpoint, client_name="local-ray") as client:
            wait_ready(client, 240.0)
            match = re.search(r"started a local single-node Ray on 127\.0\.0\.1 \(0 GPU; "
                              r"session (\S+)\)", proc.log())
            assert match, proc.log()[-3000:]
            session = os.path.basename(match.group(1))
            assert processes_of(session)  # its Ray runs ...
            workers = status(client)["workers"]
            assert [w["state"] for w in workers] == ["idle"]
            assert workers[0]["node"].startswith("127.0.0.1 ")
            event = client.generate_blocking(small_frames(), timeout_s=120.0, frames_fps=4.0,
                                             duration_s=0.5, caption="a door", steps=2,
                                             guidance=1.0, seed=3)
            assert event.type == "result"
            # a replica seen idle has its result on the way ahead of the status reply
            assert idle_looks_before_the_result(client, 120.0, frames_fps=4.0, duration_s=0.5,
                                                caption="a door", steps=20, guidance=1.0) == []
        proc.signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 30
        while processes_of(session):  # ... and stops with the front-end
            assert time.monotonic() < deadline, [p.info["cmdline"][:2]
                                                 for p in processes_of(session)]
            time.sleep(0.5)
    finally:
        proc.stop()
