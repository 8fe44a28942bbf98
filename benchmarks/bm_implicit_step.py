"""Cost of a training step with the 2D objectives (volume-rendered normal maps, pi-GAN discriminator with R1)
against a 3D-only step of the same model, and how step time and memory grow with the map size.

Models: the CPU-sized full model (``morphable train triplane-full-small``: tri-plane 3 x 8 x 32^2, decoder 3 x 32,
code 16, discriminator widths / 6), batch 4, 2 views a step from 64 x 64 ground-truth maps (a sphere of
radius 0.7 rasterised from 8 Fibonacci cameras at radius 2.6 * 0.9) and the fast sampler; for the ratio also
the paper-size network (``triplane-full``: planes 3 x 32 x 256^2, decoder 5 x 256, code 512) with the
discriminator at widths / 6 and the thesis' points (``--paper-repeats``). Two sets of 3D points
per shape: the preset's (96 + 32 surface, 2 x 128 near, 64 ball) and the thesis' (750 + 250, 2 x 1000, 300).

* ratio: the 2D step at 32 x 32 maps of the 64 x 64 field of view (every other pixel) over the 3D-only step
  (the same method with the 2D weights at 0, i.e. stage 1 of the schedule), the two timed alternately,
  ``--repeats`` times each after a warm-up, medians; R1 every step (the worst case; lazy R1 makes it cheaper).
* sweep: step time and memory of the 2D step at 8, 16, 32 and 64 pixels a side (64: the paper's maps).
  Memory is the bytes of the tensors autograd saves for the backward pass (distinct storages, counted with
  ``torch.autograd.graph.saved_tensors_hooks``), plus the CUDA peak where a GPU runs it.

Usage: OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bm_implicit_step.py [--repeats 5] [--device cpu]
Writes benchmarks/results/bm_implicit_step.json and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

BATCH, VIEWS, MAP = 4, 2, 64
POINTS = {"preset": (96, 32, 64), "thesis": (750, 250, 300)}  # surface face / non-face (and per level), ball
SIZES = (8, 16, 32, 64)


def ground_truth(n_views: int = 8):
    """Rasterised normal maps (n, 64, 64, 3) of a sphere of radius 0.7, and the cameras' K and poses."""
    import trimesh

    from morphable.render.camera import fibonacci_views
    from morphable.render.raster import rasterize

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.7)
    cameras = fibonacci_views(n_views, 2.6 * 0.9, fov_deg=46.0, width=MAP, height=MAP)
    normals = torch.stack([rasterize(sphere.vertices, sphere.faces, c).normals for c in cameras]).float()
    return normals, torch.stack([c.K for c in cameras]), torch.stack([c.pose for c in cameras])


def make_batch(points: tuple[int, int, int], maps, device: torch.device) -> dict[str, torch.Tensor]:
    """A batch shaped like ``NormalMapViews`` items of B shapes: sphere samples and the first VIEWS maps."""
    g = torch.Generator().manual_seed(0)
    face, nonface, ball = points
    surface = torch.nn.functional.normalize(torch.randn(BATCH, face + nonface, 3, generator=g), dim=-1)
    normals, K, poses = maps
    return {"index": torch.arange(BATCH), "surface_points": 0.7 * surface, "surface_normals": surface,
            "near_points": 0.7 * surface.repeat(1, 2, 1) + 0.003 * torch.randn(BATCH, 2 * (face + nonface), 3,
                                                                                 generator=g),
            "ball_points": torch.nn.functional.normalize(torch.randn(BATCH, ball, 3, generator=g), dim=-1)
            * torch.rand(BATCH, ball, 1, generator=g) ** (1 / 3),
            "view_normals": normals[None, :VIEWS].expand(BATCH, -1, -1, -1, -1).contiguous(),
            "view_K": K[None, :VIEWS].expand(BATCH, -1, -1, -1), "view_pose": poses[None, :VIEWS].expand(BATCH, -1, -1, -1)}


MODELS = {"cpu": "triplane-full-small", "paper": "triplane-full"}


