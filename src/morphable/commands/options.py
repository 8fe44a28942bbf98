"""Options and checks shared by the verbs, so that a name means the same everywhere.

``--n`` is a count of outputs, ``--steps`` only ever optimiser steps, ``--res`` a grid resolution per axis,
``--device`` defaults to ``auto`` (CUDA when present), ``--overwrite`` is needed to write into an existing,
non-empty folder (nothing is ever merged into old results silently).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_run(parser: argparse.ArgumentParser, what: str = "a trained model") -> None:
    parser.add_argument("run", help=f"run folder of 'morphable train' ({what})")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default auto: cuda when available)")


def add_output_folder(parser: argparse.ArgumentParser, contents: str) -> None:
    parser.add_argument("--out", required=True, help=f"output folder to create ({contents})")
    parser.add_argument("--overwrite", action="store_true", help="write into an existing, non-empty --out")


def add_resolution(parser: argparse.ArgumentParser, default: int | None) -> None:
    """``--res``; verbs that also take mesh-model runs pass ``None`` and refuse it there."""
    parser.add_argument("--res", type=int, default=default,
                        help=f"extraction grid resolution per axis, implicit runs only (default "
                             f"{default or 'that of the verb: 256 for eval, 128 for sample and interpolate'})")


def add_ground_truth(parser: argparse.ArgumentParser, many: bool = False) -> None:
    """``--gt``, ``--region-vertices`` and ``--metric-samples`` of the verbs that score surfaces."""
    if many:
        parser.add_argument("--gt", nargs="+", default=[], metavar="MESH",
                            help="ground-truth meshes named like training shapes (implicit runs): face/head "
                                 "Chamfer-L1, normal consistency, F-score@1mm")
    else:
        parser.add_argument("--gt", help="ground-truth mesh: face/head Chamfer-L1, normal consistency, F-score@1mm")
    parser.add_argument("--region-vertices", type=int,
                        help="gt vertices 0..N-1 are the face region (ICT-FaceKit: 9409; default: all)")
    parser.add_argument("--metric-samples", type=int,
                        help="surface samples per mesh for the metrics (default: morphable.metrics.METRIC_SAMPLES, "
                             "one million; fewer raise their floor)")


def metric_samples(n: int | None) -> int:
    """``--metric-samples`` checked, with the package default when not given."""
    from morphable.errors import MorphableError
    from morphable.metrics import METRIC_SAMPLES

    if n is None:
        return METRIC_SAMPLES
    if n < 1000:
        raise MorphableError(f"--metric-samples must be at least 1000, got {n}")
    return n


def output_folder(path: str, overwrite: bool) -> Path:
    """``--out`` checked before any work (:func:`morphable.io.check_output_folder`)."""
    from morphable.io import check_output_folder

    return check_output_folder(path, overwrite)


def require_family(run: str, family: str, verb: str, hint: str):
    """The config of run folder ``run``, refused in one line unless its family is ``family``."""
    from morphable.errors import input_error
    from morphable.experiment import open_run

    _, config = open_run(run)
    if config.family != family:
        raise input_error(run, f"is a '{config.method}' run: {verb} applies to {family} runs ({hint})")
    return config


def refuse_implicit_options(args: argparse.Namespace, config, names: tuple[str, ...] = ("res",)) -> None:
    """One line when an option that only implicit runs use (``--res``, ...) was given for another run."""
    from morphable.errors import MorphableError

    given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) not in (None, [])]
    if given and config.family != "implicit":
        raise MorphableError(f"{', '.join(given)} apply to implicit runs; {args.run} is a '{config.method}' run")


def add_output_file(parser: argparse.ArgumentParser, contents: str) -> None:
    parser.add_argument("--out", required=True, help=f"output file ({contents})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def output_file(path: str, overwrite: bool, suffix: str | None = None) -> Path:
    """``--out`` file checked before any work: an existing file needs ``--overwrite``; ``suffix`` is required."""
    from morphable.errors import input_error

    out = Path(path)
    if suffix is not None and out.suffix.lower() != suffix:
        raise input_error(out, f"is written as {suffix}; give a file name ending in {suffix}")
    if out.is_dir():
        raise input_error(out, "is a folder")
    if out.exists() and not overwrite:
        raise input_error(out, "exists (use --overwrite)")
    return out
