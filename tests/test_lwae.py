"""Locally weighted autoencoder: features, projection and decoding shapes, code mixing, the locality and
diversity measurements, the swap-locality loss, a short training run with its report, and the ``morphable parts``
command."""

import csv

import numpy as np
import pytest
import torch
import trimesh

from morphable.config import PRESETS, AutoencoderConfig, LWAEConfig
from morphable.data.registered import load_registered, make_split, write_coma_layout
from morphable.explicit.lwae import (LocallyWeightedAutoencoder, compute_local_weights, displacement_features,
                                     level_weights, locality_loss, mix_codes, outside_region, part_laplacian,
                                     part_upsampling, partition_weights, unmix_codes)
from morphable.explicit.method import template_hierarchy
from morphable.explicit.parts import (border_roughness, ellipse_area, locality, mix_part, part_regions,
                                      random_pairs, swap_decodings)


def test_displacement_features_naive():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 7, 3))
    mean = x.mean(axis=0)
    expected = np.array([[np.sqrt(((x[i, v] - mean[v]) ** 2).sum()) for i in range(5)] for v in range(7)])
    assert np.allclose(displacement_features(x), expected)


@pytest.fixture(scope="module")
def sphere():
    s = trimesh.creation.icosphere(subdivisions=2)  # 162 vertices
    return np.asarray(s.vertices), np.asarray(s.faces)


@pytest.fixture(scope="module")
def network(sphere):
    torch.manual_seed(0)
    hierarchy = template_hierarchy(sphere[0], sphere[1], _small_config())
    weights = np.random.default_rng(1).random((len(sphere[0]), 3))
    return LocallyWeightedAutoencoder(_small_config(), hierarchy, weights).eval(), hierarchy, weights


def _small_config() -> LWAEConfig:
    return LWAEConfig(latent=6, parts=3, encoder_channels=[8, 8], decoder_channels=[8, 8, 8], factors=[2, 2], cheb_k=3)


def test_projection_and_decoding_shapes(network, sphere):
    net, hierarchy, weights = network
    x = torch.randn(4, len(sphere[0]), 3)
    z = net.encode(x)
    p = net.encode_parts(x)
    assert z.shape == (4, 6) and p.shape == (4, 3, 6)
    naive = torch.stack([torch.stack([net.projection[k] @ z[b] for k in range(3)]) for b in range(4)])
    assert torch.allclose(p, naive, atol=1e-6)
    assert net.decode_parts(p).shape == (4, len(sphere[0]), 3)
    assert torch.allclose(net(x), net.decode(z), atol=1e-6)
    # batched decoding equals per-sample decoding
    single = torch.cat([net.decode_parts(p[i:i + 1]) for i in range(4)])
    assert torch.allclose(net.decode_parts(p), single, atol=1e-5)
    # the weights are stored per level: W_{l+1} = D_l W_l (QEM selections keep original vertices)
    for l, w in enumerate(level_weights(weights, hierarchy)):
        assert torch.allclose(net.level_weights(l).double(), torch.as_tensor(w), atol=1e-6)
    assert net.level_weights(2).shape == (len(hierarchy.vertices[2]), 3)


def test_part_codes_act_only_through_their_weights(network, sphere):
    """With a part's weights zero at every level, that part's code cannot change the output."""
    net, hierarchy, _ = network
    weights = np.random.default_rng(2).random((len(sphere[0]), 3))
    weights[:, 1] = 0
    muted = LocallyWeightedAutoencoder(net_config(net), hierarchy, weights).eval()
    muted.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("weights_")}, strict=False)
    p = torch.randn(2, 3, 6)
    q = p.clone()
    q[:, 1] = torch.randn(2, 6)
    assert torch.allclose(muted.decode_parts(p), muted.decode_parts(q), atol=1e-6)
    q[:, 0] += 1.0
    assert not torch.allclose(muted.decode_parts(p), muted.decode_parts(q), atol=1e-3)


def net_config(net) -> LWAEConfig:
    return LWAEConfig(latent=6, parts=3, encoder_channels=[8, 8], decoder_channels=[8, 8, 8], factors=[2, 2],
                      cheb_k=3, inject=net.inject)


def test_mix_and_unmix_codes():
    p = torch.randn(5, 3, 4)
    gen = torch.Generator().manual_seed(0)
    mix = torch.stack([torch.randperm(5, generator=gen) for _ in range(3)])
    mixed = mix_codes(p, mix)
    for b in range(5):
        for k in range(3):
            assert torch.equal(mixed[b, k], p[mix[k, b], k])
    assert torch.equal(unmix_codes(mixed, mix), p)
    identity = torch.arange(5).repeat(3, 1)
    assert torch.equal(mix_codes(p, identity), p)


