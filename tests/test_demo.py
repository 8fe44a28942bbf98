"""`morphable demo` end to end on a tiny setting, and `morphable data synth` through the CLI."""

import json

import numpy as np

from morphable.cli import main
from morphable.data.registered import load_registered


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--subjects", "3", "--expressions", "4", "--frames", "3"]) == 0
    printed = capsys.readouterr().out
    assert "PCA (latent 8)" in printed and "Neural3DMM (latent 8, 20 epochs)" in printed and "report:" in printed
    report = json.loads((out / "report.json").read_text())
    pca = [r["mean_mm"] for r in report["results"] if r["preset"] == "pca"]
    assert all(np.isfinite(pca)) and pca[0] > pca[-1] > 0  # more components, lower error
    network = report["results"][-1]
    assert network["preset"] == "neural3dmm-simple" and network["latent"] == 8 and np.isfinite(network["mean_mm"])
    change = 100 * (network["mean_mm"] / report["results"][1]["mean_mm"] - 1)
    lesson = (out / "report.md").read_text()
    assert f"{abs(change):.0f} % {'lower' if change < 0 else 'higher'} than PCA's" in lesson
    for name in ("report.md", "cumulative_error.png", "data/preview.png", "runs/pca-8/metrics.json",
                 "runs/pca-8/plots/test_error_heatmaps.png", "runs/neural3dmm-simple/metrics.json"):
        assert (out / name).exists(), name
    assert list((out / "runs" / "pca-8" / "meshes").glob("test_*_error.ply"))
    assert main(["demo", "--out", str(out), "--subjects", "3"]) == 2  # refuses to overwrite


def test_demo_pca_only_and_bad_epochs(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--subjects", "2", "--expressions", "2", "--frames", "3",
                 "--network-epochs", "0"]) == 0
    report = json.loads((tmp_path / "d" / "report.json").read_text())
    assert [r["preset"] for r in report["results"]] == ["pca"] * 4
    assert "Only PCA was fitted" in (tmp_path / "d" / "report.md").read_text()
    assert main(["demo", "--out", str(tmp_path / "e"), "--network-epochs", "-1"]) == 2
    assert "--network-epochs must be 0 or more" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_synth_command_writes_a_valid_dataset(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "s"), "--subjects", "2", "--expressions", "3",
                 "--frames", "4", "--seed", "5"]) == 0
    ds = load_registered(tmp_path / "s")
    assert len(ds) == 24 and ds.unit == "m"
    assert sorted(set(ds.expressions)) == ["bareteeth", "cheeks_in", "eyebrow"]
    assert main(["data", "info", str(tmp_path / "s")]) == 0
    assert "meshes      24" in capsys.readouterr().out
