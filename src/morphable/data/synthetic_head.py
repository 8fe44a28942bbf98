"""Neutral heads of the synthetic faces: the fixed mesh, the identity parameters and the head builder.

Base mesh. A cube-sphere (each cube face an ``n x n`` grid of quads split into triangles, vertices
shared along the cube edges, ``n = 29``: ``V = 6 n^2 + 2 = 5048``, ``F = 12 n^2 = 10092``) is a closed,
genus-0, consistently outward-oriented triangle mesh; its vertices are pushed onto the unit sphere
with the area-balancing map ``x' = x sqrt(1 - y^2/2 - z^2/2 + y^2 z^2/3)`` (and cyclic). A Moebius
transform (stereographic projection from the back pole ``-z``, scale by ``s = FOCUS``, project back)
gathers vertices towards the front ``+z`` (density ``x 1/s^2`` at the face centre); it is conformal, so
triangles stay well shaped.

Head (a cylindrical graph). Frame: x right, y up, z forward out of the face, metres. A unit direction
``d`` becomes the point ``(r u_x, Y, r u_z)`` with ``u = (d_x, d_z) / |(d_x, d_z)|`` the horizontal
direction, ``Y = Y(c)`` a strictly increasing cubic of the warped height ``c = H^-1(d_y)`` (crown at the
top, a neck stub at the bottom) and ``r > 0`` the distance from the vertical axis::

    r = prof(c) * R(u, Y) + features(X, Y, u)        prof = (1 - |c|^p)^(1/p)
    R = (|u_x / W(Y)|^q + |u_z / D(Y)|^q)^(-1/q)      (a super-ellipse slice, flatter at the front)

The warp ``H(c) ~ c + sum_k a_k s_k tanh((c - c_k) / s_k)`` (affinely renormalised to [-1, 1]) is
monotone, so the surface is unchanged as a set; it packs rows of vertices ``1 + a_k`` times closer at the
mouth line and at the eyes, where the lids and the mouth slit need them. Every horizontal slice is
star-shaped about the axis and slices never cross, so every identity is an embedded surface.

Features in the face plane ``(X, Y)`` (``X = prof R u_x``): brow ridge, eye sockets, eyeballs with lids,
nose (dorsum, bulb, alae, nostrils), lips with a deep mouth slit between them, philtrum, mentolabial
groove, chin, cheekbones, cheeks, nasolabial folds, temples, ears. An eye is a sphere of radius
``R_eye`` (centre ``c_e``, behind the face plane); inside the eye patch (weight ``w_e = 1``) ``r`` is the
exact intersection of the vertex's ray with the shell ``|p - c_e| = R_eye + t`` where ``t = 0`` on the
bare eyeball inside the palpebral opening (plus a corneal bulge) and ``t = LID`` on the lids; outside
the patch it blends into the skin.

Identity. ``N_IDENTITY_PARAMS`` parameters (names in :data:`IDENTITY_PARAMS`), each softly clipped
(``2.2 tanh(p / 2.2)``, so any input gives a valid head): shape parameters (skull, face length, jaw, chin,
cheekbones, eyes, nose, lips, ...), ``age`` and ``weight`` (which act non-linearly: sagging jowls, deeper
nasolabial folds, thinner lips with age; fuller cheeks, jaw and a double chin with weight), and style
parameters that leave the neutral head alone but change how this person makes each expression (jaw hinge
position, opening, glide and deviation, expressiveness, smile shape, brow style, lip curl and stickiness,
dominant side, wrinkle spacing and phase, and the muscle-strength map; see
:mod:`morphable.data.synthetic_rig`). :func:`sample_identities` draws them from a non-Gaussian law: a
mixture of three populations with different means and spreads, a uniform age and a skewed (gamma) weight.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

SHAPE_PARAMS: tuple[str, ...] = (
    "skull_width", "skull_height", "skull_depth", "face_length", "jaw_width", "chin_protrusion",
    "chin_height", "cheekbones", "cheek_fullness", "brow_ridge", "brow_height", "eye_spacing",
    "eye_depth", "eye_size", "nose_length", "nose_width", "nose_tip", "nose_bridge", "nostril_flare",
    "mouth_width", "upper_lip", "lower_lip", "philtrum_length", "forehead_slope", "midface_depth", "crown",
    "age", "weight",
)
STYLE_PARAMS: tuple[str, ...] = (
    "hinge_height", "hinge_depth", "jaw_opening", "expressiveness", "smile_shape", "brow_style",
    "lip_curl", "dominant_side", "wrinkle_spacing", "wrinkle_phase", "jaw_glide",
    "muscle_map_angle_1", "muscle_map_phase_1", "muscle_map_angle_2", "muscle_map_phase_2", "jaw_deviation",
    "lip_stickiness",
)
IDENTITY_PARAMS: tuple[str, ...] = SHAPE_PARAMS + STYLE_PARAMS
N_IDENTITY_PARAMS: int = len(IDENTITY_PARAMS)
P = {name: i for i, name in enumerate(IDENTITY_PARAMS)}  # parameter index by name

GRID = 29  # quads per cube edge: V = 6 GRID^2 + 2
FOCUS = 0.62  # Moebius scale: vertex density x 1/FOCUS^2 at the face centre
NECK_Y = -0.16  # bottom of the neck stub (m)
EYE_RADIUS = 0.0125  # eyeball radius (m)
LID = 0.0025  # lid thickness over the eyeball (m)
ROW_WARP = ((-0.305, 0.05, 2.2), (0.335, 0.06, 2.0))  # (c_k, s_k, a_k): mouth line, eyes


def gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    """Unit-height anisotropic Gaussian ``exp(-((x-cx)/sx)^2/2 - ((y-cy)/sy)^2/2)``."""
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``3t^2 - 2t^3`` of ``t = clip((x - lo) / (hi - lo), 0, 1)``."""
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3 - 2 * t)


