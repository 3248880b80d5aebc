"""A synthetic AVA world: drawn people acting out AVA v2.2 classes, in the official AVA formats.

``fbil-train synth --out DIR --seed N [--videos K] [--seconds S]`` writes::

    DIR/videos/<video_id>.mp4           320x240, 30 fps, S seconds (h264, else mpeg4)
    DIR/annotations/train.csv, val.csv  video_id,timestamp,x1,y1,x2,y2,action_id,person_id
    DIR/annotations/labelmap.pbtxt      the classes used, ``label { name label_id label_type }``
    DIR/annotations/exclusions.csv      keyframes where some person changes action
    DIR/dataset.json, DIR/README        seed, classes and the plan of every video

Keyframes are the integer seconds ``2 .. S-2``, so that the 32-frame window at 2-frame spacing
(-1.07 s .. +1.0 s) lies inside the video (whose last frame is at ``S - 1/30`` s). A person is
a few capsules (legs, torso, arms, head with eyes and, in profile, a nose showing the facing side)
in a saturated colour of its own, over a desaturated textured background. Each person has one
pose class per second; a keyframe is annotated with the pose of the two seconds around it, and
listed in the exclusions instead when some person's pose changes at it. How each class is made
separable:

* stand (12): no motion; walk (14): 0.5-0.8 heights/s; run/jog (10): 1.8-2.5 heights/s, leaning;
* jump/leap (7): parabolic hops of 0.35-0.5 heights, no horizontal motion;
* fall down (5): the whole body tips over the feet to horizontal, lies, gets up, every ~1 s;
* bend/bow (1): the upper body bows over the hip (60-85 degrees), legs stay upright;
* carry/hold (17): an object held in front of the body with both arms, moving with the person
  (same objects lie about elsewhere, static); see :data:`CARRIED_OBJECT_RADIUS`;
* hand shake (68), hug (70), fight/hit (64): two standing people facing each other, hands
  meeting and pumping (1.6 Hz, so that 4-frame sampling at 30 fps resolves it) / torsos
  touching with arms around / punching alternately, leaning in, the one hit pushed back;
* watch (a person) (80): a standing person in profile with another person's feet on its facing
  side, more than 0.4 of its height away (never a hugging partner): derived from the drawn
  geometry at the keyframe.

``--classes 5=slip,14,64=brawl`` (``generate(classes=...)``) keeps a subset of the classes, with
custom names where given: only those are annotated and written to the label map (AVA ids and
types kept), and only they are featured.

Everything is drawn from ``numpy.random.default_rng([seed, video_index])``: the same seed gives
byte-identical CSVs and identical frames.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from fbil.model.labels import ActionClass, LabelMap, ava_v22

__all__ = [
    "CLASS_IDS",
    "class_labels",
    "FPS",
    "HEIGHT",
    "WIDTH",
    "SynthDataset",
    "build_parser",
    "generate",
    "keyframe_times",
    "main",
    "pick_codec",
]

WIDTH, HEIGHT, FPS = 320, 240, 30
GOP = 15  # frames between key frames: a keyframe window never decodes from far before it
# radius of a carried object, as a fraction of the person's height; it is held in front of the
# body, inside the person's box. carry/hold is still the demo model's weakest class (AP 0.59;
# 0.54 with the object at the hand of one arm, 0.54 with radius 0.2): see README, The demo model
CARRIED_OBJECT_RADIUS = 0.15
# arm angles of a carrier (radians): in profile both forward; facing the camera both inwards
CARRY_ARMS_PROFILE, CARRY_ARMS_FRONT = (1.15, 1.15), (-0.5, 0.5)
BEND, FALL, JUMP, RUN, STAND, WALK = 1, 5, 7, 10, 12, 14
CARRY, FIGHT, SHAKE, HUG, WATCH = 17, 64, 68, 70, 80
POSES = (STAND, WALK, RUN, JUMP, FALL, BEND)
CONTACT = (SHAKE, HUG, FIGHT)
CLASS_IDS = (BEND, FALL, JUMP, RUN, STAND, WALK, CARRY, FIGHT, SHAKE, HUG, WATCH)
FEATURED = (STAND, WALK, RUN, JUMP, FALL, BEND, CARRY, SHAKE, HUG, FIGHT, WATCH)
UPRIGHT = (STAND, WALK, RUN)
SPEED = {WALK: (0.5, 0.8), RUN: (1.8, 2.5)}  # heights per second
# "facing another person": the other's feet lie this far (in the watcher's heights) on its facing
# side; hugging partners (0.24 apart) are never watching, shake/fight partners (>= 0.56) always
WATCH_MIN_GAP = 0.4
SHAKE_HZ = 1.6  # hand-shake pumps per second (+-0.4 rad)
# a fighter leans into each punch (radians) and the one hit is pushed back (heights): whole-body
# motion that tells fighting from the hand shake at the same distance
FIGHT_LEAN, FIGHT_RECOIL = 0.3, 0.1
SEPARATION = {SHAKE: 0.62, HUG: 0.24, FIGHT: 0.56}  # body axes apart, in heights
SKIN = ((255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36))
DARK = (20, 20, 20)
Rgb = tuple[int, int, int]
Point = tuple[float, float]
Capsule = tuple[Point, Point, float, Rgb]  # segment ends (pixels), radius, colour


# --------------------------------------------------------------------------- plan


@dataclass
class Actor:
    """One person's plan: look, place, motion parameters and a pose class per second."""

    height: float
    ground: float  # y of the feet (pixels)
    x0: float  # x of the feet at t = 0
    body: Rgb
    head: Rgb
    facing: int  # +1 right, -1 left, 0 towards the camera (standing only)
    poses: list[int]
    phase: float
    walk: float  # heights per second
    run: float
    hop_period: float
    hop_height: float  # heights
    fall_period: float
    bow_period: float
    bow_angle: float  # radians
    carry: bool = False
    interaction: int | None = None
    role: int = 0  # 0 or 1 within a pair


