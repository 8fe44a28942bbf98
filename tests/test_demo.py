"""`morphable demo` end to end on a tiny setting, and `morphable data synth` through the CLI."""

import json

import numpy as np

from morphable.cli import main
from morphable.data.registered import load_registered


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--subjects", "3", "--expressions", "4", "--frames", "3"]) == 0
    printed = capsys.readouterr().out
    assert "PCA (latent 8)" in printed and "report:" in printed
    report = json.loads((out / "report.json").read_text())
    errors = [r["mean_mm"] for r in report["results"]]
    assert all(np.isfinite(errors)) and errors[0] > errors[-1] > 0  # more components, lower error
    for name in ("report.md", "cumulative_error.png", "data/preview.png", "runs/pca-8/metrics.json",
                 "runs/pca-8/plots/test_error_heatmaps.png"):
        assert (out / name).exists(), name
    assert list((out / "runs" / "pca-8" / "meshes").glob("test_*_error.ply"))
    assert main(["demo", "--out", str(out), "--subjects", "3"]) == 2  # refuses to overwrite


def test_synth_command_writes_a_valid_dataset(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--subjects", "2", "--expressions", "3",
                 "--frames", "4", "--seed", "5"]) == 0
    ds = load_registered(tmp_path / "s")
    assert len(ds) == 24 and ds.unit == "m"
    assert sorted(set(ds.expressions)) == ["bareteeth", "cheeks_in", "eyebrow"]
    assert main(["data", "info", str(tmp_path / "s")]) == 0
    assert "meshes      24" in capsys.readouterr().out
