"""Real-scan defects: repair functions against naive loops, signs of a defective mesh against the clean one,
the warning line, real-scan preparation (cut plane, largest component, size check) and declared units."""

import json

import numpy as np
import pytest
from scipy.spatial import cKDTree

from conftest import ICT_NPZ, require
from mesh_fixtures import icosphere
from morphable.config import DataConfig
from morphable.data import sdf
from morphable.data.registered import check_unit, load_registered, write_coma_layout
from morphable.data.scans import cut_by_plane, largest_component, prepare_scan
from morphable.errors import MorphableError
from morphable.io import UNIT_TO_MM, parse_unit, read_mesh, write_ply
from morphable.mesh import repair
from morphable.mesh.sampling import sample_surface
from morphable.mesh.topology import nonmanifold_faces
from morphable.metrics import read_ground_truth

igl = pytest.importorskip("igl")


def _naive_area(v, f):
    a, b, c = v[f[0]], v[f[1]], v[f[2]]
    return np.linalg.norm(np.cross(b - a, c - a))


def _edge_edge_directions(faces):
    """Naive: {undirected edge: list of directed edges} over every face corner."""
    out = {}
    for f in faces.tolist():
        for i, j in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            out.setdefault((min(i, j), max(i, j)), []).append((i, j))
    return out


def _defective_sphere(seed=0):
    """An outward icosphere (radius 0.8, 1280 faces) and the same with injected defects: a flipped patch,
    50 duplicated faces (rotated corners, some reversed), a degenerate face, a non-manifold fin and two
    unreferenced vertices; also the defect locations ``(K, 3)`` and the mean edge length."""
    V, F = icosphere(3, 0.8)
    rng = np.random.default_rng(seed)
    centres = V[F].mean(axis=1)
    patch = np.nonzero(np.linalg.norm(centres - V[0], axis=1) < 0.3)[0]
    bad = F.copy()
    bad[patch] = bad[patch, ::-1]
    dup = rng.choice(len(F), 50, replace=False)
    copies = F[dup][:, [1, 2, 0]]
    copies[::2] = copies[::2, ::-1]
    a, b, _ = F[7]
    tip = len(V)
    Vd = np.vstack([V, (V[a] + V[b]) / 2 * 1.15, [[3.0, 3.0, 3.0], [4.0, 4.0, 4.0]]])
    Fd = np.vstack([bad, copies, [[a, b, tip]], [[a, a, b]]])
    edge = float(np.mean(np.linalg.norm(V[F[:, 0]] - V[F[:, 1]], axis=1)))
    sites = np.vstack([centres[patch], centres[dup], Vd[[a, b, tip]]])
    return (V, F), (Vd, Fd), sites, edge, len(patch)


# --------------------------------------------------------------------------- repair functions vs loops


def test_degenerate_and_duplicate_faces_match_loops():
    (_, _), (V, F), *_ = _defective_sphere()
    F = np.vstack([F, [[5, 6, 5]], [[0, 1, 2]], [[2, 0, 1]]])
    naive_degenerate = np.array([len(set(f)) < 3 or _naive_area(V, f) == 0 for f in F])
    np.testing.assert_array_equal(repair.degenerate_faces(V, F), naive_degenerate)
    seen, naive_duplicate = set(), []
    for f in F.tolist():
        key = tuple(sorted(f))
        naive_duplicate.append(key in seen)
        seen.add(key)
    np.testing.assert_array_equal(repair.duplicate_faces(F), naive_duplicate)
    assert repair.duplicate_faces(F).sum() == 51 and repair.degenerate_faces(V, F).sum() == 2  # 50 + [2, 0, 1]


def test_unreferenced_vertices_keep_a_vertex_map():
    rng = np.random.default_rng(1)
    V = rng.standard_normal((30, 3))
    F = rng.choice([0, 2, 3, 7, 8, 11, 20, 29], (12, 3))
    V2, F2, vmap = repair.remove_unreferenced_vertices(V, F)
    assert vmap.tolist() == sorted({int(i) for i in F.ravel()})
    np.testing.assert_array_equal(V2[F2], V[F])  # every corner keeps its position
    np.testing.assert_array_equal(V2, V[vmap])


