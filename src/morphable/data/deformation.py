"""Training data for the forward expression deformation field ``x_posed = x + F_ex(x, z_ex, z_id)``
(thesis sec. 5.1.2, "Sampling Deformations"), from registered expression sequences.

Input: a COMA-layout folder ``<root>/<subject>/<expression>/<frame>.ply`` whose meshes share one topology
(``morphable data synth`` / ``data ict`` output), with one neutral frame per subject. Because every frame is in
vertex correspondence with its subject's neutral, a surface point given by a triangle and barycentric
coordinates ``b`` has an exact partner on every other frame: ``sum_k b_k v_k`` on each mesh.

**Pairs** of one posed mesh (:func:`sample_pairs`; ``M`` per mesh, split evenly over two directions and two
noise levels):

* direction 0: area-weighted surface points on the neutral mesh (:func:`morphable.mesh.sampling.sample_surface`),
  mapped to the posed mesh by face id and barycentrics; direction 1: sampled on the posed mesh and mapped back.
  Sampling both ways covers regions that stretch a lot (an opening mouth) as densely as regions that shrink.
* noise: ``eps ~ N(0, sigma^2 I)`` with ``sigma`` = 0.01 (level 0) or 0.002 (level 1), unit-sphere units. The
  SAME offset is added to both points of a pair, so off the surface the field is asked to carry the
  displacement of the surface point the pair came from (a locally rigid translation of the neighbourhood).
* ``face``: a pair is in the face region when its triangle is, i.e. when at least two of the triangle's three
  corners are face vertices (:func:`morphable.mesh.topology.face_region`, the rule of the identity SDF data).

**Normalisation**: one :class:`morphable.data.sdf.Similarity` (radius ``DEFAULT_RADIUS``) fitted over every mesh
kept, neutral and posed, so posed heads lie in the unit ball too; the identity data uses the same one.

**Neutral copies**: a frame whose vertices are all within ``1e-7`` of the neutral's bounding-box diagonal of its
subject's neutral is not a posed sample (every sequence of ``data synth`` / ``data ict`` starts and ends at the
exact neutral). Each subject's neutral is written once, as the sample ``<subject>__neutral``, whose pairs have
zero displacement.

Folder layout (:func:`write_deformation_dataset`): ``deformation.json``, ``identity/`` (an SDF dataset of the
neutral heads, :func:`morphable.data.sdf.write_sdf_dataset`), ``pairs/<sample>.npz``, ``posed/<sample>.npz``
(:class:`morphable.data.sdf.SdfSamples` of the posed mesh, for evaluation), ``meshes/<sample>.npy`` (the posed
mesh's vertices ``(V, 3)`` float32, normalised units; faces ``template_faces.npy``), ``face_mask.npy``,
``template_faces.npy``, ``neutral/<subject>.ply`` (source units) and ``preview.png``; ``docs/data.md`` lists
every array. :class:`DeformationDataset` reads it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from morphable.data.registered import DATASET_FILE, RegisteredDataset, check_unit, load_registered
from morphable.data.sdf import (DEFAULT_RADIUS, SCALE_RANGE, Similarity, _dataset_member, _valid_name, item_generator,
                                precompute_sdf_samples, write_sdf_dataset)
from morphable.errors import MorphableError, input_error
from morphable.io import UNIT_TO_MM, atomic_folder, check_output_folder, read_json, read_npy, read_npz, write_json, \
    write_ply
from morphable.mesh.sampling import sample_surface
from morphable.mesh.topology import face_region

PAIR_SIGMAS = (0.01, 0.002)
"""Noise levels of the pairs (thesis 5.1.2), unit-sphere units: level 0 and level 1."""
DEFORMATION_JSON = "deformation.json"
FORMAT = "morphable-deformation"
FORMAT_VERSION = 1
IDENTICAL_TOLERANCE = 1e-7
"""A frame equals its neutral when no vertex moved by more than this times the neutral's bounding-box diagonal."""
PAIR_KEYS = ("neutral", "posed", "face", "level", "direction")
FACE_RULE = "a pair is face when at least two corners of its triangle are face vertices"
NOISE_RULE = "one Gaussian offset per pair, added to both points"
PREVIEW_SUBJECTS, PREVIEW_EXPRESSIONS = 4, 5


# --------------------------------------------------------------------------- pairs


