"""Sub-commands of the `v2a` CLI: one module per command.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
Modules import heavy libraries (torch, diffusers) inside ``run`` so that ``v2a --help`` is fast.
``serve`` is not one of them: it is the ``v2a-server`` script (the server, ``v2a_server.serving``).
"""

COMMAND_MODULES = (
    "create_model",
    "generate",
    "convert",
    "eval",
    "synth",
    "keys",
    "train",
    "demo",
    "pack_model",
    "model",
)
