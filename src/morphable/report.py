"""``report.html``: a self-contained page of a run (metrics table, plots, rotatable 3D meshes).

The page needs no network: the plots are inline base64 PNGs and the meshes are drawn by a small WebGL
viewer written here (:data:`VIEWER_JS`, plain JavaScript, no library). Each mesh travels as base64 buffers:
positions ``(V, 3)`` float32, centred on their bounding box and scaled into the unit sphere, faces
``(F, 3)`` uint32 and colours ``(V, 3)`` uint8. The viewer computes area-weighted vertex normals
``n_v = sum_{f ∋ v} (b - a) x (c - a)`` and shades two-sided Lambert, ``c = albedo (0.3 + 0.7 |n . l|)``
with the light along the view direction; dragging rotates every view (yaw, pitch), the wheel zooms.

What is shown depends on the family:

* mesh models (explicit): the test reconstructions of ``meshes/*.ply``, coloured by per-vertex error as
  evaluation wrote them, and the first training mesh as the model decodes it from its code;
* implicit models: the first training codes extracted at ``64^3`` and, for each fit folder given
  (``morphable fit --out``), the fitted code extracted the same way.

Test hook: ``window.rotateView(dx, dy)`` rotates all views by a drag of ``(dx, dy)`` pixels; opened as
``report.html#selftest`` the page reads its canvases back before and after ``rotateView(60, 30)`` and writes
``{"errors", "canvases": [{"foreground", "changed"}]}`` as JSON into ``<pre id="selftest">``.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from morphable.errors import input_error

REPORT_HTML = "report.html"
MAX_MESHES = 4
"""Meshes of each kind in a report (test reconstructions, extracted training codes): keeps the file small."""
EXTRACT_RESOLUTION = 64
NEUTRAL_RGB = (217, 191, 173)
"""Colour of meshes without per-vertex values (skin, as :func:`morphable.viz.draw_mesh`)."""


def write_report(run_path: str | os.PathLike, out: str | os.PathLike | None = None,
                 fits: Sequence[str | os.PathLike] = (), device: str = "auto") -> Path:
    """Write the report of a run folder to ``out`` (default ``RUN/report.html``); returns its path.

    ``fits``: folders of ``morphable fit`` on this (implicit) run, whose fitted heads are shown too."""
    from morphable.experiment import open_run
    from morphable.io import atomic_path
    from morphable.runs import METRICS_FILE

    run, config = open_run(run_path)
    if not (run.path / METRICS_FILE).exists():
        raise input_error(run.path, f"run has no {METRICS_FILE}: train or evaluate it first")
    if fits and config.family != "implicit":
        raise input_error(fits[0], f"fitted heads belong to implicit runs; {run.path} is a '{config.method}' run")
    metrics = run.read_metrics()
    if config.family == "implicit":
        meshes, note = implicit_meshes(run.path, fits, device)
    else:
        meshes, note = explicit_meshes(run.path, device)
    plots = sorted((run.path / "plots").glob("*.png")) if (run.path / "plots").is_dir() else []
    page = render_html(f"{config.method} run {run.path.name}", metric_rows(metrics), plots, meshes, note)
    out = Path(out) if out is not None else run.path / REPORT_HTML
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


def explicit_meshes(run_path: Path, device: str) -> tuple[list[dict], str]:
    """Test reconstructions from ``meshes/*.ply`` (error colours as written) and training mesh 0 decoded
    from its code (``train_codes.safetensors``; absent when the run was evaluated on other data)."""
    from morphable.experiment import load_run
    from morphable.explicit.experiment import TRAIN_CODES
    from morphable.io import read_mesh

    meshes = []
    for path in sorted((run_path / "meshes").glob("test_*.ply"))[:MAX_MESHES]:
        mesh = read_mesh(path)
        meshes.append(mesh_payload(f"test {path.stem.split('_')[1].lstrip('0') or '0'}", mesh.vertices,
                                   mesh.faces, ply_colors(path)))
    if (run_path / TRAIN_CODES).exists():
        model = load_run(run_path, device)
        vertices = model.decode(model.training_codes()[:1])[0]
        meshes.append(mesh_payload("training mesh 0 (decoded)", vertices, model.faces, None))
    return meshes, ("Test reconstructions coloured by per-vertex error (jet: 0 to the 99th percentile of the "
                    "test errors, see the heat-map plot for the scale); the training mesh in skin colour.")


def implicit_meshes(run_path: Path, fits: Sequence[str | os.PathLike], device: str) -> tuple[list[dict], str]:
    """The first training codes and the fitted code of each fit folder, extracted at
    :data:`EXTRACT_RESOLUTION` ``^3``; a code without a surface in the unit ball is left out."""
    from morphable.experiment import load_run

    model = load_run(run_path, device)
    codes = [(model.names[k], k) for k in range(min(MAX_MESHES, model.n_codes))]
    for folder in fits:
        codes.append((f"fit {Path(folder).name}", fitted_code(Path(folder))))
    meshes = []
    for name, code in codes:
        vertices, faces = model.extract(code, EXTRACT_RESOLUTION)
        if len(faces):
            meshes.append(mesh_payload(name, vertices, faces, None))
    return meshes, f"Zero level sets extracted at {EXTRACT_RESOLUTION}^3 (data units, shaded in skin colour)."


def fitted_code(folder: Path):
    """The code a ``morphable fit`` folder holds: ``code`` of ``code.safetensors`` (identity runs) or the pair
    ``(identity, expression)`` of ``codes.safetensors`` (expression runs)."""
    from morphable.io import load_weights

    if (folder / "codes.safetensors").exists():
        tensors = load_weights(folder / "codes.safetensors")[0]
        if {"identity", "expression"} <= set(tensors):
            return tensors["identity"], tensors["expression"]
        raise input_error(folder / "codes.safetensors", "not the codes of an expression fit (identity, expression)")
    tensors = load_weights(folder / "code.safetensors")[0]
    if "code" not in tensors:
        raise input_error(folder / "code.safetensors", "not the code of a fit (no 'code')")
    return tensors["code"]


def ply_colors(path: str | os.PathLike) -> np.ndarray | None:
    """Per-vertex ``red, green, blue`` ``(V, 3)`` uint8 of a binary PLY whose first element is the vertex
    table (as :func:`morphable.io.write_ply` writes it), or None when the file has none."""
    from morphable.io import _parse_ply_header

    path = Path(path)
    data = path.read_bytes()
    fmt, elements, offset = _parse_ply_header(path, data)
    if fmt == "ascii" or not elements or elements[0].name != "vertex":
        return None
    vertex = elements[0]
    names = [p[0] for p in vertex.properties]
    if any(p[2] is not None for p in vertex.properties) or not {"red", "green", "blue"} <= set(names):
        return None
    endian = "<" if "little" in fmt else ">"
    dtype = np.dtype([(p[0], endian + p[1]) for p in vertex.properties])
    if offset + dtype.itemsize * vertex.count > len(data):
        raise input_error(path, "truncated file (element 'vertex' incomplete)")
    table = np.frombuffer(data, dtype, vertex.count, offset)
    return np.stack([table[c] for c in ("red", "green", "blue")], axis=1).astype(np.uint8)


def mesh_payload(name: str, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> dict[str, Any]:
    """A mesh for the viewer: ``vertices (V, 3)`` centred on their bounding box and scaled by the largest
    distance from that centre (so they fill the unit sphere), ``faces (F, 3)``, ``colors (V, 3)`` uint8 (or
    :data:`NEUTRAL_RGB`), each as a base64 string of its little-endian buffer."""
    v = np.asarray(vertices, dtype=np.float64)
    centre = (v.min(axis=0) + v.max(axis=0)) / 2
    radius = max(float(np.linalg.norm(v - centre, axis=1).max()), 1e-12)
    rgb = np.broadcast_to(np.array(NEUTRAL_RGB, np.uint8), v.shape) if colors is None else colors
    return {"name": name, "vertices": len(v), "faces": len(faces),
            "position": _base64((v - centre) / radius, "<f4"), "index": _base64(faces, "<u4"),
            "color": _base64(rgb, "u1")}


def _base64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def metric_rows(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """``(dotted name, value)`` of every number and string in the metrics (lists, e.g. curves, left out)."""
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += metric_rows(value, f"{name}.")
        elif isinstance(value, float):
            rows.append((name, f"{value:.6g}"))
        elif isinstance(value, (int, str, bool)) or value is None:
            rows.append((name, str(value)))
    return rows


def render_html(title: str, rows: list[tuple[str, str]], plots: Sequence[Path], meshes: list[dict],
                note: str) -> str:
    """The page: the metrics table, the plots as inline PNGs, a canvas per mesh and the viewer script."""
    esc = html.escape
    table = "\n".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    figures = "\n".join(f'<figure><img alt="{esc(p.name)}" src="data:image/png;base64,'
                        f'{base64.b64encode(p.read_bytes()).decode("ascii")}"><figcaption>{esc(p.name)}'
                        "</figcaption></figure>" for p in plots)
    views = "\n".join(f'<figure class="view"><canvas width="360" height="360"></canvas><figcaption>{esc(m["name"])} '
                      f'({m["vertices"]} vertices, {m["faces"]} faces)</figcaption></figure>' for m in meshes)
    data = json.dumps(meshes).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }} td {{ border: 1px solid #ccc; padding: 2px 8px; }}
figure {{ display: inline-block; margin: 0.5em; vertical-align: top; }} img {{ max-width: 720px; }}
canvas {{ border: 1px solid #bbb; cursor: grab; }} #js-errors {{ color: #b00; }}
</style></head><body>
<h1>{esc(title)}</h1>
<pre id="js-errors" hidden></pre>
<h2>3D meshes</h2>
<p>Drag to rotate (all views together), wheel to zoom. {esc(note)}</p>
<div id="views">{views or "<p>No meshes to show.</p>"}</div>
<h2>Metrics</h2>
<table>{table}</table>
<h2>Plots</h2>
{figures or "<p>No plots.</p>"}
<pre id="selftest" hidden></pre>
<script id="mesh-data" type="application/json">{data}</script>
<script>{VIEWER_JS}</script>
</body></html>
"""


VIEWER_JS = r"""
(function () {
  "use strict";
  var errors = [];
  function report(message) {
    errors.push(String(message));
    var box = document.getElementById("js-errors");
    box.textContent = errors.join("\n");
    box.hidden = false;
  }
  window.addEventListener("error", function (e) { report(e.message + " (line " + e.lineno + ")"); });

  var BACKGROUND = [0.97, 0.97, 0.97];
  var VERTEX_SHADER = [
    "attribute vec3 position; attribute vec3 normal; attribute vec3 color;",
    "uniform mat4 modelView; uniform mat4 projection;",
    "varying vec3 vNormal; varying vec3 vColor;",
    "void main() {",
    "  vNormal = (modelView * vec4(normal, 0.0)).xyz;",
    "  vColor = color;",
    "  gl_Position = projection * modelView * vec4(position, 1.0);",
    "}"].join("\n");
  var FRAGMENT_SHADER = [
    "precision mediump float;",
    "varying vec3 vNormal; varying vec3 vColor;",
    "void main() {",
    "  float lambert = abs(normalize(vNormal).z);",
    "  gl_FragColor = vec4(vColor * (0.3 + 0.7 * lambert), 1.0);",
    "}"].join("\n");

  function decode(text, Type) {
    var binary = atob(text), bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return new Type(bytes.buffer);
  }

  // 4x4 matrices, column-major as WebGL reads them.
  function multiply(a, b) {
    var out = new Float32Array(16);
    for (var c = 0; c < 4; c++)
      for (var r = 0; r < 4; r++) {
        var s = 0;
        for (var k = 0; k < 4; k++) s += a[k * 4 + r] * b[c * 4 + k];
        out[c * 4 + r] = s;
      }
    return out;
  }
  function rotationX(t) {
    var c = Math.cos(t), s = Math.sin(t);
    return new Float32Array([1, 0, 0, 0, 0, c, s, 0, 0, -s, c, 0, 0, 0, 0, 1]);
  }
  function rotationY(t) {
    var c = Math.cos(t), s = Math.sin(t);
    return new Float32Array([c, 0, -s, 0, 0, 1, 0, 0, s, 0, c, 0, 0, 0, 0, 1]);
  }
  function translationZ(z) {
    return new Float32Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, z, 1]);
  }
  function perspective(fovy, aspect, near, far) {
    var f = 1 / Math.tan(fovy / 2), nf = 1 / (near - far);
    return new Float32Array([f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1,
                             0, 0, 2 * far * near * nf, 0]);
  }

  // Area-weighted vertex normals: the sum of the (unnormalised) cross products of the faces around a vertex.
  function vertexNormals(p, f) {
    var n = new Float32Array(p.length);
    for (var i = 0; i < f.length; i += 3) {
      var a = 3 * f[i], b = 3 * f[i + 1], c = 3 * f[i + 2];
      var ux = p[b] - p[a], uy = p[b + 1] - p[a + 1], uz = p[b + 2] - p[a + 2];
      var vx = p[c] - p[a], vy = p[c + 1] - p[a + 1], vz = p[c + 2] - p[a + 2];
      var nx = uy * vz - uz * vy, ny = uz * vx - ux * vz, nz = ux * vy - uy * vx;
      for (var k = 0; k < 3; k++) {
        var v = 3 * f[i + k];
        n[v] += nx; n[v + 1] += ny; n[v + 2] += nz;
      }
    }
    for (var j = 0; j < n.length; j += 3) {
      var len = Math.hypot(n[j], n[j + 1], n[j + 2]) || 1;
      n[j] /= len; n[j + 1] /= len; n[j + 2] /= len;
    }
    return n;
  }

  function compile(gl, type, source) {
    var shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
    return shader;
  }

  function buffer(gl, target, data) {
    var b = gl.createBuffer();
    gl.bindBuffer(target, b);
    gl.bufferData(target, data, gl.STATIC_DRAW);
    return b;
  }

  function Viewer(canvas, mesh) {
    var gl = canvas.getContext("webgl", {preserveDrawingBuffer: true, antialias: true});
    if (!gl) throw new Error("WebGL is not available in this browser");
    if (!gl.getExtension("OES_element_index_uint")) throw new Error("WebGL lacks 32-bit indices");
    var program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX_SHADER));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT_SHADER));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    gl.useProgram(program);
    var position = decode(mesh.position, Float32Array), index = decode(mesh.index, Uint32Array);
    var rgb = decode(mesh.color, Uint8Array), color = new Float32Array(rgb.length);
    for (var i = 0; i < rgb.length; i++) color[i] = rgb[i] / 255;
    var attributes = {position: position, normal: vertexNormals(position, index), color: color};
    for (var name in attributes) {
      buffer(gl, gl.ARRAY_BUFFER, attributes[name]);
      var location = gl.getAttribLocation(program, name);
      gl.enableVertexAttribArray(location);
      gl.vertexAttribPointer(location, 3, gl.FLOAT, false, 0, 0);
    }
    buffer(gl, gl.ELEMENT_ARRAY_BUFFER, index);
    this.gl = gl;
    this.count = index.length;
    this.modelView = gl.getUniformLocation(program, "modelView");
    this.projection = gl.getUniformLocation(program, "projection");
    gl.enable(gl.DEPTH_TEST);
    gl.clearColor(BACKGROUND[0], BACKGROUND[1], BACKGROUND[2], 1);
  }
  Viewer.prototype.draw = function (view) {
    var gl = this.gl, w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
    gl.viewport(0, 0, w, h);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    var model = multiply(rotationX(view.pitch), rotationY(view.yaw));
    gl.uniformMatrix4fv(this.modelView, false, multiply(translationZ(-view.distance), model));
    gl.uniformMatrix4fv(this.projection, false, perspective(0.6, w / h, 0.05, 50));
    gl.drawElements(gl.TRIANGLES, this.count, gl.UNSIGNED_INT, 0);
  };
  Viewer.prototype.pixels = function () {
    var gl = this.gl, out = new Uint8Array(4 * gl.drawingBufferWidth * gl.drawingBufferHeight);
    gl.readPixels(0, 0, gl.drawingBufferWidth, gl.drawingBufferHeight, gl.RGBA, gl.UNSIGNED_BYTE, out);
    return out;
  };

  var view = {yaw: 0, pitch: 0, distance: 4.2};
  var viewers = [];
  function drawAll() { viewers.forEach(function (v) { v.draw(view); }); }
  window.rotateView = function (dx, dy) {
    view.yaw += 0.01 * dx;
    view.pitch = Math.max(-1.5, Math.min(1.5, view.pitch + 0.01 * dy));
    drawAll();
  };

  function attach(canvas) {
    var last = null;
    canvas.addEventListener("mousedown", function (e) { last = [e.clientX, e.clientY]; e.preventDefault(); });
    window.addEventListener("mouseup", function () { last = null; });
    window.addEventListener("mousemove", function (e) {
      if (!last) return;
      window.rotateView(e.clientX - last[0], e.clientY - last[1]);
      last = [e.clientX, e.clientY];
    });
    canvas.addEventListener("wheel", function (e) {
      view.distance = Math.max(1.2, Math.min(20, view.distance * Math.exp(0.001 * e.deltaY)));
      drawAll();
      e.preventDefault();
    }, {passive: false});
  }

  // Fraction of pixels unlike the background, and of pixels that changed between two read-backs.
  function foreground(p) {
    var n = 0, total = p.length / 4;
    for (var i = 0; i < p.length; i += 4)
      if (Math.abs(p[i] - p[0]) + Math.abs(p[i + 1] - p[1]) + Math.abs(p[i + 2] - p[2]) > 6) n++;
    return n / total;
  }
  function changed(a, b) {
    var n = 0;
    for (var i = 0; i < a.length; i += 4)
      if (a[i] !== b[i] || a[i + 1] !== b[i + 1] || a[i + 2] !== b[i + 2]) n++;
    return n / (a.length / 4);
  }
  function selftest() {
    var before = viewers.map(function (v) { return v.pixels(); });
    window.rotateView(60, 30);
    var result = {errors: errors, canvases: viewers.map(function (v, i) {
      var after = v.pixels();
      return {foreground: foreground(before[i]), changed: changed(before[i], after)};
    })};
    var box = document.getElementById("selftest");
    box.textContent = JSON.stringify(result);
    box.hidden = false;
  }

  try {
    var meshes = JSON.parse(document.getElementById("mesh-data").textContent);
    var canvases = document.querySelectorAll("#views canvas");
    meshes.forEach(function (mesh, i) {
      viewers.push(new Viewer(canvases[i], mesh));
      attach(canvases[i]);
    });
    drawAll();
  } catch (e) {
    report(e && e.message ? e.message : e);
  }
  if (window.location.hash === "#selftest") selftest();
})();
"""
