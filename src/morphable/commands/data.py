"""``morphable data``: make datasets (synthetic faces, samples of a linear face model, SDF samples of scans,
deformation pairs of expression sequences, depth observations, synthetic photos) and check them."""

from __future__ import annotations

import argparse

from morphable.commands.options import add_output_file, add_output_folder

UNIT_CHOICES = "m, cm, mm or millimetres per unit (e.g. 250 when 1 unit = 25 cm)"


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="make and inspect datasets")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    synth = sub.add_parser("synth", help="procedural synthetic faces in the COMA layout (the embedded default)")
    synth.add_argument("--out", required=True, help="output folder")
    _add_sequence_args(synth, subjects=12, expressions=12, frames=10)
    synth.add_argument("--pose", type=float, default=0.0,
                       help="turn the head on the neck by up to DEG degrees (yaw, pitch, roll) over each sequence "
                            "(default 0: no head motion; at most 45)")
    synth.set_defaults(func=run_synth)

    ict = sub.add_parser("ict", help="sample a COMA-layout dataset from the ICT-FaceKit linear model "
                                     "('data linear' on its outer skin)")
    ict.add_argument("--model", required=True, help="ICT-FaceKit .npz or upstream FaceXModel folder")
    ict.add_argument("--out", required=True, help="output folder")
    _add_sequence_args(ict, subjects=12, expressions=12, frames=10)
    ict.add_argument("--full-head", action="store_true",
                     help="keep every vertex (default: only the outer skin surface, vertices 0..11247)")
    ict.set_defaults(func=run_ict)

    linear = sub.add_parser("linear", help="sample a COMA-layout dataset from any linear face model "
                                           "(ICT-FaceKit, generic .npz, Basel Face Model .h5)")
    linear.add_argument("model", help="ICT-FaceKit .npz or FaceXModel folder, generic .npz (docs/linear-models.md) "
                                      "or BFM .h5")
    linear.add_argument("--out", required=True, help="output folder")
    _add_sequence_args(linear, subjects=12, expressions=None, frames=None)
    linear.add_argument("--vertices", type=int, help="keep the model's first N vertices (ICT-FaceKit outer skin: "
                                                     "11248; default: all)")
    linear.add_argument("--unit", help=f"override the model's unit: {UNIT_CHOICES} (BFM .h5: mm)")
    linear.set_defaults(func=run_linear)

    info = sub.add_parser("info", help="validate every file of a dataset and print a summary")
    info.add_argument("path", help="dataset folder or .npy array")
    info.add_argument("--unit", help=f"unit when the dataset has no dataset.json: {UNIT_CHOICES}")
    info.add_argument("--template", help="mesh with the faces of a .npy dataset")
    info.set_defaults(func=run_info)

    _add_scan_parsers(sub)
    _add_deform_parser(sub)
    _add_photos_parser(sub)


def _add_deform_parser(sub) -> None:
    deform = sub.add_parser("deform", help="correspondence pairs for the expression deformation field from registered "
                                           "sequences, plus identity SDF data of the neutral heads (docs/data.md)")
    deform.add_argument("sequences", help="COMA-layout folder <subject>/<expression>/<frame>.ply of one topology "
                                          "(e.g. 'data synth' or 'data ict' output)")
    add_output_folder(deform, "deformation.json, identity/, pairs/, posed/, neutral/, preview.png")
    deform.add_argument("--unit", help=f"unit when the folder has no dataset.json: {UNIT_CHOICES}")
    deform.add_argument("--neutral", metavar="EXPRESSION/FRAME",
                        help="every subject's neutral frame (default: frame 0 of each subject's first expression)")
    deform.add_argument("--region-vertices", type=int, metavar="N",
                        help="vertices 0..N-1 are the face (ICT-FaceKit: 9409); default: the dataset's regions.npy")
    deform.add_argument("--frame-stride", type=int, default=1, metavar="K",
                        help="keep every K-th frame of each sequence, plus its last frame and its apex (default 1)")
    deform.add_argument("--pairs", type=int, default=20_000, metavar="M",
                        help="correspondence pairs per mesh, half sampled on each mesh (default 20000)")
    deform.add_argument("--n-surface", type=int, default=50_000, help="identity SDF surface samples (default 50000)")
    deform.add_argument("--n-near", type=int, default=50_000,
                        help="identity SDF near-surface samples per level (default 50000)")
    deform.add_argument("--n-ball", type=int, default=20_000, help="identity SDF unit-ball samples (default 20000)")
    deform.add_argument("--views", type=int, default=0,
                        help="ground-truth normal maps of the identity data, cameras per head (default 0: none)")
    deform.add_argument("--map-resolution", type=int, default=64, help="normal map size in pixels (default 64)")
    deform.add_argument("--n-eval", type=int, default=5_000,
                        help="evaluation SDF samples of each posed mesh: surface, near per level, ball (default 5000)")
    deform.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    deform.set_defaults(func=run_data_deform)


