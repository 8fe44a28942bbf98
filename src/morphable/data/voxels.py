"""VRN's volumetric targets: the frame a face volume lives in, and the maps between it, the crop and the photo.

A VRN volume is a ``(D, S, S)`` grid aligned with an ``S x S`` face crop: voxel ``[k, y, x]`` sits behind
crop pixel ``(x, y)`` (pixel centres at integers, ``x`` right, ``y`` down) at depth slice ``k`` (``k`` grows
away from the camera, OpenCV's ``z`` forward). Coordinates in this module are continuous ``(x, y, k)`` with
voxel centres at integers, so ``volume[k, y, x]`` is the voxel whose centre is ``(x, y, k)``.

The crop (:meth:`VolumeSpec.crop_matrix`) is the similarity ``A = [[s R, t], [0, 0, 1]]`` that carries the
photo's 68 landmarks onto :func:`morphable.image.align.template_landmarks` at ``fill`` (landmarks fill that
fraction of the crop, leaving room for forehead, cheeks and chin).

A camera-frame point ``X = (X, Y, Z)`` (intrinsics ``K``, ``f = (f_x + f_y) / 2``) maps to

    (u, v) = (f_x X / Z + c_x, f_y Y / Z + c_y)          photo pixels (exact perspective)
    (x, y) = A (u, v)                                      crop pixels
    z'     = s f (Z - Z_0) / Z_0                           crop pixels of depth about the reference depth Z_0
    k      = D / 2 + depth_scale z'                        depth slice

``Z_0`` is the reference depth (the mean depth of the 68 landmark vertices), where one model unit spans
``s f / Z_0`` crop pixels in ``x``, ``y`` and ``z`` alike, so ``(x, y, z')`` is the camera frame seen
through a local similarity, in crop pixels. ``depth_scale`` slices per crop pixel is VRN's ``x 2``: the
paper's 192 x 192 x 200 volume holds ``+-50`` crop pixels of depth, which at ``fill = 0.5`` is about
``+-7`` cm about the landmarks' depth on an adult face, enough for the face region at any yaw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from morphable.data.volume_spec import VolumeSpec
from morphable.errors import MorphableError


def similarity_scale(matrix: np.ndarray) -> float:
    """The scale ``s`` of a ``(3, 3)`` similarity ``[[s R, t], [0, 0, 1]]``: ``sqrt(|det A_2x2|)``."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(matrix, dtype=np.float64)[:2, :2]))))


