"""Single-photo reconstruction with a trained VRN run: landmarks -> crop -> volume -> mesh in the photo's frame.

For a photo with 68 landmarks ``l`` (detected, or given), the crop is the similarity ``A`` that puts ``l`` on
the VRN template (:meth:`~morphable.data.voxels.VolumeSpec.crop_matrix`, the crop the network was trained
on); the network predicts the ``(D, S, S)`` occupancy volume, marching cubes at 0.5 and the largest component
give a mesh in the crop frame (:func:`~morphable.image.volume_mesh.volume_to_mesh`), and
:func:`~morphable.data.voxels.crop_to_photo` maps it to the photo pixel frame: ``(u, v)`` photo pixels, depth
in photo pixels relative to the landmarks' mean depth (OpenCV axes: x right, y down, z away from the camera).
Guided and multitask runs also return their 68 predicted landmarks, mapped to photo pixels by ``A^{-1}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from morphable.errors import MorphableError

SLICE_COLUMNS = 6
SLICE_ROWS = 3


@dataclass
class Reconstruction:
    """One photo's result.

    Attributes:
        vertices: ``(N, 3)`` float64 photo pixel frame (module docstring).
        faces: ``(F, 3)`` int64.
        colours: ``(N, 3)`` uint8, the photo sampled at each vertex's pixel.
        volume: ``(D, S, S)`` float32 occupancy probabilities in the crop.
        crop_matrix: ``(3, 3)`` photo pixels -> crop pixels.
        landmarks: ``(68, 2)`` the photo-pixel landmarks the crop was made from.
        predicted_landmarks: ``(68, 2)`` photo pixels (guided / multitask runs) or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colours: np.ndarray
    volume: np.ndarray
    crop_matrix: np.ndarray
    landmarks: np.ndarray
    predicted_landmarks: np.ndarray | None


def reconstruct_photos(model, photos: list[np.ndarray], landmarks: list[np.ndarray]
                       ) -> list[Reconstruction | MorphableError]:
    """Reconstruct ``photos`` (each ``(H, W, 3)`` uint8) from their ``landmarks`` (each ``(68, 2)`` photo
    pixels) with ``model`` (:class:`~morphable.image.model.VRNModel`), the network run as one batch of
    independent photos (in chunks of ``model.chunk``). A photo whose predicted volume holds no surface gets
    the :class:`~morphable.errors.MorphableError` that says so in its place."""
    from morphable.data.voxels import crop_image, crop_to_photo
    from morphable.image.align import apply_transform
    from morphable.image.volume_mesh import volume_to_mesh

    spec = model.spec
    matrices = [spec.crop_matrix(np.asarray(l, dtype=np.float64)) for l in landmarks]
    prediction = model.predict(np.stack([crop_image(p, A, spec.size) for p, A in zip(photos, matrices)]))
    results = []
    for j, (photo, A) in enumerate(zip(photos, matrices)):
        try:
            crop_vertices, faces = volume_to_mesh(prediction.volume[j], spec)
        except MorphableError as exc:
            results.append(exc)
            continue
        vertices = crop_to_photo(crop_vertices, A)
        marks = None if prediction.landmarks is None else apply_transform(np.linalg.inv(A), prediction.landmarks[j])
        results.append(Reconstruction(vertices, faces, sample_photo(photo, vertices[:, :2]), prediction.volume[j], A,
                                      np.asarray(landmarks[j], dtype=np.float64), marks))
    return results


def sample_photo(photo: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8 bilinear colours of ``photo (H, W, 3)`` at ``pixels (N, 2)`` ``(u, v)`` (clamped to
    the photo)."""
    from scipy.ndimage import map_coordinates

    coords = [np.clip(pixels[:, 1], 0, photo.shape[0] - 1), np.clip(pixels[:, 0], 0, photo.shape[1] - 1)]
    channels = [map_coordinates(photo[..., c].astype(np.float64), coords, order=1) for c in range(3)]
    return np.clip(np.rint(np.stack(channels, axis=1)), 0, 255).astype(np.uint8)


def slices_picture(volume: np.ndarray) -> np.ndarray:
    """``(rows * S, columns * S)`` uint8: ``SLICE_ROWS x SLICE_COLUMNS`` depth slices of ``volume (D, S, S)``
    (probability 1 white), evenly spaced over the slices that hold any voxel above 0.5 (all slices when none),
    front (near the camera) top left, each labelled with its slice index ``k``."""
    from PIL import Image, ImageDraw

    D, S, _ = volume.shape
    occupied = np.flatnonzero((volume > 0.5).any(axis=(1, 2)))
    lo, hi = (occupied[0], occupied[-1]) if len(occupied) else (0, D - 1)
    ks = np.unique(np.rint(np.linspace(lo, hi, SLICE_ROWS * SLICE_COLUMNS)).astype(int))
    sheet = Image.new("L", (SLICE_COLUMNS * S, SLICE_ROWS * S), 0)
    draw = ImageDraw.Draw(sheet)
    for n, k in enumerate(ks):
        x, y = (n % SLICE_COLUMNS) * S, (n // SLICE_COLUMNS) * S
        sheet.paste(Image.fromarray(np.clip(np.rint(255 * volume[k]), 0, 255).astype(np.uint8)), (x, y))
        draw.text((x + 2, y + 1), f"k={k}", fill=128)
    return np.asarray(sheet)


def write_reconstruction(folder: Path, photo_path: Path, photo: np.ndarray, result: Reconstruction,
                         variant: str) -> None:
    """``folder/``: ``mesh.ply`` (photo pixel frame, vertex colours from the photo), ``overlay.png`` (the
    mesh shaded over the photo), ``slices.png`` (:func:`slices_picture`), ``reconstruction.json`` (frame,
    crop, the landmarks used) and, for guided / multitask runs, ``landmarks.json`` (68 predicted photo
    pixels)."""
    from PIL import Image

    from morphable.io import write_json, write_ply
    from morphable.render.overlay import overlay_mesh

    folder.mkdir(parents=True, exist_ok=True)
    write_ply(folder / "mesh.ply", result.vertices, result.faces, result.colours)
    Image.fromarray(overlay_mesh(photo, result.vertices, result.faces)).save(folder / "overlay.png")
    Image.fromarray(slices_picture(result.volume)).save(folder / "slices.png")
    write_json(folder / "reconstruction.json", {
        "photo": photo_path.name, "width": int(photo.shape[1]), "height": int(photo.shape[0]), "variant": variant,
        "frame": "photo pixels: x right, y down (pixel centres at integers), z away from the camera in pixels, "
                 "0 at the landmarks' mean depth",
        "vertices": int(len(result.vertices)), "faces": int(len(result.faces)),
        "volume_shape": list(result.volume.shape), "photo_to_crop": result.crop_matrix.tolist(),
        "landmarks_used": result.landmarks.round(3).tolist()})
    if result.predicted_landmarks is not None:
        write_json(folder / "landmarks.json", {"photo": photo_path.name, "source": f"VRN-{variant}",
                                               "landmarks": result.predicted_landmarks.round(3).tolist()})
