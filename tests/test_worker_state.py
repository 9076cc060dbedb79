"""A worker's state as a status reads it: a worker seen idle has posted its job's final reply
(the CI symptom without it: a client told "idle" fetched its take and heard "running")."""

from __future__ import annotations

import threading
import time

from foley_protocol.client import build_generate
from tests.test_server import QUICK, small_frames
from v2a_server.serving.engine import LocalEngine
from v2a_server.serving.events import JobResult, WorkerLoaded
from v2a_server.serving.jobs import Job, JobQueue

POST_DELAY_S = 0.5  # a slow post: the window in which a status could see idle too early


def test_a_worker_seen_idle_has_posted_its_result(tiny_model_dir):
    posted: list[object] = []
    loaded = threading.Event()

    def post(event) -> None:
        if isinstance(event, WorkerLoaded):
            loaded.set()
        if isinstance(event, JobResult):
            time.sleep(POST_DELAY_S)  # the loop's queue is slow to take it
        posted.append(event)

    jobs = JobQueue(4)
    engine = LocalEngine(str(tiny_model_dir), ["cpu"], num_threads=1)
    engine.start(jobs, post)
    try:
        assert loaded.wait(120), "the worker did not load the tiny model"
        message = build_generate(small_frames(), **QUICK, seed=5)
        job = Job(message.id, b"client", message.body, list(message.buffers), 1,
                  review_follows=True)
        assert jobs.put(job)
        looks = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            [worker] = engine.workers()
            has_result = any(isinstance(e, JobResult) for e in posted)
            looks.append((worker.state, has_result))
            if worker.state == "idle" and any(state == "busy" for state, _ in looks):
                break
            time.sleep(0.005)
        assert any(state == "busy" for state, _ in looks), "the job never ran"
        assert looks[-1][0] == "idle", looks[-5:]
        # every look that saw the worker idle after its job saw the result posted already
        after_busy = looks[next(i for i, (state, _) in enumerate(looks) if state == "busy"):]
        assert all(has_result for state, has_result in after_busy if state == "idle"), \
            [look for look in after_busy if look[0] == "idle"][:3]
    finally:
        engine.stop()
        engine.join(5)
