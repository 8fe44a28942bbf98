"""Synthetic face photos with exact 3D ground truth (``morphable data photos``) and their reader.

Each photo renders one face of a :class:`~morphable.data.linear.LinearFaceModel` that has UVs and 68 iBUG
landmark vertices (ICT-FaceKit: the ``.npz`` with ``--uvs-from`` its ``FaceXModel`` folder, or the folder):

* identity ``a ~ N(0, I)`` (one per identity; images are assigned to identities in contiguous blocks);
  expression: ICT blendshape weights in [0, 1] (a COMA-named combination of :data:`ICT_EXPRESSIONS` at
  intensity 0.3-1 plus up to three random blendshapes at 0-0.6, or neutral with probability 0.15); a model
  without ICT blendshape names gets ``b ~ N(0, 0.5^2 I)``;
* pose: yaw ~ U(-90, 90), pitch, roll ~ U(-30, 30) degrees about the model's ``y``, ``x``, ``z`` axes,
  ``R = diag(1, -1, -1) R_z(roll) R_x(pitch) R_y(yaw)`` (the diagonal turns the model's y-up, z-out frame
  into OpenCV's y-down, z-forward camera frame, so yaw 0 looks into the camera); the head pivots about the
  centroid ``c`` of its 68 landmarks, and ``X_c = R X + t`` (:mod:`morphable.render.camera`);
* camera: square pixels, vertical field of view ~ U(15, 50) degrees (``f = (H / 2) / tan(fov / 2)``),
  principal point within 2 % of the image centre; the distance puts the landmarks' radius about ``c`` at
  25-38 % of the image width, and ``c`` projects within 6 % of the centre;
* light: 9-band SH radiance (``sh (9, 3)``, the convention of :mod:`morphable.render.shading`, camera frame):
  an ambient term ``L_0 = 2 sqrt(pi) a`` with ``a ~ U(0.25, 0.7)`` and a slight colour tint, plus a
  directional light ``L_k = pi s Y_k(d)``, ``s ~ U(0.3, 1)``, from a direction ``d`` in front of the face and
  above it more often than below; Lambertian shading ``rho E(n) / pi``, clamped to [0, 1];
* albedo: a procedural skin texture per identity (:mod:`morphable.data.albedo`); ICT-FaceKit's mouth socket
  and eyeballs (sclera, iris with pupil, per-identity iris colour) get per-vertex colours;
* detail (``--detail MID HIGH``, millimetres RMS, off by default): per-identity geometry outside the model's
  span and a displacement map that bends the shading normals (:mod:`morphable.data.face_detail`);
* multi-view sets (``--views N``, default 1): consecutive groups of ``N`` images show one identity with one
  expression and one head-fixed light from a ring of cameras spanning +-60 degrees of yaw
  (:func:`multiview_pose_and_light`; annotations ``view_set`` and ``view``);
* background: a two-colour linear gradient, smooth value noise and up to six translucent discs and
  rectangles; then Gaussian blur (sigma ~ U(0, 1.2) px, none for a third of the images) and Gaussian noise
  (sigma ~ U(0, 0.03) in [0, 1] sRGB), quantised to 8 bits.

Each image uses its own random stream ``default_rng([seed, 2, i])`` (identities: ``[seed, 1, j]``), so a
dataset is byte-identical for a seed, whatever the number of worker processes.

Dataset layout (``docs/images.md``)::

    dataset.json          format "morphable-photos", version, seed, resolution, counts, unit, splits, names
    images/<id>.png       RGB, 8-bit sRGB, id = %06d
    masks/<id>.png        8-bit, 255 where the GT mesh covers the pixel centre
    meshes/<id>.npy       (V, 3) float32 GT mesh vertices in the camera frame (model unit)
    albedo/<identity>.png the identity's albedo texture (8-bit sRGB; exactly what was rendered)
    detail/<identity>_mid.npy, _high.npy  with --detail: the mid-band vertex displacement (V, 3) (in the meshes)
                          and the high-band displacement map (H_t, W_t) (shading only), model units
    topology.npz          faces (F, 3), texture coordinates, textured faces, landmark vertices, parts
    annotations.npz       per-image arrays, first axis = image (see :data:`ANNOTATION_KEYS`)
    contact_sheet.png     a grid of images with their landmarks drawn

Landmark visibility (:func:`landmark_visibility`): a landmark is visible when it projects into the image
and no surface along its ray lies more than 2 mm (:data:`OCCLUSION_TOLERANCE_CM`) in front of it (lids
resting on the eyeballs and closed lips touching stay visible); rays are cast exactly, not read from the
z-buffer, whose pixels miss occluders smaller than a pixel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from morphable.data.face_detail import DetailSettings
from morphable.data.albedo import (AlbedoParams, PositionMap, albedo_param_names, linear_to_srgb,
                                   sample_albedo_params, skin_albedo, srgb_to_linear, uv_position_map)
from morphable.data.linear import ICT_EXPRESSIONS, LinearFaceModel, uses_ict_blendshapes
from morphable.errors import MorphableError, input_error
from morphable.io import UNIT_TO_MM, atomic_folder, check_output_folder, read_json, read_npz, write_json

FORMAT = "morphable-photos"
GENERATOR_VERSION = 1
DATASET_FILE = "dataset.json"
CONTACT_SHEET = "contact_sheet.png"
TEXTURE_HEIGHT = 256
SPLIT_FRACTIONS = {"val": 0.1, "test": 0.1}
OCCLUSION_TOLERANCE_CM = 0.2  # a landmark is hidden by surfaces at least this far in front of it

ICT_VERTICES = 26719
# ICT-FaceKit parts rendered (vertex ranges from its README): name -> (first, stop, colour or None = texture).
ICT_PARTS: dict[str, tuple[int, int, tuple[float, float, float] | None]] = {
    "skin": (0, 11248, None),
    "mouth_socket": (11248, 13294, (0.12, 0.03, 0.03)),
    "sclera_left": (21451, 22221, (0.55, 0.52, 0.48)),
    "iris_left": (22221, 23021, None),
    "sclera_right": (23021, 23791, (0.55, 0.52, 0.48)),
    "iris_right": (23791, 24591, None),
}
IRIS_COLOURS = np.array([[0.08, 0.04, 0.02], [0.16, 0.08, 0.03], [0.22, 0.16, 0.06], [0.10, 0.16, 0.28],
                         [0.12, 0.18, 0.10], [0.20, 0.22, 0.24]])
PUPIL_FRACTION = 0.45

ANNOTATION_KEYS = {
    "identity": "(N,) int64 identity index",
    "split": "(N,) str train / val / test (by identity)",
    "K": "(N, 3, 3) float64 intrinsics (OpenCV pixels)",
    "pose": "(N, 4, 4) float64 model-to-camera [R | t]: X_c = R X + t",
    "yaw_pitch_roll": "(N, 3) float64 degrees",
    "shape": "(N, K_s) float64 identity coefficients (standard-deviation units)",
    "expression": "(N, K_e) float64 expression coefficients",
    "albedo": "(N, P) float64 albedo parameters (names in dataset.json)",
    "iris_colour": "(N, 3) float64 linear RGB",
    "sh": "(N, 9, 3) float64 SH radiance, camera frame",
    "landmarks_2d": "(N, 68, 2) float64 pixel (u, v) of the 68 landmark vertices",
    "landmarks_3d": "(N, 68, 3) float64 camera-frame positions of the landmark vertices",
    "landmark_visible": "(N, 68) bool in the image and not occluded",
    "blur_sigma": "(N,) float64 px",
    "noise_sigma": "(N,) float64",
}


# --------------------------------------------------------------------------- the model as rendered


@dataclass
class PhotoModel:
    """A linear model prepared for rendering: the rendered vertices, their bases (float32) and textures.

    Attributes:
        model: the source model.
        vertex_ids: ``(V_r,)`` source vertex of each rendered vertex.
        mean: ``(V_r, 3)``; shape_basis ``(K_s, 3 V_r)`` and expression_basis ``(K_e, 3 V_r)`` already
            multiplied by their standard deviations (float64 mean, float32 bases, rows ``x1 y1 z1 x2 ...``).
        faces: ``(F_r, 3)`` into the rendered vertices.
        textured: ``(F_r,)`` bool, faces coloured by the albedo texture.
        texture_uv: ``(T, 2)`` texture coordinates in [0, 1]; face_uvs ``(F_r, 3)`` (rows of untextured faces: 0).
        part: ``(V_r,)`` int8 index into ``part_names``; part_colour ``(V_r, 3)`` linear RGB of untextured
            vertices (irises: -1, filled per identity); pupil ``(V_r,)`` bool.
        landmarks: ``(68,)`` into the rendered vertices.
        position_map: the :class:`PositionMap` of the textured faces.
    """

    model: LinearFaceModel
    vertex_ids: np.ndarray
    mean: np.ndarray
    shape_basis: np.ndarray
    expression_basis: np.ndarray
    faces: np.ndarray
    textured: np.ndarray
    texture_uv: np.ndarray
    face_uvs: np.ndarray
    part: np.ndarray
    part_names: list[str]
    part_colour: np.ndarray
    pupil: np.ndarray
    landmarks: np.ndarray
    position_map: PositionMap

    @property
    def cm(self) -> float:
        """Model units per centimetre."""
        return 10.0 / UNIT_TO_MM[self.model.unit]

    @cached_property
    def skin(self) -> np.ndarray:
        """``(V_r,)`` bool, the vertices of textured faces."""
        skin = np.zeros(len(self.mean), dtype=bool)
        skin[np.unique(self.faces[self.textured])] = True
        return skin

    @cached_property
    def skin_span(self) -> np.ndarray:
        """``(3 V_r, r)`` orthonormal basis of the shape and expression modes restricted to the skin
        (:func:`morphable.data.face_detail.span_basis`)."""
        from morphable.data.face_detail import span_basis

        modes = np.concatenate([self.shape_basis, self.expression_basis]).reshape(-1, len(self.mean), 3)
        return span_basis((modes * self.skin[None, :, None]).reshape(len(modes), -1))

    @cached_property
    def mean_normals(self) -> np.ndarray:
        """``(V_r, 3)`` unit vertex normals of the mean shape."""
        import torch

        from morphable.mesh.normals import vertex_normals

        return vertex_normals(torch.from_numpy(self.mean), torch.from_numpy(self.faces)).numpy()


def check_photo_model(model: LinearFaceModel, path: str | os.PathLike) -> None:
    """Refuse (one line naming ``path``) a model without UVs, landmarks or identity modes."""
    if model.uvs is None:
        raise input_error(path, "the model has no UVs (ICT-FaceKit .npz: add --uvs-from its FaceXModel folder)")
    if model.landmarks is None:
        raise input_error(path, "the model has no 68 landmark vertices (ICT-FaceKit .npz: add --uvs-from its "
                                "FaceXModel folder)")
    if model.n_shape == 0:
        raise input_error(path, "the model has no identity (shape) modes")


def with_uvs_from(model: LinearFaceModel, donor: LinearFaceModel, path: str | os.PathLike) -> LinearFaceModel:
    """``model`` with the UVs and landmarks of ``donor`` (same vertices and faces, e.g. ICT-FaceKit's
    ``.npz`` and its ``FaceXModel`` folder)."""
    from dataclasses import replace

    if donor.n_vertices != model.n_vertices or not np.array_equal(donor.faces, model.faces):
        raise input_error(path, f"has {donor.n_vertices} vertices / {len(donor.faces)} faces, the model "
                                f"{model.n_vertices} / {len(model.faces)}: --uvs-from needs the same topology")
    return replace(model, uvs=donor.uvs, face_uvs=donor.face_uvs,
                   landmarks=donor.landmarks if donor.landmarks is not None else model.landmarks)


def load_photo_model(path: str | os.PathLike, uvs_from: str | os.PathLike | None = None) -> tuple[LinearFaceModel, str]:
    """The model of ``morphable data photos --model PATH [--uvs-from MODEL]``, checked, and a description."""
    from morphable.data.linear import load_linear_model

    model = load_linear_model(path)
    source = f"{model.name} ({path})"
    if uvs_from is not None:
        model = with_uvs_from(model, load_linear_model(uvs_from), uvs_from)
        source += f", UVs and landmarks from {uvs_from}"
    check_photo_model(model, path)
    return model, source


def prepare_photo_model(model: LinearFaceModel, texture_height: int = TEXTURE_HEIGHT) -> PhotoModel:
    """The rendered part of ``model``: ICT-FaceKit (26,719 vertices) renders :data:`ICT_PARTS` (outer skin
    textured; mouth socket and eyeballs coloured per vertex), any other model all its faces, textured."""
    if model.uvs is None or model.landmarks is None:
        raise MorphableError("a photo model needs UVs and 68 landmark vertices")
    if model.n_vertices == ICT_VERTICES:
        names = list(ICT_PARTS)
        label = np.full(model.n_vertices, -1, dtype=np.int8)
        for k, (first, stop, _) in enumerate(ICT_PARTS.values()):
            label[first:stop] = k
    else:
        names, label = ["skin"], np.zeros(model.n_vertices, dtype=np.int8)
    keep_faces = np.all(label[model.faces] >= 0, axis=1) & (label[model.faces] == label[model.faces][:, :1]).all(1)
    vertex_ids = np.unique(model.faces[keep_faces])
    remap = np.full(model.n_vertices, -1, dtype=np.int64)
    remap[vertex_ids] = np.arange(len(vertex_ids))
    if np.any(remap[model.landmarks] < 0):
        raise MorphableError("a landmark vertex lies outside the rendered faces")
    faces = remap[model.faces[keep_faces]]
    part = label[vertex_ids]
    textured = part[faces[:, 0]] == 0
    face_uvs = np.where(textured[:, None], model.face_uvs[keep_faces], 0)
    mean = model.mean[vertex_ids]
    cm = 10.0 / UNIT_TO_MM[model.unit]
    pmap = uv_position_map(mean, faces[textured], model.uvs, face_uvs[textured], remap[model.landmarks],
                           texture_height, cm)
    colour = np.zeros((len(vertex_ids), 3))
    pupil = np.zeros(len(vertex_ids), dtype=bool)
    for k, name in enumerate(names):
        rgb = ICT_PARTS[name][2] if name in ICT_PARTS else None
        sel = part == k
        if rgb is not None:
            colour[sel] = rgb
        elif name.startswith("iris"):
            p = mean[sel]
            radial = np.linalg.norm((p - p.mean(axis=0))[:, :2], axis=1)
            pupil[np.nonzero(sel)[0]] = radial < PUPIL_FRACTION * radial.max()
            colour[sel] = -1.0

    def basis(modes: np.ndarray, std: np.ndarray) -> np.ndarray:
        return (modes[:, vertex_ids] * std[:, None, None]).astype(np.float32).reshape(len(modes), -1)

    return PhotoModel(model, vertex_ids, mean, basis(model.shape_basis, model.shape_std),
                      basis(model.expression_basis, model.expression_std), faces, textured,
                      pmap.texture_uv(model.uvs), face_uvs, part, names, colour, pupil,
                      remap[model.landmarks], pmap)


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class Identity:
    """One identity: shape coefficients, neutral rendered vertices ``(V_r, 3)``, albedo parameters, its 8-bit
    sRGB texture (and it in linear RGB, ``(3, H_t, W_t)`` float32) and iris colour."""

    shape: np.ndarray
    vertices: np.ndarray
    albedo: AlbedoParams
    texture_srgb: np.ndarray  # (H_t, W_t, 3) uint8
    texture: np.ndarray
    iris: np.ndarray  # (3,) linear RGB
    corners: np.ndarray  # (3 F_r, 5) float32 per face corner: texture (u, v), then the vertex colour
    mid: np.ndarray | None = None  # (V_r, 3) float32 mid-band vertex displacement (in ``vertices``)
    high: np.ndarray | None = None  # (H_t, W_t) float32 high-band displacement map (shading)


def make_identity(pm: PhotoModel, seed: int, j: int, detail: DetailSettings = DetailSettings()) -> Identity:
    """Identity ``j`` of a dataset with ``seed``: ``a ~ N(0, I)``, albedo parameters and texture, iris colour,
    and the ``detail`` bands (:mod:`morphable.data.face_detail`, their own stream ``[seed, 3, j]``)."""
    rng = np.random.default_rng([seed, 1, j])
    shape = rng.standard_normal(pm.model.n_shape)
    params = sample_albedo_params(rng)
    texture = np.round(linear_to_srgb(skin_albedo(pm.position_map, params)) * 255).astype(np.uint8)
    iris = IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))] * rng.uniform(0.8, 1.2)
    vertices = pm.mean + (shape.astype(np.float32) @ pm.shape_basis).reshape(-1, 3)
    linear = np.ascontiguousarray(srgb_to_linear(texture.astype(np.float32) / 255).transpose(2, 0, 1))
    colour = pm.part_colour.copy()
    colour[colour[:, 0] < 0] = iris
    colour[pm.pupil] = 0.01
    corners = np.concatenate([pm.texture_uv[pm.face_uvs], colour[pm.faces]], axis=-1).reshape(-1, 5)
    mid = high = None
    if detail.enabled:
        from morphable.data.face_detail import high_band, mid_band

        detail_rng = np.random.default_rng([seed, 3, j])
        if detail.mid_mm > 0:
            mid = mid_band(detail_rng, pm.mean, pm.mean_normals, pm.landmarks, pm.skin, pm.skin_span, pm.cm,
                           detail.mid_mm).astype(np.float32)
            vertices = vertices + mid
        if detail.high_mm > 0:
            pmap = pm.position_map
            high = high_band(detail_rng, pmap.position, pmap.normal, pmap.covered, pmap.landmarks, pm.cm,
                             detail.high_mm)
    return Identity(shape, vertices, params, texture, linear, iris, corners.astype(np.float32), mid, high)


def sample_expression(model: LinearFaceModel, rng: np.random.Generator) -> np.ndarray:
    """Expression coefficients ``(K_e,)`` (see the module docstring)."""
    if model.n_expr == 0:
        return np.zeros(0)
    if not uses_ict_blendshapes(model):
        return rng.normal(0.0, 0.5, model.n_expr)
    b = np.zeros(model.n_expr)
    if rng.uniform() < 0.15:
        return b
    names = model.expression_names
    for name, weight in ICT_EXPRESSIONS[sorted(ICT_EXPRESSIONS)[rng.integers(len(ICT_EXPRESSIONS))]].items():
        if name in names:
            b[names.index(name)] = weight
    b *= rng.uniform(0.3, 1.0)
    extra = rng.choice(model.n_expr, size=min(int(rng.integers(0, 4)), model.n_expr), replace=False)
    b[extra] = np.clip(b[extra] + rng.uniform(0, 0.6, len(extra)), 0, 1)
    return b


def rotation_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``diag(1, -1, -1) R_z(roll) R_x(pitch) R_y(yaw)`` (degrees): model frame (y up, z out of the face)
    to OpenCV camera frame, ``(3, 3)`` float64."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return np.diag([1.0, -1.0, -1.0]) @ rz @ rx @ ry


def sample_camera(rng: np.random.Generator, resolution: int, landmarks: np.ndarray,
                  R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intrinsics ``K (3, 3)`` and translation ``t (3,)`` for a head rotated by ``R`` with model-frame
    ``landmarks (68, 3)`` (module docstring)."""
    fov = math.radians(rng.uniform(15.0, 50.0))
    f = 0.5 * resolution / math.tan(fov / 2)
    cx, cy = (resolution - 1) / 2 + rng.uniform(-0.02, 0.02, 2) * resolution
    centre = landmarks.mean(axis=0)
    radius = np.linalg.norm(landmarks - centre, axis=1).max()
    z = f * radius / (rng.uniform(0.25, 0.38) * resolution)
    u, v = (resolution - 1) / 2 + rng.uniform(-0.06, 0.06, 2) * resolution
    t = np.array([(u - cx) * z / f, (v - cy) * z / f, z]) - R @ centre
    return np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]]), t