def test_cycle_with_identity_permutations_is_decode_encode_decode(network, sphere):
    net, _, _ = network
    x = torch.randn(3, len(sphere[0]), 3)
    p = net.encode_parts(x)
    recon, cycled, swapped = net(x, torch.arange(3).repeat(3, 1))
    assert swapped is None
    assert torch.allclose(recon, net.decode_parts(p), atol=1e-6)
    assert torch.allclose(cycled, net.decode_parts(net.encode_parts(net.decode_parts(p))), atol=1e-5)


def test_swapping_a_part_with_itself_changes_nothing(network):
    net, _, _ = network
    codes = torch.randn(2, 3, 6).numpy()
    for part in range(3):
        same = mix_part(codes[0], codes[0], part, np.linspace(0, 1, 4))
        out = net.decode_parts(torch.as_tensor(same, dtype=torch.float32))
        assert torch.allclose(out, out[:1].expand_as(out), atol=1e-6)
    moved = mix_part(codes[0], codes[1], 2, [0.0, 1.0])
    assert np.allclose(moved[0], codes[0]) and np.allclose(moved[1, 2], codes[1, 2])
    assert np.allclose(moved[1, :2], codes[0, :2])


def _linear_decoder(weights: np.ndarray, basis: np.ndarray):
    """x[n, v] = sum_k weights[v, k] (p[n, k] @ basis[v]): part k moves only where its weights are non-zero."""
    return lambda p: np.einsum("vk,nkz,vzc->nvc", weights, p, basis)


def test_locality_detects_local_and_non_local_models():
    rng = np.random.default_rng(0)
    n_vertices, k, z = 120, 4, 5
    regions = np.arange(n_vertices) % k
    weights = np.zeros((n_vertices, k))
    weights[np.arange(n_vertices), regions] = rng.uniform(0.5, 1.0, n_vertices)
    basis = rng.standard_normal((n_vertices, z, 3))
    codes = rng.standard_normal((6, k, z))
    pairs = random_pairs(6, 8)
    local = locality(*swap_decodings(_linear_decoder(weights, basis), codes, pairs), weights)
    assert np.allclose(local["share"], 1.0) and local["min_share"] == pytest.approx(1.0)
    assert np.allclose(local["chance"], 0.25)
    # the same decoder with its weights shuffled over the vertices: the regions no longer match
    shuffled = weights[rng.permutation(n_vertices)]
    off = locality(*swap_decodings(_linear_decoder(shuffled, basis), codes, pairs), weights)
    assert max(off["share"]) < 0.5
    # a decoder that ignores the parts (every part acts everywhere)
    glob = locality(*swap_decodings(_linear_decoder(np.ones((n_vertices, k)), basis), codes, pairs), weights)
    assert max(glob["share"]) < 0.5
    # soft, overlapping weights still give a high share when the decoder follows them
    soft = weights + 0.05
    assert locality(*swap_decodings(_linear_decoder(soft, basis), codes, pairs), weights)["min_share"] > 0.7


def test_border_roughness_finds_seams():
    s = trimesh.creation.icosphere(subdivisions=3)
    v, f = np.asarray(s.vertices), np.asarray(s.faces)
    regions = (v[:, 2] > 0).astype(int)
    weights = np.eye(2)[regions]
    codes = np.repeat(np.random.default_rng(6).standard_normal((4, 1, 1)), 2, axis=1)  # a face's parts agree

    def smooth(c: np.ndarray) -> np.ndarray:  # a part's code scales the sphere smoothly: no seam
        scale = 1 + 0.02 * (np.tanh(3 * v[:, 2])[None] * (c[:, 1, 0] - c[:, 0, 0])[:, None] + c[:, 0, 0, None])
        return v[None] * scale[..., None]

    def seam(c: np.ndarray) -> np.ndarray:  # each half scaled by its own code: a step at the equator
        return v[None] * (1 + 0.1 * c[:, regions, 0])[..., None]

    pairs = random_pairs(4, 6)
    smooth_ratio = border_roughness(*swap_decodings(smooth, codes, pairs), weights, f)
    assert smooth_ratio["ratio"] == pytest.approx(1.0, abs=0.05) and 0 < smooth_ratio["border_fraction"] < 0.2
    stepped = border_roughness(*swap_decodings(seam, codes, pairs), weights, f)
    assert stepped["ratio"] > 3 and stepped["interior_ratio"] == pytest.approx(1.0, abs=0.1)


