"""bench/gpu_check.py runs as is: its --quick mode (tiny config, 2 steps) on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


# The compiled run spends minutes compiling on a loaded 2-core CPU (250 s measured here).
@pytest.mark.parametrize("compile_mode", ["off", pytest.param("only", marks=pytest.mark.slow)])
def test_gpu_check_quick_mode_runs_on_cpu_and_writes_its_table(tmp_path, compile_mode):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--compile", compile_mode,
         "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    mode = "eager" if compile_mode == "off" else "compiled"
    assert report["config"] == "tiny" and report["dtype"] == "torch.float32"
    assert list(report["results"]) == [mode]
    result = report["results"][mode]
    assert result["step_s"] > 0 and result["vae_decode_s"] > 0 and result["vocoder_s"] > 0
    for sampler in ("dpmpp", "ddpm"):
        assert result[sampler]["samples"] == 163840  # 10.24 s at 16 kHz
        assert result[sampler]["peak_bytes"] > 0 and result[sampler]["audio_finite"]
    assert "seconds per denoising step" in proc.stdout and mode in proc.stdout
