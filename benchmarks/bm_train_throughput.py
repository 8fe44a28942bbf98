"""Training throughput of the mesh autoencoder presets at batch 32 on a ~5,000-vertex template.

For each preset: meshes per CPU-second (process CPU time, meaningful on a shared machine), meshes per
wall-second with 1 and 2 threads, FLOPs per training step (counted per layer, see
``forward_flops``),
and that FLOP rate as a fraction of this machine's measured float32 matmul rate. When
torch_geometric is importable, the same CoMA network built from PyG's ``ChebConv`` is measured in
the same run as the baseline (``pip install torch-geometric``; not a dependency of morphable).

Reference implementations measured on this kind of machine (issue text): SpiralNet++ 13.4,
Neural3DMM 7.5, CoMA on PyG ChebConv 3.5, CoMA with the released Deep3DMM pooling 2.8 meshes per
CPU-second.

Usage: OMP_WAIT_POLICY=PASSIVE python benchmarks/bm_train_throughput.py [--steps 6] [--presets ...]
Writes benchmarks/results/bm_train_throughput.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

DEFAULT_PRESETS = ("coma", "deep3dmm-spectral", "spiralnet++", "neural3dmm", "deep3dmm-spiral")
REFERENCE = {"spiralnet++": 13.4, "neural3dmm": 7.5, "coma (PyG ChebConv)": 3.5, "deep3dmm-spectral": 2.8}
BATCH = 32


def matmul_gflops(threads: int, n: int = 1024, repeats: int = 5) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def _pyg_coma(method) -> None:
    """Swap every ChebConv of a CoMA network for PyG's ChebConv (same K, sym normalisation, lambda_max 2)."""
    from torch_geometric.nn import ChebConv as PyGChebConv

    from morphable.explicit.layers import ChebConv

    class PyGAdapter(torch.nn.Module):
        def __init__(self, conv: ChebConv):
            super().__init__()
            lap = conv.laplacian.to_scipy() if hasattr(conv.laplacian, "to_scipy") else None
            if lap is None:
                crow, col = conv.laplacian.crow.cpu().numpy(), conv.laplacian.col.cpu().numpy()
                n = len(crow) - 1
                rows = np.repeat(np.arange(n), np.diff(crow))
            else:
                lap = lap.tocoo()
                rows, col = lap.row, lap.col
            keep = rows != col
            self.register_buffer("edge_index", torch.as_tensor(np.stack([rows[keep], col[keep]]), dtype=torch.long))
            self.conv = PyGChebConv(conv.in_channels, conv.out_channels, conv.K, normalization="sym")

        def forward(self, x):
            return self.conv(x, self.edge_index, lambda_max=2.0)

    net = method.network
    for name in ("encoder_convs", "decoder_convs"):
        convs = getattr(net, name)
        for i, conv in enumerate(convs):
            convs[i] = PyGAdapter(conv)
    net.output_conv = PyGAdapter(net.output_conv)
    method._optimizer = torch.optim.SGD(net.parameters(), lr=8e-3, momentum=0.9, weight_decay=5e-4)


def forward_flops(network: torch.nn.Module, data: torch.Tensor) -> float:
    """FLOPs of one forward pass, counted per layer with hooks (2 per multiply-add).

    ChebConv: ``K - 1`` sparse products with the Laplacian on ``B * C_in`` columns plus the ``K``
    GEMMs; SpiralConv: its GEMM ``(B V, L C_in) x (L C_in, C_out)``; Pool: one sparse product;
    learned aggregation: the cosine scores ``V_q x V_k x c`` plus its sparse product; Linear: its GEMM.
    (torch's FlopCounterMode counts a sparse-times-dense product as if the sparse matrix were dense,
    which overstates the Chebyshev layers by orders of magnitude, so it is not used.)
    """
    from morphable.explicit.layers import ChebConv, Pool, SpiralConv
    from morphable.explicit.pooling import LearnedAggregation

    total = [0.0]

    def hook(module, inputs, output):
        x = inputs[0]
        batch, channels = x.shape[0], x.shape[-1]
        if isinstance(module, ChebConv):
            v = x.shape[1]
            total[0] += 2.0 * (module.K - 1) * module.laplacian.col.numel() * batch * channels
            total[0] += 2.0 * batch * v * module.K * channels * module.out_channels
        elif isinstance(module, SpiralConv):
            total[0] += 2.0 * output.shape[0] * output.shape[1] * module.length * channels * module.out_channels
        elif isinstance(module, Pool):
            total[0] += 2.0 * module.matrix.col.numel() * batch * channels
        elif isinstance(module, LearnedAggregation):
            nnz = module.n_queries * (module.top_k or module.n_keys)
            if hasattr(module, "qem"):
                nnz += module.qem.col.numel()
            total[0] += 2.0 * module.n_queries * module.n_keys * module.dim + 2.0 * nnz * batch * channels
        elif isinstance(module, torch.nn.Linear):
            total[0] += 2.0 * x.numel() // x.shape[-1] * module.in_features * module.out_features

    kinds = (ChebConv, SpiralConv, Pool, LearnedAggregation, torch.nn.Linear)
    handles = [m.register_forward_hook(hook) for m in network.modules() if isinstance(m, kinds)
               and (isinstance(m, SpiralConv) or not any(isinstance(c, kinds) for c in m.children()))]
    with torch.no_grad():
        network(data)
    for h in handles:
        h.remove()
    return total[0]


