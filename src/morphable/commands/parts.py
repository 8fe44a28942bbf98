"""``morphable parts RUN``: part interpolation and part swaps with a trained locally weighted autoencoder."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "parts", help="interpolate or swap face parts with a trained LWAE run (`morphable train lwae`)",
        description="Faces are mesh files (.ply/.obj with the run's topology) or integers: indices into the "
                    "run's test split (its dataset must still be at the path in config.json).")
    parser.add_argument("run", help="run folder written by `morphable train lwae`")
    parser.add_argument("--source", help="source face (mesh file or test-set index)")
    parser.add_argument("--target", help="target face (mesh file or test-set index)")
    parser.add_argument("--part", default="all", help="part to interpolate: 0..K-1 or 'all' (default: all)")
    parser.add_argument("--steps", type=int, default=9, help="interpolation steps including both ends (default 9)")
    parser.add_argument("--swap", nargs="+", metavar="FACE",
                        help="K faces: the new face takes part k from the k-th face (instead of --source/--target)")
    parser.add_argument("--out", required=True, help="folder for the PLY meshes and the figure")
    parser.set_defaults(func=run_parts)


def run_parts(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    import numpy as np

    from morphable.config import config_from_dict
    from morphable.data.registered import UNIT_TO_MM
    from morphable.errors import MorphableError, input_error
    from morphable.experiment import load_autoencoder, prepare_data, template_of
    from morphable.explicit.parts import interpolate_part, part_interpolation_figure, swap_figure, swap_parts
    from morphable.io import read_mesh, write_ply
    from morphable.runs import Run

    run = Run.open(args.run)
    config = config_from_dict(run.config, str(run.path / "config.json"))
    if config.method != "lwae":
        raise input_error(run.path, f"is a '{config.method}' run; part manipulation needs an 'lwae' run")
    template_vertices, faces = template_of(run)
    codec = load_autoencoder(run, config, (template_vertices, faces))
    weights = codec.local_weights
    k = weights.shape[1]
    test_set = []

    def face(spec: str) -> np.ndarray:
        if spec.lstrip("-").isdigit():
            if not test_set:
                dataset, split = prepare_data(config)
                test_set.append(dataset.vertices[split.test])
            index = int(spec)
            if not 0 <= index < len(test_set[0]):
                raise MorphableError(f"face index {index} is outside the run's test set (0..{len(test_set[0]) - 1})")
            return test_set[0][index]
        mesh = read_mesh(spec)
        if mesh.vertices.shape != template_vertices.shape:
            raise input_error(spec, f"has {len(mesh.vertices)} vertices, the run's template has "
                                    f"{len(template_vertices)}")
        if not np.isfinite(mesh.vertices).all():
            raise input_error(spec, "vertices contain NaN or infinite values")
        return mesh.vertices.astype(np.float32)

    unit = config.data.unit or _metrics_unit(run)
    to_mm, unit_label = (UNIT_TO_MM[unit], "mm") if unit in UNIT_TO_MM else (1.0, "model units")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.swap:
        if len(args.swap) != k:
            raise MorphableError(f"--swap needs one face per part ({k} faces), got {len(args.swap)}")
        inputs = np.stack([face(s) for s in args.swap])
        result = swap_parts(codec, inputs, list(range(k)))
        write_ply(out / "swap.ply", result, faces)
        swap_figure(out / "swap.png", inputs, result, faces, weights)
        print(f"wrote {out / 'swap.ply'} and {out / 'swap.png'}")
        return 0
    if args.source is None or args.target is None:
        raise MorphableError("give --source and --target (or --swap FACE ...)")
    if args.steps < 2:
        raise MorphableError(f"--steps must be at least 2, got {args.steps}")
    if args.part == "all":
        parts = list(range(k))
    elif args.part.isdigit() and int(args.part) < k:
        parts = [int(args.part)]
    else:
        raise MorphableError(f"--part must be 0..{k - 1} or 'all', got '{args.part}'")
    source, target = face(args.source), face(args.target)
    if np.array_equal(source, target):
        print(f"note: --source {args.source} and --target {args.target} are the same mesh, so no part changes; "
              "pick two different faces", file=sys.stderr)
    rows = [interpolate_part(codec, source, target, p, args.steps) for p in parts]
    for p, row in zip(parts, rows):
        for i, mesh in enumerate(row):
            write_ply(out / f"part{p}_step{i:02d}.ply", mesh, faces)
    part_interpolation_figure(out / "part_interpolation.png", rows, parts, faces, weights, template_vertices, to_mm,
                              unit_label)
    print(f"wrote {len(parts) * args.steps} meshes and {out / 'part_interpolation.png'}")
    return 0


def _metrics_unit(run) -> str | None:
    from morphable.errors import MorphableError

    try:
        return run.read_metrics().get("unit")
    except MorphableError:
        return None
