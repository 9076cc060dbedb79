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
