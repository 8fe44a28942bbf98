"""Procedural synthetic faces: determinism, topology, geometry, expressions, difficulty."""

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from morphable.data import synthetic as S
from morphable.data.synthetic_head import SHAPE_PARAMS
from morphable.data.synthetic_rig import signed_volume
from morphable.errors import MorphableError


def _face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    return np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def _identities() -> np.ndarray:
    """The mean identity, two random ones, every parameter at +-3 sigma, and saturated (+-50: the soft
    clip holds every parameter inside its box)."""
    rng = np.random.default_rng(11)
    extremes = np.stack([np.full(S.N_IDENTITY_PARAMS, v) for v in (3.0, -3.0, 50.0, -50.0)])
    return np.vstack([np.zeros((1, S.N_IDENTITY_PARAMS)), S.sample_identities(2, rng), extremes])


def test_api_constants():
    assert S.EXPRESSIONS == ("bareteeth", "cheeks_in", "eyebrow", "high_smile", "lips_back", "lips_up",
                             "mouth_down", "mouth_extreme", "mouth_middle", "mouth_open", "mouth_side", "mouth_up")
    assert tuple(sorted(S.EXPRESSIONS)) == S.EXPRESSIONS
    assert S.N_IDENTITY_PARAMS >= 20 and len(S.IDENTITY_PARAMS) == S.N_IDENTITY_PARAMS


def test_template_size_and_types():
    v, f = S.template_mesh()
    assert v.dtype == np.float64 and f.dtype == np.int64
    assert 4500 <= len(v) <= 5500 and f.shape == (2 * len(v) - 4, 3)
    extent = v.max(axis=0) - v.min(axis=0)
    assert 0.15 < extent[1] < 0.3  # height in metres
    assert 0.13 < extent[0] < 0.2 and 0.17 < extent[2] < 0.25  # width, depth
    nose = v[v[:, 2].argmax()]
    assert abs(nose[0]) < 0.003 and nose[2] > 0.1  # the nose tip is the front-most point, on the midline
    v2, _ = S.template_mesh()
    v2[0] = 1.0  # callers get copies
    assert np.array_equal(S.template_mesh()[0], v)


def test_closed_manifold_consistently_oriented():
    v, f = S.template_mesh()
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    # Each directed edge once, and its reverse exactly once: every edge has two faces, oriented consistently.
    assert len(np.unique(directed, axis=0)) == len(directed)
    key = directed[:, 0] * len(v) + directed[:, 1]
    reverse = directed[:, 1] * len(v) + directed[:, 0]
    assert np.array_equal(np.sort(key), np.sort(reverse))
    n_edges = len(directed) // 2
    assert len(v) - n_edges + len(f) == 2  # Euler characteristic of a sphere
    assert np.array_equal(np.unique(f), np.arange(len(v)))
    adjacency = coo_matrix((np.ones(len(directed)), (directed[:, 0], directed[:, 1])), shape=(len(v), len(v)))
    assert connected_components(adjacency, directed=False)[0] == 1
    assert np.all(f[:, 0] != f[:, 1]) and np.all(f[:, 1] != f[:, 2]) and np.all(f[:, 2] != f[:, 0])


@pytest.mark.parametrize("identity", list(_identities()),
                         ids=["mean", "random1", "random2", "plus3", "minus3", "plus50", "minus50"])
def test_identities_are_outward_and_not_degenerate(identity):
    v = S.face_vertices(identity, "mouth_open", 0.0)
    f = S.template_mesh()[1]
    n = _face_normals(v, f)
    assert 0.5 * np.linalg.norm(n, axis=1).min() > 1e-6  # every face over 1 mm^2
    assert signed_volume(v, f) > 1e-3  # outward faces (a head of several litres)
    centre = 0.5 * (v.min(axis=0) + v.max(axis=0))
    # Star-shaped about the head centre except in the face's pits (nostrils, eye corners, mouth slit).
    inward = np.einsum("ij,ij->i", v[f[:, 0]] - centre, n) <= 0
    assert inward.mean() < 0.01 and np.all(S.region_labels()[f[inward]] == 1)
    assert 0.15 < np.ptp(v[:, 1]) < 0.3


