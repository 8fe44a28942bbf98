"""Speed of ``morphable data photos`` (ICT-FaceKit, 224 x 224): images per second with 1 and 2 worker
processes, CPU time per image by stage, and the bare rasteriser on the same meshes as the baseline.

The machine is shared, so wall-clock rates are measured interleaved (1 worker, 2 workers, a small and a
large dataset, repeated) and CPU seconds (parent and workers) are given beside them: the marginal CPU time
per image, ``(CPU(large) - CPU(small)) / (large - small)``, leaves out the fixed costs (model preparation,
worker start-up, contact sheet), and ``2 / marginal`` is the rate two free cores reach.

Usage: OMP_NUM_THREADS=1 python benchmarks/bm_photos.py [--count 160] [--repeats 2] [--resolution 224]
Writes benchmarks/results/bm_photos.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
ICT = ROOT.parent / "shared" / "data" / "ict-facekit"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stage_times(model, resolution: int, n: int) -> dict[str, float]:
    """CPU ms per image of each stage of :func:`render_photo` (profiled on ``n`` images, one thread)."""
    import cProfile
    import pstats

    import torch

    from morphable.data import photos

    torch.set_num_threads(1)
    pm = photos.prepare_photo_model(model)
    identity = photos.make_identity(pm, 0, 0)
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    for i in range(n):
        photo = photos.render_photo(pm, identity, 0, i, resolution)
        with tempfile.TemporaryDirectory() as tmp:
            photos._png(Path(tmp) / "a.png", photo.image)
            photos._png(Path(tmp) / "m.png", photo.mask.astype("uint8") * 255)
            photos._npy(Path(tmp) / "m.npy", photo.mesh)
    profile.disable()
    stats = pstats.Stats(profile).stats
    wanted = {"rasterize": "rasterize", "landmark_visibility": "landmark_visibility",
              "sample_background": "sample_background", "interpolate": "interpolate", "shade": "shade",
              "sample_texture": "sample_texture", "gaussian_filter": "gaussian_filter", "png": "_png", "npy": "_npy",
              "render_photo": "render_photo"}
    out = {}
    for label, name in wanted.items():
        cum = sum(v[3] for k, v in stats.items() if k[2] == name)
        out[label] = round(1000 * cum / n, 2)
    out["total_with_writing"] = round(out["render_photo"] + out["png"] + out["npy"], 2)
    return out


def raster_baseline(model, resolution: int, n: int) -> float:
    """CPU ms per image of the bare :func:`rasterize` of the generator's meshes and cameras."""
    import numpy as np
    import torch

    from morphable.data import photos
    from morphable.render.camera import Camera
    from morphable.render.raster import rasterize

    pm = photos.prepare_photo_model(model)
    identity = photos.make_identity(pm, 0, 0)
    meshes = [photos.render_photo(pm, identity, 0, i, resolution) for i in range(n)]
    cams = [Camera.from_matrices(m.annotations["K"], np.eye(4), resolution, resolution) for m in meshes]
    c0 = time.process_time()
    for m, cam in zip(meshes, cams):
        rasterize(torch.from_numpy(m.mesh), pm.faces, cam)
    return 1000 * (time.process_time() - c0) / n


def dataset_rate(model, count: int, resolution: int, workers: int) -> dict[str, float]:
    from morphable.data.photos import PhotoSettings, write_photo_dataset

    with tempfile.TemporaryDirectory() as tmp:
        c0, k0, t0 = time.process_time(), _children_cpu(), time.perf_counter()
        write_photo_dataset(model, Path(tmp) / "ds", PhotoSettings(count, max(1, count // 10), resolution),
                            workers=workers, progress=False)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0 + _children_cpu() - k0
    return {"wall_s": round(wall, 2), "images_per_s": round(count / wall, 1), "cpu_s": round(cpu, 2),
            "cpu_ms_per_image": round(1000 * cpu / count, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--profile-images", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from morphable.data.photos import load_photo_model

    model, _ = load_photo_model(ICT / "ict_face_model_light_f32.npz", ICT / "FaceXModel")
    stages = stage_times(model, args.resolution, args.profile_images)
    baseline = raster_baseline(model, args.resolution, args.profile_images)
    sizes = (max(8, args.count // 4), args.count)
    runs: dict[str, list[dict]] = {"1": [], "2": []}
    for _ in range(args.repeats):
        for workers in (1, 2):
            for n in sizes:
                runs[str(workers)].append({"images": n, **dataset_rate(model, n, args.resolution, workers)})
    marginal = {}
    for w, rs in runs.items():
        small = min(r["cpu_s"] for r in rs if r["images"] == sizes[0])
        large = min(r["cpu_s"] for r in rs if r["images"] == sizes[1])
        marginal[w] = round(1000 * (large - small) / (sizes[1] - sizes[0]), 1)
    result = {"resolution": args.resolution, "sizes": sizes, "load_average": os.getloadavg(),
              "stages_cpu_ms_per_image": stages, "raster_baseline_cpu_ms": round(baseline, 2),
              "generator_over_raster": round(stages["total_with_writing"] / baseline, 2),
              "runs": runs, "marginal_cpu_ms_per_image": marginal,
              "best_wall_images_per_s": {w: max(r["images_per_s"] for r in rs if r["images"] == sizes[1])
                                         for w, rs in runs.items()},
              "two_free_cores_images_per_s": round(2000 / marginal["2"], 1)}
    out = ROOT / "benchmarks" / "results" / "bm_photos.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"stage (CPU ms / image, one thread, {args.resolution} px)")
    for name, ms in stages.items():
        print(f"  {name:<22} {ms:>8.2f}")
    print(f"  {'bare rasterize':<22} {baseline:>8.2f}   (generator / raster = {result['generator_over_raster']})")
    print(f"{'workers':<8} {'images':>7} {'wall s':>8} {'images/s':>9} {'CPU s':>7} {'CPU ms/img':>11}")
    for w, rs in runs.items():
        for r in rs:
            print(f"{w:<8} {r['images']:>7} {r['wall_s']:>8.2f} {r['images_per_s']:>9.1f} {r['cpu_s']:>7.2f} "
                  f"{r['cpu_ms_per_image']:>11.1f}")
    print(f"marginal CPU ms per image (large - small run): {marginal}; two free cores: "
          f"{result['two_free_cores_images_per_s']} images/s; load average "
          f"{', '.join(f'{x:.1f}' for x in result['load_average'])}")


if __name__ == "__main__":
    main()
