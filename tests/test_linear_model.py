"""Linear face models: the formula against a naive loop, basis layouts, batching, the ICT-FaceKit readers,
the generic npz round trip, the Basel Face Model .h5 layout, errors naming the file, sequences and the
``data ict`` / ``data linear`` commands."""

import json

import numpy as np
import pytest
import trimesh

from conftest import ICT_FOLDER, ICT_NPZ, require
from morphable.cli import main
from morphable.data.linear import (
    ICT_EXPRESSIONS,
    ICT_SKIN_VERTICES,
    LinearFaceModel,
    expression_ramp,
    load_ict,
    load_linear_model,
    sample_sequences,
)
from morphable.data.registered import load_registered
from morphable.errors import MorphableError
from morphable.explicit.pca import PCAModel
from morphable.io import load_weights, write_ply


def small_model(rng: np.random.Generator, n_shape: int = 4, n_expr: int = 3, names: bool = False,
                extras: bool = True) -> LinearFaceModel:
    """An icosphere (162 vertices, cm) with random bases, deviations and, with ``extras``, UVs and landmarks."""
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    kwargs = {}
    if extras:
        kwargs = {"uvs": rng.random((len(v), 2)), "face_uvs": f.copy(), "landmarks": rng.choice(len(v), 68)}
    return LinearFaceModel(v, rng.normal(size=(n_shape, len(v), 3)), f, shape_std=rng.uniform(0.5, 2.0, n_shape),
                           expression_basis=rng.normal(size=(n_expr, len(v), 3)),
                           expression_std=rng.uniform(0.1, 1.0, n_expr),
                           expression_names=[f"shape{j}" for j in range(n_expr)] if names else [],
                           unit="cm", name="test sphere", **kwargs)


