"""HRN's coarse level: 3DMM coefficients -> a posed, textured, SH-lit face as the crop's camera sees it.

Coefficients ``(B, P)``, in the order of :class:`CoarseLayout`:

* identity ``alpha (K_s)``: shape modes in standard deviations (as :mod:`morphable.data.photos` draws them);
* expression ``beta (K_e)``: the model's expression modes in their units (ICT-FaceKit: blendshape weights);
* albedo ``gamma (K_a)``: :class:`~morphable.data.albedo_space.AlbedoSpace` coefficients (standard deviations);
* rotation ``(3)``: yaw, pitch, roll in radians, ``R = diag(1, -1, -1) R_z(roll) R_x(pitch) R_y(yaw)`` (model
  frame, ``y`` up and ``z`` out of the face, to OpenCV camera axes: :func:`morphable.data.photos.rotation_from_euler`);
* translation ``(3)``: an offset in centimetres from the reference position ``t_ref``;
* light ``(27)``: SH radiance coefficients (``(9, 3)`` row-major, :mod:`morphable.render.shading`) added to the
  reference light ``L_ref`` (a uniform white sky, ``L_0 = 2 sqrt(pi)``: pixels show their albedo).

Geometry and image:

    S = mu + B_s alpha + B_e beta                       (V, 3) model frame (the bases times their deviations)
    X = S R^T + t_ref + t                               camera frame, the crop camera K = [[f, 0, c], [0, f, c]]
    I = srgb(rho E(n) / pi)                             rho: the albedo texture on the skin, fixed colours on
                                                        eyeballs and mouth socket (the photo generator's)

with ``f = focal * size`` (Deep3DFaceRecon's 1015 px on 224 px crops: ``focal = 4.53``) and ``c = (size - 1) / 2``.
``t_ref`` places the mean face frontally with its 68 landmarks' centroid on the crop template's
(:func:`~morphable.image.align.template_landmarks` at ``fill``) and their RMS spread equal to the template's, so
that all-zero coefficients (an untrained regressor's zero head) render the mean face where a crop puts a face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from morphable.errors import MorphableError
from morphable.render.camera import Camera
from morphable.render.shading import render_shaded, to_srgb

DEEP3D_FOCAL = 1015.0 / 224.0
WHITE_SKY_L0 = 2 * math.sqrt(math.pi)


@dataclass(frozen=True)
class CoarseLayout:
    """Sizes of the coefficient groups and their slices in a ``(B, P)`` vector (module docstring)."""

    identity: int
    expression: int
    albedo: int

    @property
    def slices(self) -> dict[str, slice]:
        sizes = {"identity": self.identity, "expression": self.expression, "albedo": self.albedo,
                 "rotation": 3, "translation": 3, "light": 27}
        out, start = {}, 0
        for name, n in sizes.items():
            out[name], start = slice(start, start + n), start + n
        return out

    @property
    def size(self) -> int:
        """``P``, the length of a coefficient vector."""
        return self.identity + self.expression + self.albedo + 33

    def split(self, coefficients: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, P)`` -> the named groups."""
        if coefficients.dim() != 2 or coefficients.shape[1] != self.size:
            raise MorphableError(f"coarse coefficients must be (B, {self.size}), got {tuple(coefficients.shape)}")
        return {name: coefficients[:, s] for name, s in self.slices.items()}


def euler_rotation(angles: torch.Tensor) -> torch.Tensor:
    """``angles (B, 3)`` yaw, pitch, roll (radians) -> ``(B, 3, 3)`` ``diag(1, -1, -1) R_z R_x R_y``."""
    y, p, r = angles.unbind(-1)
    one, zero = torch.ones_like(y), torch.zeros_like(y)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], -1).view(-1, 3, 3)
    rx = torch.stack([one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos()], -1).view(-1, 3, 3)
    rz = torch.stack([r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one], -1).view(-1, 3, 3)
    flip = torch.tensor([1.0, -1.0, -1.0], dtype=angles.dtype, device=angles.device)
    return flip[:, None] * (rz @ rx @ ry)


def euler_from_rotation(R: np.ndarray) -> np.ndarray:
    """The inverse of :func:`euler_rotation`: ``R (3, 3)`` -> ``(3,)`` yaw, pitch, roll in radians (pitch in
    ``[-pi/2, pi/2]``). With ``M = diag(1, -1, -1) R = R_z R_x R_y``: ``M_21 = sin p``,
    ``(M_20, M_22) = cos p (-sin y, cos y)`` and ``(M_01, M_11) = cos p (-sin r, cos r)``."""
    M = np.diag([1.0, -1.0, -1.0]) @ np.asarray(R, dtype=np.float64)
    pitch = math.asin(float(np.clip(M[2, 1], -1.0, 1.0)))
    return np.array([math.atan2(-M[2, 0], M[2, 2]), pitch, math.atan2(-M[0, 1], M[1, 1])])