@functools.lru_cache(maxsize=1)
def sphere() -> tuple[np.ndarray, np.ndarray]:
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
    unique, inverse = np.unique(np.concatenate(lattice), axis=0, return_inverse=True)
    q = inverse.reshape(-1)[np.concatenate(quads)]
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


@functools.lru_cache(maxsize=1)
def warped_height() -> np.ndarray:
    """Warped height coordinate ``c = H^-1(d_y)`` ``(V,)`` of the sphere's vertices (module docstring)."""
    grid = np.linspace(-1.0, 1.0, 4001)
    h = grid + sum(a * s * np.tanh((grid - ck) / s) for ck, s, a in ROW_WARP)
    h = -1 + 2 * (h - h[0]) / (h[-1] - h[0])
    return np.interp(sphere()[0][:, 1], h, grid)


def soft_clip(params: np.ndarray) -> np.ndarray:
    """``2.2 tanh(p / 2.2)``: every parameter inside (-2.2, 2.2)."""
    return 2.2 * np.tanh(np.asarray(params, dtype=np.float64) / 2.2)


@dataclass(frozen=True)
class Landmarks:
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
    age: float  # in [0, 1]
    weight: float  # in [0, 1]


def layout(q: np.ndarray) -> Landmarks:
    """Landmarks of soft-clipped parameters ``q (N_IDENTITY_PARAMS,)``."""
    length = 1 + 0.05 * q[P["face_length"]]
    eye_y = 0.005
    nose_tip_y = eye_y - 0.04 * length * (1 + 0.06 * q[P["nose_length"]])
    mouth_y = nose_tip_y - 0.026 * length * (1 + 0.1 * q[P["philtrum_length"]])
    chin = 0.003 * q[P["chin_height"]]
    return Landmarks(
        eye_y=eye_y,
        eye_x=0.032 + 0.0022 * q[P["eye_spacing"]],
        brow_y=eye_y + 0.02 + 0.003 * q[P["brow_height"]],
        nose_tip_y=nose_tip_y,
        mouth_y=mouth_y,
        mouth_half_width=0.024 + 0.003 * q[P["mouth_width"]],
        chin_y=mouth_y - 0.033 * length - chin,
        chin_bottom_y=mouth_y - 0.048 * length - chin,
        scale=length,
        age=float(np.clip(0.5 + q[P["age"]] / 4.4, 0.0, 1.0)),
        weight=float(np.clip(0.5 + q[P["weight"]] / 4.4, 0.0, 1.0)),
    )


