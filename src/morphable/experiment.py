"""The one run driver for every family: create or resume a run, build data and method, train, evaluate, report.

A run's family (``explicit``, ``implicit``, ``image``; :data:`morphable.config.METHODS`) names the module
``morphable.<family>.experiment``, which supplies five small hooks:

``prepare_data(config) -> data``
    read and validate the data (before anything is written); ``config`` may be completed (e.g. the fold).
``fit(config, run, data, resume, progress) -> dict``
    train into ``run`` (weights, ``log.csv``); returns a summary (parameters, device, best epoch, ...).
``evaluate(run, config, data, **options) -> dict``
    the family's metrics, plots and meshes in ``run`` (rank 0 only); the driver writes ``metrics.json``.
``evaluation_data(config) -> data``
    what ``evaluate`` needs when a finished run is re-evaluated (``prepare_data`` for mesh models, which
    score a test split; nothing for auto-decoders, which are scored on ground-truth meshes).
``summary(metrics) -> str``
    one line for the terminal.
``load(run, device) -> model``
    the trained model of a run folder for the Python API and the verbs (:func:`morphable.load_run`).

The driver owns the life cycle, the same for all families: on ``resume`` the run's ``config.json`` wins and
is read before the data (so the data of the run is what is resumed); under torchrun every rank trains, rank 0
alone creates the folder, evaluates and writes; ``metrics.json`` gets ``fit`` (the hook's summary and the
seconds), ``plots/losses.png`` is drawn from ``log.csv`` and ``report.md`` sums the run up for a person.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from morphable.config import ExperimentConfig, config_from_dict
from morphable.errors import MorphableError
from morphable.runs import LAST_CHECKPOINT, LOG_FILE, REPORT_FILE, Run, process_rank, remove_temporaries


def family_hooks(config: ExperimentConfig) -> ModuleType:
    """The hook module ``morphable.<family>.experiment`` of a config's method."""
    family = config.family
    try:
        return importlib.import_module(f"morphable.{family}.experiment")
    except ModuleNotFoundError as exc:
        if exc.name == f"morphable.{family}.experiment":
            raise MorphableError(f"method '{config.method}': the {family} family cannot be trained yet") from None
        raise


def open_run(path: str | Path) -> tuple[Run, ExperimentConfig]:
    """A run folder and its config (``config.json`` checked against this version's configs)."""
    run = Run.open(path)
    return run, config_from_dict(run.config, str(run.path / "config.json"))


def train(config: ExperimentConfig | None, out: str | Path, overwrite: bool = False, resume: bool = False,
          progress: bool = True, device: str | None = None, tensorboard: bool | None = None) -> dict[str, Any]:
    """Train ``config`` into the run folder ``out`` and evaluate it; returns the metrics (``{}`` on ranks > 0).

    ``resume`` continues the run in ``out`` from its last checkpoint with the run's own ``config.json``
    (``config`` is then not used and may be None), on ``device`` and with ``tensorboard`` when given. The
    temporaries a killed writer left are removed first; a run killed before its first checkpoint (or a
    closed-form fit, which has none) starts over in a fresh folder. A run whose training was complete
    (killed while it was evaluated) is evaluated again.
    """
    if resume:
        run, config = open_run(out)
        if device is not None:
            config.train.device = device
        if tensorboard is not None:
            config.train.tensorboard = tensorboard
        if process_rank() == 0:
            remove_temporaries(run.path)
        resume = (run.path / LAST_CHECKPOINT).exists()
        overwrite = True  # when nothing can be resumed, the folder holds nothing worth keeping
    hooks = family_hooks(config)
    data = hooks.prepare_data(config)
    if config.spec.training == "loop":  # a wrong device is one line before anything is written
        from morphable.train import select_device
        from morphable.train.loop import summary_writer_class

        select_device(config.train.device)
        if config.train.tensorboard:
            summary_writer_class()
    if not resume:
        run = Run.create(out, config.to_dict(), overwrite=overwrite)
    start = time.perf_counter()
    fit_info = hooks.fit(config, run, data, resume=resume, progress=progress)
    if process_rank() != 0:
        return {}
    fit_info = {**fit_info, "seconds": round(time.perf_counter() - start, 3)}
    metrics = hooks.evaluate(run, config, data)
    metrics["fit"] = fit_info
    finish(run, config, metrics, hooks.summary(metrics))
    return metrics


def evaluate(path: str | Path, data: str | None = None, **options: Any) -> dict[str, Any]:
    """Re-evaluate a finished run from its folder: its own test data, or ``data`` (another dataset of the
    family's format); ``options`` go to the family's ``evaluate`` hook (e.g. ``gt`` meshes of implicit runs).
    The training summary of the earlier metrics is kept."""
    run, config = open_run(path)
    if data is not None:
        config.data.path = str(data)
    hooks = family_hooks(config)
    previous = _previous_metrics(run)
    metrics = hooks.evaluate(run, config, hooks.evaluation_data(config), **options)
    if "fit" in previous:
        metrics["fit"] = previous["fit"]
    finish(run, config, metrics, hooks.summary(metrics))
    return metrics


def load_run(path: str | Path, device: str = "auto"):
    """The trained model of a run folder, with its family's operations (see :func:`morphable.load_run`)."""
    run, config = open_run(path)
    return family_hooks(config).load(run, device)


def finish(run: Run, config: ExperimentConfig, metrics: dict[str, Any], summary: str) -> None:
    """Write ``metrics.json``, ``plots/losses.png`` (when the run has a ``log.csv``), ``report.md`` and
    ``report.html`` (:func:`morphable.report.write_report`)."""
    from morphable.viz import loss_curves

    run.write_metrics(metrics)
    plots = []
    if (run.path / LOG_FILE).exists():
        loss_curves(run.path / LOG_FILE, run.file("plots", "losses.png"), title=f"{config.method}: losses")
    if (run.path / "plots").is_dir():
        plots = sorted(p.name for p in (run.path / "plots").glob("*.png"))
    schedule = f"; {config.train.epochs} epochs" if config.spec.training == "loop" else ""
    lines = [f"# {config.method} run `{run.path.name}`", "", summary, "",
             f"Family: {config.family}; data: `{config.data.path}`; seed {config.seed}{schedule} "
             "(config.json has every setting).", ""]
    fit = metrics.get("fit", {})
    if fit:
        lines += ["| training | |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in fit.items()
                                                         if isinstance(v, (int, float, str))] + [""]
    if plots:
        lines += ["Pictures:", ""] + [f"![{name}](plots/{name})" for name in plots] + [""]
    from morphable.io import atomic_path

    with atomic_path(run.path / REPORT_FILE) as tmp:
        tmp.write_text("\n".join(lines))
    from morphable.report import write_report

    write_report(run.path)


def _previous_metrics(run: Run) -> dict[str, Any]:
    """The run's earlier metrics; a missing or broken file is simply replaced."""
    try:
        return run.read_metrics()
    except MorphableError:
        return {}
