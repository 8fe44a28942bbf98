"""Training throughput of the mesh autoencoder presets at batch 32 on a ~5,000-vertex template.

For each preset: meshes per CPU-second (process CPU time, meaningful on a shared machine), meshes per
wall-second with 1 and 2 threads, FLOPs per training step (counted per layer, see ``forward_flops``),
and that FLOP rate as a fraction of this machine's measured float32 matmul rate.

Baselines measured in the same run, interleaved with ours (``--repeats`` rounds, medians reported):

* ``coma (PyG ChebConv)``: the same CoMA network with every ``ChebConv`` swapped for PyG's
  (``pip install torch-geometric``; not a dependency of morphable). Both ways of feeding it a batch are
  measured and the faster is the baseline: ``shared`` (``x: (B, V, C)`` with the template's edge list)
  and ``batched`` (PyG's own batching: one graph of ``B`` disjoint copies, ``x: (B*V, C)``).
* ``spiralnet++ (reference layer)``: the same network and weights with every ``SpiralConv`` replaced by the
  layer of the SpiralNet++ authors' implementation, re-implemented here (:class:`ReferenceSpiralConv`:
  one gather of all neighbours by the flattened spiral index tensor, flatten, one ``Linear``); the
  pooling stays ours, so only the convolution differs. The outputs are checked to agree first.
* ``spiralnet++ (reference network)``: the reference layer and also the authors' pooling
  (:class:`ReferencePool`: gather the input rows by the sparse matrix's column indices, scale them by
  its values, scatter-add them into the output rows), so the whole network runs as the authors' code
  does. It is the baseline of the SpiralNet++ target; the reference-layer row shows how much of the
  difference is the convolution.

With CUDA available, the presets are also measured on the GPU (meshes per wall-second) with the ratio to
one CPU thread.

Quoted figures (issue text, other machines): SpiralNet++ 13.4, Neural3DMM 7.5, CoMA on PyG ChebConv 3.5,
CoMA with the released Deep3DMM pooling 2.8 meshes per CPU-second.

Usage: OMP_WAIT_POLICY=PASSIVE python benchmarks/bm_train_throughput.py [--steps 6] [--repeats 3] [--presets ...]
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
QUOTED = {"spiralnet++": 13.4, "neural3dmm": 7.5, "coma (PyG ChebConv)": 3.5, "deep3dmm-spectral": 2.8}
BATCH = 32


def matmul_gflops(threads: int, n: int = 1024, repeats: int = 5, inner: int | None = None,
                  out: int | None = None) -> float:
    """float32 GEMM rate ``(n, inner) x (inner, out)`` (default square ``n``) in GFLOP/s."""
    torch.set_num_threads(threads)
    inner, out = inner or n, out or n
    a, b = torch.randn(n, inner), torch.randn(inner, out)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n * inner * out * repeats / (time.perf_counter() - t0) / 1e9


def _swap_convs(net: torch.nn.Module, make) -> None:
    """Replace every convolution of a :class:`MeshAutoencoder` by ``make(conv)``."""
    for name in ("encoder_convs", "decoder_convs"):
        convs = getattr(net, name)
        for i, conv in enumerate(convs):
            convs[i] = make(conv)
    net.output_conv = make(net.output_conv)


def _pyg_coma(method, layout: str) -> None:
    """Swap every ChebConv of a CoMA network for PyG's ChebConv (same K, sym normalisation, lambda_max 2).

    layout ``shared``: ``x (B, V, C)`` and the template's edges; ``batched``: PyG's batching, one graph of
    ``B`` disjoint template copies and ``x (B*V, C)`` (the edge lists are built once per batch size).
    """
    from torch_geometric.nn import ChebConv as PyGChebConv

    from morphable.explicit.layers import ChebConv

    class PyGAdapter(torch.nn.Module):
        def __init__(self, conv: ChebConv):
            super().__init__()
            lap = conv.laplacian.to_scipy().tocoo()
            keep = lap.row != lap.col
            self.n = lap.shape[0]
            self.register_buffer("edge_index", torch.as_tensor(np.stack([lap.row[keep], lap.col[keep]]),
                                                               dtype=torch.long))
            self.conv = PyGChebConv(conv.in_channels, conv.out_channels, conv.K, normalization="sym")
            self.batched_edges: dict[int, torch.Tensor] = {}

        def forward(self, x):
            if layout == "shared":
                return self.conv(x, self.edge_index, lambda_max=2.0)
            b = x.shape[0]
            if b not in self.batched_edges:
                offsets = torch.arange(b, device=x.device).repeat_interleave(self.edge_index.shape[1]) * self.n
                self.batched_edges[b] = self.edge_index.repeat(1, b) + offsets
            y = self.conv(x.reshape(b * self.n, -1), self.batched_edges[b], lambda_max=2.0)
            return y.view(b, self.n, -1)

    _swap_convs(method.network, PyGAdapter)
    method._optimizer = torch.optim.SGD(method.network.parameters(), lr=8e-3, momentum=0.9, weight_decay=5e-4)


class ReferenceSpiralConv(torch.nn.Module):
    """The SpiralNet++ authors' spiral layer, re-implemented: ``x: (B, V, C)`` ->
    ``Linear(x[:, S].view(B, V, L*C))`` with ``S`` the ``(V, L)`` spiral indices flattened into one
    ``index_select``. Index ``V`` (our padding of short spirals) reads an appended zero row. Shares the
    ``Linear`` (so the parameters and optimiser state) of the :class:`SpiralConv` it replaces."""

    def __init__(self, conv):
        super().__init__()
        self.linear, self.has_dummy = conv.linear, conv.has_dummy
        self.register_buffer("flat_indices", conv.indices.reshape(-1).clone())
        self.n_vertices = conv.n_vertices

    def forward(self, x):
        if self.has_dummy:
            x = torch.cat([x, x.new_zeros(x.shape[0], 1, x.shape[2])], dim=1)
        gathered = torch.index_select(x, 1, self.flat_indices)
        return self.linear(gathered.view(x.shape[0], self.n_vertices, -1))


class ReferencePool(torch.nn.Module):
    """The SpiralNet++ authors' pooling, re-implemented: ``y[:, r] += v * x[:, c]`` over the COO entries
    ``(r, c, v)`` of the fixed pooling matrix, as one ``index_select``, a broadcast multiply and one
    ``index_add`` (their code uses ``torch_scatter.scatter_add``, the same reduction).
    ``x: (B, V_in, C)`` -> ``(B, V_out, C)``."""

    def __init__(self, pool):
        super().__init__()
        matrix = pool.matrix
        counts = matrix.crow[1:] - matrix.crow[:-1]
        rows = torch.repeat_interleave(torch.arange(matrix.shape[0]), counts.long())
        self.register_buffer("row", rows)
        self.register_buffer("col", matrix.col.long().clone())
        self.register_buffer("value", matrix.values.detach().clone().unsqueeze(-1))
        self.n_out = matrix.shape[0]

    def forward(self, x):
        gathered = torch.index_select(x, 1, self.col) * self.value
        out = x.new_zeros(x.shape[0], self.n_out, x.shape[2])
        return out.index_add(1, self.row, gathered)


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
    """Meshes per process-CPU-second and per wall-second over ``steps`` training steps (after one warm-up)."""
    torch.set_num_threads(threads)
    method.training_step(data, 0)
    cuda = data.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(steps):
        method.training_step(data, i + 1)
    if cuda:
        torch.cuda.synchronize()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return BATCH * steps / cpu, BATCH * steps / wall


def step_flops(method, data: torch.Tensor) -> float:
    """FLOPs of a training step: forward plus backward, taken as three times the forward FLOPs."""
    return 3.0 * forward_flops(method.network, data)


def build(preset: str, variant: str | None, vertices, faces, normaliser, data, device):
    """The preset's method on ``device``, its FLOPs per step (counted on our layers) and, for a baseline
    ``variant`` (``pyg-shared``, ``pyg-batched``, ``reference``), the same network with the swapped layers."""
    from morphable.config import PRESETS
    from morphable.explicit.method import AutoencoderMethod, template_hierarchy

    torch.manual_seed(0)
    config = PRESETS[preset]()
    config.train.batch_size = BATCH
    hierarchy = template_hierarchy(vertices, faces, config.model)
    method = AutoencoderMethod(config, hierarchy, normaliser, device)
    torch.set_num_threads(1)
    flops = step_flops(method, data)
    if variant in ("pyg-shared", "pyg-batched"):
        _pyg_coma(method, variant.split("-")[1])
        method.network.to(device)
    elif variant in ("reference", "reference-network"):
        with torch.no_grad():
            ours = method.network(data)
        _swap_convs(method.network, ReferenceSpiralConv)  # shares the Linear layers: same weights and optimiser
        if variant == "reference-network":
            for pools in (method.network.downs, method.network.ups):
                for i, pool in enumerate(pools):
                    pools[i] = ReferencePool(pool)
        method.network.to(device)
        with torch.no_grad():
            torch.testing.assert_close(method.network(data), ours, rtol=1e-4, atol=1e-5)
    return method, flops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--presets", nargs="*", default=list(DEFAULT_PRESETS))
    args = parser.parse_args()

    from morphable.data import synthetic
    from morphable.data.registered import Normaliser

    vertices, faces = synthetic.template_mesh()
    rng = np.random.default_rng(0)
    raw = (vertices[None] + 0.002 * rng.standard_normal((BATCH, *vertices.shape))).astype(np.float32)
    normaliser = Normaliser.fit(raw)
    data = torch.as_tensor(normaliser.apply(raw), dtype=torch.float32)
    gflops = {t: matmul_gflops(t) for t in (1, 2)}
    runs = [(p, p, None) for p in args.presets]
    if "coma" in args.presets:
        try:
            import torch_geometric  # noqa: F401  (only probes that the baseline can be built)

            at = args.presets.index("coma") + 1
            runs[at:at] = [("coma (PyG shared graph)", "coma", "pyg-shared"),
                           ("coma (PyG batched graph)", "coma", "pyg-batched")]
        except ImportError:
            print("torch_geometric not importable: the PyG CoMA baseline is skipped")
    if "spiralnet++" in args.presets:
        at = [r[0] for r in runs].index("spiralnet++") + 1
        runs[at:at] = [("spiralnet++ (reference layer)", "spiralnet++", "reference"),
                       ("spiralnet++ (reference network)", "spiralnet++", "reference-network")]
    cpu = torch.device("cpu")
    methods = {name: build(preset, variant, vertices, faces, normaliser, data, cpu)
               for name, preset, variant in runs}
    samples = {name: [] for name, _, _ in runs}
    for round_ in range(args.repeats):
        for name, _, _ in runs:
            samples[name].append(measure(methods[name][0], data, args.steps, 1))
            print(f"  round {round_ + 1}: {name}: {samples[name][-1][0]:.1f} meshes/CPU-s", flush=True)
    rows = []
    for name, preset, variant in runs:
        method, flops = methods[name]
        per_cpu_1 = float(np.median([c for c, _ in samples[name]]))
        per_wall_1 = float(np.median([w for _, w in samples[name]]))
        _, per_wall_2 = measure(method, data, args.steps, 2)
        rows.append({"model": name, "preset": preset, "baseline": variant,
                     "meshes_per_cpu_s": round(per_cpu_1, 2),
                     "meshes_per_cpu_s_rounds": [round(c, 2) for c, _ in samples[name]],
                     "meshes_per_wall_s_1thread": round(per_wall_1, 2),
                     "meshes_per_wall_s_2threads": round(per_wall_2, 2),
                     "gflop_per_step": round(flops / 1e9, 3),
                     "fraction_of_matmul_rate": round(flops / BATCH * per_wall_1 / 1e9 / gflops[1], 4),
                     "quoted_meshes_per_cpu_s": QUOTED.get(name if variant is None else preset)})
    by_name = {r["model"]: r for r in rows}
    ratios = {}
    pyg = [by_name[n] for n in ("coma (PyG shared graph)", "coma (PyG batched graph)") if n in by_name]
    if pyg and "coma" in by_name:
        best = max(pyg, key=lambda r: r["meshes_per_cpu_s"])
        ratios["coma vs PyG ChebConv (best layout: " + best["model"] + ")"] = {
            "ours": by_name["coma"]["meshes_per_cpu_s"], "baseline": best["meshes_per_cpu_s"],
            "ratio": round(by_name["coma"]["meshes_per_cpu_s"] / best["meshes_per_cpu_s"], 2), "target": 20.0}
    for baseline in ("spiralnet++ (reference network)", "spiralnet++ (reference layer)"):
        if baseline in by_name and "spiralnet++" in by_name:
            ref = by_name[baseline]["meshes_per_cpu_s"]
            ratios[f"spiralnet++ vs the {baseline[13:-1]}"] = {
                "ours": by_name["spiralnet++"]["meshes_per_cpu_s"], "baseline": ref,
                "ratio": round(by_name["spiralnet++"]["meshes_per_cpu_s"] / ref, 2), "target": 3.0}
    for label, entry in ratios.items():
        entry["met"] = entry["ratio"] >= entry["target"]
        # what the target asks of the machine: the FLOP rate of our network at target x baseline meshes/CPU-s
        flops = by_name["coma" if label.startswith("coma") else "spiralnet++"]["gflop_per_step"]
        entry["target_gflop_per_s"] = round(entry["target"] * entry["baseline"] * flops / BATCH, 1)
        entry["target_fraction_of_matmul_rate"] = round(entry["target_gflop_per_s"] / gflops[1], 2)
        width = 16 if label.startswith("coma") else 32  # the finest level's (V*B, C) x (C, C) GEMMs
        layer_rate = matmul_gflops(1, n=len(vertices) * BATCH, inner=width, out=width)
        entry["layer_gemm_gflop_per_s"] = round(layer_rate, 1)
        entry["target_fraction_of_layer_gemm_rate"] = round(entry["target_gflop_per_s"] / layer_rate, 2)
    gpu = {}
    if torch.cuda.is_available():
        device = torch.device("cuda")
        for name, preset, variant in runs:
            if variant is None:
                method, _ = build(preset, None, vertices, faces, normaliser, data.to(device), device)
                _, per_wall = measure(method, data.to(device), args.steps, 1)
                gpu[name] = {"meshes_per_wall_s": round(per_wall, 2),
                             "ratio_to_cpu_1thread": round(per_wall / by_name[name]["meshes_per_wall_s_1thread"], 2)}
    result = {"template_vertices": len(vertices), "batch": BATCH, "steps": args.steps, "repeats": args.repeats,
              "matmul_gflops": {str(k): round(v, 1) for k, v in gflops.items()}, "rows": rows,
              "ratios": ratios, "cuda": gpu or None}
    out = Path(__file__).parent / "results" / "bm_train_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'model':<30} {'mesh/CPU-s':>10} {'wall 1T':>8} {'wall 2T':>8} {'GFLOP/step':>10} {'% matmul':>9} "
          f"{'quoted':>6}")
    for r in rows:
        quoted = r["quoted_meshes_per_cpu_s"]
        print(f"{r['model']:<30} {r['meshes_per_cpu_s']:>10.1f} {r['meshes_per_wall_s_1thread']:>8.1f} "
              f"{r['meshes_per_wall_s_2threads']:>8.1f} {r['gflop_per_step']:>10.2f} "
              f"{100 * r['fraction_of_matmul_rate']:>8.1f}% {quoted if quoted else '':>6}")
    print(f"(template {len(vertices)} vertices, batch {BATCH}, one thread, medians of {args.repeats} interleaved "
          f"rounds; matmul {gflops[1]:.0f} GFLOP/s on 1 thread)")
    for label, entry in ratios.items():
        print(f"{label}: {entry['ours']} / {entry['baseline']} = {entry['ratio']}x "
              f"(target {entry['target']}x: {'met' if entry['met'] else 'missed'}; the target needs "
              f"{entry['target_gflop_per_s']} GFLOP/s, {100 * entry['target_fraction_of_matmul_rate']:.0f}% of "
              f"the 1-thread 1024^3 matmul rate, {100 * entry['target_fraction_of_layer_gemm_rate']:.0f}% of the "
              f"rate of the layers' (V*B, C) x (C, C) GEMM)")
    for name, entry in gpu.items():
        print(f"CUDA {name}: {entry['meshes_per_wall_s']} meshes/s ({entry['ratio_to_cpu_1thread']}x one CPU thread)")


if __name__ == "__main__":
    main()
