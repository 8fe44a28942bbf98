"""Procedural synthetic faces: the embedded default dataset (no download, deterministic for a seed).

Base mesh. A cube-sphere (each cube face an ``n x n`` grid of quads split into triangles, vertices
shared along the cube edges, ``n = 29``: ``V = 6 n^2 + 2 = 5048``, ``F = 12 n^2 = 10092``) is a closed,
genus-0, consistently outward-oriented triangle mesh; its vertices are pushed onto the unit sphere
with the area-balancing map ``x' = x sqrt(1 - y^2/2 - z^2/2 + y^2 z^2/3)`` (and cyclic). A Moebius
transform (stereographic projection from the back pole ``-z``, scale by ``s = FOCUS``, project back)
then gathers vertices towards the front ``+z``: the local density grows by ``1/s^2`` at the face centre,
so about 70 % of the vertices land on the front half where the face needs them. It is conformal, so
triangles stay well shaped.

Head (a cylindrical graph). Frame: x right, y up, z forward out of the face, metres. A unit direction
``d`` becomes the point ``(r u_x, Y, r u_z)`` with ``u = (d_x, d_z) / |(d_x, d_z)|`` the horizontal
direction, ``Y = Y(d_y)`` a strictly increasing cubic (crown at the top, a neck stub at the bottom) and
``r > 0`` the distance from the vertical axis::

    r = prof(d_y) * R(u, Y) + features(X, Y, u)        prof = (1 - |d_y|^p)^(1/p)
    R = (|u_x / W(Y)|^q + |u_z / D(Y)|^q)^(-1/q)        (a super-ellipse slice, flatter at the front)

``W`` (half-width), ``D`` (front or back depth) are monotone cubic (PCHIP) profiles of the height;
``X = prof R u_x`` is the horizontal face coordinate. Every horizontal slice is star-shaped about the
axis and slices never cross (``Y`` is monotone), so every identity is an embedded surface. The facial
features are smooth localised bumps and dents of ``r`` defined in the face plane ``(X, Y)``: brow
ridge (arched band), eye sockets (concave) holding closed eyelids (convex), nose (dorsum from the
nasion to the tip, widening and rising, a bulb, the alae), upper and lower lips with a mouth-line groove
and a mentolabial groove, chin, cheekbones, cheeks, temples; plus ears on the sides.

Identity. ``N_IDENTITY_PARAMS = 26`` parameters ``p ~ N(0, 1)`` (names in :data:`IDENTITY_PARAMS`),
each softly clipped (``2.2 tanh(p / 2.2)``, so any input gives a valid head) and mapped smoothly to a
physical quantity: skull width, height, depth; face length, jaw width, chin protrusion and height,
cheekbones, cheek fullness, brow ridge and height, eye spacing, depth and size, nose length, width,
tip and bridge, nostril flare, mouth width, philtrum length, lip thickness, forehead slope, mid-face
depth, crown. One standard deviation moves the surface by 0.3 to 6 mm.

Expressions (the twelve COMA names). Localised deformations of the identity's neutral head made of
rigid motions blended per vertex: a vertex with mask ``m`` is rotated by ``m theta(g)`` about an axis,
``g`` being the per-vertex intensity. The jaw turns about a pivot line behind and below the ear (where
a real mandible's rotation centre sits while its condyle glides forward), the mouth corners, lips,
cheeks and brows slide along arcs about axes through the head centre (they move over the face
instead of cutting into it), the lips curl about their bases; cheek hollows, the mouth opening and
forehead wrinkles (``~ g^2 sin(2 pi (Y - Y_brow) / 14 mm)``) are pushes along the horizontal chart
direction (normals converge in creases, and pushing along them folds the surface). Below the
mandible the jaw weight fades along the path neck base -> throat -> chin so that the skin stretches
instead of folding. The parts of one expression follow different timings (``g (2 - g)`` leads,
``g^2`` follows) and the rotations are trigonometric, so each sequence is a curve in shape space;
masks, pivots and amplitudes are placed by the identity's landmarks (mouth width and height, brow
height, hairline, face length, head centre) and act on the identity's own vertices, so identity and
expression interact non-linearly. ``g = weight (1 + asymmetry tanh(x / 15 mm))`` adds a slight
left/right asymmetry. At full intensity no face turns by more than about 80 degrees from its neutral
orientation for identities up to the clipping box.

Sequences. :func:`expression_curve` ramps ``0 -> 1 -> 0`` (``sin^2``) like COMA recordings;
:func:`generate` gives every subject its own random stream (identity, then a peak intensity in
[0.75, 1] and an asymmetry in [-0.15, 0.15] per expression).

Measured (seed 0): PCA with 8 components leaves a mean per-vertex error of 0.23 mm on 6 subjects x 12
expressions x 5 frames and 0.62 mm on the default 12 x 12 x 10 (mean distance to the mean shape
3.4 and 3.8 mm); generating 12 x 12 x 10 meshes takes about 2.5 s on one CPU core.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.interpolate import PchipInterpolator

from morphable.errors import MorphableError

EXPRESSIONS: tuple[str, ...] = (
    "bareteeth", "cheeks_in", "eyebrow", "high_smile", "lips_back", "lips_up",
    "mouth_down", "mouth_extreme", "mouth_middle", "mouth_open", "mouth_side", "mouth_up",
)

IDENTITY_PARAMS: tuple[str, ...] = (
    "skull_width", "skull_height", "skull_depth", "face_length", "jaw_width", "chin_protrusion",
    "chin_height", "cheekbones", "cheek_fullness", "brow_ridge", "brow_height", "eye_spacing",
    "eye_depth", "eye_size", "nose_length", "nose_width", "nose_tip", "nose_bridge", "nostril_flare",
    "mouth_width", "upper_lip", "lower_lip", "philtrum_length", "forehead_slope", "midface_depth", "crown",
)
N_IDENTITY_PARAMS: int = len(IDENTITY_PARAMS)

GRID = 29  # quads per cube edge: V = 6 GRID^2 + 2
FOCUS = 0.65  # Moebius scale: vertex density x 1/FOCUS^2 at the face centre
NECK_Y = -0.16  # bottom of the neck stub (m)


@functools.lru_cache(maxsize=1)
def _sphere() -> tuple[np.ndarray, np.ndarray]:
    """Unit directions ``(V, 3)`` of the face-focused cube-sphere and its outward faces ``(F, 3)``."""
    n = GRID
    ij = np.stack(np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij"), axis=-1)  # (n+1, n+1, 2)
    cell = 2 * np.arange(n) + 1 - n  # cell centres along one cube edge
    # Split each quad along the diagonal that points towards its cube-face centre (mirror symmetric).
    diag02 = (cell[:, None] * cell[None, :] >= 0).reshape(-1)
    lattice, quads, diagonals = [], [], []
    for axis in range(3):
        a, b = (axis + 1) % 3, (axis + 2) % 3  # e_a x e_b = e_axis
        for sign in (-1, 1):
            pts = np.empty((n + 1, n + 1, 3), dtype=np.int64)
            pts[..., axis] = sign * n
            pts[..., a] = 2 * ij[..., 0] - n
            pts[..., b] = 2 * ij[..., 1] - n
            base = len(lattice) * (n + 1) ** 2
            idx = base + np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
            q = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]], axis=-1).reshape(-1, 4)
            lattice.append(pts.reshape(-1, 3))
            quads.append(q if sign > 0 else q[:, ::-1])
            diagonals.append(diag02 if sign > 0 else ~diag02)
    lattice_all = np.concatenate(lattice)
    unique, inverse = np.unique(lattice_all, axis=0, return_inverse=True)
    quads_all = inverse.reshape(-1)[np.concatenate(quads)]
    q = quads_all
    faces = np.where(np.concatenate(diagonals)[:, None, None],
                     np.stack([q[:, [0, 1, 2]], q[:, [0, 2, 3]]], axis=1),
                     np.stack([q[:, [0, 1, 3]], q[:, [1, 2, 3]]], axis=1)).reshape(-1, 3)
    c = unique / n
    sq = c**2
    d = c * np.sqrt(1 - (sq[:, [1, 2, 0]] + sq[:, [2, 0, 1]]) / 2 + sq[:, [1, 2, 0]] * sq[:, [2, 0, 1]] / 3)
    # Moebius transform towards +z: stereographic from -z, scale by FOCUS, back (stable closed form).
    s2 = FOCUS**2
    den = (1 + d[:, 2]) + s2 * (1 - d[:, 2])
    d = np.column_stack([2 * FOCUS * d[:, 0] / den, 2 * FOCUS * d[:, 1] / den,
                         ((1 + d[:, 2]) - s2 * (1 - d[:, 2])) / den])
    return d / np.linalg.norm(d, axis=1, keepdims=True), faces.astype(np.int64)


def _gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """Unit-height anisotropic Gaussian ``exp(-((x-cx)/sx)^2/2 - ((y-cy)/sy)^2/2)``."""
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``3t^2 - 2t^3`` of ``t = clip((x - lo) / (hi - lo), 0, 1)``."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


@dataclass(frozen=True)
class _Landmarks:
    """Identity-dependent face layout in the face plane (metres)."""

    eye_y: float
    eye_x: float
    brow_y: float
    nose_tip_y: float
    mouth_y: float
    mouth_half_width: float
    chin_y: float
    chin_bottom_y: float
    scale: float  # face length relative to the mean face


def _layout(q: np.ndarray) -> _Landmarks:
    length = 1 + 0.05 * q[3]
    eye_y = 0.005
    nose_tip_y = eye_y - 0.04 * length * (1 + 0.06 * q[14])
    mouth_y = nose_tip_y - 0.027 * length * (1 + 0.1 * q[22])
    return _Landmarks(
        eye_y=eye_y,
        eye_x=0.032 + 0.0022 * q[11],
        brow_y=eye_y + 0.019 + 0.003 * q[10],
        nose_tip_y=nose_tip_y,
        mouth_y=mouth_y,
        mouth_half_width=0.024 + 0.003 * q[19],
        chin_y=mouth_y - 0.033 * length - 0.003 * q[6],
        chin_bottom_y=mouth_y - 0.048 * length - 0.003 * q[6],
        scale=length,
    )


@dataclass(eq=False)
class _Head:
    """One identity's neutral head and the chart it was built on.

    ``vertices (V, 3)``; face-plane coordinates ``x, y (V,)`` of the un-featured surface; horizontal
    direction ``u (V, 2)`` = (u_x, u_z); ``front (V,)`` in [0, 1]; landmarks ``lm``.
    """

    vertices: np.ndarray
    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    front: np.ndarray
    lm: _Landmarks

    def point(self, x: float, y: float) -> np.ndarray:
        """Surface point ``(3,)`` at face-plane position ``(x, y)``: a Gaussian-weighted (2.5 mm) mean of
        the front vertices, so landmarks move smoothly with the identity."""
        w = _gauss(self.x, self.y, x, y, 0.0025, 0.0025) * (self.u[:, 1] > 0.5)
        return w @ self.vertices / w.sum()


def _head(params: np.ndarray) -> _Head:
    """Build the neutral head of identity ``params (N_IDENTITY_PARAMS,)`` (see the module docstring)."""
    q = 2.2 * np.tanh(np.asarray(params, dtype=np.float64) / 2.2)
    lm = _layout(q)
    d, _ = _sphere()
    c = d[:, 1]
    top, bottom, y0, slope = 0.115 + 0.007 * q[1], NECK_Y, -0.03, 0.1
    height = y0 + slope * c + ((top + bottom) / 2 - y0) * c**2 + ((top - bottom) / 2 - slope) * c**3
    p_exp = np.where(c >= 0, 3.0, 6.0)
    prof = np.clip(1 - np.abs(c) ** p_exp, 0.0, 1.0) ** (1 / p_exp)
    horiz = np.hypot(d[:, 0], d[:, 2])
    u = np.column_stack([d[:, 0], d[:, 2]]) / np.maximum(horiz, 1e-12)[:, None]

    sw, jw, sd = 1 + 0.06 * q[0], 1 + 0.08 * q[4], 1 + 0.06 * q[2]
    chin_depth, mid, slope_f, crown = 0.004 * q[5], 0.005 * q[24], 0.006 * q[23], 0.006 * q[25]
    e, m, cb = lm.eye_y, lm.mouth_y, lm.chin_bottom_y
    knots_y = np.array([-0.2, cb - 0.025, cb - 0.012, cb, lm.chin_y, m, e - 0.03, e, e + 0.04, 0.08, 0.14])
    width = np.array([0.05, 0.051, 0.054, 0.056 * jw, 0.058 * jw, 0.063 * jw, 0.068 * sw, 0.071 * sw, 0.074 * sw,
                      0.073 * sw, 0.07 * sw])
    front_depth = np.array([0.044, 0.046, 0.06 + chin_depth, 0.078 + chin_depth, 0.085 + chin_depth, 0.086 + mid,
                            0.088 + mid, 0.089 + mid, 0.088, 0.082 - slope_f, 0.075 - slope_f])
    back_depth = np.array([0.05, 0.052, 0.055, 0.058, 0.062, 0.07, 0.085 * sd, 0.094 * sd, 0.1 * sd,
                           0.1 * sd + crown, 0.095 * sd + crown])
    w = PchipInterpolator(knots_y, width)(height)
    depth = np.where(u[:, 1] > 0, PchipInterpolator(knots_y, front_depth)(height),
                     PchipInterpolator(knots_y, back_depth)(height))
    sq = np.where(u[:, 1] > 0, 2.6, 2.0)
    radius = prof * (np.abs(u[:, 0] / w) ** sq + np.abs(u[:, 1] / depth) ** sq) ** (-1 / sq)
    x, y, z = radius * u[:, 0], height, radius * u[:, 1]
    front = _smoothstep(u[:, 1], 0.1, 0.5)
    ax = np.abs(x)

    relief = np.zeros_like(x)
    # Brow ridge: an arched band above the eyes.
    brow_line = lm.brow_y - 0.004 * (x / 0.045) ** 2
    relief += (0.005 + 0.0015 * q[9]) * np.exp(-0.5 * ((y - brow_line) / 0.006) ** 2 - (x / 0.047) ** 4)
    # Eye sockets (concave) holding closed eyelids (convex).
    size = 1 + 0.08 * q[13]
    socket = _gauss(ax, y, lm.eye_x, e + 0.001, 0.016 * size, 0.0105 * size)
    lid = _gauss(ax, y, lm.eye_x, e - 0.001, 0.011 * size, 0.0075 * size)
    relief += -(0.015 + 0.002 * q[12]) * socket + 0.009 * lid
    # Nose: dorsum from the nasion to the tip, rising and widening; bulb; alae.
    nasion, tip = e + 0.006, lm.nose_tip_y
    t = np.clip((nasion - y) / (nasion - tip), 0.0, 1.0)
    rise_n, rise_t = 0.006 + 0.0015 * q[17], 0.021 + 0.0025 * q[16]
    nose_w = 1 + 0.1 * q[15]
    profile = rise_n + (rise_t - rise_n) * t**1.5
    profile = profile * np.where(y > nasion, np.exp(-0.5 * ((y - nasion) / 0.008) ** 2), 1.0)
    profile = profile * np.where(y < tip, np.exp(-0.5 * ((tip - y) / 0.0055) ** 2), 1.0)
    relief += profile * np.exp(-0.5 * (x / ((0.005 + 0.006 * t) * nose_w)) ** 2)
    relief += 0.003 * _gauss(x, y, 0.0, tip + 0.003, 0.0065, 0.0065)
    relief += 0.0075 * (1 + 0.15 * q[18]) * _gauss(ax, y, 0.012 * nose_w, tip - 0.002, 0.0055, 0.0055)
    # Mouth: dental arch, lips, mouth line, philtrum, mentolabial groove.
    mw = lm.mouth_half_width
    xm = x / mw
    lip_span = np.exp(-1.5 * xm**2 - 0.5 * xm**6)
    relief += 0.01 * _gauss(x, y, 0.0, m + 0.002, 0.026, 0.022)
    upper = m + 0.0055 - 0.0015 * np.exp(-0.5 * (x / 0.004) ** 2) - 0.002 * xm**2
    lower = m - 0.0065 + 0.0025 * xm**2
    relief += 0.005 * (1 + 0.18 * q[20]) * lip_span * np.exp(-0.5 * ((y - upper) / 0.0035) ** 2)
    relief += 0.0055 * (1 + 0.18 * q[21]) * lip_span * np.exp(-0.5 * ((y - lower) / 0.0045) ** 2)
    relief -= 0.003 * np.exp(-(xm / 1.05) ** 6) * np.exp(-0.5 * ((y - m - 0.001 * xm**2) / 0.0016) ** 2)
    relief -= 0.001 * _gauss(x, y, 0.0, m + 0.011, 0.003, 0.005)
    relief -= 0.0025 * _gauss(x, y, 0.0, m - 0.017, 0.016, 0.003)
    # Chin, cheekbones, cheeks, temples.
    relief += 0.005 * (1 + 0.25 * q[5]) * _gauss(x, y, 0.0, lm.chin_y, 0.015, 0.011)
    relief += 0.008 * (1 + 0.25 * q[7]) * _gauss(ax, y, 0.048, e - 0.02, 0.014, 0.011)
    relief += (0.003 + 0.0015 * q[8]) * _gauss(ax, y, 0.04, m + 0.012, 0.016, 0.018)
    relief -= 0.003 * _gauss(ax, y, 0.063, e + 0.03, 0.01, 0.015)
    relief *= front
    # Ears on the sides.
    relief += 0.012 * _gauss(z, y, -0.008, e - 0.012, 0.012, 0.02) * _smoothstep(np.abs(u[:, 0]), 0.6, 0.9)
    r = radius + relief
    return _Head(np.column_stack([r * u[:, 0], y, r * u[:, 1]]), x, y, u, front, lm)


def _rotation_offset(p: np.ndarray, centre: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Offsets ``(V, 3)`` that rotate points ``p (V, 3)`` by ``angle (V,)`` radians about the line through
    ``centre`` with unit direction ``axis`` (Rodrigues: ``(r - (r.k)k)(cos - 1) + (k x r) sin``)."""
    rel = p - centre
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return (rel - np.outer(rel @ axis, axis)) * (cos - 1) + np.cross(axis, rel) * sin