@dataclass(eq=False)
class Eye:
    """One eyeball: centre ``(3,)``; per-vertex patch weight ``w (V,)`` (1: exactly on the shell
    ``|p - centre| = EYE_RADIUS + shell``) and shell offset ``shell (V,)``; the lid margins' heights in the
    face plane, ``upper (V,)`` and ``lower (V,)`` at each vertex's ``X``."""

    centre: np.ndarray
    w: np.ndarray
    shell: np.ndarray
    upper: np.ndarray
    lower: np.ndarray


@dataclass(eq=False)
class Head:
    """One identity's neutral head and the chart it was built on.

    ``vertices (V, 3)``; face-plane coordinates ``x, y (V,)`` of the un-featured surface; horizontal
    direction ``u (V, 2)`` = (u_x, u_z); ``front (V,)`` in [0, 1]; landmarks ``lm``; the soft-clipped
    parameters ``q``; the two eyes (right ``x > 0`` first).
    """

    vertices: np.ndarray
    x: np.ndarray
    y: np.ndarray
    u: np.ndarray
    front: np.ndarray
    lm: Landmarks
    q: np.ndarray
    eyes: tuple[Eye, Eye]

    def point(self, x: float, y: float) -> np.ndarray:
        """Surface point ``(3,)`` at face-plane position ``(x, y)``: a Gaussian-weighted (2.5 mm) mean of
        the front vertices, so landmarks move smoothly with the identity."""
        w = gauss(self.x, self.y, x, y, 0.0025, 0.0025) * (self.u[:, 1] > 0.5)
        return w @ self.vertices / w.sum()


