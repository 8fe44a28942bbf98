"""VRN's Table 1 on our data: the three variants trained at the CPU size with the same budget, scored on the
held-out identities of a synthetic photo dataset beside the mean-face baseline and the voxelisation floor.

Rows:
* voxelisation floor: each test photo's GT mesh voxelised (the training target), turned back into a mesh
  (marching cubes, largest component) and scored: the best any network predicting these volumes can do;
* mean face placed by the landmarks, and the linear 3DMM (``--linear-model``, the one the photos were made
  with) fitted to them (:mod:`morphable.image.baselines`; the EOS row's analogue), in GT and detected crops;
* ``vrn-cpu``, ``vrn-guided-cpu``, ``vrn-multitask-cpu`` trained for ``--epochs`` epochs each (same data,
  seed and budget), scored by :func:`morphable.image.evaluate.evaluate_vrn`;
* ``morphable reconstruct`` timed on ``--time-photos`` test photos per run (detection, crop, network,
  marching cubes, largest component, writing the mesh and pictures), seconds per photo.

The issue's targets are checked: every variant at least 30 % below the mean face (GT crops) and guided not
worse than plain. The paper's Table 1 (NME on AFLW2000-3D / BU-4DFE / Florence) is printed beside ours; its
data are real photos and scans, ours synthetic ICT-FaceKit faces, so only the ordering compares.

Make the photos first (docs/vrn.md): morphable data photos --model ict_face_model_light_f32.npz --uvs-from
FaceXModel --out /work/data/photos160 --count 2400 --identities 240 --resolution 160 --workers 2
Usage: OMP_NUM_THREADS=1 python benchmarks/bm_vrn.py [--data /work/data/photos160] [--epochs 16]
       [--runs-dir benchmarks/results/vrn_runs] [--runs RUN ...] [--merge] [--limit N] [--linear-model NPZ]
Writes benchmarks/results/bm_vrn.json after every model and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

PAPER_TABLE_1 = {  # NME, AFLW2000-3D / BU-4DFE / Florence (the VRN review's Table 1)
    "VRN": (0.0676, 0.0600, 0.0568), "VRN - Multitask": (0.0698, 0.0625, 0.0542),
    "VRN - Guided": (0.0637, 0.0555, 0.0509), "3DDFA": (0.1012, 0.1227, 0.0975), "EOS": (0.0971, 0.1560, 0.1253)}
PRESETS = ("vrn-cpu", "vrn-guided-cpu", "vrn-multitask-cpu")
RESULTS = Path(__file__).resolve().parent / "results"
ICT_MODEL = Path(__file__).resolve().parents[2] / "shared" / "data" / "ict-facekit" / "ict_face_model_light_f32.npz"


def voxel_floor(dataset, spec, limit: int | None) -> dict:
    """NME of the voxelised GT itself, per test photo (GT crops)."""
    import torch

    from morphable.data.voxels import VoxelSamples, gt_face_points, volume_between
    from morphable.image.evaluate import nme_in_crop
    from morphable.image.volume_mesh import volume_to_mesh

    indices = dataset.indices("test")[:limit]
    samples = VoxelSamples(dataset, indices, spec)
    values, start = [], time.perf_counter()
    for k, i in enumerate(indices):
        item = samples[k]
        volume = volume_between(torch.from_numpy(item["front"]), torch.from_numpy(item["back"]), spec.depth).numpy()
        vertices, _ = volume_to_mesh(volume, spec)
        values.append(nme_in_crop(vertices, *gt_face_points(dataset, int(i), spec)))
    return {"mean": float(np.mean(values)), "median": float(np.median(values)), "count": len(values),
            "seconds_per_photo": (time.perf_counter() - start) / len(indices)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/data/photos160", help="a `morphable data photos` folder")
    parser.add_argument("--epochs", type=int, help="training epochs per variant, the same budget for all "
                                                     "(default: the CPU presets', 16: about 45 min each on 2 cores)")
    parser.add_argument("--runs-dir", default=str(RESULTS / "vrn_runs"))
    parser.add_argument("--runs", nargs="+", help="score these trained runs instead of training")
    parser.add_argument("--limit", type=int, help="score only the first N test photos")
    parser.add_argument("--detector", default="auto")
    parser.add_argument("--linear-model", default=str(ICT_MODEL), help="the linear model of the photos (baseline)")
    parser.add_argument("--time-photos", type=int, default=20, help="test photos `reconstruct` is timed on")
    parser.add_argument("--merge", action="store_true",
                        help="keep the models already in results/bm_vrn.json (score runs one at a time)")
    args = parser.parse_args()

    from morphable.config import PRESETS as ALL_PRESETS
    from morphable.data.linear import load_linear_model
    from morphable.data.photos import PhotoDataset
    from morphable.experiment import load_run, train
    from morphable.image.evaluate import evaluate_vrn
    from morphable.image.landmarks import available_backends

    dataset = PhotoDataset(args.data)
    linear = load_linear_model(args.linear_model)
    crops = ("gt", "detected") if available_backends() else ("gt",)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"data": str(args.data), "crops": list(crops), "paper_table_1": PAPER_TABLE_1,
           "models": {}}
    if args.merge and (RESULTS / "bm_vrn.json").exists():
        out["models"] = json.loads((RESULTS / "bm_vrn.json").read_text())["models"]
    spec_config = ALL_PRESETS[PRESETS[0]]().model
    from morphable.data.voxels import VolumeSpec

    spec = VolumeSpec(spec_config.size, spec_config.depth, spec_config.depth_scale, spec_config.fill)
    out["voxel_floor"] = voxel_floor(dataset, spec, args.limit)
    print(f"voxelisation floor at {spec.shape}: NME {out['voxel_floor']['mean']:.4f}", flush=True)
    runs = args.runs or []
    if not runs:
        for preset in PRESETS:
            config = ALL_PRESETS[preset]()
            config.data.path = str(args.data)
            config.train.epochs = args.epochs or config.train.epochs
            run = Path(args.runs_dir) / preset
            start = time.perf_counter()
            train(config, run, overwrite=True, progress=False)
            out.setdefault("train_seconds", {})[preset] = time.perf_counter() - start
            runs.append(str(run))
            print(f"{preset}: trained {config.train.epochs} epochs in {out['train_seconds'][preset]:.0f} s", flush=True)
    for run in runs:
        model = load_run(run)
        start = time.perf_counter()
        metrics = evaluate_vrn(model, dataset, Path(run) / "plots", crops=crops, detector=args.detector,
                               limit=args.limit, linear_model=linear, progress=False)
        metrics["eval_seconds"] = time.perf_counter() - start
        metrics["train_epochs"] = json.loads((Path(run) / "config.json").read_text())["train"]["epochs"]
        metrics["reconstruct"] = time_reconstruct(run, dataset, args.time_photos, args.detector)
        out["models"][Path(run).name] = metrics
        (RESULTS / "bm_vrn.json").write_text(json.dumps(out, indent=1))
        print(f"{Path(run).name}: NME {metrics['gt']['vrn']['mean']:.4f} (GT crops)", flush=True)
    table(out, crops)


def time_reconstruct(run: str, dataset, count: int, detector: str) -> dict:
    """``morphable reconstruct RUN`` on the first ``count`` test photos (files of the dataset) with the
    detector, and again with the photos' GT landmarks (``--landmarks-from``: no detection): seconds per photo."""
    import tempfile

    from morphable.cli import main as cli
    from morphable.io import write_json

    names = [dataset.ids[i] for i in dataset.indices("test")[:count]]
    paths = [str(p) for name in names for p in (Path(dataset.root) / "images").glob(f"{name}.*")]
    result = {"photos": len(paths)}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in zip(dataset.indices("test")[:count], names):
            write_json(Path(tmp) / "marks" / name / "landmarks.json",
                       {"landmarks": dataset.annotations["landmarks_2d"][i].tolist()})
        for key, extra in (("detected", ["--backend", detector]), ("given_landmarks", ["--landmarks-from",
                                                                                        str(Path(tmp) / "marks")])):
            start = time.perf_counter()
            cli(["reconstruct", run, *paths, "--out", str(Path(tmp) / key), *extra])
            result[f"{key}_seconds_per_photo"] = (time.perf_counter() - start) / len(paths)
            result[f"{key}_reconstructed"] = len(list((Path(tmp) / key).glob("*/mesh.ply")))
    return result