def run_data_deform(args: argparse.Namespace) -> int:
    from morphable.data.deformation import DEFORMATION_JSON, read_deformation_info, write_deformation_dataset

    out = write_deformation_dataset(
        args.sequences, args.out, unit=args.unit, neutral=args.neutral, region_vertices=args.region_vertices,
        frame_stride=args.frame_stride, pairs=args.pairs, n_surface=args.n_surface, n_near=args.n_near,
        n_ball=args.n_ball, n_eval=args.n_eval, views=args.views, map_resolution=args.map_resolution,
        seed=args.seed, overwrite=args.overwrite)
    info = read_deformation_info(out)
    stats = info["stats"]
    print(f"{len(info['subjects'])} subjects, {stats['posed_samples']} posed samples (+ {len(info['subjects'])} "
          f"neutral), {stats['pairs_total']} pairs, max displacement {stats['max_displacement_mm']:.1f} mm  ->  "
          f"{out / DEFORMATION_JSON}; identity data: {out / info['identity_data']}; preview: {out / 'preview.png'}")
    return 0


def _add_photos_parser(sub) -> None:
    photos = sub.add_parser("photos", help="synthetic face photos with exact 3D ground truth (docs/images.md)")
    photos.add_argument("--model", required=True, help="linear model with UVs and 68 landmark vertices "
                                                       "(ICT-FaceKit FaceXModel folder, generic .npz), or the "
                                                       "ICT-FaceKit .npz with --uvs-from")
    photos.add_argument("--uvs-from", metavar="MODEL", help="a model of the same topology whose UVs and landmarks "
                                                            "to use (ICT-FaceKit .npz: its FaceXModel folder)")
    add_output_folder(photos, "images, masks, meshes, annotations.npz, dataset.json, contact_sheet.png")
    photos.add_argument("--count", type=int, default=1000, help="number of photos (default 1000)")
    photos.add_argument("--identities", type=int, default=100, help="number of identities (default 100)")
    photos.add_argument("--resolution", type=int, default=224, help="image width and height (default 224)")
    photos.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    photos.add_argument("--workers", type=int, default=1, help="rendering processes (default 1; same files)")
    photos.add_argument("--detail", type=float, nargs=2, metavar=("MID", "HIGH"), default=(0.0, 0.0),
                        help="per-identity detail outside the model's span, RMS mm over the face: MID moves the "
                             "mesh (Gaussian bumps), HIGH bends the shading (wrinkles, folds, pores); default 0 0")
    photos.add_argument("--views", type=int, default=1, help="multi-view sets: N consecutive photos of one "
                                                             "identity, expression and light from N cameras "
                                                             "spanning +-60 deg of yaw (default 1)")
    photos.set_defaults(func=run_photos)


def _add_scan_parsers(sub) -> None:
    """``data sdf`` (SDF training samples of meshes) and ``data depth`` (a single-view point cloud)."""
    sdf = sub.add_parser("sdf", help="pre-compute SDF training samples (surface, near-surface, ball) from meshes")
    sdf.add_argument("meshes", help="folder of .obj/.ply meshes (or one mesh)")
    sdf.add_argument("--out", required=True, help="dataset folder to create")
    sdf.add_argument("--unit", required=True, help=f"unit of the meshes: {UNIT_CHOICES}")
    sdf.add_argument("--region-vertices", type=int,
                     help="vertices 0..N-1 are the face region (ICT-FaceKit: 9409; 11248 = the whole outer skin); "
                          "default: all vertices")
    sdf.add_argument("--n-surface", type=int, default=250_000, help="surface samples per mesh (default 250000)")
    sdf.add_argument("--n-near", type=int, default=250_000, help="near-surface samples per level (default 250000)")
    sdf.add_argument("--n-ball", type=int, default=100_000, help="unit-ball samples per mesh (default 100000)")
    sdf.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sdf.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    maps = sdf.add_argument_group("ground-truth normal maps (for the 2D objectives; Fibonacci cameras looking at "
                                  "the origin, back faces masked)")
    maps.add_argument("--views", type=int, default=128, help="cameras per mesh, 0 for no maps (default 128)")
    maps.add_argument("--map-resolution", type=int, default=64, help="map width and height in pixels (default 64)")
    maps.add_argument("--view-radius", type=float,
                      help="camera distance from the origin in normalised units (default: the thesis' 2.6 for "
                           "heads in the unit sphere, times the normalised bounding radius 0.9)")
    scan = sdf.add_argument_group("real-scan preparation (before normalisation to the unit sphere)")
    cut = scan.add_mutually_exclusive_group()
    cut.add_argument("--cut-below", type=float, metavar="HEIGHT",
                     help="drop what lies below HEIGHT (in the meshes' unit) along --up-axis: the torso")
    cut.add_argument("--cut-plane", type=float, nargs=6, metavar=("X", "Y", "Z", "NX", "NY", "NZ"),
                     help="keep what lies on the side of the plane through (X, Y, Z) that the normal points to")
    scan.add_argument("--up-axis", choices=("x", "y", "z"), default="y", help="axis of --cut-below (default y)")
    scan.add_argument("--largest-component", action="store_true",
                      help="keep only the connected component with the most faces (drops loose debris)")
    sdf.set_defaults(func=run_data_sdf)

    depth = sub.add_parser("depth", help="single-view depth observation of a mesh as a point cloud (.ply)")
    depth.add_argument("mesh", help="mesh to observe")
    add_output_file(depth, "point cloud, .ply")
    depth.add_argument("--n", type=int, default=2500, help="number of points (default 2500)")
    depth.add_argument("--yaw", type=float, default=0.0, help="camera yaw about the y axis in degrees (default 0)")
    depth.add_argument("--seed", type=int, default=0, help="seed of the pixel draw (default 0)")
    depth.set_defaults(func=run_data_depth)


