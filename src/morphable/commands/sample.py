"""``morphable sample RUN``: unconditional samples of a trained model (any family).

Mesh models decode codes drawn from the Gaussian of their training meshes' codes; implicit models extract
codes drawn from the Gaussian of their code table. Both use Ledoit-Wolf shrinkage (``--shrinkage`` fixes it).
"""

from __future__ import annotations

import argparse

from morphable.commands.options import add_device, add_output_folder, add_resolution, add_run


def register(subparsers) -> None:
    parser = subparsers.add_parser("sample", help="unconditional samples from the Gaussian of a run's learned codes")
    add_run(parser, "any family")
    parser.add_argument("--n", type=int, default=8, help="number of samples (default 8)")
    add_output_folder(parser, "sample_XX.ply, codes.safetensors, samples.png, samples.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    parser.add_argument("--shrinkage", type=float,
                        help="weight of the isotropic part of the covariance in [0, 1] (default: Ledoit-Wolf)")
    parser.add_argument("--subject", help="expression runs: the subject whose identity the expressions are shown on "
                                          "(default: the first subject)")
    add_resolution(parser, None)
    add_device(parser)
    parser.set_defaults(func=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    from morphable.commands.options import output_folder, refuse_implicit_options
    from morphable.errors import MorphableError
    from morphable.experiment import open_run

    if args.n < 1:
        raise MorphableError(f"--n must be at least 1, got {args.n}")
    if args.shrinkage is not None and not 0.0 <= args.shrinkage <= 1.0:
        raise MorphableError(f"--shrinkage must be in [0, 1], got {args.shrinkage}")
    out = output_folder(args.out, args.overwrite)
    _, config = open_run(args.run)
    refuse_implicit_options(args, config, ("res", "subject"))
    if config.family == "implicit":
        from morphable.implicit.latent import sample_run

        info = sample_run(args.run, out, n=args.n, resolution=args.res or 128, seed=args.seed, device=args.device,
                          shrinkage=args.shrinkage, subject=args.subject)
        empty = sum(r["faces"] == 0 for r in info["samples"])
        print(f"{info['n']} samples of {info['n_training_codes']} codes (shrinkage {info['shrinkage']:.3f}), "
              f"{info['seconds_per_sample']:.2f} s per mesh at {info['resolution']}^3"
              f"{f', {empty} without a surface' if empty else ''}  ->  {out}")
        return 0
    info = sample_mesh_model(args.run, out, args.n, args.seed, args.shrinkage, args.device)
    print(f"{info['n']} samples of the Gaussian of {info['n_training_codes']} training codes "
          f"(shrinkage {info['shrinkage']:.3f})  ->  {out}")
    return 0


def sample_mesh_model(run_path: str, out, n: int, seed: int, shrinkage: float | None, device: str) -> dict:
    """Write ``n`` decoded samples of a mesh-model run into ``out``; returns the ``samples.json`` content."""
    from morphable.experiment import load_run
    from morphable.io import atomic_folder, save_weights, write_json, write_ply
    from morphable.viz import mesh_grid

    model = load_run(run_path, device)
    meshes, codes, used = model.sample(n, seed, shrinkage)
    files = [f"sample_{i:02d}.ply" for i in range(n)]
    info = {"run": str(run_path), "method": model.method, "n": n, "seed": seed, "shrinkage": used,
            "n_training_codes": len(model.training_codes()), "latent": int(codes.shape[1]), "files": files}
    with atomic_folder(out) as folder:
        for name, mesh in zip(files, meshes):
            write_ply(folder / name, mesh, model.faces)
        save_weights(folder / "codes.safetensors", {"codes": codes}, {"run": str(run_path), "seed": str(seed)})
        mesh_grid(folder / "samples.png", list(meshes), model.faces, titles=[f"sample {i}" for i in range(n)],
                  columns=min(n, 4), suptitle=f"{model.method}: samples of the training-code Gaussian")
        write_json(folder / "samples.json", info)
    return info