def naive_vertices(model: LinearFaceModel, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``mean + sum_k a_k sigma_k S_k + sum_j b_j tau_j E_j`` by explicit loops, float64."""
    x = model.mean.astype(np.float64).copy()
    for k in range(len(a)):
        x += a[k] * model.shape_std[k] * model.shape_basis[k]
    for j in range(len(b)):
        x += b[j] * model.expression_std[j] * model.expression_basis[j]
    return x


def assert_one_line_naming(exc_info, path) -> str:
    message = str(exc_info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_vertices_match_the_naive_loop_batched_and_per_sample():
    rng = np.random.default_rng(0)
    model = small_model(rng)
    a, b = rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    batch = model.vertices(a, b)
    assert batch.shape == (5, 162, 3)
    for i in range(5):
        np.testing.assert_allclose(batch[i], naive_vertices(model, a[i], b[i]), rtol=0, atol=1e-12)
        np.testing.assert_allclose(model.vertices(a[i], b[i]), batch[i], rtol=0, atol=1e-12)
    # fewer coefficients than modes: the first ones, the rest zero
    np.testing.assert_allclose(model.vertices(a[0, :2]), naive_vertices(model, a[0, :2], np.zeros(0)), atol=1e-12)
    np.testing.assert_array_equal(model.vertices(), model.mean)
    with pytest.raises(MorphableError, match=r"shape \(5,\) for a model with 4 shape modes"):
        model.vertices(np.zeros(5))


def test_pca_layouts_of_the_basis_give_the_same_model():
    rng = np.random.default_rng(1)
    model = small_model(rng, extras=False)
    modes = model.shape_basis  # (K, V, 3)
    columns = modes.reshape(len(modes), -1).T  # (3V, K): rows x1 y1 z1 x2 ...
    assert columns[3 * 7 + 2, 1] == modes[1, 7, 2]
    for layout in (columns, modes.transpose(1, 2, 0)):
        again = LinearFaceModel(model.mean, layout, model.faces, shape_std=model.shape_std, unit="cm")
        np.testing.assert_array_equal(again.shape_basis, modes)
    with pytest.raises(MorphableError, match="shape_basis has shape"):
        LinearFaceModel(model.mean, modes[:, :-1], model.faces, "cm")


def test_torch_model_is_the_same_function_and_differentiable():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    model = small_model(rng)
    linear = model.torch_model(3, 2)
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(2, 2))
    c = torch.tensor(np.concatenate([a, b], axis=1), requires_grad=True)
    x = linear(c)
    np.testing.assert_allclose(x.detach().numpy(), model.vertices(a, b), atol=1e-12)
    x[0, 5, 1].backward()
    expected = np.concatenate([model.shape_std[:3] * model.shape_basis[:3, 5, 1],
                               model.expression_std[:2] * model.expression_basis[:2, 5, 1]])
    np.testing.assert_allclose(c.grad[0].numpy(), expected, atol=1e-12)
    assert linear.n_shape == 3 and c.grad[1].abs().max() == 0


def test_sample_truncate_and_subset():
    rng = np.random.default_rng(3)
    model = small_model(rng)
    drawn = model.sample(6, np.random.default_rng(9))
    np.testing.assert_array_equal(drawn, model.vertices(np.random.default_rng(9).standard_normal((6, 4))))
    both = model.sample(2, np.random.default_rng(9), expressions=True)
    g = np.random.default_rng(9)
    a = g.standard_normal((2, 4))
    np.testing.assert_allclose(both, model.vertices(a, g.standard_normal((2, 3))), atol=1e-12)

    short = model.truncate(2, 1)
    assert (short.n_shape, short.n_expr) == (2, 1)
    np.testing.assert_array_equal(short.vertices([1.0, 2.0], [3.0]), model.vertices([1.0, 2.0], [3.0]))
    with pytest.raises(MorphableError, match="cannot keep 5 shape"):
        model.truncate(5)

    n = 100
    part = model.subset_vertices(n)
    keep = np.all(model.faces < n, axis=1)
    assert part.n_vertices == n and keep.sum() == len(part.faces) < len(model.faces)
    np.testing.assert_array_equal(part.faces, model.faces[keep])
    np.testing.assert_array_equal(part.face_uvs, model.face_uvs[keep])
    np.testing.assert_array_equal(part.vertices(a[0]), model.vertices(a[0])[:n])
    assert part.landmarks is None if model.landmarks.max() >= n else part.landmarks is not None
    inside = LinearFaceModel(model.mean, model.shape_basis, model.faces, landmarks=np.arange(68), unit="cm")
    np.testing.assert_array_equal(inside.subset_vertices(n).landmarks, np.arange(68))


def test_generic_npz_round_trip_keeps_everything(tmp_path):
    rng = np.random.default_rng(4)
    model = small_model(rng, names=True)
    model.save_npz(tmp_path / "model.npz")
    again = load_linear_model(tmp_path / "model.npz")
    assert again.expression_names == model.expression_names and (again.unit, again.name) == ("cm", "test sphere")
    for key in ("mean", "shape_basis", "shape_std", "expression_basis", "expression_std", "faces", "uvs",
                "face_uvs", "landmarks"):
        np.testing.assert_array_equal(getattr(again, key), getattr(model, key), err_msg=key)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 3))
    np.testing.assert_array_equal(again.vertices(a, b), model.vertices(a, b))
    # a model without optional parts, and --unit overriding the file's unit
    bare = LinearFaceModel(model.mean, model.shape_basis[:0], model.faces, unit="mm")
    bare.save_npz(tmp_path / "bare.npz")
    loaded = load_linear_model(tmp_path / "bare.npz", unit="m")
    assert (loaded.n_shape, loaded.n_expr, loaded.unit, loaded.uvs, loaded.landmarks) == (0, 0, "m", None, None)


def test_folder_and_npz_readers_agree():
    npz = load_ict(require(ICT_NPZ))
    folder = load_ict(require(ICT_FOLDER))
    assert folder.n_shape == 2 and folder.expression_names == ["jawOpen", "mouthSmile_L"]
    assert npz.unit == folder.unit == "cm" and npz.n_shape == 100 and npz.n_expr == 53
    np.testing.assert_allclose(folder.mean, npz.mean, atol=1e-5)
    np.testing.assert_array_equal(folder.faces, npz.faces)  # quads split the same way
    np.testing.assert_allclose(folder.shape_basis[1], npz.shape_basis[1], atol=1e-4)
    j = npz.expression_names.index("mouthSmile_L")
    np.testing.assert_allclose(folder.expression_basis[1], npz.expression_basis[j], atol=1e-4)
    assert load_linear_model(ICT_NPZ).name == load_linear_model(ICT_FOLDER).name == "ICT-FaceKit"


def test_ict_folder_reads_uvs_and_landmarks():
    folder = load_ict(require(ICT_FOLDER))
    index = json.loads((ICT_FOLDER / "vertex_indices.json").read_text())
    np.testing.assert_array_equal(folder.landmarks, index["idx_to_landmark_verts"])
    assert folder.uvs.shape == (28911, 2) and folder.face_uvs.shape == folder.faces.shape
    # the file's first face is the quad "f 874/1 12/2 871/3 873/4": fanned into two triangles
    np.testing.assert_array_equal(folder.faces[:2], [[873, 11, 870], [873, 870, 872]])
    np.testing.assert_array_equal(folder.face_uvs[:2], [[0, 1, 2], [0, 2, 3]])
    np.testing.assert_allclose(folder.uvs[0], [0.480491, 0.185494])
    skin = folder.subset_vertices(ICT_SKIN_VERTICES)
    np.testing.assert_array_equal(skin.landmarks, folder.landmarks)  # all 68 lie on the face
    assert len(skin.face_uvs) == len(skin.faces)


def test_ict_through_the_generic_npz_is_bit_identical(tmp_path):
    model = load_ict(require(ICT_NPZ)).subset_vertices(ICT_SKIN_VERTICES)
    model.save_npz(tmp_path / "ict.npz")
    again = load_linear_model(tmp_path / "ict.npz")
    w = np.random.default_rng(5).standard_normal(100)
    e = np.random.default_rng(6).uniform(0, 1, 53)
    np.testing.assert_array_equal(again.vertices(w, e), model.vertices(w, e))
    assert again.expression_names == model.expression_names and again.unit == "cm"


def write_bfm_h5(path, model: LinearFaceModel, expression_mean: np.ndarray | None, layout: str = "2017") -> None:
    """A Basel-Face-Model-layout file: flat means, ``pcaBasis (3V, K)``, ``pcaVariance``, cells ``(3, F)``."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        shape_mean = model.mean - (0 if expression_mean is None else expression_mean)
        f["shape/model/mean"] = shape_mean.reshape(-1).astype(np.float32)
        f["shape/model/pcaBasis"] = model.shape_basis.reshape(model.n_shape, -1).T.astype(np.float32)
        f["shape/model/pcaVariance"] = (model.shape_std ** 2).astype(np.float32)
        f["shape/representer/cells" if layout == "2017" else "representer/cells"] = model.faces.T.astype(np.int32)
        if expression_mean is not None:
            f["expression/model/mean"] = expression_mean.reshape(-1).astype(np.float32)
            f["expression/model/pcaBasis"] = model.expression_basis.reshape(model.n_expr, -1).T.astype(np.float32)
            f["expression/model/pcaVariance"] = (model.expression_std ** 2).astype(np.float32)


def orthonormal_model(rng: np.random.Generator, n_shape: int, n_expr: int) -> LinearFaceModel:
    """An icosphere (mm) whose bases are orthonormal columns (as a PCA stores them) with deviations in mm."""
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=100.0)
    v = np.asarray(sphere.vertices)
    q, _ = np.linalg.qr(rng.normal(size=(3 * len(v), n_shape + n_expr)))
    modes = q.T.reshape(-1, len(v), 3)
    return LinearFaceModel(v, modes[:n_shape], np.asarray(sphere.faces), shape_std=rng.uniform(20, 40, n_shape),
                           expression_basis=modes[n_shape:], expression_std=rng.uniform(5, 10, n_expr), unit="mm")


