"""MeshHierarchy: build on real and procedural templates, files, cache, torch buffers, the CLI."""

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import MEDIAPIPE_OBJ, require
from mesh_fixtures import head_with_eyes, ict_skin, icosphere, mediapipe_face
from morphable.cli import main
from morphable.config import AutoencoderConfig
from morphable.errors import MorphableError
from morphable.explicit.autoencoder import MeshAutoencoder, model_spiral_settings, spiral_indices
from morphable.explicit.layers import Pool
from morphable.explicit.method import template_hierarchy
from morphable.io import write_mesh
from morphable.mesh.hierarchy import MeshHierarchy, build_or_load_hierarchy, hierarchy_cache_key
from morphable.mesh.spiral import level_spirals
from morphable.mesh.topology import chebyshev_laplacian, connected_components


def _check_hierarchy(h, expected_sizes):
    assert h.sizes == expected_sizes
    for level in range(h.n_levels - 1):
        fine, coarse = h.vertices[level], h.vertices[level + 1]
        kept = h.kept[level]
        np.testing.assert_array_equal(coarse, fine[kept])
        d, u = h.down[level], h.up[level]
        assert (np.diff(d.indptr) == 1).all() and (d.data == 1).all() and (d.indices == kept).all()
        np.testing.assert_allclose(np.asarray(u.sum(axis=1)).ravel(), 1.0, atol=1e-12)
        assert u.data.min() > 0 and np.diff(u.indptr).max() <= 3
        assert ((u @ d)[kept] != sp.identity(len(fine), format="csr")[kept]).nnz == 0
        n_fine, labels = connected_components(h.faces[level], len(fine))
        assert connected_components(h.faces[level + 1], len(coarse))[0] == n_fine
    for level in range(h.n_levels):
        n = h.sizes[level]
        assert (h.laplacians[level] != chebyshev_laplacian(h.faces[level], n)).nnz == 0
        s = h.spirals[level]
        assert s.shape[0] == n and (s[:, 0] == np.arange(n)).all() and s.min() >= 0 and s.max() < n


def test_ict_skin_hierarchy_and_reconstruction_bound():
    v, f = ict_skin()
    h = MeshHierarchy.build(v, f)
    _check_hierarchy(h, [11248, 2812, 703, 176, 44])
    assert all(s.shape[1] == 9 for s in h.spirals)
    # U (D X) on the template positions is the distance to the coarse surface (cm). Measured at
    # level 1: mean 0.0116, max 0.41 (on the open boundary); the face is ~25 cm wide.
    err = np.linalg.norm(h.up[0] @ (h.down[0] @ v) - v, axis=1)
    assert err.mean() < 0.015 and err.max() < 0.5


@pytest.mark.parametrize("mesh,sizes", [(icosphere, [642, 161, 41, 11, 4]), (head_with_eyes, [966, 242, 61, 16, 12]),
                                        (mediapipe_face, [468, 117, 30, 8, 3])])
def test_small_and_multi_component_templates(mesh, sizes):
    v, f = mesh()
    _check_hierarchy(MeshHierarchy.build(v, f), sizes)


