"""Synthetic faces: the rig's motions are the stated ones (rigid jaw, lids on the eyeball, volume-kept
bulge, neck pose), the mouth opens, regions are written, and expressions are not one shared linear blend."""

import json

import numpy as np
import pytest

from morphable.data import synthetic as S
from morphable.data.synthetic_head import EYE_RADIUS, NECK_Y
from morphable.data.synthetic_rig import head_pose, signed_volume

IDENTITIES = [np.zeros(S.N_IDENTITY_PARAMS), *S.sample_identities(2, np.random.default_rng(5)),
              np.full(S.N_IDENTITY_PARAMS, 3.0), np.full(S.N_IDENTITY_PARAMS, -3.0)]


def _axis_distance(p: np.ndarray, point: np.ndarray, axis: np.ndarray) -> np.ndarray:
    rel = p - point
    return np.linalg.norm(rel - np.outer(rel @ axis, axis), axis=1)


@pytest.mark.parametrize("k", range(len(IDENTITIES)))
def test_jaw_turns_rigidly_about_its_hinge(k):
    r = S.rig(IDENTITIES[k])
    p0 = r.head.vertices
    g = np.ones(len(p0))
    theta = 0.22 * r.jaw_scale
    p1 = r.jaw_open(p0, g, 0.22, 0.016)
    full = (r.jaw > 1 - 1e-9) & (r.gap < 1e-9) & (r.stick < 1e-9)  # the mandible, chin and lower lip
    assert full.sum() >= 10
    moved_hinge = r.hinge + r.glide_offset(theta)
    d0 = _axis_distance(p0[full], r.hinge, r.hinge_axis)
    d1 = _axis_distance(p1[full], moved_hinge, r.hinge_axis)
    np.testing.assert_allclose(d1, d0, rtol=0, atol=1e-9)
    i, j = np.nonzero(full)[0][:50], np.nonzero(full)[0][-50:]
    np.testing.assert_allclose(np.linalg.norm(p1[i] - p1[j], axis=1), np.linalg.norm(p0[i] - p0[j], axis=1), atol=1e-9)
    # A real rotation: the chin point's displacement is the chord 2 d sin(theta / 2), not d theta.
    chin = np.nonzero(full)[0][np.argmax(d0)]
    np.testing.assert_allclose(np.linalg.norm(p1[chin] - r.glide_offset(theta) - p0[chin]),
                               2 * d0.max() * np.sin(theta / 2), rtol=1e-9)


@pytest.mark.parametrize("k", range(len(IDENTITIES)))
def test_eyelids_slide_on_the_eyeball(k):
    r = S.rig(IDENTITIES[k])
    p0 = r.head.vertices
    for eye in r.head.eyes:
        on = eye.w == 1.0
        assert on.sum() > 15
        np.testing.assert_allclose(np.linalg.norm(p0[on] - eye.centre, axis=1), EYE_RADIUS + eye.shell[on], rtol=1e-6)
    g = np.ones(len(p0))
    for upper, lower in ((0.3, 0.2), (-0.15, 0.0)):
        p1 = r.eyelids(p0, g, upper, lower)
        for centre, up, low in r.lids:
            lid = (up > 0) | (low > 0)
            assert np.linalg.norm(p1[lid] - p0[lid], axis=1).max() > 1e-3  # they do move
            np.testing.assert_allclose(np.linalg.norm(p1[lid] - centre, axis=1),
                                       np.linalg.norm(p0[lid] - centre, axis=1), rtol=1e-6)


def test_cheek_bulge_keeps_volume():
    """Volume: the signed volume of the closed head mesh. The outward push alone changes it by ``moved``;
    with the compensating ring the change is at most 2 % of that (the module docstring states 1e-4)."""
    for identity in IDENTITIES:
        r = S.rig(identity)
        p0 = r.head.vertices
        v0 = signed_volume(p0, r.faces)
        moved = signed_volume(r.push(p0, 0.004 * r.cheek_raise), r.faces) - v0
        assert moved > 1e-6  # a real bulge: over 1 cm^3
        bulged = r.bulge(p0, 0.004, r.cheek_raise, r.cheek_ring)
        assert np.linalg.norm(bulged - p0, axis=1).max() > 3e-3
        assert abs(signed_volume(bulged, r.faces) - v0) <= 0.02 * moved


def _lips(r) -> tuple[np.ndarray, np.ndarray]:
    h = r.head
    near = (np.abs(h.x) < 0.004) & (np.abs(h.y - h.lm.mouth_y) < 0.009) & (h.front > 0.9)
    return near & (r.below < 0.02), near & (r.below > 0.98)