def test_locality_loss_zero_for_local_decoder_positive_for_non_local():
    rng = np.random.default_rng(3)
    n_vertices, k, z, b = 60, 3, 4, 5
    regions = rng.integers(0, k, n_vertices)
    weights = np.zeros((n_vertices, k))
    weights[np.arange(n_vertices), regions] = rng.uniform(0.5, 1.0, n_vertices)
    weights[:2] = 0  # vertices of no part: any motion there is a leak
    basis = torch.as_tensor(rng.standard_normal((n_vertices, z, 3)))
    p = torch.as_tensor(rng.standard_normal((b, k, z)))
    swap = torch.as_tensor((np.arange(b) + 1) % b)  # every face takes another face's part

    def decode(w: np.ndarray, codes: torch.Tensor) -> torch.Tensor:
        return torch.einsum("vk,nkz,vzc->nvc", torch.as_tensor(w), codes, basis)

    w_t = torch.as_tensor(weights)
    for part in range(k):
        outside = outside_region(w_t, part)
        assert outside.tolist() == [0.0 if (regions[v] == part and v >= 2) else 1.0 for v in range(n_vertices)]
        q = p.clone()
        q[:, part] = p[swap, part]
        assert locality_loss(decode(weights, q), decode(weights, p), w_t, part).item() == 0.0  # local by construction
        spread = weights + 0.3  # every part also acts everywhere else
        swapped, base = decode(spread, q), decode(spread, p)
        loss = locality_loss(swapped, base, w_t, part, eps=0.0).item()
        d = [[float(np.linalg.norm((swapped[i, v] - base[i, v]).numpy())) for v in range(n_vertices)] for i in range(b)]
        naive = np.mean([sum(d[i][v] for v in range(n_vertices) if not (regions[v] == part and v >= 2)) / sum(d[i])
                         for i in range(b) if sum(d[i]) > 0])
        assert 0.1 < loss < 1 and loss == pytest.approx(naive, rel=1e-9)
        # one minus the measured locality of each swap, whatever the size of the displacement
        assert locality_loss(base + 10 * (swapped - base), base, w_t, part).item() == pytest.approx(loss, rel=1e-4)


def test_swapped_decoding_and_locality_gradient(network, sphere):
    """``forward(x, part=k, swap=s)`` decodes p with part k taken from face s(b); the loss trains the decoder."""
    net, _, _ = network
    x = torch.randn(4, len(sphere[0]), 3)
    swap = torch.tensor([2, 0, 3, 1])
    recon, cycled, swapped = net(x, None, 1, swap)
    p = net.encode_parts(x)
    q = p.clone()
    q[:, 1] = p[swap, 1]
    assert cycled is None and torch.allclose(swapped, net.decode_parts(q), atol=1e-6)
    assert torch.allclose(recon, net.decode_parts(p), atol=1e-6)
    loss = locality_loss(swapped, recon, net.local_weights, 1)
    assert loss.item() > 0
    loss.backward()
    assert net.output_conv.weight.grad.abs().sum() > 0
    net.zero_grad(set_to_none=True)
    # identity swap: nothing moves, no loss
    _, _, same = net(x, None, 1, torch.arange(4))
    assert locality_loss(same, recon, net.local_weights, 1).item() == pytest.approx(0.0, abs=1e-7)


def test_part_regions_and_ellipse_area():
    w = np.array([[0.0, 0.0], [0.2, 0.9], [0.7, 0.1]])
    assert part_regions(w).tolist() == [-1, 1, 0]
    a, b = 2.0, 0.5
    pts = np.array([[a, 0], [-a, 0], [0, b], [0, -b]])  # sample covariance diag(2a^2/3, 2b^2/3)
    assert ellipse_area(pts) == pytest.approx(4 * np.pi * 2 * a * b / 3)
    rot = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    assert ellipse_area(pts @ rot.T + 5) == pytest.approx(ellipse_area(pts))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from morphable.experiment import train

    root = tmp_path_factory.mktemp("lwae") / "faces"
    sphere = trimesh.creation.icosphere(subdivisions=2)
    rng = np.random.default_rng(0)
    n = 24
    bumps = rng.standard_normal((n, 3)) * 0.05
    v = sphere.vertices[None] * (1 + np.einsum("nk,vk->nv", bumps, sphere.vertices)[..., None])
    write_coma_layout(root, v.astype(np.float32) * 0.1, sphere.faces, [f"s{i // 12}" for i in range(n)],
                      [f"e{(i // 4) % 3}" for i in range(n)], [i % 4 for i in range(n)], "m", progress=False)
    config = PRESETS["lwae"]()
    config.data.path = str(root)
    config.data.val_fraction = 0.1
    config.model.factors = [2, 2, 2]
    config.model.latent = 16
    config.model.locality_weight = 1.0  # off in the preset; trained here so that its path runs end to end
    config.train.epochs = 2
    config.train.batch_size = 8
    out = tmp_path_factory.mktemp("runs") / "lwae"
    return train(config, out, progress=False), out, root, config


