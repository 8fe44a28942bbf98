"""Killed runs resume exactly; ``--resume`` compares the command line with the run; unfinished runs restart.

A run is killed (``os._exit(137)``: no clean-up, no ``finally``, like SIGKILL) at a chosen moment by a
child process that patches one function before it runs ``morphable train``: before the first checkpoint
(in the first ``save_checkpoint``, after epoch 1's log row), mid-run while ``last.safetensors`` is half
written (a truncated temporary is left), and while the loss curves are plotted (after ``metrics.json``).
``--resume`` must then end with the files of an uninterrupted run: every tensor of both checkpoints,
``log.csv`` (each epoch once; timings aside) and ``metrics.json`` (timings aside), and no temporaries.
"""

from __future__ import annotations

import csv
import json
import re
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_faces
from morphable.cli import main
from morphable.io import load_weights
from morphable.runs import LAST_CHECKPOINT, LOG_FILE, METRICS_FILE, WEIGHTS_FILE, remove_temporaries

EPOCHS = 5
SRC = Path(__file__).resolve().parents[1] / "src"

# Each kill runs in a child: ``ARGS`` is the command line, the prelude patches one function to die.
KILLS = {
    "before-first-checkpoint": """
        import morphable.train.loop as loop
        loop.save_checkpoint = lambda *a, **k: os._exit(137)
    """,
    "writing-checkpoint": """
        import safetensors.torch as st
        save, calls = st.save_file, []
        def save_file(tensors, path, metadata=None):
            calls.extend([path] if os.path.basename(path).startswith(".last.safetensors.") else [])
            if len(calls) == 3:  # epoch 3's last.safetensors: half of it, then death
                save(tensors, path, metadata=metadata)
                data = open(path, "rb").read()
                open(path, "wb").write(data[: len(data) // 2])
                os._exit(137)
            save(tensors, path, metadata=metadata)
        st.save_file = save_file
    """,
    "plotting": """
        import morphable.viz as viz
        viz.loss_curves = lambda *a, **k: os._exit(137)
    """,
}


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "coma", "--data", str(data), "--out", str(out), "--epochs", str(EPOCHS), "--batch-size", "4",
            "--device", "cpu", "--quiet", *extra]


def killed(args: list[str], prelude: str) -> int:
    """Run ``morphable`` with ``args`` in a child that ``prelude`` makes die; its exit status."""
    code = "import os, sys\n" + textwrap.dedent(prelude) + "\nfrom morphable.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, timeout=120).returncode


