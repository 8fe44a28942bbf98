"""HRN training samples of a synthetic photo dataset: the aligned crop, its face mask and landmarks, and the
coarse level's target coefficients (for the supervised pre-training of the coarse regressor the issue allows).

The crop is the similarity that puts the photo's 68 ground-truth landmarks on the template at ``fill``
(:func:`~morphable.image.align.template_landmarks`), optionally jittered (:class:`~morphable.data.voxels.
Augmentation` without flips: an ICT face's coefficients have no mirror image). Targets, in the order of
:class:`~morphable.image.coarse.CoarseLayout`: the photo's shape and expression coefficients, the albedo
coefficients of its identity's texture (:meth:`~morphable.data.albedo_space.AlbedoSpace.project`), the pose in
the crop camera (:meth:`~morphable.image.coarse.CoarseFace.crop_pose`, so a jittered crop gets its own), and
the light relative to the reference sky (``sh - L_ref``). With ``targets``
(:class:`~morphable.image.hrn_targets.DetailTargets`) an item also holds the detail maps' targets in the crop
camera (the identity's model-frame deformation map rotated by the crop's rotation ``R``) and the ground-truth
mesh in the model frame (``R_photo^T (X - t)``: what a reconstruction is scored on).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from morphable.data.voxels import Augmentation, crop_image


class HRNSamples:
    """A torch ``Dataset`` of HRN samples (module docstring).

    ``item = {"image": (3, S, S) float32 in [0, 1], "mask": (S, S) float32 (the face mask, resampled),
    "valid": (S, S) float32 (1 where the crop lies inside the photo: masks and losses only count there),
    "landmarks": (68, 2) float32 crop pixels, "coefficients": (P,) float32 targets, "identity": int,
    "index": int}``, with ``targets`` also ``"mid_target": (3, h, h)``, ``"high_target": (1, H, H)`` and
    ``"mesh": (V, 3)`` float32. Jitter of sample ``i`` in epoch ``e`` comes from ``default_rng([seed, e, i])``.

    Args:
        dataset: a :class:`~morphable.data.photos.PhotoDataset`; indices: its photos to serve.
        face: the :class:`~morphable.image.coarse.CoarseFace` (crop size, camera, layout).
        albedo: the :class:`~morphable.data.albedo_space.AlbedoSpace` of ``face``'s textures.
        fill: the crop template's fill; augment: jitter the crops; targets: the detail maps' targets or None.
    """

    def __init__(self, dataset, indices, face, albedo, fill: float, augment: bool = False, seed: int = 0,
                 augmentation: Augmentation = Augmentation(), targets=None) -> None:
        self.dataset, self.indices, self.face, self.albedo = dataset, np.asarray(indices, dtype=np.int64), face, albedo
        self.targets = targets
        self.fill, self.augment, self.seed, self.epoch = fill, augment, seed, 0
        self.augmentation = replace(augmentation, flip_probability=0.0)
        self.landmark_ids = face.landmark_ids.cpu().numpy()
        self._albedo_codes: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def albedo_code(self, identity: int) -> np.ndarray:
        """``(K_a,)`` the projection of identity ``identity``'s texture (cached)."""
        if identity not in self._albedo_codes:
            from morphable.data.albedo_space import read_albedo_textures

            height = self.albedo.mean.shape[1]
            texture = read_albedo_textures(self.dataset.root / "albedo", [identity], height)
            self._albedo_codes[identity] = self.albedo.project(texture)[0]
        return self._albedo_codes[identity]

    def __getitem__(self, item: int) -> dict:
        import torch

        from morphable.image.align import apply_transform, similarity_transform, template_landmarks

        i = int(self.indices[item])
        a, S = self.dataset.annotations, self.face.size
        A = similarity_transform(a["landmarks_2d"][i], template_landmarks(S, self.fill))
        colour = np.ones(3)
        if self.augment:
            J, _, colour = self.augmentation.sample(np.random.default_rng([self.seed, self.epoch, i]), S)
            A = J @ A
        image = np.clip(crop_image(self.dataset.image(i), A, S) * colour.astype(np.float32)[:, None, None], 0, 1)
        face = self.dataset.mask(i)
        mask = crop_image(np.repeat(face[..., None].astype(np.uint8) * 255, 3, axis=2), A, S)[0]
        valid = crop_image(np.full((*face.shape, 3), 255, dtype=np.uint8), A, S)[0]
        alpha, beta = a["shape"][i], a["expression"][i]
        with torch.no_grad():
            shape = self.face.shape(torch.as_tensor(alpha)[None].float(), torch.as_tensor(beta)[None].float())
        marks = shape[0].double().cpu().numpy()[self.landmark_ids]
        pose = self.face.crop_pose(a["pose"][i][:3, :3], a["pose"][i][:3, 3], a["K"][i], A, marks)
        identity = int(a["identity"][i])
        light = (a["sh"][i] - self.face.light_ref.double().cpu().numpy()).ravel()
        coefficients = np.concatenate([alpha, beta, self.albedo_code(identity), pose, light])
        item = {"image": image.astype(np.float32), "mask": mask.astype(np.float32), "valid": valid.astype(np.float32),
                "landmarks": apply_transform(A, a["landmarks_2d"][i]).astype(np.float32),
                "coefficients": coefficients.astype(np.float32), "identity": identity, "index": i}
        if self.targets is not None:
            from morphable.data.photos import rotation_from_euler

            R = rotation_from_euler(*np.degrees(pose[:3]))
            item["mid_target"] = np.einsum("ij,jhw->ihw", R, self.targets.mid(identity)).astype(np.float32)
            item["high_target"] = self.targets.high(identity)
            R_photo, t_photo = a["pose"][i][:3, :3], a["pose"][i][:3, 3]
            item["mesh"] = ((self.dataset.mesh(i) - t_photo) @ R_photo).astype(np.float32)
        return item
