"""``morphable data deform``: two-way correspondence pairs of registered expression sequences (thesis 5.1.2), the
identity SDF data of the neutral heads, the reader, and bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from conftest import ICT_NPZ, require
from morphable.cli import main
from morphable.data import deformation as dd
from morphable.data.registered import RegisteredDataset, load_registered, write_coma_layout
from morphable.data.sdf import SdfDataset, Similarity
from morphable.data.synthetic import generate, region_labels, write_synthetic_dataset
from morphable.errors import MorphableError
from morphable.io import write_ply
from morphable.mesh.distance import igl_module
from morphable.mesh.topology import face_region

SMALL = dict(pairs=2000, n_surface=1000, n_near=1000, n_ball=500, n_eval=300, progress=False)
SMALL_ARGS = ["--pairs", "400", "--n-surface", "600", "--n-near", "600", "--n-ball", "300", "--n-eval", "200"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """2 subjects x 2 expressions x 3 frames (frames 0 and 2 are the exact neutral) and its deformation data."""
    root = tmp_path_factory.mktemp("deform")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MORPHABLE_CACHE", str(root / "cache"))
        seq = write_synthetic_dataset(root / "seq", subjects=2, expressions=2, frames=3, seed=0)
        out = dd.write_deformation_dataset(seq, root / "def", seed=3, **SMALL)
    return seq, out


def _distance(points, vertices, faces):
    sq, _, _ = igl_module().point_mesh_squared_distance(np.asarray(points, np.float64), vertices, faces)
    return np.sqrt(sq)


def _meshes(seq, info, sample):
    """The normalised neutral and posed vertices of a sample entry, from the source meshes."""
    ds = load_registered(seq, progress=False)
    sim = Similarity.from_dict(info["similarity"])
    expression, frame = info["neutral"][sample["subject"]].split("/")
    at = {(s, e, f): i for i, (s, e, f) in enumerate(zip(ds.subjects, ds.expressions, ds.frames))}
    neutral = ds.vertices[at[sample["subject"], expression, frame]]
    posed = ds.vertices[at[sample["subject"], sample["expression"], sample["frame"]]]
    return sim.apply(neutral), sim.apply(posed), ds.faces


# ------------------------------------------------------------------ 1. pairs on both surfaces


def test_pairs_lie_on_both_surfaces_without_noise(tmp_path, synth, monkeypatch):
    seq, _ = synth
    monkeypatch.setenv("MORPHABLE_CACHE", str(tmp_path / "cache"))
    out = dd.write_deformation_dataset(seq, tmp_path / "flat", sigmas=(0.0, 0.0), **SMALL)
    info = dd.read_deformation_info(out)
    for sample in info["samples"]:
        neutral, posed, faces = _meshes(seq, info, sample)
        pairs = dd.load_pairs(out / sample["pairs"])
        assert _distance(pairs["neutral"], neutral, faces).max() < 1e-6
        assert _distance(pairs["posed"], posed, faces).max() < 1e-6
        if sample["neutral"]:
            assert np.array_equal(pairs["neutral"], pairs["posed"])
        mesh_vertices, mesh_faces = dd.load_sample_mesh(out, info, sample["name"])
        np.testing.assert_allclose(mesh_vertices, posed, atol=1e-6)  # float32 copy of the normalised posed mesh
        assert np.array_equal(mesh_faces, faces)
    # the displacement is the barycentric interpolation of the vertex displacement (naive loop)
    sample = info["samples"][1]
    neutral, posed, faces = _meshes(seq, info, sample)
    drawn = dd.sample_pairs(neutral, posed, faces, np.ones(len(neutral), bool), 400, 1, sigmas=(0.0, 0.0))
    for m in range(0, 400, 7):
        tri = faces[drawn.face_ids[m]]
        expected = sum(drawn.barycentrics[m, k] * (posed[tri[k]] - neutral[tri[k]]) for k in range(3))
        np.testing.assert_allclose(drawn.posed[m] - drawn.neutral[m], expected, atol=1e-12)
        np.testing.assert_allclose(drawn.neutral[m], drawn.barycentrics[m] @ neutral[tri], atol=1e-12)
    assert np.linalg.norm(drawn.posed - drawn.neutral, axis=1).max() > 0.01  # the posed frame moves


def test_noise_is_one_offset_per_pair_with_the_level_sigma():
    neutral, faces = generate(1, 1, 3, 0).vertices[0].astype(np.float64), generate(1, 1, 3, 0).faces
    neutral = Similarity.fit([neutral]).apply(neutral)
    posed = neutral + np.array([0.05, 0.0, 0.0])
    drawn = dd.sample_pairs(neutral, posed, faces, np.ones(len(neutral), bool), 8000, 0)
    np.testing.assert_allclose(drawn.posed - drawn.neutral, np.tile([0.05, 0.0, 0.0], (8000, 1)), atol=1e-12)
    counts = np.bincount(drawn.direction * 2 + drawn.level)
    assert counts.tolist() == [2000, 2000, 2000, 2000]
    for level, sigma in enumerate(dd.PAIR_SIGMAS):
        std = drawn.offsets[drawn.level == level].std()
        assert abs(std / sigma - 1) < 0.03, (level, std)
        surface = drawn.neutral[drawn.level == level] - drawn.offsets[drawn.level == level]
        assert _distance(surface, neutral, faces).max() < 1e-9


# ------------------------------------------------------------------ 2. two-way sampling covers both meshes


def test_two_way_sampling_is_area_distributed_on_each_mesh():
    data = generate(1, 8, 3, seed=0)  # expression 7 is mouth_extreme: the jaw drops, the mouth lining stretches
    assert data.expressions[7 * 3 + 1] == "mouth_extreme"
    faces = data.faces
    sim = Similarity.fit([data.vertices[21], data.vertices[22]])
    neutral, posed = sim.apply(data.vertices[21]), sim.apply(data.vertices[22])

    def areas(v):
        t = v[faces]
        return 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)

    a_neutral, a_posed = areas(neutral), areas(posed)
    ratio = a_posed / a_neutral
    stretched = ratio > 2
    assert stretched.sum() > 100
    assert a_posed[stretched].sum() / a_posed.sum() > 3 * a_neutral[stretched].sum() / a_neutral.sum()
    drawn = dd.sample_pairs(neutral, posed, faces, region_labels() > 0, 40_000, 5, sigmas=(0.0, 0.0))
    bins = np.digitize(ratio, [0.5, 0.8, 0.95, 1.05, 1.25, 2.0, 4.0])
    for direction, own, other in ((0, a_neutral, a_posed), (1, a_posed, a_neutral)):
        ids = drawn.face_ids[drawn.direction == direction]
        observed = np.bincount(bins[ids], minlength=8)
        per_bin = lambda a: np.bincount(bins, weights=a, minlength=8) / a.sum() * len(ids)  # noqa: E731
        keep = per_bin(own) > 5
        assert chisquare(observed[keep], per_bin(own)[keep]).pvalue > 1e-3
        keep = per_bin(other) > 5
        assert chisquare(observed[keep], per_bin(other)[keep]).pvalue < 1e-12
        # the stretched triangles get their share of the posed (direction 1) or neutral (direction 0) area
        share = np.isin(ids, np.nonzero(ratio > 2)[0]).mean()
        expected = own[ratio > 2].sum() / own.sum()
        assert abs(share - expected) < 4 * np.sqrt(expected * (1 - expected) / len(ids)), (direction, share, expected)


# ------------------------------------------------------------------ 3. region labels


def test_face_labels_follow_the_triangle_rule(synth):
    seq, out = synth
    info = dd.read_deformation_info(out)
    mask = np.load(out / "face_mask.npy")
    assert mask.dtype == bool and mask.sum() == info["region"]["face_vertices"] == (region_labels() > 0).sum()
    sample_index = 2
    sample = info["samples"][sample_index]
    neutral, posed, faces = _meshes(seq, info, sample)
    # the file is the sampler's output for its seed, so the sampler's face ids say which triangle each pair is on
    rng = np.random.default_rng(np.random.SeedSequence([info["settings"]["seed"], 1, sample_index]))
    drawn = dd.sample_pairs(neutral, posed, faces, mask, info["settings"]["pairs"], rng, info["settings"]["sigmas"])
    stored = dd.load_pairs(out / sample["pairs"])
    for key, value in drawn.arrays().items():
        assert np.array_equal(stored[key], value), key
    for m in range(0, len(drawn.face), 5):
        corners_in_face = sum(bool(mask[v]) for v in faces[drawn.face_ids[m]])
        assert stored["face"][m] == (corners_in_face >= 2)
    assert 0.05 < stored["face"].mean() < 0.95


# ------------------------------------------------------------------ 4. determinism, deduplication, frames


def test_writes_are_deterministic_and_neutral_copies_are_deduplicated(tmp_path, synth, monkeypatch):
    seq, out = synth
    monkeypatch.setenv("MORPHABLE_CACHE", str(tmp_path / "cache"))
    again = dd.write_deformation_dataset(seq, tmp_path / "again", seed=3, **SMALL)
    info = dd.read_deformation_info(out)
    info2 = dd.read_deformation_info(again)
    assert info["samples"] == info2["samples"] and info["similarity"] == info2["similarity"]
    for sample in info["samples"]:
        for key in ("pairs", "posed"):
            with np.load(out / sample[key]) as a, np.load(again / sample[key]) as b:
                assert sorted(a.files) == sorted(b.files)
                for name in a.files:
                    assert np.array_equal(a[name], b[name]), (sample["name"], key, name)
    for subject in info["subjects"]:
        with np.load(out / "identity" / f"{subject}.npz") as a, np.load(again / "identity" / f"{subject}.npz") as b:
            assert all(np.array_equal(a[n], b[n]) for n in a.files)
    # frames 0 and 2 of every sequence are the exact neutral: 2 subjects x (1 neutral + 2 expressions x frame 1)
    assert len(info["samples"]) == 2 * (1 + 2)
    assert [s["name"] for s in info["samples"] if s["neutral"]] == ["subject_00__neutral", "subject_01__neutral"]
    assert {s["frame"] for s in info["samples"] if not s["neutral"]} == {"0001"}
    assert info["expressions"] == ["bareteeth", "cheeks_in"]
    assert info["neutral"] == {"subject_00": "bareteeth/0000", "subject_01": "bareteeth/0000"}
    assert info["stats"]["posed_samples"] == 4 and info["stats"]["pairs_total"] == 6 * SMALL["pairs"]
    # one similarity over neutral and posed heads: all pair points and posed SDF samples in the unit ball
    for sample in info["samples"]:
        pairs = dd.load_pairs(out / sample["pairs"])
        assert np.linalg.norm(pairs["posed"], axis=1).max() < 1.0
    identity = SdfDataset(out / "identity")
    assert identity.names == info["subjects"]
    assert identity.similarities[0] == Similarity.from_dict(info["similarity"])
    assert identity.settings["normalisation"] == "given"
    assert np.load(out / "template_faces.npy").dtype == np.int64
    assert (out / "preview.png").stat().st_size > 10_000
    assert sorted(p.name for p in (out / "neutral").iterdir()) == ["subject_00.ply", "subject_01.ply"]


def test_select_frames_keeps_stride_last_and_apex_but_not_neutral_copies():
    distances = np.array([0.0, 1.0, 3.0, 5.0, 4.0, 2.0, 0.5, 0.0])
    assert dd.select_frames(distances, 1, 1e-9) == [1, 2, 3, 4, 5, 6]
    assert dd.select_frames(distances, 3, 1e-9) == [3, 6]  # 0, 3, 6, last 7 (neutral), apex 3
    assert dd.select_frames(distances, 4, 1e-9) == [3, 4]  # 0, 4, last 7 (neutral), apex 3
    assert dd.select_frames(distances[:6], 4, 1e-9) == [3, 4, 5]  # the last frame moves: kept
    assert dd.group_counts(10, 2) == [3, 3, 2, 2]
    # on whole sequences: the stride counts from each sequence's first frame, the neutral's sequence included
    data = generate(1, 2, 7, seed=0)
    ds = RegisteredDataset(data.vertices, data.faces, data.subjects, data.expressions,
                           [f"{f:04d}" for f in data.frames], "m")
    for stride, frames in ((1, ["0001", "0002", "0003", "0004", "0005"]), (3, ["0003"]), (2, ["0002", "0003", "0004"])):
        plan = dd._plan_samples(ds, dd._neutral_indices(ds, Path("x"), None), stride)
        assert [s.name for s in plan] == ["subject_00__neutral"] + [f"subject_00__{e}__{f}" for e in
                                                                    ("bareteeth", "cheeks_in") for f in frames]


# ------------------------------------------------------------------ 5. ICT-FaceKit


def test_ict_sequences_through_the_command_line(tmp_path, capsys):
    model = require(ICT_NPZ)
    seq, out = tmp_path / "ict", tmp_path / "ict_def"
    # frames 0 and 2 are the neutral (sin^2 ramp): frame 1 is the only posed frame of each expression
    assert main(["data", "ict", "--model", str(model), "--out", str(seq), "--subjects", "1", "--expressions", "2",
                 "--frames", "3"]) == 0
    assert main(["data", "deform", str(seq), "--out", str(out), "--region-vertices", "9409", *SMALL_ARGS]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("1 subjects, 2 posed samples (+ 1 neutral), 1200 pairs, max displacement")
    info = dd.read_deformation_info(out)
    assert info["unit"] == "cm" and info["region"] == {"source": "region_vertices", "region_vertices": 9409,
                                                        "face_vertices": 9409, "mask": "face_mask.npy",
                                                        "rule": dd.FACE_RULE}
    assert info["n_vertices"] == 11248
    faces = np.load(out / "template_faces.npy")
    mask = np.load(out / "face_mask.npy")
    neutral, _, _ = _meshes(seq, info, info["samples"][0])
    tri = neutral[faces]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face_share = area[face_region(faces, mask)].sum() / area.sum()
    assert 0.2 < face_share < 0.9
    data = dd.DeformationDataset(out, pairs_per_item=200)
    for pairs, sample in zip(data.pairs, info["samples"]):
        assert abs(pairs["face"].mean() - face_share) < 0.08, (sample["name"], pairs["face"].mean(), face_share)
        assert np.linalg.norm(pairs["posed"], axis=1).max() < 1.0
        assert np.linalg.norm(pairs["neutral"], axis=1).max() < 1.0
        moved = np.linalg.norm(pairs["posed"] - pairs["neutral"], axis=1)
        if sample["neutral"]:
            assert moved.max() == 0
        else:
            assert data.to_mm(moved.max()) > 1.0 and moved[~pairs["face"]].mean() < moved[pairs["face"]].mean()
    assert SdfDataset(out / "identity").names == ["subject_00"]


# ------------------------------------------------------------------ 6. bad input


def _expect_error(capsys, argv, out, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists()
    assert not any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir())


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, synth):
    seq, _ = synth
    # a dataset without regions and without --region-vertices
    plain = tmp_path / "plain"
    data = generate(1, 1, 3, 0)
    write_coma_layout(plain, data.vertices, data.faces, data.subjects, data.expressions, data.frames, "m",
                      progress=False)
    _expect_error(capsys, ["data", "deform", str(plain), "--out", str(tmp_path / "o1"), *SMALL_ARGS],
                  tmp_path / "o1", str(plain), "--region-vertices")
    _expect_error(capsys, ["data", "deform", str(plain), "--out", str(tmp_path / "o1"), "--region-vertices", "99999",
                           *SMALL_ARGS], tmp_path / "o1", "out of range")
    # a subject without the neutral frame
    missing = tmp_path / "missing"
    shutil.copytree(seq, missing)
    (missing / "subject_01" / "cheeks_in" / "0000.ply").unlink()
    _expect_error(capsys, ["data", "deform", str(missing), "--out", str(tmp_path / "o2"), "--neutral",
                           "cheeks_in/0000", *SMALL_ARGS], tmp_path / "o2", str(missing / "subject_01"),
                  "cheeks_in/0000")
    # a NaN vertex
    broken = tmp_path / "nan"
    shutil.copytree(seq, broken)
    bad = broken / "subject_00" / "bareteeth" / "0001.ply"
    v = data.vertices[0].copy()
    v[7, 2] = np.nan
    write_ply(bad, v, data.faces)
    _expect_error(capsys, ["data", "deform", str(broken), "--out", str(tmp_path / "o3"), *SMALL_ARGS],
                  tmp_path / "o3", str(bad), "NaN")
    # broken region labels
    labels = tmp_path / "labels"
    shutil.copytree(seq, labels)
    np.save(labels / "regions.npy", np.zeros(10, np.int8))
    _expect_error(capsys, ["data", "deform", str(labels), "--out", str(tmp_path / "o4"), *SMALL_ARGS],
                  tmp_path / "o4", str(labels / "regions.npy"))


# ------------------------------------------------------------------ 7. the reader


def test_dataset_items_are_deterministic_per_epoch(synth):
    _, out = synth
    data = dd.DeformationDataset(out, pairs_per_item=300, seed=1)
    info = json.loads((out / dd.DEFORMATION_JSON).read_text())
    assert len(data) == 6 and data.names == [s["name"] for s in info["samples"]]
    assert data.subject_of == [0, 0, 0, 1, 1, 1] and data.is_neutral == [True, False, False, True, False, False]
    assert data.unit == "m" and data.similarity == Similarity.from_dict(info["similarity"])
    assert "2 subjects, 4 posed + 2 neutral samples" in data.describe()
    data.set_epoch(4)
    item = data[4]
    assert item["neutral"].shape == item["posed"].shape == (300, 3) and item["neutral"].dtype == torch.float32
    assert item["face"].shape == (300,) and item["face"].dtype == torch.bool
    assert item["index"].item() == 4 and item["subject"].item() == 1 and item["index"].dtype == torch.long
    again = dd.DeformationDataset(out, pairs_per_item=300, seed=1)
    again.set_epoch(4)
    assert all(torch.equal(item[k], again[4][k]) for k in item)
    assert all(torch.equal(item[k], data[4][k]) for k in item)
    data.set_epoch(5)
    assert not torch.equal(item["neutral"], data[4]["neutral"])
    # the items are rows of the file: pairs stay pairs
    stored = data.pairs[4]
    rows = {tuple(r) for r in np.concatenate([stored["neutral"], stored["posed"]], axis=1).tolist()}
    assert all(tuple(r) in rows for r in torch.cat([item["neutral"], item["posed"]], dim=1).tolist())
    big = dd.DeformationDataset(out, pairs_per_item=5000)
    big.set_epoch(0)
    assert big[0]["posed"].shape == (5000, 3)
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=3)))
    assert batch["neutral"].shape == (3, 300, 3) and batch["subject"].tolist() == [0, 0, 0]


@pytest.mark.parametrize("breakage, fragment", [
    ("nan", "NaN"), ("truncated", "not a readable .npz"), ("shape", "'posed' has"), ("missing", "missing face"),
    ("json", "malformed"), ("escape", "leaves the dataset folder"),
])
def test_broken_files_give_one_error_line(tmp_path, synth, breakage, fragment):
    _, out = synth
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    info = json.loads((copy / dd.DEFORMATION_JSON).read_text())
    target = copy / info["samples"][1]["pairs"]
    arrays = dict(np.load(target))
    if breakage == "nan":
        arrays["posed"][3, 1] = np.nan
    elif breakage == "shape":
        arrays["posed"] = arrays["posed"][:-1]
    elif breakage == "missing":
        del arrays["face"]
    if breakage in ("nan", "shape", "missing"):
        np.savez(target, **arrays)
    elif breakage == "truncated":
        target.write_bytes(target.read_bytes()[:500])
    else:
        target = copy / dd.DEFORMATION_JSON
        if breakage == "json":
            del info["samples"][0]["subject"]
        else:
            info["samples"][0]["pairs"] = "../elsewhere.npz"
        target.write_text(json.dumps(info))
    with pytest.raises(MorphableError) as exc:
        dd.DeformationDataset(copy)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(str(target)) and fragment in message, message