@dataclass
class Scene:
    """One video's plan; ``excluded`` keyframes are those where some person changes pose."""

    video_id: str
    seconds: int
    background: np.ndarray
    object_colour: Rgb
    actors: list[Actor]
    excluded: list[int] = field(default_factory=list)


def keyframe_times(seconds: int) -> list[int]:
    """Annotated timestamps: ``2 .. seconds-2`` (their -1.07 .. +1.0 s windows lie inside)."""
    return list(range(2, seconds - 1))


def _colours(rng: np.random.Generator, n: int) -> list[Rgb]:
    """``n`` saturated colours with well separated hues."""
    offset, order = rng.random(), rng.permutation(n)
    out = []
    for k in order:
        hue = (offset + (k + rng.uniform(-0.12, 0.12)) / n) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.8, 1.0), rng.uniform(0.75, 1.0))
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


def _new_actor(rng: np.random.Generator, pose: int, body: Rgb, seconds: int) -> Actor:
    height = float(rng.uniform(55, 100))
    actor = Actor(
        height=height,
        ground=float(rng.uniform(1.6 * height + 4, HEIGHT - 0.06 * height - 3)),
        x0=float(rng.uniform(0.2, 0.8) * WIDTH),
        body=body,
        head=SKIN[int(rng.integers(len(SKIN)))],
        facing=int(rng.choice([-1, 1])),
        poses=[pose] * seconds,
        phase=float(rng.random()),
        walk=float(rng.uniform(*SPEED[WALK])),
        run=float(rng.uniform(*SPEED[RUN])),
        hop_period=float(rng.uniform(0.5, 0.7)),
        hop_height=float(rng.uniform(0.35, 0.5)),
        fall_period=float(rng.uniform(0.9, 1.1)),
        bow_period=float(rng.uniform(0.9, 1.3)),
        bow_angle=math.radians(float(rng.uniform(60, 85))),
    )
    if pose == STAND and rng.random() < 0.5:
        actor.facing = 0
    if pose in (FALL, BEND):  # room on the facing side for the tipped body
        near, far = 0.3 * height + 4, (1.15 if pose == FALL else 0.8) * height + 4
        lo, hi = (near, WIDTH - far) if actor.facing > 0 else (far, WIDTH - near)
        actor.x0 = float(rng.uniform(lo, hi))
    return actor


def _random_pose(rng: np.random.Generator, choices: Sequence[int] = POSES) -> int:
    return int(choices[int(rng.integers(len(choices)))])


