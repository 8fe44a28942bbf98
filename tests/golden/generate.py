"""Seeded tiny runs of every family through the command line, reduced to the numbers a move must keep.

``python tests/golden/generate.py OUT.json`` writes the golden file; ``tests/test_golden.py`` runs the same
runs and compares. The runs go through ``morphable.cli.main`` only, so the same script measured the code
before and after a refactoring (the commit it was made at is stored in the file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MESH_KEYS = ("mean_mm", "std_mm", "median_mm")
EXPLICIT_RUNS = {
    "pca": ["--latent", "4"],
    "coma": ["--epochs", "2", "--batch-size", "4", "--latent", "4"],
    "spiralnet++": ["--epochs", "2", "--batch-size", "4", "--latent", "4"],
}
IMPLICIT_RUNS = {"npm-small": ["--epochs", "2"]}


def _cli(*argv: str) -> None:
    from morphable.cli import main

    code = main(list(argv))
    if code != 0:
        raise RuntimeError(f"morphable {' '.join(argv)} exited {code}")


def golden_runs(work: Path) -> dict[str, dict[str, float]]:
    """Train every golden run in ``work``; returns ``{preset: {metric: value}}``."""
    faces = work / "faces"
    _cli("data", "synth", "--out", str(faces), "--subjects", "3", "--expressions", "2", "--frames", "20")
    results: dict[str, dict[str, float]] = {}
    for preset, extra in EXPLICIT_RUNS.items():
        out = work / preset
        _cli("train", preset, "--data", str(faces), "--out", str(out), "--quiet", "--device", "cpu", *extra)
        metrics = json.loads((out / "metrics.json").read_text())
        results[preset] = {k: metrics[k] for k in MESH_KEYS}
    heads = work / "heads"
    heads.mkdir()
    sources = sorted(faces.glob("*/*/0000.ply"))[:2]
    for i, src in enumerate(sources):
        (heads / f"head{i}.ply").write_bytes(src.read_bytes())
    sdf = work / "sdf"
    _cli("data", "sdf", str(heads), "--out", str(sdf), "--unit", "m", "--n-surface", "2000", "--n-near", "2000",
         "--n-ball", "1000")
    for preset, extra in IMPLICIT_RUNS.items():
        out = work / preset
        _cli("train", preset, "--data", str(sdf), "--out", str(out), "--quiet", "--device", "cpu", *extra)
        with open(out / "log.csv") as f:
            header, *rows = [line.strip().split(",") for line in f if line.strip()]
        last = dict(zip(header, rows[-1]))
        results[preset] = {k: float(v) for k, v in last.items() if k.startswith("train_")}
    return results


def main() -> int:
    out = Path(sys.argv[1])
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        results = golden_runs(Path(tmp))
    out.write_text(json.dumps({"commit": commit, "runs": results}, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
