"""HRN's loss terms (HRN supplement eq. 1-2; weights in :data:`HRN_WEIGHTS`), each on batched tensors.

With ``I`` the photo crop, ``R`` a render (sRGB, ``(B, H, W, 3)``), ``A`` the face mask of the photo (``(B, H, W)``
in [0, 1]) and ``C`` the render's coverage:

* photometric (Deep3DFaceRecon's): ``L_photo = sum_p A_p C_p ||I_p - R_p||_2 / sum_p A_p C_p`` (an L2 norm per
  pixel over RGB, averaged over the pixels both the face and the render cover);
* landmark: ``L_lan = (1 / 68) sum_k w_k ||q_k - q'_k||^2`` in crop pixels (so its weight 1.6e-4 is per
  squared pixel, as Deep3DFaceRecon's on 224-px crops), ``w_k = 20`` on the nose ridge (iBUG 27-30) and the
  inner lips (60-67), 1 elsewhere (Deep3DFaceRecon's weighting);
* deformation total variation (Johnson et al.): ``L_tv = mean over texels and channels of
  (M_{i,j+1} - M_{i,j})^2 + (M_{i+1,j} - M_{i,j})^2`` (each difference averaged over its own grid);
* displacement regulariser: ``L_reg = mean |D|``;
* contour-aware: ``L_con = mean_p |C_p - A_p|``: the coarse + mid mesh's (anti-aliased, so differentiable
  at the silhouette) coverage against the face mask, pulling the mesh's contour onto the face's;
* supervised detail: ``L_mid = mean |M - M*|``, ``L_high = mean |D - D*|`` over the texels a mask keeps;
* adversarial: the non-saturating loss on the PatchGAN's logits (``morphable.train.adversarial``), each
  patch logit one sample.

Every term is a scalar tensor, differentiable w.r.t. the prediction.
"""

from __future__ import annotations

import torch

from morphable.errors import MorphableError

HRN_WEIGHTS = {"photo": 1.9, "perceptual": 0.2, "landmark": 1.6e-4, "tv": 5e3, "reg": 10.0, "contour": 20.0,
               "adversarial": 0.2, "supervised": 1.0}
"""The supplement's lambda_1..lambda_8."""

HEAVY_LANDMARKS = tuple(range(27, 31)) + tuple(range(60, 68))
LANDMARK_HEAVY_WEIGHT = 20.0


def photometric_loss(photo: torch.Tensor, render: torch.Tensor, face_mask: torch.Tensor,
                     coverage: torch.Tensor) -> torch.Tensor:
    """``L_photo`` (module docstring): images ``(B, H, W, 3)``, masks ``(B, H, W)``."""
    if photo.shape != render.shape or photo.shape[:-1] != face_mask.shape or face_mask.shape != coverage.shape:
        raise MorphableError(f"photometric loss: photo {tuple(photo.shape)}, render {tuple(render.shape)}, masks "
                             f"{tuple(face_mask.shape)} / {tuple(coverage.shape)} do not match")
    weight = face_mask * coverage
    per_pixel = (photo - render).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    return (weight * per_pixel).sum() / weight.sum().clamp_min(1e-6)


def landmark_weights(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(68,)`` the ``w_k`` of ``L_lan``."""
    w = torch.ones(68, dtype=dtype, device=device)
    w[list(HEAVY_LANDMARKS)] = LANDMARK_HEAVY_WEIGHT
    return w


def landmark_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``L_lan`` (module docstring): ``(B, 68, 2)`` crop pixels each."""
    if predicted.shape != target.shape or predicted.shape[-2:] != (68, 2):
        raise MorphableError(f"landmark loss needs (B, 68, 2) twice, got {tuple(predicted.shape)} and {tuple(target.shape)}")
    w = landmark_weights(predicted.device, predicted.dtype)
    return ((predicted - target).pow(2).sum(-1) * w).mean()


def total_variation(maps: torch.Tensor) -> torch.Tensor:
    """``L_tv`` of ``maps (B, C, H, W)`` (module docstring)."""
    dx = (maps[..., :, 1:] - maps[..., :, :-1]).pow(2).mean()
    dy = (maps[..., 1:, :] - maps[..., :-1, :]).pow(2).mean()
    return dx + dy


def displacement_regulariser(displacement: torch.Tensor) -> torch.Tensor:
    """``L_reg = mean |D|``."""
    return displacement.abs().mean()


def contour_loss(coverage: torch.Tensor, face_mask: torch.Tensor) -> torch.Tensor:
    """``L_con = mean |C - A|``: coverage and mask ``(B, H, W)`` in [0, 1]."""
    if coverage.shape != face_mask.shape:
        raise MorphableError(f"contour loss: coverage {tuple(coverage.shape)} and mask {tuple(face_mask.shape)} differ")
    return (coverage - face_mask).abs().mean()


def supervised_map_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean |P - T|`` over the texels ``mask (B, 1, H, W)`` or ``(1, 1, H, W)`` keeps (all when None)."""
    if predicted.shape != target.shape:
        raise MorphableError(f"supervised map loss: {tuple(predicted.shape)} vs {tuple(target.shape)}")
    error = (predicted - target).abs()
    if mask is None:
        return error.mean()
    m = mask.to(error).expand_as(error)
    return (error * m).sum() / m.sum().clamp_min(1.0)