def test_lwae_trains_and_reports(trained_run):
    from morphable.explicit.experiment import load_codec
    from morphable.runs import Run

    metrics, out, root, config = trained_run
    assert np.isfinite(metrics["mean_mm"])
    preset = PRESETS["lwae"]().model
    assert preset.part_graph and preset.part_upsampling and preset.locality_weight == 0 and preset.factors == [4, 4, 4]
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(float(r["train_locality"]) > 0 for r in rows)
    report = metrics["lwae"]
    assert report["parts"] == 4
    shares = np.array(report["locality"]["share"])
    assert shares.shape == (4,) and ((shares >= 0) & (shares <= 1)).all()
    assert set(report["diversity"]["pca_area"]) == {"train", "test", "synthesised"}
    assert report["seams"]["ratio"] > 0 and 0 < report["seams"]["border_fraction"] < 1
    n_train = metrics["split_sizes"]["train"]
    assert report["diversity"]["sizes"] == {"train": n_train, "test": metrics["split_sizes"]["test"],
                                            "synthesised": 5 * min(11, n_train - 5) * 4}
    for name in ("local_weights.png", "part_interpolation.png", "diversity.png"):
        assert (out / "plots" / name).exists()
    # the local weights in the checkpoint are those of the train split, computed once before training
    dataset = load_registered(root, progress=False)
    split = make_split(dataset, "interpolation", None, 0.1)
    m = config.model
    expected, _ = compute_local_weights(dataset.vertices[split.train], dataset.faces, 4, m.sparseness,
                                        m.nmf_iterations, m.nmf_init, config.seed, m.sharpness, m.smoothing)
    codec = load_codec(Run.open(out), config, dataset.n_vertices)
    assert np.allclose(codec.local_weights, expected, atol=1e-6)