def test_orientation_is_made_consistent_and_outward():
    (V, F), _, _, _, n_patch = _defective_sphere()
    rng = np.random.default_rng(2)
    flip = rng.random(len(F)) < 0.4
    bad = F.copy()
    bad[flip] = bad[flip, ::-1]
    fixed, n_flipped = repair.orient_components(V, bad)
    assert n_flipped == flip.sum()
    np.testing.assert_array_equal(fixed, F)  # the one consistent outward orientation of a closed sphere
    # every manifold edge now runs in opposite directions in its two faces (naive)
    assert all(len(set(d)) == 2 for d in _edge_edge_directions(fixed).values())
    # wholly inverted but consistent: the traversal never flips it (the caller's outward check decides)
    assert repair.orient_components(V, F[:, ::-1])[1] == 0
    # two components, one inconsistent and inward: only that one is re-oriented, outward
    two_v = np.vstack([V, V + 3.0])
    inverted = F[:, ::-1] + len(V)
    inverted[:5] = inverted[:5, ::-1]
    fixed2, n2 = repair.orient_components(two_v, np.vstack([F, inverted]))
    assert n2 == len(F) - 5
    np.testing.assert_array_equal(fixed2, np.vstack([F, F + len(V)]))


def test_boundary_loops_and_their_lengths():
    V, F = icosphere(3, 1.0)
    centres = V[F].mean(axis=1)
    holes = [np.linalg.norm(centres - V[i], axis=1) < 0.25 for i in (0, 5)]
    open_faces = F[~(holes[0] | holes[1])]
    loops = repair.boundary_loops(open_faces)
    assert len(loops) == 2
    directions = _edge_edge_directions(open_faces)
    naive_open = {e for e, d in directions.items() if len(d) == 1}
    found = {tuple(sorted((int(l[k]), int(l[(k + 1) % len(l)])))) for l in loops for k in range(len(l))}
    assert found == naive_open
    naive_length = sum(np.linalg.norm(V[i] - V[j]) for i, j in naive_open)
    assert np.isclose(sum(repair.loop_length(V, l) for l in loops), naive_length, rtol=1e-12)
    report = repair.repair_mesh(V, open_faces).report
    assert report.boundary_loops == 2 and report.sign() == "auto"
    assert np.isclose(report.longest_boundary * np.linalg.norm(np.ptp(V, axis=0)),
                      max(repair.loop_length(V, l) for l in loops))


def test_clean_mesh_is_returned_unchanged():
    V, F = icosphere(2, 0.5)
    r = repair.repair_mesh(V, F)
    np.testing.assert_array_equal(r.faces, F)
    np.testing.assert_array_equal(r.vertices, V)
    np.testing.assert_array_equal(r.vertex_map, np.arange(len(V)))
    assert r.report.found() == [] and r.report.sign() == "pseudonormal" and r.report.warning("x", "y") is None


# --------------------------------------------------------------------------- signs of a defective mesh


def test_defective_sphere_has_the_clean_signs_near_the_defects(capsys):
    (V, F), (Vd, Fd), sites, edge, n_patch = _defective_sphere()
    prepared = sdf.prepare_mesh("scan", Vd, Fd, np.ones(len(Vd), dtype=bool))
    err = capsys.readouterr().err.splitlines()
    assert err == [f"morphable: warning: scan: 1 degenerate faces (removed), 50 duplicate faces (removed), "
                   f"2 unreferenced vertices (removed), {n_patch} inconsistently oriented faces (flipped), "
                   "1 non-manifold edges (kept), 1 boundary loops (longest 0.14 of the bounding-box diagonal); "
                   "signs from winding numbers (local side near the surface)"]
    assert prepared.sign == "auto" and len(prepared.vertices) == len(V) + 1
    rng = np.random.default_rng(3)
    points = rng.uniform(-1.0, 1.0, (300_000, 3))
    near = cKDTree(sites).query(points)[0] < 2 * edge
    points = points[near]
    assert len(points) > 20_000
    clean = sdf.signed_distance(points, V, F)
    repaired = sdf.signed_distance(points, prepared.vertices, prepared.faces, sign=prepared.sign)
    agreement = float((np.sign(clean) == np.sign(repaired)).mean())
    assert agreement >= 0.999, agreement
    # without the repair, the plain pseudonormal sign of the defective mesh is wrong in many places
    naive = sdf.signed_distance(points, Vd, Fd, sign="pseudonormal")
    assert (np.sign(clean) != np.sign(naive)).mean() > 0.02