@dataclass
class CoarseFaces:
    """What :class:`CoarseFace` decodes: camera-frame ``vertices (B, V, 3)``, albedo ``texture (B, 3, H_t, W_t)``,
    ``light (B, 9, 3)`` and the 68 landmarks projected into the crop, ``landmarks (B, 68, 2)`` pixels."""

    vertices: torch.Tensor
    texture: torch.Tensor
    light: torch.Tensor
    landmarks: torch.Tensor


class CoarseFace(nn.Module):
    """Coefficients -> :class:`CoarseFaces` and renders (module docstring); the model data are buffers.

    Args:
        mean: ``(V, 3)`` mean shape (model units); basis ``(K_s + K_e, V, 3)`` shape then expression modes, each
            times its deviation; ``identity`` = ``K_s``.
        faces: ``(F, 3)``; uvs ``(T, 2)`` in [0, 1] and face_uvs ``(F, 3)`` of the albedo chart; textured ``(F,)``
            the faces the texture colours; vertex_colour ``(V, 3)`` linear RGB of the others.
        landmarks: ``(68,)`` vertex indices; albedo: the :class:`AlbedoSpace` on that chart; cm: model units per cm.
        size: crop side in pixels; fill: the crop template's landmark fill; focal: ``f / size``.
    """

    def __init__(self, mean: np.ndarray, basis: np.ndarray, identity: int, faces: np.ndarray, uvs: np.ndarray,
                 face_uvs: np.ndarray, textured: np.ndarray, vertex_colour: np.ndarray, landmarks: np.ndarray,
                 albedo, cm: float, size: int, fill: float, focal: float = DEEP3D_FOCAL) -> None:
        super().__init__()
        from morphable.image.align import template_landmarks

        self.layout = CoarseLayout(identity, len(basis) - identity, albedo.size)
        self.size, self.focal_px, self.cm = size, focal * size, cm
        V = len(mean)

        def tensor(array, dtype=torch.float32) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)

        self.register_buffer("mean", tensor(mean))
        self.register_buffer("basis", tensor(np.asarray(basis).reshape(len(basis), 3 * V)))
        self.register_buffer("faces", tensor(faces, torch.long))
        self.register_buffer("uvs", tensor(uvs))
        self.register_buffer("face_uvs", tensor(face_uvs, torch.long))
        self.register_buffer("textured", tensor(textured, torch.bool))
        self.register_buffer("vertex_colour", tensor(vertex_colour))
        self.register_buffer("landmark_ids", tensor(landmarks, torch.long))
        self.register_buffer("albedo_mean", tensor(albedo.mean))
        self.register_buffer("albedo_basis", tensor(albedo.basis.reshape(albedo.size, -1) * albedo.std[:, None]))
        template = template_landmarks(size, fill)
        marks = np.asarray(mean, dtype=np.float64)[landmarks]
        R0 = euler_rotation(torch.zeros(1, 3, dtype=torch.float64))[0].numpy()
        centred = marks @ R0.T - (marks @ R0.T).mean(axis=0)
        spread = np.sqrt((centred[:, :2] ** 2).sum(1).mean())
        target = np.sqrt(((template - template.mean(0)) ** 2).sum(1).mean())
        z = self.focal_px * spread / target
        c = (size - 1) / 2
        centroid = template.mean(axis=0)
        t_ref = np.array([(centroid[0] - c) * z / self.focal_px, (centroid[1] - c) * z / self.focal_px, z])
        self.register_buffer("t_ref", tensor(t_ref - (marks @ R0.T).mean(axis=0)))
        light = np.zeros((9, 3))
        light[0] = WHITE_SKY_L0
        self.register_buffer("light_ref", tensor(light))

    def camera(self, dtype: torch.dtype = torch.float32) -> Camera:
        """The crop camera: focal ``focal * size`` pixels, centre ``(size - 1) / 2``, at the origin."""
        c = (self.size - 1) / 2
        return Camera(self.focal_px, self.focal_px, c, c, self.size, self.size, torch.eye(3, dtype=dtype),
                      torch.zeros(3, dtype=dtype))

    def crop_pose(self, R: np.ndarray, t: np.ndarray, K: np.ndarray, crop_matrix: np.ndarray,
                  landmarks_model: np.ndarray) -> np.ndarray:
        """The rotation and translation coefficients ``(6,)`` that put a face photographed with pose ``R, t``
        (model frame -> photo camera) by intrinsics ``K`` where the crop ``crop_matrix`` (photo -> crop pixels,
        a similarity ``[s Q | a]``) shows it, in this crop camera: the coarse level's pose target.

        The crop is the photo of a virtual camera of focal ``s f`` rolled by ``Q`` about its axis, so the rotation
        is ``R' = diag(Q, 1) R`` exactly; the crop camera's focal ``f'`` differs, so the face moves along its
        ray to the depth ``Z' = f' Z / (s f)`` of its landmarks' centroid (``Z``: the centroid's photo depth),
        where it has the crop's size: weak perspective, as any fixed-focal crop model.

        Args:
            R, t: ``(3, 3)``, ``(3,)`` model frame -> photo camera; K ``(3, 3)``; crop_matrix ``(3, 3)``.
            landmarks_model: ``(68, 3)`` the face's model-frame landmark positions.
        """
        from morphable.data.voxels import similarity_scale

        A = np.asarray(crop_matrix, dtype=np.float64)
        s = similarity_scale(A)
        Q = np.eye(3)
        Q[:2, :2] = A[:2, :2] / s
        R_crop = Q @ np.asarray(R, dtype=np.float64)
        centroid_model = np.asarray(landmarks_model, dtype=np.float64).mean(axis=0)
        centroid = np.asarray(R, dtype=np.float64) @ centroid_model + t
        f = 0.5 * (K[0, 0] + K[1, 1])
        u = K[:2, :2] @ (centroid[:2] / centroid[2]) + K[:2, 2]
        x = A[:2, :2] @ u + A[:2, 2]
        depth = self.focal_px * centroid[2] / (s * f)
        c = (self.size - 1) / 2
        target = np.array([(x[0] - c) / self.focal_px * depth, (x[1] - c) / self.focal_px * depth, depth])
        translation = (target - R_crop @ centroid_model - self.t_ref.double().numpy()) / self.cm
        return np.concatenate([euler_from_rotation(R_crop), translation])

    def shape(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """``S = mu + B_s alpha + B_e beta``: ``(B, K_s)``, ``(B, K_e)`` -> ``(B, V, 3)`` model frame."""
        coefficients = torch.cat([identity, expression], dim=1).to(self.basis)
        return self.mean + (coefficients @ self.basis).view(len(coefficients), -1, 3)

    def forward(self, coefficients: torch.Tensor) -> CoarseFaces:
        """``(B, P)`` -> :class:`CoarseFaces`."""
        g = self.layout.split(coefficients.to(self.basis))
        shape = self.shape(g["identity"], g["expression"])
        R = euler_rotation(g["rotation"])
        vertices = shape @ R.transpose(1, 2) + (self.t_ref + g["translation"] * self.cm)[:, None]
        texture = (self.albedo_mean.flatten() + g["albedo"] @ self.albedo_basis).view(len(shape), *self.albedo_mean.shape)
        light = self.light_ref + g["light"].view(-1, 9, 3)
        marks = vertices[:, self.landmark_ids]
        landmarks = marks[..., :2] / marks[..., 2:] * self.focal_px + (self.size - 1) / 2
        return CoarseFaces(vertices, texture, light, landmarks)

    def render(self, decoded: CoarseFaces, vertices: torch.Tensor | None = None, camera: Camera | None = None,
               antialias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """sRGB ``image (B, H, W, 3)`` and coverage ``mask (B, H, W)`` of ``decoded`` (or of other camera-frame
        ``vertices`` of the same topology with its albedo and light, e.g. the mid level's deformed mesh), seen by
        the crop camera (or ``camera``, e.g. a photo's own)."""
        v = decoded.vertices if vertices is None else vertices
        camera = self.camera(v.dtype) if camera is None else camera
        linear, mask = render_shaded(v, self.faces, [camera] * len(v), decoded.light, albedo=self.vertex_colour,
                                     texture=decoded.texture, uvs=self.uvs, face_uvs=self.face_uvs,
                                     textured=self.textured, antialias=antialias)
        return to_srgb(linear), mask


def coarse_face_arguments(dataset, model) -> dict:
    """The model arrays of :class:`CoarseFace` on the rendered topology of a photo dataset
    (:class:`~morphable.data.photos.PhotoDataset`) made with the :class:`~morphable.data.linear.LinearFaceModel`
    ``model``, with its fixed part colours (irises the mean iris colour, pupils dark): ``mean, basis, identity,
    faces, uvs, face_uvs, textured, vertex_colour, landmarks, cm``."""
    from morphable.data.photos import IRIS_COLOURS, prepare_photo_model
    from morphable.image.baselines import linear_basis

    pm = prepare_photo_model(model)
    if len(pm.vertex_ids) != len(dataset.topology["source_vertex"]) or not np.array_equal(
            pm.vertex_ids, dataset.topology["source_vertex"]):
        raise MorphableError(f"{dataset.root}: the photos were not rendered from this linear model")
    mean, basis = linear_basis(model, dataset.topology)
    colour = pm.part_colour.copy()
    colour[colour[:, 0] < 0] = IRIS_COLOURS.mean(axis=0)
    colour[pm.pupil] = 0.01
    return {"mean": mean, "basis": basis, "identity": model.n_shape, "faces": pm.faces, "uvs": pm.texture_uv,
            "face_uvs": pm.face_uvs, "textured": pm.textured, "vertex_colour": colour, "landmarks": pm.landmarks,
            "cm": pm.cm}


def coarse_face_from_photos(dataset, model, albedo, size: int, fill: float, focal: float = DEEP3D_FOCAL) -> CoarseFace:
    """A :class:`CoarseFace` of :func:`coarse_face_arguments` with the albedo space ``albedo``."""
    return CoarseFace(**coarse_face_arguments(dataset, model), albedo=albedo, size=size, fill=fill, focal=focal)