def camera_to_volume(points: np.ndarray, K: np.ndarray, crop_matrix: np.ndarray, z_ref: float,
                     spec: VolumeSpec) -> np.ndarray:
    """``(N, 3)`` camera-frame points -> ``(N, 3)`` continuous volume coordinates ``(x, y, k)``.

    Args:
        points: ``(N, 3)`` camera-frame points, ``Z > 0`` (model unit).
        K: ``(3, 3)`` intrinsics of the photo.
        crop_matrix: ``(3, 3)`` photo pixels -> crop pixels (:meth:`VolumeSpec.crop_matrix`).
        z_ref: the reference depth ``Z_0 > 0`` (model unit), e.g. the mean depth of the 68 landmarks.
        spec: the volume.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise MorphableError(f"camera-frame points must be (N, 3), got {p.shape}")
    if not (z_ref > 0 and np.isfinite(z_ref)):
        raise MorphableError(f"the reference depth must be positive, got {z_ref}")
    if not (p[:, 2] > 0).all():
        raise MorphableError("camera-frame points must lie in front of the camera (Z > 0)")
    K = np.asarray(K, dtype=np.float64)
    u = K[0, 0] * p[:, 0] / p[:, 2] + K[0, 2]
    v = K[1, 1] * p[:, 1] / p[:, 2] + K[1, 2]
    A = np.asarray(crop_matrix, dtype=np.float64)
    xy = np.stack([u, v], axis=1) @ A[:2, :2].T + A[:2, 2]
    f = 0.5 * (K[0, 0] + K[1, 1])
    z_crop = similarity_scale(A) * f * (p[:, 2] - z_ref) / z_ref
    return np.column_stack([xy, spec.depth / 2.0 + spec.depth_scale * z_crop])


def volume_to_crop(points: np.ndarray, spec: VolumeSpec) -> np.ndarray:
    """``(N, 3)`` volume coordinates ``(x, y, k)`` -> ``(N, 3)`` crop frame ``(x, y, z')``, all in crop pixels
    (``z' = (k - D / 2) / depth_scale``): the frame in which shapes are compared (NME)."""
    p = np.asarray(points, dtype=np.float64)
    return np.column_stack([p[:, 0], p[:, 1], (p[:, 2] - spec.depth / 2.0) / spec.depth_scale])


def crop_to_photo(points: np.ndarray, crop_matrix: np.ndarray) -> np.ndarray:
    """``(N, 3)`` crop frame ``(x, y, z')`` -> ``(N, 3)`` photo pixel frame: ``(u, v) = A^{-1} (x, y)`` and depth
    ``z' / s`` in photo pixels (the convention of :mod:`morphable.image.photo_dataset` meshes)."""
    p = np.asarray(points, dtype=np.float64)
    inverse = np.linalg.inv(np.asarray(crop_matrix, dtype=np.float64))
    uv = p[:, :2] @ inverse[:2, :2].T + inverse[:2, 2]
    return np.column_stack([uv, p[:, 2] / similarity_scale(crop_matrix)])


# --------------------------------------------------------------------------- what is voxelised and scored

NARROW_FACE_VERTICES = 6706  # ICT-FaceKit's "narrow face area": vertices 0..6705 of its topology
CLOSING_PARTS = ("mouth_socket", "sclera_left", "iris_left", "sclera_right", "iris_right")


def _part_mask(topology: dict, names: tuple[str, ...]) -> np.ndarray:
    part_names = [str(n) for n in topology["part_names"]]
    wanted = [part_names.index(n) for n in names if n in part_names]
    return np.isin(topology["part"], wanted)


def face_region(topology: dict) -> np.ndarray:
    """``(M,)`` rendered-vertex indices of the face region (NME's ground-truth points): skin vertices of
    ICT-FaceKit's narrow face area (model ids below :data:`NARROW_FACE_VERTICES`)."""
    skin = _part_mask(topology, ("skin",))
    return np.nonzero(skin & (np.asarray(topology["source_vertex"]) < NARROW_FACE_VERTICES))[0].astype(np.int64)


def voxel_faces(topology: dict) -> np.ndarray:
    """``(F, 3)`` the triangles that are voxelised: the whole rendered head (skin, eyeballs, mouth socket).
    Between its nearest and farthest surface along each column it is a solid head (the eye, mouth and neck
    openings do not let the columns through empty), so the hidden half of a face seen in profile is part of
    the target's surface."""
    return np.asarray(topology["faces"], dtype=np.int64)


def _mirror_permutation() -> np.ndarray:
    pairs = [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)]
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
    perm = np.arange(68)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


IBUG_MIRROR = _mirror_permutation()
"""``(68,)`` the iBUG left-right permutation: after a horizontal flip, point ``k`` is the original point
``IBUG_MIRROR[k]`` (jaw 0 <-> 16, brows, nose wings, eye corners 36 <-> 45, mouth corners 48 <-> 54, ...)."""


# --------------------------------------------------------------------------- voxelisation


def front_depth(vertices: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """``(S, S)`` float32 slice coordinate ``k`` of the surface nearest the camera at every pixel centre
    (orthographic rays along ``+k`` through ``(x, y)``), ``inf`` where no triangle covers the centre.

    Args:
        vertices: ``(V, 3)`` volume coordinates ``(x, y, k)`` (:func:`camera_to_volume`).
        faces: ``(F, 3)`` triangles.
        size: ``S``.

    The z-buffer of :func:`morphable.render.raster.rasterize` with an orthographic camera whose pixel grid
    is the volume's (``u = x``, ``v = y``); depths are shifted to stay in front of its near plane.
    """
    import torch

    from morphable.render.camera import Camera
    from morphable.render.raster import rasterize

    v = torch.as_tensor(np.asarray(vertices, dtype=np.float64))
    offset = float(max(0.0, -v[:, 2].min().item())) + 1.0
    camera = Camera(1.0, 1.0, 0.0, 0.0, size, size, torch.eye(3, dtype=torch.float64),
                    torch.tensor([0.0, 0.0, offset], dtype=torch.float64), orthographic=True)
    with torch.no_grad():
        r = rasterize(v, np.asarray(faces, dtype=np.int64), camera)
    depth = torch.where(r.mask, r.depth - offset, torch.full_like(r.depth, float("inf")))
    return depth.numpy().astype(np.float32)


def back_depth(vertices: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """``(S, S)`` float32 slice coordinate of the surface farthest from the camera at every pixel centre
    (``-inf`` where none): :func:`front_depth` of the mesh mirrored in ``k``."""
    mirrored = np.asarray(vertices, dtype=np.float64) * np.array([1.0, 1.0, -1.0])
    return -front_depth(mirrored, faces, size)


def volume_between(front, back, depth: int):
    """Occupancy ``occ[..., k, y, x] = 1`` where ``front[..., y, x] <= k <= back[..., y, x]``: the voxel's centre
    lies between the nearest and the farthest surface of its column (the target of VRN here), as float.

    Args:
        front, back: ``(..., S, S)`` torch tensors (:func:`front_depth`, :func:`back_depth`; ``+-inf``: empty).
        depth: ``D``.

    Returns:
        ``(..., D, S, S)`` float tensor (dtype of ``front``).
    """
    import torch

    k = torch.arange(depth, device=front.device, dtype=front.dtype).view(depth, 1, 1)
    return ((k >= front.unsqueeze(-3)) & (k <= back.unsqueeze(-3))).to(front.dtype)


_TIE_BREAK = np.array([1.37e-7, 2.71e-7])


def _column_hits(vertices: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every crossing of the column rays through pixel centres with the triangles: flat pixel index
    ``y * S + x`` and slice coordinate ``k`` of each crossing (a triangle's screen bounding box, then 2D
    barycentrics). Rays are cast through the centres moved by :data:`_TIE_BREAK` (a fixed sub-pixel-millionth
    offset), so a centre exactly on an edge shared by two triangles counts for exactly one of them, which keeps
    the crossing parity of a closed mesh right."""
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[np.asarray(faces, dtype=np.int64)]
    pixels, depths = [], []
    for t in tri:
        lo = np.clip(np.ceil(t[:, :2].min(axis=0)), 0, size - 1).astype(int)
        hi = np.clip(np.floor(t[:, :2].max(axis=0)), 0, size - 1).astype(int)
        if (hi < lo).any():
            continue
        xs, ys = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1)
        p = centres + _TIE_BREAK
        a, b, c = t[:, :2]
        det = (b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])
        if abs(det) < 1e-12:
            continue
        w1 = ((p[:, 0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (p[:, 1] - a[1])) / det
        w2 = ((b[0] - a[0]) * (p[:, 1] - a[1]) - (p[:, 0] - a[0]) * (b[1] - a[1])) / det
        w0 = 1.0 - w1 - w2
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        pixels.append(centres[inside, 1] * size + centres[inside, 0])
        depths.append(w0[inside] * t[0, 2] + w1[inside] * t[1, 2] + w2[inside] * t[2, 2])
    if not pixels:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    return np.concatenate(pixels), np.concatenate(depths)


def voxelise(vertices: np.ndarray, faces: np.ndarray, spec: VolumeSpec, fill: str = "between") -> np.ndarray:
    """``(D, S, S)`` bool occupancy of a mesh given in volume coordinates ``(x, y, k)``.

    ``fill="between"`` (VRN's targets here): every voxel between the nearest and the farthest surface of its
    column (:func:`volume_between`). The rendered ICT head is an open surface (neck, mouth and eye openings,
    so "inside" is not defined) but nearly closed, and between its front and its back it is the solid head:
    the visible face, and the parts of the face a profile hides, lie on the target's surface. (Extruding the
    visible surface to the back of the volume, VRN's filled face mask, puts the hidden cheek of a profile
    inside the solid: its voxelisation floor at |yaw| > 70 deg was above the mean face's NME.)
    ``fill="inside"`` (closed meshes): a voxel is inside when an odd number of surface crossings lie in front
    of its centre along its column (parity; for watertight meshes in general position).
    """
    if fill == "between":
        import torch

        front = torch.from_numpy(front_depth(vertices, faces, spec.size))
        back = torch.from_numpy(back_depth(vertices, faces, spec.size))
        return volume_between(front, back, spec.depth).numpy() > 0.5
    if fill != "inside":
        raise MorphableError(f"unknown voxel fill {fill!r} (expected 'between' or 'inside')")
    S, D = spec.size, spec.depth
    pixel, k = _column_hits(vertices, faces, S)
    first_behind = np.clip(np.floor(k).astype(np.int64) + 1, 0, D)  # the first voxel centre behind the crossing
    counts = np.zeros((S * S, D + 1), dtype=np.int64)
    np.add.at(counts, (pixel, first_behind), 1)
    inside = (np.cumsum(counts[:, :D], axis=1) % 2).astype(bool)
    return inside.T.reshape(D, S, S)


# --------------------------------------------------------------------------- samples of a photo dataset


def crop_image(photo: np.ndarray, crop_matrix: np.ndarray, size: int) -> np.ndarray:
    """The network input: ``photo (H, W, 3)`` uint8 resampled into the ``size x size`` crop of ``crop_matrix``
    (photo -> crop pixels), ``(3, size, size)`` float32 in [0, 1], black outside the photo."""
    from morphable.image.align import warp

    image = warp(np.asarray(photo).astype(np.float32) / 255.0, crop_matrix, size)
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)


def sample_frame(dataset, i: int, spec: VolumeSpec) -> tuple[np.ndarray, float]:
    """The ground-truth crop of photo ``i`` of a :class:`~morphable.data.photos.PhotoDataset`: its ``(3, 3)``
    photo -> crop matrix (from the GT 2D landmarks) and the reference depth ``Z_0`` (mean landmark depth)."""
    a = dataset.annotations
    return spec.crop_matrix(a["landmarks_2d"][i]), float(a["landmarks_3d"][i][:, 2].mean())


OUTER_TOLERANCE = 2.0  # slices


def on_outer_surface(points: np.ndarray, front: np.ndarray, back: np.ndarray,
                     tolerance: float = OUTER_TOLERANCE) -> np.ndarray:
    """``(N,)`` bool: which volume-frame ``points (N, 3)`` lie on the solid's outer surface rather than inside it
    (the inner lips, the lids' undersides, the nostrils: skin a volume cannot represent). A point is outer when
    its ``k`` is within ``tolerance`` slices of the nearest surface (the largest ``front`` of its 3 x 3 pixel
    neighbourhood, so steep surfaces count) or of the farthest (the smallest ``back`` there), or it projects
    outside the volume."""
    from scipy.ndimage import maximum_filter, minimum_filter

    S = front.shape[-1]
    near = maximum_filter(np.where(np.isfinite(front), front, -np.inf), size=3, mode="nearest")
    far = minimum_filter(np.where(np.isfinite(back), back, np.inf), size=3, mode="nearest")
    x, y = np.rint(points[:, 0]).astype(int), np.rint(points[:, 1]).astype(int)
    inside = (x >= 0) & (x < S) & (y >= 0) & (y < S)
    outer = ~inside
    xi, yi, k = x[inside], y[inside], points[inside, 2]
    outer[inside] = (k <= near[yi, xi] + tolerance) | (k >= far[yi, xi] - tolerance)
    return outer


def gt_face_points(dataset, i: int, spec: VolumeSpec, crop_matrix: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Photo ``i``'s ground-truth face region and outer eye corners (iBUG 36, 45) in a crop frame
    (:func:`volume_to_crop`): ``(M, 3)`` and ``(2, 3)`` crop pixels. Only the face region's vertices on the
    head's outer surface are kept (:func:`on_outer_surface`, judged on the GT's own front and back depths at
    twice the volume's resolution). ``crop_matrix`` defaults to the GT crop (:func:`sample_frame`); pass a
    detected crop's to score a prediction made in that crop."""
    A, z_ref = sample_frame(dataset, i, spec)
    A = A if crop_matrix is None else crop_matrix
    K, mesh = dataset.annotations["K"][i], dataset.mesh(i)
    fine = VolumeSpec(2 * spec.size, 2 * spec.depth, spec.depth_scale, spec.fill)
    zoom = np.diag([2.0, 2.0, 1.0]) @ np.array([[1.0, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])  # crop -> fine crop pixels
    vox_fine = camera_to_volume(mesh, K, zoom @ A, z_ref, fine)
    faces = voxel_faces(dataset.topology)
    region = face_region(dataset.topology)
    outer = on_outer_surface(vox_fine[region], front_depth(vox_fine, faces, fine.size),
                             back_depth(vox_fine, faces, fine.size), 2 * OUTER_TOLERANCE)
    corners = dataset.topology["landmarks"][[36, 45]]
    points = mesh[np.concatenate([region[outer], corners])]
    crop = volume_to_crop(camera_to_volume(points, K, A, z_ref, spec), spec)
    return crop[:-2], crop[-2:]


@dataclass(frozen=True)
class Augmentation:
    """VRN's training jitter (paper): in-plane rotation, translation, scale about the crop centre, horizontal
    flips and per-channel colour scaling. Translation is given for a 192-pixel crop and scaled by ``S / 192``."""

    rotation_deg: float = 45.0
    translation_px: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    flip_probability: float = 0.2
    colour: tuple[float, float] = (0.6, 1.4)

    def sample(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, bool, np.ndarray]:
        """``(3, 3)`` crop -> jittered crop matrix, whether it flips, ``(3,)`` colour factors."""
        angle = np.radians(rng.uniform(-self.rotation_deg, self.rotation_deg))
        s = rng.uniform(*self.scale)
        shift = rng.uniform(-1, 1, 2) * self.translation_px * size / 192.0
        flip = bool(rng.uniform() < self.flip_probability)
        colour = rng.uniform(*self.colour, 3)
        c = (size - 1) / 2.0
        J = np.eye(3)
        J[:2, :2] = s * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        J[:2, 2] = c + shift - J[:2, :2] @ [c, c]
        if flip:
            J = np.array([[-1.0, 0, size - 1], [0, 1, 0], [0, 0, 1]]) @ J
        return J, flip, colour


class VoxelSamples:
    """VRN training samples of a photo dataset (a torch ``Dataset``): the aligned crop, the target as
    its nearest and farthest surface depths, and the 68 landmarks in the crop.

    ``item = {"image": (3, S, S) float32 in [0, 1], "front", "back": (S, S) float32 (:func:`front_depth`,
    :func:`back_depth`; the target is :func:`volume_between`),
    "landmarks": (68, 2) float32 crop pixels, "visible": (68,) bool, "index": int}``. With ``augment`` every
    sample is jittered (:class:`Augmentation`) by the stream ``default_rng([seed, epoch, index])``, so a run is
    reproducible whatever the number of loader workers; :meth:`set_epoch` moves to the next epoch's jitter.
    """

    def __init__(self, dataset, indices, spec: VolumeSpec, augment: bool = False, seed: int = 0,
                 augmentation: Augmentation = Augmentation()) -> None:
        self.dataset, self.indices, self.spec = dataset, np.asarray(indices, dtype=np.int64), spec
        self.augment, self.seed, self.augmentation, self.epoch = augment, seed, augmentation, 0
        self.faces = voxel_faces(dataset.topology)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, item: int) -> dict:
        from morphable.image.align import apply_transform

        i = int(self.indices[item])
        ds, spec = self.dataset, self.spec
        A, z_ref = sample_frame(ds, i, spec)
        landmarks = ds.annotations["landmarks_2d"][i]
        visible = ds.annotations["landmark_visible"][i].astype(bool)
        colour = np.ones(3)
        flip = False
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            J, flip, colour = self.augmentation.sample(rng, spec.size)
            A = J @ A
        image = np.clip(crop_image(ds.image(i), A, spec.size) * colour.astype(np.float32)[:, None, None], 0.0, 1.0)
        vox = camera_to_volume(ds.mesh(i), ds.annotations["K"][i], A, z_ref, spec)
        crop_landmarks = apply_transform(A, landmarks)
        if flip:
            crop_landmarks, visible = crop_landmarks[IBUG_MIRROR], visible[IBUG_MIRROR]
        return {"image": image,
                "front": front_depth(vox, self.faces, spec.size), "back": back_depth(vox, self.faces, spec.size),
                "landmarks": crop_landmarks.astype(np.float32), "visible": visible, "index": i}
