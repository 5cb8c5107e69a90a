"""Textured meshes, one shape family per Objectron category, with random instance dimensions.

A mesh is a list of convex planar faces; each face carries its outward normal and the texture
coordinates (pixels of the instance's texture) of its vertices. Local frame: y up, the object
standing on y = 0, centred on x = z = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CATEGORIES = ("bike", "book", "bottle", "camera", "cereal_box", "chair", "cup", "laptop", "shoe")
TEXTURE_SIZE = 256


@dataclass(frozen=True)
class Face:
    vertices: np.ndarray  # (n, 3)
    uv: np.ndarray  # (n, 2) texture pixels
    normal: np.ndarray  # (3,) outward


class MeshBuilder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.faces: list[Face] = []

    def _uv_rect(self) -> tuple[float, float, float, float]:
        size = self.rng.uniform(48, 160)
        u0, v0 = self.rng.uniform(0, TEXTURE_SIZE - size, size=2)
        return u0, v0, size, size * self.rng.uniform(0.6, 1.0)

    def _add(self, vertices: np.ndarray, uv: np.ndarray, part_centre: np.ndarray) -> None:
        normal = np.cross(vertices[1] - vertices[0], vertices[2] - vertices[0])
        norm = np.linalg.norm(normal)
        if norm < 1e-12:
            return
        normal /= norm
        if np.dot(normal, vertices.mean(axis=0) - part_centre) < 0:
            normal = -normal
        self.faces.append(Face(vertices, uv, normal))

    def box(self, centre, size, rotation: np.ndarray | None = None) -> None:
        """An oriented box; `rotation` maps the box's axes to the local frame."""
        centre, half = np.asarray(centre, float), np.asarray(size, float) / 2
        rotation = np.eye(3) if rotation is None else rotation
        corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * half
        corners = corners @ rotation.T + centre
        quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
        for quad in quads:
            u0, v0, w, h = self._uv_rect()
            uv = np.array([[u0, v0], [u0 + w, v0], [u0 + w, v0 + h], [u0, v0 + h]])
            self._add(corners[list(quad)], uv, centre)

    def beam(self, start, end, thickness: float) -> None:
        """A square-section bar from `start` to `end` (bike frames, chair legs)."""
        start, end = np.asarray(start, float), np.asarray(end, float)
        axis = end - start
        length = np.linalg.norm(axis)
        axis /= length
        helper = np.array([1.0, 0, 0]) if abs(axis[0]) < 0.9 else np.array([0, 0, 1.0])
        side = np.cross(axis, helper)
        side /= np.linalg.norm(side)
        rotation = np.stack([side, axis, np.cross(side, axis)], axis=1)
        self.box((start + end) / 2, (thickness, length, thickness), rotation)

    def cylinder(self, centre, radius: float, length: float, axis: str = "y", segments: int = 16):
        centre = np.asarray(centre, float)
        angles = np.linspace(0, 2 * np.pi, segments + 1)
        ring = np.stack(
            [radius * np.cos(angles), np.zeros_like(angles), radius * np.sin(angles)], 1
        )
        to_axis = {
            "y": np.eye(3),
            "x": np.array([[0, 1.0, 0], [-1.0, 0, 0], [0, 0, 1.0]]),
            "z": np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]),
        }[axis]
        bottom = (ring + [0, -length / 2, 0]) @ to_axis.T + centre
        top = (ring + [0, length / 2, 0]) @ to_axis.T + centre
        u0, v0, w, h = self._uv_rect()
        for s in range(segments):
            ua, ub = u0 + w * s / segments, u0 + w * (s + 1) / segments
            quad = np.array([bottom[s], bottom[s + 1], top[s + 1], top[s]])
            uv = np.array([[ua, v0 + h], [ub, v0 + h], [ub, v0], [ua, v0]])
            self._add(quad, uv, centre)
        for cap in (bottom[:-1], top[:-1]):
            cu, cv, size, _ = self._uv_rect()
            uv = np.stack(
                [
                    cu + size / 2 * (1 + np.cos(angles[:-1])),
                    cv + size / 2 * (1 + np.sin(angles[:-1])),
                ],
                axis=1,
            )
            self._add(cap, uv, centre)


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def build_mesh(category: str, rng: np.random.Generator) -> list[Face]:
    """A random instance of the category's shape family (metres, standing on y = 0)."""
    m = MeshBuilder(rng)
    if category == "cereal_box":
        w, h, d = _u(rng, 0.14, 0.32), _u(rng, 0.20, 0.40), _u(rng, 0.05, 0.12)
        m.box((0, h / 2, 0), (w, h, d))
    elif category == "book":
        w, h, d = _u(rng, 0.12, 0.30), _u(rng, 0.02, 0.08), _u(rng, 0.15, 0.32)
        m.box((0, h / 2, 0), (w, h, d))
    elif category == "bottle":
        r, h = _u(rng, 0.025, 0.06), _u(rng, 0.12, 0.30)
        neck_r, neck_h = r * _u(rng, 0.3, 0.5), _u(rng, 0.05, 0.08)
        m.cylinder((0, h / 2, 0), r, h)
        m.cylinder((0, h + neck_h / 2, 0), neck_r, neck_h, segments=10)
    elif category == "cup":
        r, h = _u(rng, 0.03, 0.055), _u(rng, 0.06, 0.14)
        m.cylinder((0, h / 2, 0), r, h)
        m.box((r + 0.015, h * 0.55, 0), (0.03, h * 0.55, 0.012))
    elif category == "camera":
        w, h, d = _u(rng, 0.09, 0.16), _u(rng, 0.06, 0.10), _u(rng, 0.03, 0.07)
        lens_r, lens_l = _u(rng, 0.02, 0.035), _u(rng, 0.01, 0.09)
        m.box((0, h / 2, 0), (w, h, d))
        m.cylinder((w * 0.1, h * 0.45, d / 2 + lens_l / 2), lens_r, lens_l, axis="z", segments=12)
        m.box((-w * 0.3, h + 0.01, 0), (w * 0.25, 0.02, d * 0.6))
    elif category == "laptop":
        w, d, t = _u(rng, 0.28, 0.40), _u(rng, 0.19, 0.28), _u(rng, 0.015, 0.025)
        m.box((0, t / 2, 0), (w, t, d))
        tilt = np.radians(_u(rng, 95, 135))
        c, s = np.cos(tilt), np.sin(tilt)
        direction = np.array([0, s, c])  # from the hinge at the back edge, leaning back
        hinge = np.array([0, t, -d / 2])
        rotation = np.stack([[1.0, 0, 0], direction, np.cross([1.0, 0, 0], direction)], axis=1)
        m.box(hinge + direction * d / 2, (w, d, 0.008), rotation)
    elif category == "chair":
        w, d, seat = _u(rng, 0.36, 0.60), _u(rng, 0.36, 0.60), _u(rng, 0.40, 0.50)
        back, leg = _u(rng, 0.25, 0.60), 0.035
        m.box((0, seat, 0), (w, 0.04, d))
        for x in (-1, 1):
            for z in (-1, 1):
                m.box(
                    (x * (w / 2 - leg), (seat - 0.02) / 2, z * (d / 2 - leg)),
                    (leg, seat - 0.02, leg),
                )
        m.box((0, seat + 0.02 + back / 2, -d / 2 + 0.015), (w, back, 0.03))
    elif category == "shoe":
        length, width = _u(rng, 0.22, 0.32), _u(rng, 0.08, 0.12)
        sole, upper = _u(rng, 0.025, 0.035), _u(rng, 0.06, 0.09)
        m.box((0, sole / 2, 0), (width, sole, length))
        m.box((0, sole + upper / 2, -length * 0.18), (width * 0.9, upper, length * 0.6))
        m.box((0, sole + upper * 0.25, length * 0.28), (width * 0.85, upper * 0.5, length * 0.38))
    elif category == "bike":
        r, base, width = _u(rng, 0.30, 0.35), _u(rng, 0.95, 1.10), 0.04
        rear, front = np.array([0, r, -base / 2]), np.array([0, r, base / 2])
        m.cylinder(rear, r, width, axis="x", segments=20)
        m.cylinder(front, r, width, axis="x", segments=20)
        seat = rear + [0, _u(rng, 0.45, 0.55), base * 0.25]
        head = front + [0, _u(rng, 0.45, 0.55), -base * 0.12]
        crank = np.array([0, r * 0.9, 0.0])
        for start, end in [
            (rear, seat),
            (rear, crank),
            (crank, seat),
            (seat, head),
            (crank, head),
            (head, front),
        ]:
            m.beam(start, end, 0.03)
        m.beam(head + [-0.25, 0.08, 0], head + [0.25, 0.08, 0], 0.025)
        m.box(seat + [0, 0.03, 0], (0.08, 0.04, 0.2))
    else:
        raise ValueError(f"unknown category {category!r}; known: {CATEGORIES}")
    return m.faces