@dataclass(frozen=True)
class DeformationPairs:
    """``M`` correspondence pairs of one neutral / posed mesh pair, float64 positions.

    Attributes:
        neutral, posed: ``(M, 3)`` the pair's points (surface point plus ``offsets``) on / near each mesh.
        face: ``(M,)`` bool, the pair's triangle is in the face region.
        level: ``(M,)`` int8 index into the sigmas; direction: ``(M,)`` int8, 0 sampled on the neutral mesh,
            1 on the posed one.
        face_ids: ``(M,)`` int64 triangle; barycentrics: ``(M, 3)``; offsets: ``(M, 3)`` the shared noise.
    """

    neutral: np.ndarray
    posed: np.ndarray
    face: np.ndarray
    level: np.ndarray
    direction: np.ndarray
    face_ids: np.ndarray
    barycentrics: np.ndarray
    offsets: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """What a pairs file holds: float32 points, bool ``face``, int8 ``level`` / ``direction``."""
        return {"neutral": self.neutral.astype(np.float32), "posed": self.posed.astype(np.float32),
                "face": self.face.astype(bool), "level": self.level.astype(np.int8),
                "direction": self.direction.astype(np.int8)}


def group_counts(n: int, levels: int) -> list[int]:
    """``n`` split as evenly as possible over ``2 * levels`` groups (direction-major, then level)."""
    groups = 2 * levels
    return [n // groups + (g < n % groups) for g in range(groups)]


def sample_pairs(neutral: np.ndarray, posed: np.ndarray, faces: np.ndarray, face_mask: np.ndarray, n: int,
                 rng: np.random.Generator | int = 0, sigmas: Sequence[float] = PAIR_SIGMAS) -> DeformationPairs:
    """Two-way correspondence pairs of a neutral and a posed mesh of one topology.

    Rows come in ``2 * len(sigmas)`` blocks of (nearly) equal size: direction 0 with each level, then
    direction 1 with each level. A block of direction ``d`` draws area-weighted surface samples ``(t, b)``
    (triangle, barycentrics) on mesh ``d`` (0 neutral, 1 posed); both points are ``sum_k b_k v_k[faces[t, k]]``
    of their mesh plus one shared offset ``eps ~ N(0, sigma_l^2 I)``.

    Args:
        neutral, posed: ``(V, 3)`` vertices (normalised units); faces: ``(F, 3)``.
        face_mask: ``(V,)`` bool, face-region vertices.
        n: number of pairs; rng: numpy Generator or seed; sigmas: noise per level (zeros: on the surfaces).

    Returns:
        :class:`DeformationPairs`.
    """
    N = np.asarray(neutral, dtype=np.float64)
    P = np.asarray(posed, dtype=np.float64)
    F = np.asarray(faces, dtype=np.int64)
    rng = np.random.default_rng(rng)
    in_face = face_region(F, face_mask)
    counts = group_counts(n, len(sigmas))
    blocks: dict[str, list[np.ndarray]] = {k: [] for k in ("ids", "bary", "offsets", "level", "direction")}
    for g, count in enumerate(counts):
        direction, level = divmod(g, len(sigmas))
        # normals are not used: zero vertex normals skip computing them (the sampler then gives face normals)
        surface = sample_surface(P if direction else N, F, count, rng, vertex_normals=np.zeros_like(N))
        blocks["ids"].append(surface.face_ids)
        blocks["bary"].append(surface.barycentrics)
        blocks["offsets"].append(rng.standard_normal((count, 3)) * float(sigmas[level]))
        blocks["level"].append(np.full(count, level, dtype=np.int8))
        blocks["direction"].append(np.full(count, direction, dtype=np.int8))
    ids, bary, offsets = (np.concatenate(blocks[k]) for k in ("ids", "bary", "offsets"))
    corners = F[ids]
    on_neutral = np.einsum("mk,mkd->md", bary, N[corners])
    on_posed = np.einsum("mk,mkd->md", bary, P[corners])
    return DeformationPairs(on_neutral + offsets, on_posed + offsets, in_face[ids],
                            np.concatenate(blocks["level"]), np.concatenate(blocks["direction"]), ids, bary, offsets)


# --------------------------------------------------------------------------- choosing frames


def _frame_key(frame: str) -> tuple[int, int | str]:
    """Natural order of frame names: numbers by value (``"2"`` before ``"10"``), then other names."""
    return (0, int(frame)) if frame.isdigit() else (1, frame)


def select_frames(distances: np.ndarray, stride: int, tolerance: float) -> list[int]:
    """Positions of the frames of one sequence to keep as posed samples.

    ``distances (T,)`` is each frame's largest vertex distance from the subject's neutral. Kept: every
    ``stride``-th frame from the first, the last frame and the apex (the frame that moves farthest), minus the
    frames within ``tolerance`` of the neutral (copies of it). Sorted."""
    distances = np.asarray(distances, dtype=np.float64)
    if not len(distances):
        return []
    keep = set(range(0, len(distances), stride)) | {len(distances) - 1, int(np.argmax(distances))}
    return sorted(i for i in keep if distances[i] > tolerance)


@dataclass
class _Sample:
    name: str
    subject: str
    expression: str
    frame: str
    index: int  # into the registered dataset
    neutral: bool


def _neutral_indices(ds: RegisteredDataset, root: Path, neutral: str | None) -> dict[str, tuple[int, str]]:
    """Per subject (sorted): the dataset index of its neutral frame and its ``expression/frame`` label."""
    if neutral is not None:
        if "/" not in neutral:
            raise input_error(root, f"--neutral must be EXPRESSION/FRAME (e.g. mouth_open/0000), got '{neutral}'")
        want_expression, want_frame = neutral.rsplit("/", 1)
    out = {}
    for subject in sorted(set(ds.subjects)):
        rows = [i for i, s in enumerate(ds.subjects) if s == subject]
        if neutral is None:
            expression = min(ds.expressions[i] for i in rows)
            index = min((i for i in rows if ds.expressions[i] == expression), key=lambda i: _frame_key(ds.frames[i]))
        else:
            match = [i for i in rows if ds.expressions[i] == want_expression and (
                ds.frames[i] == want_frame or (want_frame.isdigit() and ds.frames[i].isdigit()
                                               and int(ds.frames[i]) == int(want_frame)))]
            if not match:
                raise input_error(root / subject, f"no neutral frame {neutral} (--neutral): every subject needs it")
            index = match[0]
        out[subject] = (index, f"{ds.expressions[index]}/{ds.frames[index]}")
    return out


def _face_mask(ds: RegisteredDataset, root: Path, region_vertices: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    """The per-vertex face mask ``(V,)`` and its ``region`` description for ``deformation.json``."""
    V = ds.n_vertices
    if region_vertices is not None:
        if not 1 <= region_vertices <= V:
            raise input_error(root, f"--region-vertices {region_vertices} is out of range 1..{V} (the meshes have "
                                    f"{V} vertices)")
        mask = np.arange(V) < region_vertices
        return mask, {"source": "region_vertices", "region_vertices": int(region_vertices),
                      "face_vertices": int(mask.sum())}
    regions = ds.metadata.get("regions")
    info_path = root / DATASET_FILE
    if regions is None:
        raise input_error(root, "no face region: the dataset.json has no 'regions' entry; give --region-vertices N "
                                "(vertices 0..N-1 are the face; ICT-FaceKit: 9409)")
    try:
        file, face_labels = regions["file"], [int(x) for x in regions["face"]]
        names = list(regions.get("names", []))
    except (KeyError, TypeError, ValueError) as exc:
        raise input_error(info_path, f"malformed 'regions' entry (needs 'file' and 'face' label ids; "
                                     f"{exc!r})") from None
    labels = read_npy(_dataset_member(root, info_path, file))
    if labels.shape != (V,) or labels.dtype.kind not in "iub":
        raise input_error(root / file, f"expected ({V},) integer region labels, got {labels.dtype} {labels.shape}")
    mask = np.isin(labels, face_labels)
    if not mask.any():
        raise input_error(root / file, f"no vertex carries a face label {face_labels}")
    return mask, {"source": "dataset", "file": file, "names": names, "face_labels": face_labels,
                  "face_vertices": int(mask.sum())}


# --------------------------------------------------------------------------- writing


def write_deformation_dataset(sequences: str | os.PathLike, out_dir: str | os.PathLike, *, unit: str | None = None,
                              neutral: str | None = None, region_vertices: int | None = None, frame_stride: int = 1,
                              pairs: int = 20_000, sigmas: Sequence[float] = PAIR_SIGMAS, n_surface: int = 50_000,
                              n_near: int = 50_000, n_ball: int = 20_000, n_eval: int = 5_000, views: int = 0,
                              map_resolution: int = 64, seed: int = 0, overwrite: bool = False,
                              progress: bool = True) -> Path:
    """Prepare deformation training data from registered sequences, all or nothing (module docstring).

    Args:
        sequences: COMA-layout folder (:func:`morphable.data.registered.load_registered`).
        out_dir: folder to create (must not exist or be empty unless ``overwrite``).
        unit: source unit when the folder has no ``dataset.json``.
        neutral: ``EXPRESSION/FRAME`` of every subject's neutral (default: each subject's first frame, in
            natural order, of its first expression, in sorted order).
        region_vertices: vertices ``0..N-1`` are the face (default: the dataset's ``regions.npy``).
        frame_stride: keep every ``K``-th frame of a sequence, its last frame and its apex (:func:`select_frames`).
        pairs: pairs per mesh (:func:`sample_pairs`); sigmas: their noise levels.
        n_surface, n_near, n_ball: SDF sample counts of the identity data (:func:`write_sdf_dataset`).
        n_eval: surface, near (per level) and ball samples of each posed mesh's evaluation SDF.
        views, map_resolution: ground-truth normal maps of the identity data (0: none).
        seed: pairs of sample ``i`` use ``SeedSequence([seed, 1, i])``, its SDF ``[seed, 2, i]``.
        progress: progress bars.

    Returns:
        ``out_dir`` as a Path.
    """
    from morphable.data.normal_maps import NormalMapSettings

    root, out_dir = Path(sequences), Path(out_dir)
    for name, value, low in (("frame-stride", frame_stride, 1), ("pairs", pairs, 4), ("n-surface", n_surface, 1),
                             ("n-near", n_near, 1), ("n-ball", n_ball, 1), ("n-eval", n_eval, 1), ("views", views, 0),
                             ("map-resolution", map_resolution, 1)):
        if value < low:
            raise MorphableError(f"--{name} must be at least {low}, got {value}")
    check_output_folder(out_dir, overwrite)
    ds = load_registered(root, unit=unit, progress=progress)
    if not all(ds.subjects) or not all(ds.expressions):
        raise input_error(root, "deformation data needs the COMA layout <subject>/<expression>/<frame>.ply")
    mask, region = _face_mask(ds, root, region_vertices)
    neutrals = _neutral_indices(ds, root, neutral)
    samples = _plan_samples(ds, neutrals, frame_stride)
    n_posed = sum(not s.neutral for s in samples)
    if n_posed == 0:
        raise input_error(root, "no posed frames: every kept frame equals its subject's neutral")
    names = [s.name for s in samples]
    bad = next((n for n in names if not _valid_name(n)), None)
    if bad is not None or len(set(names)) != len(names):
        problem = f"invalid sample name {bad!r}" if bad else "two samples get the same name (rename the folders)"
        raise input_error(root, problem)
    subjects = sorted(neutrals)
    faces = np.asarray(ds.faces, dtype=np.int64)
    vertices = ds.vertices.astype(np.float64)
    similarity = Similarity.fit([vertices[s.index] for s in samples], DEFAULT_RADIUS)
    neutral_of = {subject: vertices[index] for subject, (index, _) in neutrals.items()}
    to_mm = UNIT_TO_MM[ds.unit]

    with atomic_folder(out_dir) as tmp:
        maps = NormalMapSettings(views, map_resolution) if views else None
        write_sdf_dataset([(s, neutral_of[s], faces, mask) for s in subjects], tmp / "identity", ds.unit,
                          n_surface=n_surface, n_near=n_near, n_ball=n_ball, seed=seed, normal_maps=maps,
                          progress=progress, similarity=similarity)
        for folder in ("pairs", "posed", "meshes", "neutral"):
            (tmp / folder).mkdir()
        entries = []
        by_subject = {s: [i for i, sample in enumerate(samples) if sample.subject == s] for s in subjects}
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(samples), desc="deformation samples", unit="mesh")
        for subject in subjects:
            if bar is not None:
                bar.set_postfix_str(f"{subject} ({len(by_subject[subject]) - 1} posed)")
            write_ply(tmp / "neutral" / f"{subject}.ply", neutral_of[subject], faces)
            base = similarity.apply(neutral_of[subject])
            for i in by_subject[subject]:
                sample = samples[i]
                posed = vertices[sample.index]
                pair_rng = np.random.default_rng(np.random.SeedSequence([seed, 1, i]))
                drawn = sample_pairs(base, similarity.apply(posed), faces, mask, pairs, pair_rng, sigmas)
                with open(tmp / "pairs" / f"{sample.name}.npz", "wb") as fh:
                    np.savez(fh, **drawn.arrays())
                eval_seed = int(np.random.SeedSequence([seed, 2, i]).generate_state(1)[0])
                source = root / sample.subject / sample.expression / sample.frame
                precompute_sdf_samples(similarity.apply(posed), faces, mask, n_surface=n_eval, n_near=n_eval,
                                       n_ball=n_eval, seed=eval_seed, name=str(source)).save(
                    tmp / "posed" / f"{sample.name}.npz")
                np.save(tmp / "meshes" / f"{sample.name}.npy", similarity.apply(posed).astype(np.float32),
                        allow_pickle=False)
                moved = float(np.linalg.norm(posed - neutral_of[subject], axis=1).max()) * to_mm
                entries.append({"name": sample.name, "subject": sample.subject, "expression": sample.expression,
                                "frame": sample.frame, "pairs": f"pairs/{sample.name}.npz",
                                "posed": f"posed/{sample.name}.npz", "mesh": f"meshes/{sample.name}.npy",
                                "neutral": sample.neutral,
                                "max_displacement_mm": round(moved, 4)})
                if bar is not None:
                    bar.update()
        if bar is not None:
            bar.close()
        np.save(tmp / "face_mask.npy", mask.astype(bool), allow_pickle=False)
        np.save(tmp / "template_faces.npy", faces, allow_pickle=False)
        _preview(tmp / "preview.png", samples, vertices, faces, neutrals, to_mm)
        expressions = sorted({s.expression for s in samples if not s.neutral})
        write_json(tmp / DEFORMATION_JSON, {
            "format": FORMAT, "version": FORMAT_VERSION, "unit": ds.unit, "similarity": similarity.to_dict(),
            "identity_data": "identity", "subjects": subjects, "expressions": expressions, "samples": entries,
            "neutral": {s: neutrals[s][1] for s in subjects},
            "region": {**region, "mask": "face_mask.npy", "rule": FACE_RULE},
            "settings": {"pairs": pairs, "sigmas": [float(s) for s in sigmas], "frame_stride": frame_stride,
                         "seed": seed, "noise": NOISE_RULE, "identical_tolerance": IDENTICAL_TOLERANCE,
                         "radius": DEFAULT_RADIUS,
                         "counts": {"n_surface": n_surface, "n_near": n_near, "n_ball": n_ball, "n_eval": n_eval,
                                    "views": views, "map_resolution": map_resolution}},
            "stats": {"posed_samples": n_posed, "pairs_total": pairs * len(samples),
                      "max_displacement_mm": max(e["max_displacement_mm"] for e in entries)},
            "files": {"template_faces": "template_faces.npy", "face_mask": "face_mask.npy", "preview": "preview.png",
                      "neutral_meshes": {s: f"neutral/{s}.ply" for s in subjects}},
            "n_vertices": ds.n_vertices, "n_faces": len(faces), "source": str(root.resolve()),
        })
    return out_dir


def _plan_samples(ds: RegisteredDataset, neutrals: dict[str, tuple[int, str]], stride: int) -> list[_Sample]:
    """Per subject (sorted): its neutral sample, then the posed frames kept (expressions sorted, frames in order)."""
    out = []
    for subject, (n_index, _) in sorted(neutrals.items()):
        base = ds.vertices[n_index].astype(np.float64)
        diagonal = float(np.linalg.norm(base.max(axis=0) - base.min(axis=0)))
        out.append(_Sample(f"{subject}__neutral", subject, ds.expressions[n_index], ds.frames[n_index], n_index, True))
        rows = [i for i, s in enumerate(ds.subjects) if s == subject]
        for expression in sorted({ds.expressions[i] for i in rows}):
            # the neutral frame stays in its sequence (so the stride counts from the sequence's first frame);
            # its distance is 0, so it is never kept as a posed sample
            seq = sorted((i for i in rows if ds.expressions[i] == expression), key=lambda i: _frame_key(ds.frames[i]))
            moved = np.array([np.linalg.norm(ds.vertices[i].astype(np.float64) - base, axis=1).max() for i in seq])
            for k in select_frames(moved, stride, IDENTICAL_TOLERANCE * diagonal):
                i = seq[k]
                out.append(_Sample(f"{subject}__{expression}__{ds.frames[i]}", subject, expression, ds.frames[i], i,
                                   False))
    return out


def _preview(path: Path, samples: list[_Sample], vertices: np.ndarray, faces: np.ndarray,
             neutrals: dict[str, tuple[int, str]], to_mm: float) -> None:
    """Per subject (up to four): the neutral head (skin colour), then the apex of the five expressions that move
    farthest, coloured by displacement from the neutral in mm (one colour scale for the whole picture)."""
    import matplotlib

    from morphable.viz import ERROR_CMAP, draw_mesh, pyplot, save_figure

    shown = sorted(neutrals)[:PREVIEW_SUBJECTS]
    largest: dict[str, float] = {}  # expression -> its largest vertex displacement over the subjects shown
    for s in samples:
        if s.subject in shown and not s.neutral:
            moved = float(np.linalg.norm(vertices[s.index] - vertices[neutrals[s.subject][0]], axis=1).max())
            largest[s.expression] = max(largest.get(s.expression, 0.0), moved)
    expressions = sorted(sorted(largest, key=lambda e: -largest[e])[:PREVIEW_EXPRESSIONS])
    rows = []
    for subject in shown:
        base = vertices[neutrals[subject][0]]
        panels = [(base, None, f"{subject}\nneutral {neutrals[subject][1]}")]
        posed = [s for s in samples if s.subject == subject and not s.neutral]
        for expression in expressions:
            candidates = [s for s in posed if s.expression == expression]
            if not candidates:
                continue
            moved = [np.linalg.norm(vertices[s.index] - base, axis=1) * to_mm for s in candidates]
            k = int(np.argmax([m.max() for m in moved]))
            panels.append((vertices[candidates[k].index], moved[k],
                           f"{expression} {candidates[k].frame}\nmax {moved[k].max():.1f} mm"))
        rows.append(panels)
    cols = max(len(r) for r in rows)
    vmax = max((float(v.max()) for r in rows for _, v, _ in r if v is not None), default=1.0)
    half = 1.03 * max(float(np.abs(m[:, :2] - m.mean(axis=0)[:2]).max()) for r in rows for m, _, _ in r)
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.1 * cols + 0.8, 2.4 * len(rows) + 0.4), squeeze=False)
    fig.subplots_adjust(left=0.01, right=0.86, bottom=0.02, top=1 - 0.45 / (2.4 * len(rows) + 0.4), wspace=0.05)
    for r, panels in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(panels):
                continue
            mesh, values, title = panels[c]
            draw_mesh(ax, mesh, faces, values, vmax=vmax)
            ax.set_xlim(-half, half)
            ax.set_ylim(-half, half)
            ax.set_title(title, fontsize=7)
    mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, vmax), ERROR_CMAP)
    fig.colorbar(mappable, ax=axes.ravel().tolist(), shrink=0.6, label="displacement from the neutral (mm)")
    fig.suptitle("deformation data: each subject's neutral head and the apexes of the expressions that move most",
                 fontsize=9)
    save_figure(fig, path)


