"""kill -9 at random moments of `morphable train`, then resume: does every run end as if never interrupted?

For one preset of each family (pca: closed form; coma: mesh autoencoder; npm-small: implicit) on tiny data,
two uninterrupted reference runs are timed (T, the shorter; they must be identical), then runs are killed by
SIGKILL after delays drawn stratified over [0, 0.95 T] (one in each of ``--kills`` equal slices: from the
imports, before the first checkpoint, through training, into evaluation and plotting; a run that ends
before its kill does not count, T shrinks to its time and a delay in [0, 0.95 T] is drawn again, until
``--kills`` runs were killed) and finished: ``--resume`` with the original
options for the trained presets, a restart without ``--overwrite`` for pca (a finished pca run must be
refused instead). Each finished run is compared with the reference:

- bit-identical: every tensor and the metadata of every ``*.safetensors`` file, ``metrics.json`` except
  timings (``seconds``) and the same set of files;
- log once: ``log.csv`` rows equal the reference's (timings aside): every epoch once, in order;
- debris: ``.*.tmp`` temporaries left after the resume (and, for information, right after the kill);
- unreadable: files that do not parse (JSON, CSV, safetensors, npy, PNG, PLY, text).

Usage: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bm_resume.py [--kills 20] [--seed 0]
Writes benchmarks/results/bm_resume.json and prints a table (about 10 minutes on 2 loaded cores).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny datasets of the test suite

PRESETS = {"pca": [], "coma": ["--epochs", "5", "--batch-size", "4"], "npm-small": ["--epochs", "4"]}


def environment(cache: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", "MORPHABLE_CACHE": str(cache)}


def command(preset: str, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "morphable", "train", preset, "--data", str(data), "--out", str(out), "--quiet",
            *(["--device", "cpu"] if preset != "pca" else []), *PRESETS[preset], *extra]


def make_data(root: Path, env: dict[str, str]) -> dict[str, Path]:
    """Tiny faces (24 bumpy spheres) for the mesh presets and an SDF dataset of two spheres for npm."""
    import trimesh
    from conftest import SPHERE_RADII, write_tiny_faces

    from morphable.io import write_ply

    faces = write_tiny_faces(root / "faces")
    meshes = root / "meshes"
    meshes.mkdir()
    for name, radius in SPHERE_RADII.items():
        sphere = trimesh.creation.icosphere(subdivisions=3, radius=radius)
        write_ply(meshes / f"{name}.ply", sphere.vertices, sphere.faces)
    subprocess.run([sys.executable, "-m", "morphable", "data", "sdf", str(meshes), "--out", str(root / "sdf"),
                    "--unit", "m", "--n-surface", "2000", "--n-near", "2000", "--n-ball", "1000"],
                   env=env, check=True, capture_output=True)
    return {"pca": faces, "coma": faces, "npm-small": root / "sdf"}


def phase(run: Path, closed_form: bool) -> str:
    """Where a killed run stood, from its folder."""
    if not (run / "config.json").exists():
        return "before config.json"
    if (run / "report.md").exists():
        return "finished"
    if closed_form:
        return "evaluating" if (run / "model.safetensors").exists() else "fitting"
    last = run / "last.safetensors"
    if not last.exists():
        return "before first checkpoint"
    from morphable.io import load_weights

    epochs = json.loads((run / "config.json").read_text())["train"]["epochs"]
    return "evaluating" if int(load_weights(last)[1]["epoch"]) == epochs else "training"


def without_timings(obj):
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if k != "seconds"}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


def log_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [without_timings(row) for row in csv.DictReader(f)]


def unreadable(run: Path) -> list[str]:
    """Files of the run that do not parse."""
    import matplotlib.pyplot as plt

    from morphable.io import load_weights, read_mesh

    readers = {".json": lambda p: json.loads(p.read_text()), ".csv": log_rows, ".safetensors": load_weights,
               ".npy": lambda p: np.load(p, allow_pickle=False), ".png": plt.imread, ".ply": read_mesh,
               ".md": lambda p: p.read_text()}
    bad = []
    for path in sorted(p for p in run.rglob("*") if p.is_file() and "tensorboard" not in p.parts):
        try:
            readers.get(path.suffix, lambda p: p.read_bytes())(path)
        except Exception as exc:  # noqa: BLE001  (any failure to read is what is counted)
            bad.append(f"{path.relative_to(run)}: {type(exc).__name__}")
    return bad


def same_run(run: Path, reference: Path) -> dict[str, bool]:
    from morphable.io import load_weights

    files = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())  # noqa: E731
    identical = files(run) == files(reference)
    for name in (p.name for p in reference.glob("*.safetensors")):
        if not identical:
            break
        got, got_meta = load_weights(run / name)
        want, want_meta = load_weights(reference / name)
        identical = (sorted(got) == sorted(want) and got_meta == want_meta
                     and all(np.array_equal(got[k].numpy(), want[k].numpy()) for k in want))
    metrics = lambda root: without_timings(json.loads((root / "metrics.json").read_text()))  # noqa: E731
    identical = identical and metrics(run) == metrics(reference)
    log = reference / "log.csv"
    log_once = not log.exists() or ((run / "log.csv").exists() and log_rows(run / "log.csv") == log_rows(log))
    return {"bit_identical": identical, "log_once": log_once}


def kill_and_finish(preset: str, data: Path, out: Path, delay: float, env: dict[str, str],
                    reference: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(command(preset, data, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None and time.perf_counter() - started < delay:
        time.sleep(0.005)
    exited = proc.poll() is not None
    ran = time.perf_counter() - started
    if not exited:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    closed_form = preset == "pca"
    where = phase(out, closed_form) if out.exists() else "before the folder"
    debris_after_kill = len(list(out.rglob(".*.tmp"))) if out.exists() else 0
    finished_before = (out / "report.md").exists()
    extra = [] if closed_form else ["--resume"]
    done = subprocess.run(command(preset, data, out, *extra), env=env, capture_output=True, text=True)
    refused_finished = closed_form and finished_before
    ok = done.returncode == (2 if refused_finished else 0)
    result = {"delay_s": round(delay, 3), "ran_s": round(ran, 3), "phase": where, "exited_before_kill": exited,
              "debris_after_kill": debris_after_kill, "finish": "refused (finished)" if refused_finished else
              ("restart" if closed_form else "resume"), "finish_ok": ok,
              "finish_error": "" if ok else done.stderr.strip().splitlines()[-1:],
              "debris_after_finish": len(list(out.rglob(".*.tmp"))), "unreadable": unreadable(out)}
    result.update(same_run(out, reference) if (out / "metrics.json").exists() else
                  {"bit_identical": False, "log_once": False})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="kills per preset (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bm_resume.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    results = {"kills_per_preset": args.kills, "seed": args.seed, "presets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = environment(tmp / "cache")
        data = make_data(tmp, env)
        for preset in args.presets:
            t0 = time.perf_counter()
            durations = []
            for name in ("first", "reference"):
                started = time.perf_counter()
                subprocess.run(command(preset, data[preset], tmp / preset / name), env=env, check=True,
                               capture_output=True)
                durations.append(time.perf_counter() - started)
            reference = tmp / preset / "reference"
            repeatable = same_run(tmp / preset / "first", reference)
            seconds = min(durations)
            delays = list((np.arange(args.kills) + rng.random(args.kills)) / args.kills * 0.95 * seconds)
            kills: list[dict] = []
            while sum(not k["exited_before_kill"] for k in kills) < args.kills and len(kills) < 3 * args.kills:
                delay = delays.pop(0) if delays else rng.uniform(0, 0.95 * seconds)
                kills.append(kill_and_finish(preset, data[preset], tmp / preset / f"kill{len(kills)}", float(delay),
                                             env, reference))
                if kills[-1]["exited_before_kill"]:
                    seconds = min(seconds, kills[-1]["ran_s"])
            phases: dict[str, int] = {}
            for k in kills:
                phases[k["phase"]] = phases.get(k["phase"], 0) + 1
            results["presets"][preset] = {
                "reference_s": [round(d, 2) for d in durations], "references_identical": repeatable,
                "kills": sum(not k["exited_before_kill"] for k in kills), "runs_started": len(kills), "phases": phases,
                "finished_ok": sum(k["finish_ok"] for k in kills),
                "bit_identical": sum(k["bit_identical"] for k in kills),
                "log_once": sum(k["log_once"] for k in kills),
                "debris_after_kill": sum(k["debris_after_kill"] > 0 for k in kills),
                "debris_left": sum(k["debris_after_finish"] for k in kills),
                "unreadable_files": sum(len(k["unreadable"]) for k in kills), "runs": kills}
            print(f"{preset}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"| preset | kills | where the kills landed | finished ok | bit-identical | log.csv once | "
          f"debris after kill / left | unreadable | reference s |\n|{' --- |' * 9}")
    for preset, r in results["presets"].items():
        where = ", ".join(f"{n} {p}" for p, n in r["phases"].items())
        print(f"| {preset} | {r['kills']} of {r['runs_started']} runs | {where} | {r['finished_ok']} | {r['bit_identical']} | {r['log_once']} | "
              f"{r['debris_after_kill']} / {r['debris_left']} | {r['unreadable_files']} | {min(r['reference_s'])} |")


if __name__ == "__main__":
    main()
