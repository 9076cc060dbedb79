"""Scenes: bodies, their motion, the sound events it causes and the silent motion around them.

A scene is a side view of one floor. Its width is split into lanes; each lane holds one *actor*:
a sounding one (a ball bouncing, an object dropped, two objects pushed into each other, a striker
hitting an object, footsteps) or a silent one (an object sliding or floating). The camera may pan
and the light may flicker. Everything is drawn from one ``numpy.random.Generator``, so a seed fixes
the scene; contact times come from closed-form physics, so they fall between video frames.

Sound is made only at contacts that start with a speed (impacts). Sliding, floating, lifting,
panning and flicker are recorded as ``SilentMotion`` so that a model has to learn impacts, not
motion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from v2a_server.synth.materials import (
    DROPPABLE_KINDS,
    FLOOR_MATERIALS,
    HITTABLE_KINDS,
    MATERIALS,
    OBJECT_KINDS,
    SLIDABLE_KINDS,
    STRIKERS,
    object_phrase,
)
from v2a_server.synth.physics import GRAVITY_MPS2, Segment, Trajectory, fall_time_s

# World box seen by the camera at pan offset 0: x in [0, VIEW_WIDTH_M]; the floor sits at
# FLOOR_ROW_FRACTION of the image height, so AIR_HEIGHT_M of air is visible above it.
VIEW_WIDTH_M = 1.2
FLOOR_ROW_FRACTION = 0.8
AIR_HEIGHT_M = VIEW_WIDTH_M * FLOOR_ROW_FRACTION
PAN_MAX_M = 0.08  # bodies stay this far inside the view edges, so a pan never hides an impact
EDGE_M = 0.02

# Two sounding contacts of one body closer than this would merge into one onset (and one video
# frame); a bounce that would come sooner ends the bouncing instead.
MIN_BOUNCE_GAP_S = 0.12
# On soft floors (gravel, cloth) a bounce slower than this ends the bouncing.
SOFT_FLOOR_MIN_BOUNCE_MPS = 1.0
# Different actors are placed in time so that their events are at least this far apart when a
# few random tries allow it.
TARGET_CROSS_GAP_S = 0.15
SCHEDULE_TRIES = 12
# No event in the last END_MARGIN_S of a clip: its sound and its contact frame must both exist.
END_MARGIN_S = 0.2

# Reference speeds that map an impact speed to strength 1.0, per action (m/s): a foot lands slowly
# but carries a body's weight; a hammer blow is fast but light.
REFERENCE_SPEED_MPS = {"bounce": 4.5, "drop": 4.5, "collide": 2.2, "hit": 3.5, "step": 1.2}

SOUND_ACTIONS: tuple[str, ...] = ("bounce", "drop", "collide", "hit", "step")
# Drawn per actor; bounces and footsteps make many events each, drops few, so drops are drawn more.
ACTION_PROBABILITIES: tuple[float, ...] = (0.18, 0.27, 0.18, 0.22, 0.15)
SILENT_ACTIONS: tuple[str, ...] = ("slide", "drift")
# Lane width units each actor needs (the usable width is split into LANE_UNITS units).
ACTION_UNITS = {"bounce": 1, "drop": 1, "collide": 2, "hit": 1, "step": 2, "slide": 2, "drift": 1}
LANE_UNITS = 4


@dataclass
class Body:
    """A visible rigid body.

    Attributes:
        noun: what it is ("ball", "can", "stick", "shoe").
        phrase: caption phrase ("a rubber ball").
        material: ``MATERIALS`` key.
        shape: "circle", "rect" or "shoe" (a rect with a leg drawn up to the top of the image).
        width_m: width (the diameter for circles), metres.
        height_m: height, metres.
        colour_rgb: flat fill colour.
        trajectory: position of the bottom-centre over time.
        contact_times_s: times of this body's sounding contacts; the renderer shows the contact pose
            at the video frame nearest to each.
        body_id: index in ``Scene.bodies`` (set when the scene is assembled).
    """

    noun: str
    phrase: str
    material: str
    shape: str
    width_m: float
    height_m: float
    colour_rgb: tuple[int, int, int]
    trajectory: Trajectory
    contact_times_s: list[float] = field(default_factory=list)
    body_id: int = -1


@dataclass
class SoundEvent:
    """One impact: the sound starts exactly at ``time_s``.

    Attributes:
        time_s: contact time, seconds from the clip start.
        body: the moving body that makes contact.
        other: the body it hits, or None for the floor.
        action: "bounce", "drop", "collide", "hit" or "step".
        speed_mps: closing speed at contact, m/s.
        strength: ``speed_mps`` over the action's reference speed, clipped to [0, 1]; scales loudness.
        surface_material: material of what is hit (the floor's for floor contacts).
    """

    time_s: float
    body: Body
    other: Body | None
    action: str
    speed_mps: float
    strength: float
    surface_material: str

    def to_dict(self) -> dict:
        """Manifest form (plain JSON types)."""
        return {
            "time_s": round(self.time_s, 6),
            "object": self.body.noun,
            "material": self.body.material,
            "action": self.action,
            "strength": round(self.strength, 4),
            "speed_mps": round(self.speed_mps, 4),
            "surface": self.surface_material,
            "surface_object": "floor" if self.other is None else self.other.noun,
            "body_id": self.body.body_id,
            "other_body_id": -1 if self.other is None else self.other.body_id,
        }


@dataclass
class SilentMotion:
    """Motion that makes no sound (kept in the manifest for reference).

    Attributes:
        kind: "slide", "drift", "lift" (an object raised for the next drop), "raise" (a striker going
            back up), "swing" (a foot in the air), "pan" or "flicker".
        start_s: start time, seconds.
        end_s: end time, seconds.
        body: the moving body, or None for the camera ("pan") and the light ("flicker").
    """

    kind: str
    start_s: float
    end_s: float
    body: Body | None = None

    def to_dict(self) -> dict:
        """Manifest form (plain JSON types)."""
        return {
            "kind": self.kind,
            "start_s": round(self.start_s, 6),
            "end_s": round(self.end_s, 6),
            "object": (
                {"pan": "camera", "flicker": "light"}.get(self.kind, "")
                if self.body is None
                else self.body.noun
            ),
            "material": "" if self.body is None else self.body.material,
            "body_id": -1 if self.body is None else self.body.body_id,
        }


@dataclass
class Flicker:
    """Brightness flicker: gain(t) = 1 + depth * w(t) inside [start_s, end_s], w a mix of sines in [-1, 1]."""

    start_s: float
    end_s: float
    depth: float
    freqs_hz: tuple[float, ...]
    phases: tuple[float, ...]

    def gain(self, times_s: np.ndarray) -> np.ndarray:
        """Brightness gain at ``times_s`` ([T] seconds) -> [T] float64, 1.0 outside the interval."""
        times_s = np.asarray(times_s, dtype=np.float64)
        wave = sum(np.sin(2 * np.pi * f * times_s + p) for f, p in zip(self.freqs_hz, self.phases))
        wave = wave / len(self.freqs_hz)
        inside = (times_s >= self.start_s) & (times_s <= self.end_s)
        return np.where(inside, 1.0 + self.depth * wave, 1.0)


@dataclass
class Scene:
    """A whole synthetic clip before rendering.

    Attributes:
        duration_s: clip length, seconds.
        floor_material: ``MATERIALS`` key of the floor.
        bodies: every visible body (``body_id`` == index).
        events: sounding contacts in time order.
        silent: silent motion in start order (bodies, camera, light).
        camera: camera x offset over time (the y coordinate is unused), metres.
        flicker: optional brightness flicker.
        caption: text description of what is heard.
        texture_seed: seed of the background and floor textures.
        backdrop_rgb: base colour of the wall behind the scene.
    """

    duration_s: float
    floor_material: str
    bodies: list[Body]
    events: list[SoundEvent]
    silent: list[SilentMotion]
    camera: Trajectory
    flicker: Flicker | None
    caption: str
    texture_seed: int
    backdrop_rgb: tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# Actors. Each builder returns (bodies, events, silent motions, caption) or None when nothing
# sounding fits in the time it was given; it never touches shared state, so a failed or
# rejected try costs nothing but random draws.
# --------------------------------------------------------------------------------------------


@dataclass
class _Context:
    duration_s: float
    t_end_s: float  # last allowed event time
    floor: str
    lane_m: tuple[float, float]
    t_start_s: float


_ActorResult = tuple[list[Body], list[SoundEvent], list[SilentMotion], str]


def _jitter_colour(
    rng: np.random.Generator, rgb: tuple[int, int, int], spread: int = 22
) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in rgb)


def _make_object(
    rng: np.random.Generator,
    kinds: tuple[str, ...],
    pos_m: tuple[float, float] | None = None,
    max_width_m: float | None = None,
) -> Body:
    """A random object of one of ``kinds`` in one of its materials, at rest at ``pos_m``."""
    noun = str(rng.choice(kinds))
    kind = OBJECT_KINDS[noun]
    material = str(rng.choice(kind.materials))
    width = float(rng.uniform(*kind.width_range_m))
    if max_width_m is not None:
        width = min(width, max_width_m)
    height = width * float(rng.uniform(*kind.aspect_range))
    return Body(
        noun=noun,
        phrase=object_phrase(noun, material),
        material=material,
        shape=kind.shape,
        width_m=width,
        height_m=height,
        colour_rgb=_jitter_colour(rng, MATERIALS[material].colour_rgb),
        trajectory=Trajectory(pos_m if pos_m is not None else (0.0, 0.0)),
    )


def _strength(action: str, speed_mps: float) -> float:
    return float(np.clip(speed_mps / REFERENCE_SPEED_MPS[action], 0.0, 1.0))


def _times_word(n: int) -> str:
    return {1: "", 2: " twice", 3: " three times"}.get(n, f" {n} times")


def _fall_sequence(
    rest_time_s: float, height_m: float, restitution: float, min_speed_mps: float = 0.0
) -> tuple[list[float], list[float]]:
    """Impact times and speeds of a body released at rest from ``height_m``, bouncing until a bounce
    would last less than MIN_BOUNCE_GAP_S or land slower than ``min_speed_mps`` (then it stays down)."""
    t = rest_time_s + fall_time_s(height_m)
    v = GRAVITY_MPS2 * (t - rest_time_s)
    times, speeds = [t], [v]
    while True:
        v *= restitution
        flight = 2.0 * v / GRAVITY_MPS2
        if flight < MIN_BOUNCE_GAP_S or v < min_speed_mps:
            return times, speeds
        t += flight
        times.append(t)
        speeds.append(v)


def _min_bounce_speed_mps(floor: str) -> float:
    """Slowest re-bounce that still sounds: a carpet or gravel swallows gentle bounces (the body
    stays down), which also keeps every sounding bounce clearly audible."""
    return SOFT_FLOOR_MIN_BOUNCE_MPS if MATERIALS[floor].softness >= 0.6 else 0.0


def _drop_rounds(
    rng: np.random.Generator,
    ctx: _Context,
    body: Body,
    restitution: float,
    action_first: str,
    action_rest: str,
    max_rounds: int,
) -> tuple[list[SoundEvent], list[SilentMotion], int]:
    """Release ``body`` from its height, let it bounce down, lift it silently, repeat.

    The body starts held at ``body.trajectory.pos_m``. Each round must end before ``ctx.t_end_s``;
    the drop height shrinks (fewer, quieter bounces) until it does, otherwise the rounds stop.
    """
    traj = body.trajectory
    x, height = traj.pos_m
    events: list[SoundEvent] = []
    silent: list[SilentMotion] = []
    t_release = ctx.t_start_s
    pause_s = lift_s = 0.0
    rounds = 0
    while rounds < max_rounds:
        for _ in range(4):
            times, speeds = _fall_sequence(t_release, height, restitution, _min_bounce_speed_mps(ctx.floor))
            if times[-1] <= ctx.t_end_s or height < 0.2:
                break
            height *= 0.7
        if times[-1] > ctx.t_end_s:
            break
        if rounds == 0:
            traj.segments = [Segment(0.0, (x, height))]  # held at the (possibly shrunk) height
        else:
            traj.rest_until(traj.t_s + pause_s)
            lift_start = traj.t_s
            traj.smooth_move(lift_s, (x, height))
            silent.append(SilentMotion("lift", lift_start, traj.t_s, body))
        traj.rest_until(t_release)
        previous_t = t_release
        for i, (t, v) in enumerate(zip(times, speeds)):
            vy0 = 0.0 if i == 0 else speeds[i - 1] * restitution
            traj.move(t - previous_t, (0.0, vy0), (0.0, -GRAVITY_MPS2))
            traj.place((x, 0.0))
            action = action_first if i == 0 else action_rest
            events.append(SoundEvent(float(t), body, None, action, float(v), _strength(action, v), ctx.floor))
            previous_t = t
        rounds += 1
        # Next round: pause on the floor, lift silently, hold still, release.
        height = float(rng.uniform(0.35, min(1.0, AIR_HEIGHT_M - body.height_m - 0.08)))
        pause_s = float(rng.uniform(0.3, 1.0))
        lift_s = float(rng.uniform(0.6, 1.0))
        t_release = traj.t_s + pause_s + lift_s + float(rng.uniform(0.1, 0.4))
    return events, silent, rounds


def _build_bounce(rng: np.random.Generator, ctx: _Context) -> _ActorResult | None:
    lane_w = ctx.lane_m[1] - ctx.lane_m[0]
    body = _make_object(rng, ("ball",), max_width_m=0.8 * lane_w)
    x = float(rng.uniform(ctx.lane_m[0] + body.width_m / 2, ctx.lane_m[1] - body.width_m / 2))
    height = float(rng.uniform(0.35, min(1.0, AIR_HEIGHT_M - body.height_m - 0.08)))
    body.trajectory = Trajectory((x, height))
    e = MATERIALS[body.material].restitution * MATERIALS[ctx.floor].floor_restitution_factor
    e = float(np.clip(e * rng.uniform(0.92, 1.06), 0.05, 0.88))
    events, silent, rounds = _drop_rounds(rng, ctx, body, e, "bounce", "bounce", int(rng.integers(1, 3)))
    if not events:
        return None
    caption = f"{body.phrase} bouncing on {MATERIALS[ctx.floor].floor_phrase}"
    return [body], events, silent, caption


def _build_drop(rng: np.random.Generator, ctx: _Context) -> _ActorResult | None:
    lane_w = ctx.lane_m[1] - ctx.lane_m[0]
    body = _make_object(rng, DROPPABLE_KINDS, max_width_m=0.8 * lane_w)
    x = float(rng.uniform(ctx.lane_m[0] + body.width_m / 2, ctx.lane_m[1] - body.width_m / 2))
    height = float(rng.uniform(0.35, min(1.0, AIR_HEIGHT_M - body.height_m - 0.08)))
    body.trajectory = Trajectory((x, height))
    # Boxes and cans land flat and lose most of their energy; balls keep more.
    keep = 1.0 if body.shape == "circle" else 0.45
    e = keep * MATERIALS[body.material].restitution * MATERIALS[ctx.floor].floor_restitution_factor
    e = float(np.clip(e * rng.uniform(0.9, 1.1), 0.02, 0.85))
    max_rounds = int(rng.integers(1, 4))
    events, silent, rounds = _drop_rounds(rng, ctx, body, e, "drop", "bounce", max_rounds=max_rounds)
    if not events:
        return None
    caption = f"{body.phrase} dropped onto {MATERIALS[ctx.floor].floor_phrase}{_times_word(rounds)}"
    return [body], events, silent, caption


def _contact_dx_m(a: Body, b: Body) -> float:
    """Centre distance at which two bodies resting on the floor touch side by side."""
    if a.shape == "circle" and b.shape == "circle":
        ra, rb = a.width_m / 2, b.width_m / 2
        return 2.0 * float(np.sqrt(ra * rb))
    if a.shape == "circle" or b.shape == "circle":
        circle, box = (a, b) if a.shape == "circle" else (b, a)
        r = circle.width_m / 2
        if box.height_m >= r:
            return r + box.width_m / 2
        # The ball meets the box's top corner.
        return box.width_m / 2 + float(np.sqrt(r**2 - (r - box.height_m) ** 2))
    return (a.width_m + b.width_m) / 2


def _build_collide(rng: np.random.Generator, ctx: _Context) -> _ActorResult | None:
    lo, hi = ctx.lane_m
    lane_w = hi - lo
    a = _make_object(rng, SLIDABLE_KINDS, max_width_m=0.25 * lane_w)
    b = _make_object(rng, SLIDABLE_KINDS, max_width_m=0.25 * lane_w)
    home_a = lo + a.width_m / 2 + 0.01
    home_b = hi - b.width_m / 2 - 0.01
    a.trajectory = Trajectory((home_a, 0.0))
    b.trajectory = Trajectory((home_b, 0.0))
    e = float(np.sqrt(MATERIALS[a.material].restitution * MATERIALS[b.material].restitution))
    dx = _contact_dx_m(a, b)
    events: list[SoundEvent] = []
    silent: list[SilentMotion] = []
    movers_seen: set[str] = set()
    t_push = ctx.t_start_s
    for _ in range(3):
        mode = str(rng.choice(["both", "a", "b"]))
        va = float(rng.uniform(0.5, 1.3)) if mode in ("both", "a") else 0.0
        vb = float(rng.uniform(0.5, 1.3)) if mode in ("both", "b") else 0.0
        gap = home_b - home_a - dx
        t_hit = t_push + gap / (va + vb)
        if t_hit > ctx.t_end_s:
            break
        movers_seen.add(mode)
        # Slide in (silent), touch exactly, fly apart and stop by friction (silent).
        xa = home_a + va * (t_hit - t_push)
        for body, v in ((a, va), (b, -vb)):
            body.trajectory.rest_until(t_push)
            body.trajectory.move(t_hit - t_push, (v, 0.0))
            if v:
                silent.append(SilentMotion("slide", t_push, t_hit, body))
        a.trajectory.place((xa, 0.0))
        b.trajectory.place((xa + dx, 0.0))
        ua = ((1 - e) * va - (1 + e) * vb) / 2  # equal masses, 1-D, restitution e
        ub = ((1 + e) * va - (1 - e) * vb) / 2
        rel = va + vb
        events.append(SoundEvent(t_hit, a, b, "collide", rel, _strength("collide", rel), b.material))
        a.contact_times_s.append(t_hit)
        b.contact_times_s.append(t_hit)
        # Both brake with one deceleration, so the faster-separating body stays ahead and the
        # pair never overlaps; it is raised when needed to stop inside the lane.
        xb = xa + dx
        room_a = xa - (lo + a.width_m / 2) if ua < 0 else (hi - b.width_m / 2 - dx) - xa
        room_b = (hi - b.width_m / 2) - xb if ub > 0 else xb - (lo + a.width_m / 2 + dx)
        decel = max(
            float(rng.uniform(2.5, 4.5)), ua**2 / (2 * max(room_a, 1e-3)), ub**2 / (2 * max(room_b, 1e-3))
        )
        t_stop = t_hit
        for body, u in ((a, ua), (b, ub)):
            if abs(u) < 1e-9:
                continue
            stop_s = abs(u) / decel
            body.trajectory.move(stop_s, (u, 0.0), (-np.sign(u) * decel, 0.0))
            silent.append(SilentMotion("slide", t_hit, t_hit + stop_s, body))
            t_stop = max(t_stop, t_hit + stop_s)
        # Silently slide both home again for the next round.
        t_back = t_stop + float(rng.uniform(0.2, 0.6))
        back_s = float(rng.uniform(0.5, 0.9))
        for body, home in ((a, home_a), (b, home_b)):
            body.trajectory.rest_until(t_back)
            body.trajectory.smooth_move(back_s, (home, 0.0))
            silent.append(SilentMotion("slide", t_back, t_back + back_s, body))
        t_push = t_back + back_s + float(rng.uniform(0.2, 0.8))
    if not events:
        return None
    if movers_seen == {"a"}:
        caption = f"{a.phrase} sliding into {b.phrase}"
    elif movers_seen == {"b"}:
        caption = f"{b.phrase} sliding into {a.phrase}"
    else:
        caption = f"{a.phrase} and {b.phrase} colliding"
    return [a, b], events, silent, caption + _times_word(len(events))


def _build_hit(rng: np.random.Generator, ctx: _Context) -> _ActorResult | None:
    lo, hi = ctx.lane_m
    x = (lo + hi) / 2
    on_floor = rng.random() < 0.25
    target: Body | None = None
    top = 0.0
    if not on_floor:
        target = _make_object(rng, HITTABLE_KINDS, (x, 0.0), max_width_m=0.9 * (hi - lo))
        top = target.height_m
    striker_phrase, striker_mat, width, length = STRIKERS[int(rng.integers(len(STRIKERS)))]
    lift = float(rng.uniform(0.15, 0.3))
    noun = striker_phrase.split()[-1]
    striker = Body(
        noun=noun,
        phrase=striker_phrase,
        material=striker_mat,
        shape="rect",
        width_m=width,
        height_m=length,
        colour_rgb=_jitter_colour(rng, MATERIALS[striker_mat].colour_rgb, 12),
        trajectory=Trajectory((x, top + lift)),
    )
    traj = striker.trajectory
    surface = ctx.floor if target is None else target.material
    events: list[SoundEvent] = []
    silent: list[SilentMotion] = []
    t = ctx.t_start_s
    for _ in range(int(rng.integers(1, 6))):
        v = float(rng.uniform(1.2, 3.5))
        acc = v**2 / (2 * lift)
        t_hit = t + v / acc
        if t_hit > ctx.t_end_s:
            break
        traj.rest_until(t)
        traj.move(t_hit - t, (0.0, 0.0), (0.0, -acc))
        traj.place((x, top))
        events.append(SoundEvent(t_hit, striker, target, "hit", v, _strength("hit", v), surface))
        if target is not None:
            target.contact_times_s.append(t_hit)
        # Rebound and come to rest at the top again (silent raise).
        v_up = v * float(rng.uniform(0.3, 0.5))
        dec = v_up**2 / (2 * lift)
        traj.move(v_up / dec, (0.0, v_up), (0.0, -dec))
        traj.place((x, top + lift))
        silent.append(SilentMotion("raise", t_hit, traj.t_s, striker))
        t = traj.t_s + float(rng.uniform(0.1, 0.7))
    if not events:
        return None
    what = MATERIALS[ctx.floor].floor_phrase if target is None else target.phrase
    bodies = [striker] if target is None else [target, striker]
    return bodies, events, silent, f"{striker_phrase} hitting {what}{_times_word(len(events))}"


def _build_step(rng: np.random.Generator, ctx: _Context) -> _ActorResult | None:
    lo, hi = ctx.lane_m
    width = float(rng.uniform(0.08, 0.11))
    step = float(rng.uniform(0.07, 0.11))
    colour = _jitter_colour(rng, (45, 40, 38), 10)
    direction = 1.0 if rng.random() < 0.5 else -1.0
    start = lo + width / 2 + 0.005 if direction > 0 else hi - width / 2 - 0.005
    feet = []
    for i in range(2):
        feet.append(
            Body(
                noun="shoe",
                phrase="a shoe",
                material="rubber",
                shape="shoe",
                width_m=width,
                height_m=0.04,
                colour_rgb=colour,
                trajectory=Trajectory((start + direction * step * i, 0.0)),
            )
        )
    events: list[SoundEvent] = []
    silent: list[SilentMotion] = []
    t = ctx.t_start_s
    for _pass in range(3):
        moved = 0
        while True:
            xs = [f.trajectory.pos_m[0] for f in feet]
            back = int(np.argmin([direction * xx for xx in xs]))
            front_x = xs[1 - back]
            target_x = front_x + direction * step
            if not lo + width / 2 <= target_x <= hi - width / 2:
                break
            swing = float(rng.uniform(0.28, 0.36))
            peak = float(rng.uniform(0.05, 0.09))
            t_land = t + swing
            if t_land > ctx.t_end_s:
                break
            foot = feet[back]
            foot.trajectory.rest_until(t)
            vy = 4.0 * peak / swing  # parabola 0 -> peak -> 0: landing speed == take-off speed
            foot.trajectory.move(swing, ((target_x - xs[back]) / swing, vy), (0.0, -8.0 * peak / swing**2))
            foot.trajectory.place((target_x, 0.0))
            events.append(SoundEvent(t_land, foot, None, "step", vy, _strength("step", vy), ctx.floor))
            silent.append(SilentMotion("swing", t, t_land, foot))
            moved += 1
            t = t_land + float(rng.uniform(0.1, 0.25))
        if moved == 0 and _pass > 0:
            break
        direction = -direction
        t += float(rng.uniform(0.4, 1.2))
        if t > ctx.t_end_s:
            break
    if not events:
        return None
    return feet, events, silent, f"footsteps on {MATERIALS[ctx.floor].floor_phrase}"


def _build_slide(rng: np.random.Generator, ctx: _Context) -> _ActorResult:
    lo, hi = ctx.lane_m
    body = _make_object(rng, SLIDABLE_KINDS, max_width_m=0.3 * (hi - lo))
    ends = (lo + body.width_m / 2, hi - body.width_m / 2)
    forward = rng.random() < 0.5
    body.trajectory = Trajectory((ends[0] if forward else ends[1], 0.0))
    silent = []
    t = float(rng.uniform(0.0, 1.0))
    while t < ctx.duration_s:
        x0 = body.trajectory.pos_m[0]
        x1 = ends[1] if forward else ends[0]
        dist = abs(x1 - x0)
        v0 = float(rng.uniform(0.3, 0.9))
        dur = 2 * dist / v0  # pushed, then slows to a stop exactly at the far end
        body.trajectory.rest_until(t)
        body.trajectory.move(dur, (np.sign(x1 - x0) * v0, 0.0), (-np.sign(x1 - x0) * v0**2 / (2 * dist), 0.0))
        body.trajectory.place((x1, 0.0))
        silent.append(SilentMotion("slide", t, t + dur, body))
        forward = not forward
        t += dur + float(rng.uniform(0.2, 1.5))
    return [body], [], silent, f"{body.phrase} sliding on {MATERIALS[ctx.floor].floor_phrase}"


def _build_drift(rng: np.random.Generator, ctx: _Context) -> _ActorResult:
    lo, hi = ctx.lane_m
    body = _make_object(rng, DROPPABLE_KINDS, max_width_m=0.5 * (hi - lo))
    bob = float(rng.uniform(0.03, 0.09))
    y = float(rng.uniform(0.25 + bob, max(0.3 + bob, AIR_HEIGHT_M - body.height_m - bob - 0.1)))
    ends = (lo + body.width_m / 2, hi - body.width_m / 2)
    body.trajectory = Trajectory((float(rng.uniform(*ends)), y))
    hz = float(rng.uniform(0.3, 1.0))
    t = 0.0
    forward = rng.random() < 0.5
    while t < ctx.duration_s:
        x0 = body.trajectory.pos_m[0]
        x1 = ends[1] if forward else ends[0]
        speed = float(rng.uniform(0.04, 0.15))
        dur = max(abs(x1 - x0) / speed, 0.5)
        # A whole number of bob periods per pass keeps the height continuous at the turn.
        dur = max(1, round(dur * hz)) / hz
        body.trajectory.move(dur, ((x1 - x0) / dur, 0.0), (0.0, 0.0), bob, hz, 0.0)
        t += dur
        forward = not forward
    return (
        [body],
        [],
        [SilentMotion("drift", 0.0, ctx.duration_s, body)],
        f"{body.phrase} floating in the air",
    )


_BUILDERS = {
    "bounce": _build_bounce,
    "drop": _build_drop,
    "collide": _build_collide,
    "hit": _build_hit,
    "step": _build_step,
    "slide": _build_slide,
    "drift": _build_drift,
}


def _min_gap_s(times: list[float], others: list[float]) -> float:
    if not times or not others:
        return np.inf
    o = np.asarray(others)
    return float(min(np.min(np.abs(o - t)) for t in times))


def _join_captions(parts: list[tuple[float, float, str]]) -> str:
    """Join actor captions by first event time: ", then" when one ends before the next starts."""
    parts = sorted(parts)
    text = parts[0][2]
    last_end = parts[0][1]
    for first, end, caption in parts[1:]:
        text += (", then " if first > last_end else " and ") + caption
        last_end = max(last_end, end)
    return text


def sample_scene(
    rng: np.random.Generator,
    duration_s: float,
    *,
    actions: tuple[str, ...] | None = None,
    silent_only: bool = False,
    pan: bool | None = None,
    flicker: bool | None = None,
    floor: str | None = None,
) -> Scene:
    """Draw a random scene.

    Args:
        rng: the only source of randomness.
        duration_s: clip length, seconds (>= 1).
        actions: sounding actors to place, e.g. ("bounce",) or ("drop", "hit"); None draws 1-3.
            Their lane units (bounce/drop/hit 1, collide/step 2) must sum to <= 4.
        silent_only: no sounding actor, only sliding/floating objects (pan and flicker default on).
        pan: force the camera pan on/off (None: random, 35 %).
        flicker: force the brightness flicker on/off (None: random, 30 %).
        floor: force the floor material (a ``FLOOR_MATERIALS`` name); None draws one.
    Returns:
        The scene with events sorted by time and body ids assigned.
    """
    if duration_s < 1.0:
        raise ValueError(f"duration_s must be >= 1.0 s, got {duration_s}")
    if floor is None:
        floor = str(rng.choice(FLOOR_MATERIALS))
    elif floor not in FLOOR_MATERIALS:
        raise ValueError(f"floor must be one of {FLOOR_MATERIALS}, got {floor!r}")

    # 1. Which actors, and how wide each lane is.
    if silent_only:
        sound: list[str] = []
    elif actions is not None:
        bad = [a for a in actions if a not in SOUND_ACTIONS]
        if bad or not actions:
            raise ValueError(f"actions must be a non-empty subset of {SOUND_ACTIONS}, got {actions!r}")
        sound = list(actions)
    else:
        sound = []
        for _ in range(int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))):
            choice = str(rng.choice(SOUND_ACTIONS, p=ACTION_PROBABILITIES))
            fits = sum(ACTION_UNITS[a] for a in sound) + ACTION_UNITS[choice] <= LANE_UNITS
            if fits and not (choice == "step" and "step" in sound):  # one walker per scene
                sound.append(choice)
    units = sum(ACTION_UNITS[a] for a in sound)
    if units > LANE_UNITS:
        raise ValueError(
            f"actions {tuple(sound)} need {units} lane units, more than the {LANE_UNITS} available"
        )
    silent_actors: list[str] = []
    while units < LANE_UNITS:
        if silent_only or rng.random() < 0.6:
            kind = str(rng.choice(SILENT_ACTIONS))
            if units + ACTION_UNITS[kind] > LANE_UNITS:
                kind = "drift"
            silent_actors.append(kind)
            units += ACTION_UNITS[kind]
        else:
            silent_actors.append("")  # an empty lane
            units += 1
    lanes = sound + silent_actors
    order = rng.permutation(len(lanes))
    x_lo, x_hi = PAN_MAX_M + EDGE_M, VIEW_WIDTH_M - PAN_MAX_M - EDGE_M
    unit_m = (x_hi - x_lo) / LANE_UNITS
    lane_of: dict[int, tuple[float, float]] = {}
    x = x_lo
    for i in order:
        w = unit_m * ACTION_UNITS.get(lanes[i], 1)
        lane_of[int(i)] = (x + 0.01, x + w - 0.01)
        x += w

    # 2. Build actors; sounding ones are shifted in time to keep their events apart.
    t_end = duration_s - END_MARGIN_S
    bodies: list[Body] = []
    events: list[SoundEvent] = []
    silent: list[SilentMotion] = []
    captions: list[tuple[float, float, str]] = []
    silent_captions: list[str] = []
    for i, action in enumerate(lanes):
        if not action:
            continue
        if action in SILENT_ACTIONS:
            ctx = _Context(duration_s, t_end, floor, lane_of[i], 0.0)
            b, _, s, cap = _BUILDERS[action](rng, ctx)
            bodies += b
            silent += s
            silent_captions.append(cap)
            continue
        best, best_gap = None, -1.0
        latest_start = max(0.2, min(2.0, 0.3 * duration_s))
        for _ in range(SCHEDULE_TRIES):
            ctx = _Context(duration_s, t_end, floor, lane_of[i], float(rng.uniform(0.2, latest_start)))
            result = _BUILDERS[action](rng, ctx)
            if result is None:
                continue
            gap = _min_gap_s([e.time_s for e in result[1]], [e.time_s for e in events])
            if gap > best_gap:
                best, best_gap = result, gap
            if gap >= TARGET_CROSS_GAP_S:
                break
        if best is None:
            continue
        b, ev, s, cap = best
        bodies += b
        events += ev
        silent += s
        captions.append((ev[0].time_s, ev[-1].time_s, cap))
    if not silent_only and not events:
        raise RuntimeError(f"no sounding event fits in a {duration_s} s clip with actions {tuple(sound)}")

    # 3. Camera pan and light flicker (silent).
    camera = Trajectory((0.0, 0.0))
    if pan if pan is not None else (silent_only or rng.random() < 0.35):
        t0 = float(rng.uniform(0.0, 0.5 * duration_s))
        dur = float(rng.uniform(0.8, min(3.0, duration_s - t0)))
        offset = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * PAN_MAX_M)
        camera.rest_until(t0)
        camera.smooth_move(dur, (offset, 0.0))
        silent.append(SilentMotion("pan", t0, t0 + dur))
        if rng.random() < 0.5 and t0 + dur + 1.0 < duration_s:
            t1 = float(rng.uniform(t0 + dur, duration_s - 0.8))
            dur1 = float(rng.uniform(0.6, min(3.0, duration_s - t1)))
            camera.rest_until(t1)
            camera.smooth_move(dur1, (-offset * float(rng.uniform(0.0, 1.0)), 0.0))
            silent.append(SilentMotion("pan", t1, t1 + dur1))
    flick = None
    if flicker if flicker is not None else (silent_only or rng.random() < 0.3):
        t0 = float(rng.uniform(0.0, 0.6 * duration_s))
        t1 = min(duration_s, t0 + float(rng.uniform(1.0, 4.0)))
        flick = Flicker(
            t0,
            t1,
            float(rng.uniform(0.12, 0.3)),
            tuple(float(f) for f in rng.uniform(2.0, 9.0, size=3)),
            tuple(float(p) for p in rng.uniform(0, 2 * np.pi, size=3)),
        )
        silent.append(SilentMotion("flicker", t0, t1))

    # 4. Assemble: ids, event order, contact frames, caption.
    for i, body in enumerate(bodies):
        body.body_id = i
    events.sort(key=lambda e: e.time_s)
    for event in events:
        if event.time_s not in event.body.contact_times_s:
            event.body.contact_times_s.append(event.time_s)
    for body in bodies:
        body.contact_times_s.sort()
    silent.sort(key=lambda s: (s.start_s, s.kind))
    if captions:
        caption = _join_captions(captions)
    else:
        caption = "silence: " + " and ".join(silent_captions or ["an empty room"])
    # Light, mildly tinted walls: every object colour (dark metal, teal glass, red rubber, brown
    # wood, dark shoes) keeps a clear contrast against them.
    level = rng.uniform(160.0, 200.0)
    backdrop = tuple(int(np.clip(level + t, 0, 255)) for t in rng.uniform(-22.0, 22.0, size=3))
    return Scene(
        duration_s=duration_s,
        floor_material=floor,
        bodies=bodies,
        events=events,
        silent=silent,
        camera=camera,
        flicker=flick,
        caption=caption,
        texture_seed=int(rng.integers(2**31)),
        backdrop_rgb=backdrop,
    )
