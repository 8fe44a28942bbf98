"""Speed of the explicit-model layers (forward + backward) against straightforward implementations.

Cases, on a 5,023-vertex face template (the ICT-FaceKit skin decimated with fast-simplification,
then 1256 / 314 / 79 / 20-vertex levels), batch 32:
  cheb     ChebConv K=6, 16->16 channels: ours vs a plain CSR recursion through autograd (torch sparse
           products, stacked terms, one GEMM) vs PyTorch Geometric's ChebConv (if importable).
  spiral   SpiralConv length 9, 16->16, dummy-vertex padding: ours vs advanced indexing x[:, idx].
  pool     QEM down (5023->1256) and up (1256->5023) sparse pooling: ours vs a per-sample torch.sparse.mm.
  agg      Deep3DMM fused aggregation (down k=8, up k=32): ours vs the dense formulation of the
           released code (dense scores, top-k scattered into a dense matrix, dense batched matmul);
           and the frozen sparse Pool.
  coma     the CoMA autoencoder (supplement Tables 1-2, ELU, L1 loss), one training step's forward +
           backward: our layers vs the same network built from PyG's ChebConv.
Times are per call: CPU time of the process (time.process_time) and wall time, one thread.
The D/U matrices here are simple stand-ins (nearest fine vertex, 3-nearest inverse-distance
weights) with the sparsity of the QEM ones; the spirals are nearest-neighbour lists.

Usage: OMP_NUM_THREADS=1 python benchmarks/bm_layers.py [--batch 32] [--repeats 5] [--no-pyg]
Writes benchmarks/results/bm_layers.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ICT_NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "ict-facekit" / "ict_face_model_light_f32.npz"
SKIN_VERTICES = 11248
LEVEL_SIZES = (5023, 1256, 314, 79, 20)


def build_template():
    """Levels ``[(vertices, faces), ...]`` of the ICT skin decimated to ``LEVEL_SIZES`` vertices (our QEM)."""
    import numpy as np

    from morphable.mesh.hierarchy import MeshHierarchy
    from morphable.mesh.qem import decimate

    data = np.load(ICT_NPZ, allow_pickle=False)
    faces = data["triangles"].astype(np.int64)
    faces = faces[(faces < SKIN_VERTICES).all(1)]
    vertices = data["neutral"][:SKIN_VERTICES].astype(np.float64)
    first = decimate(vertices, faces, LEVEL_SIZES[0])
    hierarchy = MeshHierarchy.build(vertices[first.kept], first.faces, factors=(4, 4, 4, 4))
    return list(zip(hierarchy.vertices, hierarchy.faces))


def scaled_laplacian(faces, n):
    """``-D^-1/2 A D^-1/2`` (scaled normalised Laplacian with lambda_max = 2)."""
    import numpy as np
    import scipy.sparse as sp

    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n)).tocsr()
    a = ((a + a.T) > 0).astype(np.float64)
    d = np.asarray(a.sum(1)).ravel()
    inv = sp.diags(1.0 / np.sqrt(np.maximum(d, 1)))
    return (-(inv @ a @ inv)).tocsr()


def down_up(fine, coarse):
    """Stand-in D (coarse <- nearest fine vertex) and U (fine <- 3 nearest coarse, inverse distance)."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    _, nearest = cKDTree(fine).query(coarse)
    d = sp.csr_matrix((np.ones(len(coarse)), (np.arange(len(coarse)), nearest)), shape=(len(coarse), len(fine)))
    dist, idx = cKDTree(coarse).query(fine, k=3)
    w = 1.0 / np.maximum(dist, 1e-9)
    w /= w.sum(1, keepdims=True)
    u = sp.csr_matrix((w.ravel(), (np.repeat(np.arange(len(fine)), 3), idx.ravel())), shape=(len(fine), len(coarse)))
    return d, u


def knn_spirals(vertices, length, dummy_fraction=0.05):
    """``(V, length)`` nearest-neighbour index lists (self first); some rows end in the dummy index V."""
    import numpy as np
    from scipy.spatial import cKDTree

    _, idx = cKDTree(vertices).query(vertices, k=length)
    idx = idx.astype(np.int64)
    rows = np.arange(0, len(vertices), int(1 / dummy_fraction))
    idx[rows, -2:] = len(vertices)
    return idx


def timed(fn, repeats):
    """Median (CPU ms, wall ms) of ``repeats`` calls after two warm-up calls."""
    fn()
    fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c0) * 1e3)
        wall.append((time.perf_counter() - w0) * 1e3)
    return round(statistics.median(cpu), 2), round(statistics.median(wall), 2)