def _plan_scene(rng: np.random.Generator, video_id: str, featured: int, seconds: int) -> Scene:
    """People of one video: the ``featured`` class first, then 0-3 random others."""
    pair = featured in (*CONTACT, WATCH)
    count = int(rng.integers(2 if pair else 1, 5))
    colours = _colours(rng, count + 1)  # the last one is for objects
    if pair:
        actors = _pair(rng, featured, colours[0], colours[1], seconds)
    else:
        pose = _random_pose(rng, UPRIGHT) if featured == CARRY else featured
        actors = [_new_actor(rng, pose, colours[0], seconds)]
        actors[0].carry = featured == CARRY
    while len(actors) < count:
        pose = _random_pose(rng)
        actor = _new_actor(rng, pose, colours[len(actors)], seconds)
        actor.carry = pose in UPRIGHT and rng.random() < 0.3
        actors.append(actor)
    scene = Scene(video_id, seconds, _background(rng, colours[-1]), colours[-1], actors)
    _plan_change(rng, scene, actors[2 if pair else 1 :])
    return scene


def _pair(
    rng: np.random.Generator, kind: int, first: Rgb, second: Rgb, seconds: int
) -> list[Actor]:
    """Two people facing each other for a contact class; for WATCH the first stands facing
    the second, who does anything some distance away."""
    a = _new_actor(rng, STAND, first, seconds)
    a.facing = int(rng.choice([-1, 1]))
    if kind == WATCH:
        b = _new_actor(rng, _random_pose(rng, (STAND, JUMP, BEND)), second, seconds)
        b.x0 = float(np.clip(b.x0, 0.35 * WIDTH, 0.65 * WIDTH))
        a.facing = 1 if b.x0 > WIDTH / 2 else -1
        gap = float(rng.uniform(0.8, 1.3)) * a.height
        margin = 0.3 * a.height + 4
        a.x0 = float(np.clip(b.x0 - a.facing * gap, margin, WIDTH - margin))
        return [a, b]
    b = _new_actor(rng, STAND, second, seconds)
    b.height = float(np.clip(a.height * rng.uniform(0.9, 1.1), 55, 100))
    b.ground = a.ground + float(rng.uniform(-2, 2))
    b.facing = -a.facing
    separation = SEPARATION[kind] * (a.height + b.height) / 2
    a.x0 = float(rng.uniform(0.3 * WIDTH, 0.7 * WIDTH))
    b.x0 = a.x0 + a.facing * separation
    b.phase = a.phase
    for role, actor in enumerate((a, b)):
        actor.interaction, actor.role = kind, role
    return [a, b]


def _plan_change(rng: np.random.Generator, scene: Scene, free: Sequence[Actor]) -> None:
    """Sometimes, at one keyframe, some empty-handed upright/jumping people change pose."""
    keyframes = keyframe_times(scene.seconds)
    if len(keyframes) < 2 or rng.random() >= 0.4:
        return
    change = int(rng.choice(keyframes))
    for actor in free:
        old = actor.poses[0]
        if actor.carry or old in (FALL, BEND) or rng.random() >= 0.6:
            continue
        new = _random_pose(rng, [p for p in (STAND, WALK, RUN, JUMP) if p != old])
        actor.poses = [old] * change + [new] * (scene.seconds - change)
        if actor.facing == 0:
            actor.facing = int(rng.choice([-1, 1]))
        scene.excluded = [change]


# --------------------------------------------------------------------------- background


