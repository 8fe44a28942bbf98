"""Accuracy table: PCA vs CoMA vs Deep3DMM (learned feature aggregation) vs Neural3DMM vs LWAE at latent 8.

Datasets (both in the COMA layout; validation carved from train), under one of the CoMA protocols
(``--protocol``): ``interpolation`` (mesh ``i`` of the sorted list is a test mesh when
``i % 100 < 10``) or ``extrapolation`` (leave one expression out: each of ``--folds`` is one run of
every model, the expression's meshes being its test set):

* ``synthetic``: the package's procedural faces (``morphable data synth``), 5,048 vertices, metres;
* ``ict``: ICT-FaceKit Light samples (identity ~ N(0, 1) x twelve COMA-like expression ramps), outer
  skin surface (11,248 vertices) decimated by our QEM to ``--ict-vertices`` (default 5,000)
  vertices, centimetres.

Models (presets of ``morphable.config.PRESETS``, every one at latent 8, every neural model trained
for the same ``--epochs`` with its preset's optimiser, learning rate and batch size):
``pca``, ``coma`` (Chebyshev K=6 + QEM pooling), ``deep3dmm-spectral`` (same network, fused
QEM + attention pooling), ``deep3dmm-spectral-nofuse`` (attention only), ``neural3dmm-simple``
(spiral conv + QEM pooling, supplement Table 6 "simple" filters), ``deep3dmm-spiral`` (the same
with fused pooling), ``spiralnet++`` (dilated spirals, batch 32) and ``lwae`` (the locally weighted autoencoder on CoMA's poolings). PCA is also
fitted at the latents of ``--pca-latents`` (rows ``pca-<k>``; closed form, seconds).

The errors are per-vertex Euclidean distances in millimetres on the test meshes (mean +- std,
median); the table's "vs PCA-8" and "vs CoMA" columns are ``mean / mean_baseline - 1`` (negative = lower
error) and the error reductions are ``1 - mean / mean_baseline``.
Training seconds are the wall time of ``morphable.experiment.train``'s fit (hierarchy, training, validation).

Datasets and run folders go to ``--work`` (default ``$MORPHABLE_CACHE/bm_accuracy`` or
``~/.cache/morphable/bm_accuracy``); a dataset with the same settings is reused.

Usage: OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bm_accuracy.py \
    [--epochs 30] [--subjects 8] [--frames 10] [--ict-subjects 8] [--ict-frames 10] \
    [--datasets synthetic ict] [--models ...]
Writes benchmarks/results/bm_accuracy.json (``--out``; after every model, so an interrupted run keeps what it
measured), beside it ``<out stem>_<dataset>.png`` (cumulative error curves) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ICT_NPZ = ROOT.parent / "shared" / "data" / "ict-facekit" / "ict_face_model_light_f32.npz"

MODELS = ("pca", "coma", "deep3dmm-spectral", "deep3dmm-spectral-nofuse", "neural3dmm-simple", "deep3dmm-spiral",
          "spiralnet++", "lwae")
LABELS = {"pca": "PCA", "coma": "CoMA (QEM pooling)", "deep3dmm-spectral": "Deep3DMM spectral (fused)",
          "deep3dmm-spectral-nofuse": "Deep3DMM spectral (no fusing)",
          "neural3dmm-simple": "Neural3DMM simple (QEM pooling)", "deep3dmm-spiral": "Deep3DMM spiral (fused)",
          "spiralnet++": "SpiralNet++ (QEM pooling)", "lwae": "LWAE (CoMA's poolings)"}
# (model, baseline) pairs whose relative error reduction is reported
COMPARISONS = (("coma", "pca"), ("neural3dmm-simple", "pca"), ("spiralnet++", "pca"), ("deep3dmm-spectral", "coma"),
               ("deep3dmm-spectral-nofuse", "coma"), ("deep3dmm-spiral", "coma"),
               ("deep3dmm-spiral", "neural3dmm-simple"), ("lwae", "coma"))
LATENT = 8
PROTOCOLS = ("interpolation", "extrapolation")


def label(preset: str) -> str:
    """Table label of a model row (``pca-<k>``: PCA at latent ``k``)."""
    if preset.startswith("pca-"):
        return f"PCA-{preset[4:]}"
    return LABELS[preset] + ("-8" if preset == "pca" else "")


def _default_work() -> Path:
    return Path(os.environ.get("MORPHABLE_CACHE", Path.home() / ".cache" / "morphable")) / "bm_accuracy"


def _reusable(folder: Path, metadata: dict) -> bool:
    """True when ``folder`` holds a dataset written with exactly ``metadata``."""
    from morphable.io import read_json

    info = folder / "dataset.json"
    if not info.exists():
        return False
    stored = read_json(info)
    return all(stored.get(k) == v for k, v in metadata.items())


def synthetic_dataset(work: Path, subjects: int, frames: int, seed: int) -> Path:
    """The synthetic faces (12 expressions) in ``work/synthetic-s{subjects}-f{frames}-seed{seed}``."""
    from morphable.data.synthetic import write_synthetic_dataset

    out = work / f"synthetic-s{subjects}-f{frames}-seed{seed}"
    meta = {"source": "morphable synthetic faces", "seed": seed, "subjects": subjects, "expressions": 12,
            "frames": frames}
    if not _reusable(out, meta):
        write_synthetic_dataset(str(out), subjects, 12, frames, seed, overwrite=True)
    return out


def ict_dataset(work: Path, subjects: int, frames: int, seed: int, n_vertices: int) -> Path:
    """ICT-FaceKit skin samples restricted to the vertices kept by decimating the neutral skin to
    ``n_vertices`` (QEM, original vertex subset), with the decimated faces."""
    from morphable.data.linear import ICT_SKIN_VERTICES, load_ict, sample_sequences
    from morphable.data.registered import write_coma_layout
    from morphable.mesh.qem import decimate

    out = work / f"ict-v{n_vertices}-s{subjects}-f{frames}-seed{seed}"
    meta = {"source": f"ICT-FaceKit ({ICT_NPZ.name}), skin surface decimated by QEM", "seed": seed,
            "subjects": subjects, "expressions": 12, "frames": frames, "decimated_to": n_vertices}
    if _reusable(out, meta):
        return out
    model = load_ict(ICT_NPZ).subset_vertices(ICT_SKIN_VERTICES)
    dec = decimate(model.mean, model.faces, n_vertices)
    seq = sample_sequences(model, subjects, 12, frames, seed)
    write_coma_layout(out, seq.vertices[:, dec.kept], dec.faces, seq.subjects, seq.expressions, seq.frames,
                      model.unit, {**meta, "skin_vertices": model.n_vertices}, overwrite=True)
    return out


def train_one(preset: str, data: Path, run_dir: Path, epochs: int, seed: int, device: str,
              progress: bool, sgd_lr: float | None = None, protocol: str = "interpolation",
              fold: str | None = None, latent: int = LATENT, sgd_as_adam: bool = False) -> dict:
    """Train ``preset`` at ``latent`` for ``epochs`` on the protocol's split (``fold``: the held-out
    expression of ``extrapolation``); a summary row.

    ``sgd_lr`` replaces the learning rate of the presets that use SGD (CoMA, Deep3DMM spectral, LWAE);
    ``sgd_as_adam`` trains them with the spiral presets' optimiser instead (Adam 1e-3, no weight decay),
    which separates the convolution from the training recipe."""
    from morphable.config import PRESETS
    from morphable.experiment import train

    config = PRESETS[preset]()
    config.data.path = str(data)
    config.data.protocol = protocol
    config.data.fold = fold
    config.model.latent = latent
    config.train.epochs = epochs
    config.train.device = device
    config.seed = seed
    if sgd_as_adam and config.train.optimizer == "sgd":
        config.train.optimizer, config.train.lr, config.train.weight_decay = "adam", 1e-3, 0.0
    if sgd_lr is not None and config.train.optimizer == "sgd":
        config.train.lr = sgd_lr
    loop = config.spec.training == "loop"  # PCA is fitted in closed form: no epochs, batches or optimiser
    wall0, cpu0 = time.perf_counter(), time.process_time()
    metrics = train(config, run_dir, overwrite=True, progress=progress)
    fit = metrics["fit"]
    curve = metrics["splits"]["test"]["curve"]
    return {"preset": preset, "method": config.method, "latent": latent,
            "pooling": getattr(config.model, "pooling", None),
            "mean_mm": metrics["mean_mm"], "std_mm": metrics["std_mm"], "median_mm": metrics["median_mm"],
            "max_mm": metrics["max_mm"], "train_seconds": fit["seconds"],
            "total_wall_seconds": round(time.perf_counter() - wall0, 2),
            "total_cpu_seconds": round(time.process_time() - cpu0, 2),
            "epochs": epochs if loop else None, "best_epoch": fit.get("best_epoch"),
            "parameters": fit.get("parameters"), "batch_size": config.train.batch_size if loop else None,
            "optimizer": config.train.optimizer if loop else None,
            "weight_decay": config.train.weight_decay if loop else None,
            "lr": config.train.lr if loop else None, "split_sizes": metrics["split_sizes"],
            "unit": metrics["unit"], "run": str(run_dir),
            "curve": {"thresholds_mm": curve["thresholds_mm"], "fraction": curve["fraction"]}}


def failure(preset: str, run_dir: Path) -> dict:
    """Row for a model whose training raised: the traceback and the last line of its ``log.csv``."""
    log = run_dir / "log.csv"
    last = log.read_text().strip().splitlines()[-1] if log.exists() else ""
    return {"preset": preset, "error": traceback.format_exc(), "last_log_line": last}


def trained(rows: dict[str, dict]) -> dict[str, dict]:
    return {k: r for k, r in rows.items() if "error" not in r}


def reductions(rows: dict[str, dict]) -> dict[str, float]:
    """``1 - mean(model) / mean(baseline)`` for every comparison whose two rows trained."""
    ok = trained(rows)
    return {f"{m} vs {b}": round(1.0 - ok[m]["mean_mm"] / ok[b]["mean_mm"], 4)
            for m, b in COMPARISONS if m in ok and b in ok}


def _relative(row: dict, baseline: dict | None) -> str:
    """``mean / mean_baseline - 1`` in percent, blank without a baseline or against itself."""
    if baseline is None or baseline is row:
        return ""
    return f"{100 * (row['mean_mm'] / baseline['mean_mm'] - 1):+.1f}%"


def table(name: str, info: dict, rows: dict[str, dict]) -> str:
    lines = [f"{name}: {info['n_vertices']} vertices, {info['n_meshes']} meshes "
             f"(train {info['split_sizes']['train']}, val {info['split_sizes']['val']}, "
             f"test {info['split_sizes']['test']}), unit {info['unit']}",
             f"{'model':34s} {'mean +- std (mm)':>18s} {'median':>8s} {'vs PCA-8':>8s} {'vs CoMA':>8s} "
             f"{'train s':>8s} {'params':>8s}"]
    ok = trained(rows)
    for preset, r in rows.items():
        if "error" in r:
            lines.append(f"{label(preset):34s} FAILED: {r['error'].strip().splitlines()[-1]}")
            continue
        params = str(r["parameters"]) if r["parameters"] is not None else ""
        lines.append(f"{label(preset):34s} {r['mean_mm']:8.3f} +- {r['std_mm']:6.3f} {r['median_mm']:8.3f} "
                     f"{_relative(r, ok.get('pca')):>8s} {_relative(r, ok.get('coma')):>8s} "
                     f"{r['train_seconds']:8.1f} {params:>8s}")
    for key, value in reductions(rows).items():
        lines.append(f"  error reduction {key}: {100 * value:.1f} %")
    return "\n".join(lines)


def write_results(path: Path, settings: dict, datasets: dict[str, dict]) -> None:
    from morphable.io import atomic_path

    out = {"settings": settings, "datasets": {}}
    for name, d in datasets.items():
        rows = {k: {kk: vv for kk, vv in v.items() if kk != "curve"} for k, v in d["rows"].items()}
        out["datasets"][name] = {**d["info"], "results": rows, "reductions": reductions(d["rows"]),
                                 "curves": {k: v["curve"] for k, v in trained(d["rows"]).items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(out, indent=1))


def curve_plot(path: Path, name: str, rows: dict[str, dict], epochs: int) -> None:
    import numpy as np

    from morphable.viz import cumulative_error_plot

    curves = {label(k): (np.asarray(r["curve"]["thresholds_mm"]), np.asarray(r["curve"]["fraction"]))
              for k, r in trained(rows).items()}
    cumulative_error_plot(path, curves, title=f"{name}: latent {LATENT}, {epochs} epochs (test split)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of every neural model (default 30)")
    parser.add_argument("--subjects", type=int, default=8, help="synthetic subjects (default 8)")
    parser.add_argument("--frames", type=int, default=10, help="synthetic frames per expression (default 10)")
    parser.add_argument("--ict-subjects", type=int, default=8, help="ICT subjects (default 8)")
    parser.add_argument("--ict-frames", type=int, default=10, help="ICT frames per expression (default 10)")
    parser.add_argument("--ict-vertices", type=int, default=5000, help="decimated ICT skin size (default 5000)")
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "ict"], choices=("synthetic", "ict"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--sgd-lr", type=float, default=None,
                        help="learning rate of the SGD presets (coma, deep3dmm-spectral*; default: the preset's 8e-3)")
    parser.add_argument("--sgd-as-adam", action="store_true",
                        help="train the SGD presets with Adam 1e-3 and no weight decay (a diagnostic)")
    parser.add_argument("--protocol", default="interpolation", choices=PROTOCOLS,
                        help="CoMA protocol of the split (default interpolation)")
    parser.add_argument("--folds", nargs="+", default=["mouth_extreme"],
                        help="held-out expressions of the extrapolation protocol, one table each "
                             "(default mouth_extreme)")
    parser.add_argument("--pca-latents", nargs="*", type=int, default=[4, 16, 32],
                        help="further PCA latents fitted beside the models (default 4 16 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of the training (default 0)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--work", type=Path, default=None, help="folder for datasets and run folders")
    parser.add_argument("--out", type=Path, default=RESULTS / "bm_accuracy.json", help="JSON result file")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    args = parser.parse_args()

    import torch

    from morphable.data.registered import load_registered, make_split

    work = args.work or _default_work()
    folds = args.folds if args.protocol == "extrapolation" else [None]
    settings = {"epochs": args.epochs, "latent": LATENT, "sgd_lr": args.sgd_lr, "sgd_as_adam": args.sgd_as_adam, "protocol": args.protocol,
                "folds": folds, "pca_latents": args.pca_latents, "seed": args.seed,
                "synthetic": {"subjects": args.subjects, "expressions": 12, "frames": args.frames},
                "ict": {"subjects": args.ict_subjects, "expressions": 12, "frames": args.ict_frames,
                        "vertices": args.ict_vertices},
                "models": args.models, "torch": torch.__version__, "threads": torch.get_num_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "machine": platform.node(),
                "processor": platform.processor() or platform.machine()}
    results: dict[str, dict] = {}
    started = time.perf_counter()
    jobs = [(preset, LATENT) for preset in args.models]
    if "pca" in args.models:
        jobs += [(f"pca-{k}", k) for k in args.pca_latents if k != LATENT]
    for dataset_name, fold in ((d, f) for d in args.datasets for f in folds):
        name = dataset_name if fold is None else f"{dataset_name}-{fold}"
        t0 = time.perf_counter()
        if dataset_name == "synthetic":
            data = synthetic_dataset(work, args.subjects, args.frames, args.seed)
        else:
            data = ict_dataset(work, args.ict_subjects, args.ict_frames, args.seed, args.ict_vertices)
        ds = load_registered(data)
        split = make_split(ds, args.protocol, fold)
        info = {"path": str(data), "protocol": args.protocol, "fold": fold, "n_vertices": ds.n_vertices,
                "n_meshes": len(ds), "unit": ds.unit, "split_sizes": split.sizes(),
                "prepare_seconds": round(time.perf_counter() - t0, 2)}
        print(f"[{name}] {len(ds)} meshes, {ds.n_vertices} vertices ({info['prepare_seconds']} s to prepare)",
              flush=True)
        results[name] = {"info": info, "rows": {}}
        runs = work / "runs" / f"{data.name}-{args.protocol}{'-adam' if args.sgd_as_adam else ''}" / (fold or "all")
        for preset, latent in jobs:
            base = "pca" if preset.startswith("pca-") else preset
            print(f"[{name}] training {preset} ({args.epochs if base != 'pca' else '-'} epochs) ...", flush=True)
            run_dir = runs / preset
            try:
                row = train_one(base, data, run_dir, args.epochs, args.seed, args.device, not args.quiet,
                                args.sgd_lr, args.protocol, fold, latent, args.sgd_as_adam)
            except Exception:  # a failing model is recorded in the table, the others still run
                row = failure(preset, run_dir)
                print(f"[{name}] {preset} FAILED (last log line: {row['last_log_line']}):\n{row['error']}",
                      flush=True)
            else:
                print(f"[{name}] {preset}: {row['mean_mm']:.3f} +- {row['std_mm']:.3f} mm, median "
                      f"{row['median_mm']:.3f} mm, {row['train_seconds']:.1f} s "
                      f"(elapsed {time.perf_counter() - started:.0f} s)", flush=True)
            results[name]["rows"][preset] = row
            write_results(args.out, settings, results)
        curve_plot(args.out.parent / f"{args.out.stem}_{name}.png", name, results[name]["rows"], args.epochs)
    settings["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_results(args.out, settings, results)
    print()
    for name, d in results.items():
        print(table(name, d["info"], d["rows"]))
        print()
    print(f"wrote {args.out} and {', '.join(f'{args.out.stem}_{n}.png' for n in results)} "
          f"({settings['wall_seconds']} s)")


if __name__ == "__main__":
    main()
