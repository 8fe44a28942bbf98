"""HRN's UV detail maps (image/detail_maps.py) on the ICT face tile: a constant map translates, a ramp moves
each vertex by what its UV predicts (axes and orientation), the fade joins the moved face to the head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import ICT_NPZ, require
from morphable.data.photos import PhotoDataset
from morphable.errors import MorphableError
from morphable.image.detail_maps import FaceTile


@pytest.fixture(scope="module")
def tile(tiny_photos):
    from morphable.data.linear import load_linear_model

    t = PhotoDataset(tiny_photos).topology
    mean = load_linear_model(require(ICT_NPZ)).mean[t["source_vertex"]]
    return FaceTile.of(mean, t["faces"], t["texture_uv"], t["face_uvs"], t["textured"], fade=1.0)  # 1 cm


def single_uv_interior_vertices(tile: FaceTile) -> tuple[np.ndarray, np.ndarray]:
    """Vertices with exactly one UV, fully weighted (``w = 1``), away from the map's border texels: ids, (n, 2) uvs."""
    from morphable.render.shading import vertex_uv_pairs

    pairs = vertex_uv_pairs(tile.faces, tile.face_uvs).numpy()
    vertex, count = np.unique(pairs[:, 0], return_counts=True)
    single = vertex[count == 1]
    uv = tile.uvs[pairs[np.isin(pairs[:, 0], single), 1]]
    inside = (np.minimum(uv, 1 - uv) > 1 / 64).all(1) & (tile.weights[single] == 1)
    return single[inside], uv[inside]


def test_a_constant_map_translates_the_face_and_leaves_the_rest_of_the_head(tile):
    vertices = torch.zeros(1, tile.n_vertices, 3, dtype=torch.float64)
    shift = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    moved = tile.deform(vertices, shift[None, :, None, None].expand(1, 3, 64, 64))[0]
    ids, _ = single_uv_interior_vertices(tile)
    assert len(ids) > 1000
    torch.testing.assert_close(moved[ids], shift.expand(len(ids), 3))
    off_tile = np.setdiff1d(np.arange(tile.n_vertices), np.unique(tile.faces))
    assert len(off_tile) > 1000 and torch.equal(moved[off_tile], torch.zeros(len(off_tile), 3, dtype=torch.float64))


def test_a_ramp_map_moves_each_vertex_by_what_its_uv_predicts(tile):
    size = 64
    c = (np.arange(size) + 0.5) / size
    u, v = np.meshgrid(c, 1 - c)  # row 0 at the top: v = 1 there
    ramp = torch.from_numpy(np.stack([2.0 * u - 0.5, 3.0 * v, u + v]))[None]
    moved = tile.deform(torch.zeros(1, tile.n_vertices, 3, dtype=torch.float64), ramp)[0].numpy()
    ids, uv = single_uv_interior_vertices(tile)
    expected = np.column_stack([2.0 * uv[:, 0] - 0.5, 3.0 * uv[:, 1], uv[:, 0] + uv[:, 1]])
    np.testing.assert_allclose(moved[ids], expected, atol=1e-9)  # bilinear reproduces a linear ramp exactly


def test_the_fade_leaves_no_step_where_the_face_meets_the_head(tile, tiny_photos):
    """With a unit map the offset ``w`` is 1-Lipschitz in units of ``fade`` along every edge: no step at the
    chart's border (without the fade, edges leaving the tile would jump by 1)."""
    from morphable.data.linear import load_linear_model

    topology = PhotoDataset(tiny_photos).topology
    mean = load_linear_model(require(ICT_NPZ)).mean[topology["source_vertex"]]
    faces = topology["faces"]
    vertices = torch.zeros(1, tile.n_vertices, 3, dtype=torch.float64)
    moved = tile.deform(vertices, torch.ones(1, 3, 64, 64, dtype=torch.float64))[0, :, 0].numpy()
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    step = np.abs(moved[edges[:, 0]] - moved[edges[:, 1]])
    length = np.linalg.norm(mean[edges[:, 0]] - mean[edges[:, 1]], axis=1)
    assert moved.max() == pytest.approx(1.0) and (moved > 0).sum() > 1000
    assert (step <= length / 1.0 + 1e-9).all()  # fade = 1 cm
    assert (step[(moved[edges[:, 0]] == 0) != (moved[edges[:, 1]] == 0)] < 1).all()
    with pytest.raises(MorphableError, match="deform needs vertices"):
        tile.deform(vertices[0], torch.ones(1, 3, 64, 64, dtype=torch.float64))


def test_textured_subdivision_keeps_positions_and_uvs_of_each_corner_together():
    from morphable.mesh.subdivide import subdivide_textured

    rng = np.random.default_rng(0)
    vertices = np.column_stack([rng.uniform(size=(5, 2)), np.zeros(5)])
    vertices[:4, :2] = [[0, 0], [1, 0], [1, 1], [0, 1]]
    vertices[4, :2] = [0.4, 0.6]
    faces = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    affine = lambda xy: xy @ np.array([[0.5, 0.1], [-0.2, 0.4]]) + [0.2, 0.3]  # noqa: E731
    uvs = affine(vertices[:, :2])
    v, f, t, ft = subdivide_textured(vertices, faces, uvs, faces.copy(), iterations=2)
    # V + E per iteration: 5 + 8 = 13 (4 rim and 4 spoke edges), then 13 + (2 * 8 + 3 * 4 * 4) = 41
    assert len(f) == 16 * len(faces) and len(v) == 41
    np.testing.assert_allclose(t[ft], affine(v[f][..., :2]), atol=1e-12)  # every corner: UV = affine(position)
    # a seam: the same positions with two UV charts stay one surface with two sets of UVs
    split = np.array([[0, 1, 2], [3, 4, 5]])
    seam_uvs = np.array([[0, 0], [1, 0], [1, 1], [0.5, 0.5], [0.9, 0.5], [0.9, 0.9]], dtype=float)
    _, f2, t2, ft2 = subdivide_textured(vertices[:4], np.array([[0, 1, 2], [0, 2, 3]]), seam_uvs, split)
    assert len(np.unique(f2)) == 4 + 5 and len(np.unique(ft2)) == 6 + 6


def test_displacing_a_plane_along_its_normals_follows_the_map():
    from morphable.image.detail_maps import displace_along_normals
    from morphable.mesh.subdivide import subdivide_textured

    vertices = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])  # normal +z
    v, f, t, ft = subdivide_textured(vertices, faces, vertices[:, :2], faces, iterations=4)
    size = 128
    c = (np.arange(size) + 0.5) / size
    u, w = np.meshgrid(c, 1 - c)
    disp = 0.05 * np.sin(2 * np.pi * u) * w
    moved = displace_along_normals(v, f, t, ft, disp[None])
    ids = np.unique(f)
    ids = ids[(np.minimum(v[ids, :2], 1 - v[ids, :2]) > 1 / size).all(1)]  # here UV = (x, y)
    np.testing.assert_allclose(moved[ids, :2], v[ids, :2], atol=1e-12)
    expected = 0.05 * np.sin(2 * np.pi * v[ids, 0]) * v[ids, 1]
    np.testing.assert_allclose(moved[ids, 2], expected, atol=2e-4)  # bilinear sampling of the map
