"""Draw docs/images/camera-convention.png: the OpenCV camera of morphable, the OpenGL eye frame beside it,
and the pixel-centre conventions of both on a small image.

    python docs/images/make_camera_figure.py [OUT.png]

The 3D panels plot camera coordinates ``(x, y, z)`` at matplotlib's ``(x, z, -y)``, so that "image down"
is down on the page and the optical axis goes into it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

W, H = 4, 3  # the example image, in pixels
F = 3.0  # focal length (pixels) of the drawn camera; cx = (W - 1) / 2, cy = (H - 1) / 2
DEPTH = 2.0  # where the image plane is drawn, in front of the camera
CX, CY = (W - 1) / 2, (H - 1) / 2
COLOURS = {"x": "tab:red", "y": "tab:green", "z": "tab:blue"}


def page(p: np.ndarray) -> np.ndarray:
    """Camera coordinates ``(..., 3)`` -> plot coordinates ``(x, z, -y)``."""
    return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1)


def arrow(ax, direction, label: str, colour: str, length: float = 2.2) -> None:
    d = page(np.asarray(direction, float)) * length
    ax.quiver(0, 0, 0, *d, color=colour, arrow_length_ratio=0.12, linewidth=2.2)
    ax.text(*(d * 1.12), label, color=colour, fontsize=12, fontweight="bold", ha="center", va="center")


def image_plane(ax, label: str, corner: tuple[float, float]) -> None:
    """The W x H pixels and their centres on the image plane, drawn at depth ``DEPTH`` in front of the
    camera (OpenCV z = +DEPTH, which is GL z = -DEPTH), with the frustum's corner rays; ``corner`` (OpenCV
    pixel coordinates) is marked and labelled. One pixel is drawn ``DEPTH / F`` wide."""
    px = DEPTH / F
    
    def at(j, i):  # OpenCV pixel coordinates (u, v) = (j, i) -> camera point on the plane, in the panel's frame
        return np.array([(j - CX) * px, (i - CY) * px, DEPTH])

    for i in range(H + 1):
        ax.plot(*page(np.array([at(-0.5, i - 0.5), at(W - 0.5, i - 0.5)])).T, color="0.45", linewidth=0.9)
    for j in range(W + 1):
        ax.plot(*page(np.array([at(j - 0.5, -0.5), at(j - 0.5, H - 0.5)])).T, color="0.45", linewidth=0.9)
    centres = np.array([at(j, i) for i in range(H) for j in range(W)])
    ax.scatter(*page(centres).T, color="black", s=10, depthshade=False)
    for j, i in ((-0.5, -0.5), (W - 0.5, -0.5), (W - 0.5, H - 0.5), (-0.5, H - 0.5)):
        ax.plot(*page(np.array([np.zeros(3), at(j, i)])).T, color="0.6", linewidth=0.8, linestyle="--")
    mark = at(*corner)
    ax.scatter(*page(mark[None]).T, color="tab:orange", s=30, depthshade=False)
    ax.text(*page(mark + [0.0, -0.3 if corner[1] < CY else 0.45, 0.0]), label, fontsize=8, color="tab:orange")
    axis_hit = at(CX, CY)
    ax.text(*page(axis_hit + [0.08, 0.12, 0.0]), "(cx, cy)", fontsize=7)


def camera_panel(ax, title: str, axes: dict[str, tuple[float, float, float]], label: str,
                 corner: tuple[float, float], note: str) -> None:
    """A camera at the origin; ``axes`` maps an axis name to its direction in OpenCV camera coordinates."""
    image_plane(ax, label, corner)
    for name, direction in axes.items():
        arrow(ax, direction, name, COLOURS[name[0]], length=DEPTH + 0.9 if name[0] == "z" else 1.8)
    ax.scatter([0], [0], [0], color="black", s=25)
    ax.set_title(title, fontsize=12)
    ax.text2D(0.5, 0.02, note, transform=ax.transAxes, ha="center", va="top", fontsize=9)
    ax.set_xlim(-2, 2), ax.set_ylim(-0.5, 3.5), ax.set_zlim(-2, 2)
    ax.set_box_aspect((4, 4, 4))
    ax.view_init(elev=9, azim=-55)
    ax.set_axis_off()


def pixel_panel(ax) -> None:
    """A W x H image: OpenCV (u, v) with centres at integers from the top left, GL window (x_w, y_w) with
    centres at half-integers from the bottom left."""
    gl = "tab:purple"
    for i in range(H + 1):
        ax.plot([-0.5, W - 0.5], [i - 0.5, i - 0.5], color="0.5", linewidth=0.8)
    for j in range(W + 1):
        ax.plot([j - 0.5, j - 0.5], [-0.5, H - 0.5], color="0.5", linewidth=0.8)
    for i in range(H):
        for j in range(W):
            ax.plot(j, i, "k.", markersize=5)
            ax.text(j, i - 0.12, f"({j}, {i})", ha="center", va="bottom", fontsize=8)
            ax.text(j, i + 0.14, f"[{j + 0.5:g}, {H - 0.5 - i:g}]", ha="center", va="top", fontsize=7, color=gl)
    ax.plot(CX, CY, marker="+", color="tab:orange", markersize=14, markeredgewidth=2)
    ax.annotate("principal point (cx, cy)\n= ((W-1)/2, (H-1)/2)", (CX, CY), (W - 1.6, -1.0), fontsize=8,
                color="tab:orange", arrowprops={"arrowstyle": "->", "color": "tab:orange"})

    def axis_arrow(start, end, colour):
        ax.annotate("", end, start, arrowprops={"arrowstyle": "->", "color": colour, "lw": 2})

    axis_arrow((-0.5, -0.85), (1.0, -0.85), COLOURS["x"])
    axis_arrow((-0.85, -0.5), (-0.85, 0.8), COLOURS["y"])
    ax.text(1.1, -0.85, "u", color=COLOURS["x"], va="center", fontsize=11, fontweight="bold")
    ax.text(-0.85, 0.9, "v", color=COLOURS["y"], ha="center", va="top", fontsize=11, fontweight="bold")
    axis_arrow((-0.5, H - 0.15), (1.0, H - 0.15), gl)
    axis_arrow((-0.85, H - 0.5), (-0.85, H - 1.3), gl)
    ax.text(1.1, H - 0.15, "$x_w$", color=gl, va="center", fontsize=11)
    ax.text(-0.85, H - 1.4, "$y_w$", color=gl, ha="center", va="bottom", fontsize=11)
    ax.text(-0.9, H + 0.3, "black (u, v): OpenCV pixel centres at integers, row 0 at the top\n"
            "purple [x_w, y_w]: OpenGL window coordinates of the same centres,\n"
            "half-integers from the bottom-left corner: x_w = u + 1/2, y_w = H - 1/2 - v",
            fontsize=8, va="top")
    ax.set_xlim(-1.2, W + 0.3)
    ax.set_ylim(H + 1.35, -1.5)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(f"a {W} x {H} image (W = {W}, H = {H})", fontsize=12)


def main(out: Path) -> None:
    fig = Figure(figsize=(15, 5.6))
    camera_panel(fig.add_subplot(1, 3, 1, projection="3d"), "OpenCV camera (morphable)",
                 {"x": (1, 0, 0), "y": (0, 1, 0), "z": (0, 0, 1)}, "pixel centre (u, v) = (0, 0)", (0.0, 0.0),
                 "x right, y down, z forward (looks along +z)\n$X_c = R X + t$,  $(u, v, 1)^T \\sim K X_c$")
    camera_panel(fig.add_subplot(1, 3, 2, projection="3d"), "OpenGL eye frame",
                 {"x_gl": (1, 0, 0), "y_gl": (0, -1, 0), "z_gl": (0, 0, -1)}, "window origin (x_w, y_w) = (0, 0)", (-0.5, H - 0.5),
                 "x right, y up, z backward (looks along -z)\n$X_{gl} = \\mathrm{diag}(1, -1, -1)\\, X_c$")
    pixel_panel(fig.add_subplot(1, 3, 3))
    fig.subplots_adjust(left=0.0, right=0.99, top=0.93, bottom=0.1, wspace=0.02)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("camera-convention.png"))
