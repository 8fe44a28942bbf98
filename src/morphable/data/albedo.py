"""Procedural skin albedo in UV space, for synthetic face photos (:mod:`morphable.data.photos`).

Every feature is placed on the model's *mean* surface, so it needs only UVs and the 68 iBUG landmark
vertices (it works for any :class:`~morphable.data.linear.LinearFaceModel` that has them) and it is
continuous across UV seams. The model frame is assumed to be the usual one of face models (ICT-FaceKit,
FLAME, BFM): ``+y`` up, ``+z`` out of the face; lengths below are in cm and scaled to the model's unit.

A *position map* (:func:`uv_position_map`) rasterises the textured triangles in UV space: texel
``(row i, column j)`` has its centre at ``u' = (j + 1/2) / W_t``, ``v' = 1 - (i + 1/2) / H_t`` (v up, as
:func:`morphable.render.shading.sample_texture` reads it), where ``u' = (u - u_lo) / (u_hi - u_lo)`` and
likewise ``v'`` map the bounding box of the textured UVs onto the texture (ICT-FaceKit's skin spans two UDIM
tiles, so its texture is twice as wide as high). Each texel holds the interpolated mean-shape position
``p (3,)`` and normal ``n (3,)``; texels outside every triangle copy their nearest covered texel, so
bilinear look-ups at chart borders do not bleed in black.

The albedo (linear RGB in [0, 1]) of :func:`skin_albedo` is built from :class:`AlbedoParams`:

* tone: a skin colour on a light-to-dark sRGB ramp, with a redness shift;
* blotches: ``1 + a sum_k sin(w_k . p + phi_k) / K`` (random 3D frequencies of 2-6 cm wavelength),
  modulating brightness and redness;
* freckles: discs of 0.06-0.16 cm radius centred on surface points drawn around the nose tip (weight
  ``exp(-|p - p_30|^2 / (2 (4 cm)^2))``), darker and browner than the skin;
* lips: inside the outer-lip polygon (landmarks 48-59) seen along ``z``, with a soft 0.15 cm edge (the
  inner lips, whatever way they face, included: only the 1.5 cm depth window keeps the back of the head out);
* brows: a band around each brow polyline (landmarks 17-21, 22-26) in ``x, y``, tapering towards the
  temples, in the hair colour;
* lash lines: a thin dark band along the upper lids (landmarks 36-39, 42-45);
* hair cap (optional): texels above a hairline ``y_h`` that drops towards the back of the head (with
  thin streaks of 0.4-1.2 cm wavelength),
  ``y + 0.55 max(0, z_27 - 2 - z) > y_h`` with ``y_h`` 1.5-4.5 cm above the brows.

The ``x, y`` tests of lips, brows and lids only count texels on the front of the head (near the feature in
``z`` and with ``n_z > 0``), so the back of the head, whose ``x, y`` overlap the face, is untouched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from morphable.errors import MorphableError

LIPS = tuple(range(48, 60))
BROWS = (tuple(range(17, 22)), tuple(range(22, 27)))
UPPER_LIDS = ((36, 37, 38, 39), (42, 43, 44, 45))
NOSE_TIP = 30
NASION = 27

# Skin tones, light to dark, sRGB 0-255 (interpolated piecewise-linearly by AlbedoParams.tone).
TONE_RAMP = np.array([[246, 208, 186], [232, 180, 150], [208, 150, 115], [176, 118, 84], [132, 86, 58],
                      [92, 58, 40], [62, 40, 30]], dtype=np.float64) / 255.0
# Hair colours, sRGB 0-255: black, dark brown, brown, auburn, dark blond, blond, grey.
HAIR_COLOURS = np.array([[22, 18, 16], [48, 32, 22], [84, 56, 36], [118, 58, 30], [150, 118, 74],
                         [196, 166, 112], [150, 146, 140]], dtype=np.float64) / 255.0


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The sRGB transfer function inverted: ``c / 12.92`` below 0.04045, else ``((c + 0.055) / 1.055)^2.4``."""
    c = np.asarray(c)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """The sRGB transfer function: ``12.92 c`` below 0.0031308, else ``1.055 c^(1/2.4) - 0.055``; clipped to [0, 1]."""
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


