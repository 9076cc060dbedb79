"""What the job loop does around the editor's session: edits, opening another file, the
add-on being enabled or disabled (Blender's handlers and the timer)."""

from __future__ import annotations

import bpy

from . import capture_cache, jobs, recovery
from .preferences import get_preferences


@bpy.app.handlers.persistent
def _on_depsgraph_update(*_args) -> None:
    """An edit: the panel's frame route lines may have changed (the loop computes them)."""
    manager = jobs.current()
    if manager is not None:
        manager.routes.clear()


@bpy.app.handlers.persistent
def _on_load_pre(*_args) -> None:
    """Opening another file ends the jobs of this one (their strips are going away)."""
    capture_cache.clear()
    manager = jobs.current()
    if manager is not None:
        manager.recovery.detach()
        manager.cancel(reason="Another file was opened")
        manager.review.forget()  # its takes are going away: their reviews are not the next file's
        manager.forget_read_ahead()


def register() -> None:
    bpy.app.handlers.load_pre.append(_on_load_pre)
    recovery.register(lambda: jobs.connected_manager(get_preferences()), jobs.ensure_timer)
    bpy.app.handlers.depsgraph_update_post.append(_on_depsgraph_update)


def unregister() -> None:
    for handlers, handler in ((bpy.app.handlers.load_pre, _on_load_pre),
                              (bpy.app.handlers.depsgraph_update_post, _on_depsgraph_update)):
        if handler in handlers:
            handlers.remove(handler)
    recovery.unregister()
    if bpy.app.timers.is_registered(jobs.poll_jobs):
        bpy.app.timers.unregister(jobs.poll_jobs)
    jobs.discard()
