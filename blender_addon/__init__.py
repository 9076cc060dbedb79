"""STA-V2A Foley for Blender's Video Sequence Editor: wiring only.

Select picture strips, type what should be heard, press Generate Foley (Sequencer sidebar ›
Foley, or Strip menu): the add-on captures what the editor sees, sends it to a local
``v2a-server`` over ZeroMQ (``foley_protocol``) and places the result as a sound strip with
onset markers. Blender never imports torch.

Submodules are imported in ``register`` so that the bpy-free helpers (``sync``, ``media``,
``files``) can be imported and tested without Blender.
"""

from __future__ import annotations

import importlib

_MODULES = ("properties", "preferences", "operators", "take_operators", "ui", "lifecycle",
            "review_operators", "review_hits", "review_ui", "focus")


def _submodules():
    return [importlib.import_module(f"{__package__}.{name}") for name in _MODULES]


def register():
    for module in _submodules():
        module.register()


def unregister():
    for module in reversed(_submodules()):
        module.unregister()