def mesh_extent(faces: list[Face]) -> tuple[np.ndarray, np.ndarray]:
    """(centre, size) of the tight axis-aligned box around the mesh, in its local frame."""
    points = np.concatenate([face.vertices for face in faces])
    low, high = points.min(axis=0), points.max(axis=0)
    return (low + high) / 2, high - low


def _pattern(
    kind: int, size: int, rng: np.random.Generator, angle: float, scale: float
) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    if kind == 0:  # stripes
        return (np.sin((x * np.cos(angle) + y * np.sin(angle)) * scale * 2 * np.pi) > 0).astype(
            float
        )
    if kind == 1:  # checks
        cells = max(2, round(scale))
        return ((np.floor(x * cells) + np.floor(y * cells)) % 2).astype(float)
    pattern = np.zeros((size, size))  # blobs
    for _ in range(int(rng.integers(4, 10))):
        cx, cy, radius = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.2)
        pattern = np.maximum(pattern, ((x - cx) ** 2 + (y - cy) ** 2 < radius**2).astype(float))
    return pattern


def _paint(base, accent, pattern: np.ndarray, rng: np.random.Generator) -> np.ndarray:  # type: ignore[no-untyped-def]
    noise = rng.normal(0, 12, size=(*pattern.shape, 1))
    image = (
        np.asarray(base) * (1 - pattern[..., None])
        + np.asarray(accent) * pattern[..., None]
        + noise
    )
    return np.clip(image, 0, 255).astype(np.uint8)


