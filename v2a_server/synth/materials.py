"""Materials of the synthetic world: how each one rings, bounces, looks and is named.

One table, so that sound, physics, rendering and captions agree on what "glass" means.
Modal numbers are plausible textbook shapes, not measurements: wood is a free bar (inharmonic
1 : 2.76 : 5.40 : 8.93, short decay), metal a thin plate (dense inharmonic cluster, long ring),
glass a bell-like shell (high and bright, long ring), ceramic a stiff shell (high, medium decay),
rubber a lossy low thud. Gravel and cloth have no modes: they are noisy transients.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Material:
    """One material's sound, bounce and look.

    Attributes:
        name: key used in events and the manifest ("wood", "metal", ...).
        adjective: caption adjective for objects ("wooden", "metal", ...).
        floor_phrase: caption noun phrase when this material is the floor ("a wooden floor").
        f0_range_hz: (low, high) lowest modal frequency of a 0.1 m object; larger objects ring lower.
        mode_ratios: modal frequencies relative to f0 (inharmonic for most materials).
        mode_gains: relative excitation of each mode (same length as ``mode_ratios``).
        decay_range_s: (low, high) exp-decay time constant of the lowest mode; higher modes decay
            faster by ``ratio ** -decay_exponent``.
        decay_exponent: how quickly damping grows with frequency.
        restitution: coefficient of restitution against a hard floor (0..1).
        floor_restitution_factor: multiplies the object's restitution when this is the floor
            (soft floors swallow bounces).
        softness: 0 (hard, sharp click) .. 1 (soft, dull thud); damps the partner's high modes and
            lengthens the contact transient.
        noise_kind: "" for modal materials, "gravel" (crunch of grains) or "cloth" (soft thud).
        colour_rgb: base colour for objects and floors of this material.
        level: loudness of this material's modes relative to the others (perceptual balance).
    """

    name: str
    adjective: str
    floor_phrase: str
    f0_range_hz: tuple[float, float]
    mode_ratios: tuple[float, ...]
    mode_gains: tuple[float, ...]
    decay_range_s: tuple[float, float]
    decay_exponent: float
    restitution: float
    floor_restitution_factor: float
    softness: float
    noise_kind: str
    colour_rgb: tuple[int, int, int]
    level: float


MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material(
            name="wood",
            adjective="wooden",
            floor_phrase="a wooden floor",
            f0_range_hz=(220.0, 520.0),
            mode_ratios=(1.0, 2.76, 5.40, 8.93),
            mode_gains=(1.0, 0.55, 0.35, 0.2),
            decay_range_s=(0.035, 0.08),
            decay_exponent=0.7,
            restitution=0.55,
            floor_restitution_factor=1.0,
            softness=0.25,
            noise_kind="",
            colour_rgb=(150, 98, 52),
            level=1.0,
        ),
        Material(
            name="metal",
            adjective="metal",
            floor_phrase="a metal plate",
            f0_range_hz=(420.0, 1100.0),
            mode_ratios=(1.0, 1.59, 2.14, 2.65, 3.16, 3.50, 4.06),
            mode_gains=(1.0, 0.8, 0.7, 0.55, 0.45, 0.35, 0.3),
            decay_range_s=(0.5, 1.2),
            decay_exponent=0.45,
            restitution=0.5,
            floor_restitution_factor=0.95,
            softness=0.0,
            noise_kind="",
            colour_rgb=(108, 114, 128),
            level=0.55,
        ),
        Material(
            name="glass",
            adjective="glass",
            floor_phrase="a glass table",
            f0_range_hz=(900.0, 1900.0),
            mode_ratios=(1.0, 2.32, 4.25, 6.63),
            mode_gains=(1.0, 0.7, 0.5, 0.3),
            decay_range_s=(0.35, 0.8),
            decay_exponent=0.6,
            restitution=0.6,
            floor_restitution_factor=1.0,
            softness=0.0,
            noise_kind="",
            colour_rgb=(70, 160, 165),
            level=0.6,
        ),
        Material(
            name="ceramic",
            adjective="ceramic",
            floor_phrase="a ceramic tile floor",
            f0_range_hz=(650.0, 1500.0),
            mode_ratios=(1.0, 1.71, 2.93, 4.18, 5.62),
            mode_gains=(1.0, 0.75, 0.5, 0.35, 0.2),
            decay_range_s=(0.1, 0.25),
            decay_exponent=0.6,
            restitution=0.45,
            floor_restitution_factor=1.0,
            softness=0.05,
            noise_kind="",
            colour_rgb=(232, 226, 210),
            level=0.8,
        ),
        Material(
            name="rubber",
            adjective="rubber",
            floor_phrase="a rubber mat",
            f0_range_hz=(90.0, 220.0),
            mode_ratios=(1.0, 1.83, 2.95),
            mode_gains=(1.0, 0.4, 0.15),
            decay_range_s=(0.018, 0.04),
            decay_exponent=0.8,
            restitution=0.8,
            floor_restitution_factor=0.5,
            softness=0.8,
            noise_kind="",
            colour_rgb=(205, 50, 45),
            level=1.4,
        ),
        Material(
            name="gravel",
            adjective="gravel",
            floor_phrase="gravel",
            f0_range_hz=(1500.0, 6000.0),
            mode_ratios=(),
            mode_gains=(),
            decay_range_s=(0.002, 0.006),
            decay_exponent=0.0,
            restitution=0.3,
            floor_restitution_factor=0.35,
            softness=0.6,
            noise_kind="gravel",
            colour_rgb=(128, 120, 108),
            level=0.9,
        ),
        Material(
            name="cloth",
            adjective="cloth",
            floor_phrase="a carpet",
            f0_range_hz=(0.0, 0.0),
            mode_ratios=(),
            mode_gains=(),
            decay_range_s=(0.03, 0.06),
            decay_exponent=0.0,
            restitution=0.2,
            floor_restitution_factor=0.3,
            softness=1.0,
            noise_kind="cloth",
            colour_rgb=(96, 70, 130),
            level=1.2,
        ),
    )
}

#: Materials a floor can be made of (rubber mats are left out: they barely sound).
FLOOR_MATERIALS: tuple[str, ...] = ("wood", "ceramic", "metal", "glass", "gravel", "cloth")


@dataclass(frozen=True)
class ObjectKind:
    """A kind of object: its shape, size range and the materials it may be made of.

    Attributes:
        noun: caption noun ("ball", "can").
        shape: "circle" or "rect".
        width_range_m: (low, high) width in metres (the diameter for circles).
        aspect_range: (low, high) height / width (1 for circles).
        materials: allowed material names.
    """

    noun: str
    shape: str
    width_range_m: tuple[float, float]
    aspect_range: tuple[float, float]
    materials: tuple[str, ...]


OBJECT_KINDS: dict[str, ObjectKind] = {
    k.noun: k
    for k in (
        ObjectKind("ball", "circle", (0.1, 0.2), (1.0, 1.0), ("rubber", "wood", "metal", "glass")),
        ObjectKind("can", "rect", (0.08, 0.12), (1.3, 1.8), ("metal",)),
        ObjectKind("block", "rect", (0.09, 0.16), (0.7, 1.2), ("wood", "rubber", "metal")),
        ObjectKind("bottle", "rect", (0.07, 0.09), (2.0, 2.6), ("glass",)),
        ObjectKind("cup", "rect", (0.08, 0.12), (0.9, 1.2), ("ceramic", "metal", "glass")),
        ObjectKind("plate", "rect", (0.17, 0.24), (0.12, 0.18), ("ceramic", "metal", "wood")),
        ObjectKind("bowl", "rect", (0.12, 0.18), (0.45, 0.6), ("ceramic", "wood", "metal", "glass")),
        ObjectKind("vase", "rect", (0.08, 0.11), (1.6, 2.2), ("ceramic", "glass")),
        ObjectKind("tile", "rect", (0.12, 0.18), (0.1, 0.15), ("ceramic",)),
    )
}

#: Object kinds that can be dropped, hit or pushed into each other; balls also bounce.
DROPPABLE_KINDS: tuple[str, ...] = ("ball", "can", "block", "bottle", "cup", "plate", "bowl", "vase", "tile")
HITTABLE_KINDS: tuple[str, ...] = ("can", "block", "bottle", "cup", "plate", "bowl", "vase", "tile")
SLIDABLE_KINDS: tuple[str, ...] = ("ball", "can", "block", "cup", "bowl")

#: Strikers for the "hit" action: caption phrase, material, width and length in metres.
STRIKERS: tuple[tuple[str, str, float, float], ...] = (
    ("a wooden stick", "wood", 0.03, 0.34),
    ("a metal rod", "metal", 0.025, 0.36),
    ("a rubber mallet", "rubber", 0.06, 0.30),
)


def object_phrase(noun: str, material: str) -> str:
    """Caption phrase for an object, e.g. ("ball", "rubber") -> "a rubber ball".

    Args:
        noun: an ``OBJECT_KINDS`` key.
        material: a ``MATERIALS`` key.
    Returns:
        The noun phrase with its article.
    """
    return f"a {MATERIALS[material].adjective} {noun}"
