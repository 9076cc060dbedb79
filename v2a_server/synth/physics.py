"""Piecewise-parabolic trajectories: the whole motion model of the synthetic world.

Every body moves by constant-acceleration segments (rest, free fall, a push that slows down, a
smooth lift), optionally plus a sinusoidal bob for floating objects. Contact times therefore have
closed forms (``t = sqrt(2 h / g)``...), so event times are exact and fall between video frames.

Coordinates: x to the right, y up, metres; the floor is y = 0. A body's position is the
bottom-centre of its shape, so "on the floor" is simply y == 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRAVITY_MPS2 = 9.81


@dataclass(frozen=True)
class Segment:
    """Constant-acceleration motion from ``t0_s`` until the next segment starts.

    Attributes:
        t0_s: start time, seconds.
        pos_m: (x, y) position at ``t0_s``, metres.
        vel_mps: (vx, vy) velocity at ``t0_s``, metres per second.
        acc_mps2: (ax, ay) constant acceleration, metres per second squared.
        bob_m: amplitude of a vertical sinusoidal bob added on top (0 for none), metres.
        bob_hz: bob frequency, hertz.
        bob_phase: bob phase at ``t0_s``, radians; the bob is ``bob_m * (sin(phase + ...) - sin(phase))``
            so it adds nothing at ``t0_s`` and the trajectory stays continuous.
    """

    t0_s: float
    pos_m: tuple[float, float]
    vel_mps: tuple[float, float] = (0.0, 0.0)
    acc_mps2: tuple[float, float] = (0.0, 0.0)
    bob_m: float = 0.0
    bob_hz: float = 0.0
    bob_phase: float = 0.0

    def at(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Position and velocity at time ``t_s`` (>= ``t0_s``), both (x, y) in m and m/s."""
        dt = t_s - self.t0_s
        p = np.asarray(self.pos_m) + np.asarray(self.vel_mps) * dt + 0.5 * np.asarray(self.acc_mps2) * dt**2
        v = np.asarray(self.vel_mps) + np.asarray(self.acc_mps2) * dt
        if self.bob_m:
            w = 2.0 * np.pi * self.bob_hz
            p = p + np.array([0.0, self.bob_m * (np.sin(self.bob_phase + w * dt) - np.sin(self.bob_phase))])
            v = v + np.array([0.0, self.bob_m * w * np.cos(self.bob_phase + w * dt)])
        return p, v


class Trajectory:
    """A body's motion over a clip, built segment by segment in time order.

    Before the first segment the body holds the first segment's start position.
    """

    def __init__(self, pos_m: tuple[float, float]):
        self.segments: list[Segment] = [Segment(0.0, (float(pos_m[0]), float(pos_m[1])))]
        self.t_s = 0.0  # end of the built part: the next segment starts here

    @property
    def pos_m(self) -> tuple[float, float]:
        """Position at the end of the built part, metres."""
        p, _ = self.segments[-1].at(self.t_s)
        return float(p[0]), float(p[1])

    def _append(
        self,
        vel_mps=(0.0, 0.0),
        acc_mps2=(0.0, 0.0),
        bob_m=0.0,
        bob_hz=0.0,
        bob_phase=0.0,
        pos_m: tuple[float, float] | None = None,
    ) -> None:
        pos = self.pos_m if pos_m is None else (float(pos_m[0]), float(pos_m[1]))
        self.segments.append(
            Segment(
                self.t_s,
                pos,
                tuple(map(float, vel_mps)),
                tuple(map(float, acc_mps2)),
                float(bob_m),
                float(bob_hz),
                float(bob_phase),
            )
        )

    def rest_until(self, t_s: float) -> None:
        """Stay still at the current position until ``t_s`` (no-op if ``t_s`` is not later)."""
        self._append()
        self.t_s = max(self.t_s, float(t_s))

    def move(
        self,
        duration_s: float,
        vel_mps: tuple[float, float],
        acc_mps2: tuple[float, float] = (0.0, 0.0),
        bob_m: float = 0.0,
        bob_hz: float = 0.0,
        bob_phase: float = 0.0,
    ) -> None:
        """Constant-acceleration motion for ``duration_s`` seconds from the current end.

        Args:
            duration_s: length of the motion, seconds (>= 0).
            vel_mps: (vx, vy) starting velocity, m/s (not inherited: a bounce flips it).
            acc_mps2: (ax, ay) constant acceleration, m/s^2.
            bob_m, bob_hz, bob_phase: optional vertical sinusoidal bob (see ``Segment``).
        """
        if duration_s < 0:
            raise ValueError(f"duration_s must be >= 0, got {duration_s}")
        self._append(vel_mps, acc_mps2, bob_m, bob_hz, bob_phase)
        self.t_s += float(duration_s)

    def place(self, pos_m: tuple[float, float]) -> None:
        """Be at rest exactly at ``pos_m`` from the current end on.

        Used right after a computed contact (y == 0 on the floor) so rounding in ``v t + a t^2 / 2``
        can never leave a hair-thin gap between body and floor.
        """
        self._append(pos_m=pos_m)

    def smooth_move(self, duration_s: float, target_m: tuple[float, float]) -> None:
        """Move from rest to rest at ``target_m`` in ``duration_s`` (accelerate half, brake half)."""
        if duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {duration_s}")
        x0, y0 = self.pos_m
        half = duration_s / 2.0
        acc = (4.0 * (target_m[0] - x0) / duration_s**2, 4.0 * (target_m[1] - y0) / duration_s**2)
        self.move(half, (0.0, 0.0), acc)
        self.move(half, (acc[0] * half, acc[1] * half), (-acc[0], -acc[1]))
        self.place(target_m)

    def positions(self, times_s: np.ndarray) -> np.ndarray:
        """Positions at many times.

        Args:
            times_s: [T] times in seconds.
        Returns:
            [T, 2] float64 (x, y) positions in metres.
        """
        times_s = np.asarray(times_s, dtype=np.float64)
        starts = np.array([s.t0_s for s in self.segments])
        idx = np.clip(np.searchsorted(starts, times_s, side="right") - 1, 0, len(self.segments) - 1)
        pos = np.array([s.pos_m for s in self.segments])[idx]
        vel = np.array([s.vel_mps for s in self.segments])[idx]
        acc = np.array([s.acc_mps2 for s in self.segments])[idx]
        dt = np.maximum(times_s - starts[idx], 0.0)[:, None]
        out = pos + vel * dt + 0.5 * acc * dt**2
        bob = np.array([s.bob_m for s in self.segments])[idx]
        if np.any(bob):
            hz = np.array([s.bob_hz for s in self.segments])[idx]
            ph = np.array([s.bob_phase for s in self.segments])[idx]
            w = 2.0 * np.pi * hz
            out[:, 1] += bob * (np.sin(ph + w * dt[:, 0]) - np.sin(ph))
        return out


def fall_time_s(height_m: float, vy0_mps: float = 0.0) -> float:
    """Time to fall ``height_m`` under gravity starting with upward speed ``vy0_mps``."""
    if height_m < 0:
        raise ValueError(f"height_m must be >= 0, got {height_m}")
    return (vy0_mps + np.sqrt(vy0_mps**2 + 2.0 * GRAVITY_MPS2 * height_m)) / GRAVITY_MPS2