_X_AXIS = np.array([1.0, 0.0, 0.0])  # a positive angle turns +y towards +z
_Y_AXIS = np.array([0.0, 1.0, 0.0])  # a positive angle turns +z towards +x


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * t))


def _softplus(t: np.ndarray, width: float) -> np.ndarray:
    return width * np.logaddexp(0.0, t / width)


class _Rig:
    """Expression rig of one identity: masks ``(V,)`` and pivots placed by the identity's landmarks.

    Each expression is a sequence of per-vertex rotations (``_turn``) and outward pushes (``_push``) of
    the current positions, with amounts given by the per-vertex intensity ``g (V,)``.
    """

    def __init__(self, head: _Head):
        self.head = h = head
        lm = h.lm
        x, y, front = h.x, h.y, h.front
        ax, mw, m, sc = np.abs(x), lm.mouth_half_width, lm.mouth_y, lm.scale
        self.outward = np.column_stack([h.u[:, 0], np.zeros_like(x), h.u[:, 1]])
        # Arcs on the face turn about the identity's head centre (its bounding-box centre).
        self.centre = 0.5 * (h.vertices.min(axis=0) + h.vertices.max(axis=0)) * [0.0, 1.0, 1.0]
        # Jaw pivot (x axis) behind and below the ear: the mandible turns about it while the condyle glides.
        self.hinge = np.array([0.0, lm.eye_y - 0.045, self.centre[2] - 0.047])
        mouth_point = h.point(0.0, m)
        xm = x / mw
        # Mouth line, rising towards the hinge beyond the corners; the jaw moves everything below it.
        rise = _softplus(ax - mw, 0.005)
        below = _sigmoid((m + 0.001 * xm**2 + 0.8 * rise - y) / (0.0012 + 0.35 * rise))
        # Below the mandible the skin stretches down to the fixed base of the neck: the jaw weight fades
        # along the path neck base -> throat -> under the chin, ``s = (y - NECK_Y) + (z - 45 mm)_+`` (about
        # arc length), over 85 mm so that the chin drop (up to about 35 mm) strains it by < 65 %.
        path = h.vertices[:, 1] - NECK_Y + np.maximum(h.vertices[:, 2] - 0.045, 0.0)
        self.jaw = below * _smoothstep(path, 0.0, 0.085) * _smoothstep(h.u[:, 1], 0.0, 0.45)
        self.gap = 4 * below * (1 - below) * np.exp(-((xm / 1.1) ** 4)) * front
        lips = np.exp(-((xm / 1.15) ** 4)) * front
        self.upper_lip = lips * (1 - below) * np.exp(-0.5 * ((y - m) / (0.011 * sc)) ** 2)
        self.lower_lip = lips * below * np.exp(-0.5 * ((y - m) / (0.012 * sc)) ** 2)
        self.mouth = np.exp(-((xm / 1.4) ** 4)) * np.exp(-0.5 * ((y - m) / (0.017 * sc)) ** 2) * front
        self.corner_r = _gauss(x, y, mw, m, 0.012 * sc, 0.012 * sc) * front
        self.corner_l = _gauss(x, y, -mw, m, 0.012 * sc, 0.012 * sc) * front
        self.cheek = _gauss(ax, y, 0.044, m + 0.006, 0.013, 0.015 * sc) * front
        self.cheek_raise = _gauss(ax, y, 0.04, lm.eye_y - 0.027 * sc, 0.017, 0.014) * front
        self.lower_lid = _gauss(ax, y, lm.eye_x, lm.eye_y - 0.008, 0.011, 0.0045) * front
        self.alae = _gauss(ax, y, 0.011, lm.nose_tip_y, 0.012, 0.008) * front
        self.chin = _gauss(x, y, 0.0, lm.chin_y, 0.02, 0.014 * sc) * front
        hairline = h.vertices[:, 1].max() - 0.035
        self.brow = (_smoothstep(y, lm.eye_y + 0.004, lm.brow_y) * (1 - _smoothstep(y, lm.brow_y, hairline))
                     * np.exp(-((x / 0.055) ** 4)) * front)
        self.forehead = _smoothstep(y, lm.brow_y, lm.brow_y + 0.012) \
            * (1 - _smoothstep(y, hairline - 0.035, hairline - 0.005)) * np.exp(-((x / 0.045) ** 4)) * front
        self.upper_lip_axis = mouth_point + np.array([0.0, 0.012 * sc, -0.008])
        self.lower_lip_axis = mouth_point + np.array([0.0, -0.013 * sc, -0.008])

    def _turn(self, p: np.ndarray, centre: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
        """Rotate each vertex by its ``angle (V,)``; vertices under ``1e-9`` rad (< 1e-10 m) stay put."""
        active = np.abs(angle) > 1e-9
        out = p.copy()
        out[active] += _rotation_offset(p[active], centre, axis, angle[active])
        return out

    def _push(self, p: np.ndarray, amount: np.ndarray) -> np.ndarray:
        """Move outwards by ``amount (V,)`` along the horizontal chart direction ``u`` (not the normal:
        normals converge in creases such as the mouth line, and pushing along them folds the surface)."""
        return p + amount[:, None] * self.outward

    def _jaw(self, p: np.ndarray, g: np.ndarray, angle: float, cavity: float) -> np.ndarray:
        """Open the jaw by ``g angle`` about the hinge; push the stretched mouth gap in by
        ``cavity (sin(g angle / 2) / sin(angle / 2))^2`` (the opening's depth grows with its area)."""
        p = self._turn(p, self.hinge, _X_AXIS, angle * g * self.jaw)
        return self._push(p, -cavity * (np.sin(0.5 * angle * g) / np.sin(0.5 * angle)) ** 2 * self.gap)

    def _corners(self, p: np.ndarray, g: np.ndarray, out: float, up: float) -> np.ndarray:
        """Slide the mouth corners along the face: sideways-back by ``g out`` and up by ``g up`` radians."""
        p = self._turn(p, self.centre, _Y_AXIS, out * g * (self.corner_r - self.corner_l))
        return self._turn(p, self.centre, _X_AXIS, -up * g * (self.corner_r + self.corner_l))

    def _curl(self, p: np.ndarray, g: np.ndarray, angle: float) -> np.ndarray:
        """Roll both lips outwards (``angle > 0``) or inwards about their bases."""
        p = self._turn(p, self.upper_lip_axis, _X_AXIS, -angle * g * self.upper_lip)
        return self._turn(p, self.lower_lip_axis, _X_AXIS, angle * g * self.lower_lip)

    def _pucker(self, p: np.ndarray, gather: np.ndarray, pout: np.ndarray, amount: float) -> np.ndarray:
        """Gather the mouth towards the midline (``x *= 1 - amount gather``), push the lips forward by
        ``12 mm amount pout`` and roll them out."""
        p = p.copy()
        p[:, 0] -= amount * gather * self.mouth * self.head.x
        p[:, 2] += 0.012 * amount * pout * (self.upper_lip + self.lower_lip)
        return self._curl(p, pout, 0.5 * amount)

    def _brows(self, p: np.ndarray, g: np.ndarray, angle: float) -> np.ndarray:
        """Raise the brows along the forehead arc and fold forehead wrinkles ``~ g^2``."""
        p = self._turn(p, self.centre, _X_AXIS, -angle * g * self.brow)
        wave = np.sin(2 * np.pi * (self.head.y - self.head.lm.brow_y) / 0.014)
        return self._push(p, 0.0005 * (angle / 0.09) * g**2 * wave * self.forehead)

    def pose(self, name: str, g: np.ndarray) -> np.ndarray:
        """Vertices ``(V, 3)`` of expression ``name`` at per-vertex intensity ``g (V,)``.

        The parts of an expression follow different timings, ``early = g (2 - g)`` (leads) and
        ``late = g^2`` (follows), as muscles do; both reach 1 at ``g = 1``, so a sequence traces a
        curve, not a line, through shape space.
        """
        _check_expression(name)
        p = self.head.vertices
        early, late = g * (2 - g), g * g
        if name == "bareteeth":
            p = self._corners(p, early, 0.06, 0.02)
            p = self._turn(p, self.centre, _X_AXIS, -0.06 * early * self.upper_lip)
            p = self._turn(p, self.centre, _X_AXIS, 0.05 * late * self.lower_lip)
            p = self._jaw(p, late, 0.05, 0.004)
            p = self._push(p, -0.004 * late * self.mouth)
        elif name == "cheeks_in":
            p = self._push(p, -0.01 * early**1.5 * self.cheek)
            p = self._pucker(p, late, late, 0.15)
        elif name == "eyebrow":
            p = self._brows(p, g, 0.09)
        elif name == "high_smile":
            p = self._corners(p, early, 0.1, 0.09)
            p = self._turn(p, self.centre, _X_AXIS, -0.05 * late * self.cheek_raise)
            p = self._push(p, 0.003 * late**1.5 * self.cheek_raise + 0.0015 * late * self.lower_lid)
            p = self._jaw(p, late, 0.04, 0.003)
        elif name == "lips_back":
            p = self._corners(p, early, 0.12, 0.0)
            p = self._curl(p, late, -0.25)
            p = self._push(p, -0.002 * late * self.mouth)
        elif name == "lips_up":
            p = self._turn(p, self.centre, _X_AXIS, -0.07 * early * (self.upper_lip + 0.5 * self.alae))
            p = self._push(p, 0.0015 * late * self.alae)
            p = self._curl(p, late, 0.2)
        elif name == "mouth_down":
            p = self._corners(p, early, 0.02, -0.1)
            p = self._curl(p, late, 0.15)
            p = self._turn(p, self.centre, _X_AXIS, -0.03 * late * self.chin)
            p = self._push(p, 0.002 * late * self.chin)
        elif name == "mouth_extreme":
            p = self._curl(p, early, -0.15)
            p = self._jaw(p, g, 0.22, 0.016)
            p = self._corners(p, late, 0.06, 0.0)
        elif name == "mouth_middle":
            p = self._pucker(p, early, late, 0.35)
        elif name == "mouth_open":
            p = self._jaw(p, early, 0.18, 0.012)
        elif name == "mouth_side":
            p = self._turn(p, self.centre, _Y_AXIS, 0.15 * early * self.mouth)
            p = self._turn(p, self.hinge * [0, 1, 1] + [0, 0, -0.02], _Y_AXIS, 0.04 * late * self.jaw)
        elif name == "mouth_up":
            p = self._turn(p, self.centre, _X_AXIS, -0.06 * early * (self.lower_lip + self.chin))
            p = self._turn(p, self.centre, _X_AXIS, -0.02 * late * self.upper_lip)
            p = self._corners(p, late, 0.0, -0.03)
            p = self._push(p, 0.002 * late * self.chin)
        return p


@dataclass
class SyntheticFaces:
    """A generated dataset: meshes ordered subject-major, then expression, then frame.

    ``vertices (N, V, 3)`` float32 metres; ``faces (F, 3)`` int64; ``subjects``, ``expressions``,
    ``frames`` labels of length ``N``; ``identity_params (subjects, N_IDENTITY_PARAMS)``;
    ``region_labels (V,)`` int8, 1 on the face (front of the head), 0 elsewhere.
    """

    vertices: np.ndarray
    faces: np.ndarray
    subjects: list[str]
    expressions: list[str]
    frames: list[int]
    identity_params: np.ndarray
    region_labels: np.ndarray


@functools.lru_cache(maxsize=1)
def _template() -> _Head:
    return _head(np.zeros(N_IDENTITY_PARAMS))


def template_mesh() -> tuple[np.ndarray, np.ndarray]:
    """Neutral mean head: vertices ``(V, 3)`` float64 metres (``V = 5048``), faces ``(F, 3)`` int64.

    Computed once and cached; the returned arrays are copies."""
    return _template().vertices.copy(), _sphere()[1].copy()


def region_labels() -> np.ndarray:
    """``(V,)`` int8: 1 for the face (front of the head, from below the chin to above the brows, between
    the temples), 0 for the rest of the head; from the mean head, the same for every identity."""
    h = _template()
    lm = h.lm
    face = (h.front > 0.5) & (h.y > lm.chin_bottom_y - 0.01) & (h.y < lm.brow_y + 0.035) & (np.abs(h.x) < 0.062)
    return face.astype(np.int8)


def sample_identities(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` identities ``(n, N_IDENTITY_PARAMS)`` drawn from ``N(0, 1)`` with ``rng``."""
    return rng.standard_normal((n, N_IDENTITY_PARAMS))


def expression_curve(frames: int) -> np.ndarray:
    """Intensity ``(frames,)`` over a sequence, like a COMA recording: ``0 -> 1 -> 0``.

    With ``p = (frames - 1) // 2``: ``w_i = sin^2(pi/2 i/p)`` for ``i <= p`` and
    ``sin^2(pi/2 (frames-1-i)/(frames-1-p))`` after, so the first and last frames are 0 and frame ``p``
    is exactly 1. One frame gives ``[1]`` (the apex), two give ``[0, 1]``.
    """
    if frames < 1:
        raise MorphableError(f"frames must be at least 1, got {frames}")
    if frames < 3:
        return np.array([1.0]) if frames == 1 else np.array([0.0, 1.0])
    i = np.arange(frames, dtype=np.float64)
    peak = (frames - 1) // 2
    t = np.where(i <= peak, i / peak, (frames - 1 - i) / (frames - 1 - peak))
    return np.sin(0.5 * np.pi * t) ** 2


def _intensity(head: _Head, weight: float, asymmetry: float) -> np.ndarray:
    """Per-vertex intensity ``g = weight (1 + asymmetry tanh(x / 15 mm))`` ``(V,)``."""
    return weight * (1 + asymmetry * np.tanh(head.x / 0.015))


def _check_expression(expression: str) -> None:
    if expression not in EXPRESSIONS:
        raise MorphableError(f"unknown expression {expression!r}; expected one of {', '.join(EXPRESSIONS)}")


def face_vertices(identity: np.ndarray, expression: str, weight: float, asymmetry: float = 0.0) -> np.ndarray:
    """Vertices ``(V, 3)`` float64 metres of the head with identity parameters ``identity
    (N_IDENTITY_PARAMS,)`` showing ``expression`` at intensity ``weight`` in [0, 1] (0 = neutral), with a
    left/right ``asymmetry`` (|a| < 1; the side ``x > 0`` gets ``1 + a`` times the intensity)."""
    identity = np.asarray(identity, dtype=np.float64)
    if identity.shape != (N_IDENTITY_PARAMS,):
        raise MorphableError(f"identity must have shape ({N_IDENTITY_PARAMS},), got {identity.shape}")
    _check_expression(expression)
    if not 0.0 <= weight <= 1.0:
        raise MorphableError(f"expression weight must be in [0, 1], got {weight}")
    if not abs(asymmetry) < 1.0:
        raise MorphableError(f"asymmetry must be in (-1, 1), got {asymmetry}")
    head = _head(identity)
    if weight == 0.0:
        return head.vertices
    return _Rig(head).pose(expression, _intensity(head, weight, asymmetry))


def generate(subjects: int, expressions: int, frames: int, seed: int) -> SyntheticFaces:
    """All meshes of ``subjects`` x the first ``expressions`` of :data:`EXPRESSIONS` x ``frames``.

    Subject ``s`` draws from its own stream ``SeedSequence(seed).spawn(subjects)[s]``: its identity
    (:func:`sample_identities`), then for each of the twelve expressions a peak intensity in [0.75, 1]
    and an asymmetry in [-0.15, 0.15]; frame ``f`` is
    ``face_vertices(identity, expression, peak * expression_curve(frames)[f], asymmetry)``. So a smaller
    dataset is a prefix (in subjects and in expressions) of a larger one with the same seed.
    """
    for name, value, low, high in (("subjects", subjects, 1, None), ("expressions", expressions, 1, len(EXPRESSIONS)),
                                   ("frames", frames, 1, None)):
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high else f"at least {low}"
            raise MorphableError(f"{name} must be {bound}, got {value}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(subjects)]
    identities = np.vstack([sample_identities(1, rng) for rng in streams])
    peaks = np.stack([rng.uniform(0.75, 1.0, len(EXPRESSIONS)) for rng in streams])
    asymmetries = np.stack([rng.uniform(-0.15, 0.15, len(EXPRESSIONS)) for rng in streams])
    curve = expression_curve(frames)
    names = EXPRESSIONS[:expressions]
    n_vertices = len(_sphere()[0])
    vertices = np.empty((subjects * len(names) * frames, n_vertices, 3), dtype=np.float32)
    labels_s, labels_e, labels_f = [], [], []
    i = 0
    for s in range(subjects):
        head = _head(identities[s])
        rig = _Rig(head)
        for e, name in enumerate(names):
            for f, w in enumerate(peaks[s, e] * curve):
                vertices[i] = head.vertices if w == 0.0 else rig.pose(name, _intensity(head, w, asymmetries[s, e]))
                labels_s.append(f"subject_{s:02d}")
                labels_e.append(name)
                labels_f.append(f)
                i += 1
    return SyntheticFaces(vertices, _sphere()[1].copy(), labels_s, labels_e, labels_f, identities, region_labels())


def write_synthetic_dataset(out: str | os.PathLike, subjects: int, expressions: int, frames: int, seed: int,
                            overwrite: bool = False) -> Path:
    """Generate synthetic faces (:func:`generate`) and write them in the COMA layout with ``dataset.json``
    (unit m, the generator settings) and ``preview.png``; returns the folder."""
    from morphable.data.registered import write_coma_layout
    from morphable.viz import dataset_preview

    faces_data = generate(subjects, expressions, frames, seed)
    meta = {"source": "morphable synthetic faces", "seed": seed, "subjects": subjects,
            "expressions": expressions, "frames": frames}
    out_dir = write_coma_layout(out, faces_data.vertices, faces_data.faces, faces_data.subjects,
                                faces_data.expressions, faces_data.frames, "m", meta, overwrite=overwrite)
    dataset_preview(out_dir, faces_data.vertices, faces_data.faces, faces_data.subjects, faces_data.expressions,
                  f"synthetic faces (seed {seed})")
    return out_dir
