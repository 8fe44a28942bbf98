"""Landmark heatmaps: 68 Gaussians rendered at landmark positions (VRN-guided's extra input channels and the
landmark networks' targets) and their peaks read back.

A landmark at crop pixel ``p`` gives, on a map of ``H x W`` pixels each covering ``scale`` crop pixels, the
channel ``h(q) = exp(-|q - p / scale|^2 / (2 sigma^2))`` over map pixel centres ``q`` (integers).
"""

from __future__ import annotations

import torch


def gaussian_heatmaps(landmarks: torch.Tensor, size: int, sigma: float = 1.0, scale: float = 1.0) -> torch.Tensor:
    """``landmarks (B, L, 2)`` crop pixels -> ``(B, L, size, size)`` Gaussians of ``sigma`` map pixels."""
    p = landmarks / scale
    grid = torch.arange(size, dtype=p.dtype, device=p.device)
    gx = torch.exp(-(grid.view(1, 1, -1) - p[..., 0:1]) ** 2 / (2 * sigma ** 2))  # (B, L, W)
    gy = torch.exp(-(grid.view(1, 1, -1) - p[..., 1:2]) ** 2 / (2 * sigma ** 2))  # (B, L, H)
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def heatmap_peaks(heatmaps: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``(B, L, H, W)`` -> ``(B, L, 2)`` crop pixels of each channel's maximum, refined to sub-pixel accuracy
    by a parabola through the maximum and its two neighbours along each axis (exact for a sampled Gaussian's
    log; here on the values, the usual refinement), then multiplied by ``scale``."""
    B, L, H, W = heatmaps.shape
    flat = heatmaps.reshape(B, L, -1).argmax(dim=-1)
    y, x = flat // W, flat % W

    def refine(values: torch.Tensor, index: torch.Tensor, n: int, along_x: bool) -> torch.Tensor:
        lo, hi = (index - 1).clamp(0, n - 1), (index + 1).clamp(0, n - 1)
        def at(i: torch.Tensor) -> torch.Tensor:
            k = y * W + i if along_x else i * W + x
            return values.reshape(B, L, -1).gather(-1, k.unsqueeze(-1)).squeeze(-1)
        a, b, c = at(lo), at(index), at(hi)
        denominator = a - 2 * b + c
        offset = torch.where((denominator < 0) & (lo < index) & (index < hi), 0.5 * (a - c) / denominator,
                             torch.zeros_like(b))
        return index.to(heatmaps.dtype) + offset.clamp(-0.5, 0.5)

    log = torch.log(heatmaps.clamp_min(1e-12))
    return torch.stack([refine(log, x, W, True), refine(log, y, H, False)], dim=-1) * scale