def test_defective_ict_skin_has_the_clean_signs_near_the_defects(capsys):
    """The ICT skin (open at the neck, eyes and mouth) with 500 duplicated faces, a flipped patch of 735
    faces, a fin and unreferenced vertices: the signs near the defects are those of the clean skin."""
    data = np.load(require(ICT_NPZ))
    F = data["triangles"].astype(np.int64)
    F = F[(F < 11248).all(axis=1)]
    V = sdf.Similarity.fit([data["neutral"][:11248].astype(np.float64)]).apply(data["neutral"][:11248])
    rng = np.random.default_rng(3)
    centres = V[F].mean(axis=1)
    patch = np.nonzero(np.linalg.norm(centres - centres[2000], axis=1) < 0.08)[0]
    bad = F.copy()
    bad[patch] = bad[patch, ::-1]
    dup = rng.choice(len(F), 500, replace=False)
    a, b, c = F[5000]
    normal = np.cross(V[b] - V[a], V[c] - V[a])
    tip = (V[a] + V[b]) / 2 + 0.02 * normal / np.linalg.norm(normal)
    Vd = np.vstack([V, tip, [[0.5, 0.5, 0.5]] * 3])
    Fd = np.vstack([bad, F[dup][:, [2, 0, 1]], [[a, b, len(V)]]])
    prepared = sdf.prepare_mesh("ict", Vd, Fd, np.ones(len(Vd)))
    assert f"{len(patch)} inconsistently oriented faces (flipped)" in capsys.readouterr().err
    edge = float(np.mean(np.linalg.norm(V[F[:, 0]] - V[F[:, 1]], axis=1)))
    surface = sample_surface(V, F, 400_000, rng)
    points = surface.points + rng.uniform(-2 * edge, 2 * edge, (len(surface.points), 1)) * surface.normals
    points = points[cKDTree(np.vstack([centres[patch], centres[dup], Vd[[a, b, len(V)]]])).query(points)[0] < 2 * edge]
    assert len(points) > 50_000
    clean = sdf.signed_distance(points, V, F)
    repaired = sdf.signed_distance(points, prepared.vertices, prepared.faces, sign=prepared.sign)
    assert (np.sign(clean) == np.sign(repaired)).mean() >= 0.999


def test_sign_modes():
    base = dict(degenerate_faces=0, duplicate_faces=0, unreferenced_vertices=0, flipped_faces=0, nonmanifold_edges=0,
                inconsistent_edges=0, boundary_loops=0, longest_boundary=0.0)
    assert repair.RepairReport(**base).sign() == "pseudonormal"
    assert repair.RepairReport(**{**base, "nonmanifold_edges": 2}).sign() == "auto"
    assert repair.RepairReport(**{**base, "boundary_loops": 1, "longest_boundary": 1.4}).sign() == "auto"
    assert repair.RepairReport(**{**base, "inconsistent_edges": 1}).sign() == "winding"
    assert repair.RepairReport(**{**base, "boundary_loops": 1, "longest_boundary": 2.1}).sign() == "untrusted"


def test_flipped_patch_alone_gives_the_exact_clean_field():
    (V, F), (Vd, Fd), *_ = _defective_sphere()
    prepared = sdf.prepare_mesh("flip", V, Fd[:len(F)], np.ones(len(V), dtype=bool), warn=False)
    assert prepared.sign == "pseudonormal"
    np.testing.assert_array_equal(prepared.faces, F)
    points = np.random.default_rng(4).uniform(-1, 1, (2000, 3))
    np.testing.assert_array_equal(sdf.signed_distance(points, prepared.vertices, prepared.faces),
                                  sdf.signed_distance(points, V, F))


