"""2-D rendering of a scene with numpy: textured wall and floor, flat-coloured bodies.

Frames are sampled at t = k / fps, except that a body with a sounding contact whose nearest frame
is k is drawn at its exact contact pose in frame k (the animator's "contact frame"): the contact
is then visible in the frame nearest to the sound onset, whatever the event's sub-frame time.
The camera pan moves wall, floor and bodies together by whole pixels.

Pixel geometry: pixel (row i, column j) covers [j, j+1) x [i, i+1) and belongs to a shape when its
centre (j + 0.5, i + 0.5) is inside. The floor's top surface is the line y = floor_row; a body
touching the floor has its lowest pixel row at floor_row - 1, directly above the first floor row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from v2a_server.synth.materials import MATERIALS
from v2a_server.synth.scene import FLOOR_ROW_FRACTION, PAN_MAX_M, VIEW_WIDTH_M, Body, Scene

LABEL_WALL = -1
LABEL_FLOOR = -2
_LEG_RGB = (62, 72, 112)


@dataclass(frozen=True)
class Camera:
    """Pixel mapping of the world for one image size.

    Attributes:
        size_px: image width and height, pixels.
        px_per_m: pixels per metre.
        floor_row: image row of the floor surface (y = 0); the floor occupies rows >= floor_row.
        pad_px: extra texture columns on each side so that a pan never runs off the texture.
    """

    size_px: int
    px_per_m: float
    floor_row: int
    pad_px: int

    @classmethod
    def for_size(cls, size_px: int) -> "Camera":
        px_per_m = size_px / VIEW_WIDTH_M
        return cls(
            size_px,
            px_per_m,
            int(round(FLOOR_ROW_FRACTION * size_px)),
            int(np.ceil(PAN_MAX_M * px_per_m)) + 2,
        )

    def to_px(self, x_m: np.ndarray, y_m: np.ndarray, cam_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World (x, y) metres -> image (column, row) floats for camera offsets ``cam_px``."""
        return x_m * self.px_per_m - cam_px, self.floor_row - y_m * self.px_per_m


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell_px: float) -> np.ndarray:
    """[h, w] smooth value noise in [0, 1] with features about ``cell_px`` pixels wide."""
    gh, gw = int(np.ceil(h / cell_px)) + 2, int(np.ceil(w / cell_px)) + 2
    grid = rng.random((gh, gw))
    ys = np.arange(h) / cell_px
    xs = np.arange(w) / cell_px
    rows = np.array([np.interp(xs, np.arange(gw), grid[r]) for r in range(gh)])
    return np.array([np.interp(ys, np.arange(gh), rows[:, c]) for c in range(w)]).T


