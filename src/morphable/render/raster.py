"""Pure-torch differentiable mesh rasteriser: face index, barycentrics, depth, normals; interpolation,
silhouette anti-aliasing, back-projection.

Cameras follow :mod:`morphable.render.camera` (OpenCV convention: pixel ``(row i, column j)`` has its
centre at ``(u, v) = (j, i)``; depth is camera ``z``; perspective or orthographic). A batch of meshes that
share one topology, ``vertices (B, V, 3)``, renders into ``(B, H, W, ...)`` maps, with one camera for all
or one camera per mesh (same image size and projection kind).

Visibility (which triangle a pixel sees) is discrete and found without autograd, in the vertices' dtype:
every triangle's screen bounding box is clipped to the image and its pixels are enumerated in one flat list
(``repeat_interleave`` of the box sizes, chunked to ``budget`` candidates), the screen barycentrics ``b``
of each candidate decide coverage (``b >= 0``, evaluated relative to the box corner for precision), and a
z-buffer resolves occlusion: ``float32(z)`` (whose bits order like integers for positive values) and the
triangle index are packed into one int64 key and a single ``scatter_reduce(amin)`` keeps the nearest. No
back-face culling: open scans seen from behind render.

For the covered pixels only, depth and barycentrics of the visible triangle are then re-evaluated as torch
expressions of the vertices (and of the cameras' ``R, t``): with screen corners ``s_k`` and pixel ``p``,
``e_k = (s_{k+1} - p) x (s_{k+2} - p)`` (2D cross product), ``b_k = e_k / sum_j e_j``. Under perspective a
planar triangle projects projectively, ``1 / z`` is affine in screen space, ``1 / z = sum_k b_k / z_k``, and
the perspective-correct barycentrics are ``lambda_k = z b_k / z_k``; under orthographic projection
``lambda = b`` and ``z = sum_k b_k z_k``. So depth, barycentrics, normals and :func:`interpolate`
attributes are differentiable w.r.t. vertices and attributes for a fixed visible triangle. Coverage changes
(silhouettes) have no gradient in that hard image: :func:`antialias` gives them one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from morphable.errors import MorphableError
from morphable.mesh.normals import vertex_normals
from morphable.render.camera import Camera

_NO_HIT = torch.iinfo(torch.int64).max


@dataclass
class Rendering:
    """Output of :func:`rasterize` for an ``H x W`` image (``(B, H, W, ...)`` for a batch of meshes).

    Attributes:
        depth: ``([B,] H, W)`` camera ``z`` of the visible surface; 0 where no triangle covers the pixel.
        face_index: ``([B,] H, W)`` int64 index (into ``faces``) of the visible triangle; -1 where none.
        bary: ``([B,] H, W, 3)`` perspective-correct barycentric coordinates in that triangle; 0 where none.
        normals: ``([B,] H, W, 3)`` unit surface normals in the camera frame (interpolated vertex normals,
            or face normals with ``smooth=False``); 0 where none.
    """

    depth: torch.Tensor
    face_index: torch.Tensor
    bary: torch.Tensor
    normals: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """``([B,] H, W)`` bool, True where the mesh is visible."""
        return self.face_index >= 0


@dataclass
class _Views:
    """One camera per batch element, stacked: ``R (B, 3, 3)``, ``t (B, 3)``, ``f (B, 2)``, ``c (B, 2)``."""

    R: torch.Tensor
    t: torch.Tensor
    f: torch.Tensor
    c: torch.Tensor
    width: int
    height: int
    orthographic: bool

    @classmethod
    def of(cls, camera: Camera | Sequence[Camera], batch: int, like: torch.Tensor) -> _Views:
        cameras = [camera] * batch if isinstance(camera, Camera) else list(camera)
        if len(cameras) != batch:
            raise MorphableError(f"{len(cameras)} cameras for a batch of {batch} meshes")
        first = cameras[0]
        if any((c.width, c.height, c.orthographic) != (first.width, first.height, first.orthographic)
               for c in cameras):
            raise MorphableError("the cameras of a batch must share the image size and the projection kind")
        return cls(torch.stack([c.R.to(like) for c in cameras]), torch.stack([c.t.to(like) for c in cameras]),
                   torch.tensor([[c.fx, c.fy] for c in cameras], dtype=like.dtype, device=like.device),
                   torch.tensor([[c.cx, c.cy] for c in cameras], dtype=like.dtype, device=like.device),
                   first.width, first.height, first.orthographic)

    def transform(self, vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Camera-frame points ``(B, V, 3)`` and their pixel coordinates ``(B, V, 2)``."""
        v_cam = vertices @ self.R.transpose(1, 2) + self.t[:, None]
        xy = v_cam[..., :2] if self.orthographic else v_cam[..., :2] / v_cam[..., 2:]
        return v_cam, xy * self.f[:, None] + self.c[:, None]