def fwd_bwd(module_fn, x, grad):
    def run():
        x.grad = None
        module_fn(x).backward(grad)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-pyg", action="store_true", help="skip the PyTorch Geometric baselines")
    args = parser.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    from morphable.explicit.layers import ChebConv, Pool, SpiralConv, batch_view, vertex_major
    from morphable.explicit.pooling import LearnedAggregation

    torch.set_num_threads(1)
    torch.manual_seed(0)
    pyg = None
    if not args.no_pyg:
        try:
            import torch_geometric.nn as pyg
        except ImportError:
            print("torch_geometric not importable: PyG baselines skipped")

    levels = build_template()
    n = [len(v) for v, _ in levels]
    laps = [scaled_laplacian(f, len(v)) for v, f in levels]
    downs, ups = zip(*[down_up(levels[i][0], levels[i + 1][0]) for i in range(len(levels) - 1)])
    b, c, reps = args.batch, 16, args.repeats
    v0 = n[0]
    rows: list[dict] = []

    def record(case, impl, times, ours=None):
        """One table row; with ``ours``, also our CPU-time speed-up over this implementation."""
        row = {"case": case, "impl": impl, "cpu_ms": times[0], "wall_ms": times[1]}
        if ours is not None:
            row["ours_speedup_cpu"] = round(times[0] / ours[0], 2)
        rows.append(row)
        print(f"  {case:<28} {impl:<26} {times[0]:>10.1f} {times[1]:>10.1f}"
              + (f" {row['ours_speedup_cpu']:>8.1f}x" if ours is not None else ""), flush=True)

    print(f"template levels {n}, batch {b}")
    print(f"  {'case':<28} {'implementation':<26} {'CPU ms':>10} {'wall ms':>10} {'ours is':>9}")
    # In a network a layer gets a vertex-major view (the previous layer's output) and a gradient of
    # the same layout; the first layer of a model gets the batch-major mesh batch.
    x_vm = torch.randn(v0, b, c).transpose(0, 1).requires_grad_()
    g_vm = torch.randn(v0, b, c).transpose(0, 1)

    # --- ChebConv
    conv = ChebConv(c, c, 6, laps[0])
    ours = timed(fwd_bwd(conv, x_vm, g_vm), reps)
    lap_t = conv.laplacian.tensor().to_sparse_coo()

    def plain_cheb(x):
        t = [vertex_major(x)]
        t.append(torch.sparse.mm(lap_t, t[0]))
        for _ in range(2, conv.K):
            t.append(2 * torch.sparse.mm(lap_t, t[-1]) - t[-2])
        stacked = torch.stack([ti.view(v0, b, c) for ti in t], 2).view(v0 * b, -1)
        return batch_view(torch.addmm(conv.bias, stacked, conv.weight.view(-1, c)).view(v0, -1), b)

    plain = timed(fwd_bwd(plain_cheb, x_vm, g_vm), reps)
    record("cheb K6 16->16", "plain CSR autograd", plain, ours)
    if pyg is not None:
        lap0 = laps[0].tocoo()
        edges = torch.from_numpy(np.stack([lap0.row, lap0.col])).long()
        batch_edges = torch.cat([edges + i * v0 for i in range(b)], 1)
        pconv = pyg.ChebConv(c, c, 6, normalization="sym")
        xb = torch.randn(b * v0, c, requires_grad=True)
        gb = torch.randn(b * v0, c)
        pyg_t = timed(fwd_bwd(lambda x: pconv(x, batch_edges, lambda_max=2.0), xb, gb), max(2, reps // 2))
        record("cheb K6 16->16", "PyG ChebConv", pyg_t, ours)
    record("cheb K6 16->16", "ours", ours)

    # --- SpiralConv
    spirals = knn_spirals(levels[0][0], 9)
    sconv = SpiralConv(c, c, spirals)
    idx_t = torch.from_numpy(spirals)

    def naive_spiral(x):
        xp = torch.cat([x, x.new_zeros(x.shape[0], 1, c)], 1)
        return sconv.linear(xp[:, idx_t].reshape(x.shape[0], v0, -1))

    x_bm = torch.randn(b, v0, c, requires_grad=True)
    g_bm = torch.randn(b, v0, c)
    record("spiral L9 16->16", "x[:, idx] + Linear", timed(fwd_bwd(naive_spiral, x_bm, g_bm), reps),
           ours_spiral := timed(fwd_bwd(sconv, x_vm, g_vm), reps))
    record("spiral L9 16->16", "ours (batch-major in)", timed(fwd_bwd(sconv, x_bm, g_bm), reps))
    record("spiral L9 16->16", "ours (vertex-major in)", ours_spiral)

    # --- Pool
    for name, mat, v_in in (("pool down 5023->1256", downs[0], n[0]), ("pool up 1256->5023", ups[0], n[1])):
        pool = Pool(mat)
        coo = mat.tocoo()
        mt = torch.sparse_coo_tensor(torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64)),
                                     torch.from_numpy(coo.data).float(), mat.shape).coalesce()
        xi = torch.randn(v_in, b, c).transpose(0, 1).requires_grad_()
        gi = torch.randn(mat.shape[0], b, c).transpose(0, 1)
        ours_p = timed(fwd_bwd(pool, xi, gi), reps)
        per_sample = timed(fwd_bwd(lambda x: torch.stack([torch.sparse.mm(mt, xs) for xs in x]), xi, gi), reps)
        record(name, "per-sample sparse.mm", per_sample, ours_p)
        record(name, "ours", ours_p)

    # --- Deep3DMM aggregation
    for name, q, k, mat, top_k in (("agg fused down k=8", 1, 0, downs[0], 8), ("agg fused up k=32", 0, 1, ups[0], 32)):
        agg = LearnedAggregation(levels[q][0], levels[k][0], mat, mode="fused", top_k=top_k,
                                 reference_positions=levels[0][0])
        qem_dense = torch.from_numpy(mat.toarray()).float()
        xi = torch.randn(n[k], b, c).transpose(0, 1).requires_grad_()
        gi = torch.randn(n[q], b, c).transpose(0, 1)

        def dense_agg(x, agg=agg, qem_dense=qem_dense, top_k=top_k):
            qn, kn = F.normalize(agg.queries, dim=1), F.normalize(agg.keys, dim=1)
            score = (qn @ kn.t()).clamp_min(1e-25)
            val, idx = torch.topk(score, top_k, dim=1)
            att = torch.zeros_like(score).scatter(1, idx, val / val.sum(1, keepdim=True))
            w = agg.fusion / agg.fusion.sum()
            return torch.matmul((w[0] * qem_dense + w[1] * att).unsqueeze(0), x)

        ours_a = timed(fwd_bwd(agg, xi, gi), reps)
        record(name, "dense (released code)", timed(fwd_bwd(dense_agg, xi, gi), reps), ours_a)
        record(name, "ours", ours_a)
        frozen = agg.freeze()
        record(name, "ours frozen Pool", timed(fwd_bwd(frozen, xi, gi), reps))

    # --- CoMA network
    enc, dec, latent = [3, 16, 16, 16, 32], [32, 32, 16, 16, 16], 8

    class Coma(nn.Module):
        def __init__(self, conv_fn, pool_fn):
            super().__init__()
            self.enc = nn.ModuleList(conv_fn(enc[i], enc[i + 1], i) for i in range(4))
            self.down = nn.ModuleList(pool_fn(downs[i]) for i in range(4))
            self.fc_e = nn.Linear(n[4] * enc[-1], latent)
            self.fc_d = nn.Linear(latent, n[4] * dec[0])
            self.up = nn.ModuleList(pool_fn(ups[3 - i]) for i in range(4))
            self.dec = nn.ModuleList(conv_fn(dec[i], dec[i + 1], 3 - i) for i in range(4))
            self.out = conv_fn(dec[-1], 3, 0)

        def forward(self, x):
            for cv, dn in zip(self.enc, self.down):
                x = dn(F.elu(cv(x)))
            x = self.fc_d(self.fc_e(x.reshape(len(x), -1))).view(len(x), n[4], dec[0])
            for up, cv in zip(self.up, self.dec):
                x = F.elu(cv(up(x)))
            return self.out(x)

    meshes = torch.randn(b, v0, 3)
    target = torch.randn(b, v0, 3)

    def train_step(model):
        def run():
            model.zero_grad(set_to_none=True)
            F.l1_loss(model(meshes), target).backward()
        return run

    ours_net = Coma(lambda i, o, lvl: ChebConv(i, o, 6, laps[lvl]), Pool)
    ours_c = timed(train_step(ours_net), reps)
    if pyg is not None:
        level_edges = []
        for lap in laps:
            coo = lap.tocoo()
            e = torch.from_numpy(np.stack([coo.row, coo.col])).long()
            level_edges.append(torch.cat([e + i * lap.shape[0] for i in range(b)], 1))

        class PygConv(nn.Module):
            def __init__(self, i, o, lvl):
                super().__init__()
                self.conv, self.lvl = pyg.ChebConv(i, o, 6, normalization="sym"), lvl

            def forward(self, x):
                bsz, v, ch = x.shape
                return self.conv(x.reshape(bsz * v, ch), level_edges[self.lvl], lambda_max=2.0).view(bsz, v, -1)

        pyg_net = Coma(PygConv, Pool)
        record("coma train step (fwd+bwd)", "PyG ChebConv network", timed(train_step(pyg_net), max(2, reps // 2)),
               ours_c)
    record("coma train step (fwd+bwd)", "ours", ours_c)
    print(f"  coma, ours: {b / ours_c[0] * 1e3:.1f} meshes per CPU-second")

    result = {"template_levels": n, "batch": b, "channels": c, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "rows": rows}
    out = Path(__file__).parent / "results" / "bm_layers.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
