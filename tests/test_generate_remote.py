"""`v2a generate --server`: the CLI through foley_protocol's client against a real server."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import soundfile as sf

from tests.conftest import shared_clip
from tests.test_server import ServerProcess


def test_generate_through_a_running_server_matches_the_in_process_result(tiny_model_dir, tmp_path):
    clip = shared_clip("0_ixmalQrig_000100.mp4")
    server = ServerProcess(tiny_model_dir, tmp_path).start()
    try:
        server.wait_listening()
        common = ["--caption", "a dog barking", "--steps", "2", "--seed", "4", "--duration", "2.5"]
        remote = subprocess.run(
            [sys.executable, "-m", "v2a_server.cli", "generate", str(clip), "--server", server.endpoint,
             "--out", str(tmp_path / "remote.wav"), "--onsets", str(tmp_path / "remote.json"), *common],
            capture_output=True, text=True, timeout=300,
        )
        assert remote.returncode == 0, remote.stderr[-2000:] + server.log()[-2000:]
    finally:
        server.stop()
    local = subprocess.run(
        [sys.executable, "-m", "v2a_server.cli", "generate", str(clip), "--model", str(tiny_model_dir),
         "--out", str(tmp_path / "local.wav"), "--onsets", str(tmp_path / "local.json"), *common],
        capture_output=True, text=True, timeout=300,
    )
    assert local.returncode == 0, local.stderr[-2000:]
    a, sr_a = sf.read(tmp_path / "remote.wav", dtype="float32")
    b, sr_b = sf.read(tmp_path / "local.wav", dtype="float32")
    assert sr_a == sr_b == 16000 and a.shape == b.shape == (40000,)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * max(1e-12, float(np.abs(b).max())) + 1e-12)
    ra, rb = json.loads((tmp_path / "remote.json").read_text()), json.loads((tmp_path / "local.json").read_text())
    assert ra["seed"] == rb["seed"] == 4
    assert [o["time_s"] for o in ra["onsets"]] == [o["time_s"] for o in rb["onsets"]]
    # random tiny weights make a take of nothing (~1e-8): both ways say so, in the same words
    silent = [[w for w in record["warnings"] if "near-silent" in w] for record in (ra, rb)]
    assert silent[0] and silent[0] == silent[1], (ra["warnings"], rb["warnings"])
    assert "near-silent" in remote.stderr and "near-silent" in local.stderr


def test_generate_reports_an_unreachable_server_clearly(tmp_path):
    clip = shared_clip("0_ixmalQrig_000100.mp4")
    proc = subprocess.run(
        [sys.executable, "-m", "v2a_server.cli", "generate", str(clip), "--server", "tcp://127.0.0.1:9",
         "--caption", "x", "--out", str(tmp_path / "x.wav")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "tcp://127.0.0.1:9" in proc.stderr
    assert not (tmp_path / "x.wav").exists()
