"""Loading speed of a COMA-layout folder of synthetic PLY meshes: cold (parse every file) and cached.

Usage: OMP_NUM_THREADS=1 python benchmarks/bm_io.py [--meshes 2000]
Writes benchmarks/results/bm_io.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--meshes", type=int, default=2000)
    args = parser.parse_args()

    from morphable.data import synthetic
    from morphable.data.registered import load_registered, write_coma_layout

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MORPHABLE_CACHE"] = str(Path(tmp) / "cache")
        frames = max(1, args.meshes // (12 * 12))
        subjects = -(-args.meshes // (12 * frames))
        data = synthetic.generate(subjects, 12, frames, seed=0)
        n = min(args.meshes, len(data.vertices))
        root = Path(tmp) / "faces"
        t0 = time.perf_counter()
        write_coma_layout(root, data.vertices[:n], data.faces, data.subjects[:n], data.expressions[:n],
                          data.frames[:n], "m", progress=False)
        write_s = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in root.rglob("*.ply")) / 1e6
        timings = {}
        for name in ("cold", "cached"):
            t0, c0 = time.perf_counter(), time.process_time()
            ds = load_registered(root, progress=False)
            timings[name] = (time.perf_counter() - t0, time.process_time() - c0)
            assert len(ds) == n
    result = {
        "meshes": n, "vertices": int(data.vertices.shape[1]), "folder_mb": round(size_mb, 1),
        "write_s": round(write_s, 3),
        "cold_s": round(timings["cold"][0], 3), "cold_cpu_s": round(timings["cold"][1], 3),
        "cold_meshes_per_s": round(n / timings["cold"][0], 1),
        "cached_s": round(timings["cached"][0], 3), "cached_cpu_s": round(timings["cached"][1], 3),
        "cached_meshes_per_s": round(n / timings["cached"][0], 1),
    }
    out = Path(__file__).parent / "results" / "bm_io.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'case':<8} {'wall s':>8} {'CPU s':>8} {'meshes/s':>10}")
    for name in ("cold", "cached"):
        print(f"{name:<8} {result[name + '_s']:>8.3f} {result[name + '_cpu_s']:>8.3f} {result[name + '_meshes_per_s']:>10.1f}")
    print(f"({n} meshes of {result['vertices']} vertices, {result['folder_mb']} MB; written in {result['write_s']} s)")


if __name__ == "__main__":
    main()