def _background(rng: np.random.Generator, object_colour: Rgb) -> np.ndarray:
    """A desaturated gradient, blotchy noise or stripes, with grain and 0-2 lying objects."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    c1, c2 = _muted(rng), _muted(rng)
    kind = int(rng.integers(3))
    if kind == 0:
        angle = rng.uniform(0, 2 * math.pi)
        ramp = xs * math.cos(angle) + ys * math.sin(angle)
        mix = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    elif kind == 1:
        cell = int(rng.integers(12, 40))
        grid = rng.random((HEIGHT // cell + 2, WIDTH // cell + 2)).astype(np.float32)
        mix = _bilinear(grid, ys / cell, xs / cell)
    else:
        angle, wavelength = rng.uniform(0, math.pi), rng.uniform(8, 40)
        phase = (xs * math.cos(angle) + ys * math.sin(angle)) / wavelength
        mix = 0.5 + 0.5 * np.sin(2 * math.pi * phase)
    img = c1 + (c2 - c1) * mix[..., None]
    img += rng.normal(0, 5, img.shape[:2]).astype(np.float32)[..., None]
    out = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3))):
        centre = (rng.uniform(20, WIDTH - 20), rng.uniform(0.5 * HEIGHT, HEIGHT - 10))
        _draw(out, [(centre, centre, rng.uniform(7, 12), object_colour)])
    return out


def _muted(rng: np.random.Generator) -> np.ndarray:
    colour = rng.uniform(50, 210, 3)
    grey = colour.mean()
    return (grey + rng.uniform(0.1, 0.35) * (colour - grey)).astype(np.float32)


def _bilinear(grid: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = y - y0, x - x0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


# --------------------------------------------------------------------------- motion


@dataclass(frozen=True)
class Track:
    """Per-frame state of one person: feet x, facing and pose class (arrays of frames)."""

    x: np.ndarray
    facing: np.ndarray
    pose: np.ndarray


def _track(actor: Actor, frames: int) -> Track:
    """Feet x per frame: the integrated speed, reflected off the side margins (facing follows)."""
    t = np.arange(frames) / FPS
    pose = np.asarray(actor.poses)[np.minimum(t.astype(int), len(actor.poses) - 1)]
    speed = np.where(pose == WALK, actor.walk, np.where(pose == RUN, actor.run, 0.0))
    sign = actor.facing or 1
    path = np.concatenate([[0.0], np.cumsum(speed[:-1])]) * sign * actor.height / FPS
    lo = 0.45 * actor.height + 4
    span = WIDTH - 2 * lo
    u = np.mod(actor.x0 + path - lo, 2 * span)
    back = u > span
    x = lo + np.where(back, 2 * span - u, u)
    facing = np.where(speed > 0, np.where(back, -sign, sign), actor.facing)
    if not speed.any():  # still people keep their place (and pairs their contact)
        x = np.full(frames, actor.x0)
    return Track(x, facing.astype(int), pose)


def _rotate(p: Point, about: Point, angle: float) -> Point:
    """Rotate ``p`` about ``about`` (y up) so that positive angles tip +y towards +x."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = p[0] - about[0], p[1] - about[1]
    return (about[0] + c * dx + s * dy, about[1] - s * dx + c * dy)


def _limb(start: Point, length: float, angle: float) -> Point:
    """End of a limb from ``start``, turned forward by ``angle`` from hanging straight down."""
    return (start[0] + length * math.sin(angle), start[1] - length * math.cos(angle))


def _cycle(t: float, period: float, phase: float) -> float:
    return (t / period + phase) % 1.0


def _hop(t: float, actor: Actor) -> float:
    """Height of the feet (heights): parabolic hops, 70% of each period in the air."""
    p = _cycle(t, actor.hop_period, actor.phase) / 0.7
    return 4 * actor.hop_height * p * (1 - p) if p < 1 else 0.0


def _fall_angle(t: float, actor: Actor) -> float:
    """Tip of the whole body: stand, fall (accelerating) to horizontal, lie, get up."""
    p = _cycle(t, actor.fall_period, actor.phase)
    if p < 0.3:
        return 0.0
    if p < 0.55:
        return math.pi / 2 * ((p - 0.3) / 0.25) ** 2
    if p < 0.8:
        return math.pi / 2
    return math.pi / 2 * (1 - (p - 0.8) / 0.2)


@dataclass(frozen=True)
class Pose:
    """Joint angles of one frame (radians; arms and legs from hanging down, + forward)."""

    legs: tuple[float, float] = (0.12, -0.12)
    arms: tuple[float, float] = (0.1, -0.1)
    reach: float = 1.0  # front arm length factor
    lift: float = 0.0  # feet above the ground (heights)
    lean: float = 0.0  # whole body tipped forward about the feet
    bow: float = 0.0  # upper body bowed forward about the hip


def _pose(actor: Actor, pose: int, t: float) -> Pose:
    w = 2 * math.pi * t
    if pose == WALK:
        s = math.sin(1.8 * w + 2 * math.pi * actor.phase)
        out = Pose((0.45 * s, -0.45 * s), (-0.5 * s, 0.5 * s), lift=0.015 * abs(s))
    elif pose == RUN:
        s = math.sin(2.8 * w + 2 * math.pi * actor.phase)
        out = Pose((0.75 * s, -0.75 * s), (0.5 - s, 0.5 + s), lift=0.05 * abs(s), lean=0.2)
    elif pose == JUMP:
        lift = _hop(t, actor)
        air = lift > 0.03
        out = Pose(
            (0.4, -0.25) if air else (0.12, -0.12), (2.4, 2.2) if air else (0.3, 0.2), lift=lift
        )
    elif pose == FALL:
        lean = _fall_angle(t, actor)
        out = Pose(arms=(1.2, 1.6), lean=lean, lift=0.1 * math.sin(lean))
    elif pose == BEND:
        bow = actor.bow_angle * (
            0.5 - 0.5 * math.cos(2 * math.pi * _cycle(t, actor.bow_period, actor.phase))
        )
        out = Pose(arms=(0.05, -0.05), bow=bow)
    else:
        out = Pose()
    if actor.interaction is not None:
        lean = FIGHT_LEAN * _punch(t, actor.role) if actor.interaction == FIGHT else 0.0
        out = Pose(out.legs, *_interaction_arms(actor, t), lift=out.lift, lean=lean)
    if actor.carry:
        arms = CARRY_ARMS_PROFILE if actor.facing else CARRY_ARMS_FRONT
        out = Pose(out.legs, arms, 1.0, out.lift, out.lean, out.bow)
    return out