def test_basel_face_model_h5_layouts(tmp_path):
    pytest.importorskip("h5py")
    rng = np.random.default_rng(7)
    model = orthonormal_model(rng, 5, 3)
    expression_mean = 0.1 * rng.normal(size=model.mean.shape)
    write_bfm_h5(tmp_path / "model2017.h5", model, expression_mean)
    bfm = load_linear_model(tmp_path / "model2017.h5")
    assert (bfm.n_shape, bfm.n_expr, bfm.unit) == (5, 3, "mm")
    np.testing.assert_array_equal(bfm.faces, model.faces)
    a, b = rng.normal(size=5), rng.normal(size=3)
    # BFM: x = (mu_shape + mu_expr) + U_s diag(sqrt(var_s)) a + U_e diag(sqrt(var_e)) b, float64 from the file
    with pytest.importorskip("h5py").File(tmp_path / "model2017.h5", "r") as f:
        flat = (f["shape/model/mean"][()].astype(np.float64) + f["expression/model/mean"][()]
                + f["shape/model/pcaBasis"][()] @ (np.sqrt(f["shape/model/pcaVariance"][()].astype(np.float64)) * a)
                + f["expression/model/pcaBasis"][()] @ (np.sqrt(f["expression/model/pcaVariance"][()]
                                                                .astype(np.float64)) * b))
    np.testing.assert_allclose(bfm.vertices(a, b), flat.reshape(-1, 3), atol=1e-9)
    np.testing.assert_allclose(bfm.vertices(a, b), model.vertices(a, b), atol=1e-3)  # float32 file

    # fit-linear reads the .h5 and recovers shape and expression coefficients of one of its meshes
    write_ply(tmp_path / "cloud.ply", bfm.vertices(a, b))
    assert main(["fit-linear", str(tmp_path / "model2017.h5"), "--points", str(tmp_path / "cloud.ply"),
                 "--out", str(tmp_path / "fit"), "--expression-modes", "3", "--prior-weight", "0"]) == 0
    fitted = load_weights(tmp_path / "fit" / "coefficients.safetensors")[0]
    np.testing.assert_allclose(fitted["shape_coefficients"].numpy(), a, atol=1e-3)
    np.testing.assert_allclose(fitted["expression_coefficients"].numpy(), b, atol=1e-3)

    write_bfm_h5(tmp_path / "model2009.h5", model.truncate(5, 0), None, layout="2009")
    bfm2009 = load_linear_model(tmp_path / "model2009.h5")
    assert bfm2009.n_expr == 0 and bfm2009.n_shape == 5
    np.testing.assert_allclose(bfm2009.vertices(a), model.vertices(a), atol=1e-3)