def test_expressions_flip_few_faces_and_keep_areas():
    """Known limit: the mouth cavity's lining turns over as it opens and a few faces fold at the eye corners
    and under the chin at the most extreme identities; they stay under 1.5 % of the faces."""
    f = S.template_mesh()[1]
    for identity in _identities():
        neutral = S.face_vertices(identity, "eyebrow", 0.0)
        n0 = _face_normals(neutral, f)
        for name in S.EXPRESSIONS:
            for asym in (-0.15, 0.15):
                n1 = _face_normals(S.face_vertices(identity, name, 1.0, asymmetry=asym), f)
                cos = np.einsum("ij,ij->i", n0, n1) / np.linalg.norm(n0, axis=1) / np.linalg.norm(n1, axis=1)
                flipped = cos < 0
                assert flipped.mean() < 0.015, (name, asym, flipped.mean())
                assert 0.5 * np.linalg.norm(n1, axis=1).min() > 1e-8, name  # > 0.01 mm^2


def test_expressions_are_localised():
    identity = np.zeros(S.N_IDENTITY_PARAMS)
    neutral = S.face_vertices(identity, "eyebrow", 0.0)
    labels = S.region_labels()
    for name in S.EXPRESSIONS:
        disp = np.linalg.norm(S.face_vertices(identity, name, 1.0) - neutral, axis=1)
        assert np.mean(disp < 1e-3) > 0.4, name
        assert disp.max() > 6e-3, name
        assert labels[np.argmax(disp)] == 1, name  # the largest motion is on the face


def test_expressions_are_nonlinear_in_weight():
    identity = np.zeros(S.N_IDENTITY_PARAMS)
    neutral = S.face_vertices(identity, "eyebrow", 0.0)
    for name in S.EXPRESSIONS:
        full = S.face_vertices(identity, name, 1.0) - neutral
        half = S.face_vertices(identity, name, 0.5) - neutral
        assert np.linalg.norm(half - 0.5 * full, axis=1).max() > 1.5e-4, name


def test_expression_depends_on_identity():
    a, b = S.sample_identities(2, np.random.default_rng(0))
    gaps = []
    for name in S.EXPRESSIONS:
        da = S.face_vertices(a, name, 1.0) - S.face_vertices(a, name, 0.0)
        db = S.face_vertices(b, name, 1.0) - S.face_vertices(b, name, 0.0)
        gaps.append(np.linalg.norm(da - db, axis=1).max())
    assert min(gaps) > 5e-4 and np.mean(gaps) > 3e-3


def test_every_identity_parameter_acts():
    """Shape parameters move the neutral head; style parameters change how the expressions look."""
    zero = np.zeros(S.N_IDENTITY_PARAMS)
    poses = [("mouth_up", 0.0), ("mouth_open", 0.1)] + [(name, 1.0) for name in S.EXPRESSIONS]
    base = [S.face_vertices(zero, name, w) for name, w in poses]
    for k, name in enumerate(S.IDENTITY_PARAMS):
        p = zero.copy()
        p[k] = 1.0
        moved = [np.linalg.norm(S.face_vertices(p, e, w) - b, axis=1).max() for (e, w), b in zip(poses, base)]
        assert 2e-4 < max(moved) < 0.05, (name, moved)
        if name in S.IDENTITY_PARAMS[: len(SHAPE_PARAMS)]:
            assert moved[0] > 3e-4, name