def _interaction_arms(actor: Actor, t: float) -> tuple[tuple[float, float], float]:
    """Arm angles and front-arm reach of a pair member: pump, embrace or punch."""
    if actor.interaction == SHAKE:
        return (1.25 + 0.4 * math.sin(2 * math.pi * SHAKE_HZ * t), 0.1), 1.0
    if actor.interaction == HUG:
        return (1.57, 1.45), 1.0
    return (1.57, 1.2), 0.45 + 0.75 * _punch(t, actor.role)


def _punch(t: float, role: int) -> float:
    """0..1 extension of the punch of fighter ``role`` (one every 0.4 s, the two alternating)."""
    return math.sin(math.pi * _cycle(t, 0.4, 0.5 * role)) ** 2


def _recoil(actor: Actor, t: float) -> float:
    """A fighter is pushed back (pixels, towards its back) when the other's punch lands."""
    if actor.interaction != FIGHT:
        return 0.0
    return -actor.facing * FIGHT_RECOIL * actor.height * _punch(t, 1 - actor.role)


def _person(actor: Actor, track: Track, f: int) -> tuple[list[Capsule], Point]:
    """Capsules of one person at frame ``f`` (pixels, drawing order) and where it holds an
    object: 0.7 along the front arm in profile, between the hands when facing the camera."""
    t, side = f / FPS, int(track.facing[f])
    pose = _pose(actor, int(track.pose[f]), t)
    front = side == 0
    hip, shoulder, head = (0.0, 0.45), (0.0, 0.76), (0.0, 0.9)
    parts: list[tuple[Point, Point, float, Rgb]] = []
    for k, angle in enumerate(pose.legs):
        start = ((0.05 if k == 0 else -0.05) if front else 0.0, hip[1])
        parts.append((start, _limb(start, 0.45, angle), 0.05, actor.body))
    upper = [((0.0, 0.5), (0.0, 0.74), 0.11, actor.body), (head, head, 0.1, actor.head)]
    if front:
        upper += [((-0.04, 0.92),) * 2 + (0.022, DARK), ((0.04, 0.92),) * 2 + (0.022, DARK)]
    else:
        upper += [((0.1, 0.89),) * 2 + (0.035, actor.head), ((0.05, 0.92),) * 2 + (0.022, DARK)]
    parts += [(_rotate(a, hip, pose.bow), _rotate(b, hip, pose.bow), r, c) for a, b, r, c in upper]
    shoulder = _rotate(shoulder, hip, pose.bow)
    hands: list[Point] = []
    for k, angle in enumerate(pose.arms):
        # facing the camera the arms hang from either shoulder; angles > 0 turn to +x
        start = (shoulder[0] + (0.13 if k == 0 else -0.13), shoulder[1]) if front else shoulder
        end = _limb(start, 0.33 * (pose.reach if k == 0 else 1.0), angle)
        hands.append(end)
        parts.append((start, end, 0.04, actor.body))
    if front:
        hold = ((hands[0][0] + hands[1][0]) / 2, (hands[0][1] + hands[1][1]) / 2)
    else:
        hold = (shoulder[0] + 0.7 * (hands[0][0] - shoulder[0]),
                shoulder[1] + 0.7 * (hands[0][1] - shoulder[1]))  # fmt: skip
    sx = side or 1
    x0 = float(track.x[f]) + _recoil(actor, t)

    def pixel(p: Point) -> Point:
        q = _rotate(p, (0.0, 0.0), pose.lean)
        return (x0 + sx * q[0] * actor.height, actor.ground - (q[1] + pose.lift) * actor.height)

    capsules = [(pixel(a), pixel(b), r * actor.height, c) for a, b, r, c in parts]
    return capsules, pixel(hold)


