"""Expression rig of the synthetic faces: how one identity makes each of the twelve COMA expressions.

Motions (all act on the current positions ``p (V, 3)``, with per-vertex amounts from masks ``(V,)``):

* Jaw: one real rotation by ``theta w_jaw`` about the hinge axis (near the x axis, rolled by the person's
  jaw deviation, through a pivot behind and below the ear), then the condyle's forward-down glide once
  ``theta > 0.12`` rad (:meth:`Rig.jaw_open`, :meth:`Rig.glide_offset`). ``w_jaw`` is 1 on the mandible, chin
  and lower lip and fades smoothly along the path neck base -> throat -> chin, so the skin under the jaw
  stretches. Angles reach 0.2-0.35 rad, so sin/cos matter: the motion is not a blend. The rows of the
  mouth slit between the lips line the mouth cavity as it opens (pushed in by
  ``cavity (sin(theta / 2) / sin(theta_max / 2))^2``), and the lips *stick*: near the midline the lower
  lip's margin follows the jaw only once the opening exceeds about 6 mm
  (``w_jaw (1 - stick exp(-(theta / 0.05)^2))``, the stickiness a style parameter).
* Eyelids: rotations about the horizontal axis through the eyeball centre, so every lid vertex slides
  on its shell ``|p - c_e| = const`` (the eyeball sphere plus the lid thickness): the upper lid closes or
  opens, the lower lid rises in a squint.
* Skin over bone: the mouth corners, lips, cheeks and brows slide along arcs about axes through the head
  centre, so they move over the face instead of cutting into it; the lips roll about their bases.
* Volume kept (:meth:`Rig.bulge`): a cheek or lip bulge pushes an outward mask out and a ring around it in
  by the amount that keeps the head's signed volume ``V = sum_f p_0 . (p_1 x p_2) / 6`` (solved by secant
  steps to ``|dV| < 1e-4`` of the volume moved).
* Timing, asymmetry and strength: the parts of an expression follow ``early = g (2 - g)`` and
  ``late = g^2``; ``g = weight (1 + asymmetry tanh(X / 15 mm)) strength(X, Y)`` is one-sided, and the
  person's muscle-strength map ``strength = 1 + 0.4 mean_k cos(2 pi (X cos a_k + Y sin a_k) / 45 mm + f_k)``
  (two plane waves whose directions ``a_k`` and phases ``f_k`` are style parameters) makes each person's
  version of an expression a different field, not a rescaled copy of a shared one.

Per identity (the style parameters of :mod:`morphable.data.synthetic_head`): the hinge height and depth
(+-1 cm at the clip), the jaw's opening (x 0.75 to 1.25), the expressiveness (x 0.7 to 1.3 on every
non-jaw amplitude), the smile shape (wide vs high), the brow style (inner vs outer brows), the lip curl
and a dominant side that adds to the asymmetry. Masks and pivots are placed by the identity's own
landmarks and act on its own vertices, so identity and expression interact non-linearly.
"""

from __future__ import annotations

import numpy as np

from morphable.data.synthetic_head import NECK_Y, Head, P, gauss, smoothstep

EXPRESSIONS: tuple[str, ...] = (
    "bareteeth", "cheeks_in", "eyebrow", "high_smile", "lips_back", "lips_up",
    "mouth_down", "mouth_extreme", "mouth_middle", "mouth_open", "mouth_side", "mouth_up",
)

X_AXIS = np.array([1.0, 0.0, 0.0])  # a positive angle turns +y towards +z (points in front move down)
Y_AXIS = np.array([0.0, 1.0, 0.0])  # a positive angle turns +z towards +x
Z_AXIS = np.array([0.0, 0.0, 1.0])  # a positive angle turns +x towards +y
MAP_DEPTH = 0.4  # how much the muscle strength varies over one person's face
MAP_WAVELENGTH = 0.045  # (m) of the two plane waves of a person's muscle-strength map