# --------------------------------------------------------------------------- reading


def read_deformation_info(root: str | os.PathLike) -> dict[str, Any]:
    """The validated ``deformation.json`` of a folder written by :func:`write_deformation_dataset`; a missing or
    malformed file raises a one-line :class:`~morphable.errors.MorphableError` naming it. Sample files are
    checked to lie inside ``root`` (not that they exist: :class:`DeformationDataset` reads them)."""
    root = Path(root)
    if not root.is_dir():
        raise input_error(root, "not a folder (expected deformation data written by 'morphable data deform')")
    path = root / DEFORMATION_JSON
    if not path.exists():
        raise input_error(root, f"no {DEFORMATION_JSON}: not a deformation data folder ('morphable data deform')")
    info = read_json(path)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise input_error(path, f"not a deformation data description (expected \"format\": \"{FORMAT}\")")
    if info.get("version") != FORMAT_VERSION:
        raise input_error(path, f"unsupported version {info.get('version')!r} (this reader knows {FORMAT_VERSION})")
    try:
        check_unit(info["unit"], path)
        sim = Similarity.from_dict(info["similarity"])
        subjects = list(info["subjects"])
        samples = list(info["samples"])
        missing = [k for k in ("identity_data", "expressions", "neutral", "settings") if k not in info]
        if missing:
            raise KeyError(", ".join(missing))
        if not subjects or not all(isinstance(s, str) and s for s in subjects) or len(set(subjects)) != len(subjects):
            raise ValueError("'subjects' must be unique non-empty names")
        if not samples:
            raise ValueError("no samples")
        for s in samples:
            if not (isinstance(s["name"], str) and s["subject"] in subjects and isinstance(s["neutral"], bool)):
                raise ValueError(f"sample {s.get('name')!r} needs a name, a listed subject and a bool 'neutral'")
            for member in ("pairs", "posed", "mesh"):
                _dataset_member(root, path, s[member])
        if len({s["name"] for s in samples}) != len(samples):
            raise ValueError("duplicate sample names")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise input_error(path, f"malformed deformation data description ({exc!r})") from None
    if (len(sim.translation) != 3 or not np.isfinite([sim.scale, *sim.translation]).all()
            or not SCALE_RANGE[0] < sim.scale < SCALE_RANGE[1]):
        raise input_error(path, "the similarity needs a finite scale in range and a finite 3D translation")
    return info


