"""``morphable mesh``: template mesh tools (the down/up-sampling hierarchy of the explicit models)."""

from __future__ import annotations

import argparse
from pathlib import Path

from morphable.commands.options import add_output_file


def register(subparsers) -> None:
    parser = subparsers.add_parser("mesh", help="template mesh tools (hierarchy for the explicit models)")
    sub = parser.add_subparsers(dest="mesh_command", metavar="ACTION", required=True)
    hier = sub.add_parser("hierarchy", help="build the QEM hierarchy (D/U matrices, spirals, Laplacians) of a template")
    hier.add_argument("template", help="template mesh (.obj or .ply)")
    add_output_file(hier, ".npz; a PNG of the levels is written next to it")
    hier.add_argument("--factors", type=int, nargs="+", default=[4, 4, 4, 4],
                      help="reduction factor per level (default 4 4 4 4)")
    hier.add_argument("--spiral-style", choices=("spiralnet", "neural3dmm"), default="spiralnet",
                      help="spiral index style (default spiralnet)")
    hier.add_argument("--spiral-length", type=int, default=9, help="SpiralNet++ spiral length (default 9)")
    hier.add_argument("--spiral-dilation", type=int, default=1, help="spiral dilation (default 1)")
    hier.add_argument("--spiral-hops", type=int, default=1, help="Neural3DMM spiral hops (default 1)")
    hier.set_defaults(func=run_hierarchy)


def run_hierarchy(args: argparse.Namespace) -> int:
    """Build, save, draw and summarise the hierarchy of ``args.template``."""
    import time

    from morphable.commands.options import output_file
    from morphable.errors import MorphableError, input_error
    from morphable.io import read_mesh
    from morphable.mesh.hierarchy import MeshHierarchy

    out = output_file(args.out, args.overwrite, ".npz")
    mesh = read_mesh(args.template)
    start = time.perf_counter()
    try:
        hierarchy = MeshHierarchy.build(mesh.vertices, mesh.faces, factors=args.factors,
                                        spiral_length=args.spiral_length, spiral_dilation=args.spiral_dilation,
                                        spiral_style=args.spiral_style, spiral_hops=args.spiral_hops)
    except MorphableError as exc:
        raise input_error(args.template, str(exc)) from None
    seconds = time.perf_counter() - start
    hierarchy.save(out)
    picture = out.with_suffix(".png")
    draw_levels(picture, hierarchy, title=f"{Path(args.template).name}: factors {' '.join(map(str, args.factors))}")
    print(hierarchy.summary())
    print(f"built in {seconds:.2f} s; wrote {out} and {picture}")
    return 0


def draw_levels(path: Path, hierarchy, title: str = "") -> None:
    """PNG with one panel per level: the level's mesh, the vertices kept by the next level as dots."""
    from morphable.viz import draw_mesh, pyplot, save_figure

    plt = pyplot()
    n = hierarchy.n_levels
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 3.2), squeeze=False)
    for level, ax in enumerate(axes[0]):
        v, f = hierarchy.vertices[level], hierarchy.faces[level]
        draw_mesh(ax, v, f)
        subtitle = f"level {level}: {len(v)} vertices"
        if level < n - 1:
            kept = (v - v.mean(axis=0))[hierarchy.kept[level]]
            ax.scatter(kept[:, 0], kept[:, 1], s=3.0, c="#1f4e9c", linewidths=0)
            subtitle += f"\n(dots: {len(kept)} kept)"
        ax.set_title(subtitle, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