@pytest.mark.parametrize("k", range(len(IDENTITIES)))
def test_mouth_open_opens_at_least_2cm(k):
    identity = IDENTITIES[k]
    r = S.rig(identity)
    upper, lower = _lips(r)
    assert upper.any() and lower.any()
    for weight, floor in ((0.0, 0.0), (0.8, 0.02), (1.0, 0.02)):
        v = S.face_vertices(identity, "mouth_open", weight)
        gap = np.linalg.norm(v[upper][:, None] - v[lower][None], axis=2).min()
        assert gap >= floor, (weight, gap)
    assert gap < 0.055  # a human mouth


def test_head_pose_is_a_rotation_above_the_neck():
    v = S.template_mesh()[0]
    posed = head_pose(v, 0.3, -0.2, 0.1)
    top = v[:, 1] > NECK_Y + 0.06
    i, j = np.nonzero(top)[0][:300], np.nonzero(top)[0][-300:]
    np.testing.assert_allclose(np.linalg.norm(posed[i] - posed[j], axis=1), np.linalg.norm(v[i] - v[j], axis=1),
                               atol=1e-12)
    base = v[:, 1] <= NECK_Y + 1e-9
    assert np.array_equal(posed[base], v[base]) and np.abs(posed - v).max() > 0.02
    a = S.generate(1, 2, 3, seed=3, pose=20.0)
    assert np.array_equal(a.vertices, S.generate(1, 2, 3, seed=3, pose=20.0).vertices)
    assert np.array_equal(a.vertices[0], S.generate(1, 2, 3, seed=3).vertices[0])  # neutral frames unposed
    assert not np.allclose(a.vertices[1], S.generate(1, 2, 3, seed=3).vertices[1])


def test_regions_are_written(tmp_path):
    out = S.write_synthetic_dataset(tmp_path / "faces", 1, 1, 2, seed=0)
    info = json.loads((out / "dataset.json").read_text())
    regions = np.load(out / info["regions"]["file"], allow_pickle=False)
    assert info["regions"]["names"] == list(S.REGION_NAMES)
    assert np.array_equal(regions, S.region_parts()) and regions.dtype == np.int8
    face = np.isin(regions, info["regions"]["face"]).astype(np.int8)
    assert np.array_equal(face, S.region_labels())
    assert set(np.unique(regions)) == set(range(len(S.REGION_NAMES)))
    v, _ = S.template_mesh()
    nose_tip = np.argmax(v[:, 2])
    assert S.REGION_NAMES[regions[nose_tip]] == "nose"


def expression_residual(data: "S.SyntheticFaces", n_subjects: int) -> float:
    """Mean over subjects ``t`` and expressions ``e`` of ``|d_te - D c|| / |d_te|``: ``d_te (3V,)`` the apex
    displacement from the subject's neutral head, ``D`` the other subjects' apex displacements of the same
    expression, ``c`` the least-squares coefficients. 0 for any shared linear blendshape model, whatever
    the per-subject weights."""
    v = data.vertices.astype(np.float64).reshape(n_subjects, -1, 3, data.vertices.shape[1] * 3)
    disp = v[:, :, 1] - v[:, :, 0]
    out = []
    for t in range(n_subjects):
        others = np.delete(disp, t, axis=0)
        for e in range(disp.shape[1]):
            coef, *_ = np.linalg.lstsq(others[:, e].T, disp[t, e], rcond=None)
            out.append(np.linalg.norm(disp[t, e] - others[:, e].T @ coef) / np.linalg.norm(disp[t, e]))
    return float(np.mean(out))


def test_expressions_are_not_one_linear_blend():
    """Floor 0.18: measured 0.22 here; the generator of commit 261d3ab gives 0.13 (it fails this test)."""
    data = S.generate(6, 12, 3, seed=0)
    assert expression_residual(data, 6) > 0.18


def test_synth_command_pose_option(tmp_path, capsys):
    from morphable.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "p"), "--subjects", "1", "--expressions", "2",
                 "--frames", "3", "--pose", "15"]) == 0
    info = json.loads((tmp_path / "p" / "dataset.json").read_text())
    assert info["pose_degrees"] == 15.0 and info["regions"]["file"] == S.REGIONS_FILE
    capsys.readouterr()
    assert main(["data", "synth", "--out", str(tmp_path / "q"), "--subjects", "1", "--pose", "90"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pose" in err[0] and not (tmp_path / "q").exists()
