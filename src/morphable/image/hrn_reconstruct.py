"""Photo reconstruction with a trained HRN run: landmarks -> crop -> the three levels -> files.

The crop is the similarity ``A`` (photo -> crop pixels) that puts the photo's 68 landmarks on the run's
template (:func:`~morphable.image.align.template_landmarks` at the run's ``fill``), as in training. Meshes are
written in the model frame (centimetres of the linear model, pose removed: ``x`` right, ``y`` up, ``z`` out of
the face): the coarse 3DMM mesh, the mid mesh (coarse + deformation map) and the fine mesh (the mid mesh
subdivided once and displaced along its normals by the displacement map). Renders are drawn in the crop and
mapped back into the photo by ``A^{-1}``; the 68 landmarks of the mid mesh likewise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class HRNReconstruction:
    """One photo's levels: ``meshes`` name -> ``(vertices, faces)`` (model frame); ``prediction`` the
    :class:`~morphable.image.hrn_model.HRNPrediction` of this photo alone (batch of 1); ``crop_matrix (3, 3)``;
    ``landmarks (68, 2)`` the landmarks the crop was made from; ``predicted_landmarks (68, 2)`` the mid mesh's,
    both in photo pixels."""

    meshes: dict
    prediction: object
    crop_matrix: np.ndarray
    landmarks: np.ndarray
    predicted_landmarks: np.ndarray


def _one(prediction, b: int):
    from dataclasses import fields, replace

    values = {f.name: getattr(prediction, f.name)[b:b + 1] for f in fields(prediction) if f.name != "renders"}
    return replace(prediction, renders={k: v[b:b + 1] for k, v in prediction.renders.items()}, **values)


def reconstruct_hrn(model, photos: list[np.ndarray], landmarks: list[np.ndarray]) -> list[HRNReconstruction]:
    """``photos`` (each ``(H, W, 3)`` uint8) with their ``landmarks`` (each ``(68, 2)`` photo pixels) through
    ``model`` (:class:`~morphable.image.hrn_model.HRNModel`) as one batch of independent photos."""
    from morphable.data.voxels import crop_image
    from morphable.image.align import apply_transform, similarity_transform, template_landmarks

    template = template_landmarks(model.size, model.fill)
    matrices = [similarity_transform(np.asarray(l, dtype=np.float64), template) for l in landmarks]
    prediction = model.predict(np.stack([crop_image(p, A, model.size) for p, A in zip(photos, matrices)]))
    out = []
    for b, (A, marks) in enumerate(zip(matrices, landmarks)):
        fine = model.fine_mesh(prediction.mid[b], prediction.high_map[b])
        meshes = {"coarse": (prediction.coarse[b], model.faces), "mid": (prediction.mid[b], model.faces),
                  "fine": fine}
        predicted = apply_transform(np.linalg.inv(A), prediction.landmarks[b].astype(np.float64))
        out.append(HRNReconstruction(meshes, _one(prediction, b), A, np.asarray(marks, dtype=np.float64), predicted))
    return out


def crop_to_photo_image(crop: np.ndarray, matrix: np.ndarray, height: int, width: int) -> np.ndarray:
    """``crop (S, S, C)`` resampled into the photo's ``height x width`` frame (each photo pixel ``p`` takes the
    bilinear crop value at ``A p``; 0 outside the crop)."""
    from scipy.ndimage import map_coordinates

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    q = matrix[:2, :2] @ np.stack([xs.ravel(), ys.ravel()]) + matrix[:2, 2:3]
    channels = [map_coordinates(crop[..., c], [q[1], q[0]], order=1, cval=0.0).reshape(height, width)
                for c in range(crop.shape[-1])]
    return np.stack(channels, axis=-1)


def map_picture(values: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` map -> ``(H, W, 3)`` uint8: each channel scaled to its own largest magnitude (0 at grey)."""
    v = np.asarray(values, dtype=np.float64)
    scaled = 0.5 + 0.5 * v / max(float(np.abs(v).max()), 1e-12)
    rgb = np.repeat(scaled, 3, axis=0) if len(v) == 1 else scaled
    return (np.clip(rgb.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)


def write_hrn_reconstruction(folder: Path, photo_path: Path, photo: np.ndarray, result: HRNReconstruction) -> None:
    """``folder/``: ``coarse.ply``, ``mid.ply``, ``fine.ply`` (model frame, cm), ``deformation.png``,
    ``displacement.png``, ``texture.png`` (the photo unwrapped into the face tile), ``overlay.png`` (the fine
    level's render over the photo), ``levels.png`` (crop, coarse, coarse + mid, coarse + mid + high),
    ``landmarks.json`` (the mid mesh's 68 landmarks in photo pixels) and ``reconstruction.json``."""
    from PIL import Image

    from morphable.io import write_json, write_ply

    folder.mkdir(parents=True, exist_ok=True)
    for name, (vertices, faces) in result.meshes.items():
        write_ply(folder / f"{name}.ply", vertices, faces)
    p = result.prediction
    Image.fromarray(map_picture(p.mid_map[0])).save(folder / "deformation.png")
    Image.fromarray(map_picture(p.high_map[0])).save(folder / "displacement.png")
    texture = (np.clip(p.unwrapped[0].transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(texture).save(folder / "texture.png")
    H, W = photo.shape[:2]
    render = crop_to_photo_image(np.concatenate([p.renders["fine"][0], p.coverage[0][..., None]], -1),
                                 result.crop_matrix, H, W)
    alpha = np.clip(render[..., 3:], 0, 1)
    overlay = alpha * np.clip(render[..., :3], 0, 1) * 255 + (1 - alpha) * photo.astype(np.float64)
    Image.fromarray(overlay.round().astype(np.uint8)).save(folder / "overlay.png")
    from morphable.data.voxels import crop_image

    crop = crop_image(photo, result.crop_matrix, p.renders["fine"].shape[1]).transpose(1, 2, 0)
    strip = np.concatenate([crop] + [np.clip(p.renders[k][0], 0, 1) for k in ("coarse", "mid", "fine")], axis=1)
    Image.fromarray((strip * 255).round().astype(np.uint8)).save(folder / "levels.png")
    write_json(folder / "landmarks.json", {"photo": photo_path.name, "source": "HRN (mid mesh)",
                                           "landmarks": result.predicted_landmarks.round(3).tolist()})
    write_json(folder / "reconstruction.json", {
        "photo": photo_path.name, "width": int(W), "height": int(H), "method": "hrn",
        "frame": "meshes: the linear model's frame and unit (cm), pose removed; landmarks: photo pixels",
        "meshes": {name: {"vertices": int(len(v)), "faces": int(len(f))} for name, (v, f) in result.meshes.items()},
        "coefficients": p.coefficients[0].round(6).tolist(), "photo_to_crop": result.crop_matrix.tolist(),
        "landmarks_used": result.landmarks.round(3).tolist()})
