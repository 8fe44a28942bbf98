"""Metrics against naive loops and analytic cases."""

import numpy as np
import pytest

from mesh_fixtures import icosphere
from morphable.metrics import cumulative_error_curve, error_summary, per_vertex_errors, region_metrics, surface_metrics


def test_per_vertex_errors_and_summary_match_naive_loops():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(4, 30, 3)), rng.normal(size=(4, 30, 3))
    errors = per_vertex_errors(pred, target, to_mm=1000.0)
    naive = [[1000.0 * sum((pred[n, v, k] - target[n, v, k]) ** 2 for k in range(3)) ** 0.5 for v in range(30)]
             for n in range(4)]
    np.testing.assert_allclose(errors, naive, rtol=1e-12)
    flat = sorted(x for row in naive for x in row)
    summary = error_summary(errors)
    assert np.isclose(summary["mean_mm"], sum(flat) / len(flat))
    assert np.isclose(summary["median_mm"], (flat[59] + flat[60]) / 2)  # true median of 120 values
    assert np.isclose(summary["std_mm"], (sum((x - summary["mean_mm"]) ** 2 for x in flat) / len(flat)) ** 0.5)


def test_cumulative_error_curve_counts():
    errors = np.array([[0.1, 0.5, 0.5, 2.0]])
    np.testing.assert_allclose(cumulative_error_curve(errors, [0.0, 0.1, 0.5, 1.0, 3.0]), [0, 0.25, 0.75, 0.75, 1.0])


def test_surface_metrics_on_offset_planes():
    g = np.linspace(0, 1, 41)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    gt = np.column_stack([xy, np.zeros(len(xy))])
    normals = np.tile([0.0, 0.0, 1.0], (len(xy), 1))
    for offset_mm in (0.5, 2.0):
        pred = gt + [0, 0, offset_mm / 1000.0]
        m = surface_metrics(pred, -normals, gt, normals, to_mm=1000.0, thresholds_mm=(1.0,))
        assert np.isclose(m["chamfer_l1_mm"], offset_mm)
        assert np.isclose(m["normal_consistency"], 1.0)  # |dot| ignores the flipped orientation
        assert m["fscore_1mm"] == (1.0 if offset_mm < 1.0 else 0.0)


def test_surface_metrics_precision_and_recall_asymmetry():
    gt = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0]])
    pred = gt[:2]
    m = surface_metrics(pred, None, gt, None, to_mm=1.0, thresholds_mm=(0.5,))
    assert m["accuracy_mm"] == 0.0 and np.isclose(m["completeness_mm"], (0 + 0 + 1 + 2) / 4)
    precision, recall = 1.0, 0.5
    assert np.isclose(m["fscore_0.5mm"], 2 * precision * recall / (precision + recall))


def test_region_metrics_analytic_offset():
    """Two concentric spheres 10 mm apart: Chamfer-L1 = 10 mm (up to faceting), F@1mm = 0, N.C. = 1."""
    inner, outer = icosphere(5, radius=0.10), icosphere(5, radius=0.11)
    mask = inner[0][:, 2] > 0  # the +z half is the "face"
    m = region_metrics(outer, inner, mask, 1000.0, n_samples=20_000)
    for region in ("face", "head"):
        assert m[region]["chamfer_l1_mm"] == pytest.approx(10.0, abs=0.2)
        assert m[region]["fscore_1mm"] == 0.0
        assert m[region]["normal_consistency"] > 0.99
    # a mesh against itself only has the sampling floor (samples 2.5 mm apart here)
    same = region_metrics(inner, inner, mask, 1000.0, n_samples=20_000)
    for region in ("face", "head"):
        assert same[region]["chamfer_l1_mm"] < 0.15 * m[region]["chamfer_l1_mm"]
    assert m["face"]["completeness_mm"] == pytest.approx(10.0, abs=0.2)
    assert region_metrics(outer, inner, None, 1000.0, n_samples=2000)["face"] == \
        region_metrics(outer, inner, None, 1000.0, n_samples=2000)["head"]  # no mask: the face is the head
