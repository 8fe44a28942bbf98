"""Run folders: ``config.json`` (with provenance), ``metrics.json``, weights, plots and meshes.

A run folder holds::

    config.json        the ExperimentConfig plus package version, git commit, command line, time
    metrics.json       {"mean_mm", "std_mm", "median_mm", ..., "splits": {...}}
    model.safetensors  weights (never pickle)
    last.safetensors   everything a resume needs (trained models only)
    log.csv            one row per training epoch (losses, learning rates, seconds)
    report.md          written last: the run is complete
    plots/             PNGs for people (error curves, heat maps)
    meshes/            PLY meshes coloured by error

All files are written atomically (a temporary ``.NAME.*.tmp`` beside the file, then a rename), so a process
killed at any moment leaves every file whole or absent, plus at most some temporaries, which
:func:`remove_temporaries` clears. A folder with no resumable checkpoint and no report (killed before its
first checkpoint, or a closed-form fit killed before its report) is *unfinished*: it holds nothing worth
keeping, and :meth:`Run.create` replaces it when the config is the same.
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from morphable import __version__
from morphable.errors import input_error
from morphable.io import check_output_folder, read_json, write_json

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "model.safetensors"
LOG_FILE = "log.csv"
LAST_CHECKPOINT = "last.safetensors"
REPORT_FILE = "report.md"
TEMPORARY = ".*.tmp"
HOW_TRAINED = ("train.device", "train.tensorboard")  # config entries that change how a run trains, not what it learns


def git_commit() -> str:
    """The commit of the package's source checkout, or "" when it is not a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance() -> dict[str, str]:
    return {
        "morphable_version": __version__,
        "git_commit": git_commit(),
        "command": " ".join(sys.argv),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "host": platform.node(),
    }


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted names of the entries in which the nested dicts ``a`` and ``b`` differ (``train.epochs``)."""
    names = []
    for key in sorted(set(a) | set(b), key=str):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            names += config_differences(x, y, f"{prefix}{key}.")
        elif x != y:
            names.append(f"{prefix}{key}")
    return names


def remove_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries (``.NAME.*.tmp`` files and folders) left anywhere in ``path`` by a killed
    writer; returns what was removed."""
    found = sorted(Path(path).rglob(TEMPORARY), key=lambda p: len(p.parts))  # outer first
    removed = []
    for p in found:
        if not (p.exists() or p.is_symlink()):  # inside a temporary folder removed before
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
        removed.append(p)
    return removed


def is_unfinished(path: str | os.PathLike) -> bool:
    """Whether the folder holds nothing a user may want: no resumable checkpoint and no report (see the
    module docstring); a folder holding only temporaries counts too."""
    path = Path(path)
    if (path / LAST_CHECKPOINT).exists() or (path / REPORT_FILE).exists():
        return False
    return (path / CONFIG_FILE).exists() or all(p.match(TEMPORARY) for p in path.iterdir())


def process_rank() -> int:
    """Rank of this process under torchrun (``RANK``); 0 when it was not launched by torchrun."""
    return int(os.environ.get("RANK", "0"))


class Run:
    """A run folder; create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, path: str | os.PathLike, config: dict):
        self.path = Path(path)
        self.config = config

    @classmethod
    def create(cls, path: str | os.PathLike, config: dict, overwrite: bool = False) -> "Run":
        """Make the folder and write ``config.json``; refuses a non-empty folder unless ``overwrite``, which
        replaces an existing run folder (and refuses any other non-empty folder). An unfinished run folder
        (:func:`is_unfinished`) is replaced without ``overwrite`` when its config equals ``config`` (the
        provenance and :data:`HOW_TRAINED` aside); a different config is refused naming the fields.

        Under torchrun only rank 0 creates and writes the folder; the other ranks get the same ``Run``
        without touching the disk."""
        path = Path(path)
        if process_rank() != 0:
            return cls(path, config)
        if path.is_dir() and not overwrite and is_unfinished(path):
            if (path / CONFIG_FILE).exists():
                old = {k: v for k, v in read_json(path / CONFIG_FILE).items() if k != "provenance"}
                differ = [name for name in config_differences(old, config) if name not in HOW_TRAINED]
                if differ:
                    raise input_error(path, f"holds an unfinished run with another config ({', '.join(differ)} "
                                            "differ); use --overwrite to replace it")
            overwrite = True
        check_output_folder(path, overwrite, "use --overwrite or --resume")
        if path.is_dir() and any(path.iterdir()):  # --overwrite: the old run goes, nothing of it is mixed in
            if not (path / CONFIG_FILE).exists() and not is_unfinished(path):
                raise input_error(path, f"exists, is not empty and is not a run folder (no {CONFIG_FILE}); "
                                        "--overwrite replaces run folders only")
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        full = {**config, "provenance": provenance()}
        write_json(path / CONFIG_FILE, full)
        return cls(path, full)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Run":
        path = Path(path)
        if not (path / CONFIG_FILE).exists():
            raise input_error(path, f"not a run folder (no {CONFIG_FILE})")
        return cls(path, read_json(path / CONFIG_FILE))

    def file(self, *parts: str) -> Path:
        """Path of a file in the run; parent folders are created."""
        p = self.path.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS_FILE

    def trained_config(self, family: str):
        """The run's :class:`~morphable.config.ExperimentConfig`, refused (one line naming the run) unless it is
        of ``family`` and has weights: what every family's ``load`` checks first."""
        from morphable.config import config_from_dict

        config = config_from_dict(self.config, str(self.path / "config.json"))
        if config.family != family:
            raise input_error(self.path, f"run is a '{config.method}' model, not an {family} one")
        if not self.weights_path.exists():
            raise input_error(self.path, f"run has no weights ({self.weights_path.name})")
        return config

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.path / METRICS_FILE, metrics)

    def read_metrics(self) -> dict[str, Any]:
        return read_json(self.path / METRICS_FILE)