def without_timings(obj):
    """``obj`` with every ``seconds`` entry removed (nested dicts)."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k != "seconds"}
    return obj


def log_rows(run: Path) -> list[dict[str, str]]:
    with open(run / LOG_FILE, newline="") as f:
        return [without_timings(row) for row in csv.DictReader(f)]


def assert_same_run(run: Path, reference: Path) -> None:
    for name in (WEIGHTS_FILE, LAST_CHECKPOINT):
        got, got_meta = load_weights(run / name)
        want, want_meta = load_weights(reference / name)
        assert sorted(got) == sorted(want)
        for key in want:
            assert np.array_equal(got[key].numpy(), want[key].numpy()), f"{name}: {key} differs"
        assert got_meta == want_meta
    assert log_rows(run) == log_rows(reference)
    assert [int(r["epoch"]) for r in log_rows(run)] == list(range(1, EPOCHS + 1))
    assert without_timings(json.loads((run / METRICS_FILE).read_text())) == \
        without_timings(json.loads((reference / METRICS_FILE).read_text()))
    assert not list(run.rglob(".*.tmp"))


def assert_refused(args: list[str], capsys, pattern: str) -> None:
    """``morphable ARGS`` fails with one error line matching ``pattern``."""
    capsys.readouterr()
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), lines


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    return write_tiny_faces(tmp_path_factory.mktemp("resume") / "faces")


@pytest.fixture(scope="module")
def reference(faces, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    assert main(train_args(faces, out)) == 0
    return out


@pytest.mark.parametrize("moment", sorted(KILLS))
def test_killed_run_resumes_exactly(moment, faces, reference, tmp_path):
    out = tmp_path / "run"
    assert killed(train_args(faces, out), KILLS[moment]) == 137
    if moment == "before-first-checkpoint":
        assert not (out / LAST_CHECKPOINT).exists() and len(log_rows(out)) == 1
    if moment == "writing-checkpoint":
        assert list(out.glob(f".{LAST_CHECKPOINT}.*.tmp")) and len(log_rows(out)) == 3
    if moment == "plotting":
        assert (out / METRICS_FILE).exists() and not (out / "report.md").exists()
    assert main(train_args(faces, out, "--resume")) == 0
    assert_same_run(out, reference)


def test_unfinished_run_restarts_without_overwrite(faces, reference, tmp_path, capsys):
    out = tmp_path / "run"
    assert killed(train_args(faces, out), KILLS["before-first-checkpoint"]) == 137
    assert_refused(train_args(faces, out, "--lr", "0.01"), capsys, r"another config \(train\.lr differ\)")
    assert main(train_args(faces, out)) == 0
    assert_same_run(out, reference)
    assert_refused(train_args(faces, out), capsys, "not empty")


def test_resume_before_the_folder_exists_starts_the_run(faces, reference, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(faces, out, "--resume")) == 0
    assert_same_run(out, reference)
    assert_refused(["train", "coma", "--out", str(tmp_path / "none"), "--resume"], capsys, "nothing to resume")


def test_resume_compares_the_command_line(faces, reference, tmp_path, capsys):
    out = tmp_path / "run"
    assert killed(train_args(faces, out), KILLS["plotting"]) == 137
    assert_refused(train_args(faces, out, "--resume", "--latent", "4", "--seed", "1"), capsys,
                   r"in model\.latent \(run 8, command line 4\), seed \(run 0, command line 1\); only a larger --epochs")
    assert_refused([*train_args(faces, out, "--resume"), "--epochs", "3"], capsys,
                   r"train\.epochs \(run 5, command line 3\)")
    assert_refused(train_args(faces, out, "--resume", "--overwrite"), capsys, "give one of them")
    assert main(["train", "coma", "--out", str(out), "--epochs", str(EPOCHS), "--batch-size", "4", "--resume",
                 "--quiet"]) == 0  # --data left out: the run's
    assert_same_run(out, reference)
    assert main(["train", "coma", "--out", str(out), "--epochs", "7", "--batch-size", "4", "--resume", "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 7
    rows = log_rows(out)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 8)) and rows[:EPOCHS] == log_rows(reference)


def test_overwrite_replaces_every_file(faces, reference, tmp_path):
    out = tmp_path / "run"
    assert main(train_args(faces, out)) == 0
    (out / "stray.txt").write_text("old")
    assert main([*train_args(faces, out, "--overwrite"), "--epochs", "2"]) == 0
    assert not (out / "stray.txt").exists() and [int(r["epoch"]) for r in log_rows(out)] == [1, 2]


def test_remove_temporaries(tmp_path):
    (tmp_path / "plots").mkdir()
    debris = [tmp_path / ".a.json.x1.tmp", tmp_path / "plots" / ".losses.png.x2.tmp"]
    for p in debris:
        p.write_text("half")
    (tmp_path / ".meshes.x3.tmp").mkdir()
    (tmp_path / ".meshes.x3.tmp" / ".inner.x4.tmp").write_text("half")
    keep = [tmp_path / "a.json", tmp_path / "plots" / "losses.png", tmp_path / ".hidden"]
    for p in keep:
        p.write_text("whole")
    removed = remove_temporaries(tmp_path)
    assert sorted(removed) == sorted([*debris, tmp_path / ".meshes.x3.tmp"])
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == sorted(keep)


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize("family", ["explicit", "implicit"])
def test_tensorboard_holds_the_log_scalars(family, faces, sdf_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package cannot be installed here")
    out = tmp_path / "run"
    args = (train_args(faces, out, "--tensorboard") if family == "explicit" else
            ["train", "npm-small", "--data", str(sdf_dir), "--out", str(out), "--epochs", "3", "--quiet",
             "--device", "cpu", "--tensorboard"])
    assert main(args) == 0
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    scalars = _scalars(out / "tensorboard")
    with open(out / LOG_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [c for c in rows[0] if c not in ("epoch", "seconds")]
    assert sorted(scalars) == sorted(columns) and any(c.startswith("lr_") for c in columns) and "stage" in columns
    for name in columns:
        assert [step for step, _ in scalars[name]] == [int(r["epoch"]) for r in rows]
        np.testing.assert_allclose([v for _, v in scalars[name]], [float(r[name]) for r in rows], rtol=1e-6)