def test_broken_files_give_one_line_naming_the_file(tmp_path):
    rng = np.random.default_rng(8)
    model = small_model(rng, extras=False)
    good = {"mean": model.mean, "shape_basis": model.shape_basis, "faces": model.faces, "unit": np.array("cm")}
    cases = {
        "text.npz": None,
        "missing.npz": {k: v for k, v in good.items() if k != "shape_basis"},
        "misspelt.npz": {**good, "shape_stds": np.ones(4)},
        "vertices.npz": {**good, "shape_basis": model.shape_basis[:, :-1]},
        "faces.npz": {**good, "faces": model.faces + len(model.mean)},
        "nan.npz": {**good, "mean": np.where(np.arange(len(model.mean))[:, None] == 3, np.nan, model.mean)},
        "unit.npz": {**good, "unit": np.array("inch")},
        "object.npz": {**good, "name": np.array([{"a": 1}], dtype=object)},
        "ict.npz": {"neutral": model.mean, "identity_modes": model.shape_basis},
    }
    expected = {"text.npz": "not a readable .npz", "missing.npz": "missing shape_basis",
                "misspelt.npz": "unknown keys shape_stds", "vertices.npz": "shape_basis has shape",
                "faces.npz": "faces indices must be in", "nan.npz": "mean contains NaN",
                "unit.npz": "unknown unit", "object.npz": "without unpickling",
                "ict.npz": "not an ICT-FaceKit npz (missing expression_modes"}
    for name, arrays in cases.items():
        path = tmp_path / name
        if arrays is None:
            path.write_text("not a zip archive\n")
        else:
            np.savez(path, **arrays)
        with pytest.raises(MorphableError) as exc_info:
            load_linear_model(path)
        assert expected[name] in assert_one_line_naming(exc_info, path), name
    for name, problem in (("flame.pkl", "never loaded"), ("sfm.bin", "eos"), ("model.obj", "unknown linear-model"),
                          ("bfm.h5", "not a readable HDF5")):
        (tmp_path / name).write_bytes(b"\x80\x04junk")
        if name == "bfm.h5":
            pytest.importorskip("h5py")
        with pytest.raises(MorphableError, match=problem) as exc_info:
            load_linear_model(tmp_path / name)
        assert_one_line_naming(exc_info, tmp_path / name)
    with pytest.raises(MorphableError, match="not found") as exc_info:
        load_linear_model(tmp_path / "absent.npz")
    assert_one_line_naming(exc_info, tmp_path / "absent.npz")


def test_bfm_missing_dataset_names_the_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "half.h5", "w") as f:
        f["shape/model/mean"] = np.zeros(9, dtype=np.float32)
    with pytest.raises(MorphableError, match="no shape/model/pcaBasis") as exc_info:
        load_linear_model(tmp_path / "half.h5")
    assert_one_line_naming(exc_info, tmp_path / "half.h5")


def test_pca_export_is_the_pca_model():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(30, 162, 3)) @ np.diag([1.0, 2.0, 3.0])
    pca = PCAModel.fit(x, 5)
    model = pca.to_linear_model(small_model(rng, extras=False).faces, "mm")
    codes = pca.encode(x[:4])
    np.testing.assert_allclose(model.vertices(codes / pca.stddev), pca.decode(codes), atol=1e-5)
    np.testing.assert_allclose(model.shape_std, pca.stddev, rtol=1e-7)
    assert (model.n_shape, model.n_expr, model.unit) == (5, 0, "mm")


def test_expression_ramp_goes_in_and_out():
    r = expression_ramp(9)
    assert r[0] == 0 and np.isclose(r[4], 1) and np.isclose(r[-1], 0)
    assert np.all(np.diff(r[:5]) > 0) and np.all(np.diff(r[4:]) < 0)


