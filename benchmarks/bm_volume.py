"""Volume-rendered normal maps: time, memory and accuracy of the fast sampler against the error-bounded
reference, and the cost of a training step with a normal-map loss against a 3D-only step (issue 16, item 7).

Fields: the SDF networks of config presets (``implicit.method.build_field``; CPU presets ``npm-small`` and
``triplane-small`` by default, ``--paper`` for ``npm`` / ``triplane``), geometrically initialised (a sphere of
radius 0.5), codes N(0, 0.01^2), then ``--warmup`` 3D-only training steps (an early-training field; an
untrained tri-plane field is far from an SDF: |grad| 1.13 +- 0.26). Data: four ICT-FaceKit skin identities
(open at the neck, eyes and mouth) written by ``write_sdf_dataset`` with ground-truth normal maps (8 Fibonacci
views, 64 x 64, back faces masked).

Protocol, per model, measured interleaved and repeated (``--repeats``, best of):

* ``3d``: one 3D-only step (``ImplicitMethod.losses`` on a collated batch of 4 shapes + backward).
* ``3d thesis counts``: the same with the thesis' 750 / 250 / 300 points per shape instead of the preset's.
* ``2d``: the 3D step plus ``2 * L1`` between volume-rendered and ground-truth normal maps on the mask, 2 views
  per shape, 32 x 32 maps of the 64 x 64 field of view (stride 2), fast sampler, backward through the
  normals (``create_graph``). ``ratio`` = ``2d / 3d``; with thesis counts ``(2d - 3d + 3d thesis) / 3d thesis``.
* ``render fast`` / ``render reference``: rendering + backward of the map loss alone with each sampler.
* accuracy: cosine of the fast maps to the reference maps (pixels with reference opacity > 0.5) and of the
  network-parameter gradients of the map loss; both also against a dense reference (the error-bounded
  sampler with 128 evaluation and 256 final samples; 512 / 256 changed its gradient by cosine 0.999).
* scaling: the ``2d`` step and the graph memory at 16, 32 and 64 maps (strides 4, 2, 1).

Memory: bytes of the distinct tensors autograd saves for the backward pass (``saved_tensors_hooks``), the
memory a step holds at its peak beyond the parameters; on CUDA also ``max_memory_allocated``.

Usage: OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bm_volume.py [--repeats 3] [--paper]
Writes benchmarks/results/bm_volume.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

BATCH, VIEWS, FIELD_OF_VIEW = 4, 2, 64
ICT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ict-facekit" / "ict_face_model_light_f32.npz"


def head_dataset(root: Path, ict: Path) -> Path:
    """Four ICT-FaceKit skin identities (w ~ N(0, I), neutral) with ground-truth normal maps (8 views, 64 x 64)."""
    from morphable.data.linear import ICT_FACE_VERTICES, ICT_SKIN_VERTICES, load_ict
    from morphable.data.normal_maps import NormalMapSettings
    from morphable.data.sdf import write_sdf_dataset

    model = load_ict(ict).subset_vertices(ICT_SKIN_VERTICES)
    mask = np.arange(model.n_vertices) < ICT_FACE_VERTICES
    weights = np.random.default_rng(0).standard_normal((BATCH, model.n_shape))
    meshes = [(f"head_{i}", model.vertices(w), model.faces, mask) for i, w in enumerate(weights)]
    return write_sdf_dataset(meshes, root / "sdf", model.unit, n_surface=5000, n_near=5000, n_ball=2000,
                             normal_maps=NormalMapSettings(views=8, resolution=FIELD_OF_VIEW), progress=False)


class Case:
    """One model: its method (network + codes), a 3D batch, the views and ground-truth maps of the batch."""

    def __init__(self, preset: str, data: Path, device: torch.device, warmup: int) -> None:
        from morphable.config import PRESETS
        from morphable.data.sdf import SdfDataset, SubsampleCounts
        from morphable.implicit.method import ImplicitMethod
        from morphable.render import LaplaceDensity

        self.config = PRESETS[preset]()
        model = self.config.model
        dataset = SdfDataset(data, SubsampleCounts(model.surface_face, model.surface_nonface, model.ball))
        dataset.set_epoch(0)
        self.method = ImplicitMethod(self.config, len(dataset), device)
        with torch.no_grad():
            self.method.codes.weight.normal_(0.0, 0.01)
        for step in range(warmup):
            dataset.set_epoch(step + 1)
            self.method.training_step(torch.utils.data.default_collate([dataset[i] for i in range(BATCH)]), step)
        self.batch = torch.utils.data.default_collate([dataset[i] for i in range(BATCH)])
        thesis = SdfDataset(data, SubsampleCounts())  # 750 face / 250 non-face per level, 300 ball points
        thesis.set_epoch(0)
        self.batch_thesis = torch.utils.data.default_collate([thesis[i] for i in range(BATCH)])
        maps = [dataset.normal_maps(i) for i in range(BATCH)]
        picks = [[(2 * i + k) % 8 for k in range(VIEWS)] for i in range(BATCH)]
        self.cameras = [[maps[i].cameras[k] for k in pick] for i, pick in enumerate(picks)]
        self.gt = torch.stack([torch.as_tensor(maps[i].normals[pick]) for i, pick in enumerate(picks)]).to(device)
        self.mask = torch.stack([torch.as_tensor(maps[i].mask[pick]) for i, pick in enumerate(picks)]).to(device)
        self.device = device
        self.density = LaplaceDensity().to(device)

    def sdf_fn(self):
        """The batch's field as ``points (B, N, 3) -> (B, N)``, planes generated once per call of this."""
        field, codes = self.method.network.field, self.method.codes(self.batch["index"].to(self.device))
        if hasattr(field, "generate_planes"):
            planes = field.generate_planes(codes)
            return lambda p: field.decode(planes, p)
        return lambda p: field(codes, p)

    def map_loss(self, stride: int, sampler: str = "fast", **options):
        from morphable.render import render_views

        out = render_views(self.sdf_fn(), self.cameras, self.density, stride=stride, sampler=sampler,
                           device=self.device, **options)
        gt, mask = self.gt[:, :, ::stride, ::stride], self.mask[:, :, ::stride, ::stride]
        loss = (out.normals - gt).abs().sum(-1)[mask].mean()
        return loss, out

    def step_3d(self, thesis_counts: bool = False) -> None:
        self.method.network.zero_grad()
        self.method.losses(self.batch_thesis if thesis_counts else self.batch, 0)["loss"].backward()

    def step_2d(self, stride: int = 2) -> None:
        self.method.network.zero_grad()
        loss = self.method.losses(self.batch, 0)["loss"] + 2.0 * self.map_loss(stride)[0]
        loss.backward()

    def render_only(self, sampler: str, stride: int = 2) -> None:
        self.method.network.zero_grad()
        self.map_loss(stride, sampler)[0].backward()

    def gradient(self, sampler: str, stride: int = 2, **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Parameter gradient of the map loss, the normal maps and the opacity."""
        self.method.network.zero_grad()
        loss, out = self.map_loss(stride, sampler, **options)
        loss.backward()
        grad = torch.cat([p.grad.reshape(-1) for p in self.method.network.parameters() if p.grad is not None])
        return grad.clone(), out.normals.detach(), out.opacity.detach()


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd saves while ``fn`` runs (its backward is part of ``fn``)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor):
        if t.numel():
            seen[(t.untyped_storage().data_ptr(), t.device.index or 0)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(case: Case, repeats: int) -> dict:
    jobs = {"3d": case.step_3d, "3d thesis counts": lambda: case.step_3d(True), "2d": case.step_2d, "render fast": lambda: case.render_only("fast"),
            "render reference": lambda: case.render_only("error_bounded")}
    for k in (16, 32, 64):
        jobs[f"2d {k}x{k}"] = lambda s=FIELD_OF_VIEW // k: case.step_2d(s)
    times = {name: float("inf") for name in jobs}
    for _ in range(repeats):  # interleaved: every job once per round
        for name, fn in jobs.items():
            times[name] = min(times[name], timed(fn, case.device))
    memory = {name: saved_bytes(jobs[name]) for name in ("3d", "2d 16x16", "2d 32x32", "2d 64x64")}
    cuda_peak = {}
    if case.device.type == "cuda":
        for name in ("3d", "2d 16x16", "2d 32x32", "2d 64x64"):
            torch.cuda.reset_peak_memory_stats()
            jobs[name]()
            cuda_peak[name] = torch.cuda.max_memory_allocated()
    g_fast, n_fast, _ = case.gradient("fast")
    g_ref, n_ref, o_ref = case.gradient("error_bounded")
    from morphable.render import ErrorBoundedSampler

    dense = ErrorBoundedSampler(n_samples=256, n_eval=128)
    g_dense, n_dense, _ = case.gradient("error_bounded", error_bounded=dense)
    seen = o_ref > 0.5
    cos = torch.nn.functional.cosine_similarity
    return {"seconds": times, "ratio_2d_3d": times["2d"] / times["3d"],
            "ratio_2d_3d_thesis_counts": (times["2d"] - times["3d"] + times["3d thesis counts"]) / times["3d thesis counts"],
            "ratio_reference_fast": times["render reference"] / times["render fast"],
            "saved_MB": {k: v / 1e6 for k, v in memory.items()}, "cuda_peak_MB": {k: v / 1e6 for k, v in cuda_peak.items()},
            "cos_maps_fast_reference": float(cos(n_fast[seen], n_ref[seen], dim=-1).mean()),
            "cos_maps_fast_dense": float(cos(n_fast[seen], n_dense[seen], dim=-1).mean()),
            "cos_maps_reference_dense": float(cos(n_ref[seen], n_dense[seen], dim=-1).mean()),
            "cos_grad_fast_reference": float(cos(g_fast, g_ref, dim=0)),
            "cos_grad_fast_dense": float(cos(g_fast, g_dense, dim=0)),
            "cos_grad_reference_dense": float(cos(g_ref, g_dense, dim=0)),
            "reference_hit_pixels": int(seen.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paper", action="store_true", help="paper-size presets npm / triplane")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=300, help="3D-only steps before measuring (default 300)")
    parser.add_argument("--ict", type=Path, default=ICT)
    args = parser.parse_args()
    device = torch.device(args.device)
    presets = ("triplane", "npm") if args.paper else ("triplane-small", "npm-small")
    results = {"machine": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "device": str(device), "warmup_steps": args.warmup, "batch": BATCH, "views_per_shape": VIEWS, "field_of_view": FIELD_OF_VIEW,
               "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = head_dataset(Path(tmp), args.ict)
        for preset in presets:
            results["models"][preset] = measure(Case(preset, data, device, args.warmup), args.repeats)
    out = Path(__file__).parent / "results" / ("bm_volume_paper.json" if args.paper else "bm_volume.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"| {'model':<15} | 3D step s | 2D step s | ratio | ratio, thesis counts | fast render+bwd s | "
          f"reference s | ref/fast | cos maps fast-ref / fast-dense / ref-dense | cos grad, same |")
    print("|" + "---|" * 10)
    for preset, r in results["models"].items():
        s = r["seconds"]
        print(f"| {preset:<15} | {s['3d']:.4f} | {s['2d']:.4f} | {r['ratio_2d_3d']:.2f} | "
              f"{r['ratio_2d_3d_thesis_counts']:.2f} | {s['render fast']:.4f} | "
              f"{s['render reference']:.3f} | {r['ratio_reference_fast']:.1f} | {r['cos_maps_fast_reference']:.4f} / "
              f"{r['cos_maps_fast_dense']:.4f} / {r['cos_maps_reference_dense']:.4f} | "
              f"{r['cos_grad_fast_reference']:.4f} / {r['cos_grad_fast_dense']:.4f} / "
              f"{r['cos_grad_reference_dense']:.4f} |")
    print(f"\n| {'model':<15} | map | 2D step s | ratio to 3D | graph MB |")
    print("|---|---|---|---|---|")
    for preset, r in results["models"].items():
        s, m = r["seconds"], r["saved_MB"]
        print(f"| {preset:<15} | 3D only | {s['3d']:.4f} | 1.00 | {m['3d']:.1f} |")
        for k in (16, 32, 64):
            name = f"2d {k}x{k}"
            print(f"| {preset:<15} | {k} x {k} | {s[name]:.4f} | {s[name] / s['3d']:.2f} | {m[name]:.1f} |")
    print(f"(batch {BATCH}, {VIEWS} views per shape, maps of the {FIELD_OF_VIEW} x {FIELD_OF_VIEW} field of view; "
          f"{results['threads']} thread(s), {device}; results in {out})")


if __name__ == "__main__":
    main()