def _as_batch(vertices: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, bool]:
    """``vertices`` as a floating ``(B, V, 3)`` tensor (float64 for integer input) and whether it was batched."""
    v = torch.as_tensor(vertices)
    if not v.is_floating_point():
        v = v.double()
    if v.dim() not in (2, 3) or v.shape[-1] != 3:
        raise MorphableError(f"vertices must be (V, 3) or (B, V, 3), got {tuple(v.shape)}")
    return (v, True) if v.dim() == 3 else (v[None], False)


def _edge_functions(corners: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``e_k = (s_{k+1} - p) x (s_{k+2} - p)``: ``corners (N, 3, 2)``, ``points (N, 2)`` -> ``(N, 3)``;
    ``e_k / sum_j e_j`` are the screen barycentrics of ``p``."""
    d = corners - points[:, None]
    d1, d2 = d.roll(-1, dims=1), d.roll(-2, dims=1)
    return d1[..., 0] * d2[..., 1] - d2[..., 0] * d1[..., 1]


def _gather(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of a ``(N, ...)`` tensor (``index_select``: faster than advanced indexing on CPU)."""
    return table.reshape(table.shape[0], -1).index_select(0, index.reshape(-1)).view(*index.shape, *table.shape[1:])


def _visible_faces(screen: torch.Tensor, z: torch.Tensor, faces: torch.Tensor, views: _Views, near: float,
                   budget: int) -> torch.Tensor:
    """The z-buffer pass (no autograd): per pixel of the ``(B, H, W)`` batch, flattened, the index
    ``b F + f`` of the nearest covering triangle, or -1.

    Args:
        screen: ``(B, V, 2)`` pixel coordinates; z: ``(B, V)`` camera depths; faces: ``(F, 3)``.
    """
    B, V = screen.shape[:2]
    F, H, W = faces.shape[0], views.height, views.width
    device, dtype = screen.device, screen.dtype
    corners = (faces[None] + (torch.arange(B, device=device) * V)[:, None, None]).reshape(-1, 3)
    tri = _gather(screen.reshape(B * V, 2), corners)  # (B F, 3, 2)
    tri_z = _gather(z.reshape(B * V), corners)
    x, y = tri[..., 0], tri[..., 1]
    lo_x = torch.minimum(torch.minimum(x[:, 0], x[:, 1]), x[:, 2]).ceil().clamp_min(0)
    lo_y = torch.minimum(torch.minimum(y[:, 0], y[:, 1]), y[:, 2]).ceil().clamp_min(0)
    hi_x = torch.maximum(torch.maximum(x[:, 0], x[:, 1]), x[:, 2]).floor().clamp_max(W - 1)
    hi_y = torch.maximum(torch.maximum(y[:, 0], y[:, 1]), y[:, 2]).floor().clamp_max(H - 1)
    rx, ry = x - lo_x[:, None], y - lo_y[:, None]  # corners relative to the box corner (precision)
    rx1, rx2, ry1, ry2 = rx.roll(-1, 1), rx.roll(-2, 1), ry.roll(-1, 1), ry.roll(-2, 1)
    c = rx1 * ry2 - rx2 * ry1  # (T, 3) edge functions at the box corner
    area2 = c.sum(dim=1)
    keep = ((tri_z > near).all(dim=1) & (lo_x <= hi_x) & (lo_y <= hi_y) & (area2.abs() > 1e-12))
    ids = torch.nonzero(keep).squeeze(1)
    inv = 1.0 / area2[ids, None]
    # b_k(box corner + (o_x, o_y)) = A0_k o_x + A1_k o_y + A2_k, stored transposed: rows of a (12, T) table
    table = torch.cat([(ry1 - ry2)[ids] * inv, (rx2 - rx1)[ids] * inv, c[ids] * inv,
                       tri_z[ids] if views.orthographic else 1.0 / tri_z[ids]], dim=1).T.contiguous()
    box_w = (hi_x - lo_x + 1)[ids]
    counts = (box_w * (hi_y - lo_y + 1)[ids]).long()
    ends = counts.cumsum(0)
    base = (ids // F) * (H * W) + lo_y[ids].long() * W + lo_x[ids].long()
    ints = torch.stack([ends - counts, base, ids]).contiguous()  # (3, T)
    zbuf = torch.full((B * H * W,), _NO_HIT, dtype=torch.long, device=device)
    first = 0
    while first < len(ids):
        done = int(ends[first - 1]) if first else 0
        last = max(first + 1, int(torch.searchsorted(ends, done + budget, right=True)))
        cand = torch.repeat_interleave(torch.arange(first, last, device=device), counts[first:last],
                                       output_size=int(ends[last - 1]) - done)
        coef = table.index_select(1, cand)
        start, pixel_base, g = ints.index_select(1, cand)
        offset = (torch.arange(done, done + len(cand), device=device) - start).to(dtype)
        w = box_w.index_select(0, cand)
        oy = torch.floor((offset + 0.5) / w)
        ox = offset - oy * w
        b0 = coef[6] + coef[0] * ox + coef[3] * oy
        b1 = coef[7] + coef[1] * ox + coef[4] * oy
        b2 = coef[8] + coef[2] * ox + coef[5] * oy
        s = b0 * coef[9] + b1 * coef[10] + b2 * coef[11]
        depth = s if views.orthographic else 1.0 / s
        inside = (torch.minimum(torch.minimum(b0, b1), b2) >= 0) & (depth > near)
        zbits = depth.to(torch.float32).view(torch.int32).to(torch.long)
        key = torch.where(inside, (zbits << 32) | g, _NO_HIT)
        zbuf.scatter_reduce_(0, pixel_base + oy.long() * W + ox.long(), key, reduce="amin")
        first = last
    return torch.where(zbuf == _NO_HIT, -1, zbuf & 0xFFFFFFFF)


def rasterize(vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray,
              camera: Camera | Sequence[Camera], *, near: float = 1e-6, smooth: bool = True,
              budget: int = 1 << 22) -> Rendering:
    """Z-buffer rasterisation of a triangle mesh (or a batch sharing ``faces``) into depth, triangle
    index, barycentrics and normals (module docstring), differentiable for the visible triangles.

    Triangles with a corner at ``z_c <= near`` are dropped (no clipping). A pixel is covered when its
    centre has all screen barycentrics ``>= 0`` (pixels on a shared edge go to the nearer triangle).

    Args:
        vertices: ``(V, 3)`` or ``(B, V, 3)`` world coordinates; the outputs use its dtype
            (float32/float64) and device.
        faces: ``(F, 3)`` integer.
        camera: a :class:`Camera`, or one per batch element.
        near: near-plane depth.
        smooth: normals from interpolated area-weighted vertex normals (True) or per-face (False).
        budget: at most this many (triangle, pixel) candidates are evaluated at once.

    Returns:
        :class:`Rendering` with ``(H, W)`` maps, ``(B, H, W)`` for batched ``vertices``.
    """
    vb, batched = _as_batch(vertices)
    B, V = vb.shape[:2]
    device, dtype = vb.device, vb.dtype
    f = torch.as_tensor(faces, dtype=torch.long, device=device)
    views = _Views.of(camera, B, vb)
    H, W = views.height, views.width
    v_cam, screen = views.transform(vb)
    with torch.no_grad():
        winner = _visible_faces(screen.detach(), v_cam[..., 2].detach(), f, views, near, budget)
    # the differentiable re-evaluation, for the covered pixels only
    pix = torch.nonzero(winner >= 0).squeeze(1)
    g = winner[pix]
    batch, face = g // len(f), g % len(f)
    corners = _gather(f, face) + (batch * V)[:, None]  # (P, 3) into the flattened batch
    in_image = pix % (H * W)
    point = torch.stack([in_image % W, in_image // W], dim=1).to(dtype)
    e = _edge_functions(_gather(screen.reshape(B * V, 2), corners), point)
    zc = _gather(v_cam[..., 2].reshape(B * V), corners)
    if views.orthographic:
        lam = e / e.sum(dim=1, keepdim=True)
        z = (lam * zc).sum(dim=1)
    else:  # lambda_k = (b_k / z_k) / sum_j (b_j / z_j), z = 1 / sum_j (b_j / z_j), b = e / sum(e)
        w = e / zc
        total = w.sum(dim=1, keepdim=True)
        lam = w / total
        z = e.sum(dim=1) / total[:, 0]
    flat_cam = v_cam.reshape(B * V, 3)
    if smooth:
        n_vertex = vertex_normals(v_cam, f).reshape(B * V, 3)  # normals commute with the rotation
        n = (_gather(n_vertex, corners) * lam[..., None]).sum(dim=1)
    else:
        tri = _gather(flat_cam, corners)
        n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    n = torch.nn.functional.normalize(n, dim=-1)

    shape = (B, H, W) if batched else (H, W)
    depth = torch.zeros(B * H * W, dtype=dtype, device=device).index_put((pix,), z)
    face_index = torch.full((B * H * W,), -1, dtype=torch.long, device=device).index_put_((pix,), face)
    bary = torch.zeros(B * H * W, 3, dtype=dtype, device=device).index_put((pix,), lam)
    normals = torch.zeros(B * H * W, 3, dtype=dtype, device=device).index_put((pix,), n)
    return Rendering(depth.view(shape), face_index.view(shape), bary.view(*shape, 3), normals.view(*shape, 3))


def interpolate(attributes: torch.Tensor, faces: torch.Tensor | np.ndarray, face_index: torch.Tensor,
                bary: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes at rasterised pixels (differentiable).

    ``out[p] = sum_k bary[p, k] attributes[faces[face_index[p], k]]`` where ``face_index[p] >= 0``, else 0.

    Args:
        attributes: ``(V, C)`` per-vertex values (colours, normals, texture coordinates, ...), shared by
            the batch, or ``(B, V, C)`` one set per batch element (with ``face_index (B, H, W)``).
        faces: ``(F, 3)`` integer, the faces that were rasterised (or ``face_uvs`` with ``uvs`` as attributes).
        face_index: ``(...)`` int64 triangle per pixel, -1 for none (:attr:`Rendering.face_index`).
        bary: ``(..., 3)`` barycentric coordinates (:attr:`Rendering.bary`).

    Returns:
        ``(..., C)`` interpolated values, 0 where ``face_index < 0``.
    """
    f = torch.as_tensor(faces, dtype=torch.long, device=attributes.device)
    flat_index = face_index.reshape(-1)
    pix = torch.nonzero(flat_index >= 0).squeeze(1)  # only covered pixels are evaluated
    corners = _gather(f, flat_index[pix])  # (P, 3)
    table = attributes.reshape(-1, attributes.shape[-1])
    if attributes.dim() == 3:
        B, V = attributes.shape[:2]
        if face_index.shape[0] != B:
            raise MorphableError(f"attributes for {B} meshes but face_index of shape {tuple(face_index.shape)}")
        corners = corners + (pix // (flat_index.numel() // B) * V)[:, None]
    values = (_gather(table, corners) * bary.reshape(-1, 3)[pix][..., None].to(table.dtype)).sum(dim=1)
    out = torch.zeros(flat_index.numel(), table.shape[1], dtype=values.dtype, device=values.device)
    return out.index_put((pix,), values).view(*face_index.shape, table.shape[1])


def edge_neighbours(faces: torch.Tensor | np.ndarray) -> torch.Tensor:
    """For every face and edge ``k`` (the edge opposite corner ``k``), the face across it: ``(F, 3)`` int64,
    -1 on a boundary edge. Of the faces on a non-manifold edge (more than two), the first two in sorted
    order are paired and the others see a boundary."""
    f = torch.as_tensor(faces, dtype=torch.long)
    a, b = f.roll(-1, dims=1).reshape(-1), f.roll(-2, dims=1).reshape(-1)
    key = torch.minimum(a, b) * (int(f.max()) + 1 if f.numel() else 1) + torch.maximum(a, b)
    order = torch.argsort(key)
    same = torch.nonzero(key[order][1:] == key[order][:-1]).squeeze(1)
    same = same[torch.cat([torch.ones(min(1, len(same)), dtype=torch.bool, device=f.device),
                           same[1:] != same[:-1] + 1])] if len(same) else same  # pairs, not chains
    out = torch.full((f.numel(),), -1, dtype=torch.long, device=f.device)
    out[order[same]] = order[same + 1] // 3
    out[order[same + 1]] = order[same] // 3
    return out.view(-1, 3)


_WALK_STEPS = 8


def _silhouette_crossings(screen: torch.Tensor, faces: torch.Tensor, neighbours: torch.Tensor, batch: torch.Tensor,
                          tri: torch.Tensor, other: torch.Tensor, pa: torch.Tensor,
                          po: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For pixel pairs ``(a, o)`` whose segment starts in triangle ``tri`` (of mesh ``batch``), the silhouette
    edge the segment crosses, found by walking from triangle to neighbour across the exit edges.

    Pairs whose triangles share a vertex and face the same way on screen (the bulk: neighbouring pixels on
    one smooth surface) are skipped without walking.

    Args:
        screen: ``(B, V, 2)`` projected vertices (no autograd); faces, neighbours ``(F, 3)``.
        batch, tri: ``(N,)``; other: ``(N,)`` the triangle at ``o`` (-1: background); pa, po: ``(N, 2)``
            the pixel centres.

    Returns:
        ``found (N,)`` bool and ``edge (N, 2)`` the edge's two vertex indices into ``screen``.
    """
    B, V = screen.shape[:2]
    screen = screen.reshape(B * V, 2)
    all_corners = faces[None] + (torch.arange(B, device=screen.device) * V)[:, None, None]
    corners_screen = _gather(screen, all_corners.reshape(-1, 3))
    orientation = _edge_functions(corners_screen, torch.zeros_like(corners_screen[:, 0])).sum(dim=1).sign()
    orientation = orientation.view(B, len(faces))
    found = torch.zeros(len(tri), dtype=torch.bool, device=screen.device)
    edge = torch.zeros(len(tri), 2, dtype=torch.long, device=screen.device)
    mine, theirs = _gather(faces, tri), _gather(faces, other.clamp(min=0))
    touching = (mine[:, :, None] == theirs[:, None, :]).flatten(1).any(dim=1)
    same_way = orientation[batch, tri] == orientation[batch, other.clamp(min=0)]
    active = torch.nonzero((other < 0) | ~(touching & same_way)).squeeze(1)
    current = tri.clone()
    for _ in range(_WALK_STEPS):
        if not len(active):
            break
        t_now, b_now = current[active], batch[active]
        corners = _gather(faces, t_now) + (b_now * V)[:, None]
        s = _gather(screen, corners)
        e_a, e_o = _edge_functions(s, pa[active]), _edge_functions(s, po[active])
        area = e_a.sum(dim=1, keepdim=True)
        b_a, b_o = e_a / area, e_o / area
        falling = b_o < b_a
        t = torch.where(falling, b_a / torch.where(falling, b_a - b_o, torch.ones_like(b_a)), torch.inf)
        t_exit, k = t.min(dim=1)
        across = neighbours[t_now, k]
        silhouette = (across < 0) | (orientation[b_now, across.clamp(min=0)] != orientation[b_now, t_now])
        hit = (t_exit <= 1) & silhouette
        found[active[hit]] = True
        edge[active[hit]] = corners[hit].gather(1, torch.stack([(k[hit] + 1) % 3, (k[hit] + 2) % 3], dim=1))
        go_on = (t_exit <= 1) & ~silhouette
        current[active[go_on]] = across[go_on]
        active = active[go_on]
    return found, edge


def antialias(color: torch.Tensor, rendering: Rendering, vertices: torch.Tensor | np.ndarray,
              faces: torch.Tensor | np.ndarray, camera: Camera | Sequence[Camera], *,
              neighbours: torch.Tensor | None = None) -> torch.Tensor:
    """Analytic silhouette anti-aliasing (in the style of nvdiffrast's ``antialias``): blends pixel pairs
    across silhouette edges by the edge's sub-pixel position, so that silhouettes pass gradients to vertices.

    For every horizontally or vertically adjacent pixel pair whose triangles differ, the pixel ``a`` whose
    triangle ``T`` is in front (the other, ``o``, is background or farther) is found. The segment from ``a``
    to ``o`` is followed from ``T`` across its exit edges, triangle to neighbour (at most 8 triangles, so
    that sub-pixel triangles do not hide the silhouette), until it crosses a silhouette edge: a boundary
    edge, or one whose neighbour faces the other way on screen (pairs that reach ``o`` first, or none
    within 8 triangles, are left alone). That edge crosses the segment at the fraction
    ``d = e(a) / (e(a) - e(o))`` (``e``: the edge function of its two projected vertices). Seen as unit
    boxes, the surface then covers ``d - 1/2`` of ``o``'s box when ``d > 1/2`` and leaves ``1/2 - d`` of
    ``a``'s box when ``d < 1/2``, so

        c_o += (d - 1/2) (c_a - c_o)    or    c_a += (1/2 - d) (c_o - c_a),

    all changes computed from the input image and summed. An edge is used by horizontal pairs when it is
    closer to vertical on screen (``|du| <= |dv|``) and by vertical pairs otherwise, so no edge is counted
    twice; the blended coverage of a straight edge is then exact per pixel row (column). The cost is
    proportional to the silhouette pixels.

    Args:
        color: ``([B,] H, W, C)`` image composited over its background (add a coverage channel, 1 on the
            mesh and 0 off it, to get a soft mask).
        rendering: the :func:`rasterize` output it was shaded from.
        vertices, faces, camera: as given to :func:`rasterize`.
        neighbours: :func:`edge_neighbours` of ``faces`` (computed when not given; pass it to save ~3 ms
            per call on 22k triangles).

    Returns:
        The blended image, shape of ``color``, differentiable w.r.t. ``color`` and the vertex positions.
    """
    vb = _as_batch(vertices)[0]
    B, V = vb.shape[:2]
    f = torch.as_tensor(faces, dtype=torch.long, device=vb.device)
    nb = (edge_neighbours(f) if neighbours is None else neighbours).to(vb.device)
    views = _Views.of(camera, B, vb)
    H, W = views.height, views.width
    screen = views.transform(vb)[1]
    img = color.reshape(B * H * W, -1)
    fi = rendering.face_index.reshape(-1)
    depth = rendering.depth.reshape(-1)
    with torch.no_grad():
        grid = fi.view(B, H, W)
        left = torch.nonzero((grid[:, :, :-1] != grid[:, :, 1:]).reshape(-1)).squeeze(1)  # pairs (p, p + 1)
        top = torch.nonzero((grid[:, :-1] != grid[:, 1:]).reshape(-1)).squeeze(1)  # pairs (p, p + W)
        left = left + left // (W - 1)  # from the (B, H, W - 1) grid to pixel indices
        top = top + top // ((H - 1) * W) * W
        p, q = torch.cat([left, top]), torch.cat([left + 1, top + W])
        horizontal = torch.arange(len(p), device=vb.device) < len(left)
        p_front = (fi[q] < 0) | ((fi[p] >= 0) & (depth[p] <= depth[q]))
        a, o = torch.where(p_front, p, q), torch.where(p_front, q, p)

        def pixel(idx: torch.Tensor) -> torch.Tensor:
            return torch.stack([idx % W, (idx // W) % H], dim=1).to(screen.dtype)

        found, edge = _silhouette_crossings(screen.detach(), f, nb, a // (H * W), fi[a], fi[o], pixel(a), pixel(o))
        span = (screen.detach().reshape(B * V, 2)[edge[:, 1]] - screen.detach().reshape(B * V, 2)[edge[:, 0]]).abs()
        found &= torch.where(horizontal, span[:, 1] >= span[:, 0], span[:, 0] > span[:, 1])
        a, o, edge = a[found], o[found], edge[found]
        pa, po = pixel(a), pixel(o)
    s1, s2 = _gather(screen.reshape(B * V, 2), edge).unbind(1)

    def edge_function(point: torch.Tensor) -> torch.Tensor:
        d1, d2 = s1 - point, s2 - point
        return d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]

    ea = edge_function(pa)
    d = ea / (ea - edge_function(po))
    into_o = (d >= 0.5).detach()
    target, source = torch.where(into_o, o, a), torch.where(into_o, a, o)
    delta = (d - 0.5).abs()[:, None] * (img[source] - img[target])
    return img.index_add(0, target, delta).view(color.shape)


def normal_map(vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, camera: Camera, *,
               smooth: bool = True, **options: Any) -> torch.Tensor:
    """Camera-frame unit normals per pixel, ``(H, W, 3)``: the interpolated area-weighted vertex normals
    (or face normals with ``smooth=False``) rotated by ``R``, ``n_c = R n``; 0 where the mesh is not
    visible. ``options`` go to :func:`rasterize` (``near``, ``budget``)."""
    return rasterize(vertices, faces, camera, smooth=smooth, **options).normals


def depth_map(vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, camera: Camera,
              **options: Any) -> torch.Tensor:
    """Camera ``z`` of the visible surface per pixel, ``(H, W)``; 0 where the mesh is not visible.
    ``options`` go to :func:`rasterize`."""
    return rasterize(vertices, faces, camera, **options).depth


def mask(vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, camera: Camera,
         **options: Any) -> torch.Tensor:
    """``(H, W)`` bool, True where the mesh covers the pixel centre. ``options`` go to :func:`rasterize`."""
    return rasterize(vertices, faces, camera, **options).mask


def backproject(depth: torch.Tensor, camera: Camera, world: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Lift every pixel with ``depth > 0`` to 3D.

    ``X_c = depth(i, j) * ((j - cx) / fx, (i - cy) / fy, 1)`` (orthographic: ``((j - cx) / fx, (i - cy) / fy,
    depth(i, j))``, :meth:`Camera.unproject`); with ``world=True`` also
    ``X = R^T (X_c - t)``.

    Args:
        depth: ``(H, W)`` depth map (0 = no measurement).
        camera: the :class:`Camera` that produced it.
        world: return world (True) or camera (False) coordinates.

    Returns:
        ``points (N, 3)`` and ``pixels (N, 2)`` int64 ``(row, column)``, in row-major pixel order.
    """
    pixels = torch.nonzero(depth > 0)
    z = depth[pixels[:, 0], pixels[:, 1]]
    points = camera.unproject(pixels.flip(1).to(depth.dtype), z)
    return (camera.camera_to_world(points) if world else points), pixels


def depth_point_cloud(vertices: torch.Tensor | np.ndarray, faces: torch.Tensor | np.ndarray, camera: Camera,
                      n_points: int = 2500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A single-view observation: render depth, back-project, keep ``n_points`` random valid pixels.

    Args:
        vertices: ``(V, 3)`` world coordinates; faces: ``(F, 3)``.
        camera: the viewing :class:`Camera`.
        n_points: number of pixels drawn without replacement among those that see the mesh.
        seed: seed of the pixel draw.

    Returns:
        ``points (N, 3)`` on the visible surface and their unit ``normals (N, 3)`` (interpolated vertex
        normals), both in world coordinates with the dtype and device of ``vertices``.

    Raises:
        MorphableError: the camera sees fewer than ``n_points`` pixels of the mesh.
    """
    render = rasterize(vertices, faces, camera)
    points, pixels = backproject(render.depth, camera, world=True)
    if len(points) < n_points:
        raise MorphableError(f"the camera sees the mesh in only {len(points)} pixels, fewer than the "
                             f"{n_points} points requested: move the camera closer or raise the resolution")
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(points), generator=generator)[:n_points].to(points.device)
    normals_cam = render.normals[pixels[pick, 0], pixels[pick, 1]]
    return points[pick], normals_cam @ camera.R.to(normals_cam)
