"""``morphable reconstruct RUN IMAGE...``: a mesh from each photo with a trained single-image (VRN or HRN) run."""

from __future__ import annotations

import argparse
from pathlib import Path

from morphable.commands.options import add_device, add_output_folder, add_run


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "reconstruct", help="reconstruct a 3D face from each photo with a trained VRN or HRN run",
        description="For each photo: 68 landmarks (detected, or from --landmarks-from) and the run's crop. VRN: "
                    "the predicted volume, marching cubes at 0.5 and the largest component, mapped back to the photo; "
                    "writes OUT/<photo stem>/mesh.ply (photo pixel frame), overlay.png, slices.png, "
                    "reconstruction.json and, for guided / multitask runs, landmarks.json (68 predicted photo "
                    "pixels). HRN: the three levels; writes coarse.ply, mid.ply, fine.ply (model frame), "
                    "deformation.png, displacement.png, texture.png, overlay.png, levels.png, landmarks.json "
                    "and reconstruction.json. Photos without a face are reported one line each and skipped.")
    add_run(parser, "a vrn, vrn-guided, vrn-multitask or hrn run")
    parser.add_argument("photos", nargs="+", metavar="IMAGE_OR_FOLDER", help="photos or folders of photos")
    add_output_folder(parser, "one sub-folder per photo")
    parser.add_argument("--backend", default="auto", choices=("auto", "dlib", "mediapipe"),
                        help="landmark detector (default auto: the first installed of dlib, mediapipe)")
    parser.add_argument("--landmarks-from", metavar="FOLDER",
                        help="take each photo's 68 landmarks from FOLDER/<photo stem>/landmarks.json (the layout "
                             "`morphable landmarks` writes) instead of detecting them")
    parser.add_argument("--batch", type=int, default=8, help="photos per network batch (default 8)")
    add_device(parser)
    parser.set_defaults(func=run_reconstruct)


def gather_photos(sources: list[str]) -> list[Path]:
    """Every photo of ``sources`` (files or folders, :func:`~morphable.commands.landmarks.list_photos`), in
    order; one line when two share a stem."""
    from morphable.commands.landmarks import list_photos
    from morphable.errors import input_error

    photos, stems = [], {}
    for source in sources:
        for photo in list_photos(source):
            if photo.stem in stems:
                raise input_error(photo, f"shares its stem with {stems[photo.stem]}: rename one")
            stems[photo.stem] = photo
            photos.append(photo)
    return photos


def given_landmarks(folder: Path, photo: Path):
    """``(68, 2)`` landmarks of ``photo`` from ``folder/<stem>/landmarks.json``."""
    import numpy as np

    from morphable.errors import input_error
    from morphable.io import read_json

    path = folder / photo.stem / "landmarks.json"
    if not path.is_file():
        raise input_error(path, "not found (no landmarks for this photo)")
    entry = read_json(path)
    points = np.asarray(entry.get("landmarks") if isinstance(entry, dict) else None, dtype=np.float64)
    if points.shape != (68, 2) or not np.isfinite(points).all():
        raise input_error(path, f"'landmarks' must be 68 finite (x, y) pairs, got shape {points.shape}")
    return points


def run_reconstruct(args: argparse.Namespace) -> int:
    """Read, locate and batch the photos; write each result; one line per photo that fails."""
    import sys
    import time

    from tqdm import tqdm

    from morphable.commands.options import output_folder, require_family
    from morphable.errors import MorphableError
    from morphable.experiment import load_run
    from morphable.image.hrn_model import HRNModel
    from morphable.image.photo_dataset import read_photo
    from morphable.io import atomic_folder

    if args.batch < 1:
        raise MorphableError(f"--batch must be at least 1, got {args.batch}")
    require_family(args.run, "image", "reconstruct", "train one with `morphable train vrn-cpu --data PHOTOS`")
    out = output_folder(args.out, args.overwrite)
    photos = gather_photos(args.photos)
    landmark_folder = Path(args.landmarks_from) if args.landmarks_from else None
    if landmark_folder is not None and not landmark_folder.is_dir():
        raise MorphableError(f"{landmark_folder}: --landmarks-from is not a folder")
    detect = None
    if landmark_folder is None:
        from morphable.image.landmarks import get_detector

        detect = get_detector(args.backend)
    model = load_run(args.run, args.device)
    model.chunk = args.batch
    if isinstance(model, HRNModel):
        from morphable.image.hrn_reconstruct import reconstruct_hrn as reconstruct
        from morphable.image.hrn_reconstruct import write_hrn_reconstruction

        def write(folder, photo, image, result):
            write_hrn_reconstruction(folder, photo, image, result)
    else:
        from morphable.image.reconstruct import reconstruct_photos as reconstruct
        from morphable.image.reconstruct import write_reconstruction

        def write(folder, photo, image, result):
            write_reconstruction(folder, photo, image, result, model.variant)
    done, start = 0, time.perf_counter()
    progress = tqdm(total=len(photos), desc="reconstructing", unit="photo", disable=len(photos) < 2, file=sys.stderr)
    with atomic_folder(out) as tmp:
        for first in range(0, len(photos), args.batch):
            batch = []
            for photo in photos[first:first + args.batch]:
                try:
                    image = read_photo(photo)
                    if detect is None:
                        points = given_landmarks(landmark_folder, photo)
                    else:
                        faces = detect(image)
                        if not faces:
                            raise MorphableError(f"{photo}: no face found")
                        points = max(faces, key=lambda f: f.area).landmarks
                    batch.append((photo, image, points))
                except MorphableError as exc:
                    tqdm.write(f"morphable: {exc}", file=sys.stderr)
                    progress.update(1)
            if not batch:
                continue
            results = reconstruct(model, [b[1] for b in batch], [b[2] for b in batch])
            for (photo, image, _), result in zip(batch, results):
                if isinstance(result, MorphableError):
                    tqdm.write(f"morphable: {photo}: {result}", file=sys.stderr)
                else:
                    write(tmp / photo.stem, photo, image, result)
                    done += 1
                progress.update(1)
        progress.close()
        if not done:
            raise MorphableError(f"no photo of {', '.join(args.photos)} could be reconstructed")
    seconds = time.perf_counter() - start
    print(f"{done} of {len(photos)} photo(s) reconstructed in {seconds:.1f} s ({seconds / len(photos):.2f} s per "
          f"photo); wrote {out}")
    return 0