def make_method(points: tuple[int, int, int], resolution: int, device: torch.device, model_name: str = "cpu"):
    """The preset's method with the given 3D points and map size, R1 every step; the paper model gets the
    discriminator at widths / 6 (as the CPU presets)."""
    from morphable.config import PRESETS
    from morphable.implicit.method import ImplicitMethod

    config = PRESETS[MODELS[model_name]]()
    model = config.model
    model.surface_face, model.surface_nonface, model.ball = points
    model.render_resolution, model.r1_every, model.discriminator_width_divisor = resolution, 1, 6
    method = ImplicitMethod(config, BATCH, device)
    method.on_epoch_start(0)
    return method


def timed_step(method, batch, step: int, two_d: bool, device: torch.device) -> tuple[float, int]:
    """Seconds of one training step and the bytes autograd saved during it."""
    from morphable.implicit.stages import TWO_D

    method.weights = method.base_weights if two_d else dataclasses.replace(
        method.base_weights, **{name: 0.0 for name in TWO_D})
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        method.training_step(batch, step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, sum(storages.values())


def ratio(points, maps, repeats: int, device: torch.device, model_name: str = "cpu") -> dict:
    method = make_method(points, 32, device, model_name)
    batch = make_batch(points, maps, device)
    times = {"3d": [], "2d": []}
    for step in range(repeats + 1):  # step 0 warms up
        for kind in ("3d", "2d"):
            seconds, _ = timed_step(method, batch, step, kind == "2d", device)
            if step:
                times[kind].append(seconds)
    t3, t2 = statistics.median(times["3d"]), statistics.median(times["2d"])
    return {"model": MODELS[model_name], "step_3d_s": t3, "step_2d_s": t2, "ratio": t2 / t3, "times": times}


def sweep(points, maps, repeats: int, device: torch.device) -> list[dict]:
    rows = []
    for size in SIZES:
        method = make_method(points, size, device)
        batch = make_batch(points, maps, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        runs = [timed_step(method, batch, step, True, device) for step in range(repeats + 1)][1:]
        row = {"map": size, "rays": BATCH * VIEWS * size * size, "step_s": statistics.median(r[0] for r in runs),
               "saved_mb": max(r[1] for r in runs) / 1e6}
        if device.type == "cuda":
            row["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 1e6
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--paper-repeats", type=int, default=2, help="repeats of the paper-size model (0: skip)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bm_implicit_step.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    maps = ground_truth()
    result = {"device": str(device), "threads": torch.get_num_threads(), "batch": BATCH, "views": VIEWS,
              "ratio": {name: ratio(p, maps, args.repeats, device) for name, p in POINTS.items()},
              "paper_ratio": ratio(POINTS["thesis"], maps, args.paper_repeats, device, "paper")
              if args.paper_repeats else None,
              "sweep": {name: sweep(p, maps, max(2, args.repeats // 2), device) for name, p in POINTS.items()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"2D step (32 x 32 of 64 x 64, {VIEWS} views, batch {BATCH}, fast sampler) vs 3D-only step, {device}:")
    print(f"{'3D points':10} {'3D step s':>10} {'2D step s':>10} {'ratio':>7}")
    for name, r in result["ratio"].items():
        print(f"{name:10} {r['step_3d_s']:10.3f} {r['step_2d_s']:10.3f} {r['ratio']:7.2f}")
    if result["paper_ratio"]:
        r = result["paper_ratio"]
        print(f"{'paper':10} {r['step_3d_s']:10.3f} {r['step_2d_s']:10.3f} {r['ratio']:7.2f}  (triplane-full network, "
              "thesis points, discriminator widths / 6)")
    print(f"\n{'3D points':10} {'map':>5} {'rays':>7} {'2D step s':>10} {'saved MB':>9}")
    for name, rows in result["sweep"].items():
        for row in rows:
            print(f"{name:10} {row['map']:5d} {row['rays']:7d} {row['step_s']:10.3f} {row['saved_mb']:9.1f}")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