def test_parts_command(trained_run, tmp_path, capsys):
    from morphable.cli import main
    from morphable.io import read_mesh, write_ply

    _, out, root, _ = trained_run
    assert main(["parts", str(out), "--source", "0", "--target", "1", "--part", "all", "--n", "3",
                 "--out", str(tmp_path / "interp")]) == 0
    assert len(list((tmp_path / "interp").glob("part*_step*.ply"))) == 4 * 3
    assert (tmp_path / "interp" / "part_interpolation.png").exists()
    first = read_mesh(tmp_path / "interp" / "part2_step00.ply").vertices
    other = read_mesh(tmp_path / "interp" / "part0_step00.ply").vertices
    assert np.allclose(first, other, atol=1e-5)  # t = 0 is the source for every part
    capsys.readouterr()
    assert main(["parts", str(out), "--source", "1", "--target", "1", "--part", "0", "--n", "2",
                 "--out", str(tmp_path / "same")]) == 0
    assert "are the same mesh" in capsys.readouterr().err
    face = load_registered(root, progress=False).vertices[0]
    faces = trimesh.creation.icosphere(subdivisions=2).faces
    write_ply(tmp_path / "a.ply", face, faces)
    assert main(["parts", str(out), "--swap", str(tmp_path / "a.ply"), "0", "1", "0",
                 "--out", str(tmp_path / "swap")]) == 0
    assert (tmp_path / "swap" / "swap.ply").exists() and (tmp_path / "swap" / "swap.png").exists()
    write_ply(tmp_path / "bad.ply", face[:-5], faces[:10])
    n = len(face)
    for argv, fragments in (
            (["--source", str(tmp_path / "bad.ply"), "--target", "0", "--out", str(tmp_path / "x")],
             (str(tmp_path / "bad.ply"), f"the run's meshes are (N, {n}, 3)")),
            (["--swap", "0", "1", "--out", str(tmp_path / "y")], ("one face per part (4 faces), got 2",)),
            (["--source", "0", "--target", "999", "--out", str(tmp_path / "z")], ("outside the run's test set",)),
            (["--source", "0", "--target", "1", "--out", str(tmp_path / "interp")], ("--overwrite",))):
        capsys.readouterr()
        assert main(["parts", str(out), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and all(f in err for f in fragments), err
    assert not any((tmp_path / name).exists() for name in ("x", "y", "z"))


def test_partition_weights_sum_to_one_keep_argmax_and_fill_empty_rows():
    rng = np.random.default_rng(4)
    w = rng.random((30, 3)) * np.array([1.0, 3.0, 0.5])  # columns of different scales
    w[[4, 17]] = 0.0
    positions = rng.standard_normal((30, 3))
    out = partition_weights(w, 4.0, positions)
    assert np.allclose(out.sum(axis=1), 1.0) and (out >= 0).all()
    scaled = w / w.max(axis=0)
    assigned = np.setdiff1d(np.arange(30), [4, 17])
    assert np.array_equal(out[assigned].argmax(axis=1), scaled[assigned].argmax(axis=1))
    assert np.allclose(out[assigned], scaled[assigned] ** 4 / (scaled[assigned] ** 4).sum(axis=1, keepdims=True))
    for empty in (4, 17):  # the row of the nearest vertex that has weights
        d = np.linalg.norm(positions[assigned] - positions[empty], axis=1)
        assert np.array_equal(out[empty], out[assigned[d.argmin()]])
    # sharper: the dominant part of every vertex dominates more
    assert (partition_weights(w, 8.0, positions).max(axis=1) >= out.max(axis=1) - 1e-12).all()


def test_part_laplacian_matches_dense_construction_and_cuts_hard_borders():
    import scipy.sparse as sp

    from morphable.mesh.topology import adjacency, chebyshev_laplacian

    s = trimesh.creation.icosphere(subdivisions=1)
    v, f = np.asarray(s.vertices), np.asarray(s.faces)
    n = len(v)
    lap = chebyshev_laplacian(f, n)
    rng = np.random.default_rng(5)
    w = rng.random((n, 3)) ** 4
    w /= w.sum(axis=1, keepdims=True)
    a = adjacency(f, n).toarray()
    same = a * (w @ w.T)
    d = same.sum(axis=1)
    expected = -same / np.sqrt(np.outer(d, d))
    out = part_laplacian(lap, w)
    assert np.allclose(out.toarray(), expected, atol=1e-14)
    assert np.array_equal(out.indices, sp.csr_matrix(lap).indices)  # the pattern the Chebyshev buffers hold
    eig = np.linalg.eigvalsh(out.toarray())
    assert eig.min() >= -1 - 1e-12 and eig.max() <= 1 + 1e-12
    # one-hot weights: no coupling across a border, and the plain Laplacian inside a single part
    hard = np.eye(3)[(v[:, 2] > 0).astype(int) + (v[:, 0] > 0.5)]
    cut = part_laplacian(lap, hard).toarray()
    regions = hard.argmax(axis=1)
    assert np.all(cut[regions[:, None] != regions[None, :]] == 0)
    assert np.allclose(part_laplacian(lap, np.ones((n, 1))).toarray(), lap.toarray())


def test_decoder_filters_use_part_graphs_and_checkpoint_keeps_them(network, sphere):
    net, hierarchy, weights = network
    levels = level_weights(weights, hierarchy)
    expected = part_laplacian(hierarchy.laplacians[0], levels[0]).toarray()
    assert not np.allclose(expected, hierarchy.laplacians[0].toarray(), atol=1e-3)
    assert np.allclose(net.output_conv.laplacian.to_scipy().toarray(), expected, atol=1e-6)
    assert np.allclose(net.encoder_convs[0].laplacian.to_scipy().toarray(), hierarchy.laplacians[0].toarray())
    blank = LocallyWeightedAutoencoder(_small_config(), hierarchy)  # as a checkpoint is loaded: weights come later
    blank.load_state_dict(net.state_dict())
    assert torch.equal(blank.output_conv.laplacian.values, net.output_conv.laplacian.values)
    # the part-aware up-samplings (their sparsity pattern depends on the weights) come back from the checkpoint
    for mine, theirs in zip(blank.ups, net.ups):
        assert (mine.matrix.to_scipy() != theirs.matrix.to_scipy()).nnz == 0
    p = torch.randn(2, 3, 6)
    with torch.no_grad():
        assert torch.equal(blank.decode_parts(p), net.decode_parts(p))
    broken = dict(net.state_dict())
    broken["ups.0.matrix.col"] = broken["ups.0.matrix.col"] + 10 ** 6  # column indices out of range
    with pytest.raises(RuntimeError, match="ups.0.matrix: not a sparse"):
        LocallyWeightedAutoencoder(_small_config(), hierarchy).load_state_dict(broken)


def test_part_upsampling_against_naive_rows_and_hard_borders(sphere):
    hierarchy = template_hierarchy(sphere[0], sphere[1], AutoencoderConfig(factors=[2]))
    rng = np.random.default_rng(7)
    selected = np.asarray(hierarchy.down[0].argmax(axis=1)).ravel()  # fine index of every coarse vertex
    assert np.allclose(hierarchy.vertices[0][selected], hierarchy.vertices[1])
    fine = hierarchy.vertices[0] + 1e-4 * rng.standard_normal(hierarchy.vertices[0].shape)  # no nearest-vertex ties
    up, coarse = hierarchy.up[0], fine[selected]
    wf = rng.random((len(fine), 3)) ** 6
    wf /= wf.sum(axis=1, keepdims=True)
    wc = level_weights(wf, hierarchy)[1]
    out = part_upsampling(up, wf, wc, fine, coarse, nearest_weight=1e-3).toarray()
    dense = up.toarray()
    for v in range(len(fine)):  # naive: same-part corner weights + the nearest coarse vertex of v's part
        row = dense[v] * (wc @ wf[v])
        own = np.flatnonzero(wc.argmax(axis=1) == wf[v].argmax())
        row[own[np.argmin(np.linalg.norm(coarse[own] - fine[v], axis=1))]] += 1e-3
        assert np.allclose(out[v], row / row.sum(), atol=1e-8)
    # one-hot weights: nothing crosses a border; one part: the barycentric up-sampling
    hard = np.eye(3)[(fine[:, 2] > 0).astype(int) + (fine[:, 0] > 0.5)]
    cut = part_upsampling(up, hard, level_weights(hard, hierarchy)[1], fine, coarse)
    regions, coarse_regions = hard.argmax(axis=1), level_weights(hard, hierarchy)[1].argmax(axis=1)
    rows, cols = cut.nonzero()
    assert np.all(regions[rows] == coarse_regions[cols]) and np.allclose(cut.sum(axis=1), 1)
    single = part_upsampling(up, np.ones((len(fine), 1)), np.ones((len(coarse), 1)), fine, coarse).toarray()
    assert np.abs(single - dense).max() < 2e-3
    # a part without a coarse vertex: its fine vertices get zero rows
    far = np.setdiff1d(np.arange(len(fine)), selected)[0]
    lonely = np.eye(2)[(np.arange(len(fine)) == far).astype(int)]
    zero = part_upsampling(up, lonely, level_weights(lonely, hierarchy)[1], fine, coarse).toarray()
    assert np.all(zero[far] == 0) and np.allclose(np.delete(zero, far, axis=0).sum(axis=1), 1)


def test_decoder_is_local_by_construction_for_one_hot_weights(sphere):
    """Part graphs + part-aware up-sampling + one-hot weights: a part's code cannot move another region."""
    torch.manual_seed(3)
    v = sphere[0]
    hierarchy = template_hierarchy(v, sphere[1], _small_config())
    hard = np.eye(3)[(v[:, 2] > 0).astype(int) + (v[:, 0] > 0.5)]
    assert all(np.all(w.sum(axis=0) > 0) for w in level_weights(hard, hierarchy))
    net = LocallyWeightedAutoencoder(_small_config(), hierarchy, hard).eval()
    p = torch.randn(4, 3, 6)
    regions = torch.as_tensor(hard.argmax(axis=1))
    with torch.no_grad():
        base = net.decode_parts(p)
        for part in range(3):
            q = p.clone()
            q[:, part] = torch.randn(4, 6)
            moved = (net.decode_parts(q) - base).norm(dim=-1)
            assert moved[:, regions != part].max() < 1e-6 and moved[:, regions == part].mean() > 1e-3
        # the plain up-sampling leaks across the borders
        plain = LWAEConfig(**{**_small_config().__dict__, "part_upsampling": False})
        leaky = LocallyWeightedAutoencoder(plain, hierarchy, hard).eval()
        leaky.load_state_dict({k: t for k, t in net.state_dict().items() if ".matrix." not in k}, strict=False)
        q = p.clone()
        q[:, 0] = torch.randn(4, 6)
        assert (leaky.decode_parts(q) - leaky.decode_parts(p)).norm(dim=-1)[:, regions != 0].max() > 1e-3