def sh_basis_np(d: np.ndarray) -> np.ndarray:
    """Real SH basis ``Y_k(d)``, ``(..., 3) -> (..., 9)`` in the order of :mod:`morphable.render.shading`."""
    import torch

    from morphable.render.shading import sh_basis

    return sh_basis(torch.from_numpy(np.asarray(d, dtype=np.float64))).numpy()


def sample_light_parts(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ambient (3,), direction (3,) unit, camera frame, strength (3,))`` of :func:`sample_light`."""
    ambient = rng.uniform(0.25, 0.7) * (1 + rng.uniform(-0.08, 0.08, 3))
    d = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.4), -rng.uniform(0.2, 1.0)])
    d /= np.linalg.norm(d)
    strength = math.pi * rng.uniform(0.3, 1.0) * (1 + rng.uniform(-0.08, 0.08, 3))
    return ambient, d, strength


def light_sh(ambient: np.ndarray, direction: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """SH radiance ``(9, 3)`` of an ambient term plus one directional light from ``direction`` (camera frame)."""
    sh = sh_basis_np(direction)[:, None] * strength[None]
    sh[0] += 2 * math.sqrt(math.pi) * ambient
    return sh


def sample_light(rng: np.random.Generator) -> np.ndarray:
    """SH radiance ``(9, 3)``: ambient plus one directional light (module docstring)."""
    return light_sh(*sample_light_parts(rng))


def sample_background(rng: np.random.Generator, resolution: int) -> np.ndarray:
    """A procedural background ``(H, W, 3)`` float32 sRGB in [0, 1]: gradient, value noise, discs and boxes."""
    import torch

    n = resolution
    jj, ii = np.meshgrid(np.arange(n) / n, np.arange(n) / n)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.clip((jj - 0.5) * math.cos(angle) + (ii - 0.5) * math.sin(angle) + 0.5, 0, 1)[..., None]
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    image = c0 + ramp * (c1 - c0)
    grid = torch.from_numpy(rng.uniform(-1, 1, (1, 3, *([int(rng.choice([3, 6, 12]))] * 2))))
    noise = torch.nn.functional.interpolate(grid, size=(n, n), mode="bicubic", align_corners=False)[0]
    image = image + rng.uniform(0, 0.25) * noise.permute(1, 2, 0).numpy()
    for _ in range(rng.integers(0, 7)):
        cx, cy = rng.uniform(0, 1, 2)
        size = rng.uniform(0.05, 0.35)
        if rng.uniform() < 0.5:
            inside = (jj - cx) ** 2 + (ii - cy) ** 2 < size**2
        else:
            inside = (np.abs(jj - cx) < size) & (np.abs(ii - cy) < size * rng.uniform(0.3, 1.5))
        image[inside] += rng.uniform(0.3, 0.9) * (rng.uniform(0, 1, 3) - image[inside])
    return np.clip(image, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- rendering one photo


@dataclass
class Photo:
    """One rendered photo: ``image (H, W, 3)`` uint8, ``mask (H, W)`` bool, ``mesh (V_r, 3)`` float32 camera
    frame, and its annotations (the per-image entries of :data:`ANNOTATION_KEYS`, without split)."""

    image: np.ndarray
    mask: np.ndarray
    mesh: np.ndarray
    annotations: dict[str, Any]


def _ray_hits(points: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Moller-Trumbore intersections of the rays ``s p`` (``s > 0``) from the camera centre through
    ``points (P, 3)`` with ``triangles (P, 3, 3)``: ``s (P,)`` and whether the ray meets the triangle
    ``(P,)`` bool (barycentric slack 1e-9)."""
    v0 = triangles[:, 0]
    e1, e2 = triangles[:, 1] - v0, triangles[:, 2] - v0
    pvec = np.cross(points, e2)
    det = (e1 * pvec).sum(-1)
    ok = np.abs(det) > 1e-12
    inv = 1.0 / np.where(ok, det, 1.0)
    u = (-v0 * pvec).sum(-1) * inv
    qvec = np.cross(-v0, e1)
    v = (points * qvec).sum(-1) * inv
    s = (e2 * qvec).sum(-1) * inv
    return s, ok & (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (s > 0)


def _boxes_holding(points: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   cell: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``(point, box)`` with ``lo <= point <= hi``: points ``(L, 2)``, boxes ``lo, hi (F, 2)``.

    Boxes no larger than ``cell`` are binned by the cell of their ``lo`` corner (such a box reaches at most
    the next cell in x and y), so a point looks at 4 bins; larger boxes are tested against every point;
    boxes with an infinite corner hold nothing.
    Returns index arrays ``(P,)``, ``(P,)``.
    """
    size = hi - lo
    finite = np.isfinite(size[:, 0]) & np.isfinite(size[:, 1])
    small = finite & (size[:, 0] <= cell) & (size[:, 1] <= cell)
    big = np.nonzero(finite & ~small)[0]
    pb, fb = np.nonzero(((lo[big][None] <= points[:, None]) & (points[:, None] <= hi[big][None])).all(axis=-1))
    ids = np.nonzero(small)[0]
    corner = np.floor(lo[ids] / cell).astype(np.int64)
    key = corner[:, 0] * (1 << 32) + corner[:, 1]
    order = np.argsort(key, kind="stable")
    ids, key = ids[order], key[order]
    home = np.floor(points / cell).astype(np.int64)
    wanted = np.stack([(home[:, 0] - dx) * (1 << 32) + home[:, 1] - dy for dx in (0, 1) for dy in (0, 1)], 1)
    start, stop = np.searchsorted(key, wanted, "left"), np.searchsorted(key, wanted, "right")
    counts = (stop - start).reshape(-1)
    point = np.repeat(np.repeat(np.arange(len(points)), 4), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    face = ids[np.repeat(start.reshape(-1), counts) + offsets]
    p, l, h = points[point], lo[face], hi[face]
    inside = (l[:, 0] <= p[:, 0]) & (p[:, 0] <= h[:, 0]) & (l[:, 1] <= p[:, 1]) & (p[:, 1] <= h[:, 1])
    return np.concatenate([point[inside], pb]), np.concatenate([face[inside], big[fb]])


def landmark_visibility(points: np.ndarray, K: np.ndarray, width: int, height: int, mesh: np.ndarray,
                        faces: np.ndarray, tolerance: float) -> np.ndarray:
    """Visibility of camera-frame points ``(L, 3)`` (landmark vertices of ``mesh (V, 3)``, ``faces (F, 3)``).

    A point ``p`` is visible when it projects into the ``width x height`` image and no triangle meets the
    ray ``s p`` at a depth more than ``tolerance`` (model units) in front of it, ``s z < z - tolerance``.
    The ray is cast exactly (Moller-Trumbore) against the triangles whose projected bounding box holds the
    point's projection (:func:`_boxes_holding`; a z-buffer would miss occluders smaller than a pixel, such
    as a lip crease).

    Returns:
        ``(L,)`` bool.
    """
    uv = points[:, :2] / points[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    inside = (uv[:, 0] >= -0.5) & (uv[:, 0] < width - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] < height - 0.5)
    v = mesh.astype(np.float64)
    pixels = v[:, :2] / v[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    corner = [pixels[faces[:, k]] for k in range(3)]  # elementwise min / max: reductions over axes of 3 are slow
    lo = np.minimum(np.minimum(corner[0], corner[1]), corner[2])
    hi = np.maximum(np.maximum(corner[0], corner[1]), corner[2])
    behind = (v[faces[:, 0], 2] <= 0) | (v[faces[:, 1], 2] <= 0) | (v[faces[:, 2], 2] <= 0)
    lo[behind] = np.inf
    point, face = _boxes_holding(uv, lo, hi)
    s, hit = _ray_hits(points[point].astype(np.float64), v[faces[face]])
    z = points[point, 2]
    occluded = np.zeros(len(points), dtype=bool)
    occluded[point[hit & (s * z < z - tolerance)]] = True
    return inside & ~occluded


MULTIVIEW_YAW = 60.0  # the views of a set span +-60 degrees of yaw about the set's own pose


def multiview_pose_and_light(model: LinearFaceModel, seed: int, i: int, views: int) -> tuple:
    """Expression, ``(yaw, pitch, roll)`` and SH light of image ``i`` of a multi-view dataset: the set
    ``g = i // views`` draws (stream ``[seed, 4, g]``) one expression, a base pose (yaw U(-20, 20), pitch
    U(-15, 15), roll U(-10, 10)) and one light fixed to the head; view ``v = i % views`` turns the head by
    ``linspace(-60, 60, views)[v]`` degrees of yaw (a ring of cameras about it) and sees the light turned with it."""
    set_rng = np.random.default_rng([seed, 4, i // views])
    b = sample_expression(model, set_rng)
    yaw, pitch, roll = set_rng.uniform(-20, 20), set_rng.uniform(-15, 15), set_rng.uniform(-10, 10)
    ambient, d, strength = sample_light_parts(set_rng)
    d_head = rotation_from_euler(yaw, pitch, roll).T @ d  # the light in the head's frame
    yaw_v = yaw + np.linspace(-MULTIVIEW_YAW, MULTIVIEW_YAW, views)[i % views]
    R = rotation_from_euler(yaw_v, pitch, roll)
    return b, (yaw_v, pitch, roll), light_sh(ambient, R @ d_head, strength)


def render_photo(pm: PhotoModel, identity: Identity, seed: int, i: int, resolution: int, views: int = 1) -> Photo:
    """Photo ``i`` of a dataset with ``seed`` (its random stream is ``default_rng([seed, 2, i])``); with
    ``views > 1`` its expression, pose and light come from its multi-view set
    (:func:`multiview_pose_and_light`)."""
    import torch
    from scipy import ndimage

    from morphable.render.camera import Camera
    from morphable.render.raster import interpolate, rasterize
    from morphable.render.shading import sample_texture, shade

    rng = np.random.default_rng([seed, 2, i])
    if views == 1:
        b = sample_expression(pm.model, rng)
        yaw, pitch, roll = rng.uniform(-90, 90), rng.uniform(-30, 30), rng.uniform(-30, 30)
    else:
        b, (yaw, pitch, roll), set_light = multiview_pose_and_light(pm.model, seed, i, views)
    R = rotation_from_euler(yaw, pitch, roll)
    world = identity.vertices + (b.astype(np.float32) @ pm.expression_basis).reshape(-1, 3)
    K, t = sample_camera(rng, resolution, world[pm.landmarks], R)
    sh = sample_light(rng) if views == 1 else set_light
    background = sample_background(rng, resolution)
    blur = rng.uniform(0, 1.2) if rng.uniform() > 1 / 3 else 0.0
    noise_sigma = rng.uniform(0, 0.03)

    mesh = (world @ R.T + t).astype(np.float32)
    camera = Camera.from_matrices(K, np.eye(4), resolution, resolution)
    r = rasterize(torch.from_numpy(mesh), pm.faces, camera)
    hit = r.face_index >= 0
    corner_faces = np.arange(3 * len(pm.faces)).reshape(-1, 3)
    uv, vertex_albedo = interpolate(torch.from_numpy(identity.corners), corner_faces, r.face_index,
                                    r.bary).split([2, 3], dim=-1)
    textured = torch.from_numpy(pm.textured)[r.face_index.clamp(min=0)] & hit
    albedo = torch.where(textured[..., None], sample_texture(torch.from_numpy(identity.texture), uv), vertex_albedo)
    normals = r.normals
    if identity.high is not None:
        from morphable.render.displacement import displaced_normal_map

        normals = displaced_normal_map(r, torch.from_numpy(mesh), pm.faces, pm.texture_uv, pm.face_uvs,
                                       torch.from_numpy(identity.high)[None])
    lit = shade(albedo, normals, torch.from_numpy(sh).float()).clamp(0, 1).numpy()
    mask = hit.numpy()
    image = np.where(mask[..., None], linear_to_srgb(lit), background)
    if blur > 0:
        image = ndimage.gaussian_filter(image, sigma=(blur, blur, 0), mode="nearest")
    image = image + rng.normal(0, noise_sigma, image.shape)
    image = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)

    lm3 = mesh[pm.landmarks].astype(np.float64)
    lm2 = lm3[:, :2] / lm3[:, 2:] * K[[0, 1], [0, 1]] + K[:2, 2]
    visible = landmark_visibility(lm3, K, resolution, resolution, mesh, pm.faces, OCCLUSION_TOLERANCE_CM * pm.cm)
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = R, t
    annotations = {"K": K, "pose": pose, "yaw_pitch_roll": np.array([yaw, pitch, roll]), "shape": identity.shape,
                   "expression": b, "albedo": identity.albedo.vector(), "iris_colour": identity.iris, "sh": sh,
                   "landmarks_2d": lm2, "landmarks_3d": lm3, "landmark_visible": visible,
                   "blur_sigma": np.float64(blur), "noise_sigma": np.float64(noise_sigma)}
    if views > 1:
        annotations.update({"view_set": np.int64(i // views), "view": np.int64(i % views)})
    return Photo(image, mask, mesh, annotations)


# --------------------------------------------------------------------------- writing a dataset


@dataclass(frozen=True)
class PhotoSettings:
    """What ``morphable data photos`` makes: ``count`` images of ``identities`` identities at
    ``resolution`` x ``resolution`` pixels, from ``seed``."""

    count: int
    identities: int
    resolution: int = 224
    seed: int = 0
    detail: DetailSettings = DetailSettings()
    views: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise MorphableError(f"--count must be at least 1, got {self.count}")
        if not 1 <= self.identities <= self.count:
            raise MorphableError(f"--identities must be in 1..--count ({self.count}), got {self.identities}")
        if not 16 <= self.resolution <= 4096:
            raise MorphableError(f"--resolution must be in 16..4096, got {self.resolution}")
        if self.views < 1 or self.count % self.views:
            raise MorphableError(f"--views must be at least 1 and divide --count ({self.count}), got {self.views}")
        if self.identities > self.count // self.views:
            raise MorphableError(f"--identities ({self.identities}) cannot exceed the {self.count // self.views} "
                                 f"multi-view sets")

    def identity_of(self, i: int) -> int:
        """Identity of image ``i``: contiguous blocks of whole view sets, ``g * identities // sets`` for the set
        ``g = i // views`` of ``sets = count / views`` (``i * identities // count`` for single views)."""
        return (i // self.views) * self.identities // (self.count // self.views)


def identity_splits(identities: int, seed: int) -> dict[str, list[int]]:
    """Identities split into train / val / test: a seeded permutation, ``round(0.1 K)`` identities each for
    val and test (at least one each from three identities on; fewer identities all train)."""
    order = np.random.default_rng([seed, 0]).permutation(identities)
    sizes = {name: max(1, round(frac * identities)) if identities >= 3 else 0
             for name, frac in SPLIT_FRACTIONS.items()}
    val, test = order[:sizes["val"]], order[sizes["val"]:sizes["val"] + sizes["test"]]
    train = order[sizes["val"] + sizes["test"]:]
    return {name: sorted(int(j) for j in ids) for name, ids in (("train", train), ("val", val), ("test", test))}


def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


def write_npz_deterministic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` readable by ``np.load`` whose bytes depend only on ``arrays`` (``np.savez`` stamps the
    current time into every zip member); members are deflated, in the order given."""
    import io
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buffer.getvalue())


class _Renderer:
    """Renders and writes the images of a block of indices, keeping the last identity."""

    def __init__(self, pm: PhotoModel, settings: PhotoSettings, root: Path) -> None:
        self.pm, self.settings, self.root = pm, settings, root
        self.identity = lru_cache(maxsize=2)(lambda j: make_identity(pm, settings.seed, j, settings.detail))

    def __call__(self, indices: list[int]) -> list[dict[str, Any]]:
        out = []
        for i in indices:
            photo = render_photo(self.pm, self.identity(self.settings.identity_of(i)), self.settings.seed, i,
                                 self.settings.resolution, self.settings.views)
            name = f"{i:06d}"
            _png(self.root / "images" / f"{name}.png", photo.image)
            _png(self.root / "masks" / f"{name}.png", photo.mask.astype(np.uint8) * 255)
            _npy(self.root / "meshes" / f"{name}.npy", photo.mesh)
            j = self.settings.identity_of(i)
            if i == 0 or self.settings.identity_of(i - 1) != j:  # the first image of an identity writes it
                identity = self.identity(j)
                _png(self.root / "albedo" / f"{j:04d}.png", identity.texture_srgb)
                for band in ("mid", "high"):
                    if getattr(identity, band) is not None:
                        _npy(self.root / "detail" / f"{j:04d}_{band}.npy", getattr(identity, band))
            out.append(photo.annotations)
        return out


_WORKER: _Renderer | None = None


def _init_worker(pm: PhotoModel, settings: PhotoSettings, root: Path) -> None:
    import torch

    global _WORKER
    torch.set_num_threads(1)
    _WORKER = _Renderer(pm, settings, root)


def _work(indices: list[int]) -> list[dict[str, Any]]:
    assert _WORKER is not None
    return _WORKER(indices)


def _blocks(settings: PhotoSettings, size: int = 32) -> list[list[int]]:
    """Image indices in blocks of at most ``size``, never mixing identities, so that a worker builds an
    identity's texture once for the whole block."""
    blocks: list[list[int]] = []
    for i in range(settings.count):
        if not blocks or len(blocks[-1]) == size or settings.identity_of(i) != settings.identity_of(blocks[-1][0]):
            blocks.append([])
        blocks[-1].append(i)
    return blocks


def _render_all(pm: PhotoModel, settings: PhotoSettings, root: Path, workers: int) -> Iterator[list[dict]]:
    """Annotations of every image, in order, in blocks (rendered by ``workers`` processes when > 1)."""
    blocks = _blocks(settings)
    if workers <= 1:
        renderer = _Renderer(pm, settings, root)
        yield from map(renderer, blocks)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(pm, settings, root)) as pool:
        yield from pool.imap(_work, blocks)


def write_photo_dataset(model: LinearFaceModel, out: str | os.PathLike, settings: PhotoSettings, *,
                        source: str = "", model_files: dict[str, str | None] | None = None,
                        overwrite: bool = False, workers: int = 1, progress: bool = True) -> Path:
    """Render and write a synthetic photo dataset (layout in the module docstring), atomically.

    Args:
        model: a model with UVs and 68 landmark vertices (:func:`check_photo_model`).
        out: the dataset folder to create.
        settings: count, identities, resolution, seed.
        source: a description of the model, kept in ``dataset.json``.
        model_files: ``{"model": path, "uvs_from": path or None}``, the files the model was read from, kept in
            ``dataset.json`` so that methods that need the model itself (HRN's coarse level) can read it again.
        overwrite: replace an existing non-empty folder.
        workers: rendering processes (the files do not depend on it).
        progress: a progress bar on the terminal.

    Returns:
        The dataset folder.
    """
    if workers < 1:
        raise MorphableError(f"--workers must be at least 1, got {workers}")
    out = check_output_folder(out, overwrite)
    pm = prepare_photo_model(model)
    splits = identity_splits(settings.identities, settings.seed)
    split_of = {j: name for name, ids in splits.items() for j in ids}
    with atomic_folder(out) as tmp:
        for folder in ("images", "masks", "meshes", "albedo") + (("detail",) if settings.detail.enabled else ()):
            (tmp / folder).mkdir()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=settings.count, desc=f"rendering {out.name}", unit="image", leave=False)
        records: list[dict[str, Any]] = []
        for block in _render_all(pm, settings, tmp, workers):
            records.extend(block)
            if bar is not None:
                bar.update(len(block))
        if bar is not None:
            bar.close()
        identity_ids = [settings.identity_of(i) for i in range(settings.count)]
        arrays = {"id": np.array([f"{i:06d}" for i in range(settings.count)]),
                  "identity": np.array(identity_ids, dtype=np.int64),
                  "split": np.array([split_of.get(j, "train") for j in identity_ids])}
        arrays.update({key: np.stack([r[key] for r in records]) for key in records[0]})
        write_npz_deterministic(tmp / "annotations.npz", arrays)
        write_npz_deterministic(tmp / "topology.npz", {
            "faces": pm.faces, "texture_uv": pm.texture_uv, "face_uvs": pm.face_uvs, "textured": pm.textured,
            "landmarks": pm.landmarks, "source_vertex": pm.vertex_ids, "part": pm.part,
            "part_names": np.array(pm.part_names)})
        write_json(tmp / DATASET_FILE, {
            "format": FORMAT, "version": GENERATOR_VERSION, "seed": settings.seed,
            "resolution": [settings.resolution, settings.resolution], "count": settings.count,
            "identities": settings.identities, "unit": model.unit, "source": source or model.name,
            **({"model_files": model_files} if model_files else {}),
            "vertices": len(pm.vertex_ids), "faces": len(pm.faces), "camera": "OpenCV (render/camera.py)",
            "splits": {name: {"identities": ids, "images": int(sum(split_of.get(j, "train") == name
                                                                   for j in identity_ids))}
                       for name, ids in splits.items()},
            "albedo_parameters": albedo_param_names(), "annotations": ANNOTATION_KEYS,
            "expression_names": model.expression_names,
            **({"detail": {"mid_mm": settings.detail.mid_mm, "high_mm": settings.detail.high_mm}}
               if settings.detail.enabled else {}),
            **({"views": settings.views} if settings.views > 1 else {})})
        contact_sheet(PhotoDataset(tmp), tmp / CONTACT_SHEET)
    return out


# --------------------------------------------------------------------------- reading a dataset


class PhotoDataset:
    """A dataset written by :func:`write_photo_dataset`.

    ``len(ds)`` images; ``ds[i]`` is a dict with ``image (H, W, 3)`` uint8, ``mask (H, W)`` bool, ``mesh (V, 3)``
    float32 (camera frame) and the per-image annotations of :data:`ANNOTATION_KEYS`; ``ds.indices("train")``
    the images of a split; ``ds.faces`` and ``ds.topology`` the shared arrays; ``ds.info`` the dataset.json.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.info = read_json(self.root / DATASET_FILE)
        if not isinstance(self.info, dict) or self.info.get("format") != FORMAT:
            raise input_error(self.root / DATASET_FILE, f"not a synthetic photo dataset (format {FORMAT!r})")
        if self.info.get("version") != GENERATOR_VERSION:
            raise input_error(self.root / DATASET_FILE, f"generator version {self.info.get('version')!r}, this "
                                                         f"reader reads version {GENERATOR_VERSION}")
        self.annotations = read_npz(self.root / "annotations.npz")
        self.topology = read_npz(self.root / "topology.npz")
        n = int(self.info["count"])
        for key in ("id", "K", "pose", "landmarks_2d", "landmarks_3d", "landmark_visible"):
            if key not in self.annotations or len(self.annotations[key]) != n:
                raise input_error(self.root / "annotations.npz", f"needs {key!r} with {n} rows (dataset.json count)")
        self.ids = [str(s) for s in self.annotations["id"]]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def faces(self) -> np.ndarray:
        return self.topology["faces"]

    @property
    def resolution(self) -> tuple[int, int]:
        """``(W, H)``."""
        w, h = self.info["resolution"]
        return int(w), int(h)

    def indices(self, split: str) -> np.ndarray:
        """Image indices of ``split`` (train, val or test)."""
        return np.nonzero(self.annotations["split"] == split)[0]

    def camera(self, i: int):
        """The :class:`~morphable.render.camera.Camera` of image ``i`` for its camera-frame mesh (``R = I``)."""
        from morphable.render.camera import Camera

        w, h = self.resolution
        return Camera.from_matrices(self.annotations["K"][i], np.eye(4), w, h)

    def _png(self, folder: str, i: int, mode: str) -> np.ndarray:
        from PIL import Image

        path = self.root / folder / f"{self.ids[i]}.png"
        try:
            with Image.open(path) as im:
                if im.size != self.resolution or im.mode != mode:
                    raise input_error(path, f"is {im.mode} {im.size[0]} x {im.size[1]}, expected {mode} "
                                            f"{self.resolution[0]} x {self.resolution[1]}")
                return np.asarray(im)
        except (OSError, ValueError) as exc:
            raise input_error(path, f"not a readable PNG ({exc})") from None

    def image(self, i: int) -> np.ndarray:
        return self._png("images", i, "RGB")

    def mask(self, i: int) -> np.ndarray:
        return self._png("masks", i, "L") > 127

    def mesh(self, i: int) -> np.ndarray:
        from morphable.io import read_npy

        path = self.root / "meshes" / f"{self.ids[i]}.npy"
        mesh = read_npy(path)
        if mesh.shape != (int(self.info["vertices"]), 3):
            raise input_error(path, f"has shape {mesh.shape}, expected ({self.info['vertices']}, 3)")
        return mesh

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        sample = {key: value[i] for key, value in self.annotations.items()}
        sample.update(image=self.image(i), mask=self.mask(i), mesh=self.mesh(i))
        return sample


def contact_sheet(ds: PhotoDataset, path: str | os.PathLike, n: int = 16, columns: int = 4) -> Path:
    """A grid of ``n`` evenly spaced images of ``ds`` with their 68 landmarks drawn (green: visible, red:
    occluded or outside) and ``id  yaw / pitch / roll`` under each, written to ``path`` (PNG)."""
    from PIL import Image, ImageDraw

    from morphable.io import atomic_path

    picks = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(int))
    w, h = ds.resolution
    scale = max(1, 256 // max(w, h))
    rows = math.ceil(len(picks) / columns)
    label = 14
    sheet = Image.new("RGB", (columns * w * scale, rows * (h * scale + label)), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    for k, i in enumerate(picks):
        x0, y0 = (k % columns) * w * scale, (k // columns) * (h * scale + label)
        sheet.paste(Image.fromarray(ds.image(i)).resize((w * scale, h * scale), Image.NEAREST), (x0, y0))
        points = ds.annotations["landmarks_2d"][i]
        for (u, v), seen in zip(points, ds.annotations["landmark_visible"][i]):
            cx, cy = x0 + (u + 0.5) * scale, y0 + (v + 0.5) * scale
            draw.ellipse((cx - 1.5, cy - 1.5, cx + 1.5, cy + 1.5), fill=(40, 230, 60) if seen else (240, 40, 40))
        ypr = ds.annotations["yaw_pitch_roll"][i]
        draw.text((x0 + 3, y0 + h * scale + 1), f"{ds.ids[i]}  {ypr[0]:+.0f}/{ypr[1]:+.0f}/{ypr[2]:+.0f}",
                  fill=(220, 220, 220))
    out = Path(path)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out


def describe(ds: PhotoDataset) -> str:
    """One line: counts, resolution, splits."""
    s = ds.info["splits"]
    return (f"{len(ds)} photos of {ds.info['identities']} identities at {ds.resolution[0]} x {ds.resolution[1]} "
            f"(train {s['train']['images']}, val {s['val']['images']}, test {s['test']['images']} images)")

