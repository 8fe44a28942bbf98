"""Differentiable rasteriser: forward + backward of a 224 x 224 SH-shaded render of ICT-FaceKit meshes.

Cases: the outer skin (11,248 vertices, 22,288 triangles) and the whole head (26,719 vertices, 52,220
triangles incl. eyes, teeth and mouth socket), batch 1 and 4 (four identities, four yaws), hard (z-buffer
only) and soft (plus silhouette anti-aliasing), one CPU thread, and CUDA when ``torch.cuda.is_available()``.
One step = ``render_shaded`` (rasterise, interpolate albedo, smooth normals, 9-band SH shading, [antialias])
and the backward pass of a loss on image and mask w.r.t. the vertices. All cases run interleaved, ``--repeat``
rounds, so that a loaded machine slows every case alike; wall time (min and median) and process CPU time
(min) per step are reported, and the ratios to the hard case (CPU min, wall median).

References, in the same run:
* ``previous``: the bounding-box rasteriser this module replaced (commit 261d3ab, float64 resolve, batch
  by a Python loop), loaded from git, with the same interpolation and shading (forward + backward, hard).
* ``naive``: a per-pixel Python loop (vectorised over triangles) at 32 x 32, whose face ids the
  rasteriser must reproduce; its time per pixel times 224^2 estimates a 224 x 224 frame.
* ``embreex``: Embree ray casting of the same pixels through trimesh (non-differentiable, face ids only),
  when ``embreex`` is installed.

Usage: OMP_NUM_THREADS=1 python benchmarks/bm_raster.py [--ict PATH] [--repeat 7]
Writes benchmarks/results/bm_raster.json and prints a table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ICT = ROOT.parent / "shared" / "data" / "ict-facekit" / "ict_face_model_light_f32.npz"
PREVIOUS_COMMIT = "261d3ab"
SIZE = 224


def scene(model, n_vertices: int, batch: int):
    """Vertices ``(B, V, 3)`` float32 (identities 0..B-1 at +1 sigma), faces, cameras (yaw -15..+15 deg),
    albedo ``(B, V, 3)`` and one SH light."""
    import numpy as np
    import torch

    from morphable.render import Camera

    sub = model.subset_vertices(n_vertices) if n_vertices < model.n_vertices else model
    shape = np.eye(batch, sub.n_shape)
    verts = torch.tensor(sub.vertices(shape), dtype=torch.float32)
    centre = verts[0].mean(dim=0).double()
    cameras = []
    for k in range(batch):
        yaw = math.radians(-15 + 30 * k / max(batch - 1, 1))
        eye = centre + 60.0 * torch.tensor([math.sin(yaw), 0.0, math.cos(yaw)], dtype=torch.float64)
        cameras.append(Camera.look_at(eye, centre, fov_deg=25, width=SIZE, height=SIZE))
    rng = np.random.default_rng(0)
    albedo = torch.tensor(0.6 + 0.1 * rng.random((batch, sub.n_vertices, 3)), dtype=torch.float32)
    sh = torch.zeros(9, 3)
    sh[0], sh[2], sh[3] = 2 * math.sqrt(math.pi), -1.0, 0.3
    return verts, torch.as_tensor(sub.faces), cameras, albedo, sh


def step_fn(verts, faces, cameras, albedo, sh, soft: bool, device):
    """One forward + backward of ``render_shaded`` on ``device``."""
    import torch

    from morphable.render import edge_neighbours, render_shaded

    v0, a, light, f = verts.to(device), albedo.to(device), sh.to(device), faces.to(device)
    neighbours = edge_neighbours(f)  # once per topology

    def step():
        v = v0.clone().requires_grad_()
        image, mask = render_shaded(v, f, cameras, light, albedo=a, antialias=soft, neighbours=neighbours)
        (image.square().mean() + mask.mean()).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return v.grad

    return step


def previous_step_fn(verts, faces, cameras, albedo, sh):
    """The replaced rasteriser (git show PREVIOUS_COMMIT) with today's interpolation and shading, or None."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{PREVIOUS_COMMIT}:src/morphable/render/raster.py"],
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    with tempfile.NamedTemporaryFile("w", suffix="_previous_raster.py", delete=False) as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("previous_raster", handle.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(handle.name)

    from morphable.render import interpolate
    from morphable.render.shading import shade

    def step():
        v = verts.clone().requires_grad_()
        loss = 0.0
        for k, cam in enumerate(cameras):
            r = module.rasterize(v[k], faces, cam)
            image = shade(interpolate(albedo[k], faces, r.face_index, r.bary), r.normals, sh)
            loss = loss + image.square().mean()
        loss.backward()
        return v.grad

    return step


def naive_face_ids(verts, faces, cam, size: int):
    """Per-pixel loop (vectorised over triangles): nearest Moeller-Trumbore hit in the camera frame."""
    import numpy as np

    X = verts @ cam.R.numpy().T + cam.t.numpy()
    tri = X[faces]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    out = np.full((size, size), -1)
    for i in range(size):
        for j in range(size):
            d = np.array([(j - cam.cx) / cam.fx, (i - cam.cy) / cam.fy, 1.0])
            p = np.cross(d, e2)
            det = (e1 * p).sum(1)
            inv = 1.0 / np.where(np.abs(det) > 1e-15, det, np.inf)
            s = -tri[:, 0]
            u = (s * p).sum(1) * inv
            q = np.cross(s, e1)
            v = (q @ d) * inv
            t = (e2 * q).sum(1) * inv
            hit = (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
            if hit.any():
                out[i, j] = np.argmin(np.where(hit, t, np.inf))
    return out


def embree_face_ids(verts, faces, cam):
    """Embree (trimesh + embreex) first hits of the pixel rays: face ids ``(H, W)``, or None without embreex."""
    try:
        import trimesh
        from trimesh.ray.ray_pyembree import RayMeshIntersector
    except ImportError:
        return None
    import numpy as np

    intersector = RayMeshIntersector(trimesh.Trimesh(verts, faces, process=False))
    directions = (cam.rays().numpy() @ cam.R.numpy()).reshape(-1, 3)
    origins = np.broadcast_to(cam.center.numpy(), directions.shape)
    ids = intersector.intersects_first(origins, directions)
    return ids.reshape(cam.height, cam.width)


def measure(fn) -> tuple[float, float]:
    """Wall and process CPU time of one call, in ms."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return 1e3 * (time.perf_counter() - t0), 1e3 * (time.process_time() - c0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ict", type=Path, default=DEFAULT_ICT)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    import torch

    from morphable.data.linear import ICT_SKIN_VERTICES, load_ict
    from morphable.render import Camera, rasterize

    torch.set_num_threads(1)
    model = load_ict(args.ict)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    cases, steps = [], {}
    for mesh, n in (("skin", ICT_SKIN_VERTICES), ("head", model.n_vertices)):
        for batch in (1, 4):
            data = scene(model, n, batch)
            for device in devices:
                for soft in (False, True):
                    key = (mesh, batch, device.type, "soft" if soft else "hard")
                    steps[key] = step_fn(*data, soft, device)
                    cases.append({"mesh": mesh, "triangles": len(data[1]), "batch": batch, "device": device.type,
                                  "mode": key[3]})
            previous = previous_step_fn(*data)
            if previous is not None:
                steps[(mesh, batch, "cpu", "previous")] = previous
                cases.append({"mesh": mesh, "triangles": len(data[1]), "batch": batch, "device": "cpu",
                              "mode": "previous"})
    for step in steps.values():  # warm-up
        step()
    runs = {key: [] for key in steps}
    for _ in range(args.repeat):  # interleaved rounds
        for key, step in steps.items():
            runs[key].append(measure(step))
    for case in cases:
        wall, cpu = zip(*runs[(case["mesh"], case["batch"], case["device"], case["mode"])])
        case.update(wall_min_ms=min(wall), wall_median_ms=statistics.median(wall), cpu_min_ms=min(cpu))
    by_key = {(c["mesh"], c["batch"], c["device"], c["mode"]): c for c in cases}
    for case in cases:
        hard = by_key[(case["mesh"], case["batch"], case["device"], "hard")]
        case["vs_hard_wall_median"] = case["wall_median_ms"] / hard["wall_median_ms"]
        case["vs_hard_cpu"] = case["cpu_min_ms"] / hard["cpu_min_ms"]

    # references on the skin, one view
    verts, faces, cameras, _, _ = scene(model, ICT_SKIN_VERTICES, 1)
    V, F = verts[0].double().numpy(), faces.numpy()
    small = Camera.look_at(cameras[0].center, verts[0].mean(dim=0).double(), fov_deg=25, width=32, height=32)
    t0 = time.perf_counter()
    naive = naive_face_ids(V, F, small, 32)
    naive_s = time.perf_counter() - t0
    ours = rasterize(torch.from_numpy(V), F, small).face_index.numpy()
    references = {"naive_32px_s": naive_s, "naive_224px_estimate_s": naive_s * (SIZE / 32) ** 2,
                  "naive_32px_face_id_agreement": float((naive == ours).mean())}
    cam = cameras[0]
    t0 = time.perf_counter()
    embree = embree_face_ids(V, F, cam)
    if embree is not None:
        references["embreex_224px_ms"] = 1e3 * (time.perf_counter() - t0)
        t0 = time.perf_counter()
        embree = embree_face_ids(V, F, cam)
        references["embreex_224px_ms"] = min(references["embreex_224px_ms"], 1e3 * (time.perf_counter() - t0))
        ours = rasterize(torch.from_numpy(V), F, cam).face_index.numpy()
        references["embreex_face_id_agreement"] = float((embree == ours).mean())
        references["ours_rasterize_forward_224px_ms"] = min(measure(lambda: rasterize(verts[0], faces, cam))[0]
                                                            for _ in range(args.repeat))

    result = {"size": SIZE, "threads": torch.get_num_threads(), "repeat": args.repeat, "torch": torch.__version__,
              "machine": platform.machine(), "cpu_count": os.cpu_count(),
              "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
              "cases": cases, "references": references}
    out = ROOT / "benchmarks" / "results" / "bm_raster.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

    print(f"224 x 224 shaded render, forward + backward, {torch.get_num_threads()} CPU thread, "
          f"{args.repeat} interleaved rounds (load average {result['load_average']})")
    print(f"{'mesh':5} {'tris':>6} {'B':>2} {'device':6} {'mode':9} {'wall min':>9} {'wall med':>9} {'cpu min':>8} "
          f"{'/hard cpu':>9} {'/hard wall':>10}")
    for c in cases:
        print(f"{c['mesh']:5} {c['triangles']:6d} {c['batch']:2d} {c['device']:6} {c['mode']:9} "
              f"{c['wall_min_ms']:8.1f}  {c['wall_median_ms']:8.1f}  {c['cpu_min_ms']:7.1f}  "
              f"{c['vs_hard_cpu']:8.2f}  {c['vs_hard_wall_median']:9.2f}")
    for name, value in references.items():
        print(f"{name}: {value:.4g}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
