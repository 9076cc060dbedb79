"""Protocol 1.5 (a cluster's lost workers) as each client version receives it, without Ray: a
1.5 client gets ``requeued``, ``worker_lost`` and the workers' ``node``/``pid``; an older one
gets the nearest thing it knows (``queued``, ``generation_failed``) and no new field, and
every reply still decodes on its side. The end-to-end versions are in tests/test_cluster.py."""

from __future__ import annotations

import pytest

from foley_protocol.protocol import (
    MINOR_ADDITIONS,
    Message,
    ProtocolError,
    decode,
    encode,
    error_message,
    for_minor,
)
from v2a_server.serving.events import REQUEUED_STAGE
from v2a_server.serving.server import for_client_minor, progress_body

WORKER = {"device": "cuda gpu 0", "state": "busy", "job_id": "a" * 32,
          "memory_used_bytes": None, "memory_total_bytes": None,
          "job_peak_memory_bytes": None, "last_job_id": None,
          "last_job_peak_memory_bytes": None, "node": "10.0.0.21 0123456789ab", "pid": 4242}


def status_reply() -> Message:
    return Message("status_reply", {
        "state": "ready", "server": "v2a-server", "model_id": "m", "model_fps": 4.0,
        "sample_rate": 16000, "model_image_size": 48, "model_scope": None, "uptime_s": 1.0,
        "queue_length": 0, "queue_max": 16, "clients": 1, "workers": [WORKER]},
        parent="b" * 32)


def round_trip(message: Message) -> Message:
    """What the client's side decodes (its schema checks included)."""
    return decode(encode(message), direction="reply")


def test_the_additions_of_1_5_are_declared():
    assert set(MINOR_ADDITIONS[5]) == {"progress.stage=requeued", "error.code=worker_lost",
                                       "status_reply.workers.node", "status_reply.workers.pid"}


def test_a_1_5_client_gets_requeued_worker_lost_and_the_worker_fields_unchanged():
    requeued = Message("progress", progress_body(REQUEUED_STAGE, 1, 0, 0, None, 2.0),
                       parent="b" * 32)
    lost = error_message("worker_lost", "lost twice", parent="b" * 32)
    for message in (requeued, lost, status_reply()):
        assert for_client_minor(message, 5) is message
        assert round_trip(message).body == message.body


@pytest.mark.parametrize("minor", [0, 1, 3, 4])
def test_an_older_client_gets_queued_generation_failed_and_no_worker_fields(minor):
    requeued = Message("progress", progress_body(REQUEUED_STAGE, 1, 0, 0, None, 2.0),
                       parent="b" * 32)
    with pytest.raises(ProtocolError):  # for_minor alone refuses: the value is newer
        for_minor(requeued, minor)
    sent = round_trip(for_client_minor(requeued, minor))
    assert sent.body["stage"] == "queued" and sent.body["queue_position"] == 1
    lost = round_trip(for_client_minor(error_message("worker_lost", "lost twice",
                                                     parent="b" * 32), minor))
    assert lost.body["code"] == "generation_failed" and lost.body["message"] == "lost twice"
    workers = round_trip(for_client_minor(status_reply(), minor)).body["workers"]
    assert "node" not in workers[0] and "pid" not in workers[0]
    assert workers[0]["device"] == "cuda gpu 0"


def test_other_refusals_are_still_refused():
    fetch_reply = Message("fetch_reply", {"request_id": "a" * 32, "was": "done"},
                          parent="b" * 32)
    with pytest.raises(ProtocolError):
        for_client_minor(fetch_reply, 2)
