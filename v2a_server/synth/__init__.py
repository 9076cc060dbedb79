"""A synthetic audio-visual world for training a small default Foley model.

Short side-view videos of objects that bounce, drop, collide, get hit or are stepped on, with a
soundtrack synthesised from the very same contact events (modal synthesis per material), plus
motion that makes no sound (sliding, floating, camera pan, flicker). Everything follows from a seed.

Modules, one idea each: ``materials`` (what wood/metal/... sound and look like), ``physics``
(piecewise-parabolic trajectories), ``scene`` (actors, events, captions), ``render`` (numpy
frames), ``modal`` (impact sounds), ``clip`` (``make_clip``), ``dataset`` (mp4/wav/manifest),
``two_source`` (two sources side by side with their contacts and boxes: region focus).
"""

from v2a_server.synth.clip import Clip, make_clip
from v2a_server.synth.dataset import (
    SPLITS,
    read_manifest,
    split_for_seed,
    write_dataset,
    write_mp4,
    write_wav,
)

__all__ = [
    "Clip",
    "make_clip",
    "write_dataset",
    "write_mp4",
    "write_wav",
    "split_for_seed",
    "read_manifest",
    "SPLITS",
]