def measure(method, data: torch.Tensor, steps: int, threads: int) -> tuple[float, float]:
    torch.set_num_threads(threads)
    method.training_step(data, 0)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(steps):
        method.training_step(data, i + 1)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return BATCH * steps / cpu, BATCH * steps / wall


def step_flops(method, data: torch.Tensor) -> float:
    """FLOPs of a training step: forward plus backward, taken as three times the forward FLOPs."""
    return 3.0 * forward_flops(method.network, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--presets", nargs="*", default=list(DEFAULT_PRESETS))
    args = parser.parse_args()

    from morphable.config import PRESETS
    from morphable.data import synthetic
    from morphable.data.registered import Normaliser
    from morphable.explicit.method import AutoencoderMethod, template_hierarchy

    vertices, faces = synthetic.template_mesh()
    rng = np.random.default_rng(0)
    raw = (vertices[None] + 0.002 * rng.standard_normal((BATCH, *vertices.shape))).astype(np.float32)
    normaliser = Normaliser.fit(raw)
    data = torch.as_tensor(normaliser.apply(raw), dtype=torch.float32)
    gflops = {t: matmul_gflops(t) for t in (1, 2)}
    runs = [(p, p) for p in args.presets]
    try:
        import torch_geometric  # noqa: F401  (only probes that the baseline can be built)

        runs.insert(1, ("coma (PyG ChebConv)", "coma"))
    except ImportError:
        print("torch_geometric not importable: the PyG CoMA baseline is skipped")
    rows = []
    for name, preset in runs:
        config = PRESETS[preset]()
        config.train.batch_size = BATCH
        hierarchy = template_hierarchy(vertices, faces, config.model)
        method = AutoencoderMethod(config, hierarchy, normaliser, torch.device("cpu"))
        torch.set_num_threads(1)
        flops = step_flops(method, data)  # counted on our layers: the PyG variant is the same network
        if name.startswith("coma (PyG"):
            _pyg_coma(method)
        per_cpu_1, per_wall_1 = measure(method, data, args.steps, 1)
        _, per_wall_2 = measure(method, data, args.steps, 2)
        rows.append({"model": name, "preset": preset, "meshes_per_cpu_s": round(per_cpu_1, 2),
                     "meshes_per_wall_s_1thread": round(per_wall_1, 2),
                     "meshes_per_wall_s_2threads": round(per_wall_2, 2),
                     "gflop_per_step": round(flops / 1e9, 3),
                     "fraction_of_matmul_rate": round(flops / BATCH * per_wall_1 / 1e9 / gflops[1], 4),
                     "reference_meshes_per_cpu_s": REFERENCE.get(name)})
        print(f"  measured {name}: {per_cpu_1:.1f} meshes/CPU-s", flush=True)
    by_name = {r["model"]: r for r in rows}
    if "coma (PyG ChebConv)" in by_name and "coma" in by_name:
        by_name["coma"]["speedup_vs_pyg_same_run"] = round(
            by_name["coma"]["meshes_per_cpu_s"] / by_name["coma (PyG ChebConv)"]["meshes_per_cpu_s"], 2)
    result = {"template_vertices": len(vertices), "batch": BATCH, "steps": args.steps,
              "matmul_gflops": {str(k): round(v, 1) for k, v in gflops.items()}, "rows": rows}
    out = Path(__file__).parent / "results" / "bm_train_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'model':<22} {'mesh/CPU-s':>10} {'wall 1T':>8} {'wall 2T':>8} {'GFLOP/step':>10} {'% matmul':>9} {'ref':>6}")
    for r in rows:
        ref = r["reference_meshes_per_cpu_s"]
        print(f"{r['model']:<22} {r['meshes_per_cpu_s']:>10.1f} {r['meshes_per_wall_s_1thread']:>8.1f} "
              f"{r['meshes_per_wall_s_2threads']:>8.1f} {r['gflop_per_step']:>10.2f} "
              f"{100 * r['fraction_of_matmul_rate']:>8.1f}% {ref if ref else '':>6}")
    print(f"(template {len(vertices)} vertices, batch {BATCH}; matmul {gflops[1]:.0f} GFLOP/s on 1 thread)")
    if "speedup_vs_pyg_same_run" in by_name.get("coma", {}):
        print(f"coma vs the same network on PyG ChebConv: {by_name['coma']['speedup_vs_pyg_same_run']}x")


if __name__ == "__main__":
    main()
