"""Real photos: reading one, and the folder format of photos with ground truth that image models are
scored on (AFLW2000-3D, Florence, BU-4DFE, ... brought by a user who owns them).

Folder layout (flat; files pair up by stem)::

    FOLDER/
      <stem>.jpg | .jpeg | .png | .bmp     the photo
      <stem>.pts | .txt | .npy             its 68 iBUG landmarks, exactly one of these (required)
      <stem>.obj | .ply                    its ground-truth mesh in the photo's pixel frame (optional)

Landmarks are ``(68, 2)`` pixel coordinates ``(x, y)`` of the stored pixel array (pixel centres at
integers, ``x`` right, ``y`` down; EXIF orientation is not applied). ``.pts`` is the iBUG format
(``version: 1`` / ``n_points: 68`` / ``{`` / 68 lines ``x y`` / ``}``; its coordinates are 1-based as in
300-W and are converted by subtracting 1), ``.txt`` 68 lines of two numbers (0-based), ``.npy`` a
``(68, 2)`` float array (0-based). A mesh's ``x, y`` are photo pixels and ``z`` is depth in the same
pixel units (larger towards the camera or away, as the source defines: scoring is after alignment).

:func:`read_photo_folder` checks everything before returning and reports every problem at once, one line
each: a photo without landmarks, two landmark files for one photo, files without a photo, unreadable
photos, landmark tables of the wrong shape or with NaN, landmarks far outside the photo (more than
half its size), meshes that do not read.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from morphable.errors import MorphableError, input_error

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
LANDMARK_SUFFIXES = (".pts", ".txt", ".npy")
MESH_SUFFIXES = (".obj", ".ply")
N_LANDMARKS = 68
MAX_PIXELS = 200_000_000


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Any]:
    """The PIL image of a regular file ``path``; a broken or oversized image is one line naming it."""
    from PIL import Image

    from morphable.io import regular_file

    regular_file(path, "photo")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_PIXELS:
                raise input_error(path, f"{img.width} x {img.height} pixels is more than {MAX_PIXELS}")
            yield img
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise input_error(path, f"not a readable image ({message})") from None


def read_photo(path: str | os.PathLike) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB pixels of a photo (grey, palette and alpha images are converted)."""
    with _opened(Path(path)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def photo_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of a photo, from its header."""
    with _opened(Path(path)) as img:
        return int(img.width), int(img.height)


def read_landmarks(path: str | os.PathLike) -> np.ndarray:
    """``(68, 2)`` float64 landmarks (0-based pixels) from a ``.pts``, ``.txt`` or ``.npy`` file."""
    from morphable.io import read_file_bytes, read_npy

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in LANDMARK_SUFFIXES:
        raise input_error(path, f"unknown landmark format '{suffix}' (expected {', '.join(LANDMARK_SUFFIXES)})")
    if suffix == ".npy":
        points = read_npy(path)
        if not np.issubdtype(points.dtype, np.number) or np.iscomplexobj(points):
            raise input_error(path, f"landmarks must be real numbers, got dtype {points.dtype}")
        points = points.astype(np.float64)
    else:
        try:
            text = read_file_bytes(path).decode("utf-8")
        except UnicodeDecodeError:
            raise input_error(path, "not a text file") from None
        points = _parse_pts(path, text) - 1.0 if suffix == ".pts" else _parse_rows(path, text.splitlines(), 1)
    if points.shape != (N_LANDMARKS, 2):
        raise input_error(path, f"expected {N_LANDMARKS} x 2 landmarks, got shape {points.shape}")
    if not np.isfinite(points).all():
        raise input_error(path, "landmarks contain NaN or Inf")
    return points


def _parse_pts(path: Path, text: str) -> np.ndarray:
    """The points between ``{`` and ``}`` of an iBUG ``.pts`` file, checked against ``n_points``."""
    lines = [line.strip() for line in text.splitlines()]
    header = {}
    for line in lines:
        if line == "{":
            break
        key, sep, value = line.partition(":")
        if sep:
            header[key.strip()] = value.strip()
    if "{" not in lines or "}" not in lines or lines.index("}") < lines.index("{"):
        raise input_error(path, "not an iBUG .pts file (no '{' ... '}' block)")
    try:
        n_points = int(header["n_points"])
    except (KeyError, ValueError):
        raise input_error(path, "not an iBUG .pts file (no 'n_points: N' line)") from None
    start, end = lines.index("{") + 1, lines.index("}")
    points = _parse_rows(path, lines[start:end], start + 1)
    if len(points) != n_points:
        raise input_error(path, f"n_points says {n_points} but {len(points)} points follow")
    return points


def _parse_rows(path: Path, lines: list[str], first_line: int) -> np.ndarray:
    """``(N, 2)`` from lines of two numbers (blank lines skipped); ``first_line`` numbers them in errors."""
    rows = []
    for number, line in enumerate(lines, start=first_line):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        if len(fields) != 2:
            raise input_error(path, f"line {number}: expected two numbers 'x y', got {len(fields)} fields")
        try:
            rows.append([float(fields[0]), float(fields[1])])
        except ValueError:
            raise input_error(path, f"line {number}: not a number in '{line.strip()[:40]}'") from None
    return np.array(rows, dtype=np.float64).reshape(-1, 2)


@dataclass
class PhotoSample:
    """One photo of a ground-truth folder.

    Attributes:
        photo: path of the photo.
        landmarks: ``(68, 2)`` float64 ground-truth landmarks (0-based photo pixels).
        size: ``(width, height)`` of the photo in pixels.
        mesh: path of the ground-truth mesh (photo pixel frame), or None.
    """

    photo: Path
    landmarks: np.ndarray
    size: tuple[int, int]
    mesh: Path | None = None

    def image(self) -> np.ndarray:
        """``(H, W, 3)`` uint8 pixels (:func:`read_photo`)."""
        return read_photo(self.photo)

    def read_mesh(self):
        """The ground-truth :class:`morphable.io.Mesh`, or None."""
        from morphable.io import read_mesh

        return None if self.mesh is None else read_mesh(self.mesh)


def read_photo_folder(folder: str | os.PathLike, check_meshes: bool = True) -> list[PhotoSample]:
    """Every photo of a ground-truth folder (sorted by name), validated as the module docstring says.

    Raises one :class:`MorphableError` listing every problem, one line each (``"<file>: <problem>"``).
    ``check_meshes=False`` only checks that a mesh file exists, without reading it.
    """
    from morphable.io import read_mesh

    folder = Path(folder)
    if not folder.is_dir():
        raise input_error(folder, "not a folder")
    by_stem: dict[str, dict[str, list[Path]]] = {}
    for path in sorted(folder.iterdir()):
        kind = _kind(path)
        if kind is not None and path.is_file():
            by_stem.setdefault(path.stem, {"photo": [], "landmarks": [], "mesh": []})[kind].append(path)
    problems: list[str] = []
    samples = []
    for stem, files in sorted(by_stem.items()):
        photos, marks, meshes = files["photo"], files["landmarks"], files["mesh"]
        if not photos:
            problems += [f"{p}: no photo named {stem}{{{','.join(PHOTO_SUFFIXES)}}} beside it"
                         for p in marks + meshes]
            continue
        for kind, found in (("photos", photos), ("landmark files", marks), ("meshes", meshes)):
            if len(found) > 1:
                problems.append(f"{folder / stem}: {len(found)} {kind} ({', '.join(p.name for p in found)}); keep one")
        if not marks:
            problems.append(f"{photos[0]}: no landmark file ({stem}.pts, {stem}.txt or {stem}.npy)")
        if len(photos) > 1 or len(marks) != 1 or len(meshes) > 1:
            continue
        try:
            size = photo_size(photos[0])
            landmarks = read_landmarks(marks[0])
            _check_inside(marks[0], landmarks, size)
            if meshes and check_meshes:
                read_mesh(meshes[0])
        except MorphableError as exc:
            problems.append(str(exc))
            continue
        samples.append(PhotoSample(photos[0], landmarks, size, meshes[0] if meshes else None))
    if problems:
        raise MorphableError("\n".join(problems))
    if not samples:
        raise input_error(folder, f"no photos ({', '.join(PHOTO_SUFFIXES)}) with landmarks")
    return samples


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    for kind, suffixes in (("photo", PHOTO_SUFFIXES), ("landmarks", LANDMARK_SUFFIXES), ("mesh", MESH_SUFFIXES)):
        if suffix in suffixes:
            return kind
    return None


def _check_inside(path: Path, landmarks: np.ndarray, size: tuple[int, int]) -> None:
    """Landmarks may leave the photo (an occluded chin) but not by more than half its size."""
    w, h = size
    lo, hi = np.array([-0.5 * w, -0.5 * h]), np.array([1.5 * w, 1.5 * h])
    outside = ((landmarks < lo) | (landmarks > hi)).any(axis=1)
    if outside.any():
        k = int(np.argmax(outside))
        raise input_error(path, f"landmark {k} at {tuple(np.round(landmarks[k], 1))} is far outside the "
                                f"{w} x {h} photo")
