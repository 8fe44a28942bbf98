"""``morphable interpolate RUN --source A --target B``: meshes along the segment between two codes.

Mesh models: A and B are test-set indices or mesh files with the run's topology (their codes come from the
encoder); implicit models: A and B are training-code indices (expression runs: sample indices or names).
"""

from __future__ import annotations

import argparse

from morphable.commands.options import add_device, add_output_folder, add_resolution, add_run


def register(subparsers) -> None:
    parser = subparsers.add_parser("interpolate", help="meshes along the segment between two codes of a run")
    add_run(parser, "any family")
    parser.add_argument("--source", required=True,
                        help="first end: a test-set index or mesh file (mesh models), a training-code index (implicit), "
                             "a sample index or name (expression runs)")
    parser.add_argument("--target", required=True, help="second end, like --source")
    parser.add_argument("--n", type=int, default=7, help="meshes along the segment, ends included (default 7)")
    add_output_folder(parser, "interp_XX.ply, interpolation.png, interpolation.json")
    parser.add_argument("--subject", help="expression runs: the subject whose identity the expressions are shown on "
                                          "(default: the source sample's)")
    add_resolution(parser, None)
    add_device(parser)
    parser.set_defaults(func=run_interpolate)


def _index(flag: str, value: str, names: list[str] | None = None) -> int:
    """A training-code index, or for an expression run (``names``: its samples) a sample name too."""
    from morphable.errors import MorphableError

    if names is not None and value in names:
        return names.index(value)
    if not value.lstrip("-").isdigit():
        what = "a sample index or name for an expression run" if names is not None else \
            "a training-code index for an implicit run"
        raise MorphableError(f"{flag} must be {what}, got '{value}'")
    return int(value)


def _sample_names(run) -> list[str] | None:
    """The sample names of an expression run (its ``deformation.json`` copy), else None."""
    from morphable.implicit.expression_experiment import DEFORMATION_COPY
    from morphable.io import read_json

    if run.config.get("method") != "expression":
        return None
    return [s["name"] for s in read_json(run.path / DEFORMATION_COPY)["samples"]]


def run_interpolate(args: argparse.Namespace) -> int:
    from morphable.commands.options import output_folder, refuse_implicit_options
    from morphable.errors import MorphableError
    from morphable.experiment import load_run, open_run
    from morphable.io import atomic_folder, write_json, write_ply
    from morphable.viz import mesh_grid

    if args.n < 2:
        raise MorphableError(f"--n must be at least 2, got {args.n}")
    out = output_folder(args.out, args.overwrite)
    run, config = open_run(args.run)
    refuse_implicit_options(args, config, ("res", "subject"))
    if config.family == "implicit":
        from morphable.implicit.latent import interpolate_run

        names = _sample_names(run)
        info = interpolate_run(args.run, _index("--source", args.source, names),
                               _index("--target", args.target, names), out,
                               steps=args.n, resolution=args.res or 128, device=args.device, subject=args.subject)
        print(f"{info['steps']} meshes from {info['names'][0]} to {info['names'][1]} in "
              f"{info['seconds_extraction']:.1f} s  ->  {out}")
        return 0
    model = load_run(args.run, args.device)
    meshes = model.interpolate(model.mesh(args.source), model.mesh(args.target), args.n)
    files = [f"interp_{i:02d}.ply" for i in range(args.n)]
    titles = [f"t = {i / (args.n - 1):.2f}" for i in range(args.n)]
    with atomic_folder(out) as folder:
        for name, mesh in zip(files, meshes):
            write_ply(folder / name, mesh, model.faces)
        mesh_grid(folder / "interpolation.png", list(meshes), model.faces, titles=titles, columns=args.n,
                  suptitle=f"{model.method}: {args.source} -> {args.target}")
        write_json(folder / "interpolation.json", {"run": args.run, "method": model.method, "source": args.source,
                                                   "target": args.target, "n": args.n, "files": files})
    print(f"{args.n} meshes from {args.source} to {args.target}  ->  {out}")
    return 0