def test_write_dataset_accepts_defects_warns_once_per_mesh_and_records_the_repair(tmp_path, capsys):
    (V, F), (Vd, Fd), *_ = _defective_sphere()
    meshes = [("clean", V, F, np.ones(len(V))), ("scan", Vd, Fd, np.ones(len(Vd)))]
    out = sdf.write_sdf_dataset(meshes, tmp_path / "d", "250", n_surface=500, n_near=500, n_ball=500,
                                progress=False)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("morphable: warning: scan: 1 degenerate faces")
    info = json.loads((out / sdf.DATASET_JSON).read_text())
    assert info["unit"] == "250"
    clean, scan = info["shapes"]
    assert clean["sign"] == "pseudonormal" and scan["sign"] == "auto"
    assert scan["repair"]["duplicate_faces"] == 50 and clean["repair"]["duplicate_faces"] == 0
    assert scan["n_vertices"] == len(V) + 1
    data = sdf.SdfDataset(out)
    assert data.unit == "250"
    scale = data.similarities[0].scale
    assert np.isclose(data.to_mm(0, 0.01), 0.01 / scale * 250.0)


def test_large_holes_keep_only_sound_ball_samples(capsys):
    V, F = icosphere(3, 0.8)
    open_faces = F[V[F].mean(axis=1)[:, 2] < 0.0]  # the lower half: a bowl with a rim of 2 pi r
    prepared = sdf.prepare_mesh("bowl", V, open_faces, np.ones(len(V)))
    assert prepared.sign == "untrusted"
    assert "cannot be trusted" in capsys.readouterr().err
    samples = sdf.precompute_sdf_samples(V, open_faces, np.ones(len(V)), n_surface=200, n_near=200, n_ball=3000)
    band = np.abs(samples.ball_sdf) <= 0.02
    inside_hull = np.linalg.norm(samples.ball_points[~band], axis=1) < 0.79 * np.cos(np.pi / 10)
    inside_hull &= samples.ball_points[~band, 2] < -0.01
    assert not inside_hull.any()  # no far point within the bowl's hull: its sign would be a guess
    assert (samples.ball_sdf[~band] > 0).all()
    assert len(samples.ball_points) == 3000


# --------------------------------------------------------------------------- real-scan preparation


def test_cut_plane_keeps_exactly_the_vertices_on_its_side():
    V, F = icosphere(3, 1.0)
    point, normal = (0.1, -0.2, 0.05), (0.3, 1.0, -0.2)
    V2, F2, kept = cut_by_plane(V, F, point, normal)
    naive = [i for i, v in enumerate(V) if sum((v[k] - point[k]) * normal[k] for k in range(3)) >= 0]
    assert kept.tolist() == naive
    np.testing.assert_array_equal(V2, V[naive])
    naive_faces = [f for f in F.tolist() if all(c in set(naive) for c in f)]
    np.testing.assert_array_equal(kept[F2], naive_faces)
    with pytest.raises(MorphableError, match="normal"):
        cut_by_plane(V, F, point, (0, 0, 0))


def test_largest_component_and_prepare_scan(tmp_path, capsys):
    V, F = icosphere(2, 0.1)
    small_v, small_f = icosphere(1, 0.01)
    Vs = np.vstack([V, small_v + 0.5])
    Fs = np.vstack([F, small_f + len(V)])
    keep = largest_component(Fs, len(Vs))
    assert keep.tolist() == [True] * len(F) + [False] * len(small_f)
    path = tmp_path / "head.ply"
    write_ply(path, Vs, Fs)
    v2, f2, mask = prepare_scan(path, "m", cut=((0, -0.05, 0), (0, 1, 0)), keep_largest=True)
    assert capsys.readouterr().err == ""  # prepared: a 0.35 m diagonal, a plausible head
    V = read_mesh(path).vertices[:len(V)]  # as stored (float32): some vertices lie on the plane
    kept_faces = [f for f in F.tolist() if all(V[c, 1] >= -0.05 for c in f)]  # naive: faces wholly above
    used = sorted({c for f in kept_faces for c in f})
    np.testing.assert_array_equal(v2, V[used])
    np.testing.assert_array_equal(v2[f2], V[np.array(kept_faces)])
    assert mask.all()
    prepare_scan(path, "mm")  # the whole file: 1.06 units
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "bounding-box diagonal is 1.057 mm with --unit mm" in err[0] and "head" in err[0]


