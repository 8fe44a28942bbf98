"""Multi-stage training as data (thesis 4.2.4): which objectives are off from which epoch on.

A schedule is the list ``ImplicitConfig.stages`` of ``{"start": epoch, "off": [loss names]}`` (JSON in
``config.json``): stage ``k`` runs from epoch ``start_k`` (0-based, the first stage starts at 0) to the next
stage's start, with the objectives named in its ``off`` list switched off (weight 0; names are
:class:`~morphable.implicit.losses.LossWeights` fields). Each stage lists every objective it switches off,
not only the new ones. An empty schedule is one stage with everything on. The thesis' schedule: all
objectives up to epoch 5000, then without the 2D objectives for 3000 epochs, then also without the explicit
density, tri-plane and total-variation regularisers until the end (12-15k epochs):
:func:`thesis_schedule`. The stage of an epoch is a function of the epoch alone, so a run resumed at any
epoch, a stage boundary included, trains what an uninterrupted run did. Torch-free (used by the configs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from morphable.errors import MorphableError

TWO_D = ("normal_map", "generator", "discriminator")
"""The 2D objectives (4.6, 4.8-4.11)."""
PLANE_REGULARISERS = ("density", "triplane", "total_variation")
"""edr, tp and tv (4.5, 4.13, 4.14): off in the thesis' third stage."""


@dataclass(frozen=True)
class Stage:
    """Stage from epoch ``start`` (0-based) on, with the objectives ``off`` switched off."""

    start: int
    off: tuple[str, ...] = ()


def thesis_schedule(two_d_until: int, regularisers_until: int) -> list[dict[str, Any]]:
    """The three stages of 4.2.4 as config data: everything before ``two_d_until`` (thesis 5000), no 2D
    objectives before ``regularisers_until`` (8000), then no 2D objectives and no edr / tp / tv."""
    return [{"start": 0, "off": []}, {"start": two_d_until, "off": list(TWO_D)},
            {"start": regularisers_until, "off": [*TWO_D, *PLANE_REGULARISERS]}]


def parse_stages(entries: Sequence[Any], option: str = "model.stages") -> list[Stage]:
    """Check a schedule (see the module docstring) and return its stages; an empty one is one stage.

    Raises a one-line :class:`MorphableError` naming ``option`` for anything but a list of
    ``{"start": int, "off": [str]}`` with the first start 0 and strictly increasing starts."""
    if not isinstance(entries, (list, tuple)):
        raise MorphableError(f"{option} must be a list of {{'start': epoch, 'off': [losses]}}, got {entries!r}")
    stages = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"start", "off"}:
            raise MorphableError(f"{option}[{k}] must be {{'start': epoch, 'off': [losses]}}, got {entry!r}")
        start, off = entry["start"], entry["off"]
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise MorphableError(f"{option}[{k}].start must be an epoch (an integer >= 0), got {start!r}")
        if not isinstance(off, (list, tuple)) or not all(isinstance(name, str) for name in off):
            raise MorphableError(f"{option}[{k}].off must be a list of loss names, got {off!r}")
        stages.append(Stage(start, tuple(off)))
    if not stages:
        return [Stage(0)]
    if stages[0].start != 0:
        raise MorphableError(f"{option}[0].start must be 0 (the first stage starts the run), got {stages[0].start}")
    for k in range(1, len(stages)):
        if stages[k].start <= stages[k - 1].start:
            raise MorphableError(f"{option}: stage starts must increase, got {stages[k - 1].start} then "
                                 f"{stages[k].start}")
    return stages


def stage_index(stages: Sequence[Stage], epoch: int) -> int:
    """The stage of ``epoch`` (0-based): the last stage whose start is at most ``epoch``."""
    return max(k for k, stage in enumerate(stages) if stage.start <= epoch)


def describe_stage(stages: Sequence[Stage], k: int) -> str:
    """One line for the log, e.g. ``stage 1 of 0-2 from epoch 5001: off normal_map, generator, discriminator``
    (stages 0-based like the ``stage`` column of log.csv, epochs from 1 like its ``epoch`` column)."""
    off = ", ".join(stages[k].off) if stages[k].off else "nothing"
    return f"stage {k} of 0-{len(stages) - 1} from epoch {stages[k].start + 1}: off {off}"