def test_synthetic_head_template():
    synthetic = pytest.importorskip("morphable.data.synthetic")
    v, f = synthetic.template_mesh()
    sizes = [len(v)]
    for _ in range(4):
        sizes.append(-(-sizes[-1] // 4))  # one closed component: plain ceil(V / 4), 5048 -> 20
    _check_hierarchy(MeshHierarchy.build(v, f), sizes)


def test_neural3dmm_style_and_per_level_settings():
    v, f = head_with_eyes(2)
    h = MeshHierarchy.build(v, f, factors=(4, 4), spiral_style="neural3dmm", spiral_hops=[2, 2, 1],
                            spiral_dilation=[2, 1, 1])
    assert h.settings["spiral_hops"] == [2, 2, 1] and h.settings["spiral_style"] == "neural3dmm"
    for level in range(3):
        n = h.sizes[level]
        assert h.spirals[level].max() <= n and (h.spirals[level][:, 0] == np.arange(n)).all()
    assert (h.spirals[0] == h.sizes[0]).any()  # padded with the dummy vertex
    with pytest.raises(MorphableError, match="one value per level"):
        MeshHierarchy.build(v, f, factors=(4, 4), spiral_length=[9, 9])


def test_bad_templates_raise():
    v, f = icosphere(1)
    with pytest.raises(MorphableError, match="NaN"):
        MeshHierarchy.build(np.where(np.arange(len(v))[:, None] == 3, np.nan, v), f)
    with pytest.raises(MorphableError, match="outside"):
        MeshHierarchy.build(v, f + 1)
    with pytest.raises(MorphableError, match="used by no face"):
        MeshHierarchy.build(np.concatenate([v, [[5.0, 5, 5]]]), f)
    with pytest.raises(MorphableError, match="at least 1"):
        MeshHierarchy.build(v, f, factors=(4, 0))


def test_save_load_round_trip_and_broken_files(tmp_path):
    v, f = head_with_eyes(2)
    h = MeshHierarchy.build(v, f, factors=(4, 4))
    path = tmp_path / "h.npz"
    h.save(path)
    g = MeshHierarchy.load(path)
    assert g.settings == h.settings and g.sizes == h.sizes
    for name in ("vertices", "faces", "kept", "spirals"):
        for a, b in zip(getattr(h, name), getattr(g, name)):
            np.testing.assert_array_equal(a, b)
    for name in ("down", "up", "laplacians"):
        for a, b in zip(getattr(h, name), getattr(g, name)):
            assert (a != b).nnz == 0 and a.shape == b.shape
    with pytest.raises(MorphableError, match="file not found"):
        MeshHierarchy.load(tmp_path / "missing.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    with pytest.raises(MorphableError, match="broken.npz: not a valid mesh hierarchy"):
        MeshHierarchy.load(tmp_path / "broken.npz")
    with np.load(path) as data:
        arrays = dict(data)
    arrays["kept_1"] = arrays["kept_1"][:-1]
    np.savez(tmp_path / "mismatch.npz", **arrays)
    with pytest.raises(MorphableError, match="mismatch.npz: inconsistent mesh hierarchy: transition 1"):
        MeshHierarchy.load(tmp_path / "mismatch.npz")
    del arrays["up_0_data"]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(MorphableError, match="partial.npz"):
        MeshHierarchy.load(tmp_path / "partial.npz")


def test_cache_is_keyed_by_template_and_settings(tmp_path):
    v, f = icosphere(2)
    h = build_or_load_hierarchy(v, f, factors=(4, 4), cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    again = build_or_load_hierarchy(v, f, factors=(4, 4), cache_dir=tmp_path)
    assert files[0].stat().st_mtime_ns == mtime and again.sizes == h.sizes
    np.testing.assert_array_equal(again.spirals[1], h.spirals[1])
    build_or_load_hierarchy(v, f, factors=(4, 4), spiral_length=12, cache_dir=tmp_path)
    build_or_load_hierarchy(v * 1.01, f, factors=(4, 4), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 3
    key = hierarchy_cache_key(v, f, {"factors": [4, 4]})
    assert key != hierarchy_cache_key(v, f, {"factors": [4, 2]}) and len(key) == 24
    files[0].write_bytes(b"corrupt")
    rebuilt = build_or_load_hierarchy(v, f, factors=(4, 4), cache_dir=tmp_path)
    assert rebuilt.sizes == h.sizes and MeshHierarchy.load(files[0]).sizes == h.sizes


def test_torch_buffers_match_scipy():
    v, f = head_with_eyes(1)
    h = MeshHierarchy.build(v, f, factors=(4,))
    x = torch.randn(2, h.sizes[0], 3, dtype=torch.float64)
    coarse = Pool(h.down[0], torch.float64)(x)
    np.testing.assert_allclose(coarse.numpy(), np.stack([h.down[0] @ xb for xb in x.numpy()]), atol=1e-12)
    fine = Pool(h.up[0], torch.float64)(coarse)
    np.testing.assert_allclose(fine.numpy(), np.stack([h.up[0] @ cb for cb in coarse.numpy()]), atol=1e-12)


SPIRAL_RUNS = {  # the same spiral settings as a model config and as options of 'morphable mesh hierarchy'
    "spiralnet": (AutoencoderConfig(conv="spiral", spiral_style="spiralnet", spiral_length=7, spiral_dilation=2),
                  ["--spiral-style", "spiralnet", "--spiral-length", "7", "--spiral-dilation", "2"]),
    "neural3dmm": (AutoencoderConfig(conv="spiral", spiral_style="neural3dmm", spiral_hops=[2, 2, 2],
                                     spiral_dilations=[2, 2, 2]),
                   ["--spiral-style", "neural3dmm", "--spiral-hops", "2", "--spiral-dilation", "2"]),
}


@pytest.mark.parametrize("style", sorted(SPIRAL_RUNS))
def test_saved_hierarchy_holds_the_spirals_the_autoencoder_trains_with(tmp_path, style):
    config, options = SPIRAL_RUNS[style]
    v, f = head_with_eyes(2)
    write_mesh(tmp_path / "template.obj", v, f)
    assert main(["mesh", "hierarchy", str(tmp_path / "template.obj"), "--out", str(tmp_path / "h.npz"),
                 "--factors", "4", "4", *options]) == 0
    saved = MeshHierarchy.load(tmp_path / "h.npz")
    plain = MeshHierarchy.build(saved.vertices[0], saved.faces[0], factors=(4, 4))  # default spiral settings
    built = spiral_indices(config, plain)  # built anew from the config
    assert len(built) == len(saved.spirals) == 3
    for a, b in zip(built, saved.spirals):
        np.testing.assert_array_equal(a, b)
    assert any(a.shape != b.shape or (a != b).any() for a, b in zip(built, plain.spirals))  # the settings matter
    assert spiral_indices(config, saved) is saved.spirals  # same settings: the saved spirals are used as they are
    network = MeshAutoencoder(replace(config, encoder_channels=[4, 4], decoder_channels=[4, 4, 4], factors=[4, 4]),
                              saved)
    for level in range(2):
        np.testing.assert_array_equal(network.encoder_convs[level].indices.numpy(), saved.spirals[level])


@pytest.mark.parametrize("style", sorted(SPIRAL_RUNS))
def test_template_hierarchy_caches_the_spirals_of_the_model(tmp_path, monkeypatch, style):
    monkeypatch.setenv("MORPHABLE_CACHE", str(tmp_path))
    config = replace(SPIRAL_RUNS[style][0], factors=[4, 4])
    v, f = head_with_eyes(2)
    built = template_hierarchy(v, f, config)
    expected = level_spirals(built.vertices, built.faces, model_spiral_settings(config, 3))
    default = MeshHierarchy.build(v, f, factors=(4, 4))  # the spirals a factors-only hierarchy holds
    assert any(a.shape != b.shape or (a != b).any() for a, b in zip(expected, default.spirals))
    monkeypatch.setattr(MeshHierarchy, "build", None)  # the second call must read the cache
    cached = template_hierarchy(v, f, config)
    for h in (built, cached):
        assert spiral_indices(config, h) is h.spirals  # the network takes the hierarchy's spirals as they are
        assert len(h.spirals) == len(expected)
        for a, b in zip(h.spirals, expected):
            np.testing.assert_array_equal(a, b)


def test_unknown_conv_and_spiral_style_raise():
    h = MeshHierarchy.build(*head_with_eyes(1), factors=(4,))
    with pytest.raises(MorphableError, match="model.conv must be one of cheb, spiral; got 'spirals'"):
        AutoencoderConfig(conv="spirals")  # the config refuses it, so no network is built from it
    with pytest.raises(MorphableError, match=r"model.spiral_style must be one of spiralnet, neural3dmm; got 'spiralnet\+\+'"):
        AutoencoderConfig(conv="spiral", spiral_style="spiralnet++")
    with pytest.raises(MorphableError, match=r"spiral_hops needs one value per level \(2\), got 3"):
        spiral_indices(AutoencoderConfig(conv="spiral", spiral_style="neural3dmm", spiral_hops=[1, 1, 1],
                                         spiral_dilations=[1, 1]), h)


def test_cli_writes_npz_and_picture(tmp_path, capsys):
    out = tmp_path / "mp" / "hierarchy.npz"
    assert main(["mesh", "hierarchy", str(require(MEDIAPIPE_OBJ)), "--factors", "4", "4", "--out", str(out)]) == 0
    h = MeshHierarchy.load(out)
    assert h.sizes == [468, 117, 30]
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "117" in capsys.readouterr().out


def test_cli_bad_input_names_the_file(tmp_path, capsys):
    broken = tmp_path / "broken.obj"
    broken.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    assert main(["mesh", "hierarchy", str(broken), "--out", str(tmp_path / "h.npz")]) == 2
    assert "broken.obj" in capsys.readouterr().err
    nan = tmp_path / "nan.obj"
    nan.write_text("v 0 0 nan\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1 3 4\nf 1 4 2\nf 2 4 3\n")
    assert main(["mesh", "hierarchy", str(nan), "--out", str(tmp_path / "h.npz")]) == 2
    err = capsys.readouterr().err
    assert "nan.obj" in err and "NaN" in err
    assert main(["mesh", "hierarchy", str(nan), "--out", str(tmp_path / "h.txt")]) == 2
    assert ".npz" in capsys.readouterr().err
    assert not (tmp_path / "h.npz").exists()
