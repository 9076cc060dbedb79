"""Two-source clips: two sounding actors side by side, each with its own contacts and region.

A region-focused take is scored on these: with the focus on one source (A) the generated onsets
should follow A's contacts and not the other's (B). ``make_two_source_clip`` draws a normal
synthetic clip with exactly two sounding actors (bounce, drop or hit: one lane each, no camera
pan, no flicker, so a static box stays on its source), groups the bodies into the two sources
(a striker and what it hits are one source), and gives each source its contact times and where
it is on screen: a box over the whole clip and a box per frame, both from the renderer's
per-pixel owner map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from v2a_server.synth.clip import (
    DEFAULT_DURATION_S,
    DEFAULT_FPS,
    DEFAULT_SIZE_PX,
    Clip,
    make_clip,
)
from v2a_server.synth.render import render_frames

# One lane each: the sources stay apart on screen.
TWO_SOURCE_ACTIONS: tuple[str, ...] = ("bounce", "drop", "hit")
# Pixels added around a source's box (an editor's box is never tight); the floor row under a
# contact is inside it.
BOX_PAD_PX = 2
# Draws tried per seed before giving up (a draw fails when one actor found no room in time).
MAX_DRAWS = 20
# A contact of one source counts as "only" its own when the other has none this close.
ONLY_TOLERANCE_S = 0.1


@dataclass
class SoundSource:
    """One sounding actor of a two-source clip.

    Attributes:
        body_ids: the bodies that make its sounds (a striker and its target together).
        contact_times_s: [E] its contact (sound onset) times, ascending.
        box: (x, y, w, h) over the whole clip, fractions of the frame, origin top left.
        boxes: [T, 4] the same per frame (the union box where the source is hidden).
    """

    body_ids: tuple[int, ...]
    contact_times_s: np.ndarray
    box: tuple[float, float, float, float]
    boxes: np.ndarray


@dataclass
class TwoSourceClip:
    """A synthetic clip with two sources, ``left`` and ``right`` by their box centres."""

    clip: Clip
    left: SoundSource
    right: SoundSource

    def sources(self) -> dict[str, SoundSource]:
        return {"left": self.left, "right": self.right}

    def only_contacts_s(self, side: str, tolerance_s: float = ONLY_TOLERANCE_S) -> np.ndarray:
        """Contacts of ``side`` with no contact of the other source within ``tolerance_s``."""
        own = self.sources()[side].contact_times_s
        other = self.right if side == "left" else self.left
        if len(other.contact_times_s) == 0:
            return own
        gap = np.min(np.abs(own[:, None] - other.contact_times_s[None, :]), axis=1)
        return own[gap > tolerance_s]


def _group_bodies(clip: Clip) -> list[tuple[int, ...]]:
    """Bodies joined by the contacts between them (union-find), only groups that sound."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.setdefault(i, i) != i:
            i = parent[i]
        return i

    for e in clip.events:
        a = root(e.body.body_id)
        if e.other is not None:
            parent[root(e.other.body_id)] = a
    groups: dict[int, list[int]] = {}
    for body_id in parent:
        groups.setdefault(root(body_id), []).append(body_id)
    return [tuple(sorted(g)) for g in groups.values()]


def _boxes(labels: np.ndarray, body_ids: tuple[int, ...]) -> tuple[tuple[float, float, float, float], np.ndarray]:
    """Union box and per-frame boxes of ``body_ids`` in ``labels`` [T, S, S], padded, normalised."""
    n, size, _ = labels.shape
    owned = np.isin(labels, body_ids)
    per_frame = np.zeros((n, 4), np.float64)

    def box_of(mask: np.ndarray) -> tuple[float, float, float, float] | None:
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows) == 0:
            return None
        r0, r1 = max(0, rows[0] - BOX_PAD_PX), min(size, rows[-1] + 1 + BOX_PAD_PX)
        c0, c1 = max(0, cols[0] - BOX_PAD_PX), min(size, cols[-1] + 1 + BOX_PAD_PX)
        return c0 / size, r0 / size, (c1 - c0) / size, (r1 - r0) / size

    union = box_of(owned.any(axis=0))
    for k in range(n):
        per_frame[k] = box_of(owned[k]) or union
    return union, per_frame


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def make_two_source_clip(
    seed: int,
    *,
    duration_s: float = DEFAULT_DURATION_S,
    fps: float = DEFAULT_FPS,
    size_px: int = DEFAULT_SIZE_PX,
    **clip_kwargs,
) -> TwoSourceClip:
    """A clip with two sounding actors on disjoint boxes, fully determined by ``seed``.

    Draws ``make_clip`` with two actors from ``TWO_SOURCE_ACTIONS`` until both sound, their
    union boxes do not overlap and each has at least one contact the other has not.
    ``clip_kwargs``: further ``make_clip`` arguments (``sample_rate``, ``noise_floor_db``).

    Raises:
        RuntimeError: no draw in ``MAX_DRAWS`` met those conditions.
    """
    draw_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    for _ in range(MAX_DRAWS):
        actions = tuple(str(a) for a in draw_rng.choice(TWO_SOURCE_ACTIONS, size=2))
        clip_seed = int(draw_rng.integers(2**31))
        try:
            clip = make_clip(clip_seed, duration_s=duration_s, fps=fps, size_px=size_px,
                             actions=actions, pan=False, flicker=False, **clip_kwargs)
        except RuntimeError:  # no sounding event fitted
            continue
        groups = _group_bodies(clip)
        if len(groups) != 2:
            continue
        _, labels = render_frames(clip.scene, fps, size_px, return_labels=True)
        sources = []
        for ids in groups:
            times = np.array(sorted(e.time_s for e in clip.events if e.body.body_id in ids), np.float64)
            box, boxes = _boxes(labels, ids)
            sources.append(SoundSource(ids, times, box, boxes))
        if _overlap(sources[0].box, sources[1].box):
            continue
        sources.sort(key=lambda s: s.box[0] + s.box[2] / 2)
        pair = TwoSourceClip(clip, sources[0], sources[1])
        if len(pair.only_contacts_s("left")) and len(pair.only_contacts_s("right")):
            return pair
    raise RuntimeError(f"seed {seed}: no two-source clip in {MAX_DRAWS} draws")


def sources_row(pair: TwoSourceClip) -> dict:
    """The manifest's ``sources`` of a two-source clip: per side its bodies, contacts, the
    contacts the other side has not, its box and its box per frame (4 decimals)."""
    return {side: {"body_ids": list(source.body_ids),
                   "contacts_s": [round(float(t), 6) for t in source.contact_times_s],
                   "only_contacts_s": [round(float(t), 6) for t in pair.only_contacts_s(side)],
                   "box": [round(v, 4) for v in source.box],
                   "boxes": np.round(source.boxes, 4).tolist()}
            for side, source in pair.sources().items()}