def table(out: dict, crops) -> None:
    def cell(entry):
        return "-" if entry is None or entry.get("mean") is None else f"{entry['mean']:.4f}"

    first = next(iter(out["models"].values()), None)
    print("\n| method | NME GT crops | " + " | ".join(f"NME {c} crops" for c in crops[1:]) +
          " | 0-30 | 30-60 | 60-90 | 2D landmark NME | detector failures |")
    print("|---|---|" + "---|" * (len(crops) - 1) + "---|---|---|---|---|")
    print(f"| voxelisation floor | {out['voxel_floor']['mean']:.4f} |" + " - |" * (len(crops) - 1) + " - | - | - | - | - |")
    if first is not None:
        yaw = first["gt"]["per_yaw"]
        for baseline in first["methods"][1:]:
            print(f"| {baseline.replace('_', ' ')} | {cell(first['gt'][baseline])} |" +
                  "".join(f" {cell(first[c][baseline])} |" for c in crops[1:]) +
                  "".join(f" {cell(yaw[b][baseline])} |" for b in yaw) + " - | - |")
    for name, m in out["models"].items():
        yaw = m["gt"]["per_yaw"]
        print(f"| {name} | {cell(m['gt']['vrn'])} |" + "".join(f" {cell(m[c]['vrn'])} |" for c in crops[1:]) +
              "".join(f" {cell(yaw[b]['vrn'])} |" for b in yaw) +
              f" {m['gt'].get('landmark_nme_2d', float('nan')):.4f} |" +
              f" {m.get('detected', {}).get('failure_rate', float('nan')):.0%} |")
        r = m.get("reconstruct")
        if r:
            print(f"  reconstruct {name}: {r['detected_seconds_per_photo']:.2f} s per photo with detection "
                  f"({r['detected_reconstructed']} of {r['photos']} reconstructed), "
                  f"{r['given_landmarks_seconds_per_photo']:.2f} s with given landmarks")
    print("\npaper Table 1 (NME): " + "; ".join(f"{k} {v[0]:.4f} / {v[1]:.4f} / {v[2]:.4f}"
                                                for k, v in out["paper_table_1"].items()) +
          " (AFLW2000-3D / BU-4DFE / Florence)")
    if first is not None:
        base = first["gt"]["mean_face"]["mean"]
        for name, m in out["models"].items():
            gain = 1 - m["gt"]["vrn"]["mean"] / base
            print(f"target: {name} {gain:+.0%} vs the mean face (needs >= 30 %): {'met' if gain >= 0.3 else 'NOT met'}")
        names = list(out["models"])
        plain = next((n for n in names if "guided" not in n and "multitask" not in n), None)
        guided = next((n for n in names if "guided" in n), None)
        if plain and guided:
            ok = out["models"][guided]["gt"]["vrn"]["mean"] <= out["models"][plain]["gt"]["vrn"]["mean"]
            print(f"target: guided not worse than plain: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
