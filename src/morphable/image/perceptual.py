"""HRN's perception-level loss and the face-identity network it needs, trained here.

HRN (after Deep3DFaceRecon) compares a pretrained face-recognition network's embeddings of the photo and of
the render: ``L_per = 1 - <e(I), e(R)>`` with unit embeddings ``e``. No such network can be downloaded here,
so the substitute is an identity embedding trained in the package on the synthetic photos' identity labels:
a :class:`~morphable.image.resnet.ResNet` followed by a linear layer to ``D`` dimensions, L2-normalised,
trained with a cosine-softmax (NormFace) classifier, ``p(y | x) = softmax_y(s <e(x), w_y / |w_y|>)`` with scale
``s = 16``, cross-entropy on the training identities. It learns what tells those identities apart (face
shape as shaded, albedo), which is what the term is for; it has never seen a real face, so on real photos it
is a weaker prior than a network trained on millions of them. Any network that maps ``(B, 3, H, W)`` crops in
[0, 1] to ``(B, D)`` can be passed instead (a user's own face-recognition model, loaded from safetensors).

The render is composited over the photo before embedding (``C R + (1 - C) I`` with the coverage ``C``), as
Deep3DFaceRecon does, so the background does not count as a difference.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from morphable.errors import MorphableError
from morphable.image.resnet import ResNet

COSINE_SCALE = 16.0


class IdentityEmbedding(nn.Module):
    """``x: (B, 3, H, W)`` in [0, 1] -> ``(B, dim)`` unit embeddings: a ResNet, a linear layer, L2 normalisation."""

    def __init__(self, dim: int = 128, depth: int = 18, width: int = 16) -> None:
        super().__init__()
        self.backbone = ResNet(depth, 3, width)
        self.project = nn.Linear(self.backbone.features, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.project(self.backbone(x)), dim=-1)


def perceptual_loss(embed: Callable[[torch.Tensor], torch.Tensor], photo: torch.Tensor, render: torch.Tensor,
                    coverage: torch.Tensor) -> torch.Tensor:
    """``1 - mean_b <e(I_b), e(C_b R_b + (1 - C_b) I_b)>``: images ``(B, H, W, 3)``, coverage ``(B, H, W)``."""
    if photo.shape != render.shape or photo.shape[:-1] != coverage.shape:
        raise MorphableError(f"perceptual loss: photo {tuple(photo.shape)}, render {tuple(render.shape)}, "
                             f"coverage {tuple(coverage.shape)} do not match")
    composite = coverage[..., None] * render + (1 - coverage[..., None]) * photo
    a = nn.functional.normalize(embed(photo.permute(0, 3, 1, 2)), dim=-1)
    b = nn.functional.normalize(embed(composite.permute(0, 3, 1, 2)), dim=-1)
    return 1 - (a * b).sum(-1).mean()


def train_identity_embedding(images: np.ndarray, labels: np.ndarray, *, dim: int = 128, width: int = 16,
                             epochs: int = 10, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                             device: str | torch.device = "cpu",
                             progress: Callable[[int, float, float], None] | None = None) -> IdentityEmbedding:
    """Train :class:`IdentityEmbedding` (module docstring) on ``images (N, 3, H, W)`` in [0, 1] with integer
    identity ``labels (N,)``; horizontal flips as augmentation (a face's identity survives them). ``progress``
    gets ``(epoch, mean loss, training accuracy)`` after each epoch. Returns the network in eval mode."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    _, y = np.unique(np.asarray(labels), return_inverse=True)
    y = torch.as_tensor(y, dtype=torch.long)
    if x.dim() != 4 or x.shape[1] != 3 or len(x) != len(y):
        raise MorphableError(f"identity training needs images (N, 3, H, W) and N labels, got {tuple(x.shape)} "
                             f"and {len(y)}")
    classes = int(y.max()) + 1
    if classes < 2:
        raise MorphableError("identity training needs at least two identities")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = IdentityEmbedding(dim, 18, width).to(device)
    centres = nn.Parameter(torch.randn(classes, dim, generator=generator).to(device))
    optimizer = torch.optim.Adam([*net.parameters(), centres], lr=lr)
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(len(x), generator=generator)
        total, correct = 0.0, 0
        for start in range(0, len(x), batch_size):
            index = order[start:start + batch_size]
            batch = x[index].to(device)
            flip = torch.rand(len(index), generator=generator) < 0.5
            batch = torch.where(flip.to(device)[:, None, None, None], batch.flip(-1), batch)
            logits = COSINE_SCALE * net(batch) @ nn.functional.normalize(centres, dim=-1).T
            loss = nn.functional.cross_entropy(logits, y[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
            correct += int((logits.argmax(-1).cpu() == y[index]).sum())
        if progress is not None:
            progress(epoch, total / len(x), correct / len(x))
    return net.eval()