@dataclass(frozen=True)
class AlbedoParams:
    """The parameters of one procedural albedo (:func:`sample_albedo_params` draws them).

    Attributes:
        tone: position on :data:`TONE_RAMP`, 0 (lightest) .. 1 (darkest).
        redness: added to red and taken from blue, in linear RGB (-0.04 .. 0.06).
        blotch_amplitude: relative amplitude of the low-frequency blotches (0 .. 0.12).
        freckles: number of freckles (0 .. 400).
        freckle_darkness: freckle albedo = skin times (1 - this) (0.15 .. 0.45).
        lip_strength: blend weight towards the lip colour (0.35 .. 0.9).
        brow_width: half-width of the brows at their inner end, cm (0.25 .. 0.5).
        brow_strength: blend weight towards the hair colour (0.5 .. 0.95).
        hair: whether a hair cap is painted.
        hairline: height of the hairline above the highest brow landmark, cm (1.5 .. 4.5).
        hair_colour: ``(3,)`` sRGB hair (and brow) colour.
        noise_seed: seed of the blotch frequencies and freckle positions.
    """

    tone: float
    redness: float
    blotch_amplitude: float
    freckles: int
    freckle_darkness: float
    lip_strength: float
    brow_width: float
    brow_strength: float
    hair: bool
    hairline: float
    hair_colour: tuple[float, float, float]
    noise_seed: int

    def vector(self) -> np.ndarray:
        """The parameters as one float64 vector in the order of :func:`albedo_param_names`."""
        values = []
        for key, value in asdict(self).items():
            values.extend(value if key == "hair_colour" else [value])
        return np.asarray(values, dtype=np.float64)


def albedo_param_names() -> list[str]:
    """Names of the entries of :meth:`AlbedoParams.vector` (``hair_colour`` is three: ``_r, _g, _b``)."""
    names = []
    for f in fields(AlbedoParams):
        names.extend([f"{f.name}_{c}" for c in "rgb"] if f.name == "hair_colour" else [f.name])
    return names


def sample_albedo_params(rng: np.random.Generator, hair_probability: float = 0.5) -> AlbedoParams:
    """Draw :class:`AlbedoParams` uniformly within the ranges given there (freckles: none for 60 % of the
    identities, else uniform up to 400; ``hair`` with ``hair_probability``)."""
    return AlbedoParams(
        tone=float(rng.uniform(0, 1)), redness=float(rng.uniform(-0.04, 0.06)),
        blotch_amplitude=float(rng.uniform(0, 0.12)),
        freckles=int(rng.integers(0, 401)) if rng.uniform() < 0.4 else 0,
        freckle_darkness=float(rng.uniform(0.15, 0.45)), lip_strength=float(rng.uniform(0.35, 0.9)),
        brow_width=float(rng.uniform(0.25, 0.5)), brow_strength=float(rng.uniform(0.5, 0.95)),
        hair=bool(rng.uniform() < hair_probability), hairline=float(rng.uniform(1.5, 4.5)),
        hair_colour=tuple(float(c) for c in HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))]
                          * rng.uniform(0.85, 1.1)),
        noise_seed=int(rng.integers(2**31)))


@dataclass
class PositionMap:
    """Mean-shape surface positions and normals per texel (:func:`uv_position_map`).

    Attributes:
        position: ``(H_t, W_t, 3)`` float64 model-frame positions.
        normal: ``(H_t, W_t, 3)`` unit normals.
        covered: ``(H_t, W_t)`` bool, True where a textured triangle covers the texel centre.
        uv_lo, uv_hi: ``(2,)`` the UV box mapped onto the texture.
        landmarks: ``(68, 3)`` mean-shape landmark positions.
        cm: model units per centimetre.
    """

    position: np.ndarray
    normal: np.ndarray
    covered: np.ndarray
    uv_lo: np.ndarray
    uv_hi: np.ndarray
    landmarks: np.ndarray
    cm: float

    def texture_uv(self, uvs: np.ndarray) -> np.ndarray:
        """Model UVs ``(..., 2)`` -> texture coordinates in [0, 1] (``(uv - uv_lo) / (uv_hi - uv_lo)``)."""
        return (np.asarray(uvs, dtype=np.float64) - self.uv_lo) / (self.uv_hi - self.uv_lo)