def _add_sequence_args(parser: argparse.ArgumentParser, subjects: int, expressions: int | None,
                       frames: int | None) -> None:
    """``--subjects --expressions --frames --seed --overwrite``; None: 12 expressions x 10 frames, or 1 x 1
    for a model without expression modes."""
    per_model = "12, or 1 for a model without expression modes"
    parser.add_argument("--subjects", type=int, default=subjects, help=f"number of subjects (default {subjects})")
    parser.add_argument("--expressions", type=int, default=expressions,
                        help=f"number of expressions, at most 12 (default {expressions or per_model})")
    parser.add_argument("--frames", type=int, default=frames,
                        help=f"frames per sequence (default {frames or per_model.replace('12', '10')})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def _check_counts(args: argparse.Namespace) -> None:
    from morphable.errors import MorphableError

    for name in ("subjects", "expressions", "frames"):
        if getattr(args, name) < 1:
            raise MorphableError(f"--{name} must be at least 1")
    if args.expressions > 12:
        raise MorphableError("--expressions must be at most 12 (the COMA expressions)")


def run_synth(args: argparse.Namespace) -> int:
    from morphable.data.synthetic import write_synthetic_dataset
    from morphable.viz import PREVIEW_FILE

    _check_counts(args)
    out = write_synthetic_dataset(args.out, args.subjects, args.expressions, args.frames, args.seed, args.overwrite,
                                  pose=args.pose)
    n = args.subjects * args.expressions * args.frames
    print(f"wrote {n} meshes to {out} (unit m); preview: {out / PREVIEW_FILE}")
    return 0


def run_ict(args: argparse.Namespace) -> int:
    from morphable.data.linear import ICT_SKIN_VERTICES, load_ict

    _check_counts(args)
    model = load_ict(args.model)
    if not args.full_head:
        model = model.subset_vertices(ICT_SKIN_VERTICES)
    meta = {"source": f"ICT-FaceKit ({args.model})", "seed": args.seed, "skin_only": not args.full_head,
            "identity_modes": model.n_shape}
    return _write_linear_samples(args, model, meta, "ICT-FaceKit samples")


def run_linear(args: argparse.Namespace) -> int:
    from morphable.data.linear import load_linear_model
    from morphable.errors import MorphableError, input_error

    model = load_linear_model(args.model, unit=args.unit)
    if args.vertices is not None:
        try:
            model = model.subset_vertices(args.vertices)
        except MorphableError as exc:
            raise input_error(args.model, f"--vertices: {exc}") from None
    for name, default in (("expressions", 12), ("frames", 10)):
        if getattr(args, name) is None:
            setattr(args, name, default if model.n_expr else 1)
    _check_counts(args)
    meta = {"source": f"{model.name} ({args.model})", "seed": args.seed, "vertices": model.n_vertices,
            "shape_modes": model.n_shape, "expression_modes": model.n_expr}
    return _write_linear_samples(args, model, meta, f"{model.name} samples")


def _write_linear_samples(args: argparse.Namespace, model, meta: dict, title: str) -> int:
    """Sample expression sequences of ``model`` (:func:`morphable.data.linear.sample_sequences`) and write them
    in the COMA layout with ``dataset.json`` and a preview."""
    from morphable.data.linear import sample_sequences
    from morphable.data.registered import write_coma_layout
    from morphable.viz import PREVIEW_FILE, dataset_preview

    seq = sample_sequences(model, args.subjects, args.expressions, args.frames, args.seed)
    out = write_coma_layout(args.out, seq.vertices, model.faces, seq.subjects, seq.expressions, seq.frames,
                            model.unit, meta, overwrite=args.overwrite)
    dataset_preview(out, seq.vertices, model.faces, seq.subjects, seq.expressions, title)
    print(f"wrote {len(seq.vertices)} meshes ({seq.vertices.shape[1]} vertices, unit {model.unit}) to {out}; "
          f"preview: {out / PREVIEW_FILE}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    import numpy as np

    from morphable.data.registered import load_registered, make_split, protocol_folds

    ds = load_registered(args.path, unit=args.unit, template=args.template)
    extent = ds.vertices.reshape(-1, 3).max(axis=0) - ds.vertices.reshape(-1, 3).min(axis=0)
    lines = [
        f"dataset     {ds.root}",
        f"meshes      {len(ds)}",
        f"vertices    {ds.n_vertices}",
        f"faces       {len(ds.faces)}",
        f"unit        {ds.unit}  (extent {' x '.join(f'{e * ds.to_mm:.1f}' for e in extent)} mm)",
        f"subjects    {len(set(ds.subjects))}: {', '.join(sorted(set(ds.subjects)))[:100]}",
        f"expressions {len(set(ds.expressions))}: {', '.join(sorted(set(ds.expressions)))[:100]}",
    ]
    lines.append("splits      " + _split_line(make_split(ds, "interpolation")))
    if all(ds.expressions) and all(ds.subjects):
        for protocol in ("extrapolation", "identity"):
            folds = protocol_folds(ds, protocol)
            sizes = np.array([list(make_split(ds, protocol, f).sizes().values()) for f in folds])
            lines.append(f"            {protocol}: {len(folds)} folds, test {sizes[:, 2].min()}-{sizes[:, 2].max()} meshes")
    print("\n".join(lines))
    return 0


def _split_line(split) -> str:
    s = split.sizes()
    return f"{split.protocol}: train {s['train']}, val {s['val']}, test {s['test']}"


def run_data_sdf(args: argparse.Namespace) -> int:
    from morphable.data.sdf import SdfDataset
    from morphable.errors import MorphableError
    from morphable.data.scans import make_sdf_dataset

    from morphable.data.normal_maps import NormalMapSettings

    for name in ("n_surface", "n_near", "n_ball", "map_resolution"):
        if getattr(args, name) < 1:
            raise MorphableError(f"--{name.replace('_', '-')} must be at least 1")
    if args.views < 0 or (args.view_radius is not None and not 1.0 < args.view_radius < 1e6):
        raise MorphableError("--views must be at least 0 and --view-radius above 1 (outside the unit ball)")
    maps = NormalMapSettings(args.views, args.map_resolution, args.view_radius) if args.views else None
    if args.cut_below is not None:
        normal = tuple(float(axis == args.up_axis) for axis in "xyz")
        cut = (tuple(args.cut_below * n for n in normal), normal)
    else:
        cut = (tuple(args.cut_plane[:3]), tuple(args.cut_plane[3:])) if args.cut_plane else None
    out = make_sdf_dataset(args.meshes, args.out, args.unit, args.region_vertices, args.n_surface, args.n_near,
                           args.n_ball, args.seed, args.overwrite, cut=cut, largest_component=args.largest_component, normal_maps=maps)
    print(f"{SdfDataset(out).describe()}  ->  {out}")
    return 0


def run_data_depth(args: argparse.Namespace) -> int:
    from morphable.commands.options import output_file
    from morphable.errors import MorphableError
    from morphable.data.scans import depth_observation

    if args.n < 1:
        raise MorphableError(f"--n must be at least 1, got {args.n}")
    output_file(args.out, args.overwrite, ".ply")
    info = depth_observation(args.mesh, args.out, n_points=args.n, yaw_deg=args.yaw, seed=args.seed)
    print(f"{info['points']} points seen from {', '.join(f'{e:.3g}' for e in info['eye'])}  ->  {args.out}")
    return 0


def run_photos(args: argparse.Namespace) -> int:
    from morphable.data.face_detail import DetailSettings
    from morphable.data.photos import PhotoDataset, PhotoSettings, describe, load_photo_model, write_photo_dataset

    settings = PhotoSettings(args.count, args.identities, args.resolution, args.seed, DetailSettings(*args.detail),
                             args.views)
    model, source = load_photo_model(args.model, args.uvs_from)
    from pathlib import Path

    files = {"model": str(Path(args.model).resolve()),
             "uvs_from": str(Path(args.uvs_from).resolve()) if args.uvs_from else None}
    out = write_photo_dataset(model, args.out, settings, source=source, model_files=files,
                              overwrite=args.overwrite, workers=args.workers)
    print(f"{describe(PhotoDataset(out))}  ->  {out}; contact sheet: {out / 'contact_sheet.png'}")
    return 0
