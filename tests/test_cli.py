"""The command line: fast help, and bad input -> one line naming the file, exit 2, nothing written."""

import subprocess
import sys

import numpy as np
import pytest
import trimesh

from morphable.cli import main
from morphable.data.registered import write_coma_layout
from morphable.io import write_ply


def test_help_imports_neither_torch_nor_numpy():
    code = ("import sys; from morphable.cli import build_parser; build_parser().format_help(); "
            "bad = [m for m in ('torch', 'numpy', 'scipy', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def _dataset(root):
    sphere = trimesh.creation.icosphere(subdivisions=1)
    rng = np.random.default_rng(0)
    v = (sphere.vertices[None] + 0.01 * rng.standard_normal((24, 42, 3))).astype(np.float32)
    write_coma_layout(root, v, sphere.faces, [f"s{i // 12}" for i in range(24)], [f"e{(i // 4) % 3}" for i in range(24)],
                      [i % 4 for i in range(24)], "m", progress=False)
    return sphere.faces


def _run_expecting_error(capsys, argv, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize("breakage, fragment", [
    ("vertex_count", "vertices, expected 42"),
    ("nan", "NaN"),
    ("truncated", "truncated"),
    ("unreadable", "not a PLY file"),
])
def test_bad_file_in_dataset(tmp_path, capsys, breakage, fragment):
    faces = _dataset(tmp_path / "d")
    bad = tmp_path / "d" / "s1" / "e2" / "0001.ply"
    if breakage == "vertex_count":
        write_ply(bad, np.zeros((10, 3)), faces[:2] % 10)
    elif breakage == "nan":
        v = np.zeros((42, 3))
        v[3, 1] = np.nan
        write_ply(bad, v, faces)
    elif breakage == "truncated":
        bad.write_bytes(bad.read_bytes()[:300])
    else:
        bad.write_bytes(b"\x00\x01 not a mesh")
    _run_expecting_error(capsys, ["data", "info", str(tmp_path / "d")], str(bad), fragment)
    _run_expecting_error(capsys, ["train", "pca", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "run")],
                         str(bad), fragment)
    assert not (tmp_path / "run").exists()


def test_empty_folder_and_unknown_unit(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _run_expecting_error(capsys, ["data", "info", str(tmp_path / "empty"), "--unit", "m"], "no .ply or .obj")
    _dataset(tmp_path / "d")
    (tmp_path / "d" / "dataset.json").write_text('{"unit": "furlong"}')
    _run_expecting_error(capsys, ["train", "pca", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "run")],
                         "dataset.json", "unknown unit 'furlong'")
    assert not (tmp_path / "run").exists()


def test_train_eval_round_trip_and_mismatched_checkpoint(tmp_path, capsys):
    _dataset(tmp_path / "d")
    assert main(["train", "pca", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "run"), "--latent", "3"]) == 0
    out = capsys.readouterr().out
    assert "test mean" in out
    for name in ("config.json", "metrics.json", "model.safetensors", "plots/cumulative_error.png",
                 "plots/test_error_heatmaps.png"):
        assert (tmp_path / "run" / name).exists(), name
    assert main(["eval", str(tmp_path / "run")]) == 0
    other = trimesh.creation.icosphere(subdivisions=2)
    np.save(tmp_path / "other.npy", np.stack([other.vertices] * 12).astype(np.float32))
    write_ply(tmp_path / "template.ply", other.vertices, other.faces)
    (tmp_path / "dataset.json").write_text('{"unit": "m"}')
    _run_expecting_error(capsys, ["eval", str(tmp_path / "run"), "--data", str(tmp_path / "other.npy")],
                         "model.safetensors", "42 vertices")
    _run_expecting_error(capsys, ["eval", str(tmp_path / "nothing")], "not a run folder")
    _run_expecting_error(capsys, ["train", "pca", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "run")],
                         "not empty")


def test_all_folds_table_and_run_comparison(tmp_path, capsys):
    _dataset(tmp_path / "d")
    assert main(["train", "pca", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "folds"), "--latent", "2",
                 "--split", "extrapolation", "--fold", "all", "--quiet"]) == 0
    import json

    table = json.loads((tmp_path / "folds" / "folds.json").read_text())
    assert sorted(table["folds"]) == ["e0", "e1", "e2"] and table["protocol"] == "extrapolation"
    for fold, row in table["folds"].items():
        metrics = json.loads((tmp_path / "folds" / fold / "metrics.json").read_text())
        assert metrics["fold"] == fold and row["mean_mm"] == metrics["mean_mm"]
    assert main(["eval", str(tmp_path / "folds"), "--folds"]) == 0
    assert "| e1 |" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "folds" / "e0"), "--compare", str(tmp_path / "folds" / "e1")]) == 0
    assert (tmp_path / "folds" / "e0" / "plots" / "compare_cumulative_error.png").exists()
    assert (tmp_path / "folds" / "e0" / "plots" / "latent_interpolation.png").exists()