def uv_position_map(mean: np.ndarray, faces: np.ndarray, uvs: np.ndarray, face_uvs: np.ndarray,
                    landmarks: np.ndarray, height: int, cm: float) -> PositionMap:
    """Rasterise textured triangles in UV space (see the module docstring).

    Args:
        mean: ``(V, 3)`` mean shape; faces ``(F, 3)``; uvs ``(T, 2)``; face_uvs ``(F, 3)`` (the textured faces).
        landmarks: ``(68,)`` landmark vertex indices.
        height: texture height ``H_t``; the width keeps the UV box's aspect ratio (rounded).
        cm: model units per centimetre (ICT-FaceKit: 1).

    Returns:
        :class:`PositionMap`.
    """
    import torch
    from scipy import ndimage

    from morphable.mesh.normals import vertex_normals
    from morphable.render.raster import interpolate
    from morphable.render.uv_space import rasterize_uv

    used = np.unique(face_uvs)
    lo, hi = uvs[used].min(axis=0), uvs[used].max(axis=0)
    if not np.all(hi > lo):
        raise MorphableError("the textured faces' UVs span no area")
    width = max(1, int(np.rint(height * (hi[0] - lo[0]) / (hi[1] - lo[1]))))
    r = rasterize_uv((uvs - lo) / (hi - lo), face_uvs, height, width)
    corner_of_uv = np.zeros(len(uvs), dtype=np.int64)
    corner_of_uv[face_uvs.reshape(-1)] = faces.reshape(-1)
    normals = vertex_normals(torch.from_numpy(mean), torch.from_numpy(faces)).numpy()
    attributes = torch.from_numpy(np.concatenate([mean, normals], axis=1)[corner_of_uv])
    values = interpolate(attributes, face_uvs, r.face_index, r.bary).numpy()
    covered = r.mask.numpy()
    nearest = ndimage.distance_transform_edt(~covered, return_distances=False, return_indices=True)
    values = values[nearest[0], nearest[1]]
    normal = values[..., 3:] / np.maximum(np.linalg.norm(values[..., 3:], axis=-1, keepdims=True), 1e-12)
    return PositionMap(values[..., :3], normal, covered, lo, hi, mean[landmarks], cm)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    """``3 t^2 - 2 t^3`` with ``t = clip(x, 0, 1)``."""
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _segment_distance(points: np.ndarray, polyline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of ``points (N, 2)`` to a polyline ``(M, 2)`` and the arc-length fraction (0..1) of the
    nearest point on it: ``(N,)``, ``(N,)``."""
    a, b = polyline[:-1], polyline[1:]
    ab = b - a
    seg_len = np.linalg.norm(ab, axis=1)
    s = np.clip(np.einsum("nmk,mk->nm", points[:, None] - a, ab) / np.maximum(seg_len**2, 1e-12), 0, 1)
    d = np.linalg.norm(points[:, None] - (a + s[..., None] * ab), axis=-1)
    k = d.argmin(axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg_len)])
    frac = (arc[k] + s[np.arange(len(k)), k] * seg_len[k]) / max(arc[-1], 1e-12)
    return d[np.arange(len(k)), k], frac


def _polygon_signed_distance(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Signed distance of ``points (N, 2)`` to a closed polygon ``(M, 2)``: negative inside (even-odd rule)."""
    closed = np.concatenate([polygon, polygon[:1]])
    d, _ = _segment_distance(points, closed)
    x, y = points[:, 0, None], points[:, 1, None]
    (x0, y0), (x1, y1) = closed[:-1].T[:, None], closed[1:].T[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        crosses = ((y0 > y) != (y1 > y)) & (x < x0 + (y - y0) * (x1 - x0) / (y1 - y0))
    inside = crosses.sum(axis=1) % 2 == 1
    return np.where(inside, -d, d)


def _blend(albedo: np.ndarray, colour: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return albedo + weight[:, None] * (colour - albedo)


def skin_albedo(pmap: PositionMap, params: AlbedoParams) -> np.ndarray:
    """The linear-RGB albedo texture ``(H_t, W_t, 3)`` float32 in [0, 1] of ``params`` on ``pmap``
    (the features of the module docstring)."""
    cm = pmap.cm
    rng = np.random.default_rng(params.noise_seed)
    p = pmap.position.reshape(-1, 3) / cm  # centimetres from here on
    n = pmap.normal.reshape(-1, 3)
    lm = pmap.landmarks / cm
    k = params.tone * (len(TONE_RAMP) - 1)
    i0 = min(int(k), len(TONE_RAMP) - 2)
    base = srgb_to_linear(TONE_RAMP[i0] + (k - i0) * (TONE_RAMP[i0 + 1] - TONE_RAMP[i0]))
    base = base + params.redness * np.array([1.0, 0.0, -0.5])
    albedo = np.broadcast_to(base, p.shape).copy()

    freq = rng.normal(size=(8, 3))
    freq *= (2 * np.pi / rng.uniform(2.0, 6.0, size=8) / np.linalg.norm(freq, axis=1))[:, None]
    blotch = np.sin(p @ freq.T + rng.uniform(0, 2 * np.pi, size=8)).mean(axis=1)
    albedo *= 1 + params.blotch_amplitude * blotch[:, None] * np.array([0.6, 1.0, 1.0])
    albedo[:, 0] += 0.5 * params.blotch_amplitude * np.maximum(blotch, 0) * base[0]

    front = n[:, 2] > 0.1
    if params.freckles:
        from scipy.spatial import cKDTree

        weight = np.exp(-((p - lm[NOSE_TIP]) ** 2).sum(axis=1) / (2 * 4.0**2)) * front
        centres = p[rng.choice(len(p), size=params.freckles, p=weight / weight.sum())]
        radii = rng.uniform(0.06, 0.16, size=params.freckles)
        dist, idx = cKDTree(centres).query(p, distance_upper_bound=0.16)
        hit = np.isfinite(dist)
        spot = np.zeros(len(p))
        spot[hit] = _smoothstep((radii[idx[hit]] - dist[hit]) / 0.04)
        albedo = _blend(albedo, albedo * (1 - params.freckle_darkness) * np.array([1.0, 0.85, 0.7]), spot)

    def near(indices, depth: float, facing: np.ndarray = front) -> np.ndarray:
        return facing & (p[:, 2] > lm[list(indices), 2].min() - depth)

    lips = near(LIPS, 1.5, np.ones(len(p), dtype=bool))
    sd = _polygon_signed_distance(p[lips, :2], lm[list(LIPS), :2])
    lip_colour = albedo[lips] * np.array([1.05, 0.55, 0.6])
    albedo[lips] = _blend(albedo[lips], lip_colour, params.lip_strength * _smoothstep(-sd / 0.15 + 0.5))

    hair = srgb_to_linear(np.asarray(params.hair_colour))
    for brow in BROWS:
        sel = near(brow, 2.5)
        line = lm[list(brow), :2] - np.array([0.0, 0.15])
        d, frac = _segment_distance(p[sel, :2], line if lm[brow[0], 0] > lm[brow[-1], 0] else line[::-1])
        width = params.brow_width * (1 - 0.55 * frac)
        albedo[sel] = _blend(albedo[sel], hair, params.brow_strength * _smoothstep((width - d) / 0.12))
    for lid in UPPER_LIDS:
        sel = near(lid, 1.5)
        d, _ = _segment_distance(p[sel, :2], lm[list(lid), :2])
        albedo[sel] = _blend(albedo[sel], hair * 0.5, 0.8 * _smoothstep((0.07 - d) / 0.04))

    if params.hair:
        y_h = lm[[i for b in BROWS for i in b], 1].max() + params.hairline
        level = p[:, 1] + 0.55 * np.maximum(0.0, lm[NASION, 2] - 2.0 - p[:, 2]) - y_h
        strand = rng.normal(size=(4, 3)) * np.array([1.0, 0.2, 1.0])
        strand *= (2 * np.pi / rng.uniform(0.4, 1.2, size=4) / np.linalg.norm(strand, axis=1))[:, None]
        streaks = 1 + 0.25 * np.sin(p @ strand.T + rng.uniform(0, 2 * np.pi, size=4)).mean(axis=1)
        albedo = _blend(albedo, hair * streaks[:, None], _smoothstep(level / 0.6 + 0.5))
    return np.clip(albedo, 0.0, 1.0).reshape(pmap.position.shape).astype(np.float32)