def _floor_texture(rng: np.random.Generator, material: str, h: int, w: int, scale: float) -> np.ndarray:
    """[h, w, 3] float RGB texture of a floor of ``material``; ``scale`` = size / 128."""
    base = np.array(MATERIALS[material].colour_rgb, dtype=np.float64)
    if material == "glass":
        base = 0.45 * base + 0.55 * 235.0  # a pale pane, not the colour of glass objects standing on it
    yy, xx = np.mgrid[0:h, 0:w]
    fine = rng.random((h, w))
    if material == "wood":
        plank_h = max(2, int(round(4 * scale)))
        board = yy // plank_h
        shade = rng.uniform(0.8, 1.15, size=board.max() + 1)[board]
        seam_period = int(round(rng.uniform(30, 50) * scale))
        seam = ((xx + board * 17) % seam_period) == 0
        grain = 0.08 * np.sin(xx * 0.9 / scale + board * 3.0 + 3 * _smooth_noise(rng, h, w, 6 * scale))
        value = shade * (1 + grain + 0.05 * (fine - 0.5)) * np.where(seam | (yy % plank_h == 0), 0.7, 1.0)
    elif material == "ceramic":
        tile = max(5, int(round(rng.uniform(11, 16) * scale)))
        grout = ((yy % tile) == 0) | ((xx % tile) == 0)
        shade = (
            1.0
            + 0.04 * (fine - 0.5)
            + 0.05 * rng.uniform(-1, 1, size=(h // tile + 1, w // tile + 1))[yy // tile, xx // tile]
        )
        value = np.where(grout, 0.62, shade)
    elif material == "metal":
        # Brushed sheet: row-wise streaks plus a rivet grid.
        value = (
            0.85 + 0.2 * rng.random((h, 1)) + 0.1 * _smooth_noise(rng, h, w, 12 * scale) + 0.04 * (fine - 0.5)
        )
        value = np.where(
            (xx % max(8, int(24 * scale)) == 3) & (yy % max(4, int(10 * scale)) == 3), 0.55, value
        )
    elif material == "glass":
        value = 0.95 + 0.1 * (((xx + yy) // max(3, int(6 * scale))) % 5 == 0) + 0.03 * (fine - 0.5)
    elif material == "gravel":
        value = 0.6 + 0.8 * fine * (_smooth_noise(rng, h, w, 2.0 * scale) > 0.3)
        base = base + rng.uniform(-25, 25, size=(h, w, 1)) * (fine[..., None] > 0.7)
    elif material == "cloth":
        weave = ((xx // max(1, int(2 * scale)) + yy // max(1, int(2 * scale))) % 2) * 0.12
        value = 0.9 + weave + 0.25 * (_smooth_noise(rng, h, w, 10 * scale) - 0.5)
    else:
        raise ValueError(f"no floor texture for material {material!r}")
    value = np.asarray(value, dtype=np.float64)
    tex = base * value[..., None]
    tex[0] *= 0.55  # the floor's front edge reads as a line
    return np.clip(tex, 0, 255)


def _wall_texture(
    rng: np.random.Generator, rgb: tuple[int, int, int], h: int, w: int, scale: float
) -> np.ndarray:
    """[h, w, 3] float RGB wall: soft blotches, a vertical gradient and faint wallpaper stripes
    (the stripes make a camera pan visible everywhere)."""
    base = np.array(rgb, dtype=np.float64)
    yy, xx = np.mgrid[0:h, 0:w]
    period = max(4, int(round(rng.uniform(8, 20) * scale)))
    stripes = 0.07 * ((xx % period) < period // 2)
    blotch = 0.25 * (_smooth_noise(rng, h, w, 24 * scale) - 0.5)
    grad = 0.15 * (yy / max(h - 1, 1) - 0.5)
    value = 1.0 + stripes + blotch + grad + 0.03 * (rng.random((h, w)) - 0.5)
    return np.clip(base * value[..., None], 0, 255)


def render_backdrop(scene: Scene, camera: Camera) -> np.ndarray:
    """Wall above the floor and the floor below, wider than the image by ``pad_px`` on each side.

    Returns:
        [size, size + 2 * pad_px, 3] uint8.
    """
    rng = np.random.default_rng(scene.texture_seed)
    size = camera.size_px
    width = size + 2 * camera.pad_px
    scale = size / 128.0
    wall = _wall_texture(rng, scene.backdrop_rgb, camera.floor_row, width, scale)
    floor = _floor_texture(rng, scene.floor_material, size - camera.floor_row, width, scale)
    return np.concatenate([wall, floor], axis=0).round().astype(np.uint8)


def body_render_times(body: Body, times_s: np.ndarray, fps: float) -> np.ndarray:
    """Per-frame times at which to pose ``body``: frame times, except the frame nearest each of its
    contacts shows the exact contact time.

    Args:
        body: the body.
        times_s: [T] frame times (k / fps), seconds.
        fps: frames per second.
    Returns:
        [T] float64 seconds.
    """
    out = np.array(times_s, dtype=np.float64, copy=True)
    best = np.full(out.shape, np.inf)
    for t in body.contact_times_s:
        k = int(round(t * fps))
        if 0 <= k < out.size and abs(t - k / fps) < best[k]:
            best[k] = abs(t - k / fps)
            out[k] = t
    return out


def _fill(
    frame: np.ndarray,
    labels: np.ndarray | None,
    rows: slice,
    cols: slice,
    mask: np.ndarray | None,
    rgb: tuple[int, int, int],
    label: int,
) -> None:
    region = frame[rows, cols]
    if mask is None:
        region[...] = rgb
        if labels is not None:
            labels[rows, cols] = label
    else:
        region[mask] = rgb
        if labels is not None:
            labels[rows, cols][mask] = label


def _draw_rect(frame, labels, x0: float, x1: float, y0: float, y1: float, rgb, label: int) -> None:
    """Fill pixels whose centres lie in [x0, x1] x [y0, y1] (image coordinates)."""
    h, w = frame.shape[:2]
    c0, c1 = max(int(np.ceil(x0 - 0.5)), 0), min(int(np.floor(x1 - 0.5)), w - 1)
    r0, r1 = max(int(np.ceil(y0 - 0.5)), 0), min(int(np.floor(y1 - 0.5)), h - 1)
    if c1 >= c0 and r1 >= r0:
        _fill(frame, labels, slice(r0, r1 + 1), slice(c0, c1 + 1), None, rgb, label)


def _draw_circle(frame, labels, cx: float, cy: float, r: float, rgb, label: int) -> None:
    """Fill pixels whose centres lie within ``r`` of (cx, cy) (image coordinates)."""
    h, w = frame.shape[:2]
    c0, c1 = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)), w - 1)
    r0, r1 = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)), h - 1)
    if c1 < c0 or r1 < r0:
        return
    ys = np.arange(r0, r1 + 1)[:, None] + 0.5 - cy
    xs = np.arange(c0, c1 + 1)[None, :] + 0.5 - cx
    mask = ys**2 + xs**2 <= r * r
    _fill(frame, labels, slice(r0, r1 + 1), slice(c0, c1 + 1), mask, rgb, label)


def render_frames(scene: Scene, fps: float, size_px: int, *, return_labels: bool = False):
    """Draw every video frame of ``scene``.

    Args:
        scene: the scene.
        fps: frames per second; frame k shows time k / fps (see the module note on contact frames).
        size_px: width and height of the square image, pixels.
        return_labels: also return the per-pixel owner map.
    Returns:
        frames: [T, size, size, 3] uint8 RGB, T = round(duration_s * fps).
        labels (only with ``return_labels``): [T, size, size] int16: body id, LABEL_WALL or LABEL_FLOOR
            (before flicker, which changes colours but not owners).
    """
    camera = Camera.for_size(size_px)
    n_frames = int(round(scene.duration_s * fps))
    times = np.arange(n_frames) / fps
    backdrop = render_backdrop(scene, camera)
    cam_px = np.round(scene.camera.positions(times)[:, 0] * camera.px_per_m).astype(np.int64)
    frames = np.empty((n_frames, size_px, size_px, 3), dtype=np.uint8)
    for k, off in enumerate(camera.pad_px + cam_px):
        frames[k] = backdrop[:, off : off + size_px]
    labels = None
    if return_labels:
        labels = np.full((n_frames, size_px, size_px), LABEL_WALL, dtype=np.int16)
        labels[:, camera.floor_row :] = LABEL_FLOOR

    for body in scene.bodies:
        pos = body.trajectory.positions(body_render_times(body, times, fps))
        cx, bottom = camera.to_px(pos[:, 0], pos[:, 1], cam_px)
        w_px = body.width_m * camera.px_per_m
        h_px = body.height_m * camera.px_per_m
        for k in range(n_frames):
            lab = None if labels is None else labels[k]
            if body.shape == "circle":
                _draw_circle(
                    frames[k], lab, cx[k], bottom[k] - w_px / 2, w_px / 2, body.colour_rgb, body.body_id
                )
                continue
            if body.shape == "shoe":
                # A leg from the top of the image down to the shoe (drawn first, the shoe covers its foot).
                _draw_rect(
                    frames[k],
                    lab,
                    cx[k] - 0.22 * w_px,
                    cx[k] + 0.12 * w_px,
                    -1.0,
                    bottom[k] - h_px,
                    _LEG_RGB,
                    body.body_id,
                )
            _draw_rect(
                frames[k],
                lab,
                cx[k] - w_px / 2,
                cx[k] + w_px / 2,
                bottom[k] - h_px,
                bottom[k],
                body.colour_rgb,
                body.body_id,
            )

    if scene.flicker is not None:
        gains = scene.flicker.gain(times)
        for k in np.flatnonzero(gains != 1.0):
            lut = np.clip(np.arange(256) * gains[k], 0, 255).round().astype(np.uint8)
            frames[k] = lut[frames[k]]
    if return_labels:
        return frames, labels
    return frames
