"""``morphable train PRESET``: train a preset of any family on a dataset and evaluate it."""

from __future__ import annotations

import argparse

from morphable.config import PRESETS


def register(subparsers) -> None:
    from morphable.config import METHODS

    presets = "\n".join(f"  {name:<26} {METHODS[PRESETS[name]().method].description} "
                        f"({METHODS[PRESETS[name]().method].family})" for name in sorted(PRESETS))
    parser = subparsers.add_parser("train", help="train a preset on a dataset and evaluate it",
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=f"presets:\n{presets}")
    parser.add_argument("preset", choices=sorted(PRESETS), help="method preset")
    parser.add_argument("--data", help="registered meshes (folder or (N, V, 3) .npy) or an SDF dataset "
                                        "('morphable data sdf'); not with --resume")
    parser.add_argument("--out", required=True, help="run folder to create")
    parser.add_argument("--unit", help="unit when a mesh dataset has no dataset.json: m, cm, mm or millimetres "
                                        "per unit (e.g. 250 when 1 unit = 25 cm)")
    parser.add_argument("--template", help="mesh with the faces of a .npy dataset")
    parser.add_argument("--split", dest="protocol", choices=("interpolation", "extrapolation", "identity"),
                        help="CoMA protocol of a mesh dataset (default interpolation)")
    parser.add_argument("--fold", help="held-out expression (extrapolation) or subject (identity); 'all' trains "
                                       "every fold into OUT/<fold>/ and writes OUT/folds.md")
    parser.add_argument("--latent", type=int, help="latent size (default: the preset's)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    parser.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default auto: cuda when available)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --out from its last checkpoint with its own "
                             "config.json (only --device and --quiet may be given with it)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    parser.set_defaults(func=run_train)


def config_from_args(args: argparse.Namespace):
    """The preset's config with the command-line overrides applied (each checked by the config classes)."""
    from morphable.config import config_from_dict

    config = PRESETS[args.preset]()
    data = {"path": args.data, "unit": args.unit, "template": args.template, "fold": args.fold}
    if args.protocol is not None:
        data["protocol"] = args.protocol
    train = {name: value for name, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                             ("lr", args.lr), ("device", args.device)) if value is not None}
    model = {"latent": args.latent} if args.latent is not None else {}
    merged = config.to_dict()
    merged["data"].update(data)
    merged["train"].update(train)
    merged["model"].update(model)
    merged["seed"] = args.seed
    config = config_from_dict(merged, source="command line")
    return config


LOOP_OPTIONS = ("epochs", "batch_size", "lr")
CONFIG_OPTIONS = ("data", "unit", "template", "protocol", "fold", "latent", *LOOP_OPTIONS)


def _given(args: argparse.Namespace, names) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None]


def run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from morphable.errors import MorphableError
    from morphable.experiment import family_hooks, open_run, train

    if args.resume:
        overrides = _given(args, CONFIG_OPTIONS) + (["--seed"] if args.seed != 0 else []) + (
            ["--overwrite"] if args.overwrite else [])
        if overrides:
            raise MorphableError(f"--resume continues with the run's own config.json; drop {', '.join(overrides)}")
        _, config = open_run(args.out)
        if config.method != PRESETS[args.preset]().method:
            raise MorphableError(f"{args.out} is a '{config.method}' run, not '{args.preset}'")
        metrics = train(None, args.out, resume=True, progress=not args.quiet,
                        device=None if args.device == "auto" else args.device)
        if metrics:
            print(f"{args.preset}: {family_hooks(config).summary(metrics)}  ->  {args.out}")
        return 0
    if args.data is None:
        raise MorphableError("--data is required (except with --resume)")
    config = config_from_args(args)
    ignored = _given(args, LOOP_OPTIONS) + ([f"--device {args.device}"] if args.device not in ("auto", "cpu") else [])
    if config.spec.training == "closed-form" and ignored:
        raise MorphableError(f"'{args.preset}' is fitted in closed form on the CPU: {', '.join(ignored)} "
                             f"{'does' if len(ignored) == 1 else 'do'} not apply")
    if args.fold == "all":
        if config.family != "explicit":
            raise MorphableError(f"--fold all applies to mesh datasets, not to '{args.preset}'")
        from morphable.explicit.experiment import train_all_folds

        config.data.fold = None
        train_all_folds(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
        print((Path(args.out) / "folds.md").read_text().rstrip())
        return 0
    metrics = train(config, args.out, overwrite=args.overwrite, progress=not args.quiet)
    if not metrics:  # a non-zero rank under torchrun
        return 0
    print(f"{args.preset}: {family_hooks(config).summary(metrics)}  ->  {args.out}")
    return 0