# --------------------------------------------------------------------------- drawing

_XS = np.arange(WIDTH, dtype=np.float32) + 0.5
_YS = np.arange(HEIGHT, dtype=np.float32) + 0.5
PixelBox = tuple[int, int, int, int]


def _draw(img: np.ndarray, capsules: Sequence[Capsule], box: bool = False) -> PixelBox | None:
    """Fill capsules in order; with ``box``, return the pixel box ``x1, y1, x2, y2`` (ends
    exclusive) of all pixels they cover (occluded later or not)."""
    covered: PixelBox | None = None
    for (ax, ay), (bx, by), r, colour in capsules:
        x1, x2 = max(int(min(ax, bx) - r), 0), min(int(max(ax, bx) + r) + 2, WIDTH)
        y1, y2 = max(int(min(ay, by) - r), 0), min(int(max(ay, by) + r) + 2, HEIGHT)
        if x1 >= x2 or y1 >= y2:
            continue
        px, py = _XS[None, x1:x2] - ax, _YS[y1:y2, None] - ay
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        s = np.clip((px * dx + py * dy) / length2, 0, 1) if length2 > 0 else 0.0
        mask = (px - s * dx) ** 2 + (py - s * dy) ** 2 <= r * r
        img[y1:y2, x1:x2][mask] = colour
        if not box:
            continue
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if not len(rows):
            continue
        part = (
            x1 + int(cols[0]),
            y1 + int(rows[0]),
            x1 + int(cols[-1]) + 1,
            y1 + int(rows[-1]) + 1,
        )
        covered = part if covered is None else _union(covered, part)
    return covered


def _union(a: PixelBox, b: PixelBox) -> PixelBox:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _frames(
    scene: Scene, tracks: Sequence[Track], boxes: dict[int, list[PixelBox | None]]
) -> Iterator[np.ndarray]:
    """Yield the video's frames (H, W, 3) uint8; fill ``boxes[t]`` (one per actor) at keyframes."""
    count = scene.seconds * FPS
    order = sorted(range(len(scene.actors)), key=lambda i: scene.actors[i].ground)
    keyframes = {t * FPS: t for t in keyframe_times(scene.seconds)}
    for f in range(count):
        img = scene.background.copy()
        drawn: list[PixelBox | None] = [None] * len(scene.actors)
        for i in order:
            capsules, hold = _person(scene.actors[i], tracks[i], f)
            drawn[i] = _draw(img, capsules, box=f in keyframes)
            if scene.actors[i].carry:
                size = CARRIED_OBJECT_RADIUS * scene.actors[i].height
                _draw(img, [(hold, hold, size, scene.object_colour)])
        if f in keyframes:
            boxes[keyframes[f]] = drawn
        yield img


# --------------------------------------------------------------------------- labels


def _labels(
    scene: Scene, tracks: Sequence[Track], t: int, boxes: Sequence[PixelBox | None]
) -> list[tuple[int, ...]]:
    """Action ids of every actor at keyframe ``t`` (pose first, then by id)."""
    out = []
    f = t * FPS
    for i, actor in enumerate(scene.actors):
        pose = actor.poses[t]
        actions = {pose}
        if actor.carry:
            actions.add(CARRY)
        if actor.interaction in CONTACT:
            actions.add(actor.interaction)
        facing = int(tracks[i].facing[f])
        if pose == STAND and facing and _faces_someone(i, facing, scene, tracks, f, boxes):
            actions.add(WATCH)
        out.append((pose, *sorted(actions - {pose})))
    return out


def _faces_someone(
    i: int,
    facing: int,
    scene: Scene,
    tracks: Sequence[Track],
    f: int,
    boxes: Sequence[PixelBox | None],
) -> bool:
    """Whether some other visible person's feet lie more than :data:`WATCH_MIN_GAP` of person
    ``i``'s height on its ``facing`` side at frame ``f``."""
    me = scene.actors[i]
    x = float(tracks[i].x[f]) + _recoil(me, f / FPS)
    return any(
        j != i
        and boxes[j] is not None
        and (float(tracks[j].x[f]) + _recoil(other, f / FPS) - x) * facing
        > WATCH_MIN_GAP * me.height
        for j, other in enumerate(scene.actors)
    )


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class SynthDataset:
    """Paths of a generated dataset."""

    root: Path
    videos: dict[str, Path]  # video id -> file
    annotations: dict[str, Path]  # split -> annotation CSV
    labelmap: Path
    exclusions: Path
    metadata: Path


