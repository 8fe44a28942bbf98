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
    parser.add_argument("--data", help="registered meshes (folder or (N, V, 3) .npy), an SDF dataset "
                                        "('morphable data sdf') or a photo dataset ('morphable data photos', vrn "
                                        "and hrn presets); may be left out with --resume")
    parser.add_argument("--out", required=True, help="run folder to create")
    parser.add_argument("--unit", help="unit when a mesh dataset has no dataset.json: m, cm, mm or millimetres "
                                        "per unit (e.g. 250 when 1 unit = 25 cm)")
    parser.add_argument("--template", help="mesh with the faces of a .npy dataset")
    parser.add_argument("--split", dest="protocol", choices=("interpolation", "extrapolation", "identity"),
                        help="CoMA protocol of a mesh dataset (default interpolation)")
    parser.add_argument("--fold", help="held-out expression (extrapolation) or subject (identity); 'all' trains "
                                       "every fold into OUT/<fold>/ and writes OUT/folds.md")
    parser.add_argument("--identity", help="expression presets: the identity run (npm / triplane, trained on the "
                                           "deformation data's identity/ folder) whose heads the field deforms")
    parser.add_argument("--latent", type=int, help="latent size (default: the preset's)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the preset's)")
    parser.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default auto: cuda when available)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in --out from its last checkpoint: give the options of "
                             "the original command (data options left out keep the run's); a larger --epochs "
                             "extends the run, any other difference is refused. A run killed before its first "
                             "checkpoint starts over")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write the log.csv scalars to OUT/tensorboard/ (needs the 'tensorboard' extra)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    parser.set_defaults(func=run_train)


def config_from_args(args: argparse.Namespace, data_defaults: dict | None = None):
    """The preset's config with the command-line overrides applied (each checked by the config classes);
    the data options left out take their values from ``data_defaults`` when given (a resumed run's)."""
    import os

    from morphable.config import config_from_dict
    from morphable.errors import MorphableError

    config = PRESETS[args.preset]()
    data = {"path": args.data, "unit": args.unit, "template": args.template, "fold": args.fold,
            "protocol": args.protocol}
    if data_defaults is not None:
        data = {k: data_defaults[k] if v is None else v for k, v in data.items()}
    if data["protocol"] is None:
        del data["protocol"]
    train = {name: value for name, value in (("epochs", args.epochs), ("batch_size", args.batch_size),
                                             ("lr", args.lr), ("device", args.device)) if value is not None}
    train["tensorboard"] = args.tensorboard
    model = {"latent": args.latent} if args.latent is not None else {}
    if args.identity is not None:
        if config.method != "expression":
            raise MorphableError(f"--identity applies to expression presets, not to '{args.preset}'")
        model["identity"] = os.path.abspath(args.identity)
    merged = config.to_dict()
    merged["data"].update(data)
    merged["train"].update(train)
    merged["model"].update(model)
    merged["seed"] = args.seed
    config = config_from_dict(merged, source="command line")
    return config


LOOP_OPTIONS = ("epochs", "batch_size", "lr")


def _given(args: argparse.Namespace, names) -> list[str]:
    return [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None]


def check_resume(args: argparse.Namespace, run) -> None:
    """Compare the command line with the run's ``config.json``: equal, or only a larger ``--epochs`` (then
    written to ``config.json``: the run is extended); any other difference is refused naming the fields.
    ``--device`` and ``--tensorboard`` may change."""
    import os

    from morphable.errors import MorphableError
    from morphable.io import write_json
    from morphable.runs import CONFIG_FILE, HOW_TRAINED, config_differences

    stored = {k: v for k, v in run.config.items() if k != "provenance"}
    given = config_from_args(args, stored["data"]).to_dict()
    if args.identity is None and "identity" in stored["model"]:
        given["model"]["identity"] = stored["model"]["identity"]
    if given["data"]["path"] and os.path.abspath(given["data"]["path"]) == os.path.abspath(stored["data"]["path"]):
        given["data"]["path"] = stored["data"]["path"]
    differ = [name for name in config_differences(stored, given) if name not in HOW_TRAINED]
    if differ == ["train.epochs"] and given["train"]["epochs"] > stored["train"]["epochs"]:
        write_json(run.path / CONFIG_FILE, {**run.config, "train": {**run.config["train"],
                                                                     "epochs": given["train"]["epochs"]}})
    elif differ:
        def value(d: dict, name: str):
            for key in name.split("."):
                d = d.get(key) if isinstance(d, dict) else None
            return d

        shown = ", ".join(f"{n} (run {value(stored, n)!r}, command line {value(given, n)!r})" for n in differ)
        raise MorphableError(f"{run.path}: --resume continues the same run, but the command line differs from its "
                             f"{CONFIG_FILE} in {shown}; only a larger --epochs may extend it")


def run_train(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from morphable.errors import MorphableError
    from morphable.experiment import family_hooks, open_run, train
    from morphable.runs import CONFIG_FILE

    if args.resume and args.overwrite:
        raise MorphableError("--resume continues a run, --overwrite replaces it: give one of them")
    if args.resume and args.fold == "all":
        raise MorphableError("--resume takes the run folder of one fold (OUT/<fold>), not --fold all")
    if args.resume and (Path(args.out) / CONFIG_FILE).exists():
        run, config = open_run(args.out)
        if config.method != PRESETS[args.preset]().method:
            raise MorphableError(f"{args.out} is a '{config.method}' run, not '{args.preset}'")
        check_resume(args, run)
        metrics = train(None, args.out, resume=True, progress=not args.quiet,
                        device=None if args.device == "auto" else args.device,
                        tensorboard=True if args.tensorboard else None)
        if metrics:
            print(f"{args.preset}: {family_hooks(config).summary(metrics)}  ->  {args.out}")
        return 0
    if args.data is None:
        raise MorphableError(f"{args.out}: nothing to resume (no {CONFIG_FILE}); give --data to start the run"
                             if args.resume else "--data is required (except with --resume)")
    if args.resume:
        print(f"{args.out}: nothing to resume (no {CONFIG_FILE}); starting the run", file=sys.stderr)
    config = config_from_args(args)
    ignored = _given(args, LOOP_OPTIONS) + ([f"--device {args.device}"] if args.device not in ("auto", "cpu") else [])
    ignored += ["--tensorboard"] if args.tensorboard else []
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
