"""68-landmark accuracy and speed of the installed detector backends on rendered ICT-FaceKit faces.

Identities (seeds 1000...) and poses are disjoint from those that derived the MediaPipe mapping
(tools/derive_landmark_tables.py: seeds 0..79). Two pose sets: near-frontal (|yaw| <= 15, |pitch| <= 10,
|roll| <= 5 deg) and turned (25 <= |yaw| <= 45). NME: mean landmark distance over the outer-eye-corner
distance (iBUG 36 / 45) of the rendered truth; time: detection + landmarks per 256 x 256 image, one thread,
backends interleaved per image.

Usage: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bm_landmarks.py [--renders 40] [--ict FOLDER]
Writes benchmarks/results/bm_landmarks.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

POSE_SETS = {"frontal": ((0.0, 15.0), 10.0, 5.0), "turned": ((25.0, 45.0), 15.0, 10.0)}


def poses(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3)`` yaw, pitch, roll in degrees: ``|yaw|`` uniform in the set's range with a random sign."""
    (lo, hi), pitch, roll = POSE_SETS[kind]
    yaw = rng.uniform(lo, hi, n) * rng.choice([-1.0, 1.0], n)
    return np.stack([yaw, rng.uniform(-pitch, pitch, n), rng.uniform(-roll, roll, n)], axis=1)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--renders", type=int, default=40, help="renders per pose set")
    parser.add_argument("--ict", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "ict-facekit")
    args = parser.parse_args()

    from morphable.image.landmarks import available_backends, get_detector
    from morphable.image.shaded_face import ICTFace, identity_render

    face = ICTFace.from_folder(args.ict)
    backends = available_backends()
    detectors = {b: get_detector(b) for b in backends}
    rng = np.random.default_rng(2024)
    result = {"renders_per_set": args.renders, "backends": {}}
    rows = {(b, k): {"nme": [], "missed": 0, "seconds": []} for b in backends for k in POSE_SETS}
    for kind in POSE_SETS:
        for i, (yaw, pitch, roll) in enumerate(poses(kind, args.renders, rng)):
            image, truth = identity_render(face, 1000 + i + (0 if kind == "frontal" else 500), yaw, pitch, roll)
            iod = float(np.linalg.norm(truth[36] - truth[45]))
            for b in backends:
                t0 = time.perf_counter()
                found = detectors[b](image)
                rows[b, kind]["seconds"].append(time.perf_counter() - t0)
                if not found:
                    rows[b, kind]["missed"] += 1
                    continue
                best = max(found, key=lambda f: f.area)
                rows[b, kind]["nme"].append(float(np.linalg.norm(best.landmarks - truth, axis=1).mean()) / iod)
    print(f"{'backend':<10} {'poses':<8} {'found':>7} {'NME mean':>9} {'NME max':>8} {'ms/image':>9}")
    for (b, kind), r in rows.items():
        nme = np.array(r["nme"])
        summary = {"found": len(nme), "of": args.renders, "nme_mean": round(float(nme.mean()), 4) if len(nme) else None,
                   "nme_median": round(float(np.median(nme)), 4) if len(nme) else None,
                   "nme_max": round(float(nme.max()), 4) if len(nme) else None,
                   "ms_per_image_median": round(1000 * float(np.median(r["seconds"])), 1)}
        result["backends"].setdefault(b, {})[kind] = summary
        print(f"{b:<10} {kind:<8} {len(nme):>3}/{args.renders:<3} {summary['nme_mean'] or float('nan'):>9.4f} "
              f"{summary['nme_max'] or float('nan'):>8.4f} {summary['ms_per_image_median']:>9.1f}")
    return result


if __name__ == "__main__":
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "bm_landmarks.json").write_text(json.dumps(main(), indent=2) + "\n")
    print(f"wrote {results / 'bm_landmarks.json'}")