def rotation_offset(p: np.ndarray, centre: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Offsets ``(V, 3)`` that rotate points ``p (V, 3)`` by ``angle (V,)`` radians about the line through
    ``centre`` with unit direction ``axis`` (Rodrigues: ``(r - (r.k)k)(cos - 1) + (k x r) sin``)."""
    rel = p - centre
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    return (rel - np.outer(rel @ axis, axis)) * (cos - 1) + np.cross(axis, rel) * sin


def turn(p: np.ndarray, centre: np.ndarray, axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotate each vertex by its ``angle (V,)``; vertices under ``1e-12`` rad stay put exactly."""
    active = np.abs(angle) > 1e-12
    out = p.copy()
    out[active] += rotation_offset(p[active], centre, axis, angle[active])
    return out


def signed_volume(p: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume ``sum_f p_0 . (p_1 x p_2) / 6`` of the closed mesh (positive for outward faces)."""
    a, b, c = p[faces[:, 0]], p[faces[:, 1]], p[faces[:, 2]]
    return float(np.einsum("ij,ij->", a, np.cross(b, c)) / 6.0)


def muscle_strength(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """A person's muscle-strength map ``(V,)`` at face-plane points ``x, y (V,)``:
    ``1 + MAP_DEPTH mean_k cos(2 pi (x cos a_k + y sin a_k) / MAP_WAVELENGTH + f_k)`` with ``a_k = 1.43 q`` of
    ``muscle_map_angle_k`` and ``f_k = 1.43 q`` of ``muscle_map_phase_k`` (within +-pi at the clip)."""
    waves = []
    for k in (1, 2):
        angle, phase = 1.43 * q[P[f"muscle_map_angle_{k}"]], 1.43 * q[P[f"muscle_map_phase_{k}"]]
        waves.append(np.cos(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / MAP_WAVELENGTH + phase))
    return 1 + MAP_DEPTH * (waves[0] + waves[1]) / 2


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * t))


def _softplus(t: np.ndarray, width: float) -> np.ndarray:
    return width * np.logaddexp(0.0, t / width)


class Rig:
    """Masks ``(V,)``, pivots and style amplitudes of one identity (module docstring)."""

    def __init__(self, head: Head, faces: np.ndarray):
        self.head = h = head
        self.faces = faces
        lm, q = h.lm, h.q
        x, y, front = h.x, h.y, h.front
        ax, mw, m, sc = np.abs(x), lm.mouth_half_width, lm.mouth_y, lm.scale
        self.outward = np.column_stack([h.u[:, 0], np.zeros_like(x), h.u[:, 1]])
        self.centre = 0.5 * (h.vertices.min(axis=0) + h.vertices.max(axis=0)) * [0.0, 1.0, 1.0]
        self.hinge = np.array([0.0, lm.eye_y - 0.045 + 0.0045 * q[P["hinge_height"]],
                               self.centre[2] - 0.047 + 0.0045 * q[P["hinge_depth"]]])
        self.jaw_scale = 1 + 0.09 * q[P["jaw_opening"]]
        tilt = 0.05 * q[P["jaw_deviation"]]  # the hinge axis rolls: the chin deviates sideways as the jaw opens
        self.hinge_axis = np.array([np.cos(tilt), np.sin(tilt), 0.0])
        self.amp = 1 + 0.14 * q[P["expressiveness"]]
        self.smile_up = 0.5 + 0.2 * np.tanh(q[P["smile_shape"]])  # share of "up" in a smile
        self.brow_inner = 0.5 + 0.22 * np.tanh(q[P["brow_style"]])
        self.curl = 1 + 0.2 * q[P["lip_curl"]]
        self.side = 0.1 * np.tanh(q[P["dominant_side"]])
        self.side_sign = 1.0 if q[P["dominant_side"]] >= -0.3 else -1.0  # mouth_side's side: a person's habit
        self.wavelength = 0.016 * (1 + 0.12 * q[P["wrinkle_spacing"]])
        self.phase = 1.4 * q[P["wrinkle_phase"]]
        self.glide = 0.003 * (1.5 + q[P["jaw_glide"]])
        self.strength = muscle_strength(x, y, q)
        xm = x / mw
        # Mouth line, rising towards the hinge beyond the corners; the jaw moves everything below it.
        rise = _softplus(ax - mw, 0.005)
        self.below = below = _sigmoid((m + 0.001 * xm**2 + 0.8 * rise - y) / (0.0011 + 0.35 * rise))
        path = h.vertices[:, 1] - NECK_Y + np.maximum(h.vertices[:, 2] - 0.045, 0.0)
        self.jaw = below * smoothstep(path, 0.0, 0.095) * smoothstep(h.u[:, 1], 0.0, 0.45)
        self.gap = 4 * below * (1 - below) * np.exp(-((xm / 1.05) ** 4)) * front
        lips = np.exp(-((xm / 1.15) ** 4)) * front
        self.upper_lip = lips * (1 - below) * np.exp(-0.5 * ((y - m) / (0.011 * sc)) ** 2)
        self.lower_lip = lips * below * np.exp(-0.5 * ((y - m) / (0.012 * sc)) ** 2)
        self.stick = ((0.5 + 0.2 * q[P["lip_stickiness"]]) * below * np.exp(-0.5 * ((y - m) / 0.003) ** 2)
                      * np.exp(-((x / 0.014) ** 2)) * front)
        self.mouth = np.exp(-((xm / 1.4) ** 4)) * np.exp(-0.5 * ((y - m) / (0.017 * sc)) ** 2) * front
        self.corner_r = gauss(x, y, mw, m, 0.013 * sc, 0.013 * sc) * front
        self.corner_l = gauss(x, y, -mw, m, 0.013 * sc, 0.013 * sc) * front
        eye_w = h.eyes[0].w + h.eyes[1].w
        self.cheek = gauss(ax, y, 0.046, m + 0.004, 0.013, 0.015 * sc) * front
        self.cheek_raise = gauss(ax, y, 0.042, lm.eye_y - 0.028 * sc, 0.016, 0.012) * front * (1 - eye_w)
        self.cheek_ring = (gauss(ax, y, 0.05, m - 0.012, 0.014, 0.012) + gauss(ax, y, 0.062, lm.eye_y - 0.01, 0.008,
                                                                                 0.012)) * front * (1 - eye_w)
        self.alae = gauss(ax, y, 0.012, lm.nose_tip_y, 0.012, 0.008) * front
        self.nasolabial = gauss(ax, y, 0.027, lm.nose_tip_y - 0.012, 0.008, 0.012) * front
        self.chin = gauss(x, y, 0.0, lm.chin_y, 0.02, 0.014 * sc) * front
        hairline = h.vertices[:, 1].max() - 0.035
        side_w = 2 * (self.brow_inner + (1 - 2 * self.brow_inner) * smoothstep(ax, 0.012, 0.032))
        brow_top = max(lm.brow_y, lm.eye_y + 0.016) + 0.002
        self.brow = (smoothstep(y, lm.eye_y + 0.009, brow_top + 0.008)
                     * (1 - smoothstep(y, brow_top + 0.008, hairline))
                     * np.exp(-((x / 0.058) ** 4)) * front) * (0.6 + 0.4 * side_w)
        self.forehead = smoothstep(y, lm.brow_y, lm.brow_y + 0.012) \
            * (1 - smoothstep(y, hairline - 0.035, hairline - 0.005)) * np.exp(-((x / 0.045) ** 4)) * front
        mouth_point = h.point(0.0, m)
        self.upper_lip_axis = mouth_point + np.array([0.0, 0.012 * sc, -0.008])
        self.lower_lip_axis = mouth_point + np.array([0.0, -0.013 * sc, -0.008])
        # Lids: weights of the upper and lower lid rotations about each eyeball centre.
        self.lids = []
        for eye in h.eyes:
            # Across the opening the upper weight rises linearly from 0 at the lower margin to 1 at the upper
            # one (and the lower weight falls), so a closing opening shrinks evenly instead of folding.
            patch = smoothstep(eye.w, 0.5, 1.0) * (1 - smoothstep(np.abs(x - eye.centre[0]), 0.007, 0.0125))
            t = np.clip((y - eye.lower) / np.maximum(eye.upper - eye.lower, 1e-3), 0.0, 1.0)
            up = patch * t * (1 - smoothstep(y, eye.upper + 0.002, eye.upper + 0.007))  # the lid, not the brow
            low = patch * (1 - t) * smoothstep(y, eye.lower - 0.007, eye.lower - 0.002)
            self.lids.append((eye.centre, up, low))

    # ------------------------------------------------------------------ motions

    def push(self, p: np.ndarray, amount: np.ndarray) -> np.ndarray:
        """Move outwards by ``amount (V,)`` along the horizontal chart direction ``u`` (not the normal:
        normals converge in creases such as the mouth line, and pushing along them folds the surface)."""
        return p + amount[:, None] * self.outward

    def jaw_open(self, p: np.ndarray, g: np.ndarray, angle: float, cavity: float) -> np.ndarray:
        """Open the jaw by ``theta = angle jaw_scale <g>`` about the hinge (``<g>`` the jaw-weighted mean intensity:
        one angle, the mandible is rigid), then let it glide (:meth:`glide_offset`); sticky lips and the
        cavity: module docstring."""
        theta = angle * self.jaw_scale * float(np.average(g, weights=self.jaw))  # one angle: the jaw is a bone
        weight = self.jaw * (1 - self.stick * np.exp(-((theta / 0.05) ** 2)))
        p = turn(p, self.hinge, self.hinge_axis, theta * weight)
        depth = (np.sin(0.5 * theta) / np.sin(0.5 * angle * self.jaw_scale)) ** 2
        return self.push(p + weight[:, None] * self.glide_offset(theta), -cavity * depth * self.gap)

    def glide_offset(self, theta: np.ndarray) -> np.ndarray:
        """Forward-down glide ``(..., 3)`` of the condyle at jaw angle ``theta``: ``glide max(theta - 0.12,
        0)^2 / 0.04 (0, -0.5, 1)`` (it starts once the pure rotation has opened the mouth by about 1.5 cm)."""
        amount = self.glide * np.maximum(np.asarray(theta) - 0.12, 0.0) ** 2 / 0.04
        return amount[..., None] * np.array([0.0, -0.5, 1.0])

    def eyelids(self, p: np.ndarray, g: np.ndarray, upper: float, lower: float) -> np.ndarray:
        """Turn the upper lids down by ``g upper`` radians (negative: open wider) and the lower lids up by
        ``g lower``, each about the horizontal axis through its eyeball's centre; ``g`` is capped at 1.25 so the
        lids never cross (at most 0.4 rad of closure over an opening of about 0.6 rad)."""
        g = np.minimum(g, 1.25)
        for centre, up, low in self.lids:
            p = turn(p, centre, X_AXIS, g * (upper * up - lower * low))
        return p

    def corners(self, p: np.ndarray, g: np.ndarray, out: float, up: float) -> np.ndarray:
        """Slide the mouth corners along the face: sideways-back by ``g out`` and up by ``g up`` radians."""
        p = turn(p, self.centre, Y_AXIS, out * g * (self.corner_r - self.corner_l))
        return turn(p, self.centre, X_AXIS, -up * g * (self.corner_r + self.corner_l))

    def smile(self, p: np.ndarray, g: np.ndarray, amount: float) -> np.ndarray:
        """Corners out and up, split by the identity's smile shape."""
        return self.corners(p, g, amount * (1 - self.smile_up) * 2, amount * self.smile_up * 2)

    def lip_curl(self, p: np.ndarray, g: np.ndarray, angle: float) -> np.ndarray:
        """Roll both lips outwards (``angle > 0``) or inwards about their bases."""
        angle = angle * self.curl
        p = turn(p, self.upper_lip_axis, X_AXIS, -angle * g * self.upper_lip)
        return turn(p, self.lower_lip_axis, X_AXIS, angle * g * self.lower_lip)

    def pucker(self, p: np.ndarray, gather: np.ndarray, pout: np.ndarray, amount: float) -> np.ndarray:
        """Gather the mouth towards the midline (``x *= 1 - amount gather``), push the lips forward by
        ``12 mm amount pout`` (volume kept against the cheeks) and roll them out."""
        p = p.copy()
        p[:, 0] -= amount * gather * self.mouth * self.head.x
        p = self.bulge(p, 0.012 * amount * pout, self.upper_lip + self.lower_lip, self.cheek)
        return self.lip_curl(p, pout, 0.5 * amount)

    def bulge(self, p: np.ndarray, amount: np.ndarray, out_mask: np.ndarray, in_mask: np.ndarray) -> np.ndarray:
        """Push ``out_mask`` out by ``amount`` (scalar or ``(V,)``) and ``in_mask`` in by the factor ``k`` that
        keeps :func:`signed_volume` (secant steps on ``k`` until ``|V - V_0|`` is under ``1e-4`` of the
        volume change of the outward push alone)."""
        v0 = signed_volume(p, self.faces)
        out = self.push(p, amount * out_mask)
        inward = -np.broadcast_to(amount, out_mask.shape) * in_mask

        def excess(k: float) -> float:
            return signed_volume(self.push(out, k * inward), self.faces) - v0

        k0, k1 = 0.0, 1.0
        f0 = moved = excess(0.0)
        f1 = excess(1.0)
        for _ in range(8):
            if abs(f1) <= 1e-4 * abs(moved) or f1 == f0:
                break
            k0, k1, f0 = k1, k1 - f1 * (k1 - k0) / (f1 - f0), f1
            f1 = excess(k1)
        return self.push(out, k1 * inward)

    def brows(self, p: np.ndarray, g: np.ndarray, angle: float) -> np.ndarray:
        """Raise the brows along the forehead arc and fold forehead wrinkles ``~ min(g, 1)^2`` (the person's
        spacing and phase)."""
        p = turn(p, self.centre, X_AXIS, -angle * g * self.brow)
        wave = np.sin(2 * np.pi * (self.head.y - self.head.lm.brow_y) / self.wavelength + self.phase)
        return self.push(p, 0.0006 * (angle / 0.09) * np.minimum(g, 1.0) ** 2 * wave * self.forehead)

    def crinkle(self, p: np.ndarray, g: np.ndarray, amount: float) -> np.ndarray:
        """Crow's feet and nasolabial creases folding ``~ min(g, 1)^2`` with the identity's spacing and phase: radial
        waves ``sin(atan2(dy, dx) 2 pi 16 mm / wavelength + phase)`` beside each eye and a fold along the
        nasolabial line."""
        h = self.head
        out = np.zeros(len(p))
        for eye in h.eyes:
            dx, dy = np.abs(h.x) - abs(eye.centre[0]) - 0.016, h.y - eye.centre[1]
            same_side = np.sign(h.x) == np.sign(eye.centre[0])
            ring = np.exp(-0.5 * (np.hypot(dx, dy) / 0.008) ** 2) * (1 - eye.w) * same_side
            out += ring * np.sin(np.arctan2(dy, dx) * 2 * np.pi * 0.016 / self.wavelength + self.phase)
        out -= 1.5 * self.nasolabial
        return self.push(p, amount * np.minimum(g, 1.0) ** 2 * out * h.front)

    # ------------------------------------------------------------------ expressions

    def pose(self, name: str, g: np.ndarray, mix: np.ndarray | None = None) -> np.ndarray:
        """Vertices ``(V, 3)`` of expression ``name`` at per-vertex intensity ``g (V,)``.

        ``mix (4,)`` (default ones) scales the expression's parts in turn (part ``k`` by ``mix[k % 4]``, times
        the identity's expressiveness): how strongly this person uses each muscle of the expression.

        The parts of an expression follow different timings, ``early = g (2 - g)`` (leads) and
        ``late = g^2`` (follows), as muscles do; both reach 1 at ``g = 1``, so a sequence traces a
        curve, not a line, through shape space.
        """
        p = self.head.vertices
        a = self.amp * (np.ones(4) if mix is None else np.asarray(mix, dtype=np.float64))
        early, late = g * (2 - g), g * g
        if name == "bareteeth":
            p = self.corners(p, early, 0.09 * a[0], 0.03 * a[0])
            p = turn(p, self.centre, X_AXIS, -0.09 * a[1] * early * self.upper_lip)
            p = turn(p, self.centre, X_AXIS, 0.08 * a[2] * late * self.lower_lip)
            p = self.lip_curl(p, late, -0.2 * a[3])
            p = self.jaw_open(p, late, 0.07, 0.006)
            p = self.eyelids(p, late, 0.1 * a[0], 0.1 * a[0])
        elif name == "cheeks_in":
            p = self.push(p, -0.016 * a[0] * early**1.5 * self.cheek)
            p = self.pucker(p, late, late, 0.2 * a[1])
            p = self.jaw_open(p, late, 0.04, 0.003)
        elif name == "eyebrow":
            p = self.brows(p, g, 0.13 * a[0])
            p = self.eyelids(p, early, -0.15 * a[1], 0.05)
        elif name == "high_smile":
            p = self.smile(p, early, 0.12 * a[0])
            p = turn(p, self.centre, X_AXIS, -0.07 * a[1] * late * self.cheek_raise)
            p = self.bulge(p, 0.004 * a[2] * late**1.5, self.cheek_raise, self.cheek_ring)
            p = self.eyelids(p, late, 0.12 * a[3], 0.2 * a[3])
            p = self.crinkle(p, late, 0.0006 * a[0])
            p = turn(p, self.centre, X_AXIS, -0.04 * a[1] * late * (self.upper_lip + self.nasolabial))
            p = self.jaw_open(p, late, 0.07, 0.006)
        elif name == "lips_back":
            p = self.corners(p, early, 0.16 * a[0], 0.0)
            p = self.lip_curl(p, late, -0.3 * a[1])
            p = self.push(p, -0.003 * a[2] * late * self.mouth)
        elif name == "lips_up":
            sneer = self.upper_lip + 0.6 * self.alae + self.nasolabial
            p = turn(p, self.centre, X_AXIS, -0.12 * a[0] * early * sneer)
            p = self.push(p, 0.002 * a[1] * late * self.alae)
            p = self.lip_curl(p, late, 0.25 * a[2])
            p = self.eyelids(p, late, 0.08 * a[3], 0.12 * a[3])
            p = self.crinkle(p, late, 0.0005 * a[0])
        elif name == "mouth_down":
            p = self.corners(p, early, 0.03 * a[0], -0.14 * a[0])
            p = self.lip_curl(p, late, 0.2 * a[1])
            p = turn(p, self.centre, X_AXIS, -0.04 * a[2] * late * self.chin)
            p = self.push(p, 0.003 * a[3] * late * self.chin)
        elif name == "mouth_extreme":
            p = self.lip_curl(p, early, -0.15 * a[0])
            p = self.jaw_open(p, g, 0.32, 0.022)
            p = self.corners(p, late, 0.08 * a[1], 0.0)
            p = self.brows(p, late, 0.08 * a[2])
            p = self.eyelids(p, early, -0.12 * a[3], 0.0)
        elif name == "mouth_middle":
            p = self.pucker(p, early, late, 0.45 * a[0])
        elif name == "mouth_open":
            p = self.lip_curl(p, late, 0.08 * a[0])
            p = self.jaw_open(p, early, 0.22, 0.016)
        elif name == "mouth_side":
            to = self.side_sign * a[0]
            p = turn(p, self.centre, Y_AXIS, 0.2 * to * early * self.mouth)
            p = turn(p, self.hinge * [0, 1, 1] + [0, 0, -0.02], Y_AXIS, 0.04 * self.side_sign * a[1] * late * self.jaw)
        elif name == "mouth_up":
            p = turn(p, self.centre, X_AXIS, -0.11 * a[0] * early * (self.lower_lip + self.chin))
            p = turn(p, self.centre, X_AXIS, -0.03 * a[1] * late * self.upper_lip)
            p = self.corners(p, late, 0.0, -0.04 * a[2])
            p = self.push(p, 0.003 * a[3] * late * self.chin)
        return p


def head_pose(p: np.ndarray, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Turn the head on the neck: yaw (about y), pitch (about x) and roll (about z) in radians, about a pivot
    in the neck ``(0, NECK_Y + 30 mm, -10 mm)``, with the weight ``smoothstep(y, NECK_Y, NECK_Y + 60 mm)``
    so the neck twists smoothly down to its fixed base; each rotation is a real rotation of the vertices
    above the neck."""
    pivot = np.array([0.0, NECK_Y + 0.03, -0.01])
    w = smoothstep(p[:, 1], NECK_Y, NECK_Y + 0.06)
    for axis, angle in ((Y_AXIS, yaw), (X_AXIS, pitch), (Z_AXIS, roll)):
        if angle:
            p = turn(p, pivot, axis, angle * w)
    return p
