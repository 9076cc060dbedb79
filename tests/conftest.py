"""Shared fixtures: a tiny STA-V2A pipeline (built once per session) and the shared clips."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "vggsound"


def shared_clip(name: str) -> Path:
    """Path of a clip in ../shared/data/vggsound, or skip the test saying why."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"shared clip {path} is absent (../shared/data/vggsound is not beside this checkout)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny pipeline folder (same classes as the real model)."""
    import torch

    from v2a_server.configs import build_pipeline

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("tiny-model")
    build_pipeline("tiny", seed=0).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model_dir):
    from v2a_server.model_store import load_pipeline

    return load_pipeline(tiny_model_dir)


_PEAK_RESET_PROBE = """
import mmap
import numpy as np
from v2a_server.pipelines import device_memory as dm
region = mmap.mmap(-1, 256 * 2**20)
pages = np.frombuffer(region, np.uint8)[::4096]
pages[:] = 1
del pages
region.close()
high = dm.peak_memory_bytes("cpu")
dm.reset_peak_memory("cpu")
low = dm.peak_memory_bytes("cpu")  # None: the reset did not take
print(int(low is not None and high - low > 200 * 2**20))
"""


@pytest.fixture(scope="session")
def cpu_peak_reset_works() -> bool:
    """Whether this kernel resets a process's peak RSS through /proc/self/clear_refs (Linux
    does; some sandboxes accept the write and keep the peak), probed in a fresh process."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _PEAK_RESET_PROBE], capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.strip() == "1"
