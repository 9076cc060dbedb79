"""What the job loop tells the editor: job status lines, failures, the connection line and
where Generate gets a strip's frames; ``report`` shows one in the status bar.

Every failure of a job ends in ``NOTHING_CHANGED``: jobs fail before they write anything.
"""

from __future__ import annotations

import logging

import bpy

from . import sync

logger = logging.getLogger(__name__)

NOTHING_CHANGED = "nothing was changed"


def unchanged(text: str) -> str:
    """``text`` as a job failure: the project was left as it was."""
    return f"{text}; {NOTHING_CHANGED}"


# ---- one job --------------------------------------------------------------------------------


def capture_status(done: int, total: int, eta_s: float | None) -> str:
    return " · ".join(x for x in (f"capturing {done}/{total}", sync.format_eta(eta_s)) if x)


def server_status(progress: dict, fallback_stage: str) -> tuple[float, str]:
    """(fraction, text) of a job the server has queued or runs (its last progress reply)."""
    stage = progress.get("stage", fallback_stage)
    eta = sync.format_eta(progress.get("eta_s"))
    if stage == "queued":
        text = f"queued, position {progress.get('queue_position', '?')}"
        fraction = 0.0
    elif progress.get("total_steps"):
        text = f"{stage} {progress.get('step', 0)}/{progress['total_steps']}"
        fraction = progress.get("step", 0) / progress["total_steps"]
    else:
        text, fraction = stage, 0.0
    return fraction, " · ".join(x for x in (text, eta) if x)


def placed(names: list[str], onsets: int, seed, warnings: list[str]) -> str:
    text = f"placed {', '.join(names)} ({onsets} onsets, seed {seed})"
    if warnings:
        text += "; " + "; ".join(warnings)
    return text


def near_silent_take(loudest_dbfs: float) -> str:
    """The Takes panel's line for a take the server found near-silent."""
    return (f"Near-silent take (loudest {loudest_dbfs:.0f} dBFS): the model heard nothing it "
            "knows in this picture")


def recovered(count: int) -> str:
    """Takes of jobs sent before the .blend was closed, placed now."""
    takes = "take" if count == 1 else "takes"
    return f"Placed {count} {takes} that finished while Blender was closed"


def detached() -> str:
    return "goes on on the server; its take is placed when this file is opened again"


def lost_by_server(label: str) -> str:
    """A job the server no longer knows (it was restarted or crashed)."""
    return unchanged(f"The Foley server lost the job for {label} (it was restarted): "
                     "Retry sends it again with the same settings and seed")


def regen_take_gone(label: str, why: str) -> str:
    """A recorded Regenerate Range (reopened or retried) whose take, the source of the audio
    kept outside the range, is gone: its new takes are not placed."""
    return unchanged(f"The regenerated range of {label} cannot be placed or sent again: {why}")


def retried(number: int, automatic: bool) -> str:
    how = "sent again by itself" if automatic else "sent again"
    return f"{how} as job {number} (same settings and seed)"


def unreachable(endpoint: str, waited_s: float, loading: bool, uses_key: bool) -> str:
    """A job waited too long for a server that answers (and has loaded its model)."""
    if loading:
        return unchanged(f"The Foley server at {endpoint} is still loading its model after "
                         f"{waited_s:.0f} s; try again in a moment")
    hint = ("check the server public key in the add-on preferences"
            if uses_key else "start it with: v2a-server --model default")
    return unchanged(f"No answer from the Foley server at {endpoint} within {waited_s:.0f} s: "
                     f"is it running? ({hint})")


def server_error(body: dict) -> str:
    """A job's ``error`` reply, for the editor."""
    code = body.get("code")
    text = body.get("message", "")
    if code == "server_lost":
        return unchanged(f"Lost the Foley server ({text}): it stopped or crashed")
    if code == "timeout":
        return unchanged("The Foley server gave no result within the job timeout")
    if code == "cancelled":
        return unchanged(f"The server cancelled the job ({text})")
    field_ = f" (field {body['field']})" if body.get("field") else ""
    return unchanged(f"Server error {code}: {text}{field_}")


def refused_before_sending(exc: Exception) -> str:
    if getattr(exc, "field", None) == "body.focus_region":  # never a silent whole-frame take
        return ("This server cannot follow a focus region (it needs protocol 1.6): nothing was "
                "sent. Update the server, or clear the strip's focus to use the whole frame")
    return f"The request was refused before sending: {exc}"


def capture_failed(exc: Exception) -> str:
    return unchanged(f"Capture failed: {exc}")


def placement_failed(exc: Exception) -> str:
    return unchanged(f"Placement failed: {exc}")


OTHER_SERVER_BUSY = ("Foley jobs are still running on the previous server: wait for them or "
                     "cancel them before switching servers")


# ---- the server and the frame route (panel lines) -------------------------------------------


def connection(endpoint: str | None, connected: bool, loading: bool) -> str:
    """Connected / connecting / not connected (``endpoint`` None: no client)."""
    if endpoint is None:
        return "Not connected"
    if not connected:
        return f"Connecting to {endpoint}…"
    if loading:
        return "Connected · server loading its model…"
    return "Connected"


ROUTE_PREFERENCE = "Frames: rendered by Blender (preference)"
ROUTE_READY = "Frames: read, ready on the server"
ROUTE_READING = "Frames: the server is reading the file…"
ROUTE_SERVER_READS = "Frames: read from the file by the server"


def model_line(status: dict) -> str:
    """The server panel's model line: its name and, where its folder states it, its scope."""
    text = f"Model: {status.get('model_id') or '…'}"
    if status.get("model_scope"):
        text += f" · {status['model_scope']}"
    return text


def route_rendered(reason: str) -> str:
    return f"Frames: rendered by Blender ({reason})"


def report(message: str, level: str = "INFO") -> None:
    """Show ``message`` in the status bar and Info log (from a timer) and the Python log."""
    getattr(logger, {"ERROR": "error", "WARNING": "warning"}.get(level, "info"))(message)
    try:
        bpy.ops.sequencer.foley_report(message=message, level=level)
    except (RuntimeError, AttributeError):
        # An ERROR report raises through bpy.ops; the report itself was made.
        pass