def _ray_sphere(u: np.ndarray, y: np.ndarray, centre: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Outer distance ``r`` along the horizontal ray ``(r u_x, y, r u_z)`` to the sphere ``|p - centre| =
    radius`` ``(V,)``: ``r = b + sqrt(b^2 - |c_h|^2 - (y - c_y)^2 + radius^2)``, ``b = u . c_h``; NaN where the
    ray misses."""
    b = u[:, 0] * centre[0] + u[:, 1] * centre[2]
    disc = b * b - centre[0] ** 2 - centre[2] ** 2 - (y - centre[1]) ** 2 + radius**2
    return np.where(disc > 0, b + np.sqrt(np.maximum(disc, 0.0)), np.nan)


def _eye(side: float, lm: Landmarks, q: np.ndarray, x: np.ndarray, y: np.ndarray, u: np.ndarray,
         base: np.ndarray) -> tuple[Eye, np.ndarray]:
    """Eye on ``side`` (+1 right, -1 left) and the radius ``r (V,)`` of its shell (NaN off the eyeball).

    The eyeball sits ``8.5 mm + eye_depth`` behind the un-featured surface point ``base (3,)`` in front of
    it. The palpebral opening is bounded by the lid margins ``upper = e + 4.6 mm (1 - s^2)^0.7 + 0.8 mm s``
    and ``lower = e - 3.4 mm (1 - s^2)^0.8``, ``s = (side x - eye_x) / 12.5 mm`` (the upper arch peaks
    laterally); on the bare eyeball the shell is 0 plus a corneal bulge of 1.2 mm (radius 5 mm)."""
    size = 1 + 0.07 * q[P["eye_size"]]
    ex = side * x - lm.eye_x
    s = np.clip(ex / (0.014 * size), -1.0, 1.0)
    upper = lm.eye_y + 0.005 * size * (1 - s * s) ** 0.7 + 0.0008 * s - 0.0012 * lm.age
    lower = lm.eye_y - 0.0038 * size * (1 - s * s) ** 0.8
    inside = smoothstep(y, lower - 0.0015, lower + 0.0015) * (1 - smoothstep(y, upper - 0.0015, upper + 0.0015))
    inside *= 1 - smoothstep(np.abs(ex), 0.012 * size, 0.0145 * size)
    cornea = 0.0012 * gauss(ex, y, 0.0, lm.eye_y, 0.005, 0.005)
    crease = 0.001 * gauss(ex, y, 0.0, upper + 0.0045, 0.011, 0.0013)
    shell = LID * (1 - inside) + cornea * inside - crease
    centre = base - np.array([0.0, 0.0, EYE_RADIUS + 0.0085 + 0.0015 * q[P["eye_depth"]]])
    centre[0] = side * lm.eye_x
    w = 1 - smoothstep(np.hypot(ex / 0.0115, (y - lm.eye_y) / 0.0095), 1.0, 1.4)
    r = _ray_sphere(u, y, centre, EYE_RADIUS + shell)
    w = np.where(np.isnan(r), 0.0, w) * (side * x > 0)
    return Eye(centre, w, shell, upper, lower), r


def build_head(params: np.ndarray) -> Head:
    """Build the neutral head of identity ``params (N_IDENTITY_PARAMS,)`` (see the module docstring)."""
    q = soft_clip(params)
    lm = layout(q)
    d, _ = sphere()
    c = warped_height()
    top, bottom, y0, slope = 0.115 + 0.007 * q[P["skull_height"]], NECK_Y, -0.03, 0.1
    height = y0 + slope * c + ((top + bottom) / 2 - y0) * c**2 + ((top - bottom) / 2 - slope) * c**3
    p_exp = np.where(c >= 0, 4.0, 6.0)
    prof = np.clip(1 - np.abs(c) ** p_exp, 0.0, 1.0) ** (1 / p_exp)
    horiz = np.hypot(d[:, 0], d[:, 2])
    u = np.column_stack([d[:, 0], d[:, 2]]) / np.maximum(horiz, 1e-12)[:, None]
    fat, age = lm.weight, lm.age

    sw, sd = 1 + 0.06 * q[P["skull_width"]], 1 + 0.06 * q[P["skull_depth"]]
    jw = 1 + 0.08 * q[P["jaw_width"]] + 0.12 * fat**2
    chin_depth, mid = 0.004 * q[P["chin_protrusion"]], 0.005 * q[P["midface_depth"]]
    slope_f, crown = 0.006 * q[P["forehead_slope"]], 0.006 * q[P["crown"]]
    e, m, cb = lm.eye_y, lm.mouth_y, lm.chin_bottom_y
    neck = 1 + 0.25 * fat**2
    knots_y = np.array([-0.2, cb - 0.025, cb - 0.012, cb, lm.chin_y, m, e - 0.03, e, e + 0.04, 0.08, 0.14])
    width = np.array([0.042 * neck, 0.043 * neck, 0.045 * neck, 0.047 * jw, 0.053 * jw, 0.06 * jw, 0.068 * sw,
                      0.07 * sw, 0.073 * sw, 0.072 * sw, 0.069 * sw])
    front_depth = np.array([0.044 * neck, 0.046 * neck, 0.06 + chin_depth + 0.012 * fat**2, 0.078 + chin_depth,
                            0.085 + chin_depth, 0.086 + mid, 0.088 + mid, 0.089 + mid, 0.088, 0.082 - slope_f,
                            0.075 - slope_f])
    back_depth = np.array([0.05, 0.052, 0.055, 0.058, 0.062, 0.07, 0.085 * sd, 0.094 * sd, 0.1 * sd,
                           0.1 * sd + crown, 0.095 * sd + crown])
    w = PchipInterpolator(knots_y, width)(height)
    depth = np.where(u[:, 1] > 0, PchipInterpolator(knots_y, front_depth)(height),
                     PchipInterpolator(knots_y, back_depth)(height))
    sq = np.where(u[:, 1] > 0, 2.3, 2.0)
    radius = prof * (np.abs(u[:, 0] / w) ** sq + np.abs(u[:, 1] / depth) ** sq) ** (-1 / sq)
    x, y, z = radius * u[:, 0], height, radius * u[:, 1]
    front = smoothstep(u[:, 1], 0.1, 0.5)
    ax = np.abs(x)

    relief = np.zeros_like(x)
    # Brow ridge: an arched band above the eyes.
    brow_line = lm.brow_y - 0.004 * (x / 0.045) ** 2
    relief += (0.006 + 0.0015 * q[P["brow_ridge"]]) * np.exp(-0.5 * ((y - brow_line) / 0.006) ** 2 - (x / 0.05) ** 4)
    # Eye sockets: a concave orbit rim around each eyeball (the eyeballs and lids are set below).
    relief -= (0.014 + 0.002 * q[P["eye_depth"]]) * gauss(ax, y, lm.eye_x, e + 0.002, 0.017, 0.013)
    relief += 0.0025 * (age + 0.5 * fat) * gauss(ax, y, lm.eye_x + 0.002, e - 0.012, 0.011, 0.004)  # eye bags
    # Nose: dorsum from the nasion to the tip, rising and widening; bulb; alae; nostrils.
    nasion, tip = e + 0.006, lm.nose_tip_y
    t = np.clip((nasion - y) / (nasion - tip), 0.0, 1.0)
    rise_n, rise_t = 0.007 + 0.0015 * q[P["nose_bridge"]], 0.022 + 0.0025 * q[P["nose_tip"]] - 0.002 * age
    nose_w = 1 + 0.1 * q[P["nose_width"]] + 0.08 * fat
    profile = rise_n + (rise_t - rise_n) * t**1.5
    profile = profile * np.where(y > nasion, np.exp(-0.5 * ((y - nasion) / 0.008) ** 2), 1.0)
    profile = profile * np.where(y < tip, np.exp(-0.5 * ((tip - y) / 0.0045) ** 2), 1.0)
    relief += profile * np.exp(-0.5 * (x / ((0.0045 + 0.006 * t) * nose_w)) ** 2)
    relief += 0.003 * gauss(x, y, 0.0, tip + 0.003, 0.0065, 0.0065)
    relief += 0.008 * (1 + 0.15 * q[P["nostril_flare"]]) * gauss(ax, y, 0.0125 * nose_w, tip - 0.003, 0.005, 0.005)
    relief -= 0.0045 * gauss(ax, y, 0.0065 * nose_w, tip - 0.0065, 0.0028, 0.0018)  # nostrils
    relief -= 0.002 * gauss(ax, y, 0.0175 * nose_w, tip - 0.002, 0.0015, 0.005)  # alar groove
    # Mouth: dental arch, lips, the mouth slit, philtrum, mentolabial groove, nasolabial folds.
    mw = lm.mouth_half_width
    xm = x / mw
    lip_span = np.exp(-1.5 * xm**2 - 0.5 * xm**6)
    relief += 0.013 * gauss(x, y, 0.0, m + 0.001, 0.026, 0.02)
    upper = m + 0.0055 - 0.0015 * np.exp(-0.5 * (x / 0.004) ** 2) - 0.002 * xm**2
    lower = m - 0.0065 + 0.0025 * xm**2
    thin = 1 - 0.35 * age
    relief += 0.0075 * thin * (1 + 0.18 * q[P["upper_lip"]]) * lip_span * np.exp(-0.5 * ((y - upper) / 0.0035) ** 2)
    relief += 0.0085 * thin * (1 + 0.18 * q[P["lower_lip"]]) * lip_span * np.exp(-0.5 * ((y - lower) / 0.0045) ** 2)
    relief -= 0.009 * np.exp(-(xm / 1.02) ** 6) * np.exp(-0.5 * ((y - m - 0.001 * xm**2) / 0.0011) ** 2)
    relief -= 0.0012 * gauss(x, y, 0.0, m + 0.011, 0.003, 0.005)
    relief -= 0.003 * gauss(x, y, 0.0, m - 0.017, 0.016, 0.003)
    fold_x = 0.018 + 0.45 * (tip - y)
    relief -= (0.001 + 0.003 * age) * np.exp(-0.5 * ((ax - fold_x) / 0.003) ** 2) * gauss(0, y, 0, m + 0.01, 1, 0.014)
    # Chin, cheekbones, cheeks, jowls, temples.
    relief += 0.006 * (1 + 0.25 * q[P["chin_protrusion"]]) * gauss(x, y, 0.0, lm.chin_y, 0.014, 0.011)
    relief += 0.009 * (1 + 0.25 * q[P["cheekbones"]]) * (1 - 0.4 * fat) * gauss(ax, y, 0.05, e - 0.021, 0.014, 0.01)
    relief -= 0.004 * (1 - fat) * gauss(ax, y, 0.05, m + 0.004, 0.012, 0.014)  # buccal hollow
    relief += (0.003 + 0.0015 * q[P["cheek_fullness"]] + 0.008 * fat**2) * gauss(ax, y, 0.04, m + 0.012, 0.016, 0.018)
    relief += 0.005 * age**2 * gauss(ax, y, 0.045, m - 0.02, 0.012, 0.012)  # jowls
    relief -= 0.003 * gauss(ax, y, 0.063, e + 0.03, 0.01, 0.015)
    relief *= front
    # Ears on the sides.
    relief += 0.012 * gauss(z, y, -0.008, e - 0.012, 0.012, 0.02) * smoothstep(np.abs(u[:, 0]), 0.6, 0.9)
    r = radius + relief
    base = np.column_stack([x, y, z])
    eyes = []
    for side in (1.0, -1.0):
        centre_w = gauss(x, y, side * lm.eye_x, e, 0.002, 0.002) * (u[:, 1] > 0.3)
        eye, r_eye = _eye(side, lm, q, x, y, u, centre_w @ base / centre_w.sum())
        r = np.where(eye.w > 0, r + eye.w * (np.nan_to_num(r_eye) - r), r)
        eyes.append(eye)
    return Head(np.column_stack([r * u[:, 0], y, r * u[:, 1]]), x, y, u, front, lm, q, (eyes[0], eyes[1]))


def sample_identities(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` identities ``(n, N_IDENTITY_PARAMS)`` from a non-Gaussian law, with ``rng``.

    Shape parameters: a mixture of three populations (probabilities 0.4, 0.35, 0.25) with their own means
    (within +-1.2) and spreads (0.6 to 0.9) on every shape parameter; ``age`` uniform on [-2, 2]; ``weight``
    ``gamma(2, 0.6) - 1`` (skewed: many lean, a few heavy); style parameters ``N(0, 1)``.
    """
    means = np.random.default_rng(20261204).uniform(-1.2, 1.2, (3, len(SHAPE_PARAMS)))
    spreads = np.array([0.9, 0.7, 0.6])
    out = np.empty((n, N_IDENTITY_PARAMS))
    for i in range(n):
        k = rng.choice(3, p=[0.4, 0.35, 0.25])
        out[i, : len(SHAPE_PARAMS)] = means[k] + spreads[k] * rng.standard_normal(len(SHAPE_PARAMS))
        out[i, P["age"]] = rng.uniform(-2.0, 2.0)
        out[i, P["weight"]] = rng.gamma(2.0, 0.6) - 1.0
        out[i, len(SHAPE_PARAMS):] = rng.standard_normal(len(STYLE_PARAMS))
    return out
