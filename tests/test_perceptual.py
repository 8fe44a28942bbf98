"""The perception-level loss and its identity network trained here (image/perceptual.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from morphable.data.photos import PhotoDataset
from morphable.errors import MorphableError
from morphable.image.perceptual import IdentityEmbedding, perceptual_loss, train_identity_embedding


def test_the_loss_is_zero_for_the_photo_itself_and_passes_gradients_to_the_render():
    torch.manual_seed(0)
    net = IdentityEmbedding(dim=16, width=8).eval()
    photo = torch.rand(2, 32, 32, 3)
    coverage = torch.zeros(2, 32, 32)
    coverage[:, 8:24, 8:24] = 1.0
    assert perceptual_loss(net, photo, torch.rand(2, 32, 32, 3), torch.zeros(2, 32, 32)).item() == pytest.approx(0, abs=1e-6)
    render = torch.rand(2, 32, 32, 3, requires_grad=True)
    loss = perceptual_loss(net, photo, render, coverage)
    assert 0 < loss.item() <= 2
    loss.backward()
    assert render.grad[:, 8:24, 8:24].abs().sum() > 0 and render.grad[:, :8].abs().sum() == 0  # outside: the photo
    with pytest.raises(MorphableError, match="do not match"):
        perceptual_loss(net, photo, render[:, :16], coverage)


def test_an_identity_network_trained_on_the_synthetic_photos_tells_their_identities_apart(tiny_photos):
    dataset = PhotoDataset(tiny_photos)
    images = np.stack([dataset.image(i) for i in range(len(dataset.ids))]).transpose(0, 3, 1, 2) / 255.0
    labels = dataset.annotations["identity"]
    history = []
    net = train_identity_embedding(images, labels, dim=32, width=8, epochs=40, batch_size=16,
                                   progress=lambda e, loss, acc: history.append((loss, acc)))
    assert history[-1][0] < 0.5 * history[0][0] and history[-1][1] > 0.9
    with torch.no_grad():
        e = net(torch.as_tensor(images, dtype=torch.float32))
    similarity = (e @ e.T).numpy()
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    assert similarity[same & off_diagonal].mean() > similarity[~same].mean() + 0.3
    with pytest.raises(MorphableError, match="at least two identities"):
        train_identity_embedding(images[:2], np.zeros(2), epochs=1)
