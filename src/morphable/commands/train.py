"""``morphable train PRESET``: fit a model on registered meshes and evaluate it."""

from __future__ import annotations

import argparse

from morphable.config import IMPLICIT_METHODS, PRESETS


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a preset on a dataset and evaluate it")
    parser.add_argument("preset", choices=sorted(PRESETS), help="method preset")
    parser.add_argument("--data", required=True, help="dataset folder or (N, V, 3) .npy array")
    parser.add_argument("--out", required=True, help="run folder to create")
    parser.add_argument("--unit", choices=("m", "cm", "mm"), help="unit when the dataset has no dataset.json")
    parser.add_argument("--template", help="mesh with the faces of a .npy dataset")
    parser.add_argument("--split", dest="protocol", default="interpolation",
                        choices=("interpolation", "extrapolation", "identity"), help="CoMA protocol")
    parser.add_argument("--fold", help="held-out expression (extrapolation) or subject (identity); 'all' trains "
                                       "every fold into OUT/<fold>/ and writes OUT/folds.md")
    parser.add_argument("--latent", type=int, help="latent size (default: the preset's)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    parser.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --out from its last checkpoint (its config.json wins)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    parser.set_defaults(func=run_train)


def config_from_args(args: argparse.Namespace):
    """The preset's config with the command-line overrides applied."""
    config = PRESETS[args.preset]()
    config.data.path = args.data
    config.data.unit = args.unit
    config.data.template = args.template
    config.data.protocol = args.protocol
    config.data.fold = args.fold
    config.seed = args.seed
    if args.latent is not None:
        config.model.latent = args.latent
    for name, value in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr),
                        ("device", args.device)):
        if value is not None:
            setattr(config.train, name, value)
    return config


def run_train(args: argparse.Namespace) -> int:
    from morphable.experiment import train_all_folds, train_experiment

    if PRESETS[args.preset]().method in IMPLICIT_METHODS:
        from morphable.commands.implicit import run_train_implicit

        return run_train_implicit(args, config_from_args(args))
    if args.fold == "all":
        config = config_from_args(args)
        config.data.fold = None
        table = train_all_folds(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
        print(open(f"{args.out}/folds.md").read().rstrip())
        return 0 if table else 1
    metrics = train_experiment(config_from_args(args), args.out, overwrite=args.overwrite, resume=args.resume,
                               progress=not args.quiet)
    if not metrics:  # a non-zero rank under torchrun
        return 0
    print(f"{args.preset}: test mean {metrics['mean_mm']:.3f} +- {metrics['std_mm']:.3f} mm, "
          f"median {metrics['median_mm']:.3f} mm  ->  {args.out}")
    return 0