def instance_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A colourful procedural texture drawn per instance, unrelated to the category: stripes,
    checks or blobs over a base colour."""
    base, accent = rng.uniform(40, 220, size=3), rng.uniform(0, 255, size=3)
    kind = int(rng.integers(3))
    scale = rng.uniform(4, 14) if kind == 0 else rng.uniform(3, 10)
    return _paint(base, accent, _pattern(kind, size, rng, rng.uniform(0, np.pi), scale), rng)


def plain_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """One flat colour per instance (with sensor-like noise): only shape and shading are left."""
    base = rng.uniform(40, 220, size=3)
    return _paint(base, base, np.zeros((size, size)), rng)


TEXTURES = ("category", "instance", "plain")


def object_texture(kind: str, category: str, rng: np.random.Generator) -> np.ndarray:
    """The instance's texture for the `textures` setting of the synthetic source."""
    if kind == "category":
        return category_texture(category, rng)
    if kind == "instance":
        return instance_texture(rng)
    if kind == "plain":
        return plain_texture(rng)
    raise ValueError(f"unknown texture kind {kind!r}; known: {TEXTURES}")


def floor_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A surface to stand the object on, as in real captures (table tops, floors, carpets):
    muted colours and a low-contrast pattern, so the object rather than the floor stands out."""
    grey = rng.uniform(70, 190)
    tint = rng.uniform(-18, 18, size=3)
    base = grey + tint
    accent = base + rng.uniform(-35, 35)
    kind = int(rng.integers(3))
    scale = rng.uniform(4, 14) if kind == 0 else rng.uniform(3, 10)
    return _paint(base, accent, _pattern(kind, size, rng, rng.uniform(0, np.pi), scale), rng)


def category_texture(
    category: str, rng: np.random.Generator, size: int = TEXTURE_SIZE
) -> np.ndarray:
    """An instance's texture: its category's style (colours, pattern kind and scale, fixed per
    category as real categories share a look) varied per instance (colour shifts, pattern
    angle and scale, noise)."""
    style = np.random.default_rng([CATEGORIES.index(category), 7919])
    base, accent = style.uniform(40, 220, size=3), style.uniform(0, 255, size=3)
    kind, scale, angle = int(style.integers(3)), style.uniform(3, 10), style.uniform(0, np.pi)
    base = base + rng.uniform(-25, 25, size=3)
    accent = accent + rng.uniform(-25, 25, size=3)
    pattern = _pattern(
        kind, size, rng, angle + rng.uniform(-0.3, 0.3), scale * rng.uniform(0.85, 1.15)
    )
    return _paint(base, accent, pattern, rng)