def test_sampled_sequences_are_the_linear_model():
    model = load_ict(require(ICT_NPZ)).subset_vertices(ICT_SKIN_VERTICES)
    assert model.mean.shape == (ICT_SKIN_VERTICES, 3) and model.faces.max() < ICT_SKIN_VERTICES
    seq = sample_sequences(model, subjects=2, expressions=3, frames=5, seed=7)
    assert seq.vertices.shape == (30, ICT_SKIN_VERTICES, 3)
    assert seq.subjects[0] == "subject_00" and seq.expressions[5] == "cheeks_in" and seq.frames[:5] == [0, 1, 2, 3, 4]
    identity_shape = model.vertices(seq.shape_coefficients[0])
    np.testing.assert_allclose(seq.vertices[0], identity_shape, atol=1e-4)  # frame 0: neutral expression
    assert np.abs(seq.vertices[2] - identity_shape).max() > 0.1  # peak frame moves by more than 1 mm (cm units)
    # the peak of "bareteeth" lies on the line identity + t * (its blendshape combination), t in [0.7, 1] x asymmetry
    combination = ICT_EXPRESSIONS["bareteeth"]
    direction = sum(w * model.expression_offset(np.eye(model.n_expr)[model.expression_names.index(n)])
                    for n, w in combination.items())
    moved = seq.vertices[2] - identity_shape
    t = float((moved * direction).sum() / (direction * direction).sum())
    assert 0.7 * 0.85 < t < 1.0 * 1.15
    again = sample_sequences(model, subjects=2, expressions=3, frames=5, seed=7)
    np.testing.assert_array_equal(again.vertices, seq.vertices)


def test_sequences_of_models_without_blendshape_names():
    rng = np.random.default_rng(11)
    model = small_model(rng, extras=False)
    seq = sample_sequences(model, subjects=2, expressions=2, frames=3, seed=0)
    assert sorted(set(seq.expressions)) == ["expression_00", "expression_01"] and len(seq.vertices) == 12
    # frame 0 of every sequence is the subject's neutral; the peak adds an expression-only offset
    np.testing.assert_allclose(seq.vertices[0], model.vertices(seq.shape_coefficients[0]), atol=1e-5)
    offset = seq.vertices[1] - seq.vertices[0]
    coefficients, *_ = np.linalg.lstsq((model.expression_basis * model.expression_std[:, None, None])
                                       .reshape(3, -1).T, offset.reshape(-1).astype(np.float64), rcond=None)
    np.testing.assert_allclose(model.expression_offset(coefficients), offset, atol=1e-5)
    neutral = model.truncate(4, 0)
    one = sample_sequences(neutral, subjects=3, expressions=1, frames=1, seed=0)
    assert one.expressions == ["neutral"] * 3
    with pytest.raises(MorphableError, match="no expression modes"):
        sample_sequences(neutral, subjects=3, expressions=2, frames=1, seed=0)


def _dataset_files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.ply"))}


def test_data_linear_equals_data_ict_and_reads_any_format(tmp_path, capsys):
    require(ICT_NPZ)
    common = ["--subjects", "1", "--expressions", "2", "--frames", "2", "--seed", "4"]
    assert main(["data", "ict", "--model", str(ICT_NPZ), "--out", str(tmp_path / "ict"), *common]) == 0
    assert main(["data", "linear", str(ICT_NPZ), "--vertices", str(ICT_SKIN_VERTICES), "--out",
                 str(tmp_path / "linear"), *common]) == 0
    ict, linear = _dataset_files(tmp_path / "ict"), _dataset_files(tmp_path / "linear")
    assert len(ict) == 4 and ict == linear

    rng = np.random.default_rng(12)
    small_model(rng, extras=False).truncate(4, 0).save_npz(tmp_path / "shape_only.npz")
    assert main(["data", "linear", str(tmp_path / "shape_only.npz"), "--out", str(tmp_path / "s"),
                 "--subjects", "3"]) == 0
    ds = load_registered(tmp_path / "s")
    assert len(ds) == 3 and ds.unit == "cm" and set(ds.expressions) == {"neutral"}
    assert main(["data", "linear", str(tmp_path / "shape_only.npz"), "--out", str(tmp_path / "t"),
                 "--expressions", "3"]) == 2
    assert "no expression modes" in capsys.readouterr().err
    assert main(["data", "linear", str(tmp_path / "shape_only.npz"), "--out", str(tmp_path / "u"),
                 "--vertices", "999"]) == 2
    err = capsys.readouterr().err
    assert "shape_only.npz" in err and "--vertices" in err and not (tmp_path / "u").exists()
