"""Registered datasets: layouts, labels, the CoMA split rules, caching, normalisation, bad input."""

import os
from pathlib import Path

import numpy as np
import pytest
import trimesh

from morphable.data.registered import (Normaliser, load_registered, make_split, protocol_folds,
                                       write_coma_layout)
from morphable.errors import MorphableError


def _coma_dataset(root, subjects=3, expressions=4, frames=5, seed=0):
    sphere = trimesh.creation.icosphere(subdivisions=1)
    rng = np.random.default_rng(seed)
    n = subjects * expressions * frames
    vertices = sphere.vertices[None] + 0.01 * rng.standard_normal((n, len(sphere.vertices), 3))
    subj = [f"s{i // (expressions * frames)}" for i in range(n)]
    expr = [f"e{(i // frames) % expressions}" for i in range(n)]
    frame = [i % frames for i in range(n)]
    write_coma_layout(root, vertices.astype(np.float32), sphere.faces, subj, expr, frame, "m", progress=False)
    return vertices.astype(np.float32), sphere.faces


def test_coma_layout_round_trip_with_labels(tmp_path):
    vertices, faces = _coma_dataset(tmp_path / "d")
    ds = load_registered(tmp_path / "d")
    assert ds.unit == "m" and ds.to_mm == 1000.0
    np.testing.assert_array_equal(ds.vertices, vertices)
    np.testing.assert_array_equal(ds.faces, faces)
    assert ds.subjects[:6] == ["s0"] * 6 and ds.expressions[4:6] == ["e0", "e1"] and ds.frames[:2] == ["0000", "0001"]


def test_interpolation_split_follows_the_coma_rule(tmp_path):
    _coma_dataset(tmp_path / "d", subjects=5, expressions=6, frames=10)
    ds = load_registered(tmp_path / "d")
    split = make_split(ds, "interpolation", val_fraction=0.1)
    naive_test = [i for i in range(len(ds)) if i % 100 < 10]
    assert split.test.tolist() == naive_test
    train_and_val = sorted(split.train.tolist() + split.val.tolist())
    assert train_and_val == [i for i in range(len(ds)) if i not in naive_test]
    assert len(split.val) == round(0.1 * len(train_and_val))
    assert not set(split.val) & set(split.train)


@pytest.mark.parametrize("protocol, labels_of", [("extrapolation", "expressions"), ("identity", "subjects")])
def test_leave_one_out_folds(tmp_path, protocol, labels_of):
    _coma_dataset(tmp_path / "d")
    ds = load_registered(tmp_path / "d")
    folds = protocol_folds(ds, protocol)
    labels = getattr(ds, labels_of)
    assert folds == sorted(set(labels))
    covered = []
    for fold in folds:
        split = make_split(ds, protocol, fold)
        assert all(labels[i] == fold for i in split.test)
        assert all(labels[i] != fold for i in np.concatenate([split.train, split.val]))
        covered += split.test.tolist()
    assert sorted(covered) == list(range(len(ds)))


def test_normaliser_uses_train_statistics_and_inverts(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 7, 3)).astype(np.float32) * np.arange(1, 8)[None, :, None]
    norm = Normaliser.fit(x[:30])
    np.testing.assert_allclose(norm.apply(x[:30]).mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(norm.apply(x[:30]).std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(norm.invert(norm.apply(x)), x, atol=1e-5)


def test_cache_is_used_and_invalidated(tmp_path):
    vertices, faces = _coma_dataset(tmp_path / "d")
    load_registered(tmp_path / "d")
    cache_files = list((Path(os.environ["MORPHABLE_CACHE"]) / "datasets").glob("*.npz"))
    assert cache_files, "first load writes the stacked-array cache"
    target = tmp_path / "d" / "s1" / "e2" / "0003.ply"
    target.write_bytes(b"broken")  # the cache must not hide a changed file
    with pytest.raises(MorphableError, match="0003.ply"):
        load_registered(tmp_path / "d")
    from morphable.io import write_ply

    moved = vertices[0] + 1.0
    write_ply(target, moved, faces)
    reloaded = load_registered(tmp_path / "d")
    index = [i for i in range(len(reloaded))
             if (reloaded.subjects[i], reloaded.expressions[i], reloaded.frames[i]) == ("s1", "e2", "0003")][0]
    np.testing.assert_allclose(reloaded.vertices[index], moved, atol=1e-6)


def test_npy_dataset_with_template(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=1)
    arr = np.stack([sphere.vertices * s for s in (1.0, 1.1, 1.2)]).astype(np.float32)
    np.save(tmp_path / "meshes.npy", arr)
    with pytest.raises(MorphableError, match="unit unknown"):
        load_registered(tmp_path / "meshes.npy")
    with pytest.raises(MorphableError, match="template"):
        load_registered(tmp_path / "meshes.npy", unit="mm")
    from morphable.io import write_ply

    write_ply(tmp_path / "template.ply", sphere.vertices, sphere.faces)
    ds = load_registered(tmp_path / "meshes.npy", unit="mm")
    assert len(ds) == 3 and ds.to_mm == 1.0
    np.testing.assert_array_equal(ds.vertices, arr)


def test_wrong_vertex_count_names_the_file(tmp_path):
    _, faces = _coma_dataset(tmp_path / "d")
    from morphable.io import write_ply

    bad = tmp_path / "d" / "s2" / "e1" / "0002.ply"
    write_ply(bad, np.zeros((5, 3)), np.array([[0, 1, 2]]))
    with pytest.raises(MorphableError) as info:
        load_registered(tmp_path / "d", use_cache=False)
    assert str(bad) in str(info.value) and "5 vertices, expected 42" in str(info.value)


def test_empty_folder_and_unknown_unit(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MorphableError, match="unit unknown"):
        load_registered(tmp_path / "empty")
    with pytest.raises(MorphableError, match="no .ply or .obj meshes"):
        load_registered(tmp_path / "empty", unit="m")
    _coma_dataset(tmp_path / "d")
    (tmp_path / "d" / "dataset.json").write_text('{"unit": "inch"}')
    with pytest.raises(MorphableError, match="unknown unit 'inch'"):
        load_registered(tmp_path / "d")


def test_writer_refuses_to_overwrite_and_leaves_no_temp(tmp_path):
    _coma_dataset(tmp_path / "d")
    with pytest.raises(MorphableError, match="not empty"):
        _coma_dataset(tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