def load_sample_mesh(root: str | os.PathLike, info: dict[str, Any], name: str) -> tuple[np.ndarray, np.ndarray]:
    """The mesh of sample ``name`` of a deformation folder: vertices ``(V, 3)`` float64 in normalised units and the
    template faces ``(F, 3)``; a missing or broken file raises a one-line error naming it."""
    root = Path(root)
    entry = next((s for s in info["samples"] if s["name"] == name), None)
    if entry is None:
        raise input_error(root / DEFORMATION_JSON, f"no sample '{name}'")
    path = _dataset_member(root, root / DEFORMATION_JSON, entry["mesh"])
    vertices = read_npy(path)
    faces = read_npy(root / "template_faces.npy")
    if (vertices.ndim != 2 or vertices.shape[1:] != (3,) or vertices.dtype.kind != "f"
            or not np.isfinite(vertices).all()):
        raise input_error(path, f"expected finite (V, 3) vertices, got {vertices.dtype} {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1:] != (3,) or faces.dtype.kind not in "iu" or faces.size == 0 \
            or faces.min() < 0 or faces.max() >= len(vertices):
        raise input_error(root / "template_faces.npy", f"not (F, 3) face indices of the {len(vertices)} vertices")
    return vertices.astype(np.float64), faces.astype(np.int64)


def load_pairs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of one pairs file (``neutral``, ``posed`` float32 ``(M, 3)``; ``face`` bool, ``level``,
    ``direction`` int8 ``(M,)``), checked; a missing, broken or inconsistent file raises a one-line error
    naming it. Never unpickles."""
    path = Path(path)
    data = read_npz(path)
    missing = [k for k in PAIR_KEYS if k not in data]
    if missing:
        raise input_error(path, f"not a deformation pairs file (missing {', '.join(missing)})")
    m = data["neutral"].shape[0] if data["neutral"].ndim else 0
    for key, shape, kinds in (("neutral", (m, 3), "f"), ("posed", (m, 3), "f"), ("face", (m,), "b"),
                              ("level", (m,), "iu"), ("direction", (m,), "iu")):
        if data[key].shape != shape or data[key].dtype.kind not in kinds:
            raise input_error(path, f"'{key}' has {data[key].dtype} {data[key].shape}, expected shape {shape}")
    if m == 0:
        raise input_error(path, "no pairs")
    for key in ("neutral", "posed"):
        if not np.isfinite(data[key]).all():
            raise input_error(path, f"'{key}' contains NaN or infinite values")
    if not np.isin(data["direction"], (0, 1)).all() or data["level"].min() < 0:
        raise input_error(path, "'direction' must be 0 or 1 and 'level' non-negative")
    return {"neutral": np.ascontiguousarray(data["neutral"], dtype=np.float32),
            "posed": np.ascontiguousarray(data["posed"], dtype=np.float32),
            "face": data["face"].astype(bool), "level": data["level"].astype(np.int8),
            "direction": data["direction"].astype(np.int8)}


class DeformationDataset(torch.utils.data.Dataset):
    """A folder written by :func:`write_deformation_dataset`, pairs held in memory; item ``i`` is a random
    subsample of ``pairs_per_item`` pairs of sample ``i`` (without replacement when the file has enough):
    ``neutral (P, 3)``, ``posed (P, 3)`` float32, ``face (P,)`` bool, ``index`` (the sample, a 0-d int64 for the
    expression code table) and ``subject`` (index into :attr:`subjects`, for the identity code).

    Randomness as in :class:`morphable.data.sdf.SdfDataset`: torch's global generator by default; after
    :meth:`set_epoch` the draw of item ``i`` depends only on ``(seed, epoch, i)``.

    Attributes: ``info`` (the JSON), ``root``, ``unit``, ``similarity``, ``names``, ``subjects``,
    ``subject_of`` (per sample), ``is_neutral`` (per sample), ``pairs`` (per sample, :func:`load_pairs`).
    """

    def __init__(self, root: str | os.PathLike, pairs_per_item: int = 1000, seed: int = 0,
                 progress: bool = False) -> None:
        if pairs_per_item < 1:
            raise ValueError(f"pairs_per_item must be at least 1, got {pairs_per_item}")
        self.root = Path(root)
        self.info = read_deformation_info(self.root)
        info_path = self.root / DEFORMATION_JSON
        self.unit: str = check_unit(self.info["unit"], info_path)
        self.similarity = Similarity.from_dict(self.info["similarity"])
        self.subjects: list[str] = list(self.info["subjects"])
        samples = self.info["samples"]
        self.names: list[str] = [s["name"] for s in samples]
        self.subject_of: list[int] = [self.subjects.index(s["subject"]) for s in samples]
        self.is_neutral: list[bool] = [bool(s["neutral"]) for s in samples]
        files = [_dataset_member(self.root, info_path, s["pairs"]) for s in samples]
        if progress:
            from tqdm import tqdm

            files = tqdm(files, desc=f"loading {self.root.name}", unit="sample", leave=False)
        self.pairs = [load_pairs(p) for p in files]
        self.pairs_per_item = pairs_per_item
        self.seed = seed
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        """Make the draws of this epoch deterministic (see the class docstring)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = item_generator(self.seed, self.epoch, index)
        pairs = self.pairs[index]
        m = len(pairs["face"])
        if self.pairs_per_item <= m:
            pick = torch.randperm(m, generator=generator)[:self.pairs_per_item].numpy()
        else:
            pick = torch.randint(m, (self.pairs_per_item,), generator=generator).numpy()
        return {"neutral": torch.from_numpy(pairs["neutral"][pick]), "posed": torch.from_numpy(pairs["posed"][pick]),
                "face": torch.from_numpy(pairs["face"][pick]), "index": torch.tensor(index, dtype=torch.long),
                "subject": torch.tensor(self.subject_of[index], dtype=torch.long)}

    def to_mm(self, length: float | np.ndarray) -> float | np.ndarray:
        """A length in normalised units, in millimetres."""
        return self.similarity.to_mm(length, self.unit)

    def describe(self) -> str:
        """One line: subjects, samples, pairs, memory, largest displacement."""
        n_pairs = sum(len(p["face"]) for p in self.pairs)
        mb = sum(a.nbytes for p in self.pairs for a in p.values()) / 1e6
        posed = len(self) - sum(self.is_neutral)
        face = sum(int(p["face"].sum()) for p in self.pairs) / max(n_pairs, 1)
        stats = self.info.get("stats", {})
        moved = f", max displacement {stats['max_displacement_mm']:.1f} mm" if "max_displacement_mm" in stats else ""
        return (f"{len(self.subjects)} subjects, {posed} posed + {sum(self.is_neutral)} neutral samples, "
                f"{n_pairs} pairs ({100 * face:.0f} % face, {mb:.1f} MB), unit {self.unit}{moved}; "
                f"settings {json.dumps({k: self.info['settings'][k] for k in ('pairs', 'sigmas', 'frame_stride')})}")


__all__ = ["DeformationDataset", "DeformationPairs", "PAIR_SIGMAS", "group_counts", "load_pairs", "load_sample_mesh",
           "read_deformation_info", "sample_pairs", "select_frames", "write_deformation_dataset"]

