"""The chaos run (bench/bench_chaos.py) as a test: the server killed and restarted at random
points while several keyed clients work and one stops reading; every job ends with exactly one
final reply and every finished take is delivered exactly once."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_chaos.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_chaos", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1])
def test_chaos_run_loses_no_take_and_delivers_none_twice(tiny_model_dir, tmp_path, seed):
    figures = load_bench().run(tiny_model_dir, n_jobs=9, n_clients=3, kills=2, steps=2,
                               seed=seed, stall_s=5.0, deadline_s=240.0, work=tmp_path,
                               out=lambda line: None)
    assert figures["kills"] == 2, figures
    assert figures["no_final_reply"] == 0, figures
    assert figures["placed"] + len(figures["final_errors"]) == 9, figures
    assert figures["lost_takes"] == 0, figures
    assert figures["duplicate_deliveries"] == 0, figures
    assert figures["duplicate_placements"] == 0, figures