def test_data_sdf_cli_prepares_scans(tmp_path, capsys):
    from morphable.cli import main

    V, F = icosphere(3, 0.4)  # a "head" of 0.4 units with 1 unit = 250 mm
    faces = np.vstack([F, F[:20]])
    write_ply(tmp_path / "scans" / "a.ply", V, faces)
    assert main(["data", "sdf", str(tmp_path / "scans"), "--out", str(tmp_path / "sdf"), "--unit", "250",
                 "--cut-below", "-0.3", "--largest-component", "--n-surface", "300", "--n-near", "300",
                 "--n-ball", "300"]) == 0
    err = capsys.readouterr().err
    assert "a: 20 duplicate faces (removed)" in err and "boundary loops" in err
    info = json.loads((tmp_path / "sdf" / sdf.DATASET_JSON).read_text())
    assert info["unit"] == "250" and info["shapes"][0]["n_vertices"] == (V[:, 1] >= -0.3).sum()
    assert main(["data", "sdf", str(tmp_path / "scans"), "--out", str(tmp_path / "x"), "--unit", "inch"]) == 2


# --------------------------------------------------------------------------- units


def test_numeric_units_everywhere(tmp_path):
    assert parse_unit("cm") == "cm" and parse_unit("250") == "250" and parse_unit(250.0) == "250"
    assert parse_unit("2.5e2") == "250" and parse_unit("0.1") == "0.1" and parse_unit(1 / 3) == repr(1 / 3)
    for bad in ("inch", "-1", "0", "nan", "inf", None, True, [1]):
        assert parse_unit(bad) is None and bad not in UNIT_TO_MM
    assert UNIT_TO_MM["250"] == 250.0 and UNIT_TO_MM["m"] == 1000.0 and list(UNIT_TO_MM) == ["m", "cm", "mm"]
    assert DataConfig(unit="2.5e2").unit == "250"
    with pytest.raises(MorphableError, match="data.unit"):
        DataConfig(unit="inch")
    assert check_unit(25, "x") == "25"
    with pytest.raises(MorphableError, match="unknown unit 'feet'"):
        check_unit("feet", "x")
    # a registered dataset in a numeric unit round-trips through dataset.json and converts to mm
    V, F = icosphere(1, 0.4)
    write_coma_layout(tmp_path / "reg", np.stack([V, V * 1.01]).astype(np.float32), F, ["s", "s"], ["e", "e"], [0, 1],
                      "2.5e2", progress=False)
    assert json.loads((tmp_path / "reg" / "dataset.json").read_text())["unit"] == "250"
    data = load_registered(tmp_path / "reg", use_cache=False, progress=False)
    assert data.unit == "250" and data.to_mm == 250.0


def test_ground_truth_is_repaired_and_metrics_stay_in_mm(tmp_path, capsys):
    from morphable.metrics import region_metrics

    V, F = icosphere(3, 0.4)
    path = tmp_path / "gt.ply"
    write_ply(path, np.vstack([V, [[9.0, 9.0, 9.0]]]), np.vstack([F, F[:30]]))
    gt, mask = read_ground_truth(path, len(V) // 2)
    assert "30 duplicate faces (removed), 1 unreferenced vertices (removed)" in capsys.readouterr().err
    np.testing.assert_array_equal(gt.faces, F)
    assert mask.tolist() == (np.arange(len(V)) < len(V) // 2).tolist()
    shifted = (V + [0.004, 0.0, 0.0], F)
    in_units = region_metrics(shifted, (gt.vertices, gt.faces), None, UNIT_TO_MM["250"], n_samples=5000)
    in_mm = region_metrics((shifted[0] * 250.0, F), (gt.vertices * 250.0, gt.faces), None, UNIT_TO_MM["mm"],
                           n_samples=5000)
    for key in ("accuracy_mm", "completeness_mm", "chamfer_l1_mm"):
        assert np.isclose(in_units["head"][key], in_mm["head"][key], rtol=1e-9)
    assert 0.3 < in_units["head"]["chamfer_l1_mm"] < 3.0  # the 1 mm shift plus the sample spacing


def test_nonmanifold_faces_match_a_loop():
    _, (_, F), *_ = _defective_sphere()
    directions = _edge_edge_directions(F)
    naive = [any(len(directions[(min(i, j), max(i, j))]) > 2 for i, j in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])))
             for f in F.tolist()]
    np.testing.assert_array_equal(nonmanifold_faces(F), naive)
    assert sum(naive) > 3  # the fin, the two faces it is glued to, and the duplicated faces
