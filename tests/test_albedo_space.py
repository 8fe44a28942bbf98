"""The PCA albedo space (data/albedo_space.py): exact in-span reconstruction, unit-variance coefficients,
the torch path equal to numpy, box filtering against a loop, the photo generator's textures, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphable.data.albedo_space import AlbedoSpace, box_downsample, read_albedo_textures
from morphable.errors import MorphableError


def low_rank_textures(n: int, rank: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mean, modes = rng.uniform(0.2, 0.6, (3, 8, 16)), rng.normal(size=(rank, 3, 8, 16)) * 0.05
    return mean + np.einsum("nk,kchw->nchw", rng.normal(size=(n, rank)), modes)


def test_an_in_span_texture_is_reconstructed_and_training_coefficients_have_unit_variance():
    textures = low_rank_textures(40, 5)
    space = AlbedoSpace.fit(textures, 5)
    flat = space.basis.reshape(5, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(5), atol=1e-12)
    coefficients = space.project(textures)
    np.testing.assert_allclose(coefficients.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(coefficients.std(axis=0, ddof=1), 1, atol=1e-12)
    new = low_rank_textures(3, 5)  # the same modes, other coefficients: in the span
    np.testing.assert_allclose(space.texture(space.project(new)), new, atol=1e-10)
    np.testing.assert_allclose(space.texture(np.zeros((1, 5)))[0], textures.mean(axis=0), atol=1e-12)
    c = torch.tensor(coefficients[:4], dtype=torch.float64, requires_grad=True)
    out = space.texture(c)
    np.testing.assert_allclose(out.detach().numpy(), space.texture(coefficients[:4]), atol=1e-12)
    out.sum().backward()
    assert c.grad.abs().sum() > 0
    again = AlbedoSpace.from_tensors(space.tensors())
    np.testing.assert_allclose(again.texture(coefficients[:2]), space.texture(coefficients[:2]), atol=1e-5)


def test_fitting_refuses_impossible_sizes():
    with pytest.raises(MorphableError, match="1..39 components, not 40"):
        AlbedoSpace.fit(low_rank_textures(40, 5), 40)
    with pytest.raises(MorphableError, match="fewer than 6 directions"):
        AlbedoSpace.fit(low_rank_textures(40, 5), 6)
    with pytest.raises(MorphableError, match="no albedo space"):
        AlbedoSpace.from_tensors({})


def test_box_downsampling_equals_a_loop():
    texture = np.random.default_rng(1).uniform(size=(3, 8, 16))
    small = box_downsample(texture, 2)
    expected = np.array([[[texture[c, 4 * i:4 * i + 4, 4 * j:4 * j + 4].mean() for j in range(4)] for i in range(2)]
                         for c in range(3)])
    np.testing.assert_allclose(small, expected, atol=1e-15)
    with pytest.raises(MorphableError, match="cannot be box-filtered to 3 rows"):
        box_downsample(texture, 3)


def test_the_generators_textures_give_a_space_that_explains_held_out_identities(tiny_photos, tmp_path):
    import json

    splits = json.loads((tiny_photos / "dataset.json").read_text())["splits"]
    train, held_out = splits["train"]["identities"], splits["test"]["identities"]
    textures = read_albedo_textures(tiny_photos / "albedo", train, 32)
    assert textures.shape[1:] == (3, 32, 64) and 0 < textures.min() and textures.max() < 1  # linear RGB
    space = AlbedoSpace.fit(textures, len(train) - 1)
    other = read_albedo_textures(tiny_photos / "albedo", held_out, 32)
    mean_error = np.abs(other - space.mean).mean()
    fitted_error = np.abs(space.texture(space.project(other)) - other).mean()
    assert fitted_error < 0.8 * mean_error, (fitted_error, mean_error)
    broken = tmp_path / "albedo"
    broken.mkdir()
    (broken / "0003.png").write_bytes(b"not a png")
    with pytest.raises(MorphableError, match=r"0003\.png.*cannot read the albedo texture"):
        read_albedo_textures(broken, [3], 32)