def pick_codec(codec: str = "auto") -> str:
    """FFmpeg's own ``mpeg4`` encoder (LGPL), whatever is asked (``auto``, ``mpeg4``): the PyAV
    wheels' H.264 encoder is x264, GPL, which fbil never runs."""
    if codec not in ("auto", "mpeg4"):
        raise ValueError(f"codec {codec!r}: only mpeg4 (x264 is GPL)")
    return "mpeg4"


def _encode(path: Path, frames: Iterator[np.ndarray], codec: str) -> None:
    """Encode RGB frames at ``FPS``; single-threaded so the bytes depend only on the frames."""
    options: dict[str, str] = {}
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream(codec, rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.gop_size = GOP
        if codec == "mpeg4":
            stream.bit_rate = 3_000_000
        for img in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())


def _render_video(
    scene: Scene, path: Path, codec: str, keep: Sequence[int] = CLASS_IDS
) -> list[str]:
    """Write the video; return its annotation rows (none for excluded keyframes)."""
    count = scene.seconds * FPS
    tracks = [_track(a, count) for a in scene.actors]
    boxes: dict[int, list[PixelBox | None]] = {}
    _encode(path, _frames(scene, tracks, boxes), codec)
    rows = []
    for t in keyframe_times(scene.seconds):
        if t in scene.excluded:
            continue
        for person, actions in enumerate(_labels(scene, tracks, t, boxes[t])):
            box = boxes[t][person]
            if box is None:
                continue
            x1, y1, x2, y2 = box[0] / WIDTH, box[1] / HEIGHT, box[2] / WIDTH, box[3] / HEIGHT
            rows += [
                f"{scene.video_id},{t},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},{a},{person}"
                for a in actions
                if a in keep
            ]
    return rows


def class_labels(classes: Mapping[int, str | None] | None = None) -> LabelMap:
    """The label map of a world of ``classes`` (AVA id -> custom name, or None for the AVA
    name; default: every class), in id order (its pose classes come first)."""
    chosen = dict.fromkeys(CLASS_IDS) if classes is None else dict(classes)
    unknown = sorted(set(chosen) - set(CLASS_IDS))
    if unknown or not chosen:
        raise ValueError(f"classes must be some of {sorted(CLASS_IDS)}, got {sorted(chosen)}")
    ava = ava_v22()
    rows = [ava[ava.index_of(i)] for i in sorted(chosen)]
    return LabelMap([ActionClass(c.id, chosen[c.id] or c.name, c.type) for c in rows])


def _labelmap_text(labels: LabelMap) -> str:
    return "".join(
        f'label {{\n  name: "{c.name}"\n  label_id: {c.id}\n  label_type: {c.type}\n}}\n'
        for c in labels
    )


def _scene_json(scene: Scene) -> dict[str, Any]:
    people = [
        {
            "person_id": i,
            "body_rgb": list(a.body),
            "head_rgb": list(a.head),
            "height_px": round(a.height, 2),
            "poses_per_second": a.poses,
            "carry": a.carry,
            "interaction": a.interaction,
        }
        for i, a in enumerate(scene.actors)
    ]
    return {
        "seconds": scene.seconds,
        "keyframes": keyframe_times(scene.seconds),
        "excluded": scene.excluded,
        "object_rgb": list(scene.object_colour),
        "people": people,
    }


README = """Synthetic AVA world (fbil-train synth), seed {seed}.

videos/<video_id>.mp4: {width}x{height}, {fps} fps, {seconds} s, {codec}.
annotations/<split>.csv: video_id,timestamp,x1,y1,x2,y2,action_id,person_id (AVA v2.2 layout;
boxes normalised; timestamps in seconds from the video start, keyframes {first}..{last}).
annotations/labelmap.pbtxt: the classes used; annotations/exclusions.csv: keyframes where a
person changes pose (not annotated). dataset.json: the plan of every video.
Classes: {classes}.
"""


