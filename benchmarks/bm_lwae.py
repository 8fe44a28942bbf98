"""Locally weighted autoencoder vs plain CoMA at latent 64: reconstruction, locality per part, diversity.

Datasets: the synthetic faces and the decimated ICT-FaceKit sample of ``bm_accuracy.py`` (built by its
helpers, interpolation protocol). On each, ``coma`` and ``lwae`` (the presets) are trained at latent 64 on
the same split for the same epochs with the same optimiser (the presets' SGD 8e-3, momentum 0.9, wd 5e-4,
decay 0.99) and the same batch size (32, the LWAE paper's). ``coma3`` is CoMA on the LWAE preset's
hierarchy (three poolings, its channels), to separate what the finer coarse level gives from what the parts
cost. LWAE variants (``--variants``) change one setting each, e.g. ``f4`` (CoMA's four poolings and
channels), ``noup`` (plain barycentric up-sampling), ``nograph`` (the decoder on the plain mesh graphs),
``loc1`` (swap-locality loss at weight 1; the preset's is 0), ``g8`` / ``g64`` (partition sharpness; the
preset's is 32), ``sm0`` (local weights without smoothing), ``noinject``, ``nocycle``, ``s0.7``.

Reported (from the run's ``metrics.json``; LWAE numbers are what ``morphable train lwae`` writes):
test error mean/median in mm and LWAE vs CoMA (goal: within 10 %); locality per part (share of the
displacement caused by swapping part k that falls in its region R_k, over 10 test pairs; goal
>= 70 %) next to the region's vertex share (what a decoder ignoring the weights scores); diversity:
2-sigma ellipse areas of the encodings of train, test and part-synthesised faces (5 x 11 x 4) in PCA
and t-SNE projections.

Usage: OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bm_lwae.py [--epochs 15] \
    [--subjects 4 --frames 5 --ict-subjects 4 --ict-frames 5] [--models coma coma3 lwae] [--variants f4 noup ...]
Writes benchmarks/results/bm_lwae.json (after every run) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bm_accuracy import RESULTS, ict_dataset, synthetic_dataset  # noqa: E402

LATENT = 64
BATCH = 32


def hierarchy_of(preset: str) -> dict:
    """A preset's poolings and channels, as model overrides (to train one model on another's hierarchy)."""
    from morphable.config import PRESETS

    m = PRESETS[preset]().model
    return {"factors": m.factors, "encoder_channels": m.encoder_channels, "decoder_channels": m.decoder_channels}


VARIANTS = {"noinject": {"inject": False}, "nocycle": {"cycle_weight": 0.0}, "s0.7": {"sparseness": 0.7},
            "s0.3": {"sparseness": 0.3}, "cycle3": {"cycle_weight": 3.0},
            "sm0": {"smoothing": 0.0}, "g1": {"sharpness": 1.0}, "g4": {"sharpness": 4.0},
            "g8": {"sharpness": 8.0}, "g64": {"sharpness": 64.0}, "nograph": {"part_graph": False},
            "noup": {"part_upsampling": False}, "f4": hierarchy_of("coma"),
            **{f"loc{w:g}": {"locality_weight": w} for w in (0.3, 1.0, 3.0)}}
# the main comparison: label -> (preset, model overrides)
MODELS = {"coma": ("coma", None), "coma3": ("coma", hierarchy_of("lwae")), "lwae": ("lwae", None)}


def _default_work() -> Path:
    return Path(os.environ.get("MORPHABLE_CACHE", Path.home() / ".cache" / "morphable")) / "bm_lwae"


def train_row(preset: str, data: Path, run_dir: Path, epochs: int, seed: int, device: str, progress: bool,
              overrides: dict | None = None, reuse: bool = False) -> dict:
    """Train ``preset`` at latent 64, batch 32 for ``epochs`` (``reuse``: re-evaluate an existing run of the same
    config instead); the run's numbers as one row."""
    from morphable.config import PRESETS, config_from_dict
    from morphable.experiment import evaluate, train
    from morphable.runs import Run

    config = PRESETS[preset]()
    config.data.path = str(data)
    config.model.latent = LATENT
    config.train.epochs = epochs
    config.train.batch_size = BATCH
    config.train.device = device
    config.seed = seed
    for key, value in (overrides or {}).items():
        setattr(config.model, key, value)
    t0 = time.perf_counter()
    if reuse and (run_dir / "model.safetensors").exists() and \
            config_from_dict(Run.open(run_dir).config).to_dict() == config.to_dict():
        metrics = evaluate(run_dir)  # same config already trained: re-measure only
    else:
        metrics = train(config, run_dir, overwrite=True, progress=progress)
    row = {"preset": preset, "overrides": overrides or {}, "mean_mm": metrics["mean_mm"], "std_mm": metrics["std_mm"],
           "median_mm": metrics["median_mm"], "train_seconds": metrics["fit"]["seconds"],
           "total_seconds": round(time.perf_counter() - t0, 1), "parameters": metrics["fit"]["parameters"],
           "best_epoch": metrics["fit"]["best_epoch"], "split_sizes": metrics["split_sizes"], "run": str(run_dir)}
    if "lwae" in metrics:
        row["lwae"] = metrics["lwae"]
    return row