def test_expression_curve():
    for frames in (3, 4, 5, 10, 11):
        w = S.expression_curve(frames)
        assert w.shape == (frames,) and w[0] == 0.0 and w[-1] == 0.0 and w.max() == 1.0
        assert np.all((w >= 0) & (w <= 1))
        peak = int(np.argmax(w))
        assert np.all(np.diff(w[: peak + 1]) > 0) and np.all(np.diff(w[peak:]) < 0)
    assert np.array_equal(S.expression_curve(1), [1.0]) and np.array_equal(S.expression_curve(2), [0.0, 1.0])
    np.testing.assert_allclose(S.expression_curve(5), [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-15)
    with pytest.raises(MorphableError):
        S.expression_curve(0)


def test_generate_is_deterministic_and_ordered():
    a = S.generate(2, 3, 4, seed=7)
    b = S.generate(2, 3, 4, seed=7)
    c = S.generate(2, 3, 4, seed=8)
    assert a.vertices.dtype == np.float32 and a.vertices.shape == (24, len(a.region_labels), 3)
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.identity_params, b.identity_params)
    assert not np.allclose(a.vertices, c.vertices)
    assert a.identity_params.shape == (2, S.N_IDENTITY_PARAMS)
    assert a.subjects[:12] == ["subject_00"] * 12 and a.subjects[12] == "subject_01"
    assert a.expressions[:8] == ["bareteeth"] * 4 + ["cheeks_in"] * 4
    assert a.frames[:5] == [0, 1, 2, 3, 0]
    assert np.array_equal(a.faces, S.template_mesh()[1])
    # First and last frames are the subject's neutral head; the frames in between are expressed.
    v = a.vertices.reshape(2, 3, 4, -1, 3)
    neutral = S.face_vertices(a.identity_params[1], "mouth_open", 0.0).astype(np.float32)
    assert np.array_equal(v[1, :, 0], np.broadcast_to(neutral, v[1, :, 0].shape))
    assert np.array_equal(v[1, :, 3], v[1, :, 0])
    assert np.abs(v[:, :, 1] - v[:, :, 0]).max() > 2e-3
    # A smaller dataset is a prefix of a larger one (subjects and expressions) with the same seed.
    assert np.array_equal(S.generate(1, 3, 4, seed=7).vertices, a.vertices[:12])
    assert np.array_equal(S.generate(2, 2, 4, seed=7).vertices.reshape(2, 2, 4, -1, 3), v[:, :2])


def test_region_labels():
    labels = S.region_labels()
    v, _ = S.template_mesh()
    assert labels.dtype == np.int8 and set(np.unique(labels)) == {0, 1}
    assert labels[np.argmax(v[:, 2])] == 1 and labels[np.argmin(v[:, 2])] == 0
    assert labels[np.argmax(v[:, 1])] == 0 and labels[np.argmin(v[:, 1])] == 0
    assert np.all(v[labels == 1, 2] > 0.0) and 0.2 < labels.mean() < 0.6


def test_latent8_pca_does_not_fit_exactly():
    data = S.generate(6, 12, 5, seed=0)
    x = data.vertices.reshape(len(data.vertices), -1).astype(np.float64)
    centred = x - x.mean(axis=0)
    _, u = np.linalg.eigh(centred @ centred.T)  # Gram matrix: the top-8 left singular vectors
    top = u[:, -8:]
    residual = centred - top @ (top.T @ centred)
    error = np.linalg.norm(residual.reshape(len(x), -1, 3), axis=2).mean()
    spread = np.linalg.norm(centred.reshape(len(x), -1, 3), axis=2).mean()
    assert 2e-4 < error < 0.25 * spread


def test_bad_arguments():
    zero = np.zeros(S.N_IDENTITY_PARAMS)
    with pytest.raises(MorphableError, match="unknown expression"):
        S.face_vertices(zero, "smirk", 1.0)
    with pytest.raises(MorphableError, match="shape"):
        S.face_vertices(zero[:5], "mouth_open", 1.0)
    with pytest.raises(MorphableError, match="weight"):
        S.face_vertices(zero, "mouth_open", 1.5)
    with pytest.raises(MorphableError, match="expressions"):
        S.generate(1, 13, 2, seed=0)
    with pytest.raises(MorphableError, match="subjects"):
        S.generate(0, 1, 2, seed=0)
