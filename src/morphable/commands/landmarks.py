"""``morphable landmarks``: faces, 68 iBUG landmarks and aligned crops of real photos, fully offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from morphable.commands.options import add_output_folder


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "landmarks", help="detect faces and 68 landmarks in photos; write landmarks.json, aligned crops, overlays",
        description="Writes OUT/<photo stem>/landmarks.json (68 x 2 photo pixels, box, score, the similarity "
                    "photo -> crop and its inverse), crop.png and overlay.png for the largest face of each photo; "
                    "with --all-faces, OUT/<stem>/<i>/ per face (largest first) and one overlay.")
    parser.add_argument("photos", metavar="IMAGE_OR_FOLDER", help="a photo or a folder of photos (.jpg, .png, .bmp)")
    add_output_folder(parser, "one sub-folder per photo")
    parser.add_argument("--all-faces", action="store_true", help="every face, not only the largest")
    parser.add_argument("--crop-size", type=int, default=224, help="side of the aligned crop in pixels (default 224)")
    parser.add_argument("--backend", default="auto", choices=("auto", "dlib", "mediapipe"),
                        help="landmark detector (default auto: the first installed of dlib, mediapipe)")
    parser.set_defaults(func=run_landmarks)


def list_photos(source: str) -> list[Path]:
    """The photo ``source``, or the photos of folder ``source`` sorted by name; one line when there are
    none or two share a stem (their result folders would collide)."""
    from morphable.errors import input_error
    from morphable.image.photo_dataset import PHOTO_SUFFIXES

    path = Path(source)
    if not path.exists():
        raise input_error(path, "not found")
    if not path.is_dir():
        return [path]
    photos = sorted(p for p in path.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if not photos:
        raise input_error(path, f"no photos ({', '.join(PHOTO_SUFFIXES)}) in this folder")
    stems: dict[str, Path] = {}
    for p in photos:
        if p.stem in stems:
            raise input_error(p, f"shares its stem with {stems[p.stem].name}: rename one")
        stems[p.stem] = p
    return photos


def run_landmarks(args: argparse.Namespace) -> int:
    """Detect, align and write every photo; one line per photo without a face or that does not read."""
    import sys

    from tqdm import tqdm

    from morphable.commands.options import output_folder
    from morphable.errors import MorphableError
    from morphable.image.landmarks import get_detector
    from morphable.image.photo_dataset import read_photo
    from morphable.io import atomic_folder

    if args.crop_size < 8:
        raise MorphableError(f"--crop-size must be at least 8 pixels, got {args.crop_size}")
    out = output_folder(args.out, args.overwrite)
    photos = list_photos(args.photos)
    detect = get_detector(args.backend)
    with_face = 0
    with atomic_folder(out) as tmp:
        for photo in tqdm(photos, desc="photos", unit="photo", disable=len(photos) < 2, file=sys.stderr):
            try:
                image = read_photo(photo)
            except MorphableError as exc:
                tqdm.write(f"morphable: {exc}", file=sys.stderr)
                continue
            faces = sorted(detect(image), key=lambda f: -f.area)
            if not faces:
                tqdm.write(f"morphable: {photo}: no face found", file=sys.stderr)
                continue
            with_face += 1
            write_photo_results(tmp / photo.stem, photo, image, faces if args.all_faces else faces[:1],
                                len(faces), args.crop_size, args.all_faces)
        if not with_face:
            raise MorphableError(f"{args.photos}: no face found in any of the {len(photos)} photo(s)")
    print(f"{with_face} of {len(photos)} photo(s) with a face; wrote {out}")
    return 0


def write_photo_results(folder: Path, photo: Path, image, faces: list, n_found: int, crop_size: int,
                        indexed: bool) -> None:
    """``folder/landmarks.json`` + ``crop.png`` (or ``folder/<i>/...`` per face when ``indexed``) and
    ``folder/overlay.png``."""
    from PIL import Image

    from morphable.image.align import align_face
    from morphable.io import write_json

    for i, face in enumerate(faces):
        target = folder / str(i) if indexed else folder
        target.mkdir(parents=True, exist_ok=True)
        crop = align_face(image, face.landmarks, crop_size)
        write_json(target / "landmarks.json", {
            "photo": photo.name, "width": int(image.shape[1]), "height": int(image.shape[0]),
            "face": i, "faces_found": n_found,
            "landmarks": face.landmarks.round(3).tolist(), "box": face.box.round(3).tolist(), "score": face.score,
            "crop_size": crop_size, "photo_to_crop": crop.matrix.tolist(), "crop_to_photo": crop.inverse.tolist(),
        })
        Image.fromarray(crop.image).save(target / "crop.png")
    overlay(image, faces, indexed).save(folder / "overlay.png")


def overlay(image, faces: list, numbered: bool):
    """A PIL image of the photo with each face's box and 68 landmarks drawn (and its index)."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    r = max(1.0, min(image.shape[:2]) / 300)
    for i, face in enumerate(faces):
        x0, y0, x1, y1 = (float(v) for v in face.box)
        draw.rectangle((x0, y0, x1, y1), outline=(255, 200, 0), width=max(1, int(r)))
        for x, y in face.landmarks:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(0, 255, 0))
        if numbered:
            draw.text((x0 + 2, y0 + 2), str(i), fill=(255, 200, 0))
    return picture
