"""``report.html`` of a PCA run and an implicit (npm-small) run, opened in headless Chromium.

The page is loaded as ``report.html#selftest``: after drawing, it reads every canvas back, calls
``window.rotateView(60, 30)`` and reads again, and writes the fractions into ``<pre id="selftest">``;
Chromium's ``--dump-dom`` returns the page after its scripts ran. Without a browser the browser tests skip,
unless ``MORPHABLE_REQUIRE_BROWSER=1`` (as in ``.ci/run``), which makes the missing browser a failure.
"""

import base64
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from morphable.cli import main

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]  # WebGL on the CPU


def browser() -> str:
    """The Chromium executable, or a skip (a failure under ``MORPHABLE_REQUIRE_BROWSER=1``)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "no chromium on PATH (Debian: apt-get install chromium)"
        if os.environ.get("MORPHABLE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MORPHABLE_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return found


def open_report(path: Path) -> dict:
    """The self-test result of a report page in headless Chromium: ``errors``, ``canvases``."""
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([browser(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                              "--dump-dom", f"{path.resolve().as_uri()}#selftest"],
                             capture_output=True, text=True, timeout=120, check=False)
    errors = re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', out.stdout, re.DOTALL)
    assert errors is not None, f"the page did not load: {out.stderr[-2000:]}"
    assert errors.group(1) == "", f"JavaScript errors: {html.unescape(errors.group(1))}"
    result = re.search(r'<pre id="selftest">(.*?)</pre>', out.stdout, re.DOTALL)
    assert result is not None, "the self-test did not run"
    return json.loads(html.unescape(result.group(1)))


def mesh_data(page: str) -> list[dict]:
    return json.loads(re.search(r'<script id="mesh-data" type="application/json">(.*?)</script>', page, re.DOTALL)
                      .group(1).replace("<\\/", "</"))


def check_views(path: Path, n_views: int) -> None:
    result = open_report(path)
    assert result["errors"] == []
    assert len(result["canvases"]) == n_views
    for canvas in result["canvases"]:
        assert canvas["foreground"] >= 0.05, canvas
        assert canvas["changed"] > 0.01, canvas


@pytest.fixture(scope="module")
def pca_run(tiny_faces, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "pca"
    assert main(["train", "pca", "--data", str(tiny_faces), "--latent", "4", "--out", str(out), "--quiet"]) == 0
    return out


def test_pca_report_content(pca_run):
    """The page holds the run's metrics, every plot and the error-coloured test meshes exactly as written."""
    from morphable.io import read_mesh

    page = (pca_run / "report.html").read_text()
    metrics = json.loads((pca_run / "metrics.json").read_text())
    assert f"<td>mean_mm</td><td>{metrics['mean_mm']:.6g}</td>" in page
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    assert page.count("data:image/png;base64,") == len(list((pca_run / "plots").glob("*.png")))
    meshes = mesh_data(page)
    first = min((pca_run / "meshes").glob("test_*.ply"))
    mesh = read_mesh(first)
    position = np.frombuffer(base64.b64decode(meshes[0]["position"]), "<f4").reshape(-1, 3)
    centre = (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2
    radius = np.linalg.norm(mesh.vertices - centre, axis=1).max()
    np.testing.assert_allclose(position, (mesh.vertices - centre) / radius, atol=1e-6)
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(meshes[0]["index"]), "<u4").reshape(-1, 3),
                                  mesh.faces)
    colors = np.frombuffer(base64.b64decode(meshes[0]["color"]), "u1").reshape(-1, 3)
    raw = first.read_bytes()  # write_ply's layout: header, then (x, y, z float32, r, g, b uint8) per vertex
    table = np.frombuffer(raw, [("xyz", "<f4", 3), ("rgb", "u1", 3)], len(mesh.vertices),
                          raw.index(b"end_header\n") + len(b"end_header\n"))
    np.testing.assert_array_equal(colors, table["rgb"])
    assert len(np.unique(colors, axis=0)) > 10  # coloured by error, not one colour
    assert meshes[-1]["name"].startswith("training mesh")


def test_pca_report_in_browser(pca_run):
    check_views(pca_run / "report.html", 5)


def test_npm_report_in_browser(npm_run, tmp_path):
    """``morphable report --fit`` on an implicit run: the extracted training shapes and a fitted head (here a
    fit folder holding training code 0, so its mesh must be that of "large"), drawn and rotated."""
    from morphable import load_run
    from morphable.io import save_weights

    fit = tmp_path / "fit"
    fit.mkdir()
    save_weights(fit / "code.safetensors", {"code": load_run(npm_run, "cpu").codes[0].clone()})
    out = tmp_path / "npm.html"
    assert main(["report", str(npm_run), "--out", str(out), "--fit", str(fit), "--device", "cpu"]) == 0
    meshes = mesh_data(out.read_text())
    assert [m["name"] for m in meshes] == ["large", "small", "fit fit"]
    assert meshes[2]["position"] == meshes[0]["position"] and meshes[2]["index"] == meshes[0]["index"]
    assert meshes[0]["faces"] > 100
    check_views(out, 3)


def test_report_verb_refuses(pca_run, tmp_path, capsys):
    out = tmp_path / "r.html"
    out.write_text("old")
    assert main(["report", str(pca_run), "--out", str(out)]) == 2
    assert "exists (use --overwrite)" in capsys.readouterr().err
    assert main(["report", str(pca_run), "--out", str(out), "--overwrite"]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(pca_run), "--fit", str(tmp_path)]) == 2
    assert "implicit runs" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