def table(name: str, rows: dict[str, dict]) -> str:
    coma = rows.get("coma")
    lines = [f"{name}:", f"{'model':16s} {'mean (mm)':>10s} {'median':>8s} {'vs CoMA':>8s} {'train s':>8s}  "
                         f"locality per part (chance)                    min"]
    for label, r in rows.items():
        rel = f"{100 * (r['mean_mm'] / coma['mean_mm'] - 1):+.1f}%" if coma and label != "coma" else ""
        loc = ""
        if "lwae" in r:
            l = r["lwae"]["locality"]
            loc = " ".join(f"{100 * s:4.0f}%({100 * c:2.0f})" for s, c in zip(l["share"], l["chance"]))
            loc += f"  {100 * l['min_share']:4.1f}%"
        lines.append(f"{label:16s} {r['mean_mm']:10.3f} {r['median_mm']:8.3f} {rel:>8s} {r['train_seconds']:8.1f}  {loc}")
    for label, r in rows.items():
        if "lwae" in r:
            d = r["lwae"]["diversity"]
            for proj in ("pca", "tsne"):
                areas = d.get(f"{proj}_area")
                if areas:
                    shown = ", ".join(f"{g} {a:.4g}" for g, a in areas.items())
                    lines.append(f"  {label} diversity {proj:4s} ellipse areas: {shown}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--ict-subjects", type=int, default=4)
    parser.add_argument("--ict-frames", type=int, default=5)
    parser.add_argument("--ict-vertices", type=int, default=5000)
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "ict"], choices=("synthetic", "ict"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS),
                        help="the main comparison's models (e.g. one per process to train them side by side)")
    parser.add_argument("--variants", nargs="*", default=["f4", "noup"], choices=sorted(VARIANTS),
                        help="LWAE variants trained on --variant-datasets (default: f4 noup)")
    parser.add_argument("--variant-datasets", nargs="*", default=["synthetic", "ict"], choices=("synthetic", "ict"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "bm_lwae.json")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--reuse", action="store_true",
                        help="re-evaluate runs already trained with the same config instead of training them again")
    args = parser.parse_args()

    import torch

    from morphable.io import atomic_path

    work = args.work or _default_work()
    settings = {"epochs": args.epochs, "latent": LATENT, "batch_size": BATCH, "seed": args.seed,
                "synthetic": {"subjects": args.subjects, "frames": args.frames},
                "ict": {"subjects": args.ict_subjects, "frames": args.ict_frames, "vertices": args.ict_vertices},
                "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.node()}
    results: dict[str, dict] = {}
    started = time.perf_counter()

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out) as tmp:
            Path(tmp).write_text(json.dumps({"settings": settings, "datasets": results}, indent=1))

    data = {name: synthetic_dataset(work, args.subjects, args.frames, args.seed) if name == "synthetic" else
            ict_dataset(work, args.ict_subjects, args.ict_frames, args.seed, args.ict_vertices)
            for name in args.datasets}
    # the main comparison on every dataset first, the variants after it
    jobs = [(name, label, *MODELS[label]) for name in args.datasets for label in args.models]
    jobs += [(name, f"lwae-{v}", "lwae", VARIANTS[v]) for name in args.datasets if name in args.variant_datasets
             for v in args.variants]
    for name, label, preset, overrides in jobs:
        print(f"[{name}] {label} ...", flush=True)
        row = train_row(preset, data[name], work / "runs" / name / label, args.epochs, args.seed, args.device,
                        not args.quiet, overrides, args.reuse)
        results.setdefault(name, {})[label] = row
        print(f"[{name}] {label}: {row['mean_mm']:.3f} mm, {row['train_seconds']:.0f} s train "
              f"(elapsed {time.perf_counter() - started:.0f} s)", flush=True)
        save()
    settings["wall_seconds"] = round(time.perf_counter() - started, 1)
    save()
    print()
    for name, rows in results.items():
        print(table(name, rows))
        print()
    print(f"wrote {args.out} ({settings['wall_seconds']} s)")


if __name__ == "__main__":
    main()