def generate(
    out_dir: str | Path,
    seed: int,
    num_videos: int = 40,
    seconds_per_video: int = 6,
    *,
    val_fraction: float = 0.2,
    codec: str = "auto",
    classes: Mapping[int, str | None] | None = None,
) -> SynthDataset:
    """Generate the dataset under ``out_dir`` (files are overwritten); see the module doc.

    Video ``i`` features class ``FEATURED[(offset + i) % 11]`` (offset from the seed), so any
    11 consecutive videos show every class; with ``classes`` (see :func:`class_labels`) only
    those are featured and annotated. The last ``round(num_videos * val_fraction)`` videos
    form the ``val`` split (none with fewer than 2 videos).
    """
    if num_videos < 1 or seconds_per_video < 4:
        raise ValueError("need at least 1 video of at least 4 seconds (keyframes 2..S-2)")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    root = Path(out_dir)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    labels = class_labels(classes)
    featured_ids = [c for c in FEATURED if c in labels.ids]
    codec = pick_codec(codec)
    offset = int(np.random.default_rng(seed).integers(len(featured_ids)))
    num_val = round(num_videos * val_fraction) if num_videos >= 2 else 0
    rows: dict[str, list[str]] = {"train": [], "val": []}
    videos: dict[str, Path] = {}
    scenes: dict[str, Any] = {}
    exclusions: list[str] = []
    for i in range(num_videos):
        video_id = f"synth{seed}_{i:04d}"
        rng = np.random.default_rng([seed, i])
        featured = featured_ids[(offset + i) % len(featured_ids)]
        scene = _plan_scene(rng, video_id, featured, seconds_per_video)
        videos[video_id] = root / "videos" / f"{video_id}.mp4"
        split = "val" if i >= num_videos - num_val else "train"
        rows[split] += _render_video(scene, videos[video_id], codec, labels.ids)
        exclusions += [f"{video_id},{t}" for t in scene.excluded]
        scenes[video_id] = {"split": split, "featured": featured, **_scene_json(scene)}
    annotations = {}
    for split, lines in rows.items():
        annotations[split] = root / "annotations" / f"{split}.csv"
        annotations[split].write_text("".join(f"{line}\n" for line in lines))
    labelmap = root / "annotations" / "labelmap.pbtxt"
    labelmap.write_text(_labelmap_text(labels))
    excluded = root / "annotations" / "exclusions.csv"
    excluded.write_text("".join(f"{line}\n" for line in exclusions))
    meta = {
        "generator": "fbil-train synth",
        "seed": seed,
        "num_videos": num_videos,
        "seconds_per_video": seconds_per_video,
        "width": WIDTH,
        "height": HEIGHT,
        "fps": FPS,
        "codec": codec,
        "keyframes": keyframe_times(seconds_per_video),
        "classes": [{"id": c.id, "name": c.name} for c in labels],
        "videos": scenes,
    }
    metadata = root / "dataset.json"
    metadata.write_text(json.dumps(meta, indent=1) + "\n")
    (root / "README").write_text(
        README.format(
            seed=seed,
            width=WIDTH,
            height=HEIGHT,
            fps=FPS,
            seconds=seconds_per_video,
            codec=codec,
            first=2,
            last=seconds_per_video - 2,
            classes=", ".join(f"{c.id} {c.name}" for c in labels),
        )
    )
    return SynthDataset(root, videos, annotations, labelmap, excluded, metadata)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fbil-train synth",
        description="Generate a synthetic AVA-format dataset of drawn people acting out "
        "AVA v2.2 classes (videos, annotation CSVs, label map, exclusions).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos", type=int, default=40, help="number of videos")
    parser.add_argument("--seconds", type=int, default=6, help="length of each video (>= 4)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of val videos")
    parser.add_argument("--codec", choices=("auto", "mpeg4"), default="auto")
    parser.add_argument(
        "--classes",
        type=_parse_classes,
        metavar="ID[=NAME],...",
        help=f"keep these classes (of {','.join(map(str, sorted(CLASS_IDS)))}), renamed where "
        "a name is given, e.g. 5=slip,14,64=brawl (default: all, AVA names)",
    )
    return parser


def _parse_classes(text: str) -> dict[int, str | None]:
    out: dict[int, str | None] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, name = part.partition("=")
        try:
            out[int(key)] = name.strip() or None
        except ValueError:
            raise argparse.ArgumentTypeError(f"not ID or ID=NAME: {part!r}") from None
    return out


def main(argv: list[str] | None = None) -> int:
    """``fbil-train synth``: 0 on success, 2 for bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        data = generate(
            args.out,
            args.seed,
            args.videos,
            args.seconds,
            val_fraction=args.val_fraction,
            codec=args.codec,
            classes=args.classes,
        )
    except ValueError as e:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(data.videos)} videos and annotations to {data.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
